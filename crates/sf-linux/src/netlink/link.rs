//! Changes to any link addressed by name: up, down, the ownership alias, MTU, deletion.

use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::LinkUnspec;

use super::{request, Request};

/// RTM_SETLINK bringing `link` up.
pub fn set_up(link: &str) -> Request {
    request(
        RouteNetlinkMessage::SetLink(LinkUnspec::new_with_name(link).up().build()),
        0,
    )
}

/// RTM_SETLINK bringing `link` down.
pub fn set_down(link: &str) -> Request {
    request(
        RouteNetlinkMessage::SetLink(LinkUnspec::new_with_name(link).down().build()),
        0,
    )
}

/// RTM_SETLINK setting the ifalias of `link`. The kernel ignores IFLA_IFALIAS in the
/// RTM_NEWLINK that creates a link (checked on 6.18 with `ip link add … alias`), so the
/// ownership mark is the request right after the creation, in the same pipeline.
pub fn set_alias(link: &str, alias: &str) -> Request {
    let mut msg = LinkUnspec::new_with_name(link).build();
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// RTM_SETLINK setting the MTU of `link`.
pub fn set_mtu(link: &str, mtu: u32) -> Request {
    request(
        RouteNetlinkMessage::SetLink(LinkUnspec::new_with_name(link).mtu(mtu).build()),
        0,
    )
}

/// RTM_DELLINK removing `link` (by name).
pub fn delete(link: &str) -> Request {
    request(
        RouteNetlinkMessage::DelLink(LinkUnspec::new_with_name(link).build()),
        0,
    )
}
