//! The compiler: intent + observations → one [`NodeDesired`] per node. Deterministic and pure.
//! [`affected_nodes`] tells which nodes a change touches, so the coordinator recompiles only
//! those (a port bound on hv1 never recompiles hv2).

use std::collections::{BTreeSet, HashMap};

use crate::desired::{
    network_key, vpc_mac, vpc_router_key, DesiredObject, EvpnRole, L2Network, LbBackend,
    LoadBalancer as DesiredLb, LocalPort, NodeDesired, PortForward, RouterRoute, RouterTier,
    StaticNat, Underlay, VpcRouter, UNDERLAY_KEY,
};
use crate::desired::{AclRule, DirectConnectPeering, PeerTier, TierAcl};
use crate::model::{Direction, Intent, NatKind, NetworkKey, NodeRole, PortBinding, VpcKey};

/// Port bindings grouped by node: built once for a batch of nodes to compile, so compiling
/// every node of a large fabric is linear in the ports, not ports × nodes.
#[derive(Default)]
pub struct PortsByNode<'a>(HashMap<&'a str, Vec<&'a PortBinding>>);

impl<'a> PortsByNode<'a> {
    pub fn new(intent: &'a Intent) -> Self {
        let mut by: HashMap<&str, Vec<&PortBinding>> = HashMap::new();
        for p in intent.ports.values() {
            by.entry(p.node.as_str()).or_default().push(p);
        }
        PortsByNode(by)
    }

    /// The index of one node's ports only (a scan of all ports, once).
    pub fn for_node(intent: &'a Intent, node: &str) -> Self {
        let mut by: HashMap<&str, Vec<&PortBinding>> = HashMap::new();
        for p in intent.ports.values().filter(|p| p.node == node) {
            by.entry(p.node.as_str()).or_default().push(p);
        }
        PortsByNode(by)
    }

    pub fn of(&self, node: &str) -> &[&'a PortBinding] {
        self.0.get(node).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The networks of one VPC, by key range (not a scan of every network of the fabric).
fn vpc_networks<'a>(
    intent: &'a Intent,
    tenant: &'a str,
    vpc: &'a str,
) -> impl Iterator<Item = &'a crate::model::Network> + 'a {
    intent
        .networks
        .range((tenant.to_string(), vpc.to_string(), String::new())..)
        .take_while(move |((t, v, _), _)| t == tenant && v == vpc)
        .map(|(_, n)| n)
}

/// Compiles the desired state of `node` at `revision`. Unknown nodes get `None`.
pub fn compile_node(intent: &Intent, node: &str, revision: u64) -> Option<NodeDesired> {
    compile_node_indexed(intent, &PortsByNode::for_node(intent, node), node, revision)
}

/// [`compile_node`] with a port index shared across the nodes of a batch.
pub fn compile_node_indexed(
    intent: &Intent,
    ports_by_node: &PortsByNode,
    node: &str,
    revision: u64,
) -> Option<NodeDesired> {
    let n = intent.nodes.get(node)?;
    let node_ports = ports_by_node.of(node);
    let mut out = NodeDesired {
        node: node.to_string(),
        revision,
        ..Default::default()
    };
    // A switch terminates VXLAN (a leaf) only while it hands ports into VNIs; otherwise it is
    // EVPN transit (a spine, or a leaf with no attachments).
    let switch_nets = if n.role == NodeRole::Switch {
        switch_networks_of(intent, node_ports, node)
    } else {
        Vec::new()
    };
    let evpn = match n.role {
        NodeRole::Hypervisor | NodeRole::Gateway => EvpnRole::Vtep,
        NodeRole::Switch if switch_nets.is_empty() => EvpnRole::Transit,
        NodeRole::Switch => EvpnRole::Vtep,
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
            blackhole: if matches!(n.role, NodeRole::Switch | NodeRole::Gateway) {
                let mut pools: Vec<ipnet::Ipv4Net> = intent
                    .pools
                    .values()
                    .filter(|p| p.site == n.site)
                    .map(|p| p.cidr.trunc())
                    .collect();
                pools.sort();
                pools.dedup();
                pools
            } else {
                Vec::new()
            },
            forwarding: n.role == NodeRole::Switch,
        }),
    );
    for net in switch_nets {
        out.objects
            .insert(network_key(net.vni), DesiredObject::L2Network(net));
    }
    if n.role == NodeRole::Gateway {
        let mut announce = Vec::new();
        for vpc_key in served_vpcs(intent, node) {
            let router = vpc_router(intent, &vpc_key);
            for ip in router.public_ips() {
                announce.push(ipnet::Ipv4Net::new(ip, 32).expect("/32 is valid"));
            }
            for dc in &router.direct_connects {
                // The hand-off segment reaches the router like a tier does.
                out.objects.insert(
                    network_key(dc.vni),
                    DesiredObject::L2Network(L2Network {
                        vni: dc.vni,
                        tenant: vpc_key.0.clone(),
                        vpc: vpc_key.1.clone(),
                        network: format!("dc-{}", dc.name),
                        cidr: dc.local.trunc(),
                        gateway: dc.local.addr(),
                        ports: Vec::new(),
                        acl: None,
                        peer_tiers: Vec::new(),
                    }),
                );
            }
            for tier in &router.tiers {
                let net = intent.networks
                    [&(vpc_key.0.clone(), vpc_key.1.clone(), tier.name.clone())]
                    .clone();
                out.objects.insert(
                    network_key(net.vni),
                    DesiredObject::L2Network(L2Network {
                        vni: net.vni,
                        tenant: net.tenant,
                        vpc: net.vpc,
                        network: net.name,
                        cidr: net.cidr,
                        gateway: net.gateway,
                        ports: Vec::new(),
                        // The router enforces north-south ACLs itself (RouterTier.acl).
                        acl: None,
                        peer_tiers: Vec::new(),
                    }),
                );
            }
            out.objects
                .insert(vpc_router_key(router.id), DesiredObject::VpcRouter(router));
        }
        announce.sort();
        announce.dedup();
        if let Some(DesiredObject::Underlay(u)) = out.objects.get_mut(UNDERLAY_KEY) {
            u.announce = announce;
        }
    }
    if n.role == NodeRole::Hypervisor {
        for key in hosted_networks_of(intent, node_ports, node) {
            let net = &intent.networks[&key];
            let ports = node_ports
                .iter()
                .filter(|p| p.network_key() == key)
                .map(|p| LocalPort {
                    name: p.name.clone(),
                    ip: p.ip,
                    mac: p.mac.clone(),
                    attach: None,
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
                    acl: tier_acl(intent, &net.tenant, &net.vpc, &net.name),
                    peer_tiers: peer_tiers(intent, net),
                }),
            );
        }
    }
    Some(out)
}

/// The compiled ACL of a tier, if a list is attached to it.
pub fn tier_acl(intent: &Intent, tenant: &str, vpc: &str, network: &str) -> Option<TierAcl> {
    let list = intent
        .acls
        .range((tenant.to_string(), vpc.to_string(), String::new())..)
        .take_while(|((t, v, _), _)| t == tenant && v == vpc)
        .map(|(_, l)| l)
        .find(|l| l.tiers.iter().any(|t| t == network))?;
    let mut rules = list.rules.clone();
    rules.sort_by_key(|r| r.rule.number);
    let pick = |d: Direction| -> Vec<AclRule> {
        rules
            .iter()
            .filter(|r| r.direction == d)
            .map(|r| r.rule.clone())
            .collect()
    };
    Some(TierAcl {
        list: list.name.clone(),
        default_action: list.default_action,
        ingress: pick(Direction::Ingress),
        egress: pick(Direction::Egress),
    })
}

/// What a switch carries: each tier with a bare-metal port bound on one of its interfaces,
/// and each Direct Connect hand-off segment on it (the customer's port as its member).
pub fn switch_networks(intent: &Intent, node: &str) -> Vec<L2Network> {
    switch_networks_of(intent, PortsByNode::for_node(intent, node).of(node), node)
}

fn switch_networks_of(intent: &Intent, node_ports: &[&PortBinding], node: &str) -> Vec<L2Network> {
    let mut out = Vec::new();
    for key in hosted_networks_of(intent, node_ports, node) {
        let net = &intent.networks[&key];
        let ports = node_ports
            .iter()
            .filter(|p| p.network_key() == key && p.attach.is_some())
            .map(|p| LocalPort {
                name: p.name.clone(),
                ip: p.ip,
                mac: p.mac.clone(),
                attach: p.attach.clone(),
            })
            .collect::<Vec<_>>();
        if ports.is_empty() {
            continue;
        }
        out.push(L2Network {
            vni: net.vni,
            tenant: net.tenant.clone(),
            vpc: net.vpc.clone(),
            network: net.name.clone(),
            cidr: net.cidr,
            gateway: net.gateway,
            ports,
            acl: None,
            peer_tiers: Vec::new(),
        });
    }
    for dc in intent.direct_connects.values().filter(|d| d.switch == node) {
        out.push(L2Network {
            vni: dc.vni,
            tenant: dc.tenant.clone(),
            vpc: dc.vpc.clone(),
            network: format!("dc-{}", dc.name),
            cidr: dc.local_address.trunc(),
            gateway: dc.local_address.addr(),
            ports: vec![LocalPort {
                name: dc.name.clone(),
                ip: dc.peer_address,
                mac: None,
                attach: Some(dc.attachment()),
            }],
            acl: None,
            peer_tiers: Vec::new(),
        });
    }
    out.sort_by_key(|n| n.vni);
    out
}

/// The other tiers of a network's VPC, with their ACLs.
fn peer_tiers(intent: &Intent, net: &crate::model::Network) -> Vec<PeerTier> {
    vpc_networks(intent, &net.tenant, &net.vpc)
        .filter(|n| n.name != net.name)
        .map(|n| PeerTier {
            vni: n.vni,
            cidr: n.cidr,
            acl: tier_acl(intent, &n.tenant, &n.vpc, &n.name),
        })
        .collect()
}

/// VPCs whose active gateway is `node`.
pub fn served_vpcs(intent: &Intent, node: &str) -> Vec<VpcKey> {
    intent
        .placements
        .iter()
        .filter(|(k, p)| p.primary.as_deref() == Some(node) && intent.vpcs.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The router of a VPC: its tiers, routes and NAT, in a deterministic order.
pub fn vpc_router(intent: &Intent, key: &VpcKey) -> VpcRouter {
    let vpc = &intent.vpcs[key];
    let in_vpc = |t: &str, v: &str| t == key.0 && v == key.1;
    let mut tiers: Vec<RouterTier> = intent
        .networks
        .values()
        .filter(|n| in_vpc(&n.tenant, &n.vpc))
        .map(|n| RouterTier {
            name: n.name.clone(),
            vni: n.vni,
            cidr: n.cidr,
            gateway: n.gateway,
            acl: tier_acl(intent, &n.tenant, &n.vpc, &n.name),
        })
        .collect();
    tiers.sort_by_key(|t| t.vni);
    let routes = intent
        .routes
        .values()
        .filter(|r| in_vpc(&r.tenant, &r.vpc))
        .map(|r| RouterRoute {
            prefix: r.prefix,
            nexthop: r.nexthop,
        })
        .collect();
    let mut router = VpcRouter {
        tenant: vpc.tenant.clone(),
        vpc: vpc.name.clone(),
        id: vpc.id,
        cidr: vpc.cidr,
        mac: vpc_mac(vpc.id),
        tiers,
        routes,
        snat: None,
        port_forwards: Vec::new(),
        static_nats: Vec::new(),
        load_balancers: Vec::new(),
        direct_connects: Vec::new(),
    };
    let mut announce: Vec<ipnet::Ipv4Net> = router.tiers.iter().map(|t| t.cidr).collect();
    announce.sort();
    for dc in intent
        .direct_connects
        .values()
        .filter(|d| in_vpc(&d.tenant, &d.vpc))
    {
        let mut accept = dc.accept.clone();
        accept.sort();
        router.direct_connects.push(DirectConnectPeering {
            name: dc.name.clone(),
            vni: dc.vni,
            local: dc.local_address,
            peer: dc.peer_address,
            local_asn: dc.local_asn,
            peer_asn: dc.customer_asn,
            accept,
            announce: announce.clone(),
        });
    }
    for lb in intent
        .load_balancers
        .values()
        .filter(|l| in_vpc(&l.tenant, &l.vpc))
    {
        let mut backends: Vec<LbBackend> = lb
            .backends
            .iter()
            .map(|b| LbBackend {
                name: format!("{}:{}", b.ip, b.port),
                ip: b.ip,
                port: b.port,
                weight: b.weight,
            })
            .collect();
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        router.load_balancers.push(DesiredLb {
            name: lb.name.clone(),
            vip: lb.vip,
            protocol: lb.protocol,
            port: lb.port,
            backends,
            health: lb.health.clone(),
            table_size: lb.table_size,
            public: intent.pools.values().any(|p| p.cidr.contains(&lb.vip)),
            source_cidrs: lb.source_cidrs.clone(),
        });
    }
    for r in intent
        .nat_rules
        .values()
        .filter(|r| in_vpc(&r.tenant, &r.vpc))
    {
        match &r.kind {
            NatKind::Snat { public_ip } => router.snat = Some(*public_ip),
            NatKind::PortForward {
                public_ip,
                protocol,
                public_port,
                private_ip,
                private_port,
            } => router.port_forwards.push(PortForward {
                protocol: *protocol,
                public_ip: *public_ip,
                public_port: *public_port,
                private_ip: *private_ip,
                private_port: *private_port,
            }),
            NatKind::StaticNat {
                public_ip,
                private_ip,
            } => router.static_nats.push(StaticNat {
                public_ip: *public_ip,
                private_ip: *private_ip,
            }),
        }
    }
    router
}

/// Networks a hypervisor must carry: those with a port bound on it, plus those whose bridge it
/// observed locally (made by CloudStack's agent rather than by us).
pub fn hosted_networks(intent: &Intent, node: &str) -> BTreeSet<NetworkKey> {
    hosted_networks_of(intent, PortsByNode::for_node(intent, node).of(node), node)
}

fn hosted_networks_of(
    intent: &Intent,
    node_ports: &[&PortBinding],
    node: &str,
) -> BTreeSet<NetworkKey> {
    let mut keys: BTreeSet<NetworkKey> = node_ports
        .iter()
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
    /// Something of one VPC changed (the VPC, its NAT rules, routes or placement): its
    /// active gateway is affected.
    Vpc { tenant: String, vpc: String },
    /// A public pool changed: switches and gateways hold the pools of their site.
    Pool,
    /// Tenants carry no per-node state.
    Other,
}

/// Nodes whose desired state may differ after `change`. Must be evaluated against the intent
/// both before and after the change and the results merged, so removals are covered too.
pub fn affected_nodes(intent: &Intent, change: &Change) -> BTreeSet<String> {
    match change {
        Change::Port { node } | Change::Node { name: node } | Change::Observed { node } => {
            BTreeSet::from([node.clone()])
        }
        Change::Vpc { tenant, vpc } => {
            let mut nodes: BTreeSet<String> = gateway_of(intent, tenant, vpc).into_iter().collect();
            nodes.extend(vpc_hosts(intent, tenant, vpc));
            // The switches of its Direct Connects.
            nodes.extend(
                intent
                    .direct_connects
                    .values()
                    .filter(|d| d.tenant == *tenant && d.vpc == *vpc)
                    .map(|d| d.switch.clone()),
            );
            nodes
        }
        Change::Network { vni } => {
            let mut nodes = BTreeSet::new();
            if let Some(net) = intent.network_by_vni(*vni) {
                nodes.extend(gateway_of(intent, &net.tenant, &net.vpc));
                // Hypervisors of the VPC's other tiers know this tier as a peer (ACLs).
                nodes.extend(vpc_hosts(intent, &net.tenant, &net.vpc));
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
        Change::Pool => intent
            .nodes
            .values()
            .filter(|n| matches!(n.role, NodeRole::Switch | NodeRole::Gateway))
            .map(|n| n.name.clone())
            .collect(),
        Change::Other => BTreeSet::new(),
    }
}

fn gateway_of(intent: &Intent, tenant: &str, vpc: &str) -> Option<String> {
    intent
        .placements
        .get(&(tenant.to_string(), vpc.to_string()))
        .and_then(|p| p.primary.clone())
}

/// Hypervisors carrying any tier of a VPC.
fn vpc_hosts(intent: &Intent, tenant: &str, vpc: &str) -> BTreeSet<String> {
    let mut nodes: BTreeSet<String> = intent
        .ports
        .values()
        .filter(|p| p.tenant == tenant && p.vpc == vpc)
        .map(|p| p.node.clone())
        .collect();
    for (node, vnis) in &intent.observed_vnis {
        if intent
            .networks
            .values()
            .any(|n| n.tenant == tenant && n.vpc == vpc && vnis.contains(&n.vni))
        {
            nodes.insert(node.clone());
        }
    }
    nodes
}
