//! Pure planning of the VPC routers of a gateway node: from what was observed in the kernel
//! (host links/routes, each VPC namespace's links, addresses, routes, forwarding and nft
//! digest) and the desired [`VpcRouter`]s, the ordered [`Action`]s that converge it. A
//! converged node plans nothing, so a second pass makes no change at all.
//!
//! [`decide`] applies the exclusivity rules (the etcd lease) to choose which routers may be
//! created, converged or removed in this pass; [`apply_in_memory`] is the in-memory twin of
//! the executor used to test that plans converge and are idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use sf_core::desired::VpcRouter;
use sf_linux::links::Link;

use crate::names::{
    self, dc_host, dc_ns, netns_name, parse_dc_ns, parse_host_link, parse_tier_ns, tier_host,
    tier_ns, transit_addrs, transit_host, HostLink, TRANSIT_NS,
};
use crate::plan6::Route6;
use crate::{dc, nft};

/// A non-connected IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<String>,
}

/// One VPC namespace as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsState {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    pub forwarding: bool,
    /// Digest comment of the `ip stackfabric` table, if the table exists.
    pub nft_digest: Option<String>,
    /// Digests of the load balancer maps' contents (from the `lbsum` set), by map index.
    pub lb_digests: BTreeMap<usize, String>,
    /// IPv6 forwarding (`net.ipv6.conf.all.forwarding`); see [`crate::plan6`].
    pub forwarding6: bool,
    /// IPv6 addresses by link name (links without any are absent).
    pub addrs6: BTreeMap<String, Vec<Ipv6Net>>,
    /// Configured IPv6 routes of the main table.
    pub routes6: Vec<Route6>,
    /// Digest comment of the `ip6 stackfabric6` table ([`crate::nft6`]), if it exists.
    pub nft6_digest: Option<String>,
    /// Digests of the IPv6 load balancer maps' contents (the IPv6 table's `lbsum`).
    pub lb6_digests: BTreeMap<usize, String>,
}

/// The gateway host namespace as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    pub forwarding: bool,
    /// IPv6 addresses by link name (links without any are absent).
    pub addrs6: BTreeMap<String, Vec<Ipv6Net>>,
    /// Configured IPv6 routes of the main table (FRR's excluded).
    pub routes6: Vec<Route6>,
}

impl NsState {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}
impl HostState {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The host as each VPC router's plan sees it, by router id: the links named for the
    /// router (its transit, tier and Direct Connect host ends), their IPv6 addresses and the
    /// routes (IPv4 and IPv6) through them. That is all [`plan_router`] and
    /// `plan6::plan_router6` read of the host, so a pass over N routers reads each
    /// link once instead of scanning the whole host (4 links and 1-2 routes per router) N
    /// times: at 1,000 routers that scan was most of an idle gateway's resync.
    pub fn by_router(&self) -> BTreeMap<u32, HostState> {
        let mut out: BTreeMap<u32, HostState> = BTreeMap::new();
        let empty = HostState {
            forwarding: self.forwarding,
            ..HostState::default()
        };
        for l in &self.links {
            if let Some(h) = parse_host_link(&l.name) {
                let v = out.entry(h.id()).or_insert_with(|| empty.clone());
                v.links.push(l.clone());
            }
        }
        for r in &self.routes {
            if let Some(h) = r.dev.as_deref().and_then(parse_host_link) {
                let v = out.entry(h.id()).or_insert_with(|| empty.clone());
                v.routes.push(r.clone());
            }
        }
        for (dev, addrs) in &self.addrs6 {
            if let Some(h) = parse_host_link(dev) {
                let v = out.entry(h.id()).or_insert_with(|| empty.clone());
                v.addrs6.insert(dev.clone(), addrs.clone());
            }
        }
        for r in &self.routes6 {
            if let Some(h) = r.dev.as_deref().and_then(parse_host_link) {
                let v = out.entry(h.id()).or_insert_with(|| empty.clone());
                v.routes6.push(r.clone());
            }
        }
        out
    }
}

/// One change. `ns: None` is the gateway host namespace (where the agent runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ip netns add`, lo up.
    AddNetns {
        ns: String,
    },
    DelNetns {
        ns: String,
    },
    /// net.ipv4.ip_forward=1
    SetForwarding {
        ns: Option<String>,
    },
    /// veth `host` (host namespace, owner alias) ↔ `peer` (created directly in `ns`).
    AddVeth {
        host: String,
        peer: String,
        ns: String,
    },
    DelLink {
        ns: Option<String>,
        link: String,
    },
    /// Host namespace: enslave to a bridge.
    SetMaster {
        link: String,
        master: String,
    },
    SetMac {
        ns: String,
        link: String,
        mac: String,
    },
    SetUp {
        ns: Option<String>,
        link: String,
    },
    /// A passive router's tier and Direct Connect host ends are down: its namespace keeps
    /// the virtual MAC and addresses but is invisible on the segments (see [`crate::failover`]).
    SetDown {
        link: String,
    },
    AddAddr {
        ns: Option<String>,
        dev: String,
        addr: Ipv4Net,
    },
    DelAddr {
        ns: Option<String>,
        dev: String,
        addr: Ipv4Net,
    },
    ReplaceRoute {
        ns: Option<String>,
        route: Route,
    },
    DelRoute {
        ns: Option<String>,
        route: Route,
    },
    /// Replace the `ip stackfabric` table with `table` and fill its load balancer maps, in
    /// one transaction.
    LoadNft {
        ns: String,
        table: String,
        lbs: nft::LbLoad,
    },
    /// Rewrite only load balancer maps (and `lbsum`), in one transaction.
    LoadLbMaps {
        ns: String,
        lbs: nft::LbLoad,
    },
    /// Replace the `ip6 stackfabric6` table with `table`, or remove it (`None`), in one
    /// transaction ([`crate::nft6`]).
    LoadNft6 {
        ns: String,
        table: Option<String>,
        /// Its IPv6 load balancer maps, filled in the same transaction.
        lbs: nft::LbLoad,
    },
    /// Rewrite only IPv6 load balancer maps (and the IPv6 table's `lbsum`).
    LoadLbMaps6 {
        ns: String,
        lbs: nft::LbLoad,
    },
    /// net.ipv6.conf.all.forwarding=1 (see [`crate::plan6`]).
    SetForwarding6 {
        ns: Option<String>,
    },
    /// An IPv6 address, without duplicate address detection (`nodad`): the router's
    /// addresses are its own by construction, and DAD would hold them tentative.
    AddAddr6 {
        ns: Option<String>,
        dev: String,
        addr: Ipv6Net,
    },
    DelAddr6 {
        ns: Option<String>,
        dev: String,
        addr: Ipv6Net,
    },
    ReplaceRoute6 {
        ns: Option<String>,
        route: Route6,
    },
    DelRoute6 {
        ns: Option<String>,
        route: Route6,
    },
}

impl Action {
    /// One of the IPv6 side's actions ([`crate::plan6`]).
    pub fn is_ipv6(&self) -> bool {
        matches!(
            self,
            Action::SetForwarding6 { .. }
                | Action::AddAddr6 { .. }
                | Action::DelAddr6 { .. }
                | Action::ReplaceRoute6 { .. }
                | Action::DelRoute6 { .. }
        )
    }
}

/// What this pass does with VPC routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Routers to create if missing and converge.
    pub converge: BTreeSet<u32>,
    /// Routers to remove (namespace, veths, host routes).
    pub remove: BTreeSet<u32>,
}

/// Every desired router is built and converged, whatever the lease: which one forwards is
/// the failover controller's decision, taken from the fabric (a gateway that cannot reach
/// etcd but is alive in the fabric keeps serving, see [`crate::failover`]). Routers no longer
/// desired are removed.
pub fn decide(desired: &BTreeSet<u32>, running: &BTreeSet<u32>) -> Decision {
    Decision {
        converge: desired.clone(),
        remove: running - desired,
    }
}

/// Problems that make a router impossible to build (it is then left alone and reported).
pub fn validate_router(r: &VpcRouter) -> Vec<String> {
    let mut e = Vec::new();
    if r.id > names::MAX_ID {
        e.push(format!("vpc {}: id above {}", r.id, names::MAX_ID));
    }
    if !valid_mac(&r.mac) {
        e.push(format!("vpc {}: bad MAC {:?}", r.id, r.mac));
    }
    let mut vnis = BTreeSet::new();
    for t in &r.tiers {
        if !vnis.insert(t.vni) {
            e.push(format!("vpc {}: VNI {} appears twice", r.id, t.vni));
        }
        if !t.cidr.contains(&t.gateway) {
            e.push(format!(
                "vpc {}: gateway {} outside {}",
                r.id, t.gateway, t.cidr
            ));
        }
    }
    e
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

/// Routes a router needs in its namespace.
pub fn ns_routes(r: &VpcRouter) -> Vec<Route> {
    let (host, _) = transit_addrs(r.id).expect("validated id");
    let mut v = vec![Route {
        dst: Ipv4Net::default(),
        via: Some(host),
        dev: Some(TRANSIT_NS.into()),
    }];
    for rt in &r.routes {
        v.push(Route {
            dst: rt.prefix.trunc(),
            via: Some(rt.nexthop),
            dev: None,
        });
    }
    v.sort();
    v.dedup_by(|a, b| a.dst == b.dst);
    v
}

/// Routes the host of an active router needs: its anchor (announced, watched by the
/// standby) and every public address of the router via its transit link.
pub fn host_routes(r: &VpcRouter) -> Vec<Route> {
    let (anchor, ns_side) = transit_addrs(r.id).expect("validated id");
    let mut v = vec![Route {
        dst: Ipv4Net::new(anchor, 32).expect("/32"),
        via: None,
        dev: Some(transit_host(r.id)),
    }];
    v.extend(r.public_ips().into_iter().map(|ip| Route {
        dst: Ipv4Net::new(ip, 32).expect("/32"),
        via: Some(ns_side),
        dev: Some(transit_host(r.id)),
    }));
    v
}

/// Does an observed route satisfy a desired one (the kernel fills in dev)?
fn satisfies(observed: &Route, want: &Route) -> bool {
    observed.dst == want.dst
        && observed.via == want.via
        && (want.dev.is_none() || observed.dev == want.dev)
}

/// Converges one veth end's address set (IPv4 only) to exactly `want`.
fn plan_addrs(
    ns: Option<&str>,
    dev: &str,
    have: &[Ipv4Net],
    want: &[Ipv4Net],
    a: &mut Vec<Action>,
) {
    for w in want {
        if !have.contains(w) {
            a.push(Action::AddAddr {
                ns: ns.map(str::to_string),
                dev: dev.into(),
                addr: *w,
            });
        }
    }
    for h in have {
        if !want.contains(h) {
            a.push(Action::DelAddr {
                ns: ns.map(str::to_string),
                dev: dev.into(),
                addr: *h,
            });
        }
    }
}

/// One veth pair of a router: `host` in the gateway's namespace (optionally in bridge
/// `master`), `peer` in the router's namespace (optionally with MAC `peer_mac`), and the
/// IPv4 addresses each end must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    pub host: String,
    pub peer: String,
    pub master: Option<String>,
    pub host_addrs: Vec<Ipv4Net>,
    pub peer_mac: Option<&'a str>,
    pub peer_addrs: Vec<Ipv4Net>,
}

/// The veth pairs router `r` needs, in the order they are planned: tiers by VNI, Direct
/// Connect hand-offs (joined like a tier: `brvx-<vni>`, virtual MAC, but with the DC's own
/// address and none of a tier's NAT/ACL semantics, see [`crate::dc`]), then transit.
pub fn pairs(r: &VpcRouter) -> Vec<Pair<'_>> {
    let mut tiers: Vec<_> = r.tiers.iter().collect();
    tiers.sort_by_key(|t| t.vni);
    let mut v: Vec<Pair> = tiers
        .iter()
        .map(|t| {
            let mut addrs = vec![Ipv4Net::new(t.gateway, t.cidr.prefix_len()).expect("valid")];
            addrs.extend(nft::tier_vips(r, &t.cidr, t.gateway));
            Pair {
                host: tier_host(r.id, t.vni),
                peer: tier_ns(t.vni),
                master: Some(sf_linux::l2::bridge_name(t.vni)),
                host_addrs: vec![],
                peer_mac: Some(&r.mac),
                peer_addrs: addrs,
            }
        })
        .collect();
    v.extend(dc::usable(r).0.iter().map(|d| Pair {
        host: dc_host(r.id, d.vni),
        peer: dc_ns(d.vni),
        master: Some(sf_linux::l2::bridge_name(d.vni)),
        host_addrs: vec![],
        peer_mac: Some(&r.mac),
        peer_addrs: vec![d.local],
    }));
    let (h, n) = transit_addrs(r.id).expect("validated id");
    v.push(Pair {
        host: transit_host(r.id),
        peer: TRANSIT_NS.into(),
        master: None,
        host_addrs: vec![Ipv4Net::new(h, 31).expect("/31")],
        peer_mac: None,
        peer_addrs: vec![Ipv4Net::new(n, 31).expect("/31")],
    });
    v
}

/// The planning of one router: what was observed, and the plan so far.
struct RouterPlan<'a> {
    r: &'a VpcRouter,
    /// The router's namespace.
    ns: String,
    host: &'a HostState,
    st: &'a NsState,
    /// Whether the router forwards: tier host ends up, host routes (announcements) present.
    active: bool,
    a: Vec<Action>,
    errors: Vec<String>,
}

/// Plan for one desired router; `ns` is its namespace's observed state (None: missing);
/// `lbs` the Maglev tables to install, one per [`nft::load_balancers`] entry; `active`
/// whether it forwards (else it is built whole but passive: segments down, no host routes).
/// Returns the actions and the problems no action can fix.
pub fn plan_router(
    prefix: &str,
    r: &VpcRouter,
    host: &HostState,
    ns: Option<&NsState>,
    lbs: &[Arc<nft::LbTable>],
    active: bool,
) -> (Vec<Action>, Vec<String>) {
    let errors = validate_router(r);
    if !errors.is_empty() {
        return (Vec::new(), errors);
    }
    let empty = NsState::default();
    let mut p = RouterPlan {
        r,
        ns: netns_name(prefix, r.id),
        host,
        st: ns.unwrap_or(&empty),
        active,
        a: Vec::new(),
        errors,
    };
    p.namespace(ns.is_some());
    for pair in pairs(r) {
        p.pair(&pair);
    }
    p.stale_tiers();
    p.stale_dcs();
    p.ns_routes();
    // NAT and load balancers, before the public routes attract traffic.
    if p.nft(lbs) {
        p.host_routes();
    }
    (p.a, p.errors)
}

impl RouterPlan<'_> {
    fn ns(&self) -> Option<String> {
        Some(self.ns.clone())
    }

    /// The namespace (when missing) and its forwarding.
    fn namespace(&mut self, exists: bool) {
        if !exists {
            self.a.push(Action::AddNetns {
                ns: self.ns.clone(),
            });
        }
        if !self.st.forwarding {
            self.a.push(Action::SetForwarding { ns: self.ns() });
        }
    }

    /// One veth pair: created when either end is missing (or of a wrong kind), else both
    /// ends converged. A host end with our name that we did not create is left alone.
    fn pair(&mut self, p: &Pair) {
        let (host, st) = (self.host, self.st);
        let (hl, pl) = (host.link(&p.host), st.link(&p.peer));
        if hl.is_some_and(|h| !h.owned) {
            self.errors.push(format!(
                "{} exists but was not created by StackFabric; left alone",
                p.host
            ));
            return;
        }
        match (hl, pl) {
            (Some(h), Some(l)) if is_veth(h) && is_veth(l) => self.converge_pair(p, h, l),
            _ => self.recreate_pair(p, hl.is_some(), pl.is_some()),
        }
    }

    fn converge_pair(&mut self, p: &Pair, h: &Link, l: &Link) {
        if let Some(m) = &p.master {
            if h.master.as_deref() != Some(m.as_str()) {
                self.a.push(Action::SetMaster {
                    link: p.host.clone(),
                    master: m.clone(),
                });
            }
        }
        plan_addrs(None, &p.host, &h.addrs, &p.host_addrs, &mut self.a);
        let up = self.host_end_up(p);
        if up && !h.up {
            self.a.push(Action::SetUp {
                ns: None,
                link: p.host.clone(),
            });
        } else if !up && h.up {
            self.a.push(Action::SetDown {
                link: p.host.clone(),
            });
        }
        if let Some(mac) = p.peer_mac {
            if l.mac.as_deref().map(str::to_ascii_lowercase) != Some(mac.to_ascii_lowercase()) {
                self.set_mac(p, mac);
            }
        }
        plan_addrs(
            Some(&self.ns),
            &p.peer,
            &l.addrs,
            &p.peer_addrs,
            &mut self.a,
        );
        if !l.up {
            self.a.push(Action::SetUp {
                ns: self.ns(),
                link: p.peer.clone(),
            });
        }
    }

    /// Half a pair (or a wrong kind): recreate from scratch.
    fn recreate_pair(&mut self, p: &Pair, host_exists: bool, peer_exists: bool) {
        if host_exists {
            self.a.push(Action::DelLink {
                ns: None,
                link: p.host.clone(),
            });
        }
        if peer_exists {
            self.a.push(Action::DelLink {
                ns: self.ns(),
                link: p.peer.clone(),
            });
        }
        self.a.push(Action::AddVeth {
            host: p.host.clone(),
            peer: p.peer.clone(),
            ns: self.ns.clone(),
        });
        if let Some(m) = &p.master {
            self.a.push(Action::SetMaster {
                link: p.host.clone(),
                master: m.clone(),
            });
        }
        plan_addrs(None, &p.host, &[], &p.host_addrs, &mut self.a);
        if self.host_end_up(p) {
            self.a.push(Action::SetUp {
                ns: None,
                link: p.host.clone(),
            });
        }
        if let Some(mac) = p.peer_mac {
            self.set_mac(p, mac);
        }
        plan_addrs(Some(&self.ns), &p.peer, &[], &p.peer_addrs, &mut self.a);
        self.a.push(Action::SetUp {
            ns: self.ns(),
            link: p.peer.clone(),
        });
    }

    /// Segment host ends (tiers, Direct Connects) are up only on an active router; the
    /// transit link always is.
    fn host_end_up(&self, p: &Pair) -> bool {
        self.active || p.master.is_none()
    }

    fn set_mac(&mut self, p: &Pair, mac: &str) {
        self.a.push(Action::SetMac {
            ns: self.ns.clone(),
            link: p.peer.clone(),
            mac: mac.into(),
        });
    }

    /// Tiers that went away: deleting the host end removes the pair; a namespace end
    /// without its host end is deleted itself.
    fn stale_tiers(&mut self) {
        let vnis = self.r.tiers.iter().map(|t| t.vni).collect();
        self.stale_pairs(&vnis, |id, vni| HostLink::Tier { id, vni }, parse_tier_ns);
    }

    /// Direct Connects that went away, like tiers.
    fn stale_dcs(&mut self) {
        let vnis = dc::usable(self.r).0.iter().map(|d| d.vni).collect();
        self.stale_pairs(&vnis, |id, vni| HostLink::Dc { id, vni }, parse_dc_ns);
    }

    /// The pairs of one kind (`link` names its host end, `parse_ns` reads its namespace end)
    /// whose VNI is not in `keep`.
    fn stale_pairs(
        &mut self,
        keep: &BTreeSet<u32>,
        link: fn(u32, u32) -> HostLink,
        parse_ns: fn(&str) -> Option<u32>,
    ) {
        let (r, host, st) = (self.r, self.host, self.st);
        for l in &host.links {
            let Some(found) = parse_host_link(&l.name) else {
                continue;
            };
            if let Some(vni) = found.vni() {
                if found == link(r.id, vni) && l.owned && !keep.contains(&vni) {
                    self.del_link(None, &l.name);
                }
            }
        }
        for l in &st.links {
            let Some(vni) = parse_ns(&l.name) else {
                continue;
            };
            if !keep.contains(&vni) && !owned_host_end(host, link(r.id, vni)) {
                self.del_link(self.ns(), &l.name);
            }
        }
    }

    fn del_link(&mut self, ns: Option<String>, link: &str) {
        self.a.push(Action::DelLink {
            ns,
            link: link.into(),
        });
    }

    /// Routes inside the VPC namespace.
    fn ns_routes(&mut self) {
        let st = self.st;
        let want = ns_routes(self.r);
        for w in &want {
            if !st.routes.iter().any(|o| satisfies(o, w)) {
                self.a.push(Action::ReplaceRoute {
                    ns: self.ns(),
                    route: w.clone(),
                });
            }
        }
        for o in &st.routes {
            if !want.iter().any(|w| w.dst == o.dst) {
                self.a.push(Action::DelRoute {
                    ns: self.ns(),
                    route: o.clone(),
                });
            }
        }
    }

    /// The NAT table and load balancer maps: the whole table when its digest differs, else
    /// only the maps whose content changed, and in those only the changed slots when the
    /// installed table is known ([`nft::map_load`]). False (and an error) when `lbs` does not match
    /// the router's load balancers.
    fn nft(&mut self, lbs: &[Arc<nft::LbTable>]) -> bool {
        let (r, st) = (self.r, self.st);
        let n_lbs = nft::load_balancers(r).len();
        if lbs.len() != n_lbs {
            self.errors.push(format!(
                "vpc {}: {} Maglev tables for {n_lbs} load balancers",
                r.id,
                lbs.len()
            ));
            return false;
        }
        let table = nft::render_nft(r);
        let table_digest = nft::digest_of(&table).unwrap_or_default();
        let digests: BTreeMap<usize, String> = lbs
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.digest.clone()))
            .collect();
        if st.nft_digest.as_deref() != Some(table_digest.as_str()) {
            self.a.push(Action::LoadNft {
                ns: self.ns.clone(),
                table,
                lbs: nft::LbLoad {
                    table_digest,
                    digests,
                    maps: lbs
                        .iter()
                        .map(|t| nft::MapLoad::Full(t.clone()))
                        .enumerate()
                        .collect(),
                },
            });
        } else if st.lb_digests != digests {
            let maps = nft::load_balancers(r)
                .into_iter()
                .zip(lbs)
                .enumerate()
                .filter(|(i, (_, t))| st.lb_digests.get(i) != Some(&t.digest))
                .map(|(i, (lb, t))| {
                    let installed = st.lb_digests.get(&i).map(String::as_str);
                    (i, nft::map_load(lb, installed, t.clone()))
                })
                .collect();
            self.a.push(Action::LoadLbMaps {
                ns: self.ns.clone(),
                lbs: nft::LbLoad {
                    table_digest,
                    maps,
                    digests,
                },
            });
        }
        true
    }

    /// An active router's anchor and public /32s into the namespace (FRR announces them);
    /// stale ones through this router's transit link withdrawn, all of them when passive.
    fn host_routes(&mut self) {
        let host = self.host;
        let dev = transit_host(self.r.id);
        let want = if self.active {
            host_routes(self.r)
        } else {
            Vec::new()
        };
        for w in &want {
            if !host.routes.iter().any(|o| satisfies(o, w)) {
                self.a.push(Action::ReplaceRoute {
                    ns: None,
                    route: w.clone(),
                });
            }
        }
        for o in host
            .routes
            .iter()
            .filter(|o| o.dev.as_deref() == Some(dev.as_str()))
        {
            if !want.iter().any(|w| satisfies(o, w)) {
                self.a.push(Action::DelRoute {
                    ns: None,
                    route: o.clone(),
                });
            }
        }
    }
}

fn is_veth(l: &Link) -> bool {
    l.kind.as_deref() == Some("veth")
}

/// Whether the host has our end `which` of a pair.
fn owned_host_end(host: &HostState, which: HostLink) -> bool {
    host.links
        .iter()
        .any(|h| h.owned && parse_host_link(&h.name) == Some(which))
}

/// Removing router `id`: public routes first (withdrawal), then its host veths (which takes
/// the pairs down at once), then the namespace.
pub fn plan_removal(prefix: &str, id: u32, host: &HostState) -> Vec<Action> {
    let mut a = Vec::new();
    let dev = transit_host(id);
    for o in host
        .routes
        .iter()
        .filter(|o| o.dev.as_deref() == Some(dev.as_str()))
    {
        a.push(Action::DelRoute {
            ns: None,
            route: o.clone(),
        });
    }
    for l in &host.links {
        if l.owned && parse_host_link(&l.name).is_some_and(|h| h.id() == id) {
            a.push(Action::DelLink {
                ns: None,
                link: l.name.clone(),
            });
        }
    }
    a.push(Action::DelNetns {
        ns: netns_name(prefix, id),
    });
    a
}

/// The in-memory twin of the executor: applies actions to an observed state.
pub fn apply_in_memory(
    prefix: &str,
    host: &mut HostState,
    vpcs: &mut BTreeMap<u32, NsState>,
    actions: &[Action],
) {
    fn links<'a>(
        host: &'a mut HostState,
        vpcs: &'a mut BTreeMap<u32, NsState>,
        prefix: &str,
        ns: &Option<String>,
    ) -> Option<&'a mut Vec<Link>> {
        match ns {
            None => Some(&mut host.links),
            Some(n) => vpcs
                .get_mut(&names::netns_id(prefix, n)?)
                .map(|s| &mut s.links),
        }
    }
    fn routes<'a>(
        host: &'a mut HostState,
        vpcs: &'a mut BTreeMap<u32, NsState>,
        prefix: &str,
        ns: &Option<String>,
    ) -> Option<&'a mut Vec<Route>> {
        match ns {
            None => Some(&mut host.routes),
            Some(n) => vpcs
                .get_mut(&names::netns_id(prefix, n)?)
                .map(|s| &mut s.routes),
        }
    }
    // Deleting one end of a veth deletes its peer (and routes through either end).
    fn del_link(
        host: &mut HostState,
        vpcs: &mut BTreeMap<u32, NsState>,
        prefix: &str,
        ns: &Option<String>,
        link: &str,
    ) {
        let (id, host_end, peer) = match ns {
            None => match parse_host_link(link) {
                Some(HostLink::Tier { id, vni }) => (id, link.to_string(), tier_ns(vni)),
                Some(HostLink::Transit { id }) => (id, link.to_string(), TRANSIT_NS.to_string()),
                Some(HostLink::Dc { id, vni }) => (id, link.to_string(), dc_ns(vni)),
                None => {
                    host.links.retain(|l| l.name != link);
                    return;
                }
            },
            Some(n) => {
                let id = names::netns_id(prefix, n).unwrap_or(u32::MAX);
                let host_end = parse_tier_ns(link)
                    .map(|v| tier_host(id, v))
                    .or_else(|| parse_dc_ns(link).map(|v| dc_host(id, v)))
                    .unwrap_or_else(|| transit_host(id));
                (id, host_end, link.to_string())
            }
        };
        host.links.retain(|l| l.name != host_end);
        host.routes
            .retain(|r| r.dev.as_deref() != Some(host_end.as_str()));
        host.addrs6.remove(&host_end);
        host.routes6
            .retain(|r| r.dev.as_deref() != Some(host_end.as_str()));
        if let Some(s) = vpcs.get_mut(&id) {
            s.links.retain(|l| l.name != peer);
            s.routes.retain(|r| r.dev.as_deref() != Some(peer.as_str()));
            s.addrs6.remove(&peer);
            s.routes6
                .retain(|r| r.dev.as_deref() != Some(peer.as_str()));
        }
    }
    fn addrs6<'a>(
        host: &'a mut HostState,
        vpcs: &'a mut BTreeMap<u32, NsState>,
        prefix: &str,
        ns: &Option<String>,
    ) -> Option<&'a mut BTreeMap<String, Vec<Ipv6Net>>> {
        match ns {
            None => Some(&mut host.addrs6),
            Some(n) => vpcs
                .get_mut(&names::netns_id(prefix, n)?)
                .map(|s| &mut s.addrs6),
        }
    }
    fn routes6<'a>(
        host: &'a mut HostState,
        vpcs: &'a mut BTreeMap<u32, NsState>,
        prefix: &str,
        ns: &Option<String>,
    ) -> Option<&'a mut Vec<Route6>> {
        match ns {
            None => Some(&mut host.routes6),
            Some(n) => vpcs
                .get_mut(&names::netns_id(prefix, n)?)
                .map(|s| &mut s.routes6),
        }
    }
    for act in actions {
        match act {
            Action::AddNetns { ns } => {
                if let Some(id) = names::netns_id(prefix, ns) {
                    vpcs.entry(id).or_default();
                }
            }
            Action::DelNetns { ns } => {
                if let Some(id) = names::netns_id(prefix, ns) {
                    vpcs.remove(&id);
                    host.links
                        .retain(|l| parse_host_link(&l.name).is_none_or(|h| h.id() != id));
                    let dev = transit_host(id);
                    host.routes
                        .retain(|r| r.dev.as_deref() != Some(dev.as_str()));
                    host.routes6
                        .retain(|r| r.dev.as_deref() != Some(dev.as_str()));
                    host.addrs6.remove(&dev);
                }
            }
            Action::SetForwarding { ns: None } => host.forwarding = true,
            Action::SetForwarding { ns: Some(n) } => {
                if let Some(s) = names::netns_id(prefix, n).and_then(|id| vpcs.get_mut(&id)) {
                    s.forwarding = true;
                }
            }
            Action::AddVeth { host: h, peer, ns } => {
                host.links.push(Link {
                    name: h.clone(),
                    kind: Some("veth".into()),
                    owned: true,
                    ..Default::default()
                });
                if let Some(s) = names::netns_id(prefix, ns).and_then(|id| vpcs.get_mut(&id)) {
                    s.links.push(Link {
                        name: peer.clone(),
                        kind: Some("veth".into()),
                        owned: true,
                        ..Default::default()
                    });
                }
            }
            Action::DelLink { ns, link } => del_link(host, vpcs, prefix, ns, link),
            Action::SetMaster { link, master } => {
                if let Some(l) = host.links.iter_mut().find(|l| &l.name == link) {
                    l.master = Some(master.clone());
                }
            }
            Action::SetMac { ns, link, mac } => {
                if let Some(l) = links(host, vpcs, prefix, &Some(ns.clone()))
                    .and_then(|v| v.iter_mut().find(|l| &l.name == link))
                {
                    l.mac = Some(mac.clone());
                }
            }
            Action::SetUp { ns, link } => {
                if let Some(l) = links(host, vpcs, prefix, ns)
                    .and_then(|v| v.iter_mut().find(|l| &l.name == link))
                {
                    l.up = true;
                }
            }
            Action::SetDown { link } => {
                if let Some(l) = host.links.iter_mut().find(|l| &l.name == link) {
                    l.up = false;
                }
            }
            Action::AddAddr { ns, dev, addr } => {
                if let Some(l) = links(host, vpcs, prefix, ns)
                    .and_then(|v| v.iter_mut().find(|l| &l.name == dev))
                {
                    l.addrs.push(*addr);
                }
            }
            Action::DelAddr { ns, dev, addr } => {
                if let Some(l) = links(host, vpcs, prefix, ns)
                    .and_then(|v| v.iter_mut().find(|l| &l.name == dev))
                {
                    l.addrs.retain(|a| a != addr);
                }
            }
            Action::ReplaceRoute { ns, route } => {
                if let Some(v) = routes(host, vpcs, prefix, ns) {
                    v.retain(|r| r.dst != route.dst);
                    let mut r = route.clone();
                    if r.dev.is_none() {
                        r.dev = Some("resolved".into());
                    }
                    v.push(r);
                }
            }
            Action::DelRoute { ns, route } => {
                if let Some(v) = routes(host, vpcs, prefix, ns) {
                    v.retain(|r| r != route);
                }
            }
            Action::LoadNft { ns, table, lbs } => {
                if let Some(s) = names::netns_id(prefix, ns).and_then(|id| vpcs.get_mut(&id)) {
                    s.nft_digest = nft::digest_of(table);
                    s.lb_digests = lbs.digests.clone();
                }
            }
            Action::LoadLbMaps { ns, lbs } => {
                if let Some(s) = names::netns_id(prefix, ns).and_then(|id| vpcs.get_mut(&id)) {
                    s.lb_digests = lbs.digests.clone();
                }
            }
            Action::LoadNft6 { ns, table, lbs } => {
                if let Some(s) = names::netns_id(prefix, ns).and_then(|id| vpcs.get_mut(&id)) {
                    s.nft6_digest = table.as_deref().and_then(nft::digest_of);
                    s.lb6_digests = lbs.digests.clone();
                }
            }
            Action::LoadLbMaps6 { ns, lbs } => {
                if let Some(s) = names::netns_id(prefix, ns).and_then(|id| vpcs.get_mut(&id)) {
                    s.lb6_digests = lbs.digests.clone();
                }
            }
            Action::SetForwarding6 { ns: None } => {}
            Action::SetForwarding6 { ns: Some(n) } => {
                if let Some(s) = names::netns_id(prefix, n).and_then(|id| vpcs.get_mut(&id)) {
                    s.forwarding6 = true;
                }
            }
            Action::AddAddr6 { ns, dev, addr } => {
                if let Some(m) = addrs6(host, vpcs, prefix, ns) {
                    m.entry(dev.clone()).or_default().push(*addr);
                }
            }
            Action::DelAddr6 { ns, dev, addr } => {
                if let Some(v) = addrs6(host, vpcs, prefix, ns).and_then(|m| m.get_mut(dev)) {
                    v.retain(|a| a != addr);
                }
            }
            Action::ReplaceRoute6 { ns, route } => {
                if let Some(v) = routes6(host, vpcs, prefix, ns) {
                    v.retain(|r| r.dst != route.dst);
                    v.push(route.clone());
                }
            }
            Action::DelRoute6 { ns, route } => {
                if let Some(v) = routes6(host, vpcs, prefix, ns) {
                    v.retain(|r| r != route);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::{RouterRoute, RouterTier};

    const P: &str = "sfvpc-";

    fn tables(r: &VpcRouter) -> Vec<Arc<nft::LbTable>> {
        nft::load_balancers(r)
            .iter()
            .map(|lb| Arc::new(nft::lb_table(lb, &|_| true)))
            .collect()
    }

    fn bridge(vni: u32) -> Link {
        Link {
            name: format!("brvx-{vni}"),
            kind: Some("bridge".into()),
            owned: true,
            up: true,
            ..Default::default()
        }
    }

    fn host() -> HostState {
        HostState {
            links: vec![bridge(1_000_001), bridge(1_000_002)],
            routes: vec![],
            forwarding: true,
            ..Default::default()
        }
    }

    fn converge(
        r: &VpcRouter,
        host: &mut HostState,
        vpcs: &mut BTreeMap<u32, NsState>,
    ) -> Vec<Action> {
        let (a, e) = plan_router(P, r, host, vpcs.get(&r.id), &tables(r), true);
        assert!(e.is_empty(), "{e:?}");
        apply_in_memory(P, host, vpcs, &a);
        a
    }

    #[test]
    fn builds_the_router_and_second_pass_is_empty() {
        let r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        let a = converge(&r, &mut h, &mut v);
        assert_eq!(
            a[0],
            Action::AddNetns {
                ns: "sfvpc-7".into()
            }
        );
        assert!(a.contains(&Action::AddVeth {
            host: "g7v1000001".into(),
            peer: "t1000001".into(),
            ns: "sfvpc-7".into()
        }));
        assert!(a.contains(&Action::SetMaster {
            link: "g7v1000001".into(),
            master: "brvx-1000001".into()
        }));
        assert!(a.contains(&Action::SetMac {
            ns: "sfvpc-7".into(),
            link: "t1000001".into(),
            mac: "02:5f:00:00:00:07".into()
        }));
        assert!(a.contains(&Action::AddAddr {
            ns: Some("sfvpc-7".into()),
            dev: "t1000001".into(),
            addr: "10.10.1.1/24".parse().unwrap()
        }));
        assert!(a.contains(&Action::AddAddr {
            ns: None,
            dev: "gx7".into(),
            addr: "198.18.0.14/31".parse().unwrap()
        }));
        assert!(a.contains(&Action::ReplaceRoute {
            ns: Some("sfvpc-7".into()),
            route: Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                via: Some("198.18.0.14".parse().unwrap()),
                dev: Some("transit".into())
            }
        }));
        let host_routes: Vec<_> = a
            .iter()
            .filter_map(|x| match x {
                Action::ReplaceRoute { ns: None, route } => Some(route.dst.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            host_routes,
            [
                "198.18.0.14/32",
                "203.0.113.10/32",
                "203.0.113.11/32",
                "203.0.113.12/32"
            ]
        );
        // NAT is loaded before the public routes attract traffic.
        let nft_at = a
            .iter()
            .position(|x| matches!(x, Action::LoadNft { .. }))
            .unwrap();
        let route_at = a
            .iter()
            .position(|x| matches!(x, Action::ReplaceRoute { ns: None, .. }))
            .unwrap();
        assert!(nft_at < route_at);
        // Converged: nothing to do, nothing recreated, nft not reloaded.
        let (again, e) = plan_router(P, &r, &h, v.get(&7), &tables(&r), true);
        assert!(e.is_empty());
        assert_eq!(again, vec![]);
    }

    #[test]
    fn changes_touch_only_what_changed() {
        let mut r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, &mut h, &mut v);
        // A new tier with a lower VNI must not rename/recreate the existing tier's link.
        r.tiers.push(RouterTier {
            name: "db".into(),
            vni: 1_000_000,
            cidr: "10.10.2.0/24".parse().unwrap(),
            gateway: "10.10.2.1".parse().unwrap(),
            acl: None,
        });
        h.links.push(bridge(1_000_000));
        r.routes.push(RouterRoute {
            prefix: "192.168.0.0/16".parse().unwrap(),
            nexthop: "10.10.2.254".parse().unwrap(),
        });
        let a = converge(&r, &mut h, &mut v);
        assert!(a.contains(&Action::AddVeth {
            host: "g7v1000000".into(),
            peer: "t1000000".into(),
            ns: "sfvpc-7".into()
        }));
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::DelLink { .. } | Action::AddNetns { .. })));
        assert!(
            !a.iter().any(|x| matches!(x, Action::LoadNft { .. })),
            "inside set unchanged (10.10.0.0/16)"
        );
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
        // Drop the first tier, the static route and the SNAT address.
        r.tiers.retain(|t| t.vni != 1_000_001);
        r.routes.clear();
        r.snat = None;
        let a = converge(&r, &mut h, &mut v);
        assert!(a.contains(&Action::DelLink {
            ns: None,
            link: "g7v1000001".into()
        }));
        assert!(a.iter().any(|x| matches!(x, Action::DelRoute { ns: Some(_), route } if route.dst.to_string() == "192.168.0.0/16")));
        assert!(a.iter().any(|x| matches!(x, Action::DelRoute { ns: None, route } if route.dst.to_string() == "203.0.113.10/32")));
        assert!(a.iter().any(|x| matches!(x, Action::LoadNft { .. })));
        assert!(v[&7].link("t1000001").is_none());
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
    }

    #[test]
    fn load_balancers_route_the_vip_and_health_rewrites_only_the_map() {
        let mut r = nft::lb_example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        let a = converge(&r, &mut h, &mut v);
        // The public VIP is routed into the namespace like the NAT addresses.
        assert!(a.iter().any(|x| matches!(x, Action::ReplaceRoute { ns: None, route } if route.dst.to_string() == "203.0.113.20/32")));
        let load = a
            .iter()
            .find_map(|x| match x {
                Action::LoadNft { lbs, .. } => Some(lbs.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(load.maps.len(), 1);
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
        // A backend goes down: only its load balancer's map is rewritten, NAT untouched.
        let lb = &r.load_balancers[0];
        let down = vec![Arc::new(nft::lb_table(lb, &|b| b.name != "10.10.1.22:80"))];
        let (a, e) = plan_router(P, &r, &h, v.get(&7), &down, true);
        assert!(e.is_empty());
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(
            matches!(&a[0], Action::LoadLbMaps { lbs, .. } if lbs.maps.len() == 1 && lbs.maps[0].0 == 0)
        );
        // And in that map only the slots that change: about a third of 251, not all of them.
        let Action::LoadLbMaps { lbs, .. } = &a[0] else {
            unreachable!()
        };
        let nft::MapLoad::Slots(_, slots) = &lbs.maps[0].1 else {
            panic!("a health flip reloads the whole map: {lbs:?}")
        };
        assert!((60..=110).contains(&slots.len()), "{lbs:?}");
        apply_in_memory(P, &mut h, &mut v, &a);
        assert_eq!(plan_router(P, &r, &h, v.get(&7), &down, true).0, vec![]);
        // A map whose contents cannot be rebuilt from its digest is loaded whole.
        let mut unknown = v[&7].clone();
        unknown.lb_digests.insert(0, "0011223344556677".into());
        let (a, _) = plan_router(P, &r, &h, Some(&unknown), &down, true);
        assert!(
            matches!(&a[..], [Action::LoadLbMaps { lbs, .. }] if matches!(lbs.maps[0].1, nft::MapLoad::Full(_))),
            "{a:?}"
        );
        // Wrong number of tables is refused rather than guessed.
        assert!(!plan_router(P, &r, &h, v.get(&7), &[], true).1.is_empty());
        // An internal VIP in a tier is answered on that tier's link.
        let mut internal = r.load_balancers[0].clone();
        internal.name = "internal".into();
        internal.vip = "10.10.1.200".parse().unwrap();
        internal.public = false;
        r.load_balancers.push(internal);
        let a = converge(&r, &mut h, &mut v);
        assert!(a.contains(&Action::AddAddr {
            ns: Some("sfvpc-7".into()),
            dev: "t1000001".into(),
            addr: "10.10.1.200/32".parse().unwrap()
        }));
        assert!(a.iter().any(|x| matches!(x, Action::LoadNft { .. })));
        assert!(!a.iter().any(|x| matches!(x, Action::ReplaceRoute { ns: None, route } if route.dst.to_string() == "10.10.1.200/32")));
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
    }

    #[test]
    fn direct_connect_joins_its_segment_and_goes_away_cleanly() {
        let mut r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        h.links.push(bridge(1_000_100));
        converge(&r, &mut h, &mut v);
        r.direct_connects
            .push(sf_core::desired::DirectConnectPeering {
                name: "hq".into(),
                vni: 1_000_100,
                local: "169.254.100.1/30".parse().unwrap(),
                peer: "169.254.100.2".parse().unwrap(),
                local_asn: 65010,
                peer_asn: 65100,
                accept: vec!["192.168.100.0/24".parse().unwrap()],
                announce: vec!["10.10.1.0/24".parse().unwrap()],
            });
        let a = converge(&r, &mut h, &mut v);
        assert!(a.contains(&Action::AddVeth {
            host: "g7d1000100".into(),
            peer: "d1000100".into(),
            ns: "sfvpc-7".into()
        }));
        assert!(a.contains(&Action::SetMaster {
            link: "g7d1000100".into(),
            master: "brvx-1000100".into()
        }));
        assert!(a.contains(&Action::AddAddr {
            ns: Some("sfvpc-7".into()),
            dev: "d1000100".into(),
            addr: "169.254.100.1/30".parse().unwrap()
        }));
        assert!(a.contains(&Action::SetMac {
            ns: "sfvpc-7".into(),
            link: "d1000100".into(),
            mac: r.mac.clone()
        }));
        // Nothing else of the router is touched but the forward rule of the NAT table, and
        // the DC address is not part of the VPC's inside (never SNATed).
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::DelLink { .. } | Action::ReplaceRoute { .. })));
        assert!(!nft::inside(&r)
            .iter()
            .any(|n| n.contains(&"169.254.100.1".parse::<Ipv4Addr>().unwrap())));
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
        // A BGP-learned route (not observed by the planner) is never in a plan; removal.
        r.direct_connects.clear();
        let a = converge(&r, &mut h, &mut v);
        assert!(a.contains(&Action::DelLink {
            ns: None,
            link: "g7d1000100".into()
        }));
        assert!(v[&7].link("d1000100").is_none());
        assert!(v[&7].link("t1000001").is_some());
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
        // plan_removal takes DC veths with the router.
        r.direct_connects
            .push(sf_core::desired::DirectConnectPeering {
                name: "hq".into(),
                vni: 1_000_100,
                local: "169.254.100.1/30".parse().unwrap(),
                peer: "169.254.100.2".parse().unwrap(),
                local_asn: 65010,
                peer_asn: 65100,
                accept: vec![],
                announce: vec![],
            });
        converge(&r, &mut h, &mut v);
        let a = plan_removal(P, 7, &h);
        assert!(a.contains(&Action::DelLink {
            ns: None,
            link: "g7d1000100".into()
        }));
    }

    #[test]
    fn pairs_are_tiers_by_vni_then_direct_connects_then_transit() {
        let mut r = nft::example();
        r.tiers.push(RouterTier {
            name: "db".into(),
            vni: 1_000_000,
            cidr: "10.10.2.0/24".parse().unwrap(),
            gateway: "10.10.2.1".parse().unwrap(),
            acl: None,
        });
        r.direct_connects
            .push(sf_core::desired::DirectConnectPeering {
                name: "hq".into(),
                vni: 1_000_100,
                local: "169.254.100.1/30".parse().unwrap(),
                peer: "169.254.100.2".parse().unwrap(),
                local_asn: 65010,
                peer_asn: 65100,
                accept: vec![],
                announce: vec![],
            });
        let p = pairs(&r);
        let names: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.host.as_str(), p.peer.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("g7v1000000", "t1000000"),
                ("g7v1000001", "t1000001"),
                ("g7d1000100", "d1000100"),
                ("gx7", "transit")
            ]
        );
        assert_eq!(p[0].master.as_deref(), Some("brvx-1000000"));
        assert_eq!(p[0].peer_mac, Some(r.mac.as_str()));
        assert_eq!(
            p[0].peer_addrs[0],
            "10.10.2.1/24".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(
            p[2].peer_addrs,
            vec!["169.254.100.1/30".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!((p[3].master.as_deref(), p[3].peer_mac), (None, None));
        assert_eq!(
            p[3].host_addrs,
            vec!["198.18.0.14/31".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn drift_is_repaired() {
        let r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, &mut h, &mut v);
        let s = v.get_mut(&7).unwrap();
        s.links
            .iter_mut()
            .find(|l| l.name == "t1000001")
            .unwrap()
            .mac = Some("aa:bb:cc:dd:ee:ff".into());
        s.links
            .iter_mut()
            .find(|l| l.name == "t1000001")
            .unwrap()
            .addrs
            .push("10.99.0.1/24".parse().unwrap());
        s.nft_digest = None;
        s.forwarding = false;
        h.routes.push(Route {
            dst: "203.0.113.99/32".parse().unwrap(),
            via: Some("198.18.0.15".parse().unwrap()),
            dev: Some("gx7".into()),
        });
        // An unrelated host route (BGP-learned) is never touched.
        h.routes.push(Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            via: None,
            dev: Some("leaf1".into()),
        });
        let a = converge(&r, &mut h, &mut v);
        assert_eq!(a.len(), 5, "{a:#?}");
        assert!(h.routes.iter().any(|r| r.dev.as_deref() == Some("leaf1")));
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), true).0,
            vec![]
        );
    }

    #[test]
    fn half_a_pair_is_recreated_and_foreign_links_left_alone() {
        let r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r, &mut h, &mut v);
        v.get_mut(&7).unwrap().links.retain(|l| l.name != "transit");
        let (a, _) = plan_router(P, &r, &h, v.get(&7), &tables(&r), true);
        assert_eq!(
            a[0],
            Action::DelLink {
                ns: None,
                link: "gx7".into()
            }
        );
        assert!(a.contains(&Action::AddVeth {
            host: "gx7".into(),
            peer: "transit".into(),
            ns: "sfvpc-7".into()
        }));
        // A link with our name that we did not create is reported, not touched.
        let mut h2 = host();
        h2.links.push(Link {
            name: "gx7".into(),
            kind: Some("veth".into()),
            ..Default::default()
        });
        let (a, e) = plan_router(P, &r, &h2, None, &tables(&r), true);
        assert_eq!(e.len(), 1);
        assert!(!a.iter().any(|x| matches!(x, Action::DelLink { link, .. } | Action::AddVeth { host: link, .. } if link == "gx7")));
    }

    #[test]
    fn removal_withdraws_routes_first_and_deletes_only_that_router() {
        let r7 = nft::example();
        let mut r8 = nft::example();
        r8.id = 8;
        r8.mac = sf_core::desired::vpc_mac(8);
        r8.snat = Some("203.0.113.20".parse().unwrap());
        r8.port_forwards.clear();
        r8.static_nats.clear();
        let (mut h, mut v) = (host(), BTreeMap::new());
        converge(&r7, &mut h, &mut v);
        converge(&r8, &mut h, &mut v);
        let a = plan_removal(P, 7, &h);
        assert!(matches!(a[0], Action::DelRoute { ns: None, .. }));
        assert_eq!(
            a.last(),
            Some(&Action::DelNetns {
                ns: "sfvpc-7".into()
            })
        );
        apply_in_memory(P, &mut h, &mut v, &a);
        assert!(!v.contains_key(&7));
        assert!(h.link("gx8").is_some() && h.link("g8v1000001").is_some());
        assert!(h.link("gx7").is_none() && h.link("g7v1000001").is_none());
        assert_eq!(
            plan_router(P, &r8, &h, v.get(&8), &tables(&r8), true).0,
            vec![]
        );
    }

    /// `by_router` hands each plan exactly the part of the host it reads: with three routers
    /// built, one stale tier end, a foreign link and a route of no router on the host, every
    /// router plans the same from its view as from the whole host, active or passive.
    #[test]
    fn a_routers_view_of_the_host_plans_as_the_whole_host() {
        let router = |id: u32| {
            let mut r = nft::example();
            r.id = id;
            r.mac = sf_core::desired::vpc_mac(id);
            r.snat = Some(Ipv4Addr::new(203, 0, 113, 20 + id as u8));
            r.port_forwards.clear();
            r.static_nats.clear();
            r
        };
        let rs = [router(7), router(8), router(9)];
        let (mut h, mut v) = (host(), BTreeMap::new());
        for r in &rs {
            converge(r, &mut h, &mut v);
        }
        // Router 8 loses its tier (a stale host end to delete); 9 goes down to passive.
        let mut r8 = rs[1].clone();
        r8.tiers.clear();
        h.links.push(Link {
            name: "g9v1000002".into(),
            kind: Some("veth".into()),
            owned: true,
            ..Default::default()
        });
        h.links.push(Link {
            name: "eth0".into(),
            ..Default::default()
        });
        h.routes.push(Route {
            dst: "192.0.2.0/24".parse().unwrap(),
            via: None,
            dev: Some("eth0".into()),
        });
        let views = h.by_router();
        assert_eq!(views.keys().copied().collect::<Vec<_>>(), [7, 8, 9]);
        for (r, active) in [(&rs[0], true), (&r8, true), (&rs[2], false), (&rs[2], true)] {
            let whole = plan_router(P, r, &h, v.get(&r.id), &tables(r), active);
            let view = plan_router(P, r, &views[&r.id], v.get(&r.id), &tables(r), active);
            assert_eq!(view, whole, "router {}", r.id);
        }
        assert!(
            !plan_router(P, &r8, &views[&8], v.get(&8), &tables(&r8), true)
                .0
                .is_empty()
        );
    }

    #[test]
    fn invalid_router_is_reported_and_not_built() {
        let mut r = nft::example();
        r.id = names::MAX_ID + 1;
        r.mac = "nope".into();
        let (a, e) = plan_router(P, &r, &host(), None, &tables(&r), true);
        assert!(a.is_empty());
        assert_eq!(e.len(), 2);
    }

    /// Etcd's view no longer decides: every desired router is built (primary or standby),
    /// whatever the lease; only routers no longer placed here are removed.
    #[test]
    fn every_placed_router_is_built_and_only_unplaced_ones_removed() {
        let desired = BTreeSet::from([1, 2]);
        let running = BTreeSet::from([2, 3]);
        let d = decide(&desired, &running);
        assert_eq!(d.converge, desired);
        assert_eq!(d.remove, BTreeSet::from([3]));
    }

    /// A passive router is built whole, with its segments down and no host route; turning it
    /// active adds exactly the segment ups and the host routes (anchor first).
    #[test]
    fn a_passive_router_is_built_but_invisible() {
        let r = nft::example();
        let (mut h, mut v) = (host(), BTreeMap::new());
        for t in &r.tiers {
            h.links.push(bridge(t.vni));
        }
        let (a, e) = plan_router(P, &r, &h, None, &tables(&r), false);
        assert!(e.is_empty(), "{e:?}");
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::ReplaceRoute { ns: None, .. })));
        apply_in_memory(P, &mut h, &mut v, &a);
        for t in &r.tiers {
            let l = h.link(&tier_host(r.id, t.vni)).expect("tier host end");
            assert!(!l.up, "{} must be down while passive", l.name);
        }
        assert!(h.link(&transit_host(r.id)).unwrap().up);
        assert_eq!(
            plan_router(P, &r, &h, v.get(&7), &tables(&r), false).0,
            vec![]
        );
        let (up, _) = plan_router(P, &r, &h, v.get(&7), &tables(&r), true);
        let routes: Vec<&Route> = up
            .iter()
            .filter_map(|x| match x {
                Action::ReplaceRoute { ns: None, route } => Some(route),
                _ => None,
            })
            .collect();
        assert_eq!(routes.len(), 1 + r.public_ips().len());
        assert_eq!(
            routes[0].dst.addr(),
            transit_addrs(r.id).unwrap().0,
            "anchor first"
        );
        let ups = up
            .iter()
            .filter(|x| matches!(x, Action::SetUp { ns: None, .. }))
            .count();
        assert_eq!(ups, r.tiers.len());
        apply_in_memory(P, &mut h, &mut v, &up);
        let (down, _) = plan_router(P, &r, &h, v.get(&7), &tables(&r), false);
        assert_eq!(
            down.iter()
                .filter(|x| matches!(x, Action::DelRoute { ns: None, .. }))
                .count(),
            routes.len()
        );
    }
}
