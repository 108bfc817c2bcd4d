//! What a switch receives beyond its underlay: the tiers it hands into VNIs (bare-metal ports
//! bound on its interfaces) and the Direct Connect hand-off segments on its ports. A switch
//! with neither is EVPN transit (a spine, or a leaf with no attachments).
//!
//! Inputs: port bindings on the switch, the networks they name, Direct Connects on the switch,
//! the public pools of its site (underlay blackholes).

use std::collections::BTreeSet;

use crate::desired::{
    network_key, DesiredObject, EvpnRole, EvpnScope, L2Network, LocalPort, NodeDesired, PeerFilter,
    PrefixMatch, ANCHOR_RANGE,
};
use crate::event::ObjectRef;
use crate::model::{Intent, Node, NodeRole, Pool, PortBinding};

use super::{
    dc_segment, hosted_networks_of, local_port, of_role, tier_network, underlay_mut, PortsByNode,
};

/// Adds the switch's networks to `out` and sets its EVPN role.
pub(super) fn compile(
    intent: &Intent,
    ports_by_node: &PortsByNode,
    node: &str,
    out: &mut NodeDesired,
) {
    let nets = switch_networks_of(intent, ports_by_node.of(node), node);
    let underlay = underlay_mut(out);
    underlay.evpn = if nets.is_empty() {
        EvpnRole::Transit
    } else {
        EvpnRole::Vtep
    };
    if let Some(n) = intent.nodes.get(node) {
        // IPv6 unicast only where the site has IPv6 pools: a fabric without them renders
        // as before (no session reset on upgrade).
        underlay.ipv6_unicast = intent.ipv6_pools(&n.site).next().is_some();
        underlay.peer_filters = peer_filters(intent, ports_by_node, n);
        underlay.bfd_neighbors = n
            .fabric_ports
            .iter()
            .filter(|p| intent.nodes.get(*p).map(|x| x.role) == Some(NodeRole::Gateway))
            .cloned()
            .collect();
    }
    for net in nets {
        out.objects
            .insert(network_key(net.vni), DesiredObject::L2Network(net));
    }
}

/// Switches whose desired state may depend on `change` (evaluated on one side of it), given
/// the hypervisors and gateways the same change touches (their EVPN scope is part of what a
/// neighbouring switch accepts; the caller has them already, so they are not worked out
/// twice).
pub fn affected_by(
    intent: &Intent,
    change: &ObjectRef,
    hypervisors: &BTreeSet<String>,
    gateways: &BTreeSet<String>,
) -> BTreeSet<String> {
    let nodes: BTreeSet<String> = match change {
        ObjectRef::Port(p) => intent
            .ports
            .get(p)
            .map(|p| p.node.clone())
            .into_iter()
            .collect(),
        ObjectRef::Network(n) => {
            let key = n.clone();
            intent
                .ports
                .values()
                .filter(|p| p.network_key() == key)
                .map(|p| p.node.clone())
                .collect()
        }
        ObjectRef::DirectConnect(d) => intent
            .direct_connects
            .get(d)
            .map(|d| d.switch.clone())
            .into_iter()
            .collect(),
        ObjectRef::Pool(_) => intent.nodes.keys().cloned().collect(),
        // A neighbour's identity or role decides what the switch accepts from it.
        ObjectRef::Node(name) => intent
            .nodes
            .values()
            .filter(|s| s.fabric_ports.iter().any(|p| p == name))
            .map(|s| s.name.clone())
            .collect(),
        _ => BTreeSet::new(),
    };
    let mut switches = of_role(intent, nodes, NodeRole::Switch);
    let scope_moved = evpn_scope_affected_by(change, hypervisors, gateways);
    switches.extend(neighbours_of(intent, &scope_moved));
    switches
}

/// Of the hypervisors and gateways `change` touches, those whose EVPN scope ([`evpn_scope`])
/// may move with it: only kinds that decide which networks a node carries, not those that
/// only shape them (ACLs, NAT, load balancers).
fn evpn_scope_affected_by(
    change: &ObjectRef,
    hypervisors: &BTreeSet<String>,
    gateways: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    if matches!(
        change,
        ObjectRef::Port(_) | ObjectRef::Observed(_) | ObjectRef::Network(_) | ObjectRef::Vpc(_)
    ) {
        nodes.extend(hypervisors.iter().cloned());
    }
    if matches!(
        change,
        ObjectRef::Vpc(_)
            | ObjectRef::Placement(_)
            | ObjectRef::Network(_)
            | ObjectRef::DirectConnect(_)
    ) {
        nodes.extend(gateways.iter().cloned());
    }
    nodes
}

/// The switches with a fabric port to any of `nodes`.
fn neighbours_of(intent: &Intent, nodes: &BTreeSet<String>) -> BTreeSet<String> {
    if nodes.is_empty() {
        return BTreeSet::new();
    }
    intent
        .nodes
        .values()
        .filter(|s| s.role == NodeRole::Switch && s.fabric_ports.iter().any(|p| nodes.contains(p)))
        .map(|s| s.name.clone())
        .collect()
}

/// What the switch accepts from each hypervisor and gateway on its fabric ports: a hypervisor
/// its VTEP /32 (and nothing in IPv6); a gateway its loopback and host routes inside the
/// public pools of its site and the VPC anchor range, and in IPv6 any prefix inside its
/// site's IPv6 pools
/// (not only the /32s placement gives it today: the leaf must accept a new primary's routes
/// the moment it announces them, without waiting for its own configuration to follow a
/// failover). A neighbour's other announcements (a default route, another node's VTEP, a
/// tenant's address) are dropped at the leaf. In EVPN, each may announce only the VNIs of
/// the networks it carries ([`evpn_scope`]).
fn peer_filters(intent: &Intent, ports_by_node: &PortsByNode, switch: &Node) -> Vec<PeerFilter> {
    let host = |ip: std::net::Ipv4Addr| PrefixMatch {
        prefix: ipnet::Ipv4Net::new(ip, 32).expect("/32 is valid"),
        host_routes: false,
    };
    let mut out = Vec::new();
    for port in &switch.fabric_ports {
        let Some(peer) = intent.nodes.get(port) else {
            continue; // not a node of ours: the border's external peers
        };
        let mut permit = vec![host(peer.loopback)];
        let mut permit6 = Vec::new();
        match peer.role {
            NodeRole::Switch => continue,
            NodeRole::Hypervisor => {}
            NodeRole::Gateway => {
                permit6 = super::gateway::site_ipv6_pools(intent, &peer.name);
                let mut pools: Vec<_> = intent
                    .pools
                    .values()
                    .filter(|p| p.site == peer.site)
                    .filter_map(Pool::v4)
                    .map(|c| c.trunc())
                    .collect();
                pools.push(ANCHOR_RANGE);
                pools.sort();
                pools.dedup();
                permit.extend(pools.into_iter().map(|prefix| PrefixMatch {
                    prefix,
                    host_routes: true,
                }));
            }
        }
        out.push(PeerFilter {
            neighbor: port.clone(),
            permit,
            evpn: Some(EvpnScope {
                asn: peer.asn,
                vnis: evpn_scope(intent, ports_by_node, peer),
            }),
            permit6,
        });
    }
    out
}

/// The VNIs of the L2 networks a hypervisor or gateway carries: exactly those its own
/// compiled desired state holds (a hypervisor's hosted networks; a gateway's tiers and
/// hand-off segments of the VPCs placed on it, as primary or standby, so that a failover
/// needs no change at the leaf), ascending.
pub fn evpn_scope(intent: &Intent, ports_by_node: &PortsByNode, peer: &Node) -> Vec<u32> {
    let vnis: BTreeSet<u32> = match peer.role {
        NodeRole::Switch => BTreeSet::new(),
        NodeRole::Hypervisor => {
            hosted_networks_of(intent, ports_by_node.of(&peer.name), &peer.name)
                .iter()
                .filter_map(|k| intent.networks.get(k).map(|n| n.vni))
                .collect()
        }
        NodeRole::Gateway => super::gateway::carried_vnis(intent, &peer.name),
    };
    vnis.into_iter().collect()
}

/// What a switch carries: each tier with a bare-metal port bound on one of its interfaces,
/// and each Direct Connect hand-off segment on it (the customer's port as its member).
pub fn switch_networks(intent: &Intent, node: &str) -> Vec<L2Network> {
    switch_networks_of(intent, PortsByNode::for_node(intent, node).of(node), node)
}

fn switch_networks_of(intent: &Intent, node_ports: &[&PortBinding], node: &str) -> Vec<L2Network> {
    let mut out = Vec::new();
    for key in hosted_networks_of(intent, node_ports, node) {
        let ports: Vec<_> = node_ports
            .iter()
            .filter(|p| p.network_key() == key && p.attach.is_some())
            .map(|p| local_port(p, p.attach.clone()))
            .collect();
        if ports.is_empty() {
            continue;
        }
        let mut l2 = tier_network(&intent.networks[&key]);
        l2.ports = ports;
        out.push(l2);
    }
    for dc in intent.direct_connects.values().filter(|d| d.switch == node) {
        let mut segment = dc_segment(&dc.tenant, &dc.vpc, &dc.name, dc.vni, dc.local_address);
        // The customer's router is the segment's one member, on the switch port.
        segment.ports = vec![LocalPort {
            name: dc.name.clone(),
            ip: dc.peer_address,
            mac: None,
            attach: Some(dc.attachment()),
        }];
        out.push(segment);
    }
    out.sort_by_key(|n| n.vni);
    out
}
