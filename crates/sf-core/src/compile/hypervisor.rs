//! What a hypervisor receives beyond its underlay: one L2 network per tier it hosts (a port
//! bound on it, or a bridge it found locally that CloudStack's agent made), with the tier's ACL
//! and the VPC's other tiers as ACL peers.
//!
//! Dual-stack tiers also get their IPv6 side (`net6/<VNI>`: the /64, the router's addresses,
//! the local ports' IPv6 addresses).
//!
//! Inputs: port bindings on the hypervisor, networks (its tiers and their VPC peers), ACL
//! lists of those VPCs, the bridges it observed, the VPC's id (the router's link-local).

use std::collections::BTreeSet;

use crate::desired::{
    network6_key, network_key, vpc_link_local, DesiredObject, L2Network6, LocalPort6, NodeDesired,
    PeerTier,
};
use crate::event::{ObjectRef, VpcRef};
use crate::model::{Intent, Network, NodeRole, PortBinding};

use super::{
    hosted_networks_of, local_port, of_role, tier_acl, tier_network, vpc_networks,
    MAX_OBSERVED_VNIS,
};

/// Adds the hypervisor's tiers to `out`.
pub(super) fn compile(
    intent: &Intent,
    node_ports: &[&PortBinding],
    node: &str,
    out: &mut NodeDesired,
) {
    for key in hosted_networks_of(intent, node_ports, node) {
        let net = &intent.networks[&key];
        let mut l2 = tier_network(net);
        l2.ports = node_ports
            .iter()
            .filter(|p| p.network_key() == key)
            .map(|p| local_port(p, None))
            .collect();
        l2.acl = tier_acl(intent, &net.tenant, &net.vpc, &net.name);
        l2.peer_tiers = peer_tiers(intent, net);
        out.objects
            .insert(network_key(net.vni), DesiredObject::L2Network(l2));
        if let Some(l2v6) = tier_network6(intent, net, node_ports) {
            out.objects
                .insert(network6_key(net.vni), DesiredObject::L2Network6(l2v6));
        }
    }
}

/// The IPv6 side of a dual-stack tier on this hypervisor: the tier's /64, the router's
/// addresses on it and the local ports' IPv6 addresses (anti-spoofing and ACL inputs).
fn tier_network6(
    intent: &Intent,
    net: &Network,
    node_ports: &[&PortBinding],
) -> Option<L2Network6> {
    let prefix = net.ipv6_prefix?;
    let vpc = intent.vpcs.get(&VpcRef::new(&net.tenant, &net.vpc))?;
    Some(L2Network6 {
        vni: net.vni,
        prefix,
        gateway: net.ipv6_gateway()?,
        router_link_local: vpc_link_local(vpc.id),
        vpc_tiers: vpc_networks(intent, &net.tenant, &net.vpc)
            .filter_map(|n| n.ipv6_prefix)
            .collect(),
        ports: node_ports
            .iter()
            .filter(|p| p.network_key() == net.key())
            .filter_map(|p| {
                p.ipv6.map(|ipv6| LocalPort6 {
                    name: p.name.clone(),
                    ipv6,
                    mac: p.mac.clone(),
                })
            })
            .collect(),
    })
}

/// Hypervisors whose desired state may depend on `change` (evaluated on one side of it).
pub fn affected_by(intent: &Intent, change: &ObjectRef) -> BTreeSet<String> {
    let nodes: BTreeSet<String> = match change {
        ObjectRef::Port(p) => intent
            .ports
            .get(p)
            .map(|p| p.node.clone())
            .into_iter()
            .collect(),
        ObjectRef::Observed(node) => BTreeSet::from([node.clone()]),
        // A tier is known to its own hosts and, as an ACL peer, to every host of its VPC
        // (its own hosts are among those); an ACL list reaches the same hosts.
        ObjectRef::Network(c) | ObjectRef::Acl(c) => vpc_hosts(intent, &c.tenant, &c.vpc),
        // Its site decides whether a host's observation of one of its tiers is admitted.
        ObjectRef::Vpc(v) => observing_hosts(intent, &v.tenant, &v.vpc),
        _ => BTreeSet::new(),
    };
    of_role(intent, nodes, NodeRole::Hypervisor)
}

/// Nodes carrying any tier of a VPC: a port in it, or an observed bridge of one of its tiers.
fn vpc_hosts(intent: &Intent, tenant: &str, vpc: &str) -> BTreeSet<String> {
    let mut nodes: BTreeSet<String> = intent
        .ports
        .values()
        .filter(|p| p.tenant == tenant && p.vpc == vpc)
        .map(|p| p.node.clone())
        .collect();
    let vnis: BTreeSet<u32> = vpc_networks(intent, tenant, vpc).map(|n| n.vni).collect();
    // The rule of `observations`, for this VPC's tiers only: same site, within the cap.
    // (Judging every observed VNI here would scan every network per VNI, on every change.)
    let vpc_site = intent
        .vpcs
        .get(&VpcRef::new(tenant, vpc))
        .map_or("", |v| v.site.as_str());
    for (node, seen) in &intent.observed_vnis {
        let node_site = intent.nodes.get(node).map_or("", |n| n.site.as_str());
        if node_site != vpc_site || seen.is_disjoint(&vnis) {
            continue;
        }
        if seen
            .iter()
            .take(MAX_OBSERVED_VNIS)
            .any(|v| vnis.contains(v))
        {
            nodes.insert(node.clone());
        }
    }
    nodes
}

/// Nodes reporting a bridge of one of the VPC's tiers, admitted or not.
fn observing_hosts(intent: &Intent, tenant: &str, vpc: &str) -> BTreeSet<String> {
    let vnis: BTreeSet<u32> = vpc_networks(intent, tenant, vpc).map(|n| n.vni).collect();
    intent
        .observed_vnis
        .iter()
        .filter(|(_, seen)| !seen.is_disjoint(&vnis))
        .map(|(node, _)| node.clone())
        .collect()
}

/// The other tiers of a network's VPC, with their ACLs.
fn peer_tiers(intent: &Intent, net: &Network) -> Vec<PeerTier> {
    vpc_networks(intent, &net.tenant, &net.vpc)
        .filter(|n| n.name != net.name)
        .map(|n| PeerTier {
            vni: n.vni,
            cidr: n.cidr,
            acl: tier_acl(intent, &n.tenant, &n.vpc, &n.name),
        })
        .collect()
}
