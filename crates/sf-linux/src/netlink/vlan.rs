//! Creating an 802.1Q sub-interface: a switch port's `<if>.<vlan>` that joins a VNI's bridge
//! (a tagged server or Direct Connect attachment).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::LinkVlan;

use super::{request, Request};

/// RTM_NEWLINK creating VLAN `vlan` of the link with ifindex `parent` as `name`, left down
/// (fails if `name` exists: never replaces a link).
pub fn create(name: &str, parent: u32, vlan: u16) -> Request {
    let msg = LinkVlan::new(name, parent, vlan).build();
    request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}
