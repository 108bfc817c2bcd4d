//! The compiler: intent + observations → one [`NodeDesired`] per node. Deterministic and pure.
//! [`affected_nodes`] tells which nodes a change touches, so the coordinator recompiles only
//! those (a port bound on hv1 never recompiles hv2).

use std::collections::BTreeSet;

use crate::desired::{
    network_key, DesiredObject, EvpnRole, L2Network, LocalPort, NodeDesired, Underlay, UNDERLAY_KEY,
};
use crate::model::{Intent, NetworkKey, NodeRole};

/// Compiles the desired state of `node` at `revision`. Unknown nodes get `None`.
pub fn compile_node(intent: &Intent, node: &str, revision: u64) -> Option<NodeDesired> {
    let n = intent.nodes.get(node)?;
    let mut out = NodeDesired {
        node: node.to_string(),
        revision,
        ..Default::default()
    };
    let evpn = match n.role {
        NodeRole::Hypervisor | NodeRole::Gateway => EvpnRole::Vtep,
        NodeRole::Switch => EvpnRole::Transit,
    };
    out.objects.insert(
        UNDERLAY_KEY.to_string(),
        DesiredObject::Underlay(Underlay {
            asn: n.asn,
            router_id: n.loopback,
            loopback: n.loopback,
            neighbors: n.fabric_ports.clone(),
            evpn,
            announce: Vec::new(),
        }),
    );
    if n.role == NodeRole::Hypervisor {
        for key in hosted_networks(intent, node) {
            let net = &intent.networks[&key];
            let ports = intent
                .ports
                .values()
                .filter(|p| p.node == node && p.network_key() == key)
                .map(|p| LocalPort {
                    name: p.name.clone(),
                    ip: p.ip,
                    mac: p.mac.clone(),
                })
                .collect();
            out.objects.insert(
                network_key(net.vni),
                DesiredObject::L2Network(L2Network {
                    vni: net.vni,
                    tenant: net.tenant.clone(),
                    vpc: net.vpc.clone(),
                    network: net.name.clone(),
                    cidr: net.cidr,
                    gateway: net.gateway,
                    ports,
                }),
            );
        }
    }
    Some(out)
}

/// Networks a hypervisor must carry: those with a port bound on it, plus those whose bridge it
/// observed locally (made by CloudStack's agent rather than by us).
pub fn hosted_networks(intent: &Intent, node: &str) -> BTreeSet<NetworkKey> {
    let mut keys: BTreeSet<NetworkKey> = intent
        .ports
        .values()
        .filter(|p| p.node == node)
        .map(|p| p.network_key())
        .filter(|k| intent.networks.contains_key(k))
        .collect();
    if let Some(vnis) = intent.observed_vnis.get(node) {
        for vni in vnis {
            if let Some(net) = intent.network_by_vni(*vni) {
                keys.insert(net.key());
            }
        }
    }
    keys
}

/// A change to intent or observations, as far as the compiler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A network was created, changed or deleted (with its VNI).
    Network { vni: u32 },
    /// A port binding on `node` changed.
    Port { node: String },
    /// A node's inventory record changed.
    Node { name: String },
    /// A node reported different locally observed bridges.
    Observed { node: String },
    /// Tenants and VPCs carry no per-node state yet.
    Other,
}

/// Nodes whose desired state may differ after `change`. Must be evaluated against the intent
/// both before and after the change and the results merged, so removals are covered too.
pub fn affected_nodes(intent: &Intent, change: &Change) -> BTreeSet<String> {
    match change {
        Change::Port { node } | Change::Node { name: node } | Change::Observed { node } => {
            BTreeSet::from([node.clone()])
        }
        Change::Network { vni } => {
            let mut nodes = BTreeSet::new();
            if let Some(net) = intent.network_by_vni(*vni) {
                let key = net.key();
                nodes.extend(
                    intent
                        .ports
                        .values()
                        .filter(|p| p.network_key() == key)
                        .map(|p| p.node.clone()),
                );
            }
            nodes.extend(
                intent
                    .observed_vnis
                    .iter()
                    .filter(|(_, v)| v.contains(vni))
                    .map(|(n, _)| n.clone()),
            );
            nodes
        }
        Change::Other => BTreeSet::new(),
    }
}
