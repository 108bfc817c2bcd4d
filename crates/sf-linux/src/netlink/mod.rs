//! The kernel through rtnetlink instead of `ip` processes: one long-lived socket per network
//! namespace ([`Netlink`], opened in the namespace the agent runs in), requests pipelined
//! (sent back to back, their acks awaited afterwards, a bounded window in flight), link
//! observation from one dump ([`observe`]) and link changes from multicast events
//! ([`events`]). Each kind of request is built in its own module ([`bridge`], [`vxlan`],
//! [`vlan`], [`port`], [`link`], [`address`], [`route`]); [`l2`] runs the L2 planner's `Action`s with
//! them; [`view`] keeps the links' state from the link messages, so a change of one network
//! is planned without a dump. [`netns`] opens sockets in other named namespaces (a gateway's VPC routers);
//! [`nfgen`] reads a namespace's nftables generation, so `nft` runs only after a change;
//! [`changes`] tells whether a namespace's links, addresses or routes moved since the last look.
//!
//! This module owns only the transport and the message builders: what to change is decided by
//! the pure planners ([`crate::l2`]), unchanged, so the in-memory twin still tests them.

pub mod address;
pub mod bridge;
pub mod changes;
pub mod conntrack;
pub mod events;
pub mod l2;
pub mod link;
pub mod mirror;
pub mod netns;
pub mod nfgen;
pub mod observe;
pub mod port;
pub mod route;
pub mod view;
pub mod vlan;
pub mod vxlan;

use std::collections::VecDeque;

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

/// A request to the kernel, ready to send.
pub type Request = NetlinkMessage<RouteNetlinkMessage>;

/// Requests in flight at once. Every request's ack lands in the socket's receive buffer while
/// later ones are sent; a bounded window keeps that buffer from overflowing (an overflowed
/// buffer drops acks, and a request whose ack is lost would wait for ever).
const WINDOW: usize = 128;

/// Receive buffer asked for each socket: dumps of 10,000 links and bursts of events.
const RCVBUF: usize = 4 << 20;

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("the netlink connection is closed")]
    Closed,
    /// The kernel refused the request (its errno, e.g. "File exists (os error 17)").
    #[error("{0}")]
    Kernel(std::io::Error),
    #[error("no answer from the kernel")]
    NoAnswer,
    #[error("{0}")]
    Other(String),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// A device error naming the operation (`op`) that failed.
    pub fn on(self, op: impl Into<String>) -> crate::DeviceError {
        crate::DeviceError::Netlink {
            op: op.into(),
            source: self,
        }
    }
}

impl From<rtnetlink::Error> for NetlinkError {
    fn from(e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(m) => NetlinkError::Kernel(m.to_io()),
            rtnetlink::Error::RequestFailed => NetlinkError::Closed,
            other => NetlinkError::Other(other.to_string()),
        }
    }
}

/// One rtnetlink socket of the current network namespace, and the task driving it (ended
/// when the last clone of the handle is dropped).
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace (call it after `setns`).
    /// Must run inside a tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let (mut conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        let _ = netlink_sys::AsyncSocket::socket_ref(conn.socket_mut()).set_rx_buf_sz(RCVBUF);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Sends `requests` in order, at most [`WINDOW`] unanswered at a time, and returns each
    /// one's outcome in the same order. The kernel handles a socket's requests one after the
    /// other, in the order sent, so a request may depend on an earlier one of the same call
    /// (a link's master set after the link's creation).
    pub async fn pipeline(&self, requests: Vec<Request>) -> Vec<Result<(), NetlinkError>> {
        let mut handle = self.handle.clone();
        let mut results: Vec<Result<(), NetlinkError>> = Vec::with_capacity(requests.len());
        let mut in_flight = VecDeque::new();
        for (i, req) in requests.into_iter().enumerate() {
            results.push(Err(NetlinkError::NoAnswer));
            if in_flight.len() >= WINDOW {
                let (j, answers) = in_flight.pop_front().expect("window is full");
                results[j] = acked(answers).await;
            }
            match handle.request(req) {
                Ok(answers) => in_flight.push_back((i, answers)),
                Err(e) => results[i] = Err(e.into()),
            }
        }
        while let Some((j, answers)) = in_flight.pop_front() {
            results[j] = acked(answers).await;
        }
        results
    }

    /// Sends one request and awaits its ack.
    pub async fn request(&self, req: Request) -> Result<(), NetlinkError> {
        self.pipeline(vec![req])
            .await
            .pop()
            .unwrap_or(Err(NetlinkError::NoAnswer))
    }
}

/// Waits for the end of one request's answers: Ok on the ack, the kernel's errno otherwise.
async fn acked(
    mut answers: impl futures::Stream<Item = Request> + Unpin,
) -> Result<(), NetlinkError> {
    while let Some(m) = answers.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(NetlinkError::Kernel(e.to_io()));
            }
        }
    }
    Ok(())
}

/// Wraps a message into a request with `flags` (NLM_F_REQUEST | NLM_F_ACK are added).
pub(crate) fn request(msg: RouteNetlinkMessage, flags: u16) -> Request {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    req
}
