//! Desired state of one node: what its agent must make true. It is a keyed map of objects so
//! the coordinator can send deltas (upserts and deletes by key) and both sides can verify they
//! hold the same state by comparing a digest of the canonical encoding.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a node takes part in EVPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvpnRole {
    /// Terminates VXLAN: advertises every local VNI (`advertise-all-vni`).
    Vtep,
    /// Carries EVPN routes between VTEPs without terminating any VNI (leaf/spine transit).
    Transit,
}

/// Underlay and EVPN control plane of the node: rendered into FRR by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Address on `lo` announced into the underlay (the VTEP on hypervisors).
    pub loopback: Ipv4Addr,
    /// Fabric interfaces with a BGP unnumbered, eBGP session each.
    pub neighbors: Vec<String>,
    pub evpn: EvpnRole,
    /// Extra prefixes this node announces in IPv4 unicast (gateways: the public /32s of the
    /// VPCs they serve; a border leaf: nothing, it only relays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announce: Vec<Ipv4Net>,
    /// Public pools of the node's site, held as blackhole routes. Switches announce them, so
    /// the outside always has a route to every public address: while a VPC's /32 moves
    /// between gateways (drain, failover) its packets are dropped silently and TCP retransmits
    /// the SYN, instead of the client getting an ICMP error and giving up at once. Gateways
    /// hold them unannounced, so a packet for an address they no longer serve is dropped
    /// instead of looping back to the leaf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blackhole: Vec<Ipv4Net>,
    /// Routes IP between its ports (switches), whatever its EVPN role.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarding: bool,
    /// On switches: what each hypervisor or gateway neighbour may announce in IPv4 unicast;
    /// anything else it sends is not accepted. Neighbours not listed (switches, the border's
    /// external peers) are not filtered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_filters: Vec<PeerFilter>,
    /// Fabric neighbours whose BGP session is watched by BFD (switches: their gateways;
    /// gateways: every fabric port), so a dead gateway's routes leave the fabric in well
    /// under a second instead of at the BGP hold time. See [`BFD_INTERVAL_MS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bfd_neighbors: Vec<String>,
    /// Gateways: host routes in the kernel inside these prefixes are announced (FRR
    /// `redistribute kernel`): the site's public pools and [`ANCHOR_RANGE`]. Which VPC a
    /// gateway announces is then decided by the routes its failover controller installs, not
    /// by FRR configuration, so a failover never waits for an FRR reload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redistribute_host_routes: Vec<Ipv4Net>,
    /// Switches and gateways of a site with IPv6 pools: IPv6 unicast runs on the fabric
    /// sessions (over the same BGP unnumbered sessions; the VTEP underlay stays IPv4). Off
    /// elsewhere, so a fabric without IPv6 pools renders exactly as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_unicast: bool,
    /// Gateways: kernel routes inside these prefixes (the site's IPv6 pools) are announced in
    /// IPv6 unicast, like [`Underlay::redistribute_host_routes`]: the routed IPv6 ranges of
    /// the VPCs a gateway serves as the active router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redistribute_host_routes6: Vec<Ipv6Net>,
    /// The site's IPv6 pools, held as blackhole routes exactly as [`Underlay::blackhole`]
    /// holds the IPv4 ones: switches announce them (the outside has a route to every address
    /// of the pool, and an unused one dies at the edge), gateways hold them unannounced (a
    /// packet for a range or VIP this gateway no longer serves is dropped, not routed back to
    /// the leaf by the default route). A gateway holds none for a pool that is a whole VPC
    /// range: the route into that VPC's router has the same prefix. Absent in JSON stored or
    /// sent before it existed (empty: no IPv6 blackholes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blackhole6: Vec<Ipv6Net>,
}

/// BFD on the fabric sessions of gateways: transmit and receive interval and the detect
/// multiplier (a silent gateway is declared down after `BFD_INTERVAL_MS * BFD_MULTIPLIER`).
pub const BFD_INTERVAL_MS: u32 = 100;
pub const BFD_MULTIPLIER: u32 = 5;

/// Per-VPC anchors: the VPC router with id `n` is announced by its active gateway as the
/// /32 `198.18.0.0 + 2n` (the host end of its transit link), whether or not the VPC has any
/// public address. A standby watches its VPCs' anchors: when one leaves the fabric, the
/// primary is gone and the standby takes over.
pub const ANCHOR_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15) {
    Ok(n) => n,
    Err(_) => panic!("valid prefix"),
};

/// The anchor /32 of VPC router `id` (see [`ANCHOR_RANGE`]); None when `id` does not fit.
pub fn vpc_anchor(id: u32) -> Option<Ipv4Addr> {
    (id <= 65_535).then(|| Ipv4Addr::from(u32::from(ANCHOR_RANGE.network()) + 2 * id))
}

/// Whether a gateway holds a VPC router as the placement's primary or as its warm standby.
/// Both build it whole; which one forwards is decided by the fabric (see the gateway agent's
/// failover controller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterRole {
    #[default]
    Primary,
    Standby,
}

impl RouterRole {
    fn is_primary(&self) -> bool {
        *self == RouterRole::Primary
    }
}

/// What a switch accepts from one fabric neighbour: IPv4 unicast prefixes and the VNIs of its
/// EVPN routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFilter {
    /// The fabric interface (named after the neighbour node).
    pub neighbor: String,
    /// Accepted announcements, in order.
    pub permit: Vec<PrefixMatch>,
    /// The EVPN routes the neighbour may announce. `None` leaves its EVPN routes unfiltered
    /// (an older coordinator's desired state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evpn: Option<EvpnScope>,
    /// Accepted IPv6 unicast announcements, when the switch runs IPv6 unicast: any prefix
    /// inside one of these (a gateway: its site's IPv6 pools). Empty: nothing (a hypervisor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permit6: Vec<Ipv6Net>,
}

/// The EVPN routes a switch accepts from a hypervisor or gateway: those it originated itself
/// (AS path exactly its ASN) for the VNIs of the networks it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnScope {
    /// The neighbour's ASN, the only AS path accepted.
    pub asn: u32,
    /// VNIs of the networks in its scope, ascending.
    pub vnis: Vec<u32>,
}

/// A prefix, or (with `host_routes`) any /32 inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixMatch {
    pub prefix: Ipv4Net,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_routes: bool,
}

/// A port bound on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPort {
    pub name: String,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// On a switch: the server-facing interface (and VLAN) that joins `brvx-<VNI>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<SwitchAttachment>,
}

/// A switch interface, untagged or one 802.1Q VLAN of it, handed into a VNI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SwitchAttachment {
    pub interface: String,
    /// None: the interface itself (untagged frames); Some(v): its VLAN v sub-interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// One tier present on this node as `vxlan<VNI>` in `brvx-<VNI>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Network {
    pub vni: u32,
    pub tenant: String,
    pub vpc: String,
    pub network: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ports: Vec<LocalPort>,
    /// East-west ACL of this tier, enforced on its VM ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<TierAcl>,
    /// The other tiers of the same VPC (cidr and ACL), so a hypervisor can apply the
    /// destination tier's ingress rules at the source and drop before the fabric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_tiers: Vec<PeerTier>,
}

/// Another tier of the VPC as a hypervisor needs to know it for ACLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTier {
    pub vni: u32,
    pub cidr: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<TierAcl>,
}

/// What an ACL rule does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Allow,
    Deny,
}

/// Protocol an ACL rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclProtocol {
    All,
    Tcp,
    Udp,
    Icmp,
    /// ICMPv6 (type/code as for `icmp`); matches IPv6 traffic only, as `icmp` matches IPv4.
    Icmpv6,
}

/// One rule of a network ACL (CloudStack semantics). `cidrs` is the remote side: the source
/// for ingress rules, the destination for egress rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    pub number: u32,
    pub action: AclAction,
    pub protocol: AclProtocol,
    /// Destination port range (tcp/udp only); None = any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code (icmp only); None = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// IPv4 and/or IPv6 networks (issue 21): a rule applies to a family only through its
    /// networks of that family (`0.0.0.0/0` is every IPv4 address, `::/0` every IPv6 one).
    /// Serialized as strings either way, so stored IPv4 rules read back unchanged.
    pub cidrs: Vec<IpNet>,
}

/// The compiled ACL of one tier: rules in evaluation order (lowest number first, first match
/// wins), then the list's default action. Stateful: replies of allowed flows always pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierAcl {
    /// Name of the ACL list, for reporting.
    pub list: String,
    pub default_action: AclAction,
    /// Traffic entering the tier (destination in the tier, source matched against cidrs).
    pub ingress: Vec<AclRule>,
    /// Traffic leaving the tier (source in the tier, destination matched against cidrs).
    pub egress: Vec<AclRule>,
}

/// One tier of a VPC as its router sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterTier {
    pub name: String,
    pub vni: u32,
    pub cidr: Ipv4Net,
    /// Address the VPC router holds on this tier (the VMs' default gateway).
    pub gateway: Ipv4Addr,
    /// North-south ACL of the tier, enforced by the router for traffic crossing `transit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<TierAcl>,
}

/// A static route inside a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRoute {
    pub prefix: Ipv4Net,
    pub nexthop: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// Port forwarding: public_ip:public_port/protocol → private_ip:private_port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub protocol: L4Protocol,
    pub public_ip: Ipv4Addr,
    pub public_port: u16,
    pub private_ip: Ipv4Addr,
    pub private_port: u16,
}

/// Static NAT / Elastic IP: the VM is reachable on public_ip (all ports, both directions) and
/// its own outbound traffic leaves from public_ip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticNat {
    pub public_ip: Ipv4Addr,
    pub private_ip: Ipv4Addr,
}

/// One backend of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbBackend {
    /// Stable name the Maglev permutation is derived from ("ip:port", "[ip]:port" for IPv6),
    /// so every gateway and every restart computes the same table.
    pub name: String,
    /// Of the VIP's family; the same string as when it was IPv4-typed.
    pub ip: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// How a gateway checks a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HealthCheck {
    /// Every backend counts as healthy.
    None,
    /// A TCP connect to the backend port must succeed.
    Tcp {
        interval_ms: u32,
        timeout_ms: u32,
        rise: u32,
        fall: u32,
    },
    /// An HTTP GET of `path` must answer `expect_status`.
    Http {
        path: String,
        expect_status: u16,
        interval_ms: u32,
        timeout_ms: u32,
        rise: u32,
        fall: u32,
    },
}

/// An L4 load balancer served by the VPC router: new connections to vip:port are spread
/// over the healthy backends with a Maglev table of `table_size` slots (prime) indexed by a
/// hash of the 5-tuple; established connections stay on their backend through conntrack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub name: String,
    /// IPv4 load balancers belong to [`VpcRouter::load_balancers`], IPv6 ones to
    /// [`VpcRouter6::load_balancers`]; the same string either way.
    pub vip: IpAddr,
    pub protocol: L4Protocol,
    pub port: u16,
    pub backends: Vec<LbBackend>,
    pub health: HealthCheck,
    pub table_size: u32,
    /// Whether the VIP is public (announced, from a pool) or VPC-internal.
    pub public: bool,
    /// Sources allowed to reach vip:port (the VIP's family); empty = everyone. Others are
    /// dropped before DNAT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<IpNet>,
    /// Backends (by name) the gateway serving this load balancer reports DOWN (`None`: no
    /// gateway serves it at the moment, so no word). A standby cannot check them (its tier
    /// links are down), so it builds its tables over this instead, and starts its checks
    /// from it when it turns active: a failover does not put a dead backend back. The
    /// serving gateway goes by its own checks. A hint an older agent may ignore (it then
    /// builds over every backend, as before): no schema bump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_down: Option<std::collections::BTreeSet<String>>,
}

/// A VPC router (SoftGate) this gateway node must serve as the VPC's active gateway.
///
/// Realised as a network namespace named `<netns-prefix><id>`; each tier joins it through a
/// veth pair whose host end sits in the tier's `brvx-<VNI>` bridge (the bridge itself is an
/// [`L2Network`] object of the same desired state) and whose namespace end carries the tier's
/// gateway address with the VPC's virtual `mac`, identical on every gateway node so failover
/// needs no ARP refresh. A transit veth joins the namespace to the host namespace, which routes
/// the VPC's public addresses to it and announces them (listed in `Underlay::announce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcRouter {
    pub tenant: String,
    pub vpc: String,
    /// Small stable number of the VPC (allocated by the coordinator), used in names.
    pub id: u32,
    pub cidr: Ipv4Net,
    /// Virtual gateway MAC of the VPC, derived from `id` (locally administered).
    pub mac: String,
    /// This gateway's role for the VPC.
    #[serde(default, skip_serializing_if = "RouterRole::is_primary")]
    pub role: RouterRole,
    pub tiers: Vec<RouterTier>,
    #[serde(default)]
    pub routes: Vec<RouterRoute>,
    /// Source NAT (port overloading) for the VPC's traffic to the outside, if any.
    #[serde(default)]
    pub snat: Option<Ipv4Addr>,
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
    #[serde(default)]
    pub static_nats: Vec<StaticNat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancer>,
    /// eBGP peerings with customer routers over Direct Connect hand-off segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub direct_connects: Vec<DirectConnectPeering>,
}

/// One Direct Connect as the VPC router sees it: an L2 hand-off segment (`brvx-<vni>`, also
/// compiled as an [`L2Network`] of the gateway) carrying one eBGP session with the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectConnectPeering {
    pub name: String,
    pub vni: u32,
    /// The router's address and prefix on the segment, e.g. 169.254.100.1/30.
    pub local: Ipv4Net,
    /// The customer router's address on the segment.
    pub peer: Ipv4Addr,
    pub local_asn: u32,
    pub peer_asn: u32,
    /// Prefixes accepted from the customer (anything else is rejected).
    pub accept: Vec<PrefixFilter>,
    /// Prefixes announced to the customer: the VPC's tiers.
    pub announce: Vec<Ipv4Net>,
}

/// One entry of a prefix list: `prefix`, optionally any more specific one up to `le` bits
/// (from `ge` bits), as in FRR's `ip prefix-list ... permit P [ge G] [le L]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrefixFilter {
    pub prefix: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<u8>,
}

impl std::fmt::Display for PrefixFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.prefix)?;
        if let Some(g) = self.ge {
            write!(f, " ge {g}")?;
        }
        if let Some(l) = self.le {
            write!(f, " le {l}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PrefixFilter {
    type Err = String;
    /// `10.0.0.0/8`, `10.0.0.0/8 le 24`, `10.0.0.0/8 ge 16 le 24`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.split_whitespace();
        let prefix: Ipv4Net = it
            .next()
            .ok_or("empty prefix filter")?
            .parse()
            .map_err(|e| format!("{s:?}: {e}"))?;
        let (mut ge, mut le) = (None, None);
        while let Some(k) = it.next() {
            let v: u8 = it
                .next()
                .ok_or_else(|| format!("{s:?}: {k} needs a length"))?
                .parse()
                .map_err(|_| format!("{s:?}: {k} needs a length 0-32"))?;
            match k {
                "ge" if ge.is_none() => ge = Some(v),
                "le" if le.is_none() => le = Some(v),
                _ => return Err(format!("{s:?}: expected PREFIX [ge N] [le N]")),
            }
        }
        Ok(PrefixFilter { prefix, ge, le })
    }
}

impl VpcRouter {
    /// Every public address this router answers for.
    pub fn public_ips(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        self.snat
            .iter()
            .copied()
            .chain(self.port_forwards.iter().map(|p| p.public_ip))
            .chain(self.static_nats.iter().map(|s| s.public_ip))
            .chain(
                self.load_balancers
                    .iter()
                    .filter(|l| l.public)
                    .filter_map(|l| match l.vip {
                        IpAddr::V4(v) => Some(v),
                        // IPv6 VIPs are the IPv6 side's (`VpcRouter6::load_balancers`).
                        IpAddr::V6(_) => None,
                    }),
            )
            .collect()
    }
}

/// The virtual gateway MAC of VPC `id`: 02:5f:xx:xx:xx:xx (locally administered, unicast).
pub fn vpc_mac(id: u32) -> String {
    let b = id.to_be_bytes();
    format!("02:5f:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// The IPv6 side of a dual-stack VPC router (issue 21), beside its [`VpcRouter`] of the same
/// `id`: a separate object so the IPv4 router's shape, and every agent that builds one, stay
/// unchanged. Compiled only for VPCs with IPv6 (ranges or a tier's /64). IPv6 is routed, never
/// NATed: the VMs take addresses by SLAAC from the router advertisements the router sends on
/// each tier's /64, from `link_local`. No agent implements it yet; agents skip objects they do
/// not build ([`NodeDesired::routers`] and [`NodeDesired::networks`] filter by kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcRouter6 {
    pub tenant: String,
    pub vpc: String,
    pub id: u32,
    /// As the IPv4 router's: the primary forwards and announces, the standby stays ready.
    #[serde(default, skip_serializing_if = "RouterRole::is_primary")]
    pub role: RouterRole,
    /// The router's link-local address on every tier, derived from the VPC's virtual MAC
    /// ([`vpc_link_local`]): the same on primary and standby, so the VMs' default routes (learnt
    /// from RAs) and neighbour caches survive a failover.
    pub link_local: Ipv6Addr,
    /// Dual-stack tiers, by VNI.
    pub tiers: Vec<RouterTier6>,
    /// The VPC's routed IPv6 ranges (those inside one of its site's IPv6 pools), announced
    /// to the fabric and the internet by the serving gateway (CloudStack's routed mode:
    /// global routing, no NAT). Ranges outside every pool (ULA) stay inside the VPC.
    pub announce: Vec<Ipv6Net>,
    /// The VPC's IPv6 static routes, by prefix; the next hop is a host of a dual-stack tier.
    /// Defaulted and skipped when empty, so objects of VPCs without IPv6 routes are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouterRoute6>,
    /// The VPC's IPv6 load balancers (VIP and backends IPv6; the IPv4 ones stay in
    /// [`VpcRouter::load_balancers`]). A public VIP (from a site IPv6 pool) is routed to the
    /// active router and announced as a /128. Defaulted and skipped when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancer>,
}

/// An IPv6 static route inside a VPC (the IPv4 ones are [`RouterRoute`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouterRoute6 {
    pub prefix: Ipv6Net,
    pub nexthop: Ipv6Addr,
}

/// One dual-stack tier as the VPC router sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterTier6 {
    pub name: String,
    pub vni: u32,
    /// The tier's /64: the prefix the RAs carry (SLAAC).
    pub prefix: Ipv6Net,
    /// The router's global address on the tier: the prefix's `::1`.
    pub gateway: Ipv6Addr,
}

/// The IPv6 side of a tier on a hypervisor (beside its [`L2Network`] of the same VNI): the
/// inputs of IPv6 anti-spoofing and ACLs. Compiled only for tiers with a /64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Network6 {
    pub vni: u32,
    pub prefix: Ipv6Net,
    /// The router's addresses on the tier: the source of RAs (link-local) and `::1`. Only
    /// the router may send RAs into the tier.
    pub gateway: Ipv6Addr,
    pub router_link_local: Ipv6Addr,
    /// Local ports with an IPv6 address (ports without one may still use SLAAC addresses
    /// once anti-spoofing learns them; that is the dataplane's decision).
    /// The /64s of the VPC's dual-stack tiers. IPv6 sources outside them may leave a VM
    /// (one may route for other prefixes: an IPv6 static route names a VM as next hop),
    /// inside them only the port's own addresses, as IPv4 treats the VPC's tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_tiers: Vec<Ipv6Net>,
    pub ports: Vec<LocalPort6>,
}

/// A local port's IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPort6 {
    pub name: String,
    pub ipv6: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The link-local address of VPC `id`'s router: fe80::/64 with the modified EUI-64 interface
/// identifier of [`vpc_mac`] (RFC 4291 appendix A), so it follows the virtual MAC everywhere.
pub fn vpc_link_local(id: u32) -> Ipv6Addr {
    let b = id.to_be_bytes();
    // 02:5f:b0:b1:b2:b3 -> (0x02 ^ 0x02) 5f b0 ff fe b1 b2 b3.
    let iid = u64::from_be_bytes([0x00, 0x5f, b[0], 0xff, 0xfe, b[1], b[2], b[3]]);
    Ipv6Addr::from((0xfe80u128 << 112) | u128::from(iid))
}

/// Key of a VPC's IPv6 router object.
pub fn vpc_router6_key(id: u32) -> String {
    format!("vpc6/{id}")
}

/// Key of a tier's IPv6 object on a hypervisor.
pub fn network6_key(vni: u32) -> String {
    format!("net6/{vni}")
}

/// Key of a VPC router object.
pub fn vpc_router_key(id: u32) -> String {
    format!("vpc/{id}")
}

/// One object of a node's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DesiredObject {
    Underlay(Underlay),
    L2Network(L2Network),
    VpcRouter(VpcRouter),
    /// IPv6 side of a dual-stack VPC router (key `vpc6/<id>`).
    VpcRouter6(VpcRouter6),
    /// IPv6 side of a dual-stack tier on a hypervisor (key `net6/<vni>`).
    L2Network6(L2Network6),
}

/// The key of the node's underlay object.
pub const UNDERLAY_KEY: &str = "underlay";

/// Key of a network object.
pub fn network_key(vni: u32) -> String {
    format!("net/{vni}")
}

/// A node's whole desired state at an intent revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesired {
    pub node: String,
    /// etcd revision of the newest intent change this state reflects.
    pub revision: u64,
    pub objects: BTreeMap<String, DesiredObject>,
    /// The digest the coordinator computed over the bytes it sent (see [`digest_entries`]),
    /// as the agent verified it on the raw bytes it received. An agent built from an older
    /// schema decodes fewer fields, so re-encoding could not reproduce it; it keeps and reports
    /// this one. Reset by [`NodeDesired::apply_delta`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire_digest: Option<String>,
}

/// A change between two desired states of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredDelta {
    pub upserts: Vec<(String, DesiredObject)>,
    pub deletes: Vec<String>,
}

impl NodeDesired {
    /// Digest of the objects (not of the revision): equal digests mean equal state, whatever
    /// revision stamped it. The verified wire digest when there is one, else computed over
    /// this build's encoding of each object (what the coordinator sends).
    pub fn digest(&self) -> String {
        match &self.wire_digest {
            Some(d) => d.clone(),
            None => digest_objects(&self.objects),
        }
    }

    pub fn underlay(&self) -> Option<&Underlay> {
        match self.objects.get(UNDERLAY_KEY) {
            Some(DesiredObject::Underlay(u)) => Some(u),
            _ => None,
        }
    }

    pub fn routers(&self) -> impl Iterator<Item = &VpcRouter> {
        self.objects.values().filter_map(|o| match o {
            DesiredObject::VpcRouter(r) => Some(r),
            _ => None,
        })
    }

    pub fn networks(&self) -> impl Iterator<Item = &L2Network> {
        self.objects.values().filter_map(|o| match o {
            DesiredObject::L2Network(n) => Some(n),
            _ => None,
        })
    }

    /// What turns `self` into `next`.
    pub fn delta_to(&self, next: &NodeDesired) -> DesiredDelta {
        let mut delta = DesiredDelta::default();
        for (k, v) in &next.objects {
            if self.objects.get(k) != Some(v) {
                delta.upserts.push((k.clone(), v.clone()));
            }
        }
        for k in self.objects.keys() {
            if !next.objects.contains_key(k) {
                delta.deletes.push(k.clone());
            }
        }
        delta
    }

    /// Applies a delta in place.
    pub fn apply_delta(&mut self, revision: u64, delta: DesiredDelta) {
        for k in delta.deletes {
            self.objects.remove(&k);
        }
        for (k, v) in delta.upserts {
            self.objects.insert(k, v);
        }
        self.revision = revision;
        self.wire_digest = None;
    }
}

/// The desired-state schema this build speaks. Bump it whenever a change to
/// [`DesiredObject`] is one an older agent must not silently ignore (a new field that changes
/// what the dataplane does): agents send the version they understand in their hello, and a
/// coordinator with a newer schema refuses them, so a stale agent shows as refused instead of
/// dropping the field and reporting itself in sync. Upgrade agents before coordinators.
/// 3: the IPv6 side (`vpc6`/`net6` objects, built by the gateway and hypervisor agents).
/// 4: the VPC router's IPv6 firewall and static routes (`VpcRouter6.routes`), IPv6 ACL
/// rules, and `L2Network6.vpc_tiers` (an older agent would route IPv6 unfiltered).
/// 5: IPv6 load balancers (`VpcRouter6.load_balancers`; an older agent would drop them).
pub const SCHEMA_VERSION: u32 = 5;

/// The bytes an object travels as (`Entry.value`).
pub fn encode_object(o: &DesiredObject) -> Vec<u8> {
    serde_json::to_vec(o).expect("desired state always serializes")
}

/// Digest of a state given as (key, encoded object) pairs in key order: SHA-256 over each
/// key and value, length-prefixed. Both sides compute it over the same bytes (the coordinator
/// over what it encodes, the agent over what it received), so it does not depend on either
/// side's schema.
pub fn digest_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (k, v) in entries {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(h.finalize())
}

pub fn digest_objects(objects: &BTreeMap<String, DesiredObject>) -> String {
    let encoded: Vec<(&str, Vec<u8>)> = objects
        .iter()
        .map(|(k, o)| (k.as_str(), encode_object(o)))
        .collect();
    digest_entries(encoded.iter().map(|(k, v)| (*k, v.as_slice())))
}

impl DesiredDelta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}
