//! What a switch receives beyond its underlay: the tiers it hands into VNIs (bare-metal ports
//! bound on its interfaces) and the Direct Connect hand-off segments on its ports. A switch
//! with neither is EVPN transit (a spine, or a leaf with no attachments).
//!
//! Inputs: port bindings on the switch, the networks they name, Direct Connects on the switch,
//! the public pools of its site (underlay blackholes).

use std::collections::BTreeSet;

use crate::desired::{network_key, DesiredObject, EvpnRole, L2Network, LocalPort, NodeDesired};
use crate::event::ObjectRef;
use crate::model::{Intent, NodeRole, PortBinding};

use super::{
    dc_segment, hosted_networks_of, local_port, of_role, tier_network, underlay_mut, PortsByNode,
};

/// Adds the switch's networks to `out` and sets its EVPN role.
pub(super) fn compile(
    intent: &Intent,
    node_ports: &[&PortBinding],
    node: &str,
    out: &mut NodeDesired,
) {
    let nets = switch_networks_of(intent, node_ports, node);
    underlay_mut(out).evpn = if nets.is_empty() {
        EvpnRole::Transit
    } else {
        EvpnRole::Vtep
    };
    for net in nets {
        out.objects
            .insert(network_key(net.vni), DesiredObject::L2Network(net));
    }
}

/// Switches whose desired state may depend on `change` (evaluated on one side of it).
pub fn affected_by(intent: &Intent, change: &ObjectRef) -> BTreeSet<String> {
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
        _ => BTreeSet::new(),
    };
    of_role(intent, nodes, NodeRole::Switch)
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
