//! The compiler: intent + observations → one [`NodeDesired`] per node. Deterministic and pure.
//!
//! One module per role, each declaring what it reads next to what it builds (OVN northd's
//! engine nodes): [`switch`], [`gateway`] and [`hypervisor`] each have a `compile` that adds
//! the role's objects to the common underlay built here, and an `affected_by` that names the
//! nodes of that role a change may touch. [`apply`] changes intent by one event and returns
//! every node whose desired state may differ, so the coordinator recompiles only those (a
//! port bound on hv1 never recompiles hv2). `tests/incremental.rs` checks that incremental
//! compilation equals a full recompile over random change sequences.

pub mod gateway;
pub mod hypervisor;
pub mod switch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::desired::{
    AclRule, DesiredObject, EvpnRole, L2Network, LocalPort, NodeDesired, SwitchAttachment, TierAcl,
    Underlay, UNDERLAY_KEY,
};
use crate::event::{IntentEvent, KindMismatch, ObjectRef};
use crate::event::{VpcChildRef, VpcRef};
use crate::model::{Direction, Intent, Network, Node, NodeRole, Pool, PortBinding};

pub use gateway::{placed_vpcs, vpc_router};
pub use switch::switch_networks;

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

    /// The index of the ports one node's compilation reads (a scan of all ports, once): its
    /// own, and for a switch also its fabric neighbours' (their EVPN scope).
    pub fn for_node(intent: &'a Intent, node: &str) -> Self {
        let mut wanted: HashSet<&str> = HashSet::from([node]);
        if let Some(n) = intent
            .nodes
            .get(node)
            .filter(|n| n.role == NodeRole::Switch)
        {
            wanted.extend(n.fabric_ports.iter().map(String::as_str));
        }
        let mut by: HashMap<&str, Vec<&PortBinding>> = HashMap::new();
        for p in intent
            .ports
            .values()
            .filter(|p| wanted.contains(p.node.as_str()))
        {
            by.entry(p.node.as_str()).or_default().push(p);
        }
        PortsByNode(by)
    }

    pub fn of(&self, node: &str) -> &[&'a PortBinding] {
        self.0.get(node).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The objects of one VPC in a map keyed by [`VpcChildRef`], by key range (not a scan of
/// every object of the fabric), in key order.
pub(crate) fn of_vpc<'a, T>(
    map: &'a BTreeMap<VpcChildRef, T>,
    tenant: &'a str,
    vpc: &'a str,
) -> impl Iterator<Item = &'a T> + 'a {
    map.range(VpcChildRef::new(tenant, vpc, "")..)
        .take_while(move |(k, _)| k.tenant == tenant && k.vpc == vpc)
        .map(|(_, v)| v)
}

/// The networks of one VPC, by key range.
pub(crate) fn vpc_networks<'a>(
    intent: &'a Intent,
    tenant: &'a str,
    vpc: &'a str,
) -> impl Iterator<Item = &'a crate::model::Network> + 'a {
    of_vpc(&intent.networks, tenant, vpc)
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
    out.objects.insert(
        UNDERLAY_KEY.to_string(),
        DesiredObject::Underlay(underlay(intent, n)),
    );
    match n.role {
        NodeRole::Switch => switch::compile(intent, ports_by_node, node, &mut out),
        NodeRole::Gateway => gateway::compile(intent, node, &mut out),
        NodeRole::Hypervisor => hypervisor::compile(intent, node_ports, node, &mut out),
    }
    Some(out)
}

/// The underlay every node has: BGP identity and fabric sessions, and on switches and
/// gateways a blackhole for each public pool of the node's site, IPv4 and IPv6 (so traffic to
/// an unused public address dies at the edge instead of looping). Roles fill in EVPN role details and
/// announcements.
fn underlay(intent: &Intent, n: &Node) -> Underlay {
    let edge = matches!(n.role, NodeRole::Switch | NodeRole::Gateway);
    let mut blackhole: Vec<ipnet::Ipv4Net> = if edge {
        intent
            .pools
            .values()
            .filter(|p| p.site == n.site)
            .filter_map(Pool::v4)
            .map(|c| c.trunc())
            .collect()
    } else {
        Vec::new()
    };
    blackhole.sort();
    blackhole.dedup();
    let mut blackhole6: Vec<ipnet::Ipv6Net> = if edge {
        intent.ipv6_pools(&n.site).map(|p| p.trunc()).collect()
    } else {
        Vec::new()
    };
    blackhole6.sort();
    blackhole6.dedup();
    Underlay {
        asn: n.asn,
        router_id: n.loopback,
        loopback: n.loopback,
        neighbors: n.fabric_ports.clone(),
        evpn: EvpnRole::Vtep,
        announce: Vec::new(),
        blackhole,
        forwarding: n.role == NodeRole::Switch,
        peer_filters: Vec::new(),
        bfd_neighbors: Vec::new(),
        redistribute_host_routes: Vec::new(),
        ipv6_unicast: false,
        redistribute_host_routes6: Vec::new(),
        blackhole6,
    }
}

/// The underlay `compile_node_indexed` put in `out`.
fn underlay_mut(out: &mut NodeDesired) -> &mut Underlay {
    match out.objects.get_mut(UNDERLAY_KEY) {
        Some(DesiredObject::Underlay(u)) => u,
        _ => unreachable!("compile_node_indexed inserts the underlay first"),
    }
}

/// The compiled ACL of a tier, if a list is attached to it.
pub fn tier_acl(intent: &Intent, tenant: &str, vpc: &str, network: &str) -> Option<TierAcl> {
    let list = intent
        .acls
        .range(VpcChildRef::new(tenant, vpc, "")..)
        .take_while(|(k, _)| k.tenant == tenant && k.vpc == vpc)
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

/// Networks a hypervisor must carry: those with a port bound on it, plus those whose bridge it
/// observed locally (made by CloudStack's agent rather than by us).
pub fn hosted_networks(intent: &Intent, node: &str) -> BTreeSet<VpcChildRef> {
    hosted_networks_of(intent, PortsByNode::for_node(intent, node).of(node), node)
}

pub(crate) fn hosted_networks_of(
    intent: &Intent,
    node_ports: &[&PortBinding],
    node: &str,
) -> BTreeSet<VpcChildRef> {
    let mut keys: BTreeSet<VpcChildRef> = node_ports
        .iter()
        .map(|p| p.network_key())
        .filter(|k| intent.networks.contains_key(k))
        .collect();
    for (vni, judged) in observations(intent, node) {
        if let Ok(net) = judged {
            debug_assert_eq!(net.vni, vni);
            keys.insert(net.key());
        }
    }
    keys
}

/// Most observed VNIs of one hypervisor that may widen its scope; the rest are refused.
pub const MAX_OBSERVED_VNIS: usize = 4096;

/// Why a VNI a hypervisor reports having observed does not pull a network into its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No network carries it.
    UnknownVni,
    /// The network's VPC belongs to another site than the node.
    OtherSite {
        network: String,
        vpc_site: String,
        node_site: String,
    },
    /// Beyond the first [`MAX_OBSERVED_VNIS`] (in VNI order).
    OverCap,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownVni => write!(f, "no network carries it"),
            Refusal::OtherSite {
                network,
                vpc_site,
                node_site,
            } => write!(
                f,
                "network {network} is in site {vpc_site:?}, the node in {node_site:?}"
            ),
            Refusal::OverCap => write!(f, "more than {MAX_OBSERVED_VNIS} observed VNIs"),
        }
    }
}

/// Each VNI the node reports having observed, with the network it admits or why not. A
/// report may only bring in networks that exist and that the node could carry (its VPC is in
/// the node's site), and only so many: a node cannot widen its own scope beyond that.
pub fn observations<'a>(
    intent: &'a Intent,
    node: &str,
) -> impl Iterator<Item = (u32, Result<&'a Network, Refusal>)> + 'a {
    let node_site = intent.nodes.get(node).map_or("", |n| n.site.as_str());
    intent
        .observed_vnis
        .get(node)
        .into_iter()
        .flatten()
        .enumerate()
        .map(move |(i, vni)| (*vni, judge_observation(intent, node_site, i, *vni)))
}

fn judge_observation<'a>(
    intent: &'a Intent,
    node_site: &str,
    index: usize,
    vni: u32,
) -> Result<&'a Network, Refusal> {
    if index >= MAX_OBSERVED_VNIS {
        return Err(Refusal::OverCap);
    }
    let net = intent.network_by_vni(vni).ok_or(Refusal::UnknownVni)?;
    let vpc_site = intent
        .vpcs
        .get(&VpcRef::new(&net.tenant, &net.vpc))
        .map_or("", |v| v.site.as_str());
    if vpc_site != node_site {
        return Err(Refusal::OtherSite {
            network: format!("{}/{}/{}", net.tenant, net.vpc, net.name),
            vpc_site: vpc_site.to_string(),
            node_site: node_site.to_string(),
        });
    }
    Ok(net)
}

/// A tier as an L2 network with no members, ACL or ACL peers (roles add what they carry).
fn tier_network(net: &Network) -> L2Network {
    L2Network {
        vni: net.vni,
        tenant: net.tenant.clone(),
        vpc: net.vpc.clone(),
        network: net.name.clone(),
        cidr: net.cidr,
        gateway: net.gateway,
        ports: Vec::new(),
        acl: None,
        peer_tiers: Vec::new(),
    }
}

/// A Direct Connect hand-off segment (`dc-<name>`, the VPC router's address on it) as an L2
/// network with no members.
fn dc_segment(tenant: &str, vpc: &str, name: &str, vni: u32, local: ipnet::Ipv4Net) -> L2Network {
    L2Network {
        vni,
        tenant: tenant.to_string(),
        vpc: vpc.to_string(),
        network: format!("dc-{name}"),
        cidr: local.trunc(),
        gateway: local.addr(),
        ports: Vec::new(),
        acl: None,
        peer_tiers: Vec::new(),
    }
}

/// A bound port as a member of its network on this node.
fn local_port(p: &PortBinding, attach: Option<SwitchAttachment>) -> LocalPort {
    LocalPort {
        name: p.name.clone(),
        ip: p.ip,
        mac: p.mac.clone(),
        attach,
    }
}

/// Nodes whose desired state may differ because of a change to `change`, evaluated on the
/// intent as it is (call it before and after the change: [`apply`] does).
pub fn affected_nodes(intent: &Intent, change: &ObjectRef) -> BTreeSet<String> {
    let hypervisors = hypervisor::affected_by(intent, change);
    let gateways = gateway::affected_by(intent, change);
    let mut nodes = switch::affected_by(intent, change, &hypervisors, &gateways);
    nodes.extend(gateways);
    nodes.extend(hypervisors);
    if let ObjectRef::Node(name) = change {
        // Its own record: identity, role, sessions (also a node that just appeared or left).
        nodes.insert(name.clone());
    }
    nodes
}

/// Applies one event to intent and returns every node whose desired state may differ: those
/// the object touched before (covers removals and moves) and after the change.
pub fn apply(intent: &mut Intent, event: IntentEvent) -> Result<BTreeSet<String>, KindMismatch> {
    let change = event.object_ref().clone();
    let mut nodes = affected_nodes(intent, &change);
    intent.apply(event)?;
    nodes.extend(affected_nodes(intent, &change));
    Ok(nodes)
}

/// The members of `nodes` that exist with `role`.
fn of_role(intent: &Intent, nodes: BTreeSet<String>, role: NodeRole) -> BTreeSet<String> {
    nodes
        .into_iter()
        .filter(|n| intent.nodes.get(n).is_some_and(|n| n.role == role))
        .collect()
}
