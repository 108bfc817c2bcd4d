//! Creating a bridge: `brvx-<VNI>` of the CloudStack layout, STP off, left down (its IPv6 is
//! turned off before it comes up).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::BridgeStpState;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkMessageBuilder};

use super::{request, Request};

/// RTM_NEWLINK creating bridge `name` (fails if it exists: never replaces a link).
pub fn create(name: &str) -> Request {
    let msg = LinkMessageBuilder::<LinkBridge>::new(name)
        .stp_state(BridgeStpState::Disabled)
        .build();
    request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}
