//! Whether a namespace's links, addresses or routes changed since the last look: a routing
//! socket subscribed to the link, address and route groups (IPv4 and IPv6), never read for
//! content, only drained. An agent that converged something and found nothing to change can
//! skip observing it again until this flag says the kernel moved (or its own inputs did):
//! a gateway's idle resync then costs one `recv` per VPC router instead of five dumps.
//!
//! The flag errs towards "changed": any message, a receive-buffer overrun (ENOBUFS: events
//! were lost) or any other error counts as a change. It sees the agent's own changes too, so
//! a router converged with changes is observed once more on the next look.

use std::io;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// rtnetlink multicast groups (the legacy bitmask of `bind`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// A subscription of the namespace it was opened in (see the module docs).
#[derive(Debug)]
pub struct ChangeFlag {
    socket: Socket,
}

impl ChangeFlag {
    /// Subscribes to links, addresses and routes in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        Self::bind(
            RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV6_ROUTE,
        )
    }

    fn bind(groups: u32) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        socket.set_non_blocking(true)?;
        Ok(ChangeFlag { socket })
    }

    /// Whether anything changed since the last call (drains what arrived meanwhile).
    pub fn take(&self) -> bool {
        let mut changed = false;
        let mut buf = Vec::with_capacity(16 << 10);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(0) => return changed,
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ENOBUFS: the kernel dropped events; keep draining what is left.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(_) => return true,
            }
        }
    }
}
