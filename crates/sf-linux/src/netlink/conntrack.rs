//! Connection-tracking entries of a network namespace on a NETLINK_NETFILTER socket
//! (ctnetlink): one dump per address family, and deletion of the entries a [`Filter`]
//! matches. This is what `conntrack -D --orig-dst … --reply-src …` does (it too dumps, matches
//! in user space and deletes entry by entry), without a process per filter: a gateway cuts the
//! flows of a backend that went down with one dump for all its filters.
//!
//! An entry is deleted by its original tuple sent back as the dump gave it, with its id and
//! zone, so the kernel removes that entry and no other: one that ended and was replaced by a
//! new connection with the same tuple meanwhile has another id and is left alone (ENOENT).

use std::fmt;
use std::io;
use std::net::IpAddr;

use netlink_sys::Socket;

use super::nfgen::{answer_part, attrs, nfnl_request, open_socket, put_attr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
/// Receive buffer of one read: a dump part is at most 32 kB.
const RECV: usize = 64 << 10;

/// One direction of a connection as conntrack keys it. Ports are those of TCP, UDP, SCTP
/// and DCCP; other protocols have none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// A conntrack entry: both directions (the reply one shows a NAT binding), and what
/// deleting exactly this entry takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    family: u8,
    /// CTA_TUPLE_ORIG as dumped, header included.
    orig_attr: Vec<u8>,
    id: Option<[u8; 4]>,
    zone: Option<[u8; 2]>,
}

/// Which entries to delete: every field given must match, as `conntrack -D` with the same
/// options ([`fmt::Display`] writes them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// The IPv6 table instead of the IPv4 one.
    pub ipv6: bool,
    pub proto: Option<u8>,
    pub orig_src: Option<IpAddr>,
    pub orig_dst: Option<IpAddr>,
    pub orig_dport: Option<u16>,
    pub reply_src: Option<IpAddr>,
    pub reply_dst: Option<IpAddr>,
    pub reply_sport: Option<u16>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        fn want<T: PartialEq>(w: Option<T>, got: Option<T>) -> bool {
            w.is_none() || w == got
        }
        e.family == family(self.ipv6)
            && want(self.proto, e.orig.proto)
            && want(self.orig_src, e.orig.src)
            && want(self.orig_dst, e.orig.dst)
            && want(self.orig_dport, e.orig.dport)
            && want(self.reply_src, e.reply.src)
            && want(self.reply_dst, e.reply.dst)
            && want(self.reply_sport, e.reply.sport)
    }
}

impl fmt::Display for Filter {
    /// The `conntrack` options selecting the same entries (logs, and the tests' comparison
    /// with the tool).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.ipv6 {
            parts.push("-f ipv6".into());
        }
        let mut opt = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{name} {v}"));
            }
        };
        opt("-p", self.proto.map(proto_name));
        opt("--orig-src", self.orig_src.map(|a| a.to_string()));
        opt("--orig-dst", self.orig_dst.map(|a| a.to_string()));
        opt("--dport", self.orig_dport.map(|p| p.to_string()));
        opt("--reply-src", self.reply_src.map(|a| a.to_string()));
        opt("--reply-dst", self.reply_dst.map(|a| a.to_string()));
        opt("--reply-port-src", self.reply_sport.map(|p| p.to_string()));
        f.write_str(&parts.join(" "))
    }
}

fn proto_name(p: u8) -> String {
    match i32::from(p) {
        libc::IPPROTO_TCP => "tcp".into(),
        libc::IPPROTO_UDP => "udp".into(),
        _ => p.to_string(),
    }
}

fn family(ipv6: bool) -> u8 {
    if ipv6 {
        AF_INET6
    } else {
        AF_INET
    }
}

/// A ctnetlink socket of the namespace it was opened in.
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    seq: u32,
}

impl Conntrack {
    /// Opens the socket in the calling thread's network namespace; a read waits at most 2 s
    /// for each part of an answer.
    pub fn open() -> io::Result<Self> {
        Ok(Conntrack {
            socket: open_socket()?,
            seq: 0,
        })
    }

    /// Every entry of the IPv4 (or IPv6) table.
    pub fn entries(&mut self, ipv6: bool) -> io::Result<Vec<Entry>> {
        let seq = self.next_seq();
        let req = request(
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family(ipv6),
            &[],
        );
        self.socket.send(&req, 0)?;
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(RECV);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            if parse_part(&buf[..n], seq, &mut out)? {
                return Ok(out);
            }
        }
    }

    /// Deletes the entries any of `filters` matches (one dump per family they name); returns
    /// how many it deleted. An entry gone meanwhile is not an error.
    pub fn delete(&mut self, filters: &[Filter]) -> io::Result<usize> {
        let mut deleted = 0;
        for ipv6 in [false, true] {
            if !filters.iter().any(|f| f.ipv6 == ipv6) {
                continue;
            }
            for e in self.entries(ipv6)? {
                if filters.iter().any(|f| f.matches(&e)) && self.delete_entry(&e)? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes entry `e`; false when it was already gone.
    pub fn delete_entry(&mut self, e: &Entry) -> io::Result<bool> {
        let mut attrs = e.orig_attr.clone();
        if let Some(id) = e.id {
            put_attr(&mut attrs, CTA_ID, &id);
        }
        if let Some(zone) = e.zone {
            put_attr(&mut attrs, CTA_ZONE, &zone);
        }
        let seq = self.next_seq();
        let req = request(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            e.family,
            &attrs,
        );
        self.socket.send(&req, 0)?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            match parse_part(&buf[..n], seq, &mut Vec::new()) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
                Err(err) => return Err(err),
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

/// A ctnetlink request: nlmsghdr, nfgenmsg (`family`, version 0, resource 0), `attrs`.
fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    nfnl_request(NFNL_SUBSYS_CTNETLINK, msg, flags, seq, family, attrs)
}

/// One part of an answer to request `seq`: appends its entries; true once the answer is
/// complete (the dump's end, or an acknowledgement).
fn parse_part(buf: &[u8], seq: u32, out: &mut Vec<Entry>) -> io::Result<bool> {
    answer_part(buf, seq, |kind, body| {
        if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW && body.len() >= 4 {
            out.extend(entry(body[0], &body[4..]));
        }
    })
}

/// The entry in the attributes `body` of a CT_NEW message of address family `family`.
fn entry(family: u8, body: &[u8]) -> Option<Entry> {
    let (mut orig, mut reply, mut orig_attr, mut id, mut zone) = (None, None, None, None, None);
    for (kind, value) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => {
                orig = Some(tuple(value));
                // Sent back as the nested attribute the kernel dumped (same bytes).
                let mut a = Vec::with_capacity(4 + value.len());
                put_attr(&mut a, CTA_TUPLE_ORIG | NLA_F_NESTED, value);
                orig_attr = Some(a);
            }
            CTA_TUPLE_REPLY => reply = Some(tuple(value)),
            CTA_ID => id = value.get(..4).map(|v| v.try_into().expect("4 bytes")),
            CTA_ZONE => zone = value.get(..2).map(|v| v.try_into().expect("2 bytes")),
            _ => {}
        }
    }
    Some(Entry {
        orig: orig?,
        reply: reply?,
        family,
        orig_attr: orig_attr?,
        id,
        zone,
    })
}

fn tuple(nested: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (kind, value) in attrs(nested) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(value) {
                    let addr = match (k, v.len()) {
                        (CTA_IP_V4_SRC | CTA_IP_V4_DST, 4) => {
                            IpAddr::from(<[u8; 4]>::try_from(v).expect("4 bytes"))
                        }
                        (CTA_IP_V6_SRC | CTA_IP_V6_DST, 16) => {
                            IpAddr::from(<[u8; 16]>::try_from(v).expect("16 bytes"))
                        }
                        _ => continue,
                    };
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = Some(addr),
                        _ => t.dst = Some(addr),
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(value) {
                    let port = || v.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]]));
                    match k {
                        CTA_PROTO_NUM => t.proto = v.first().copied(),
                        CTA_PROTO_SRC_PORT => t.sport = port(),
                        CTA_PROTO_DST_PORT => t.dport = port(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::nfgen::{NLMSG_DONE, NLMSG_ERROR};
    use super::*;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_attr(&mut v, kind | NLA_F_NESTED, inner);
        v
    }

    fn tuple_attr(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut ip = Vec::new();
        put_attr(&mut ip, CTA_IP_V4_SRC, &src);
        put_attr(&mut ip, CTA_IP_V4_DST, &dst);
        let mut proto = Vec::new();
        put_attr(&mut proto, CTA_PROTO_NUM, &[6]);
        put_attr(&mut proto, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
        put_attr(&mut proto, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        nested(
            kind,
            &[nested(CTA_TUPLE_IP, &ip), nested(CTA_TUPLE_PROTO, &proto)].concat(),
        )
    }

    /// A dumped entry of a load-balanced flow: both tuples read, the original one kept as
    /// sent, id and zone carried into the delete request.
    #[test]
    fn an_entry_parses_and_its_delete_names_it_exactly() {
        let orig = tuple_attr(
            CTA_TUPLE_ORIG,
            [198, 51, 100, 7],
            [203, 0, 113, 20],
            20012,
            80,
        );
        let reply = tuple_attr(
            CTA_TUPLE_REPLY,
            [10, 10, 1, 22],
            [198, 51, 100, 7],
            80,
            20012,
        );
        let mut body = [orig.clone(), reply].concat();
        put_attr(&mut body, CTA_ID, &[0, 0, 1, 2]);
        put_attr(&mut body, CTA_ZONE, &[0, 7]);
        let mut msg = request(IPCTNL_MSG_CT_NEW, 2, 9, AF_INET, &body);
        msg.extend_from_slice(&request(0, 2, 9, 0, &[]));
        msg[16 + 4 + body.len() + 4..][..2].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let mut out = Vec::new();
        assert!(parse_part(&msg, 9, &mut out).unwrap(), "the dump's end");
        let [e] = &out[..] else { panic!("{out:?}") };
        assert_eq!(e.orig.dst, Some("203.0.113.20".parse().unwrap()));
        assert_eq!(
            (e.orig.sport, e.orig.dport, e.orig.proto),
            (Some(20012), Some(80), Some(6))
        );
        assert_eq!(e.reply.src, Some("10.10.1.22".parse().unwrap()));
        assert_eq!(e.reply.sport, Some(80));
        assert_eq!(e.orig_attr, orig);
        assert_eq!((e.id, e.zone), (Some([0, 0, 1, 2]), Some([0, 7])));

        let backend = Filter {
            proto: Some(6),
            orig_dst: Some("203.0.113.20".parse().unwrap()),
            orig_dport: Some(80),
            reply_src: Some("10.10.1.22".parse().unwrap()),
            reply_sport: Some(80),
            ..Filter::default()
        };
        assert!(backend.matches(e));
        assert_eq!(
            backend.to_string(),
            "-p tcp --orig-dst 203.0.113.20 --dport 80 --reply-src 10.10.1.22 --reply-port-src 80"
        );
        let other = Filter {
            reply_src: Some("10.10.1.21".parse().unwrap()),
            ..backend.clone()
        };
        assert!(!other.matches(e));
        assert!(
            !Filter {
                ipv6: true,
                ..backend
            }
            .matches(e),
            "another table"
        );
        // Another request's messages are not this answer.
        assert!(!parse_part(&msg, 10, &mut Vec::new()).unwrap());
    }

    #[test]
    fn an_error_answer_is_its_errno_and_an_ack_completes() {
        let mut err = request(0, 0, 3, 0, &[]);
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let e = parse_part(&err, 3, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        err[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(parse_part(&err, 3, &mut Vec::new()).unwrap());
    }
}
