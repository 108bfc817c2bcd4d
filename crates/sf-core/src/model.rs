//! The intent model: what operators and CloudStack asked for, exactly as stored in etcd.
//! Objects are identified by names unique within their parent (tenant → VPC → network), which
//! is also how their etcd keys are built (see `sf-store`'s key layout).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// A tenant: the owner of VPCs (a CloudStack domain/account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A VPC: an isolated routing domain with its own, possibly overlapping, address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    pub tenant: String,
    pub name: String,
    pub cidr: Ipv4Net,
    #[serde(default)]
    pub site: String,
    /// Small number allocated by the coordinator at creation (names on gateways, virtual MAC).
    #[serde(default)]
    pub id: u32,
    /// IPv6 ranges of a dual-stack VPC (CloudStack's routed IPv6: globally routed, no NAT);
    /// each tier's /64 comes from one of them. Empty = IPv4 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_ranges: Vec<Ipv6Net>,
}

/// A pool of public addresses of a site. An IPv4 pool is where NAT and load-balancer
/// addresses come from; an IPv6 pool holds the site's routed IPv6: a VPC's IPv6 range inside
/// one is announced by its serving gateway (and must not overlap another VPC's range).
/// Stored as the same string as before IPv6 (`"203.0.113.0/24"`), so IPv4 pools stored by an
/// older build decode unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    #[serde(default)]
    pub site: String,
}

impl Pool {
    /// The pool's prefix if it is an IPv4 pool.
    pub fn v4(&self) -> Option<Ipv4Net> {
        match self.cidr {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        }
    }

    /// The pool's prefix if it is an IPv6 pool.
    pub fn v6(&self) -> Option<Ipv6Net> {
        match self.cidr {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        }
    }

    /// Whether this IPv4 pool holds `ip` (an IPv6 pool holds no IPv4 address).
    pub fn contains4(&self, ip: &Ipv4Addr) -> bool {
        self.v4().is_some_and(|n| n.contains(ip))
    }

    /// Whether this pool holds `ip`, of either family.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidr.contains(ip)
    }
}

/// What a NAT rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NatKind {
    /// Source NAT with port overloading for the whole VPC.
    Snat { public_ip: Ipv4Addr },
    /// public_ip:public_port → private_ip:private_port.
    PortForward {
        public_ip: Ipv4Addr,
        protocol: crate::desired::L4Protocol,
        public_port: u16,
        private_ip: Ipv4Addr,
        private_port: u16,
    },
    /// Static NAT / Elastic IP: one public address for one VM, both directions.
    StaticNat {
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    },
}

impl NatKind {
    pub fn public_ip(&self) -> Ipv4Addr {
        match self {
            NatKind::Snat { public_ip }
            | NatKind::PortForward { public_ip, .. }
            | NatKind::StaticNat { public_ip, .. } => *public_ip,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            NatKind::Snat { .. } => "snat",
            NatKind::PortForward { .. } => "port-forward",
            NatKind::StaticNat { .. } => "static-nat",
        }
    }
}

/// A NAT rule of a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    #[serde(flatten)]
    pub kind: NatKind,
}

/// A static route inside a VPC, IPv4 or IPv6 (prefix and next hop of one family). Stored as
/// the same strings either way, so IPv4 routes stored before IPv6 routes existed decode and
/// encode unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    pub prefix: IpNet,
    pub nexthop: IpAddr,
}

/// A backend of a load balancer: a VM address and port in the VPC, of the VIP's family.
/// Stored as the same string either way, so backends stored while they were IPv4-typed
/// decode unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// An L4 load balancer of a VPC (Maglev across gateway nodes, health-checked backends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    /// From a public pool (announced) or a VPC-internal address outside every tier. IPv4 or
    /// IPv6 (an IPv6 VIP is public in one of the site's IPv6 pools, internal in one of the
    /// VPC's `ipv6_ranges` outside every tier's /64); stored as the same string either way.
    pub vip: IpAddr,
    pub protocol: crate::desired::L4Protocol,
    pub port: u16,
    pub backends: Vec<Backend>,
    pub health: crate::desired::HealthCheck,
    pub table_size: u32,
    /// Sources allowed to reach vip:port (networks of the VIP's family); empty = everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<IpNet>,
}

impl LoadBalancer {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
}

/// A Direct Connect: a customer's router on a switch port (and VLAN), handed off into a VNI
/// of its own that reaches the VPC router, which peers eBGP with the customer, announces the
/// VPC's tiers and installs the accepted customer prefixes in this VPC only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectConnect {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    /// The switch (a node with role switch) and its server-facing interface.
    pub switch: String,
    pub interface: String,
    /// 802.1Q VLAN on the interface; None = untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Our side (the VPC router) on the hand-off segment, with its prefix: 169.254.100.1/30.
    pub local_address: Ipv4Net,
    /// The customer router's address on the segment.
    pub peer_address: Ipv4Addr,
    pub local_asn: u32,
    pub customer_asn: u32,
    /// Prefixes accepted from the customer; everything else is rejected.
    pub accept: Vec<crate::desired::PrefixFilter>,
    /// VNI of the hand-off segment (allocated with the object, like a network's).
    pub vni: u32,
}

impl DirectConnect {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
    pub fn attachment(&self) -> crate::desired::SwitchAttachment {
        crate::desired::SwitchAttachment {
            interface: self.interface.clone(),
            vlan: self.vlan,
        }
    }
}

/// Direction of an ACL rule relative to the tier it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// One rule of an ACL list (its number is `rule.number`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclListRule {
    pub direction: Direction,
    #[serde(flatten)]
    pub rule: crate::desired::AclRule,
}

/// A network ACL list of a VPC (CloudStack semantics), attached to some of its tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclList {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    pub default_action: crate::desired::AclAction,
    pub rules: Vec<AclListRule>,
    /// Tiers (network names of the VPC) the list applies to.
    pub tiers: Vec<String>,
}

impl AclList {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
}

/// Which gateway nodes serve a VPC, as decided and persisted by the leader coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub primary: Option<String>,
    pub standby: Option<String>,
}

/// A network (CloudStack "tier"): one L2 segment carried as one VXLAN VNI over EVPN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub tenant: String,
    pub vpc: String,
    pub name: String,
    pub cidr: Ipv4Net,
    pub vni: u32,
    pub gateway: Ipv4Addr,
    /// The tier's IPv6 /64 (from one of the VPC's `ipv6_ranges`); its `::1` is the router's
    /// IPv6 gateway address. None = IPv4-only tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<Ipv6Net>,
}

impl Network {
    /// The router's global IPv6 address on the tier: the prefix's `::1`, as CloudStack's
    /// vNet "second gateway" gives it.
    pub fn ipv6_gateway(&self) -> Option<Ipv6Addr> {
        self.ipv6_prefix
            .map(|p| Ipv6Addr::from(u128::from(p.network()) + 1))
    }
}

/// A VM NIC (or any endpoint) bound to a network on a given node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub tenant: String,
    pub name: String,
    pub vpc: String,
    pub network: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// The port's IPv6 address inside its tier's /64 (the VM takes it by SLAAC; the fabric
    /// needs it for anti-spoofing, ACLs and EVPN). None = IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// On a switch node: the server-facing interface (and VLAN) of a bare-metal server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<crate::desired::SwitchAttachment>,
}

/// What a node does in the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Hypervisor,
    Switch,
    Gateway,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Hypervisor => "hypervisor",
            NodeRole::Switch => "switch",
            NodeRole::Gateway => "gateway",
        }
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hypervisor" => Ok(NodeRole::Hypervisor),
            "switch" => Ok(NodeRole::Switch),
            "gateway" => Ok(NodeRole::Gateway),
            other => Err(format!(
                "unknown role {other:?} (expected hypervisor, switch or gateway)"
            )),
        }
    }
}

/// Inventory: one machine of the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: NodeRole,
    #[serde(default)]
    pub site: String,
    pub asn: u32,
    /// BGP router-id, and the VXLAN tunnel endpoint on hypervisors and gateways.
    pub loopback: Ipv4Addr,
    /// Interfaces facing the fabric; BGP unnumbered peers on each.
    #[serde(default)]
    pub fabric_ports: Vec<String>,
}

// Intent's maps are keyed by the typed references of `crate::event`: a VPC by `VpcRef`
// (tenant, vpc), an object inside a VPC (network, NAT rule, route, ACL list, load balancer,
// Direct Connect) by `VpcChildRef` (tenant, vpc, name), a port binding by `PortRef`.
use crate::event::{PortRef, VpcChildRef, VpcRef};

/// Everything the compiler reads: intent plus what agents observed locally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intent {
    pub tenants: BTreeMap<String, Tenant>,
    pub vpcs: BTreeMap<VpcRef, Vpc>,
    pub networks: BTreeMap<VpcChildRef, Network>,
    pub ports: BTreeMap<PortRef, PortBinding>,
    pub nodes: BTreeMap<String, Node>,
    pub pools: BTreeMap<String, Pool>,
    pub nat_rules: BTreeMap<VpcChildRef, NatRule>,
    pub routes: BTreeMap<VpcChildRef, StaticRoute>,
    pub acls: BTreeMap<VpcChildRef, AclList>,
    pub load_balancers: BTreeMap<VpcChildRef, LoadBalancer>,
    pub direct_connects: BTreeMap<VpcChildRef, DirectConnect>,
    /// Gateway placement of each VPC (written by the coordinator, read by the compiler).
    pub placements: BTreeMap<VpcRef, Placement>,
    /// Gateway nodes taken out of placement by `sfctl gateway drain`.
    pub drained: BTreeSet<String>,
    /// VNIs of `brvx-<VNI>` bridges a hypervisor reports that it did not create itself (for
    /// example bridges CloudStack's KVM agent made). They pull the network into its scope.
    pub observed_vnis: BTreeMap<String, BTreeSet<u32>>,
    /// What each gateway last reported down of the load balancers of the VPCs it serves
    /// (derived from its status, not stored): the standby builds its tables over the same
    /// health, so a failover does not put a dead backend back (see the compiler's
    /// `LoadBalancer::peer_down`).
    pub lb_down: BTreeMap<String, LbDownReport>,
}

/// The backends (by their stable name, "ip:port") a gateway's checks hold DOWN, by load
/// balancer, for each load balancer of the VPCs it serves (an empty set: none down).
pub type LbDownReport = BTreeMap<crate::event::VpcChildRef, BTreeSet<String>>;

impl Vpc {
    pub fn key(&self) -> VpcRef {
        VpcRef::new(&self.tenant, &self.name)
    }
}

impl NatRule {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
}

impl StaticRoute {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
}

impl Network {
    pub fn key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.name)
    }
}

impl PortBinding {
    pub fn key(&self) -> PortRef {
        PortRef::new(&self.tenant, &self.name)
    }
    pub fn network_key(&self) -> VpcChildRef {
        VpcChildRef::new(&self.tenant, &self.vpc, &self.network)
    }
}

impl Intent {
    /// The IPv6 pools of `site`: the site's routed IPv6 space.
    pub fn ipv6_pools<'a>(&'a self, site: &'a str) -> impl Iterator<Item = Ipv6Net> + 'a {
        self.pools
            .values()
            .filter(move |p| p.site == site)
            .filter_map(Pool::v6)
    }

    /// The routed IPv6 ranges of `vpc`: those inside one of its site's IPv6 pools. They are
    /// announced by the serving gateway and unique across VPCs; the VPC's other ranges (ULA,
    /// say) stay inside it and may overlap other VPCs'.
    pub fn routed_ipv6_ranges(&self, vpc: &Vpc) -> Vec<Ipv6Net> {
        vpc.ipv6_ranges
            .iter()
            .filter(|r| self.ipv6_pools(&vpc.site).any(|p| p.contains(*r)))
            .copied()
            .collect()
    }

    /// The network carrying `vni`, if any.
    pub fn network_by_vni(&self, vni: u32) -> Option<&Network> {
        self.networks.values().find(|n| n.vni == vni)
    }

    /// Every VNI already in use.
    pub fn used_vnis(&self) -> BTreeSet<u32> {
        self.networks
            .values()
            .map(|n| n.vni)
            .chain(self.direct_connects.values().map(|d| d.vni))
            .collect()
    }
}
