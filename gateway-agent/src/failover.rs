//! The failover controller: which of the VPC routers built on this gateway forward, decided
//! from the fabric's view, not from etcd.
//!
//! Placement gives every VPC a primary and a warm standby; both build the router whole
//! (namespace, addresses, virtual MAC, nftables with the same NAT and Maglev tables). Only the
//! *active* one has its segment host ends up (the virtual MAC is seen on the tiers) and its
//! host routes installed: the VPC's anchor /32 (see [`sf_core::desired::ANCHOR_RANGE`]) and
//! public /32s, which FRR announces by redistribution. Activating or deactivating a router is
//! therefore one pipeline of netlink link and route requests ([`crate::flip`]), whatever the
//! number of VPCs, and never waits for an FRR reload or a reconcile pass.
//!
//! The standby learns the active router's anchor from the fabric (a BGP route in its kernel).
//! BFD on the gateways' fabric sessions withdraws a dead gateway's routes in about half a
//! second; the standby sees its VPCs' anchors leave and takes them over at once. The rules
//! ([`decide`]) never let two gateways announce one VPC:
//! - a gateway that sees the VPC's anchor from another gateway stays passive (a returning
//!   primary does not take its VPCs back: failback is the coordinator's planned move);
//! - a primary activates when no one else announces the VPC once its fabric has settled;
//! - a standby activates only after it saw the anchor (armed) and saw it gone for [`HOLD`];
//! - a gateway with no fabric routes at all deactivates everything (no one can reach it, and
//!   on its return it must first learn who serves now).
//!
//! Losing etcd changes none of this: a partitioned gateway that the fabric still sees keeps
//! serving. The fence ([`crate::fence`]) stands a node down when its agent is dead or hung,
//! with [`stand_down_changes`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::Ipv4Net;
use sf_core::desired::RouterRole;
use sf_core::status::FailoverStatus;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::flip::Change;
use crate::kernel::Kernel;
use crate::names::parse_host_link;
use crate::plan::{HostState, Route};
use crate::plan6::Route6;

/// How long a standby waits after its VPC's anchor left before taking over: a withdrawal
/// followed at once by another path (one of the primary's two leaves failing) is not a death.
pub const HOLD: Duration = Duration::from_millis(150);
/// How long the fabric must have been reachable before a gateway activates anything: on a
/// return, first learn who serves now.
pub const SETTLE: Duration = Duration::from_secs(3);
/// Re-evaluation period (timers) when no route changes.
const TICK: Duration = Duration::from_millis(100);

/// One router as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub id: u32,
    /// "tenant/vpc", as reported in status.
    pub vpc: String,
    pub role: RouterRole,
    /// The anchor /32 this router's active gateway announces.
    pub anchor: Ipv4Addr,
    /// Segment host ends (tiers, Direct Connects): up only while active.
    pub segments: Vec<String>,
    /// Host routes while active (anchor first, then public /32s).
    pub routes: Vec<Route>,
    /// IPv6 host routes while active: the announced ranges into the namespace
    /// ([`crate::plan6::host_routes6`]).
    pub routes6: Vec<Route6>,
}

/// The node's view of the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fabric {
    /// No BGP route at all: no session is up.
    Lost,
    /// Routes are arriving, for less than [`SETTLE`].
    Settling,
    Ready,
}

/// What the fabric says of one VPC's anchor, from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Another gateway announces it.
    pub present: bool,
    /// For how long no one has announced it (None while present, or never seen).
    pub absent_for: Option<Duration>,
}

/// Whether the router should forward. `armed`: this node has seen the anchor from another
/// gateway since it became standby (see the module documentation for the rules).
pub fn decide(role: RouterRole, active: bool, armed: bool, peer: Peer, fabric: Fabric) -> bool {
    match fabric {
        Fabric::Lost => false,
        Fabric::Settling => active && !peer.present,
        Fabric::Ready if peer.present => false,
        Fabric::Ready if active => true,
        Fabric::Ready => match role {
            RouterRole::Primary => true,
            RouterRole::Standby => armed && peer.absent_for.is_some_and(|t| t >= HOLD),
        },
    }
}

#[derive(Debug)]
struct Entry {
    spec: RouterSpec,
    built: bool,
    active: bool,
    armed: bool,
    absent_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<u32, Entry>,
    /// Prefixes of the BGP routes in the main table, as last read.
    bgp: BTreeSet<Ipv4Net>,
    fabric_since: Option<Instant>,
    /// Activate every built router without asking the fabric (`--apply-file`).
    force_active: bool,
    /// The kernel's BGP routes were read at least once (nothing is decided before).
    read: bool,
    /// The last evaluation left a decision that time alone may change (the fabric settling,
    /// a standby's hold running): the next ticks evaluate again. Otherwise only a kick can
    /// change a decision, and an idle gateway's ticks skip the walk over every router.
    timers_pending: bool,
}

impl Inner {
    /// What the status reports: the VPCs forwarded here, and those held passive while
    /// another gateway announces them.
    fn status(&self) -> FailoverStatus {
        let mut st = FailoverStatus::default();
        for e in self.entries.values() {
            if e.active || self.force_active {
                st.serving.insert(e.spec.vpc.clone());
            } else if self.bgp.contains(&host(e.spec.anchor)) {
                st.seen_elsewhere.insert(e.spec.vpc.clone());
            }
        }
        st
    }

    fn fabric(&self, now: Instant) -> Fabric {
        match self.fabric_since {
            None => Fabric::Lost,
            Some(t) if now.duration_since(t) >= SETTLE => Fabric::Ready,
            Some(_) => Fabric::Settling,
        }
    }

    /// Updates the per-VPC views from `self.bgp` and returns the routers to flip (id, active).
    fn evaluate(&mut self, now: Instant) -> Vec<(u32, bool)> {
        let fabric = self.fabric(now);
        let mut flips = Vec::new();
        let mut holding = false;
        if !(self.read || self.force_active) {
            return flips;
        }
        for (id, e) in self.entries.iter_mut() {
            let present = self.bgp.contains(&host(e.spec.anchor));
            if present {
                e.absent_since = None;
                e.armed = true;
            } else if e.armed && e.absent_since.is_none() {
                e.absent_since = Some(now);
            }
            let peer = Peer {
                present,
                absent_for: e.absent_since.map(|t| now.duration_since(t)),
            };
            // A router not built yet (or not yet seen by this process's passes) is left as
            // it is: an agent restarted in place keeps serving until its pass converged it.
            if !e.built {
                continue;
            }
            let want = self.force_active || decide(e.spec.role, e.active, e.armed, peer, fabric);
            if want != e.active {
                flips.push((*id, want));
            } else if !e.active && e.armed && e.absent_since.is_some() {
                holding = true;
            }
        }
        self.timers_pending = fabric == Fabric::Settling || holding;
        flips
    }
}

fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32")
}

/// Shared between the reconcile pass (which builds routers and tells the controller about
/// them) and the controller's task (which flips them).
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Mutex<Inner>>,
    kick: Arc<Notify>,
    /// Held while a router's links and routes change: by the pass for each router it
    /// converges, by the controller for each flip, so neither undoes the other.
    pub kernel: Arc<tokio::sync::Mutex<()>>,
    /// Woken after flips, so the pass follows (health checks of the routers that now run).
    wake: Arc<Notify>,
    /// Woken when only the status changed (a VPC seen served elsewhere, or no longer): the
    /// agent reports it without a pass.
    status_wake: Arc<Notify>,
    /// The gateway's netlink sockets: BGP routes are read on the host's.
    sockets: Arc<Kernel>,
}

impl Controller {
    pub fn new(wake: Arc<Notify>, status_wake: Arc<Notify>, sockets: Arc<Kernel>) -> Self {
        Controller {
            inner: Arc::default(),
            kick: Arc::new(Notify::new()),
            kernel: Arc::default(),
            wake,
            status_wake,
            sockets,
        }
    }

    /// Every built router forwards, without asking the fabric (the `--apply-file` debug path).
    pub fn force_active(&self) {
        self.inner.lock().expect("failover lock").force_active = true;
    }

    pub fn is_active(&self, id: u32) -> bool {
        let g = self.inner.lock().expect("failover lock");
        g.force_active || g.entries.get(&id).is_some_and(|e| e.active)
    }

    pub fn status(&self) -> FailoverStatus {
        self.inner.lock().expect("failover lock").status()
    }

    /// The active router ids.
    pub fn active(&self) -> BTreeSet<u32> {
        let g = self.inner.lock().expect("failover lock");
        g.entries
            .iter()
            .filter(|(_, e)| e.active || g.force_active)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The routers placed here now. A router the controller does not know yet starts active
    /// when its anchor route is already installed (an agent restarted in place keeps serving)
    /// and unbuilt; a role change disarms it. It kicks the controller only when the set
    /// changed: every pass syncs, and at rest nothing moved (the route monitor follows BGP).
    pub fn sync(&self, specs: Vec<RouterSpec>, host: &HostState) {
        let mut g = self.inner.lock().expect("failover lock");
        let keep: BTreeSet<u32> = specs.iter().map(|s| s.id).collect();
        let before = g.entries.len();
        g.entries.retain(|id, _| keep.contains(id));
        let mut changed = g.entries.len() != before;
        for spec in specs {
            match g.entries.get_mut(&spec.id) {
                Some(e) => {
                    if e.spec == spec {
                        continue;
                    }
                    if e.spec.role != spec.role {
                        e.armed = false;
                        e.absent_since = None;
                    }
                    e.spec = spec;
                    changed = true;
                }
                None => {
                    changed = true;
                    let active = anchor_installed(host, &spec);
                    g.entries.insert(
                        spec.id,
                        Entry {
                            spec,
                            built: false,
                            active,
                            armed: false,
                            absent_since: None,
                        },
                    );
                }
            }
        }
        drop(g);
        if changed {
            self.kick.notify_one();
        }
    }

    /// Router `id` is built (its pass converged it cleanly): it may be activated.
    pub fn built(&self, id: u32) {
        let mut g = self.inner.lock().expect("failover lock");
        if let Some(e) = g.entries.get_mut(&id) {
            if !e.built {
                e.built = true;
                drop(g);
                self.kick.notify_one();
            }
        }
    }

    /// Watches the kernel's routes and flips routers, forever.
    pub async fn run(self) {
        let monitor = tokio::spawn(watch_routes(self.kick.clone()));
        let mut reported = FailoverStatus::default();
        loop {
            let kicked = tokio::select! {
                _ = self.kick.notified() => true,
                _ = tokio::time::sleep(TICK) => false,
            };
            if kicked {
                // A withdrawal comes as a burst of route deletions: read once after it.
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.read_bgp().await;
            }
            let flips = {
                let mut g = self.inner.lock().expect("failover lock");
                if kicked || g.timers_pending {
                    g.evaluate(Instant::now())
                } else {
                    Vec::new()
                }
            };
            let flipped = !flips.is_empty();
            if flipped {
                self.flip(flips).await;
            }
            // The status changes only with the BGP routes, the routers placed here (both
            // kick) or a flip; rebuilding it on every tick cloned every VPC's name ten
            // times a second at 1,000 routers.
            if kicked || flipped {
                let now = self.status();
                if now != reported {
                    // The agent's next pass reports it (placement follows the fabric).
                    let moved = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
                        a.symmetric_difference(b)
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                    };
                    info!(
                        serving = now.serving.len(),
                        seen_elsewhere = now.seen_elsewhere.len(),
                        serving_moved = ?moved(&now.serving, &reported.serving),
                        seen_moved = ?moved(&now.seen_elsewhere, &reported.seen_elsewhere),
                        "failover status changed"
                    );
                    reported = now;
                    // A flip has woken a pass already (its routers' health checks and
                    // router advertisements follow); a peer's announcement arriving or
                    // leaving changes only what this gateway reports. At 1,000 routers
                    // those arrive one by one for minutes after the peer activated its
                    // routers, and a pass for each kept an idle gateway at a pass every
                    // few seconds.
                    if !flipped {
                        self.status_wake.notify_one();
                    }
                }
            }
            if monitor.is_finished() {
                error!("route monitor ended; failover follows the fabric by polling only");
            }
        }
    }

    /// The BGP routes of the host's main table, from one route dump on the host's socket
    /// (what `ip -4 route show proto bgp` prints, without a process per read).
    async fn read_bgp_routes(&self) -> Result<BTreeSet<Ipv4Net>, sf_linux::DeviceError> {
        use sf_linux::netlink::route;
        let routes = route::dump_v4(&self.sockets.host()?, route::MAIN)
            .await
            .map_err(|e| e.on("dump the IPv4 routes"))?;
        Ok(bgp_destinations(&routes))
    }

    async fn read_bgp(&self) {
        match self.read_bgp_routes().await {
            Ok(bgp) => {
                let mut g = self.inner.lock().expect("failover lock");
                match (bgp.is_empty(), g.fabric_since) {
                    (true, Some(_)) => {
                        warn!("no BGP route left: fabric lost, every VPC router goes passive");
                        g.fabric_since = None;
                    }
                    (false, None) => {
                        info!(routes = bgp.len(), "fabric reachable");
                        g.fabric_since = Some(Instant::now());
                    }
                    _ => {}
                }
                g.bgp = bgp;
                g.read = true;
            }
            Err(e) => warn!(error = %e, "reading BGP routes"),
        }
    }

    /// Activates and deactivates routers in one pipeline of netlink requests.
    async fn flip(&self, flips: Vec<(u32, bool)>) {
        let _kernel = self.kernel.lock().await;
        let (changes, done) = {
            let g = self.inner.lock().expect("failover lock");
            let mut changes = Vec::new();
            let mut done = Vec::new();
            for (id, up) in &flips {
                if let Some(e) = g.entries.get(id) {
                    changes.extend(if *up {
                        activation(&e.spec)
                    } else {
                        deactivation(&e.spec)
                    });
                    done.push((*id, *up, e.spec.role));
                }
            }
            (changes, done)
        };
        let t = Instant::now();
        match self.sockets.host() {
            Ok(nl) => {
                let applied = crate::flip::apply(&nl, &changes).await;
                if !applied.failed.is_empty() {
                    // The other changes were applied (as `ip -force -batch` did).
                    warn!(failed = ?applied.failed, "some failover changes failed");
                }
            }
            Err(e) => error!(error = %e, "no host socket: failover changes not applied"),
        }
        let elapsed_ms = t.elapsed().as_millis();
        let mut g = self.inner.lock().expect("failover lock");
        for (id, up, role) in done {
            if let Some(e) = g.entries.get_mut(&id) {
                e.active = up;
            }
            if up {
                info!(
                    id,
                    ?role,
                    elapsed_ms,
                    "VPC router ACTIVE: forwarding and announced"
                );
            } else {
                info!(id, ?role, elapsed_ms, "VPC router passive: withdrawn");
            }
        }
        drop(g);
        self.wake.notify_one();
    }
}

/// Whether `spec`'s anchor route is installed on the host (the router is active).
fn anchor_installed(host: &HostState, spec: &RouterSpec) -> bool {
    spec.routes
        .first()
        .is_some_and(|anchor| host.routes.iter().any(|r| r == anchor))
}

/// The changes that make a router forward: segments up, then its routes (the anchor last,
/// so the standby sees it only once everything else is in place).
pub fn activation(spec: &RouterSpec) -> Vec<Change> {
    let mut v: Vec<Change> = spec.segments.iter().cloned().map(Change::LinkUp).collect();
    v.extend(spec.routes6.iter().cloned().map(Change::ReplaceRoute6));
    v.extend(spec.routes.iter().rev().cloned().map(Change::ReplaceRoute));
    v
}

/// The changes that make a router passive: routes first (withdrawal, anchor first), then its
/// segments down (its virtual MAC leaves the tiers).
pub fn deactivation(spec: &RouterSpec) -> Vec<Change> {
    let mut v: Vec<Change> = spec.routes.iter().cloned().map(Change::DelRoute).collect();
    v.extend(spec.routes6.iter().cloned().map(Change::DelRoute6));
    v.extend(spec.segments.iter().cloned().map(Change::LinkDown));
    v
}

/// The changes that make every router of the host passive, from what is observed alone (the
/// fence has no desired state to trust): every route through a router's transit link
/// deleted, every segment host end we own set down.
pub fn stand_down_changes(host: &HostState) -> Vec<Change> {
    let mut v = Vec::new();
    // A router's transit host end is the one host link named for a router without a VNI.
    let transit = |dev: Option<&str>| {
        dev.and_then(parse_host_link)
            .is_some_and(|h| h.vni().is_none())
    };
    for r in host.routes.iter().filter(|r| transit(r.dev.as_deref())) {
        v.push(Change::DelRoute(r.clone()));
    }
    for r in host.routes6.iter().filter(|r| transit(r.dev.as_deref())) {
        v.push(Change::DelRoute6(r.clone()));
    }
    for l in &host.links {
        let segment = parse_host_link(&l.name).is_some_and(|h| h.vni().is_some());
        if segment && l.owned && l.up {
            v.push(Change::LinkDown(l.name.clone()));
        }
    }
    v
}

/// Prefixes of `ip -j -4 route show proto bgp`.
pub fn bgp_destinations(routes: &[sf_linux::netlink::route::RouteV4]) -> BTreeSet<Ipv4Net> {
    use sf_linux::netlink::route::RouteProtocol;
    routes
        .iter()
        .filter(|r| r.protocol == RouteProtocol::Bgp)
        .map(|r| r.dst)
        .collect()
}

/// Kicks the controller on every IPv4 route change of the host namespace, from a netlink
/// subscription (reopened if it ends). Opened by the controller's task: the agent's threads
/// are in the host namespace.
async fn watch_routes(kick: Arc<Notify>) {
    loop {
        match sf_linux::netlink::events::route_changes_v4() {
            Ok(changes) => {
                // Routes may have moved before the subscription: read once.
                kick.notify_one();
                let mut changes = std::pin::pin!(changes);
                while changes.next().await.is_some() {
                    kick.notify_one();
                }
                warn!("the route subscription ended; reopening it");
            }
            Err(e) => warn!(error = %e, "cannot subscribe to route changes"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_linux::links::Link;

    /// Changes as `ip` would be told them.
    fn text(changes: Vec<Change>) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    const P: RouterRole = RouterRole::Primary;
    const S: RouterRole = RouterRole::Standby;

    fn peer(present: bool, absent_ms: Option<u64>) -> Peer {
        Peer {
            present,
            absent_for: absent_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_fabric_decides_who_forwards() {
        let ready = Fabric::Ready;
        // A primary forwards when no one else announces the VPC...
        assert!(decide(P, false, false, peer(false, None), ready));
        // ...and stays passive while another gateway does (no failback).
        assert!(!decide(P, false, true, peer(true, None), ready));
        // A standby takes over only once armed and after the hold.
        assert!(
            !decide(S, false, false, peer(false, None), ready),
            "never saw a primary"
        );
        assert!(
            !decide(S, false, true, peer(false, Some(50)), ready),
            "within the hold"
        );
        assert!(decide(S, false, true, peer(false, Some(150)), ready));
        // An active standby keeps forwarding; anyone yields to an announcement it sees.
        assert!(decide(S, true, true, peer(false, None), ready));
        assert!(!decide(S, true, true, peer(true, None), ready));
        assert!(!decide(P, true, true, peer(true, None), ready));
        // No fabric: nothing forwards. Settling: nothing new, the active stay.
        assert!(!decide(P, true, false, peer(false, None), Fabric::Lost));
        assert!(!decide(
            P,
            false,
            false,
            peer(false, None),
            Fabric::Settling
        ));
        assert!(decide(P, true, false, peer(false, None), Fabric::Settling));
    }

    fn spec(id: u32, role: RouterRole) -> RouterSpec {
        let anchor = Ipv4Addr::new(198, 18, 0, 2 * id as u8);
        RouterSpec {
            id,
            vpc: format!("t/v{id}"),
            role,
            anchor,
            segments: vec![format!("g{id}v100")],
            routes: vec![
                Route {
                    dst: host(anchor),
                    via: None,
                    dev: Some(format!("gx{id}")),
                },
                Route {
                    dst: "203.0.113.10/32".parse().unwrap(),
                    via: Some(Ipv4Addr::new(198, 18, 0, 2 * id as u8 + 1)),
                    dev: Some(format!("gx{id}")),
                },
            ],
            routes6: vec![],
        }
    }

    fn controller() -> Controller {
        Controller::new(
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::default(),
        )
    }

    /// A standby arms on the primary's anchor, takes over after the hold once it leaves,
    /// and nothing flips before its router is built.
    #[test]
    fn a_standby_takes_over_when_the_anchor_leaves() {
        let c = controller();
        c.sync(vec![spec(7, S)], &HostState::default());
        let t0 = Instant::now();
        let mut g = c.inner.lock().unwrap();
        g.read = true;
        g.fabric_since = Some(t0 - SETTLE);
        g.bgp.insert(host(Ipv4Addr::new(198, 18, 0, 14)));
        assert!(g.evaluate(t0).is_empty());
        g.entries.get_mut(&7).unwrap().built = true;
        assert!(g.evaluate(t0).is_empty(), "the primary announces");
        g.bgp.clear();
        assert!(
            g.evaluate(t0 + Duration::from_millis(10)).is_empty(),
            "hold"
        );
        assert_eq!(g.evaluate(t0 + Duration::from_millis(200)), vec![(7, true)]);
    }

    /// Ticks re-evaluate only while time can change a decision: the fabric settling or a
    /// standby's hold running. At rest nothing is pending, and a tick walks no router.
    #[test]
    fn only_a_running_timer_needs_the_tick() {
        let c = controller();
        c.sync(vec![spec(7, S)], &HostState::default());
        let t0 = Instant::now();
        let mut g = c.inner.lock().unwrap();
        g.read = true;
        g.entries.get_mut(&7).unwrap().built = true;
        g.fabric_since = Some(t0);
        g.bgp.insert(host(Ipv4Addr::new(198, 18, 0, 14)));
        assert!(g.evaluate(t0).is_empty());
        assert!(g.timers_pending, "the fabric is settling");
        assert!(g.evaluate(t0 + SETTLE).is_empty());
        assert!(
            !g.timers_pending,
            "settled, the primary announces: nothing to wait for"
        );
        g.bgp.clear();
        assert!(g.evaluate(t0 + SETTLE).is_empty(), "hold");
        assert!(g.timers_pending, "the standby's hold runs");
        let later = t0 + SETTLE + HOLD;
        assert_eq!(g.evaluate(later), vec![(7, true)]);
        g.entries.get_mut(&7).unwrap().active = true;
        assert!(g.evaluate(later).is_empty());
        assert!(!g.timers_pending, "serving: nothing to wait for");
    }

    /// An agent restarted in place finds its anchor installed: the router stays active.
    #[test]
    fn a_restarted_agent_keeps_what_it_serves() {
        let c = controller();
        let s = spec(3, P);
        let host = HostState {
            routes: s.routes.clone(),
            ..Default::default()
        };
        c.sync(vec![s], &host);
        assert!(c.is_active(3));
        let mut g = c.inner.lock().unwrap();
        g.read = true;
        let now = Instant::now();
        g.fabric_since = None;
        assert!(
            g.evaluate(now).is_empty(),
            "not built by this process yet: left alone"
        );
        g.entries.get_mut(&3).unwrap().built = true;
        g.fabric_since = Some(now);
        assert!(g.evaluate(now).is_empty(), "settling keeps it");
        g.fabric_since = None;
        assert_eq!(g.evaluate(now), vec![(3, false)], "fabric lost");
    }

    #[test]
    fn flips_are_batches_of_links_and_routes() {
        let s = spec(7, P);
        assert_eq!(
            text(activation(&s)),
            vec![
                "link set dev g7v100 up",
                "route replace 203.0.113.10/32 via 198.18.0.15 dev gx7",
                "route replace 198.18.0.14/32 dev gx7",
            ]
        );
        assert_eq!(
            text(deactivation(&s)),
            vec![
                "route del 198.18.0.14/32 dev gx7",
                "route del 203.0.113.10/32 via 198.18.0.15 dev gx7",
                "link set dev g7v100 down",
            ]
        );
    }

    /// A dual-stack router's announced IPv6 ranges come and go with its IPv4 routes: added
    /// before the anchor on activation, withdrawn right after it on deactivation, and the
    /// fence withdraws every IPv6 route through a transit link too.
    #[test]
    fn ipv6_ranges_flip_with_the_router() {
        let mut s = spec(7, P);
        s.routes6 = vec![Route6 {
            dst: "2001:db8:100::/48".parse().unwrap(),
            via: Some("fe80::2".parse().unwrap()),
            dev: Some("gx7".into()),
        }];
        let v6 = "2001:db8:100::/48 via fe80::2 dev gx7";
        let up = text(activation(&s));
        assert_eq!(up[1], format!("route replace {v6}"));
        assert_eq!(up.last().unwrap(), "route replace 198.18.0.14/32 dev gx7");
        let down = text(deactivation(&s));
        assert_eq!(down[0], "route del 198.18.0.14/32 dev gx7");
        assert_eq!(down[2], format!("route del {v6}"));
        let mut host = HostState {
            routes6: s.routes6.clone(),
            ..Default::default()
        };
        host.routes6.push(Route6 {
            dst: "2001:db8:ffff::/48".parse().unwrap(),
            via: Some("fe80::9".parse().unwrap()),
            dev: Some("eth0".into()),
        });
        assert_eq!(
            text(stand_down_changes(&host)),
            vec![format!("route del {v6}")]
        );
    }

    #[test]
    fn the_fence_stands_down_what_it_observes() {
        let s = spec(7, P);
        let mut host = HostState {
            routes: s.routes.clone(),
            ..Default::default()
        };
        host.routes.push(Route {
            dst: "10.0.0.0/8".parse().unwrap(),
            via: None,
            dev: Some("eth0".into()),
        });
        let link = |name: &str, owned, up| Link {
            name: name.into(),
            owned,
            up,
            ..Default::default()
        };
        host.links = vec![
            link("g7v100", true, true),
            link("g7v101", true, false),
            link("g8v100", false, true),
            link("gx7", true, true),
            link("eth0", false, true),
        ];
        assert_eq!(
            text(stand_down_changes(&host)),
            vec![
                "route del 198.18.0.14/32 dev gx7",
                "route del 203.0.113.10/32 via 198.18.0.15 dev gx7",
                "link set dev g7v100 down",
            ]
        );
    }

    #[test]
    fn only_bgp_routes_count() {
        use sf_linux::netlink::route::{RouteProtocol, RouteType, RouteV4, MAIN};
        let r = |dst: &str, protocol| RouteV4 {
            dst: dst.parse().unwrap(),
            gateway: None,
            oif: Some(3),
            protocol,
            kind: RouteType::Unicast,
            table: MAIN,
        };
        let routes = [
            r("198.18.0.14/32", RouteProtocol::Bgp),
            r("0.0.0.0/0", RouteProtocol::Bgp),
            r("10.255.0.0/24", RouteProtocol::Bgp),
            r("198.18.0.16/32", RouteProtocol::Boot),
            r("172.31.255.0/24", RouteProtocol::Kernel),
        ];
        let got = bgp_destinations(&routes);
        assert!(got.contains(&"198.18.0.14/32".parse().unwrap()));
        assert!(got.contains(&Ipv4Net::default()));
        assert_eq!(got.len(), 3);
    }

    /// A pass that syncs the same routers does not wake the controller (it would re-read
    /// the BGP routes on every pass); a new router, a changed one or a removed one does.
    #[test]
    fn an_unchanged_sync_does_not_kick() {
        let c = Controller::new(
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::default(),
        );
        let spec = |id: u32, role| RouterSpec {
            id,
            vpc: format!("t/v{id}"),
            role,
            anchor: Ipv4Addr::new(198, 18, 0, id as u8),
            segments: vec![],
            routes: vec![],
            routes6: vec![],
        };
        let host = HostState::default();
        let kicked = |c: &Controller| {
            let n = c.kick.notified();
            tokio::pin!(n);
            futures::FutureExt::now_or_never(n.as_mut()).is_some()
        };
        c.sync(vec![spec(1, RouterRole::Primary)], &host);
        assert!(kicked(&c), "a new router");
        c.sync(vec![spec(1, RouterRole::Primary)], &host);
        assert!(!kicked(&c), "nothing changed");
        c.sync(vec![spec(1, RouterRole::Standby)], &host);
        assert!(kicked(&c), "a role change");
        c.sync(vec![], &host);
        assert!(kicked(&c), "a removal");
    }
}
