//! Bridge ports: enslaving a link to a bridge and the port flags CloudStack's layout needs
//! (neigh_suppress on, learning off), as `ip link set … type bridge_slave` sets them: an
//! RTM_NEWLINK without NLM_F_CREATE carrying IFLA_INFO_SLAVE_DATA. The kernel reads those with
//! the ops of the link's current master, so the flags need a request of their own after the
//! one that sets the master.

use netlink_packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::{request, Request};

/// RTM_SETLINK making `link` a port of the bridge with ifindex `master`.
pub fn set_master(link: &str, master: u32) -> Request {
    let msg = LinkUnspec::new_with_name(link).controller(master).build();
    request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// RTM_SETLINK taking `link` out of its bridge (`ip link set … nomaster`).
pub fn release(link: &str) -> Request {
    let msg = LinkUnspec::new_with_name(link).nocontroller().build();
    request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// RTM_NEWLINK (change) setting the bridge-port flags of `link`: neigh_suppress on, learning
/// off.
pub fn set_evpn_flags(link: &str) -> Request {
    // Index 0 and IFLA_IFNAME: the kernel finds the link by name.
    let msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(link.to_string())
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(InfoPortData::BridgePort(vec![
            InfoBridgePort::NeighSupress(true),
            InfoBridgePort::Learning(false),
        ]))
        .build();
    request(RouteNetlinkMessage::NewLink(msg), 0)
}
