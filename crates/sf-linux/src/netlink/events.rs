//! Link changes as they happen: a socket subscribed to RTNLGRP_LINK, so that an agent
//! re-observes when something changed instead of dumping every link on a timer. Each
//! RTM_NEWLINK / RTM_DELLINK is handed on as a [`LinkEvent`]; a full receive buffer (events
//! lost) becomes [`LinkEvent::Overrun`], after which only a full observation is trustworthy.
//! [`link_updates`] hands on the messages themselves ([`LinkUpdate`]), so that a
//! [`super::view::LinkView`] can keep the links' state without dumping them again.
//! [`route_changes_v4`] does the same for IPv4 routes, content unread: a wake-up only (what
//! `ip -o -4 monitor route` printed, without a process).

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;

use super::{NetlinkError, RCVBUF};

/// One link change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed; `master` is whether it is some bridge's (or VRF's) port.
    Changed {
        name: String,
        master: bool,
    },
    Deleted {
        name: String,
    },
    /// The kernel dropped events (our receive buffer was full).
    Overrun,
}

/// One link message as the kernel sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkUpdate {
    /// RTM_NEWLINK: the link's whole state (AF_UNSPEC), or its bridge-port state (AF_BRIDGE).
    New(LinkMessage),
    /// RTM_DELLINK.
    Deleted(LinkMessage),
    /// The kernel dropped messages (our receive buffer was full).
    Overrun,
}

impl LinkUpdate {
    /// The short form the wakeup logic reads.
    pub fn event(&self) -> LinkEvent {
        match self {
            LinkUpdate::New(l) => changed(l),
            LinkUpdate::Deleted(l) => LinkEvent::Deleted { name: name(l) },
            LinkUpdate::Overrun => LinkEvent::Overrun,
        }
    }
}

/// The stream of link messages of the calling thread's network namespace. Must run inside a
/// tokio runtime; the stream ends if the socket fails.
pub fn link_updates() -> Result<impl futures::Stream<Item = LinkUpdate>, NetlinkError> {
    let (mut conn, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).map_err(NetlinkError::Open)?;
    let _ = netlink_sys::AsyncSocket::socket_ref(conn.socket_mut()).set_rx_buf_sz(RCVBUF);
    tokio::spawn(conn);
    // `_handle` may go: unsolicited messages keep flowing while `messages` is alive.
    Ok(messages.filter_map(|(m, _)| async move {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                Some(LinkUpdate::New(l))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                Some(LinkUpdate::Deleted(l))
            }
            NetlinkPayload::Overrun(_) => Some(LinkUpdate::Overrun),
            _ => None,
        }
    }))
}

/// The stream of link changes of the calling thread's network namespace. Must run inside a
/// tokio runtime; the stream ends if the socket fails.
pub fn link_events() -> Result<impl futures::Stream<Item = LinkEvent>, NetlinkError> {
    Ok(link_updates()?.map(|u| u.event()))
}

fn name(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn changed(l: &LinkMessage) -> LinkEvent {
    LinkEvent::Changed {
        name: name(l),
        master: l
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(_))),
    }
}

/// One tick per IPv4 route message (RTM_NEWROUTE / RTM_DELROUTE of any table) of the calling
/// thread's network namespace, and one per overrun (messages were lost, so something
/// changed). Must run inside a tokio runtime; the stream ends if the socket fails.
pub fn route_changes_v4() -> Result<impl futures::Stream<Item = ()>, NetlinkError> {
    let (mut conn, _handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route])
            .map_err(NetlinkError::Open)?;
    let _ = netlink_sys::AsyncSocket::socket_ref(conn.socket_mut()).set_rx_buf_sz(RCVBUF);
    tokio::spawn(conn);
    Ok(messages.filter_map(|(m, _)| async move {
        match m.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_),
            )
            | NetlinkPayload::Overrun(_) => Some(()),
            _ => None,
        }
    }))
}
