//! Validation of writes against the current intent. Every rejection names the offending field
//! (`network.cidr`, `port.node`, ...) so API users and CloudStack see what to fix, and the
//! caller only writes when validation passed, so a rejected request changes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

use crate::event::{PortRef, VpcChildRef, VpcRef};
use crate::model::{
    AclList, Intent, LoadBalancer, NatKind, NatRule, Network, Node, NodeRole, Pool, PortBinding,
    StaticRoute, Tenant, Vpc,
};
use crate::{VNI_MAX, VNI_POOL};

/// A rejected write: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
    pub kind: ErrorKind,
}

/// Coarse class of a rejection, mapped to a status code at the API edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    NotFound,
    AlreadyExists,
    /// The object is still referenced by others.
    InUse,
}

fn err(kind: ErrorKind, field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.to_string(),
        message: message.into(),
        kind,
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Names become etcd key segments and CLI arguments: keep them short and unambiguous.
pub fn validate_name(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(err(ErrorKind::Invalid, field, "must not be empty"));
    }
    if name.len() > 64 {
        return Err(err(
            ErrorKind::Invalid,
            field,
            "must be at most 64 characters",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("{name:?} may contain only letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Linux interface names are limited to 15 bytes.
fn validate_ifname(field: &str, name: &str) -> Result {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.contains(char::is_whitespace)
    {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("{name:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
        ));
    }
    Ok(())
}

pub fn validate_tenant(intent: &Intent, t: &Tenant) -> Result {
    validate_name("tenant.name", &t.name)?;
    if intent.tenants.contains_key(&t.name) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "tenant.name",
            format!("tenant {:?} already exists", t.name),
        ));
    }
    Ok(())
}

/// A tenant update (`UpdateTenant`: its description): the tenant must exist.
pub fn validate_tenant_update(intent: &Intent, t: &Tenant) -> Result {
    validate_name("tenant.name", &t.name)?;
    if !intent.tenants.contains_key(&t.name) {
        return Err(err(
            ErrorKind::NotFound,
            "tenant.name",
            format!("tenant {:?} does not exist", t.name),
        ));
    }
    Ok(())
}

pub fn validate_vpc(intent: &Intent, v: &Vpc) -> Result {
    validate_name("vpc.tenant", &v.tenant)?;
    validate_name("vpc.name", &v.name)?;
    if !v.site.is_empty() {
        // The site is a segment of the VPC id allocation key.
        validate_name("vpc.site", &v.site)?;
    }
    if !intent.tenants.contains_key(&v.tenant) {
        return Err(err(
            ErrorKind::NotFound,
            "vpc.tenant",
            format!("tenant {:?} does not exist", v.tenant),
        ));
    }
    if v.cidr.network() != v.cidr.addr() {
        return Err(err(
            ErrorKind::Invalid,
            "vpc.cidr",
            format!(
                "{} has host bits set (did you mean {}?)",
                v.cidr,
                v.cidr.trunc()
            ),
        ));
    }
    validate_ipv6_ranges(&v.ipv6_ranges)?;
    validate_routed_ipv6_ranges(intent, v)?;
    if intent.vpcs.contains_key(&v.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "vpc.name",
            format!("VPC {:?} already exists in tenant {:?}", v.name, v.tenant),
        ));
    }
    Ok(())
}

/// A change of an existing VPC's IPv6 ranges (the REST API adds one per IPv6 allocation):
/// only `ipv6_ranges` differs from the stored VPC, the ranges are valid, and every tier's /64
/// stays inside one of them.
pub fn validate_vpc_ipv6_ranges_update(intent: &Intent, v: &Vpc) -> Result {
    let old = vpc_of(intent, "vpc.name", &v.tenant, &v.name)?;
    if old.cidr != v.cidr || old.site != v.site || old.id != v.id {
        return Err(err(
            ErrorKind::Invalid,
            "vpc.cidr",
            "only the IPv6 ranges of an existing VPC change here",
        ));
    }
    validate_ipv6_ranges(&v.ipv6_ranges)?;
    validate_routed_ipv6_ranges(intent, v)?;
    let first = VpcChildRef::new(&v.tenant, &v.name, "");
    if let Some((n, p)) = intent
        .networks
        .range(first..)
        .map(|(_, o)| o)
        .take_while(|o| o.tenant == v.tenant && o.vpc == v.name)
        .filter_map(|o| o.ipv6_prefix.map(|p| (o, p)))
        .find(|(_, p)| !v.ipv6_ranges.iter().any(|r| r.contains(p)))
    {
        return Err(err(
            ErrorKind::InUse,
            "vpc.ipv6_ranges",
            format!(
                "network {:?} uses {p}, which would be outside every IPv6 range",
                n.name
            ),
        ));
    }
    Ok(())
}

/// Validates a network. `n.vni` must already be set (allocation happens before validation of
/// the final object; a caller-chosen VNI is checked for range and uniqueness here).
pub fn validate_network(intent: &Intent, n: &Network) -> Result {
    validate_network_with(intent, n, |vni| intent.network_by_vni(vni))
}

/// [`validate_network`] with the caller's index of VNIs (`by_vni`: the network holding a VNI),
/// so that validating costs the same with 100 or 200,000 networks present; everything else
/// it checks is looked up by key or within the network's own VPC.
pub fn validate_network_with<'a>(
    intent: &'a Intent,
    n: &Network,
    by_vni: impl Fn(u32) -> Option<&'a Network>,
) -> Result {
    validate_name("network.tenant", &n.tenant)?;
    validate_name("network.vpc", &n.vpc)?;
    validate_name("network.name", &n.name)?;
    let vpc = intent
        .vpcs
        .get(&VpcRef::new(&n.tenant, &n.vpc))
        .ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "network.vpc",
                format!("VPC {:?} does not exist in tenant {:?}", n.vpc, n.tenant),
            )
        })?;
    if intent.networks.contains_key(&n.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "network.name",
            format!("network {:?} already exists in VPC {:?}", n.name, n.vpc),
        ));
    }
    if n.cidr.network() != n.cidr.addr() {
        return Err(err(
            ErrorKind::Invalid,
            "network.cidr",
            format!(
                "{} has host bits set (did you mean {}?)",
                n.cidr,
                n.cidr.trunc()
            ),
        ));
    }
    if n.cidr.prefix_len() > 30 {
        return Err(err(
            ErrorKind::Invalid,
            "network.cidr",
            format!("{} is too small for a tier (at most /30)", n.cidr),
        ));
    }
    if !vpc.cidr.contains(&n.cidr) {
        return Err(err(
            ErrorKind::Invalid,
            "network.cidr",
            format!("{} is outside the VPC's CIDR {}", n.cidr, vpc.cidr),
        ));
    }
    // The VPC's own networks are one key range (keys sort by tenant, VPC, name).
    let first = VpcChildRef::new(&n.tenant, &n.vpc, "");
    if let Some(other) = intent
        .networks
        .range(first..)
        .map(|(_, o)| o)
        .take_while(|o| o.tenant == n.tenant && o.vpc == n.vpc)
        .find(|o| overlaps(o.cidr, n.cidr))
    {
        return Err(err(
            ErrorKind::Invalid,
            "network.cidr",
            format!(
                "{} overlaps network {:?} ({}) in the same VPC",
                n.cidr, other.name, other.cidr
            ),
        ));
    }
    if n.vni == 0 || n.vni > VNI_MAX {
        return Err(err(
            ErrorKind::Invalid,
            "network.vni",
            format!("{} is outside 1..={VNI_MAX}", n.vni),
        ));
    }
    if let Some(other) = by_vni(n.vni) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "network.vni",
            format!(
                "VNI {} is already used by network {}/{}/{}",
                n.vni, other.tenant, other.vpc, other.name
            ),
        ));
    }
    if !host_in(n.cidr, n.gateway) {
        return Err(err(
            ErrorKind::Invalid,
            "network.gateway",
            format!("{} is not a host address of {}", n.gateway, n.cidr),
        ));
    }
    validate_network_ipv6(intent, vpc, n)
}

/// Smallest IPv6 range a VPC may have: room for at least one /64 tier.
const IPV6_TIER_LEN: u8 = 64;

/// A VPC's IPv6 ranges: unicast networks (host bits clear) of /64 or shorter, not overlapping
/// each other. ULA (fc00::/7) and documentation (2001:db8::/32) prefixes are fine: labs and
/// private clouds use them. Two VPCs may hold the same range (each is its own VRF).
fn validate_ipv6_ranges(ranges: &[Ipv6Net]) -> Result {
    for (i, r) in ranges.iter().enumerate() {
        let field = format!("vpc.ipv6_ranges[{i}]");
        if r.trunc() != *r {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!("{r} has host bits set (did you mean {}?)", r.trunc()),
            ));
        }
        if r.prefix_len() > IPV6_TIER_LEN {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!("{r} is longer than /64: a tier needs a whole /64"),
            ));
        }
        if let Some(why) = non_unicast_v6(r.network()) {
            return Err(err(ErrorKind::Invalid, &field, format!("{r} is {why}")));
        }
        if let Some((j, o)) = ranges[..i]
            .iter()
            .enumerate()
            .find(|(_, o)| overlaps_v6(**o, *r))
        {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!("{r} overlaps vpc.ipv6_ranges[{j}] ({o})"),
            ));
        }
    }
    Ok(())
}

/// A VPC's ranges against its site's IPv6 pools: a range inside a pool is routed (announced
/// by the serving gateway), so it must not overlap another VPC's routed range, which would
/// pull that VPC's traffic; a range partly in a pool (it holds a pool, or straddles one) is
/// refused, as it would be neither routed nor private.
fn validate_routed_ipv6_ranges(intent: &Intent, v: &Vpc) -> Result {
    let pools: Vec<Ipv6Net> = intent.ipv6_pools(&v.site).collect();
    for (i, r) in v.ipv6_ranges.iter().enumerate() {
        let field = format!("vpc.ipv6_ranges[{i}]");
        let Some(pool) = pools.iter().find(|p| overlaps_v6(**p, *r)) else {
            continue; // VPC-internal: never announced, may overlap other VPCs'
        };
        if !pool.contains(r) {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!("{r} overlaps IPv6 pool {pool} without being inside it"),
            ));
        }
        if let Some((o, or)) = other_routed_overlap(intent, v, *r) {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!(
                    "{r} is routed (inside pool {pool}) and overlaps {or} of VPC {}/{}",
                    o.tenant, o.name
                ),
            ));
        }
        if let Some((lb, vip)) = public_vip_in(intent, v, *r) {
            return Err(err(
                ErrorKind::InUse,
                &field,
                format!(
                    "{r} holds {vip}, the public VIP of load balancer {}/{}/{} (a VPC's range would take its address)",
                    lb.tenant, lb.vpc, lb.name
                ),
            ));
        }
    }
    Ok(())
}

/// A public IPv6 VIP inside routed range `r` of VPC `v`, with its load balancer: the VIP of
/// any load balancer in `r` except VPC-internal ones of `v` itself (those inside a range `v`
/// already holds). A public VIP must stay outside every VPC's ranges (`validate_lb_vip6`
/// checks it when the VIP is made; this is the same rule for a range made after the VIP).
fn public_vip_in<'a>(
    intent: &'a Intent,
    v: &Vpc,
    r: Ipv6Net,
) -> Option<(&'a LoadBalancer, Ipv6Addr)> {
    let held = intent
        .vpcs
        .get(&v.key())
        .map(|s| s.ipv6_ranges.as_slice())
        .unwrap_or_default();
    intent.load_balancers.values().find_map(|lb| {
        let IpAddr::V6(vip) = lb.vip else {
            return None;
        };
        let own_internal =
            lb.tenant == v.tenant && lb.vpc == v.name && held.iter().any(|h| h.contains(&vip));
        (r.contains(&vip) && !own_internal).then_some((lb, vip))
    })
}

/// Another VPC of the same site whose routed range overlaps `r`.
fn other_routed_overlap<'a>(intent: &'a Intent, v: &Vpc, r: Ipv6Net) -> Option<(&'a Vpc, Ipv6Net)> {
    intent
        .vpcs
        .values()
        .filter(|o| o.site == v.site && (o.tenant != v.tenant || o.name != v.name))
        .find_map(|o| {
            intent
                .routed_ipv6_ranges(o)
                .into_iter()
                .find(|or| overlaps_v6(*or, r))
                .map(|or| (o, or))
        })
}

/// Why `a` cannot start a routed unicast range, if it cannot.
fn non_unicast_v6(a: Ipv6Addr) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_unspecified() || a.is_loopback() {
        Some("the unspecified or loopback range")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast (ff00::/8)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10): the fabric routes global or ULA prefixes")
    } else {
        None
    }
}

/// The tier's IPv6 /64: exactly /64 (SLAAC needs it), inside one of the VPC's ranges, and
/// overlapping no other tier's of the VPC.
fn validate_network_ipv6(intent: &Intent, vpc: &Vpc, n: &Network) -> Result {
    let Some(p) = n.ipv6_prefix else {
        return Ok(());
    };
    let field = "network.ipv6_prefix";
    if p.prefix_len() != IPV6_TIER_LEN {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("{p} must be a /64 (SLAAC needs 64-bit interface identifiers)"),
        ));
    }
    if p.trunc() != p {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("{p} has host bits set (did you mean {}?)", p.trunc()),
        ));
    }
    if vpc.ipv6_ranges.is_empty() {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("VPC {:?} has no IPv6 range (vpc.ipv6_ranges)", vpc.name),
        ));
    }
    if !vpc.ipv6_ranges.iter().any(|r| r.contains(&p)) {
        let ranges: Vec<String> = vpc.ipv6_ranges.iter().map(|r| r.to_string()).collect();
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!(
                "{p} is outside the VPC's IPv6 ranges ({})",
                ranges.join(", ")
            ),
        ));
    }
    let first = VpcChildRef::new(&n.tenant, &n.vpc, "");
    if let Some(other) = intent
        .networks
        .range(first..)
        .map(|(_, o)| o)
        .take_while(|o| o.tenant == n.tenant && o.vpc == n.vpc)
        .find(|o| o.name != n.name && o.ipv6_prefix.is_some_and(|q| overlaps_v6(q, p)))
    {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!(
                "{p} overlaps network {:?} ({}) in the same VPC",
                other.name,
                other.ipv6_prefix.unwrap_or(p)
            ),
        ));
    }
    Ok(())
}

/// The port's IPv6 address: its tier has a /64, the address is in it, is neither the
/// subnet-router anycast address (`::`) nor the router's `::1`, and no other port of the
/// tier has it.
fn validate_port_ipv6(intent: &Intent, net: &Network, p: &PortBinding) -> Result {
    let Some(ip) = p.ipv6 else {
        return Ok(());
    };
    let field = "port.ipv6";
    let Some(prefix) = net.ipv6_prefix else {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!(
                "network {:?} has no IPv6 prefix (network.ipv6_prefix)",
                net.name
            ),
        ));
    };
    if !prefix.contains(&ip) || ip == prefix.network() {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!(
                "{ip} is not a host address of network {:?} ({prefix})",
                net.name
            ),
        ));
    }
    if Some(ip) == net.ipv6_gateway() {
        return Err(err(
            ErrorKind::Invalid,
            field,
            format!("{ip} is the network's IPv6 gateway address"),
        ));
    }
    if let Some(other) = intent
        .ports
        .values()
        .find(|o| o.network_key() == p.network_key() && o.ipv6 == Some(ip))
    {
        return Err(err(
            ErrorKind::AlreadyExists,
            field,
            format!("{ip} is already used by port {:?}", other.name),
        ));
    }
    Ok(())
}

/// Whether a caller-chosen VNI is one the allocator would hand out; used only to warn.
pub fn vni_in_pool(vni: u32) -> bool {
    VNI_POOL.contains(&vni)
}

pub fn validate_port(intent: &Intent, p: &PortBinding) -> Result {
    validate_name("port.tenant", &p.tenant)?;
    validate_name("port.name", &p.name)?;
    if intent.ports.contains_key(&p.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "port.name",
            format!("port {:?} already exists in tenant {:?}", p.name, p.tenant),
        ));
    }
    let net = intent.networks.get(&p.network_key()).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            "port.network",
            format!(
                "network {:?} does not exist in VPC {:?} of tenant {:?}",
                p.network, p.vpc, p.tenant
            ),
        )
    })?;
    let node = intent.nodes.get(&p.node).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            "port.node",
            format!("node {:?} is not in the inventory", p.node),
        )
    })?;
    match (node.role, &p.attach) {
        (NodeRole::Hypervisor, None) => {}
        (NodeRole::Hypervisor, Some(_)) => {
            return Err(err(
                ErrorKind::Invalid,
                "port.interface",
                format!(
                    "node {:?} is a hypervisor: a switch interface applies to switch ports only",
                    p.node
                ),
            ))
        }
        (NodeRole::Switch, Some(a)) => validate_attachment(intent, "port", &p.node, a)?,
        (NodeRole::Switch, None) => {
            return Err(err(
                ErrorKind::Invalid,
                "port.interface",
                format!(
                    "node {:?} is a switch: a bare-metal port needs the switch interface",
                    p.node
                ),
            ))
        }
        (role, _) => {
            return Err(err(
                ErrorKind::Invalid,
                "port.node",
                format!(
                    "node {:?} is a {}, not a hypervisor or switch",
                    p.node,
                    role.as_str()
                ),
            ))
        }
    }
    if !host_in(net.cidr, p.ip) {
        return Err(err(
            ErrorKind::Invalid,
            "port.ip",
            format!(
                "{} is not a host address of network {:?} ({})",
                p.ip, net.name, net.cidr
            ),
        ));
    }
    if p.ip == net.gateway {
        return Err(err(
            ErrorKind::Invalid,
            "port.ip",
            format!("{} is the network's gateway address", p.ip),
        ));
    }
    if let Some(other) = intent
        .ports
        .values()
        .find(|o| o.network_key() == p.network_key() && o.ip == p.ip)
    {
        return Err(err(
            ErrorKind::AlreadyExists,
            "port.ip",
            format!("{} is already used by port {:?}", p.ip, other.name),
        ));
    }
    if let Some(mac) = &p.mac {
        if !valid_mac(mac) {
            return Err(err(
                ErrorKind::Invalid,
                "port.mac",
                format!("{mac:?} is not a MAC address like aa:bb:cc:dd:ee:ff"),
            ));
        }
    }
    validate_port_ipv6(intent, net, p)
}

/// Names a node may not take: a node's certificate names it, and under etcd's certificate
/// authentication that name is an etcd user; `root` is etcd's administrator.
pub const RESERVED_NODE_NAMES: &[&str] = &["root"];

pub fn validate_node(intent: &Intent, n: &Node) -> Result {
    validate_name("node.name", &n.name)?;
    if RESERVED_NODE_NAMES.contains(&n.name.as_str()) {
        return Err(err(
            ErrorKind::Invalid,
            "node.name",
            format!(
                "{:?} is reserved (its certificate would be etcd's {:?} user)",
                n.name, n.name
            ),
        ));
    }
    if intent.nodes.contains_key(&n.name) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "node.name",
            format!("node {:?} already exists", n.name),
        ));
    }
    if n.asn == 0 || n.asn == 23456 || n.asn == u32::MAX {
        return Err(err(
            ErrorKind::Invalid,
            "node.asn",
            format!("{} is not a usable AS number", n.asn),
        ));
    }
    if n.loopback.is_unspecified() || n.loopback.is_multicast() || n.loopback.is_broadcast() {
        return Err(err(
            ErrorKind::Invalid,
            "node.loopback",
            format!("{} is not a usable loopback address", n.loopback),
        ));
    }
    if let Some(other) = intent.nodes.values().find(|o| o.loopback == n.loopback) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "node.loopback",
            format!(
                "{} is already the loopback of node {:?}",
                n.loopback, other.name
            ),
        ));
    }
    for (i, port) in n.fabric_ports.iter().enumerate() {
        validate_ifname(&format!("node.fabric_ports[{i}]"), port)?;
    }
    Ok(())
}

/// Deleting a tenant is refused while it still owns VPCs or ports.
pub fn check_delete_tenant(intent: &Intent, tenant: &str) -> Result {
    if !intent.tenants.contains_key(tenant) {
        return Err(err(
            ErrorKind::NotFound,
            "tenant.name",
            format!("tenant {tenant:?} does not exist"),
        ));
    }
    if let Some(v) = intent.vpcs.values().find(|v| v.tenant == tenant) {
        return Err(err(
            ErrorKind::InUse,
            "tenant.name",
            format!("tenant {tenant:?} still has VPC {:?}", v.name),
        ));
    }
    Ok(())
}

pub fn validate_pool(intent: &Intent, p: &Pool) -> Result {
    validate_name("pool.name", &p.name)?;
    if intent.pools.contains_key(&p.name) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "pool.name",
            format!("pool {:?} already exists", p.name),
        ));
    }
    if p.cidr.network() != p.cidr.addr() {
        return Err(err(
            ErrorKind::Invalid,
            "pool.cidr",
            format!(
                "{} has host bits set (did you mean {}?)",
                p.cidr,
                p.cidr.trunc()
            ),
        ));
    }
    if let Some(o) = intent
        .pools
        .values()
        .find(|o| o.cidr.contains(&p.cidr.network()) || p.cidr.contains(&o.cidr.network()))
    {
        return Err(err(
            ErrorKind::Invalid,
            "pool.cidr",
            format!("{} overlaps pool {:?} ({})", p.cidr, o.name, o.cidr),
        ));
    }
    match p.v6() {
        Some(pool) => validate_pool6_ranges(intent, p, pool),
        None => Ok(()),
    }
}

/// A new IPv6 pool makes the VPC ranges inside it routed: refused if two VPCs' ranges inside
/// it overlap (both would be announced) or a VPC range straddles it.
fn validate_pool6_ranges(intent: &Intent, p: &Pool, pool: Ipv6Net) -> Result {
    let mut inside: Vec<(&Vpc, Ipv6Net)> = Vec::new();
    for v in intent.vpcs.values().filter(|v| v.site == p.site) {
        for r in v.ipv6_ranges.iter().filter(|r| overlaps_v6(**r, pool)) {
            let clash = if !pool.contains(r) {
                Some(format!(
                    "VPC {}/{} holds {r}, which it would split",
                    v.tenant, v.name
                ))
            } else {
                inside
                    .iter()
                    .find(|(o, or)| o.key() != v.key() && overlaps_v6(*or, *r))
                    .map(|(o, or)| {
                        format!(
                            "VPCs {}/{} ({or}) and {}/{} ({r}) would both be routed",
                            o.tenant, o.name, v.tenant, v.name
                        )
                    })
            };
            if let Some(why) = clash {
                return Err(err(
                    ErrorKind::Invalid,
                    "pool.cidr",
                    format!("{pool}: {why}"),
                ));
            }
            inside.push((v, *r));
        }
    }
    Ok(())
}

fn vpc_of<'a>(intent: &'a Intent, field: &str, tenant: &str, vpc: &str) -> Result<&'a Vpc> {
    intent.vpcs.get(&VpcRef::new(tenant, vpc)).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            field,
            format!("VPC {vpc:?} does not exist in tenant {tenant:?}"),
        )
    })
}

/// A host address of one of the VPC's tiers.
fn in_some_tier(intent: &Intent, tenant: &str, vpc: &str, ip: Ipv4Addr) -> bool {
    intent
        .networks
        .values()
        .any(|n| n.tenant == tenant && n.vpc == vpc && host_in(n.cidr, ip) && ip != n.gateway)
}

/// A host of one of the VPC's dual-stack tiers: inside its /64, neither `::` nor `::1`.
fn in_some_tier6(intent: &Intent, tenant: &str, vpc: &str, ip: Ipv6Addr) -> bool {
    intent.networks.values().any(|n| {
        n.tenant == tenant
            && n.vpc == vpc
            && n.ipv6_prefix
                .is_some_and(|p| p.contains(&ip) && ip != p.network())
            && Some(ip) != n.ipv6_gateway()
    })
}

pub fn validate_nat(intent: &Intent, r: &NatRule) -> Result {
    validate_nat_as(intent, r, false)
}

/// An in-place update of a NAT rule: it must exist and keep its kind (SNAT, port forward and
/// static NAT program different chains: another kind is another rule, delete and create);
/// its addresses and ports are validated as a create's, the rule itself not counting as a
/// conflict.
pub fn validate_nat_update(intent: &Intent, r: &NatRule) -> Result {
    let Some(old) = intent.nat_rules.get(&r.key()) else {
        return Err(err(
            ErrorKind::NotFound,
            "nat.name",
            format!("NAT rule {:?} does not exist in VPC {:?}", r.name, r.vpc),
        ));
    };
    if old.kind.name() != r.kind.name() {
        return Err(err(
            ErrorKind::Invalid,
            "nat.kind",
            format!(
                "NAT rule {:?} is a {} rule and cannot become a {} rule (delete it and create another)",
                r.name,
                old.kind.name(),
                r.kind.name()
            ),
        ));
    }
    validate_nat_as(intent, r, true)
}

fn validate_nat_as(intent: &Intent, r: &NatRule, replacing: bool) -> Result {
    validate_name("nat.tenant", &r.tenant)?;
    validate_name("nat.vpc", &r.vpc)?;
    validate_name("nat.name", &r.name)?;
    let vpc = vpc_of(intent, "nat.vpc", &r.tenant, &r.vpc)?;
    if !replacing && intent.nat_rules.contains_key(&r.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "nat.name",
            format!("NAT rule {:?} already exists in VPC {:?}", r.name, r.vpc),
        ));
    }
    validate_nat_pool(intent, vpc, r)?;
    validate_nat_sharing(intent, r)?;
    validate_nat_kind(intent, r)
}

/// The public address: a usable host of a public pool of the VPC's site.
fn validate_nat_pool(intent: &Intent, vpc: &Vpc, r: &NatRule) -> Result {
    let public = r.kind.public_ip();
    let Some((pool, cidr)) = intent
        .pools
        .values()
        .filter(|p| p.site == vpc.site)
        .find_map(|p| p.v4().filter(|c| c.contains(&public)).map(|c| (p, c)))
    else {
        return Err(err(
            ErrorKind::Invalid,
            "nat.public_ip",
            format!("{public} is not in any public pool of site {:?}", vpc.site),
        ));
    };
    if public == cidr.network() || (cidr.prefix_len() < 31 && public == cidr.broadcast()) {
        return Err(err(
            ErrorKind::Invalid,
            "nat.public_ip",
            format!(
                "{public} is the network or broadcast address of pool {:?}",
                pool.name
            ),
        ));
    }
    Ok(())
}

/// Who else uses the public address: never a load balancer or another VPC; within the VPC,
/// SNAT may share it with port forwards (as CloudStack does), port forwards may share it on
/// other ports, static NAT shares it with nothing.
fn validate_nat_sharing(intent: &Intent, r: &NatRule) -> Result {
    let public = r.kind.public_ip();
    if let Some(lb) = intent.load_balancers.values().find(|l| l.vip == public) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "nat.public_ip",
            format!("{public} is the VIP of load balancer {:?}", lb.name),
        ));
    }
    for o in intent
        .nat_rules
        .values()
        .filter(|o| o.kind.public_ip() == public && o.key() != r.key())
    {
        let same_vpc = o.tenant == r.tenant && o.vpc == r.vpc;
        if !same_vpc {
            return Err(err(
                ErrorKind::AlreadyExists,
                "nat.public_ip",
                format!(
                    "{public} is already used by NAT rule {:?} of VPC {:?}",
                    o.name, o.vpc
                ),
            ));
        }
        let conflict = match (&o.kind, &r.kind) {
            (NatKind::StaticNat { .. }, _) | (_, NatKind::StaticNat { .. }) => true,
            (NatKind::Snat { .. }, NatKind::Snat { .. }) => true,
            (
                NatKind::PortForward {
                    protocol: p1,
                    public_port: x1,
                    ..
                },
                NatKind::PortForward {
                    protocol: p2,
                    public_port: x2,
                    ..
                },
            ) => p1 == p2 && x1 == x2,
            _ => false, // SNAT address shared with port forwards, as CloudStack does
        };
        if conflict {
            let field = if matches!(r.kind, NatKind::PortForward { .. })
                && matches!(o.kind, NatKind::PortForward { .. })
            {
                "nat.public_port"
            } else {
                "nat.public_ip"
            };
            return Err(err(
                ErrorKind::AlreadyExists,
                field,
                format!(
                    "{public} is already used by {} rule {:?}",
                    o.kind.name(),
                    o.name
                ),
            ));
        }
    }
    Ok(())
}

/// What each kind needs: one SNAT per VPC; ports and a private host in a tier for a port
/// forward; a private host in a tier with no other static NAT for static NAT.
fn validate_nat_kind(intent: &Intent, r: &NatRule) -> Result {
    match &r.kind {
        NatKind::Snat { .. } => {
            if let Some(o) = intent.nat_rules.values().find(|o| {
                o.tenant == r.tenant
                    && o.vpc == r.vpc
                    && o.key() != r.key()
                    && matches!(o.kind, NatKind::Snat { .. })
            }) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    "nat.kind",
                    format!("VPC {:?} already has source NAT rule {:?}", r.vpc, o.name),
                ));
            }
        }
        NatKind::PortForward {
            public_port,
            private_ip,
            private_port,
            ..
        } => {
            if *public_port == 0 {
                return Err(err(
                    ErrorKind::Invalid,
                    "nat.public_port",
                    "must be 1-65535",
                ));
            }
            if *private_port == 0 {
                return Err(err(
                    ErrorKind::Invalid,
                    "nat.private_port",
                    "must be 1-65535",
                ));
            }
            if !in_some_tier(intent, &r.tenant, &r.vpc, *private_ip) {
                return Err(err(
                    ErrorKind::Invalid,
                    "nat.private_ip",
                    format!(
                        "{private_ip} is not a host address of any tier of VPC {:?}",
                        r.vpc
                    ),
                ));
            }
        }
        NatKind::StaticNat { private_ip, .. } => {
            if !in_some_tier(intent, &r.tenant, &r.vpc, *private_ip) {
                return Err(err(
                    ErrorKind::Invalid,
                    "nat.private_ip",
                    format!(
                        "{private_ip} is not a host address of any tier of VPC {:?}",
                        r.vpc
                    ),
                ));
            }
            if let Some(o) = intent.nat_rules.values().find(|o| {
                o.tenant == r.tenant && o.vpc == r.vpc && o.key() != r.key() && matches!(&o.kind, NatKind::StaticNat { private_ip: p, .. } if p == private_ip)
            }) {
                return Err(err(ErrorKind::AlreadyExists, "nat.private_ip", format!("{private_ip} already has static NAT rule {:?}", o.name)));
            }
        }
    }
    Ok(())
}

/// Most source CIDRs one load balancer may list.
pub const LB_MAX_SOURCE_CIDRS: usize = 256;

/// The allowed sources of a load balancer: network addresses (host bits clear), no
/// duplicates, at most [`LB_MAX_SOURCE_CIDRS`].
pub fn validate_lb_source_cidrs(cidrs: &[IpNet]) -> Result {
    if cidrs.len() > LB_MAX_SOURCE_CIDRS {
        return Err(err(
            ErrorKind::Invalid,
            "lb.source_cidrs",
            format!("{} entries, at most {LB_MAX_SOURCE_CIDRS}", cidrs.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in cidrs.iter().enumerate() {
        if c.trunc() != *c {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.source_cidrs[{i}]"),
                format!("{c} has host bits set (the network is {})", c.trunc()),
            ));
        }
        if !seen.insert(*c) {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.source_cidrs[{i}]"),
                format!("{c} is listed twice"),
            ));
        }
    }
    Ok(())
}

pub fn validate_lb(intent: &Intent, lb: &LoadBalancer) -> Result {
    validate_lb_as(intent, lb, false)
}

/// An update of an existing load balancer (`UpdateLoadBalancer`): validated as its create,
/// except that the load balancer itself is neither a duplicate nor a VIP conflict.
pub fn validate_lb_update(intent: &Intent, lb: &LoadBalancer) -> Result {
    if !intent.load_balancers.contains_key(&lb.key()) {
        return Err(err(
            ErrorKind::NotFound,
            "lb.name",
            format!(
                "load balancer {:?} does not exist in VPC {:?}",
                lb.name, lb.vpc
            ),
        ));
    }
    validate_lb_as(intent, lb, true)
}

fn validate_lb_as(intent: &Intent, lb: &LoadBalancer, replacing: bool) -> Result {
    validate_name("lb.tenant", &lb.tenant)?;
    validate_name("lb.vpc", &lb.vpc)?;
    validate_name("lb.name", &lb.name)?;
    let vpc = vpc_of(intent, "lb.vpc", &lb.tenant, &lb.vpc)?;
    if !replacing && intent.load_balancers.contains_key(&lb.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "lb.name",
            format!(
                "load balancer {:?} already exists in VPC {:?}",
                lb.name, lb.vpc
            ),
        ));
    }
    if lb.port == 0 {
        return Err(err(ErrorKind::Invalid, "lb.port", "must be 1-65535"));
    }
    validate_lb_vip(intent, vpc, lb)?;
    validate_lb_families(lb)?;
    validate_lb_backends(intent, lb)?;
    validate_lb_source_cidrs(&lb.source_cidrs)?;
    validate_lb_table(lb)?;
    validate_lb_health(lb)
}

/// The VIP: in a public pool of the VPC's site or VPC-internal (inside the VPC, outside every
/// tier), and not taken by a NAT rule or by another VPC's (or the same port's) load balancer.
fn validate_lb_vip(intent: &Intent, vpc: &Vpc, lb: &LoadBalancer) -> Result {
    match lb.vip {
        IpAddr::V4(vip) => validate_lb_vip4(intent, vpc, lb, vip)?,
        IpAddr::V6(vip) => validate_lb_vip6(intent, vpc, lb, vip)?,
    }
    if let Some(r) = intent
        .nat_rules
        .values()
        .find(|r| r.kind.public_ip() == lb.vip)
    {
        return Err(err(
            ErrorKind::AlreadyExists,
            "lb.vip",
            format!(
                "{} is already used by NAT rule {:?} of VPC {:?}",
                lb.vip, r.name, r.vpc
            ),
        ));
    }
    if let Some(o) = intent.load_balancers.values().find(|o| {
        o.vip == lb.vip
            && o.key() != lb.key()
            && (o.tenant != lb.tenant
                || o.vpc != lb.vpc
                || (o.protocol == lb.protocol && o.port == lb.port))
    }) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "lb.vip",
            format!(
                "{}:{} is already used by load balancer {:?} of VPC {:?}",
                lb.vip, lb.port, o.name, o.vpc
            ),
        ));
    }
    Ok(())
}

fn validate_lb_vip4(intent: &Intent, vpc: &Vpc, lb: &LoadBalancer, vip: Ipv4Addr) -> Result {
    let public = intent
        .pools
        .values()
        .any(|p| p.contains4(&vip) && p.site == vpc.site);
    let internal = vpc.cidr.contains(&vip)
        && !intent
            .networks
            .values()
            .any(|n| n.tenant == lb.tenant && n.vpc == lb.vpc && n.cidr.contains(&vip));
    if !public && !internal {
        return Err(err(
            ErrorKind::Invalid,
            "lb.vip",
            format!(
                "{vip} is neither in a public pool of site {:?} nor a VPC-internal address (inside {} and outside every tier)",
                vpc.site, vpc.cidr
            ),
        ));
    }
    Ok(())
}

/// An IPv6 VIP: VPC-internal inside one of the VPC's `ipv6_ranges` and outside every tier's
/// /64 (the VMs reach it through their router; a routed range carries it out), or public
/// from one of the site's IPv6 pools outside every VPC's ranges (announced as a /128 by
/// the serving gateway; inside another VPC's range it would be that VPC's address).
fn validate_lb_vip6(intent: &Intent, vpc: &Vpc, lb: &LoadBalancer, vip: Ipv6Addr) -> Result {
    if let Some(r) = vpc.ipv6_ranges.iter().find(|r| r.contains(&vip)) {
        if let Some(n) = intent.networks.values().find(|n| {
            n.tenant == lb.tenant
                && n.vpc == lb.vpc
                && n.ipv6_prefix.is_some_and(|p| p.contains(&vip))
        }) {
            return Err(err(
                ErrorKind::Invalid,
                "lb.vip",
                format!(
                    "{vip} is inside tier {:?} ({}); a VPC-internal VIP must lie outside every tier's /64 of range {r}",
                    n.name,
                    n.ipv6_prefix.map(|p| p.to_string()).unwrap_or_default()
                ),
            ));
        }
        return Ok(());
    }
    if !intent.ipv6_pools(&vpc.site).any(|p| p.contains(&vip)) {
        let ranges: Vec<String> = vpc.ipv6_ranges.iter().map(|r| r.to_string()).collect();
        return Err(err(
            ErrorKind::Invalid,
            "lb.vip",
            format!(
                "{vip} is neither in an IPv6 pool of site {:?} nor a VPC-internal address (inside the VPC's IPv6 ranges [{}] and outside every tier)",
                vpc.site,
                ranges.join(", ")
            ),
        ));
    }
    if let Some(o) = intent
        .vpcs
        .values()
        .find(|o| o.site == vpc.site && o.ipv6_ranges.iter().any(|r| r.contains(&vip)))
    {
        return Err(err(
            ErrorKind::AlreadyExists,
            "lb.vip",
            format!(
                "{vip} is inside an IPv6 range of VPC {:?} of tenant {:?}",
                o.name, o.tenant
            ),
        ));
    }
    Ok(())
}

/// Every backend and source CIDR of the VIP's family (a Maglev map holds one family).
fn validate_lb_families(lb: &LoadBalancer) -> Result {
    let family = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
    let want = family(lb.vip.is_ipv6());
    for (i, b) in lb.backends.iter().enumerate() {
        if b.ip.is_ipv6() != lb.vip.is_ipv6() {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.backends[{i}].ip"),
                format!(
                    "{} is {} but the VIP {} is {want}",
                    b.ip,
                    family(b.ip.is_ipv6()),
                    lb.vip
                ),
            ));
        }
    }
    for (i, c) in lb.source_cidrs.iter().enumerate() {
        if matches!(c, IpNet::V6(_)) != lb.vip.is_ipv6() {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.source_cidrs[{i}]"),
                format!(
                    "{c} is {} but the VIP {} is {want}",
                    family(matches!(c, IpNet::V6(_))),
                    lb.vip
                ),
            ));
        }
    }
    Ok(())
}

/// At least one backend; each a host of a tier of the VPC (of a dual-stack tier's /64 for
/// IPv6), with a port and a weight of 1-1000, listed once.
fn validate_lb_backends(intent: &Intent, lb: &LoadBalancer) -> Result {
    if lb.backends.is_empty() {
        return Err(err(
            ErrorKind::Invalid,
            "lb.backends",
            "at least one backend is required",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, b) in lb.backends.iter().enumerate() {
        let in_tier = match b.ip {
            IpAddr::V4(ip) => in_some_tier(intent, &lb.tenant, &lb.vpc, ip),
            IpAddr::V6(ip) => in_some_tier6(intent, &lb.tenant, &lb.vpc, ip),
        };
        if !in_tier {
            let what = if b.ip.is_ipv6() {
                "a host of any dual-stack tier's /64"
            } else {
                "a host address of any tier"
            };
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.backends[{i}].ip"),
                format!("{} is not {what} of VPC {:?}", b.ip, lb.vpc),
            ));
        }
        if b.port == 0 {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.backends[{i}].port"),
                "must be 1-65535",
            ));
        }
        if b.weight == 0 || b.weight > 1000 {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.backends[{i}].weight"),
                format!("{} is outside 1-1000", b.weight),
            ));
        }
        if !seen.insert((b.ip, b.port)) {
            return Err(err(
                ErrorKind::Invalid,
                &format!("lb.backends[{i}]"),
                format!(
                    "{} is listed twice",
                    std::net::SocketAddr::new(b.ip, b.port)
                ),
            ));
        }
    }
    Ok(())
}

/// The Maglev table: a prime larger than 100 x backends, at most 1,000,003.
fn validate_lb_table(lb: &LoadBalancer) -> Result {
    if !crate::maglev::is_prime(lb.table_size)
        || (lb.table_size as u64) <= 100 * lb.backends.len() as u64
    {
        return Err(err(
            ErrorKind::Invalid,
            "lb.table_size",
            format!(
                "{} must be a prime larger than 100 x backends ({})",
                lb.table_size,
                100 * lb.backends.len()
            ),
        ));
    }
    if lb.table_size > 1_000_003 {
        return Err(err(
            ErrorKind::Invalid,
            "lb.table_size",
            "must be at most 1000003",
        ));
    }
    Ok(())
}

/// The health check: its timers, and for HTTP a TCP load balancer, a path and a status.
fn validate_lb_health(lb: &LoadBalancer) -> Result {
    use crate::desired::HealthCheck;
    match &lb.health {
        HealthCheck::None => {}
        HealthCheck::Tcp {
            interval_ms,
            timeout_ms,
            rise,
            fall,
        } => validate_lb_timers(*interval_ms, *timeout_ms, *rise, *fall)?,
        HealthCheck::Http {
            path,
            expect_status,
            interval_ms,
            timeout_ms,
            rise,
            fall,
        } => {
            if lb.protocol != crate::desired::L4Protocol::Tcp {
                return Err(err(
                    ErrorKind::Invalid,
                    "lb.health.type",
                    "HTTP checks need a TCP load balancer",
                ));
            }
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    ErrorKind::Invalid,
                    "lb.health.path",
                    format!("{path:?} must start with '/' and contain no spaces"),
                ));
            }
            if !(100..=599).contains(expect_status) {
                return Err(err(
                    ErrorKind::Invalid,
                    "lb.health.expect_status",
                    format!("{expect_status} is not an HTTP status"),
                ));
            }
            validate_lb_timers(*interval_ms, *timeout_ms, *rise, *fall)?
        }
    }
    Ok(())
}

/// A health check's timers: an interval of at least 100 ms, a timeout within it, rise and
/// fall of 1-100.
fn validate_lb_timers(interval_ms: u32, timeout_ms: u32, rise: u32, fall: u32) -> Result {
    if interval_ms < 100 {
        return Err(err(
            ErrorKind::Invalid,
            "lb.health.interval_ms",
            "must be at least 100",
        ));
    }
    if timeout_ms == 0 || timeout_ms > interval_ms {
        return Err(err(
            ErrorKind::Invalid,
            "lb.health.timeout_ms",
            "must be between 1 and the interval",
        ));
    }
    if rise == 0 || fall == 0 || rise > 100 || fall > 100 {
        return Err(err(
            ErrorKind::Invalid,
            if rise == 0 || rise > 100 {
                "lb.health.rise"
            } else {
                "lb.health.fall"
            },
            "must be 1-100",
        ));
    }
    Ok(())
}

pub fn validate_acl(intent: &Intent, l: &AclList) -> Result {
    validate_name("acl.tenant", &l.tenant)?;
    validate_name("acl.vpc", &l.vpc)?;
    validate_name("acl.name", &l.name)?;
    vpc_of(intent, "acl.vpc", &l.tenant, &l.vpc)?;
    let mut numbers = std::collections::BTreeSet::new();
    for (i, r) in l.rules.iter().enumerate() {
        if r.rule.number == 0 {
            return Err(err(
                ErrorKind::Invalid,
                &format!("acl.rules[{i}].number"),
                "must be at least 1",
            ));
        }
        if !numbers.insert(r.rule.number) {
            return Err(err(
                ErrorKind::Invalid,
                &format!("acl.rules[{i}].number"),
                format!("rule number {} is used twice", r.rule.number),
            ));
        }
        validate_acl_rule(i, &r.rule)?;
    }
    validate_acl_tiers(intent, l)
}

/// One rule's match: CIDRs that are networks; ports only for TCP/UDP, as a range; ICMP
/// type/code only for ICMP, a code only with a type.
fn validate_acl_rule(i: usize, rule: &crate::desired::AclRule) -> Result {
    use crate::desired::AclProtocol;
    let f = |x: &str| format!("acl.rules[{i}].{x}");
    if rule.cidrs.is_empty() {
        return Err(err(
            ErrorKind::Invalid,
            &f("cidrs"),
            "at least one CIDR is required (0.0.0.0/0 for any)",
        ));
    }
    for (j, c) in rule.cidrs.iter().enumerate() {
        if c.network() != c.addr() {
            return Err(err(
                ErrorKind::Invalid,
                &format!("acl.rules[{i}].cidrs[{j}]"),
                format!("{c} has host bits set (did you mean {}?)", c.trunc()),
            ));
        }
    }
    // icmp is IPv4's, icmpv6 IPv6's: a rule naming no network of its family never matches.
    let (v4, v6) = (
        rule.cidrs.iter().any(|c| matches!(c, IpNet::V4(_))),
        rule.cidrs.iter().any(|c| matches!(c, IpNet::V6(_))),
    );
    if (rule.protocol == AclProtocol::Icmp && !v4) || (rule.protocol == AclProtocol::Icmpv6 && !v6)
    {
        let why = if rule.protocol == AclProtocol::Icmp {
            "protocol icmp matches IPv4 only: name an IPv4 network (icmpv6 for IPv6)"
        } else {
            "protocol icmpv6 matches IPv6 only: name an IPv6 network (icmp for IPv4)"
        };
        return Err(err(ErrorKind::Invalid, &f("cidrs"), why));
    }
    match rule.protocol {
        AclProtocol::Tcp | AclProtocol::Udp => {
            if rule.icmp_type.is_some() || rule.icmp_code.is_some() {
                return Err(err(
                    ErrorKind::Invalid,
                    &f("icmp_type"),
                    "ICMP type/code only apply to protocols icmp and icmpv6",
                ));
            }
            if let Some((a, b)) = rule.ports {
                if a == 0 || a > b {
                    return Err(err(
                        ErrorKind::Invalid,
                        &f("ports"),
                        format!("{a}-{b} is not a port range (1-65535, start <= end)"),
                    ));
                }
            }
        }
        AclProtocol::Icmp | AclProtocol::Icmpv6 | AclProtocol::All => {
            if rule.ports.is_some() {
                return Err(err(
                    ErrorKind::Invalid,
                    &f("ports"),
                    "ports only apply to protocols tcp and udp",
                ));
            }
            if rule.protocol == AclProtocol::All
                && (rule.icmp_type.is_some() || rule.icmp_code.is_some())
            {
                return Err(err(
                    ErrorKind::Invalid,
                    &f("icmp_type"),
                    "ICMP type/code only apply to protocols icmp and icmpv6",
                ));
            }
            if rule.icmp_code.is_some() && rule.icmp_type.is_none() {
                return Err(err(
                    ErrorKind::Invalid,
                    &f("icmp_code"),
                    "an ICMP code needs an ICMP type",
                ));
            }
        }
    }
    Ok(())
}

/// The tiers the list applies to: networks of the VPC, none already under another list.
fn validate_acl_tiers(intent: &Intent, l: &AclList) -> Result {
    for (i, t) in l.tiers.iter().enumerate() {
        let key = VpcChildRef::new(&l.tenant, &l.vpc, t);
        if !intent.networks.contains_key(&key) {
            return Err(err(
                ErrorKind::NotFound,
                &format!("acl.tiers[{i}]"),
                format!("network {t:?} does not exist in VPC {:?}", l.vpc),
            ));
        }
        if let Some(o) = intent.acls.values().find(|o| {
            o.key() != l.key() && o.tenant == l.tenant && o.vpc == l.vpc && o.tiers.contains(t)
        }) {
            return Err(err(
                ErrorKind::AlreadyExists,
                &format!("acl.tiers[{i}]"),
                format!("network {t:?} already uses ACL list {:?}", o.name),
            ));
        }
    }
    Ok(())
}

pub fn check_delete_acl(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    vpc_child_exists(&intent.acls, "acl.name", "ACL list", tenant, vpc, name)
}

/// Linux interface names: 1-15 characters, no `/`, whitespace or `:`.
fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A switch interface (and VLAN) that a bare-metal port (`what` = "port") or a Direct Connect
/// ("dc") wants: a server-facing interface of a switch, not used by another binding in a way
/// that conflicts (untagged takes the whole interface; a VLAN is used once per interface).
fn validate_attachment(
    intent: &Intent,
    what: &str,
    switch: &str,
    a: &crate::desired::SwitchAttachment,
) -> Result {
    let f = |x: &str| format!("{what}.{x}");
    let node = intent.nodes.get(switch).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            &f(if what == "dc" { "switch" } else { "node" }),
            format!("switch {switch:?} is not in the inventory"),
        )
    })?;
    if node.role != NodeRole::Switch {
        return Err(err(
            ErrorKind::Invalid,
            &f(if what == "dc" { "switch" } else { "node" }),
            format!("node {switch:?} is a {}, not a switch", node.role.as_str()),
        ));
    }
    if !valid_ifname(&a.interface) {
        return Err(err(
            ErrorKind::Invalid,
            &f("interface"),
            format!(
                "{:?} is not an interface name (1-15 of A-Z a-z 0-9 . _ -)",
                a.interface
            ),
        ));
    }
    if node.fabric_ports.contains(&a.interface) {
        return Err(err(
            ErrorKind::Invalid,
            &f("interface"),
            format!(
                "{} is a fabric port of {switch}, not a server-facing port",
                a.interface
            ),
        ));
    }
    if let Some(v) = a.vlan {
        if !(1..=4094).contains(&v) {
            return Err(err(
                ErrorKind::Invalid,
                &f("vlan"),
                format!("{v} is not a VLAN id (1-4094)"),
            ));
        }
    }
    let used: Vec<(crate::desired::SwitchAttachment, String)> = intent
        .ports
        .values()
        .filter(|p| p.node == switch)
        .filter_map(|p| p.attach.clone().map(|x| (x, format!("port {:?}", p.name))))
        .chain(
            intent
                .direct_connects
                .values()
                .filter(|d| d.switch == switch)
                .map(|d| (d.attachment(), format!("Direct Connect {:?}", d.name))),
        )
        .collect();
    for (o, who) in used {
        if o.interface != a.interface {
            continue;
        }
        match (o.vlan, a.vlan) {
            (None, _) => {
                return Err(err(
                    ErrorKind::InUse,
                    &f("interface"),
                    format!("{switch} {} is already bound untagged by {who}", a.interface),
                ))
            }
            (Some(_), None) => {
                return Err(err(
                    ErrorKind::InUse,
                    &f("interface"),
                    format!(
                        "{switch} {} carries VLANs (one is bound by {who}); it cannot also be bound untagged",
                        a.interface
                    ),
                ))
            }
            (Some(x), Some(y)) if x == y => {
                return Err(err(
                    ErrorKind::InUse,
                    &f("vlan"),
                    format!("VLAN {y} on {switch} {} is already used by {who}", a.interface),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn valid_asn(asn: u32) -> bool {
    // 0 and 65535/4294967295 are reserved, 23456 is AS_TRANS (RFC 6793).
    !matches!(asn, 0 | 23456 | 65535 | 4_294_967_295)
}

pub fn validate_dc(intent: &Intent, d: &crate::model::DirectConnect) -> Result {
    validate_name("dc.tenant", &d.tenant)?;
    validate_name("dc.vpc", &d.vpc)?;
    validate_name("dc.name", &d.name)?;
    let vpc = vpc_of(intent, "dc.vpc", &d.tenant, &d.vpc)?;
    if intent.direct_connects.contains_key(&d.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "dc.name",
            format!(
                "Direct Connect {:?} already exists in VPC {:?}",
                d.name, d.vpc
            ),
        ));
    }
    validate_attachment(intent, "dc", &d.switch, &d.attachment())?;
    validate_dc_asns(d)?;
    validate_dc_segment(intent, vpc, d)?;
    validate_dc_accept(d)
}

/// Both ASNs usable, and different (the session is eBGP).
fn validate_dc_asns(d: &crate::model::DirectConnect) -> Result {
    for (field, asn) in [
        ("dc.customer_asn", d.customer_asn),
        ("dc.local_asn", d.local_asn),
    ] {
        if !valid_asn(asn) {
            return Err(err(
                ErrorKind::Invalid,
                field,
                format!("{asn} is not a usable ASN (0, 23456, 65535 and 4294967295 are reserved)"),
            ));
        }
    }
    if d.customer_asn == d.local_asn {
        return Err(err(
            ErrorKind::Invalid,
            "dc.customer_asn",
            format!(
                "{} is also the local ASN: the session is eBGP",
                d.customer_asn
            ),
        ));
    }
    Ok(())
}

/// The point-to-point segment: /24 to /31, both ends distinct hosts of it, overlapping
/// neither the VPC nor another Direct Connect of the VPC.
fn validate_dc_segment(intent: &Intent, vpc: &Vpc, d: &crate::model::DirectConnect) -> Result {
    let net = d.local_address.trunc();
    if d.local_address.prefix_len() > 31 || d.local_address.prefix_len() < 24 {
        return Err(err(
            ErrorKind::Invalid,
            "dc.local_address",
            format!(
                "{} must be an address with a /24 to /31 prefix",
                d.local_address
            ),
        ));
    }
    if d.local_address.prefix_len() < 31
        && (d.local_address.addr() == net.network() || d.local_address.addr() == net.broadcast())
    {
        return Err(err(
            ErrorKind::Invalid,
            "dc.local_address",
            format!("{} is not a host address of {net}", d.local_address.addr()),
        ));
    }
    if !net.contains(&d.peer_address)
        || d.peer_address == d.local_address.addr()
        || (d.local_address.prefix_len() < 31
            && (d.peer_address == net.network() || d.peer_address == net.broadcast()))
    {
        return Err(err(
            ErrorKind::Invalid,
            "dc.peer_address",
            format!("{} is not another host address of {net}", d.peer_address),
        ));
    }
    if overlaps(net, vpc.cidr) {
        return Err(err(
            ErrorKind::Invalid,
            "dc.local_address",
            format!("{net} overlaps the VPC's CIDR {}", vpc.cidr),
        ));
    }
    if let Some(o) = intent
        .direct_connects
        .values()
        .find(|o| o.tenant == d.tenant && o.vpc == d.vpc && overlaps(o.local_address.trunc(), net))
    {
        return Err(err(
            ErrorKind::Invalid,
            "dc.local_address",
            format!("{net} overlaps the segment of Direct Connect {:?}", o.name),
        ));
    }
    Ok(())
}

/// The accepted prefixes: at least one, network addresses, len <= ge <= le <= 32.
fn validate_dc_accept(d: &crate::model::DirectConnect) -> Result {
    if d.accept.is_empty() {
        return Err(err(
            ErrorKind::Invalid,
            "dc.accept",
            "at least one accepted prefix is required (e.g. 192.168.0.0/16 le 24)",
        ));
    }
    for (i, a) in d.accept.iter().enumerate() {
        let field = format!("dc.accept[{i}]");
        if a.prefix.network() != a.prefix.addr() {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!(
                    "{} has host bits set (did you mean {}?)",
                    a.prefix,
                    a.prefix.trunc()
                ),
            ));
        }
        let len = a.prefix.prefix_len();
        let ge = a.ge.unwrap_or(len);
        let le = a.le.unwrap_or(32);
        if a.ge.is_some_and(|g| g < len || g > 32)
            || a.le.is_some_and(|l| l < len || l > 32)
            || ge > le
        {
            return Err(err(
                ErrorKind::Invalid,
                &field,
                format!("{a}: need {len} <= ge <= le <= 32"),
            ));
        }
    }
    Ok(())
}

pub fn check_delete_dc(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    vpc_child_exists(
        &intent.direct_connects,
        "dc.name",
        "Direct Connect",
        tenant,
        vpc,
        name,
    )
}

pub fn check_delete_lb(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    vpc_child_exists(
        &intent.load_balancers,
        "lb.name",
        "load balancer",
        tenant,
        vpc,
        name,
    )
}

pub fn validate_route(intent: &Intent, r: &StaticRoute) -> Result {
    validate_route_as(intent, r, false)
}

/// An in-place update of a route (its prefix or next hop): it must exist; validated as a
/// create, the route itself not counting as a duplicate prefix.
pub fn validate_route_update(intent: &Intent, r: &StaticRoute) -> Result {
    if !intent.routes.contains_key(&r.key()) {
        return Err(err(
            ErrorKind::NotFound,
            "route.name",
            format!("route {:?} does not exist in VPC {:?}", r.name, r.vpc),
        ));
    }
    validate_route_as(intent, r, true)
}

fn validate_route_as(intent: &Intent, r: &StaticRoute, replacing: bool) -> Result {
    validate_name("route.tenant", &r.tenant)?;
    validate_name("route.vpc", &r.vpc)?;
    validate_name("route.name", &r.name)?;
    vpc_of(intent, "route.vpc", &r.tenant, &r.vpc)?;
    if !replacing && intent.routes.contains_key(&r.key()) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "route.name",
            format!("route {:?} already exists in VPC {:?}", r.name, r.vpc),
        ));
    }
    if r.prefix.network() != r.prefix.addr() {
        return Err(err(
            ErrorKind::Invalid,
            "route.prefix",
            format!("{} has host bits set", r.prefix),
        ));
    }
    validate_route_nexthop(intent, r)?;
    if let Some(o) = intent.routes.values().find(|o| {
        o.tenant == r.tenant && o.vpc == r.vpc && o.prefix == r.prefix && o.key() != r.key()
    }) {
        return Err(err(
            ErrorKind::AlreadyExists,
            "route.prefix",
            format!("{} is already routed by {:?}", r.prefix, o.name),
        ));
    }
    Ok(())
}

/// The next hop: of the prefix's family, and a host of one of the VPC's tiers (an IPv6 one a
/// host of a dual-stack tier's /64, neither `::` nor the router's `::1`), as the router only
/// reaches hosts on its tiers.
fn validate_route_nexthop(intent: &Intent, r: &StaticRoute) -> Result {
    let (v4, v6) = match (r.prefix, r.nexthop) {
        (IpNet::V4(_), IpAddr::V4(nh)) => (Some(nh), None),
        (IpNet::V6(_), IpAddr::V6(nh)) => (None, Some(nh)),
        _ => {
            return Err(err(
                ErrorKind::Invalid,
                "route.nexthop",
                format!(
                    "next hop {} and prefix {} are of different address families",
                    r.nexthop, r.prefix
                ),
            ))
        }
    };
    if v6.is_some() && !vpc_has_ipv6(intent, &r.tenant, &r.vpc) {
        return Err(err(
            ErrorKind::Invalid,
            "route.prefix",
            format!(
                "{} is IPv6 but VPC {:?} has no dual-stack tier (network.ipv6_prefix)",
                r.prefix, r.vpc
            ),
        ));
    }
    let in_tier = match (v4, v6) {
        (Some(nh), _) => in_some_tier(intent, &r.tenant, &r.vpc, nh),
        (_, Some(nh)) => in_some_tier6(intent, &r.tenant, &r.vpc, nh),
        _ => false,
    };
    if !in_tier {
        return Err(err(
            ErrorKind::Invalid,
            "route.nexthop",
            format!(
                "{} is not a host address of any tier of VPC {:?}",
                r.nexthop, r.vpc
            ),
        ));
    }
    Ok(())
}

fn vpc_has_ipv6(intent: &Intent, tenant: &str, vpc: &str) -> bool {
    intent
        .networks
        .values()
        .any(|n| n.tenant == tenant && n.vpc == vpc && n.ipv6_prefix.is_some())
}

pub fn check_delete_pool(intent: &Intent, name: &str) -> Result {
    let pool = intent.pools.get(name).ok_or_else(|| {
        err(
            ErrorKind::NotFound,
            "pool.name",
            format!("pool {name:?} does not exist"),
        )
    })?;
    // An IPv6 pool makes the ranges inside it routed: removing it under a VPC would silently
    // withdraw the VPC's addresses from the internet.
    if let Some((v, r)) = pool.v6().and_then(|p6| {
        intent
            .vpcs
            .values()
            .filter(|v| v.site == pool.site)
            .find_map(|v| {
                let r = v.ipv6_ranges.iter().find(|r| p6.contains(*r))?;
                Some((v, r))
            })
    }) {
        return Err(err(
            ErrorKind::InUse,
            "pool.name",
            format!(
                "pool {name:?} still routes {r} of VPC {}/{}",
                v.tenant, v.name
            ),
        ));
    }
    if let Some(l) = intent
        .load_balancers
        .values()
        .find(|l| pool.contains(&l.vip))
    {
        return Err(err(
            ErrorKind::InUse,
            "pool.name",
            format!(
                "pool {name:?} still has load balancer {}/{}/{}",
                l.tenant, l.vpc, l.name
            ),
        ));
    }
    if let Some(r) = intent
        .nat_rules
        .values()
        .find(|r| pool.contains4(&r.kind.public_ip()))
    {
        return Err(err(
            ErrorKind::InUse,
            "pool.name",
            format!(
                "pool {name:?} still has NAT rule {}/{}/{}",
                r.tenant, r.vpc, r.name
            ),
        ));
    }
    Ok(())
}

pub fn check_delete_nat(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    vpc_child_exists(&intent.nat_rules, "nat.name", "NAT rule", tenant, vpc, name)
}

pub fn check_delete_route(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    vpc_child_exists(&intent.routes, "route.name", "route", tenant, vpc, name)
}

pub fn check_delete_vpc(intent: &Intent, tenant: &str, vpc: &str) -> Result {
    if !intent.vpcs.contains_key(&VpcRef::new(tenant, vpc)) {
        return Err(err(
            ErrorKind::NotFound,
            "vpc.name",
            format!("VPC {vpc:?} does not exist in tenant {tenant:?}"),
        ));
    }
    // Children named by (tenant, vpc, name) keys, in the order the message reports them.
    let in_vpc = |k: &crate::event::VpcChildRef| k.tenant == tenant && k.vpc == vpc;
    let children = [
        ("network", intent.networks.keys().find(|k| in_vpc(k))),
        ("NAT rule", intent.nat_rules.keys().find(|k| in_vpc(k))),
        ("route", intent.routes.keys().find(|k| in_vpc(k))),
        ("ACL list", intent.acls.keys().find(|k| in_vpc(k))),
        (
            "load balancer",
            intent.load_balancers.keys().find(|k| in_vpc(k)),
        ),
        (
            "Direct Connect",
            intent.direct_connects.keys().find(|k| in_vpc(k)),
        ),
    ];
    if let Some((what, Some(k))) = children.into_iter().find(|(_, k)| k.is_some()) {
        return Err(err(
            ErrorKind::InUse,
            "vpc.name",
            format!("VPC {vpc:?} still has {what} {:?}", k.name),
        ));
    }
    Ok(())
}

pub fn check_delete_network(intent: &Intent, tenant: &str, vpc: &str, name: &str) -> Result {
    let key = VpcChildRef::new(tenant, vpc, name);
    if !intent.networks.contains_key(&key) {
        return Err(err(
            ErrorKind::NotFound,
            "network.name",
            format!("network {name:?} does not exist in VPC {vpc:?} of tenant {tenant:?}"),
        ));
    }
    if let Some(p) = intent.ports.values().find(|p| p.network_key() == key) {
        return Err(err(
            ErrorKind::InUse,
            "network.name",
            format!("network {name:?} still has port {:?}", p.name),
        ));
    }
    let net = &intent.networks[&key];
    let points_here = |ip: &Ipv4Addr| net.cidr.contains(ip);
    let route_here = |ip: &IpAddr| match ip {
        IpAddr::V4(ip) => points_here(ip),
        IpAddr::V6(ip) => net.ipv6_prefix.is_some_and(|p| p.contains(ip)),
    };
    if let Some(r) = intent.nat_rules.values().find(|r| {
        r.tenant == tenant
            && r.vpc == vpc
            && match &r.kind {
                NatKind::PortForward { private_ip, .. } | NatKind::StaticNat { private_ip, .. } => {
                    points_here(private_ip)
                }
                NatKind::Snat { .. } => false,
            }
    }) {
        return Err(err(
            ErrorKind::InUse,
            "network.name",
            format!("network {name:?} is the target of NAT rule {:?}", r.name),
        ));
    }
    if let Some(r) = intent
        .routes
        .values()
        .find(|r| r.tenant == tenant && r.vpc == vpc && route_here(&r.nexthop))
    {
        return Err(err(
            ErrorKind::InUse,
            "network.name",
            format!("network {name:?} holds the next hop of route {:?}", r.name),
        ));
    }
    if let Some(a) = intent
        .acls
        .values()
        .find(|a| a.tenant == tenant && a.vpc == vpc && a.tiers.iter().any(|t| t == name))
    {
        return Err(err(
            ErrorKind::InUse,
            "network.name",
            format!("network {name:?} is attached to ACL list {:?}", a.name),
        ));
    }
    if let Some(l) = intent.load_balancers.values().find(|l| {
        l.tenant == tenant && l.vpc == vpc && l.backends.iter().any(|b| route_here(&b.ip))
    }) {
        return Err(err(
            ErrorKind::InUse,
            "network.name",
            format!(
                "network {name:?} holds backends of load balancer {:?}",
                l.name
            ),
        ));
    }
    Ok(())
}

pub fn check_delete_port(intent: &Intent, tenant: &str, name: &str) -> Result {
    if !intent.ports.contains_key(&PortRef::new(tenant, name)) {
        return Err(err(
            ErrorKind::NotFound,
            "port.name",
            format!("port {name:?} does not exist in tenant {tenant:?}"),
        ));
    }
    Ok(())
}

pub fn check_delete_node(intent: &Intent, name: &str) -> Result {
    if !intent.nodes.contains_key(name) {
        return Err(err(
            ErrorKind::NotFound,
            "node.name",
            format!("node {name:?} is not in the inventory"),
        ));
    }
    if let Some(p) = intent.ports.values().find(|p| p.node == name) {
        return Err(err(
            ErrorKind::InUse,
            "node.name",
            format!("node {name:?} still hosts port {}/{}", p.tenant, p.name),
        ));
    }
    if let Some(d) = intent.direct_connects.values().find(|d| d.switch == name) {
        return Err(err(
            ErrorKind::InUse,
            "node.name",
            format!(
                "switch {name:?} still carries Direct Connect {}/{}/{}",
                d.tenant, d.vpc, d.name
            ),
        ));
    }
    // A gateway holding VPCs (primary or standby) is drained first: removing it while it
    // serves would leave its agent forwarding from its cache with nobody to follow.
    let holds = |p: &crate::model::Placement| {
        p.primary.as_deref() == Some(name) || p.standby.as_deref() == Some(name)
    };
    if let Some((k, _)) = intent.placements.iter().find(|(_, p)| holds(p)) {
        return Err(err(
            ErrorKind::InUse,
            "node.name",
            format!(
                "gateway {name:?} still holds VPC {}/{}: drain it first (sfctl gateway drain)",
                k.tenant, k.vpc
            ),
        ));
    }
    Ok(())
}

/// [`overlaps`] for IPv6 prefixes.
pub fn overlaps_v6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether two prefixes share an address (one contains the other's network address); host
/// bits of either are ignored.
pub fn overlaps(a: ipnet::Ipv4Net, b: ipnet::Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A usable host address of `net`: inside it, and neither its network nor broadcast address.
pub fn host_in(net: ipnet::Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The default gateway of a tier: its first host address.
pub fn default_gateway(net: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// NotFound naming `field` unless (tenant, vpc, name) is a key of `map`.
fn vpc_child_exists<T>(
    map: &std::collections::BTreeMap<crate::event::VpcChildRef, T>,
    field: &str,
    what: &str,
    tenant: &str,
    vpc: &str,
    name: &str,
) -> Result {
    if map.contains_key(&VpcChildRef::new(tenant, vpc, name)) {
        return Ok(());
    }
    Err(err(
        ErrorKind::NotFound,
        field,
        format!("{what} {name:?} does not exist in VPC {vpc:?} of tenant {tenant:?}"),
    ))
}
