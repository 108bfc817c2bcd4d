//! What a gateway (SoftGate) receives beyond its underlay: the router of every VPC placed on
//! it, as primary or as warm standby (tiers, NAT, routes, load balancers, Direct Connect
//! peerings), an L2 network per tier and hand-off segment, and what it may announce (the
//! site's pools and the VPC anchors, as host routes its failover controller installs). A
//! dual-stack VPC's router also has its IPv6 side (`vpc6/<id>`).
//!
//! Inputs: placements naming the gateway, and everything of those VPCs (the VPC, its
//! networks, ACL lists, NAT rules, routes, load balancers, Direct Connects); public pools (an
//! LB VIP is public when a pool holds it, and the underlay blackholes the site's pools).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::{
    network_key, vpc_mac, vpc_router_key, DesiredObject, DirectConnectPeering, LbBackend,
    LoadBalancer as DesiredLb, NodeDesired, PortForward, RouterRole, RouterRoute, RouterRoute6,
    RouterTier, RouterTier6, StaticNat, VpcRouter, VpcRouter6, ANCHOR_RANGE,
};
use crate::desired::{vpc_link_local, vpc_router6_key};
use crate::event::ObjectRef;
use crate::event::{VpcChildRef, VpcRef};
use crate::model::{Intent, NatKind, NodeRole};

use super::{dc_segment, of_role, of_vpc, tier_acl, tier_network, underlay_mut};

/// Adds the routers of the VPCs placed on `node` to `out`, with their L2 networks, and sets
/// what its underlay may announce and watch with BFD.
pub(super) fn compile(intent: &Intent, node: &str, out: &mut NodeDesired) {
    let mut placed_ranges6: BTreeSet<ipnet::Ipv6Net> = BTreeSet::new();
    for (vpc_key, role) in placed_vpcs(intent, node) {
        if let Some(v) = intent.vpcs.get(&vpc_key) {
            placed_ranges6.extend(intent.routed_ipv6_ranges(v));
        }
        let mut router = vpc_router(intent, &vpc_key);
        router.role = role;
        for dc in &router.direct_connects {
            // The hand-off segment reaches the router like a tier does.
            let segment = dc_segment(&vpc_key.tenant, &vpc_key.vpc, &dc.name, dc.vni, dc.local);
            out.objects
                .insert(network_key(dc.vni), DesiredObject::L2Network(segment));
        }
        for tier in &router.tiers {
            let net =
                &intent.networks[&VpcChildRef::new(&vpc_key.tenant, &vpc_key.vpc, &tier.name)];
            // No members and no ACL: the router enforces north-south ACLs itself
            // (RouterTier.acl).
            out.objects.insert(
                network_key(net.vni),
                DesiredObject::L2Network(tier_network(net)),
            );
        }
        if let Some(r6) = vpc_router6(intent, &vpc_key, role) {
            out.objects
                .insert(vpc_router6_key(r6.id), DesiredObject::VpcRouter6(r6));
        }
        out.objects
            .insert(vpc_router_key(router.id), DesiredObject::VpcRouter(router));
    }
    let u = underlay_mut(out);
    let mut redistribute = u.blackhole.clone();
    redistribute.push(ANCHOR_RANGE);
    u.redistribute_host_routes = redistribute;
    u.redistribute_host_routes6 = site_ipv6_pools(intent, node);
    // A pool that is a whole VPC range is routed into that VPC's router while it is active
    // here, with the pool's own prefix: a blackhole of that prefix would take its place (and
    // be announced with it). The other pools are blackholed.
    // Only the VPCs placed here matter (their change recompiles this gateway): another
    // gateway's VPC is never routed from here.
    u.blackhole6.retain(|p| !placed_ranges6.contains(p));
    u.ipv6_unicast = !u.redistribute_host_routes6.is_empty();
    u.bfd_neighbors = u.neighbors.clone();
}

/// The IPv6 pools of `node`'s site, sorted: what a gateway may announce in IPv6 (any prefix
/// inside), whichever VPCs it serves at the moment.
pub(super) fn site_ipv6_pools(intent: &Intent, node: &str) -> Vec<ipnet::Ipv6Net> {
    let Some(n) = intent.nodes.get(node) else {
        return Vec::new();
    };
    let mut pools: Vec<_> = intent.ipv6_pools(&n.site).map(|p| p.trunc()).collect();
    pools.sort();
    pools.dedup();
    pools
}

/// Gateways whose desired state may depend on `change` (evaluated on one side of it).
pub fn affected_by(intent: &Intent, change: &ObjectRef) -> BTreeSet<String> {
    let nodes: BTreeSet<String> = match change {
        ObjectRef::Vpc(v) | ObjectRef::Placement(v) => placed_on(intent, v),
        ObjectRef::Network(c)
        | ObjectRef::Nat(c)
        | ObjectRef::Route(c)
        | ObjectRef::Acl(c)
        | ObjectRef::LoadBalancer(c)
        | ObjectRef::DirectConnect(c) => placed_on(intent, &c.vpc_ref()),
        ObjectRef::Pool(_) => intent.nodes.keys().cloned().collect(),
        // The gateways of each VPC the report names (its standby builds over it).
        ObjectRef::LbDown(node) => intent
            .lb_down
            .get(node)
            .into_iter()
            .flat_map(|r| r.keys())
            .flat_map(|lb| placed_on(intent, &lb.vpc_ref()))
            .collect(),
        _ => BTreeSet::new(),
    };
    of_role(intent, nodes, NodeRole::Gateway)
}

/// The gateways a VPC is placed on (primary and standby).
fn placed_on(intent: &Intent, key: &VpcRef) -> BTreeSet<String> {
    intent
        .placements
        .get(key)
        .map(|p| p.primary.iter().chain(p.standby.iter()).cloned().collect())
        .unwrap_or_default()
}

/// The VNIs of the L2 networks `node` carries: every tier and Direct Connect hand-off segment
/// of the VPCs placed on it (what [`compile`] inserts).
pub fn carried_vnis(intent: &Intent, node: &str) -> BTreeSet<u32> {
    let mut vnis = BTreeSet::new();
    for (key, _) in placed_vpcs(intent, node) {
        vnis.extend(of_vpc(&intent.networks, &key.tenant, &key.vpc).map(|n| n.vni));
        vnis.extend(of_vpc(&intent.direct_connects, &key.tenant, &key.vpc).map(|d| d.vni));
    }
    vnis
}

/// VPCs placed on `node`, with its role for each.
pub fn placed_vpcs(intent: &Intent, node: &str) -> Vec<(VpcRef, RouterRole)> {
    intent
        .placements
        .iter()
        .filter(|(k, _)| intent.vpcs.contains_key(*k))
        .filter_map(|(k, p)| {
            if p.primary.as_deref() == Some(node) {
                Some((k.clone(), RouterRole::Primary))
            } else if p.standby.as_deref() == Some(node) {
                Some((k.clone(), RouterRole::Standby))
            } else {
                None
            }
        })
        .collect()
}

/// The IPv6 side of a VPC's router: its dual-stack tiers (each /64 and its `::1`), the
/// link-local derived from the VPC's virtual MAC, and the ranges to announce. None for an
/// IPv4-only VPC.
pub fn vpc_router6(intent: &Intent, key: &VpcRef, role: RouterRole) -> Option<VpcRouter6> {
    let vpc = &intent.vpcs[key];
    let mut tiers: Vec<RouterTier6> = of_vpc(&intent.networks, &key.tenant, &key.vpc)
        .filter_map(|n| {
            Some(RouterTier6 {
                name: n.name.clone(),
                vni: n.vni,
                prefix: n.ipv6_prefix?,
                gateway: n.ipv6_gateway()?,
            })
        })
        .collect();
    let routes = routes6(intent, key);
    let load_balancers = load_balancers(intent, key, true);
    if tiers.is_empty()
        && vpc.ipv6_ranges.is_empty()
        && routes.is_empty()
        && load_balancers.is_empty()
    {
        return None;
    }
    tiers.sort_by_key(|t| t.vni);
    Some(VpcRouter6 {
        tenant: vpc.tenant.clone(),
        vpc: vpc.name.clone(),
        id: vpc.id,
        role,
        link_local: vpc_link_local(vpc.id),
        tiers,
        // Only routed ranges (inside a site IPv6 pool) leave the VPC; ULA and other
        // VPC-internal ranges may overlap other VPCs' and are never announced.
        announce: intent.routed_ipv6_ranges(vpc),
        routes,
        load_balancers,
    })
}

/// The VPC's load balancers of one family (IPv6 ones for the router's IPv6 side), in name
/// order. A VIP is public when one of the site's pools holds it: an IPv4 pool, or an IPv6
/// pool outside the VPC's own ranges (a VIP inside a routed range of the VPC is reached
/// through that range's announcement).
fn load_balancers(intent: &Intent, key: &VpcRef, ipv6: bool) -> Vec<DesiredLb> {
    let vpc = &intent.vpcs[key];
    of_vpc(&intent.load_balancers, &key.tenant, &key.vpc)
        .filter(|lb| lb.vip.is_ipv6() == ipv6)
        .map(|lb| {
            let mut backends: Vec<LbBackend> = lb
                .backends
                .iter()
                .map(|b| LbBackend {
                    // "ip:port", "[ip]:port" for IPv6 (SocketAddr's form): IPv4 names, and
                    // so every IPv4 Maglev table, are what they were.
                    name: std::net::SocketAddr::new(b.ip, b.port).to_string(),
                    ip: b.ip,
                    port: b.port,
                    weight: b.weight,
                })
                .collect();
            backends.sort_by(|a, b| a.name.cmp(&b.name));
            let public = match lb.vip {
                IpAddr::V4(v) => intent.pools.values().any(|p| p.contains4(&v)),
                IpAddr::V6(v) => {
                    intent.ipv6_pools(&vpc.site).any(|p| p.contains(&v))
                        && !vpc.ipv6_ranges.iter().any(|r| r.contains(&v))
                }
            };
            let peer_down = peer_down(intent, &lb.key());
            DesiredLb {
                peer_down,
                name: lb.name.clone(),
                vip: lb.vip,
                protocol: lb.protocol,
                port: lb.port,
                backends,
                health: lb.health.clone(),
                table_size: lb.table_size,
                public,
                source_cidrs: lb.source_cidrs.clone(),
            }
        })
        .collect()
}

/// The backends of load balancer `lb` that the gateway serving its VPC reports DOWN (two
/// while a failover settles: either's word counts; a drained gateway's too, until it stops
/// serving). `None` when no gateway reports it (none serves the VPC at the moment): the
/// standby keeps the word it had, rather than forgetting a dead backend while it takes over.
fn peer_down(intent: &Intent, lb: &VpcChildRef) -> Option<BTreeSet<String>> {
    let mut reports = intent.lb_down.values().filter_map(|r| r.get(lb)).peekable();
    reports.peek()?;
    Some(reports.flatten().cloned().collect())
}

/// The VPC's IPv6 static routes, sorted (the IPv4 ones go to the IPv4 router).
fn routes6(intent: &Intent, key: &VpcRef) -> Vec<RouterRoute6> {
    let mut routes: Vec<RouterRoute6> = of_vpc(&intent.routes, &key.tenant, &key.vpc)
        .filter_map(|r| match (r.prefix, r.nexthop) {
            (IpNet::V6(prefix), IpAddr::V6(nexthop)) => Some(RouterRoute6 { prefix, nexthop }),
            _ => None,
        })
        .collect();
    routes.sort();
    routes
}

/// The router of a VPC: its tiers, routes and NAT, in a deterministic order.
pub fn vpc_router(intent: &Intent, key: &VpcRef) -> VpcRouter {
    let vpc = &intent.vpcs[key];
    // Every object kind below is keyed by (tenant, vpc, name): one key range per VPC, never a
    // scan of the fabric's objects (a gateway compiles every VPC placed on it).
    let (tenant, vpc_name) = (key.tenant.as_str(), key.vpc.as_str());
    let mut tiers: Vec<RouterTier> = of_vpc(&intent.networks, tenant, vpc_name)
        .map(|n| RouterTier {
            name: n.name.clone(),
            vni: n.vni,
            cidr: n.cidr,
            gateway: n.gateway,
            acl: tier_acl(intent, &n.tenant, &n.vpc, &n.name),
        })
        .collect();
    tiers.sort_by_key(|t| t.vni);
    let routes = of_vpc(&intent.routes, tenant, vpc_name)
        .filter_map(|r| match (r.prefix, r.nexthop) {
            (IpNet::V4(prefix), IpAddr::V4(nexthop)) => Some(RouterRoute { prefix, nexthop }),
            // IPv6 routes belong to the router's IPv6 side (`routes6`).
            _ => None,
        })
        .collect();
    let mut router = VpcRouter {
        tenant: vpc.tenant.clone(),
        vpc: vpc.name.clone(),
        id: vpc.id,
        cidr: vpc.cidr,
        mac: vpc_mac(vpc.id),
        role: RouterRole::Primary,
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
    for dc in of_vpc(&intent.direct_connects, tenant, vpc_name) {
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
    router.load_balancers = load_balancers(intent, key, false);
    for r in of_vpc(&intent.nat_rules, tenant, vpc_name) {
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
