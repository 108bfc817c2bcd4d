//! The IPv6 side of a VPC router's plan (issue 21): from the router's [`VpcRouter6`] (None
//! for an IPv4-only VPC) and what was observed, the [`Action`]s that give the router
//! namespace IPv6 forwarding, each dual-stack tier's router end its `::1/64` and the VPC's
//! stable link-local, the transit link fixed link-locals with the namespace's default route,
//! and, only while the router is active, a host route per announced range into the
//! namespace; before all of it, the router's IPv6 firewall ([`crate::nft6`]), removed when
//! the VPC loses its IPv6 side. Planned after the IPv4 plan of the same pass (whose links
//! it addresses); an IPv4-only router with no IPv6 state observed plans nothing here.
//!
//! Every link of ours is created with `addrgenmode none` ([`crate::exec::mark_owned`]), so
//! the kernel never adds an EUI-64 link-local from a random MAC: the only link-locals are
//! the ones planned here, and the planner owns every IPv6 address on the router's links.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::Ipv6Net;
use sf_core::desired::{VpcRouter, VpcRouter6};

use crate::names::{tier_ns, transit_host, TRANSIT_NS};
use crate::plan::{pairs, Action, HostState, NsState};
use crate::{nft, nft6};

/// The host end of every transit link (`gx<id>`): the VPC namespace's IPv6 next hop.
pub const TRANSIT_HOST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The router end of every transit link: the host's next hop for the announced ranges.
pub const TRANSIT_NS_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// A non-connected IPv6 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route6 {
    pub dst: Ipv6Net,
    pub via: Option<Ipv6Addr>,
    pub dev: Option<String>,
}

/// A link-local address as an interface address (/64).
fn ll(a: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new(a, 64).expect("/64")
}

/// The IPv6 addresses each router-end link of `r` must carry (every pair's peer: an
/// IPv4-only tier or a Direct Connect none).
pub fn ns_addrs(r: &VpcRouter, r6: Option<&VpcRouter6>) -> BTreeMap<String, Vec<Ipv6Net>> {
    let mut want: BTreeMap<String, Vec<Ipv6Net>> =
        pairs(r).into_iter().map(|p| (p.peer, vec![])).collect();
    let Some(r6) = r6 else {
        return want;
    };
    for t in &r6.tiers {
        // Only tiers the IPv4 router has (a link to address); the compiler makes both.
        if let Some(v) = want.get_mut(&tier_ns(t.vni)) {
            let gw = Ipv6Net::new(t.gateway, 64).expect("/64");
            *v = vec![gw, ll(r6.link_local)];
        }
    }
    want.insert(TRANSIT_NS.into(), vec![ll(TRANSIT_NS_LL)]);
    want
}

/// The namespace's IPv6 routes: the default via the host end of the transit link, and each
/// static route via its next hop on the tier whose /64 holds it (named, so the observed
/// route, which the kernel reports with its link, compares equal). Sorted, one per prefix:
/// a static `::/0` replaces the default, as in IPv4 ([`crate::plan::ns_routes`]).
pub fn ns_routes6(r6: Option<&VpcRouter6>) -> Vec<Route6> {
    let Some(r6) = r6 else {
        return vec![];
    };
    let mut v = vec![Route6 {
        dst: "::/0".parse().expect("default"),
        via: Some(TRANSIT_HOST_LL),
        dev: Some(TRANSIT_NS.into()),
    }];
    v.extend(r6.routes.iter().filter_map(|rt| {
        let tier = r6.tiers.iter().find(|t| t.prefix.contains(&rt.nexthop))?;
        Some(Route6 {
            dst: rt.prefix.trunc(),
            via: Some(rt.nexthop),
            dev: Some(tier_ns(tier.vni)),
        })
    }));
    v.sort();
    v.dedup_by(|a, b| a.dst == b.dst);
    v
}

/// Unique local addresses (RFC 4193): never routed beyond a site.
const ULA: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
    Ok(n) => n,
    Err(_) => panic!("fc00::/7"),
};

/// The host routes of an active router: each announced range into its namespace, and each
/// public IPv6 VIP (a /128 from a site IPv6 pool, announced like the ranges by
/// `SF-HOST-ROUTES6`, moved by the failover controller with them). A ULA
/// range is never routed out of its VPC, even if announced: VPCs may hold the same one (the
/// demo tenant does), and one host route per VPC for the same prefix would hand one VPC's
/// traffic to another. Deciding which ranges are announced (those inside a site pool) is
/// the compiler's; this is the gateway's own guard.
pub fn host_routes6(r6: &VpcRouter6) -> Vec<Route6> {
    let mut v: Vec<Route6> = r6
        .announce
        .iter()
        .filter(|n| !ULA.contains(*n))
        .copied()
        .chain(
            nft6::load_balancers6(r6)
                .into_iter()
                .filter_map(|lb| match lb.vip {
                    IpAddr::V6(v) if lb.public && !ULA.contains(&v) => {
                        Some(Ipv6Net::new(v, 128).expect("/128"))
                    }
                    _ => None,
                }),
        )
        .map(|n| Route6 {
            dst: n.trunc(),
            via: Some(TRANSIT_NS_LL),
            dev: Some(transit_host(r6.id)),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Problems that keep the IPv6 side from being built (the IPv4 router is built anyway).
pub fn validate6(r: &VpcRouter, r6: &VpcRouter6) -> Vec<String> {
    let mut e = Vec::new();
    if r6.id != r.id {
        e.push(format!("vpc {}: IPv6 side names router {}", r.id, r6.id));
    }
    for t in &r6.tiers {
        if t.prefix.prefix_len() != 64 || !t.prefix.contains(&t.gateway) {
            e.push(format!(
                "vpc {}: tier {} IPv6 gateway {} not in a /64 {}",
                r.id, t.vni, t.gateway, t.prefix
            ));
        }
        if !r.tiers.iter().any(|x| x.vni == t.vni) {
            e.push(format!(
                "vpc {}: IPv6 tier {} has no IPv4 tier",
                r.id, t.vni
            ));
        }
    }
    for rt in &r6.routes {
        if !r6.tiers.iter().any(|t| t.prefix.contains(&rt.nexthop)) {
            e.push(format!(
                "vpc {}: route {} next hop {} is on no IPv6 tier",
                r.id, rt.prefix, rt.nexthop
            ));
        }
    }
    e
}

/// Plans the IPv6 side of router `r` (see the module docs). `ns` is the observed namespace
/// (None: being created by this pass's IPv4 plan); `active` as for the IPv4 plan; `lbs6`
/// the Maglev tables to install, one per [`nft6::load_balancers6`] entry.
pub fn plan_router6(
    r: &VpcRouter,
    r6: Option<&VpcRouter6>,
    host: &HostState,
    ns: Option<&NsState>,
    ns_name: &str,
    active: bool,
    lbs6: &[Arc<nft::LbTable>],
) -> (Vec<Action>, Vec<String>) {
    let mut errors = r6.map(|x| validate6(r, x)).unwrap_or_default();
    let n_lbs = r6.map(|x| nft6::load_balancers6(x).len()).unwrap_or(0);
    if lbs6.len() != n_lbs {
        errors.push(format!(
            "vpc {}: {} Maglev tables for {n_lbs} IPv6 load balancers",
            r.id,
            lbs6.len()
        ));
    }
    if !errors.is_empty() {
        return (vec![], errors);
    }
    let empty = NsState::default();
    let st = ns.unwrap_or(&empty);
    let mut a = Vec::new();
    // The firewall first: nothing is forwarded in IPv6, nor routed in, before it holds.
    nft6_actions(r, r6, st, ns_name, lbs6, &mut a);
    if r6.is_some() && !st.forwarding6 {
        a.push(Action::SetForwarding6 {
            ns: Some(ns_name.into()),
        });
    }
    // The host end of the transit link: its link-local is the namespace's next hop.
    let host_want = r6.map(|_| vec![ll(TRANSIT_HOST_LL)]).unwrap_or_default();
    let gx = transit_host(r.id);
    addrs6(None, &gx, host_addrs(host, &gx), &host_want, &mut a);
    for (dev, want) in ns_addrs(r, r6) {
        let have = st.addrs6.get(&dev).map(Vec::as_slice).unwrap_or(&[]);
        addrs6(Some(ns_name), &dev, have, &want, &mut a);
    }
    routes6(Some(ns_name), &st.routes6, &ns_routes6(r6), None, &mut a);
    let host_want = match (r6, active) {
        (Some(x), true) => host_routes6(x),
        _ => vec![],
    };
    routes6(None, &host.routes6, &host_want, Some(&gx), &mut a);
    (a, errors)
}

/// The IPv6 table and its load balancer maps, as [`crate::plan`] does the IPv4 ones: the
/// whole table (maps filled in the same transaction) when its digest differs, else only the
/// maps whose contents changed, in those only the changed slots when the installed table is
/// known ([`nft::map_load`]).
fn nft6_actions(
    r: &VpcRouter,
    r6: Option<&VpcRouter6>,
    st: &NsState,
    ns_name: &str,
    lbs6: &[Arc<nft::LbTable>],
    a: &mut Vec<Action>,
) {
    let table = r6.map(|x| nft6::render_nft6(r, x));
    let table_digest = table.as_deref().and_then(nft::digest_of);
    let digests: BTreeMap<usize, String> = lbs6
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t.digest.clone()))
        .collect();
    if table_digest != st.nft6_digest {
        a.push(Action::LoadNft6 {
            ns: ns_name.into(),
            table,
            lbs: nft::LbLoad {
                table_digest: table_digest.unwrap_or_default(),
                digests,
                maps: lbs6
                    .iter()
                    .map(|t| nft::MapLoad::Full(t.clone()))
                    .enumerate()
                    .collect(),
            },
        });
    } else if let (Some(r6), true) = (r6, st.lb6_digests != digests) {
        let maps = nft6::load_balancers6(r6)
            .into_iter()
            .zip(lbs6)
            .enumerate()
            .filter(|(i, (_, t))| st.lb6_digests.get(i) != Some(&t.digest))
            .map(|(i, (lb, t))| {
                let installed = st.lb6_digests.get(&i).map(String::as_str);
                (i, nft::map_load(lb, installed, t.clone()))
            })
            .collect();
        a.push(Action::LoadLbMaps6 {
            ns: ns_name.into(),
            lbs: nft::LbLoad {
                table_digest: table_digest.unwrap_or_default(),
                digests,
                maps,
            },
        });
    }
}

fn host_addrs<'a>(host: &'a HostState, dev: &str) -> &'a [Ipv6Net] {
    host.addrs6.get(dev).map(Vec::as_slice).unwrap_or(&[])
}

/// Converges one link's IPv6 addresses to exactly `want`.
fn addrs6(ns: Option<&str>, dev: &str, have: &[Ipv6Net], want: &[Ipv6Net], a: &mut Vec<Action>) {
    for w in want.iter().filter(|w| !have.contains(w)) {
        a.push(Action::AddAddr6 {
            ns: ns.map(str::to_string),
            dev: dev.into(),
            addr: *w,
        });
    }
    for h in have.iter().filter(|h| !want.contains(h)) {
        a.push(Action::DelAddr6 {
            ns: ns.map(str::to_string),
            dev: dev.into(),
            addr: *h,
        });
    }
}

/// Converges configured IPv6 routes to `want`; with `only_dev`, only routes through that
/// link are ours to delete (the host has routes of others).
fn routes6(
    ns: Option<&str>,
    have: &[Route6],
    want: &[Route6],
    only_dev: Option<&str>,
    a: &mut Vec<Action>,
) {
    for w in want.iter().filter(|w| !have.contains(w)) {
        a.push(Action::ReplaceRoute6 {
            ns: ns.map(str::to_string),
            route: w.clone(),
        });
    }
    let ours = |o: &&Route6| only_dev.is_none_or(|d| o.dev.as_deref() == Some(d));
    for o in have.iter().filter(ours) {
        if !want.iter().any(|w| w.dst == o.dst) {
            a.push(Action::DelRoute6 {
                ns: ns.map(str::to_string),
                route: o.clone(),
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::names::tier_host;
    use crate::plan::{apply_in_memory, plan_router};
    use sf_core::desired::{RouterRoute6, RouterTier6};

    const P: &str = "sfvpc-";

    pub fn router6(r: &VpcRouter) -> VpcRouter6 {
        VpcRouter6 {
            tenant: r.tenant.clone(),
            vpc: r.vpc.clone(),
            id: r.id,
            role: r.role,
            link_local: sf_core::desired::vpc_link_local(r.id),
            tiers: vec![RouterTier6 {
                name: "web".into(),
                vni: 1_000_001,
                prefix: "2001:db8:100:1::/64".parse().unwrap(),
                gateway: "2001:db8:100:1::1".parse().unwrap(),
            }],
            announce: vec!["2001:db8:100::/48".parse().unwrap()],
            routes: vec![],
            load_balancers: vec![],
        }
    }

    /// [`router6`] with a public IPv6 load balancer of three backends on the tier, TCP 80.
    pub fn lb6_example(r: &VpcRouter) -> VpcRouter6 {
        use sf_core::desired::{HealthCheck, L4Protocol, LbBackend, LoadBalancer};
        let mut x = router6(r);
        x.load_balancers.push(LoadBalancer {
            name: "web6".into(),
            vip: "2001:db8:1ff::80".parse().unwrap(),
            protocol: L4Protocol::Tcp,
            port: 80,
            backends: (1..=3)
                .map(|i| {
                    let ip: std::net::IpAddr = format!("2001:db8:100:1::2{i}").parse().unwrap();
                    LbBackend {
                        name: format!("[{ip}]:80"),
                        ip,
                        port: 80,
                        weight: 1,
                    }
                })
                .collect(),
            health: HealthCheck::Tcp {
                interval_ms: 1000,
                timeout_ms: 500,
                rise: 2,
                fall: 2,
            },
            table_size: 251,
            public: true,
            source_cidrs: vec![],
            peer_down: Default::default(),
        });
        x
    }

    /// An IPv6 load balancer: its maps are filled with the table, a health flip rewrites
    /// only the changed slots of its map, and a public VIP is routed (/128) into an active
    /// router only, beside the announced ranges.
    #[test]
    fn ipv6_load_balancers_fill_their_maps_and_route_the_vip_while_active() {
        let r = nft::example();
        let r6 = lb6_example(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        let all = converge(&r, Some(&r6), true, &mut h, &mut v);
        let load = all
            .iter()
            .find_map(|x| match x {
                Action::LoadNft6 {
                    table: Some(_),
                    lbs,
                    ..
                } => Some(lbs.clone()),
                _ => None,
            })
            .expect("the IPv6 table is loaded");
        assert_eq!(load.maps.len(), 1);
        assert!(matches!(load.maps[0].1, nft::MapLoad::Full(_)));
        assert!(nft6::lb_script6(&load).starts_with(
            "flush set ip6 stackfabric6 lbsum
"
        ));
        assert!(nft6::lb_script6(&load)
            .contains("add element ip6 stackfabric6 lb0 { 0 : 2001:db8:100:1::2"));
        let vip = Route6 {
            dst: "2001:db8:1ff::80/128".parse().unwrap(),
            via: Some(TRANSIT_NS_LL),
            dev: Some(transit_host(7)),
        };
        assert!(h.routes6.contains(&vip), "{:?}", h.routes6);
        assert!(host_routes6(&r6).contains(&vip));
        // An internal VIP is not routed into the host.
        let mut internal = r6.clone();
        internal.load_balancers[0].public = false;
        assert!(!host_routes6(&internal).contains(&vip));
        // A health flip: only the map, only the slots that change hands.
        let lb = &r6.load_balancers[0];
        let down = vec![std::sync::Arc::new(nft::lb_table(lb, &|b| {
            b.name != "[2001:db8:100:1::22]:80"
        }))];
        let (a, e) = plan_router6(&r, Some(&r6), &h, v.get(&7), "sfvpc-7", true, &down);
        assert!(e.is_empty(), "{e:?}");
        let [Action::LoadLbMaps6 { lbs, .. }] = &a[..] else {
            panic!("a health flip rewrites the map only: {a:?}")
        };
        let nft::MapLoad::Slots(_, slots) = &lbs.maps[0].1 else {
            panic!("whole map reloaded: {lbs:?}")
        };
        assert!(!slots.is_empty() && slots.len() * 2 < 251, "{lbs:?}");
        let script = nft6::lb_script6(lbs);
        assert!(
            script.contains("delete element ip6 stackfabric6 lb0 {"),
            "{script}"
        );
        assert!(!script.contains("2001:db8:100:1::22 "), "{script}");
        // Passive: the VIP's host route is withdrawn with the ranges.
        let b = plan(&r, Some(&r6), false, &h, &v);
        assert!(
            b.iter()
                .any(|x| matches!(x, Action::DelRoute6 { ns: None, route } if *route == vip)),
            "{b:?}"
        );
        // Tables that do not match the load balancers are an error, not a wrong map.
        let (_, e) = plan_router6(&r, Some(&r6), &h, v.get(&7), "sfvpc-7", true, &[]);
        assert!(!e.is_empty());
    }

    fn tables6(r6: Option<&VpcRouter6>) -> Vec<std::sync::Arc<nft::LbTable>> {
        r6.map(nft6::load_balancers6)
            .unwrap_or_default()
            .iter()
            .map(|lb| std::sync::Arc::new(nft::lb_table(lb, &|_| true)))
            .collect()
    }

    fn host() -> HostState {
        let mut h = HostState::default();
        h.links.push(sf_linux::links::Link {
            name: "brvx-1000001".into(),
            kind: Some("bridge".into()),
            up: true,
            ..Default::default()
        });
        h
    }

    fn tables(r: &VpcRouter) -> Vec<std::sync::Arc<nft::LbTable>> {
        nft::load_balancers(r)
            .iter()
            .map(|lb| std::sync::Arc::new(nft::lb_table(lb, &|_| true)))
            .collect()
    }

    /// Plans both sides of a router and applies them to the twin until nothing is left.
    fn converge(
        r: &VpcRouter,
        r6: Option<&VpcRouter6>,
        active: bool,
        h: &mut HostState,
        v: &mut BTreeMap<u32, NsState>,
    ) -> Vec<Action> {
        let all = plan(r, r6, active, h, v);
        apply_in_memory(P, h, v, &all);
        assert_eq!(
            plan(r, r6, active, h, v),
            vec![],
            "a second pass plans nothing"
        );
        all
    }

    fn plan(
        r: &VpcRouter,
        r6: Option<&VpcRouter6>,
        active: bool,
        h: &HostState,
        v: &BTreeMap<u32, NsState>,
    ) -> Vec<Action> {
        let (mut a, e) = plan_router(P, r, h, v.get(&r.id), &tables(r), active);
        assert!(e.is_empty(), "{e:?}");
        let (b, e) = plan_router6(r, r6, h, v.get(&r.id), "sfvpc-7", active, &tables6(r6));
        assert!(e.is_empty(), "{e:?}");
        a.extend(b);
        a
    }

    /// The host view `by_router` gives a router carries its IPv6 addresses and routes too:
    /// a built dual-stack router plans the same from it as from the whole host, active or not.
    #[test]
    fn a_routers_host_view_carries_its_ipv6_side() {
        let r = nft::example();
        let r6 = router6(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, Some(&r6), true, &mut h, &mut v);
        let views = h.by_router();
        assert!(!views[&7].routes6.is_empty() && !views[&7].addrs6.is_empty());
        for active in [true, false] {
            assert_eq!(
                plan(&r, Some(&r6), active, &views[&7], &v),
                plan(&r, Some(&r6), active, &h, &v),
                "active={active}"
            );
        }
        assert!(!plan(&r, Some(&r6), false, &views[&7], &v).is_empty());
    }

    #[test]
    fn an_ipv4_only_router_plans_no_ipv6() {
        let r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        let a = converge(&r, None, true, &mut h, &mut v);
        assert!(!a.iter().any(|x| matches!(
            x,
            Action::SetForwarding6 { .. }
                | Action::AddAddr6 { .. }
                | Action::ReplaceRoute6 { .. }
                | Action::LoadNft6 { .. }
        )));
        assert_eq!(v[&7].nft6_digest, None);
        let (a, _) = plan_router6(&r, None, &h, v.get(&7), "sfvpc-7", true, &[]);
        assert_eq!(a, vec![]);
    }

    #[test]
    fn a_dual_stack_router_gets_its_addresses_and_routes() {
        let r = nft::example();
        let r6 = router6(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, Some(&r6), true, &mut h, &mut v);
        let s = &v[&7];
        assert!(s.forwarding6);
        let ll = Ipv6Net::new(r6.link_local, 64).unwrap();
        assert_eq!(
            s.addrs6["t1000001"],
            vec!["2001:db8:100:1::1/64".parse().unwrap(), ll]
        );
        assert_eq!(s.addrs6["transit"], vec!["fe80::2/64".parse().unwrap()]);
        assert_eq!(h.addrs6["gx7"], vec!["fe80::1/64".parse().unwrap()]);
        assert_eq!(s.routes6, ns_routes6(Some(&r6)));
        assert_eq!(
            h.routes6,
            vec![Route6 {
                dst: "2001:db8:100::/48".parse().unwrap(),
                via: Some(TRANSIT_NS_LL),
                dev: Some("gx7".into())
            }]
        );
        // Losing IPv6 removes every address and route; forwarding may stay on.
        let a = converge(&r, None, true, &mut h, &mut v);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::DelRoute6 { ns: None, .. })));
        assert!(v[&7].addrs6.values().all(Vec::is_empty));
        assert!(h.routes6.is_empty() && h.addrs6["gx7"].is_empty());
    }

    /// The firewall is loaded before anything forwards or routes IPv6, once: a second pass
    /// reloads nothing, a drifted table (another digest, or none) is reloaded, a changed
    /// tier set reloads it, and a VPC that loses IPv6 loses the table.
    #[test]
    fn the_ipv6_firewall_is_loaded_first_once_and_removed_with_ipv6() {
        let r = nft::example();
        let mut r6 = router6(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        let all = converge(&r, Some(&r6), true, &mut h, &mut v);
        let at = |f: fn(&Action) -> bool| all.iter().position(f).expect("planned");
        let load = at(|x| matches!(x, Action::LoadNft6 { table: Some(_), .. }));
        assert!(load < at(|x| matches!(x, Action::SetForwarding6 { ns: Some(_) })));
        assert!(load < at(|x| matches!(x, Action::ReplaceRoute6 { ns: None, .. })));
        let want = nft::digest_of(&nft6::render_nft6(&r, &r6));
        assert!(want.is_some());
        assert_eq!(v[&7].nft6_digest, want);
        for drift in [None, Some("0123".to_string())] {
            v.get_mut(&7).unwrap().nft6_digest = drift;
            let a = converge(&r, Some(&r6), true, &mut h, &mut v);
            assert!(
                matches!(&a[..], [Action::LoadNft6 { table: Some(_), .. }]),
                "{a:#?}"
            );
        }
        r6.tiers[0].prefix = "2001:db8:100:2::/64".parse().unwrap();
        r6.tiers[0].gateway = "2001:db8:100:2::1".parse().unwrap();
        let a = converge(&r, Some(&r6), true, &mut h, &mut v);
        assert!(matches!(a[0], Action::LoadNft6 { table: Some(_), .. }));
        let a = converge(&r, None, true, &mut h, &mut v);
        assert!(matches!(&a[0], Action::LoadNft6 { table: None, ns, .. } if ns == "sfvpc-7"));
        assert_eq!(v[&7].nft6_digest, None);
    }

    #[test]
    fn a_passive_router_has_its_addresses_but_no_host_route() {
        let r = nft::example();
        let r6 = router6(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, Some(&r6), false, &mut h, &mut v);
        assert!(h.routes6.is_empty());
        assert_eq!(v[&7].addrs6["t1000001"].len(), 2);
        assert!(!h.link(&tier_host(7, 1_000_001)).unwrap().up);
        // Activation adds the announced range; deactivation withdraws it.
        let a = converge(&r, Some(&r6), true, &mut h, &mut v);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::ReplaceRoute6 { ns: None, .. })));
        assert_eq!(h.routes6.len(), 1);
        converge(&r, Some(&r6), false, &mut h, &mut v);
        assert!(h.routes6.is_empty());
    }

    #[test]
    fn drift_is_repaired_and_foreign_host_routes_kept() {
        let r = nft::example();
        let r6 = router6(&r);
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, Some(&r6), true, &mut h, &mut v);
        let s = v.get_mut(&7).unwrap();
        s.addrs6.get_mut("t1000001").unwrap().remove(1);
        s.addrs6
            .get_mut("t1000001")
            .unwrap()
            .push("fe80::abcd/64".parse().unwrap());
        s.forwarding6 = false;
        let foreign = Route6 {
            dst: "2001:db8:ffff::/48".parse().unwrap(),
            via: Some("fe80::9".parse().unwrap()),
            dev: Some("leaf1".into()),
        };
        h.routes6.push(foreign.clone());
        let a = converge(&r, Some(&r6), true, &mut h, &mut v);
        assert_eq!(a.len(), 3, "{a:#?}");
        assert!(h.routes6.contains(&foreign));
    }

    #[test]
    fn a_ula_range_is_never_routed_out_of_its_vpc() {
        let r = nft::example();
        let mut r6 = router6(&r);
        r6.announce = vec![
            "fd10:10::/48".parse().unwrap(),
            "2001:db8:100::/48".parse().unwrap(),
        ];
        let dsts: Vec<String> = host_routes6(&r6)
            .iter()
            .map(|x| x.dst.to_string())
            .collect();
        assert_eq!(dsts, ["2001:db8:100::/48"]);
    }

    #[test]
    fn an_ipv6_tier_without_an_ipv4_tier_is_refused() {
        let r = nft::example();
        let mut r6 = router6(&r);
        r6.tiers[0].vni = 5;
        let (a, e) = plan_router6(&r, Some(&r6), &host(), None, "sfvpc-7", true, &[]);
        assert!(a.is_empty());
        assert_eq!(e.len(), 1, "{e:?}");
    }

    fn route6(prefix: &str, nexthop: &str) -> RouterRoute6 {
        RouterRoute6 {
            prefix: prefix.parse().unwrap(),
            nexthop: nexthop.parse().unwrap(),
        }
    }

    /// Static IPv6 routes go into the namespace via their next hop on its tier's link, are
    /// replaced when the next hop moves, kept on a passive router (as IPv4 routes are) and
    /// removed when deleted; the default route stays.
    #[test]
    fn static_routes_are_installed_replaced_and_removed() {
        let r = nft::example();
        let mut r6 = router6(&r);
        r6.routes = vec![route6("fd10:99::/64", "2001:db8:100:1::11")];
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, Some(&r6), true, &mut h, &mut v);
        let static_route = |nh: &str| Route6 {
            dst: "fd10:99::/64".parse().unwrap(),
            via: Some(nh.parse().unwrap()),
            dev: Some("t1000001".into()),
        };
        assert!(v[&7].routes6.contains(&static_route("2001:db8:100:1::11")));
        assert_eq!(v[&7].routes6.len(), 2, "{:?}", v[&7].routes6);
        r6.routes[0].nexthop = "2001:db8:100:1::12".parse().unwrap();
        let a = converge(&r, Some(&r6), false, &mut h, &mut v);
        assert_eq!(
            a.iter()
                .filter(|x| matches!(x, Action::ReplaceRoute6 { ns: Some(_), .. }))
                .count(),
            1,
            "one replace, no delete first: {a:#?}"
        );
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::DelRoute6 { ns: Some(_), .. })));
        assert!(v[&7].routes6.contains(&static_route("2001:db8:100:1::12")));
        r6.routes.clear();
        let a = converge(&r, Some(&r6), true, &mut h, &mut v);
        assert!(a.contains(&Action::DelRoute6 {
            ns: Some("sfvpc-7".into()),
            route: static_route("2001:db8:100:1::12"),
        }));
        assert_eq!(v[&7].routes6, ns_routes6(Some(&r6)));
        assert_eq!(v[&7].routes6.len(), 1, "the default stays");
    }

    #[test]
    fn a_route_whose_next_hop_is_on_no_tier_is_refused() {
        let r = nft::example();
        let mut r6 = router6(&r);
        r6.routes = vec![route6("fd10:99::/64", "2001:db8:100:2::11")];
        let (_, e) = plan_router6(&r, Some(&r6), &host(), None, "sfvpc-7", true, &[]);
        assert_eq!(e.len(), 1, "{e:?}");
    }
}
