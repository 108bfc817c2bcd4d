//! The nftables ruleset generation of a network namespace: a counter the kernel bumps on
//! every committed nftables transaction in that namespace (`NFT_MSG_GETGEN` on a
//! NETLINK_NETFILTER socket, what `nft monitor` and `nft -e` read). An agent that cached
//! what it last read with `nft` re-reads only when the generation moved, instead of running
//! `nft` for every namespace on every pass.

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// nfnetlink subsystem of nftables, and its generation messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
/// Attribute of NEWGEN carrying the generation (big endian u32).
const NFTA_GEN_ID: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;

/// A NETLINK_NETFILTER socket of the namespace it was opened in.
#[derive(Debug)]
pub struct NfGen {
    socket: Socket,
    seq: std::sync::atomic::AtomicU32,
}

impl NfGen {
    /// Opens the socket in the calling thread's network namespace. Answers are bounded by a
    /// 2 s receive timeout (the kernel answers at once; a lost answer must not hang a pass).
    pub fn open() -> io::Result<Self> {
        Ok(NfGen {
            socket: open_socket()?,
            seq: 0.into(),
        })
    }

    /// The namespace's current ruleset generation (a blocking round trip of microseconds).
    pub fn generation(&self) -> io::Result<u32> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.socket.send(&request(seq), 0)?;
        let mut buf = vec![0u8; 512];
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            if let Some(g) = parse_reply(&buf[..n], seq)? {
                return Ok(g);
            }
        }
    }
}

/// A NETLINK_NETFILTER socket of the calling thread's network namespace. A read waits at
/// most 2 s (the kernel answers at once; a lost answer must not hang a pass).
pub fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid fd and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// An nftables request: nlmsghdr (type `NFNL_SUBSYS_NFTABLES << 8 | msg`), nfgenmsg (`family`,
/// version 0, resource 0), then `attrs` (already 4-aligned).
pub fn nftables_request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    nfnl_request(NFNL_SUBSYS_NFTABLES, msg, flags, seq, family, attrs)
}

/// A request to nfnetlink subsystem `subsys`: nlmsghdr (type `subsys << 8 | msg`), nfgenmsg
/// (`family`, version 0, resource 0), then `attrs` (already 4-aligned).
pub fn nfnl_request(
    subsys: u16,
    msg: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[u8],
) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((subsys << 8) | msg).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// Walks one received part of the answer to request `seq`: calls `each` with the type and the
/// body (what follows the nlmsghdr) of each of its messages; true once the answer is complete
/// (NLMSG_DONE, or an acknowledgement), an error answer as its errno. Messages of other
/// requests are skipped.
pub fn answer_part(mut buf: &[u8], seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<bool> {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let mseq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if len < 16 || len > buf.len() {
            return Err(io::Error::other("truncated netlink message"));
        }
        let body = &buf[16..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        if mseq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| io::Error::other("short netlink error"))?;
                return if code == 0 {
                    Ok(true)
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            _ => each(kind, body),
        }
    }
    Ok(false)
}

/// Appends netlink attribute `kind` holding `value`, padded to 4 bytes.
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The netlink attributes of `buf` as (type without the nested and byte-order flags, value).
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

/// NFT_MSG_GETGEN (family unspec, no attributes).
fn request(seq: u32) -> Vec<u8> {
    nftables_request(NFT_MSG_GETGEN, NLM_F_REQUEST, seq, 0, &[])
}

/// The generation in the answer to request `seq`; None for a message about another request.
fn parse_reply(buf: &[u8], seq: u32) -> io::Result<Option<u32>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short nfnetlink answer");
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let len = u32_at(buf, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(buf, 4).ok_or_else(bad)?;
    if u32_at(buf, 8).ok_or_else(bad)? != seq {
        return Ok(None);
    }
    let msg = buf.get(..len).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(msg, 16).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a NEWGEN"));
    }
    // Attributes follow the 16-byte nlmsghdr and the 4-byte nfgenmsg, each 4-aligned.
    let mut i = 20;
    while let (Some(alen), Some(atype)) = (u16_at(msg, i), u16_at(msg, i + 2)) {
        let alen = alen as usize;
        if alen < 4 {
            break;
        }
        if atype & 0x3fff == NFTA_GEN_ID {
            let v = msg.get(i + 4..i + 8).ok_or_else(bad)?;
            return Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
        }
        i += (alen + 3) & !3;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "NEWGEN without a generation",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_newgen_answer() {
        let mut m = Vec::new();
        m.extend_from_slice(&44u32.to_ne_bytes());
        m.extend_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        // NFTA_GEN_PROC_PID first, then NFTA_GEN_ID.
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&99u32.to_be_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&41u32.to_be_bytes());
        m.extend_from_slice(&[0; 8]);
        assert_eq!(parse_reply(&m, 7).unwrap(), Some(41));
        assert_eq!(parse_reply(&m, 8).unwrap(), None);
    }
}
