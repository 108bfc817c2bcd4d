//! Creating a VXLAN device: `vxlan<VNI>` with the local VTEP, dstport 4789 and no learning
//! (the EVPN control plane fills the FDB), left down.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::InfoVxlan;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkMessageBuilder, LinkVxlan};

use super::{request, Request};

/// RTM_NEWLINK creating vxlan `name` (fails if it exists: never replaces a link).
pub fn create(name: &str, vni: u32, local: Ipv4Addr, port: u16) -> Request {
    let msg = LinkMessageBuilder::<LinkVxlan>::new(name)
        .id(vni)
        .local(local)
        .port(port)
        .append_info_data(InfoVxlan::Learning(false))
        .build();
    request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}
