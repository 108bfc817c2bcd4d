//! Rule counters of a VPC router's nftables table read on a NETLINK_NETFILTER socket of its
//! namespace (one `NFT_MSG_GETRULE` dump filtered by table), instead of an `nft -j -t list
//! table` process per router every 10 s: at 1,000 routers those processes were most of an
//! idle gateway's CPU. The dump carries each rule's expressions (the `counter` one holds
//! packets and bytes) and its user data (the comment), never the sets' or maps' elements.
//! The samples are those [`sf_linux::nft_counters::parse`] makes from `nft -j -t` (a kernel
//! test holds both to the same list).

use std::io;

use netlink_sys::Socket;
use sf_linux::netlink::nfgen::{self, attrs, put_attr};
use sf_metrics::RuleSample;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFPROTO_IPV4: u8 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// libnftnl's user data type of a rule comment.
const UDATA_RULE_COMMENT: u8 = 0;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// Receive buffer of one read: a dump part is at most 32 kB.
const RECV: usize = 64 << 10;

/// A NETLINK_NETFILTER socket of the namespace it was opened in, for rule dumps.
#[derive(Debug)]
pub struct NfRules {
    socket: Socket,
    seq: std::sync::atomic::AtomicU32,
}

impl NfRules {
    /// Opens the socket in the calling thread's network namespace; a read waits at most 2 s
    /// for each part of the answer.
    pub fn open() -> io::Result<Self> {
        Ok(NfRules {
            socket: nfgen::open_socket()?,
            seq: 0.into(),
        })
    }

    /// The counters of the rules of table `ip <table>` (none when the table is absent),
    /// labelled `scope`.
    pub fn counters(&self, table: &str, scope: &str) -> io::Result<Vec<RuleSample>> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.socket.send(&request(table, seq), 0)?;
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(RECV);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            match parse_part(&buf[..n], seq, scope, &mut out) {
                Ok(true) => return Ok(out),
                Ok(false) => {}
                // The table does not exist.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// NFT_MSG_GETRULE dump of family ip filtered by table `table`.
fn request(table: &str, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_attr(
        &mut attrs,
        NFTA_RULE_TABLE,
        &[table.as_bytes(), &[0]].concat(),
    );
    nfgen::nftables_request(
        NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_IPV4,
        &attrs,
    )
}

fn be_u64(v: &[u8]) -> u64 {
    v.get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One part of the answer: appends its rules' samples; true once the dump is done.
fn parse_part(buf: &[u8], seq: u32, scope: &str, out: &mut Vec<RuleSample>) -> io::Result<bool> {
    nfgen::answer_part(buf, seq, |kind, body| {
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE && body.len() >= 4 {
            out.extend(rule(&body[4..], scope));
        }
    })
}

/// The sample of one rule, if it has a counter: named by its comment, else by its handle.
fn rule(body: &[u8], scope: &str) -> Option<RuleSample> {
    let (mut chain, mut handle, mut comment, mut counter) = (String::new(), 0, None, None);
    for (kind, v) in attrs(body) {
        match kind {
            NFTA_RULE_CHAIN => chain = string(v),
            NFTA_RULE_HANDLE => handle = be_u64(v),
            NFTA_RULE_USERDATA => comment = udata_comment(v),
            NFTA_RULE_EXPRESSIONS if counter.is_none() => counter = first_counter(v),
            _ => {}
        }
    }
    let (packets, bytes) = counter?;
    Some(RuleSample {
        scope: scope.to_string(),
        chain,
        rule: comment.unwrap_or_else(|| format!("handle {handle}")),
        packets,
        bytes,
    })
}

/// Packets and bytes of the first `counter` expression.
fn first_counter(list: &[u8]) -> Option<(u64, u64)> {
    attrs(list)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .find_map(|(_, elem)| {
            let mut name = String::new();
            let mut data = None;
            for (k, v) in attrs(elem) {
                match k {
                    NFTA_EXPR_NAME => name = string(v),
                    NFTA_EXPR_DATA => data = Some(v),
                    _ => {}
                }
            }
            if name != "counter" {
                return None;
            }
            let (mut packets, mut bytes) = (0, 0);
            for (k, v) in attrs(data?) {
                match k {
                    NFTA_COUNTER_PACKETS => packets = be_u64(v),
                    NFTA_COUNTER_BYTES => bytes = be_u64(v),
                    _ => {}
                }
            }
            Some((packets, bytes))
        })
}

/// The comment in a rule's user data (libnftnl's TLVs: type, length, value).
fn udata_comment(mut v: &[u8]) -> Option<String> {
    while v.len() >= 2 {
        let (kind, len) = (v[0], v[1] as usize);
        let value = v.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            return Some(string(value));
        }
        v = &v[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put_attr(&mut b, kind | 0x8000, inner);
        b
    }

    #[test]
    fn a_rule_with_a_counter_and_a_comment() {
        let mut counter = Vec::new();
        put_attr(&mut counter, NFTA_COUNTER_BYTES, &840u64.to_be_bytes());
        put_attr(&mut counter, NFTA_COUNTER_PACKETS, &10u64.to_be_bytes());
        let mut expr = Vec::new();
        put_attr(&mut expr, NFTA_EXPR_NAME, b"counter\0");
        expr.extend(nested(NFTA_EXPR_DATA, &counter));
        let mut cmp = Vec::new();
        put_attr(&mut cmp, NFTA_EXPR_NAME, b"cmp\0");
        let mut list = nested(NFTA_LIST_ELEM, &cmp);
        list.extend(nested(NFTA_LIST_ELEM, &expr));
        let mut body = Vec::new();
        put_attr(&mut body, NFTA_RULE_CHAIN, b"postrouting\0");
        put_attr(&mut body, NFTA_RULE_HANDLE, &7u64.to_be_bytes());
        body.extend(nested(NFTA_RULE_EXPRESSIONS, &list));
        put_attr(
            &mut body,
            NFTA_RULE_USERDATA,
            &[0, 5, b's', b'n', b'a', b't', 0],
        );
        let s = rule(&body, "ns").unwrap();
        assert_eq!((s.chain.as_str(), s.rule.as_str()), ("postrouting", "snat"));
        assert_eq!((s.packets, s.bytes), (10, 840));
        // Without a comment: named by its handle; without a counter: no sample.
        let mut bare = body.clone();
        bare.truncate(bare.len() - 12);
        assert_eq!(rule(&bare, "ns").unwrap().rule, "handle 7");
        let mut none = Vec::new();
        put_attr(&mut none, NFTA_RULE_CHAIN, b"c\0");
        assert!(rule(&none, "ns").is_none());
    }
}
