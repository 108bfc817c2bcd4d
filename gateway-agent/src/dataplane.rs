//! The gateway's Linux dataplane. Each pass:
//!
//! 1. observes the VPC namespaces (`<prefix><id>`): every desired router (primary or warm
//!    standby) is converged, the others removed ([`plan::decide`]), and tells the failover
//!    controller ([`crate::failover`]) which routers are placed here;
//! 2. removes routers no longer served (public routes first, then veths, then namespace);
//! 3. converges L2 exactly like a hypervisor (`sf_linux::l2`: VTEP, `vxlan<VNI>`/`brvx-<VNI>`);
//! 4. converges each router ([`plan::plan_router`]: namespace, tier, Direct Connect
//!    and transit veths, addresses, virtual MAC, routes, nftables; segments up and host /32
//!    routes only on a router the controller made active), then the
//!    per-VPC FRR of the routers with Direct Connects ([`crate::dc`]: started when missing or
//!    dead, configured by diff, stopped when the last DC goes; stopped *before* a router's
//!    namespace is deleted);
//! 5. applies FRR (which announces the active routers' host routes by redistribution: its
//!    configuration names no VPC, so a failover never reloads it);
//! 6. (between 4 and 5 in code) points the health checkers ([`crate::health`]) at the load
//!    balancers of the routers that run. A backend's health flip triggers [`Dataplane::wakeup`], so the next pass follows at
//!    once and rewrites only that load balancer's map.
//!
//! Load balancer tables are computed per pass from the current health (Maglev over the UP
//! backends) and cached by their input, so a pass without a health change costs no Maglev
//! computation.
//!
//! Nothing is changed when the node is converged: a second pass reports zero changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{DesiredObject, HealthCheck, NodeDesired, Underlay, VpcRouter, VpcRouter6};
use sf_core::status::{DcStatus, LbStatus};
use sf_linux::blackhole;
use sf_linux::converge::{OnFailure, Pass, Plan, ReconcileError, Stage, Step};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::l2::{self, foreign_vnis};
use sf_linux::links::Link;
use sf_linux::netlink::mirror::Mirror;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::conntrack;
use crate::dc;
use crate::device;
use crate::exec::Exec;
use crate::failover::{self, RouterSpec};
use crate::health::{Health, Probe};
use crate::kernel::Kernel;
use crate::names::{netns_id, netns_name};
use crate::nft;
use crate::plan::{self, Action, HostState, NsState};
use crate::plan6;
use crate::ra;

pub struct Gateway {
    pub node: String,
    pub frr: Frr,
    pub netns_prefix: String,
    passes: u64,
    last_frr: Option<String>,
    wake: Arc<Notify>,
    /// Woken when only the reported status changed ([`Dataplane::status_wakeup`]).
    status_wake: Arc<Notify>,
    health: Health,
    /// Router advertisements of the active dual-stack routers.
    ra: ra::Advertisers,
    /// Maglev tables by input (table size and the UP backends).
    lb_cache: HashMap<String, Arc<nft::LbTable>>,
    /// What is installed, per router id: "tenant/vpc/lb" → status.
    lb_installed: BTreeMap<u32, BTreeMap<String, LbStatus>>,
    /// The destination translations each router performs, as last converged by this process:
    /// what they lose is cut from conntrack (see [`conntrack`]).
    dnat_installed: BTreeMap<u32, BTreeSet<conntrack::Target>>,
    /// Routers whose health this process seeded from their installed maps ([`Gateway::seed_health`]).
    health_seeded: BTreeSet<u32>,
    /// The agent's state dir: per-VPC FRR instances live in `<state_dir>/vpc-frr/<netns>`.
    pub state_dir: PathBuf,
    /// Per-VPC FRR instances configured by this process, by namespace.
    dc_frr: BTreeMap<String, Frr>,
    dc_poller: dc::Poller,
    dc_poll_task: Option<tokio::task::JoinHandle<()>>,
    /// Which built routers forward (see [`failover`]).
    pub failover: failover::Controller,
    failover_task: Option<tokio::task::JoinHandle<()>>,
    /// The netlink sockets of the host and of each VPC namespace.
    pub kernel: Arc<Kernel>,
    /// Routers found converged, with what they were converged from ([`Quiet`]).
    quiet: HashMap<u32, Quiet>,
    /// Routers left as they were (quiet) in the last pass, and routers converged.
    pub last_quiet: usize,
    pub last_converged: usize,
    /// The host's links, addresses and routes, kept from the kernel's messages (opened on
    /// first use): a pass reads the host from it instead of dumping ~4,000 links. With its
    /// own socket for dumps: the failover controller dumps routes on the host socket at any
    /// time, and a socket runs one dump at a time (EBUSY otherwise).
    mirror: Option<(Mirror, sf_linux::netlink::Netlink)>,
}

/// What a router was converged from, when its last pass left it clean: its inputs (desired
/// router, its IPv6 side, its part of the host, its load balancer tables, whether it is
/// active), the namespace's nftables generation and forwarding switches after the pass.
/// A later pass with the same inputs, the same generation and switches, and no link, address
/// or route event in the namespace since ([`crate::kernel::NsSocket::moved`]) has nothing to
/// find there and leaves the router as it is; every tenth pass converges every router anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quiet {
    inputs: u64,
    nft_generation: u32,
    forwarding: (bool, bool),
}

/// A digest of what a router's plan reads besides its namespace (see [`Quiet`]).
fn router_inputs(
    r: &VpcRouter,
    r6: Option<&VpcRouter6>,
    host: &HostState,
    tables: &[Arc<nft::LbTable>],
    active: bool,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{r:?}|{r6:?}|{host:?}|{active}").hash(&mut h);
    for t in tables {
        t.maglev_digest.hash(&mut h);
    }
    h.finish()
}

/// The namespace's state that no link, address or route event reports.
fn quiet_state(k: &crate::kernel::NsSocket) -> Option<(u32, (bool, bool))> {
    let generation = k.nft_generation().ok()?;
    Some((generation, (k.forwarding().ok()?, k.forwarding6().ok()?)))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in [self.dc_poll_task.take(), self.failover_task.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

impl Gateway {
    pub fn new(node: String, frr: Frr, netns_prefix: String, state_dir: PathBuf) -> Self {
        let wake = Arc::new(Notify::new());
        let status_wake = Arc::new(Notify::new());
        let kernel = Arc::new(Kernel::default());
        Gateway {
            node,
            frr,
            netns_prefix,
            passes: 0,
            last_frr: None,
            health: Health::new(wake.clone()),
            ra: ra::Advertisers::default(),
            failover: failover::Controller::new(wake.clone(), status_wake.clone(), kernel.clone()),
            failover_task: None,
            wake,
            status_wake,
            lb_cache: HashMap::new(),
            lb_installed: BTreeMap::new(),
            dnat_installed: BTreeMap::new(),
            health_seeded: BTreeSet::new(),
            state_dir,
            dc_frr: BTreeMap::new(),
            dc_poller: dc::Poller::default(),
            dc_poll_task: None,
            kernel,
            quiet: HashMap::new(),
            last_quiet: 0,
            last_converged: 0,
            mirror: None,
        }
    }

    /// Stops and removes the per-VPC FRR of namespace `ns`, if any (before its namespace is
    /// deleted: daemons left inside would keep a deleted namespace alive).
    async fn remove_dc_frr(&mut self, ns: &str, pass: &mut Pass) {
        self.dc_frr.remove(ns);
        if dc::remove(&dc::instance_dir(&self.state_dir, ns)).await {
            info!(%ns, "per-VPC FRR stopped");
            pass.changes += 1;
        }
    }

    /// Ensures the per-VPC FRR of `ns` runs (restarted if any daemon died) with `config`.
    /// Returns whether anything changed.
    async fn sync_dc_frr(
        &mut self,
        ns: &str,
        dir: &Path,
        config: &str,
        expect: &[String],
    ) -> Result<bool, String> {
        let mut changed = false;
        if !dc::alive(dir) {
            if dir.join("zebra.pid").exists() || dir.join("bgpd.pid").exists() {
                warn!(%ns, dir = %dir.display(), "per-VPC FRR is not running: restarting it");
            }
            self.dc_frr.remove(ns);
            dc::start(ns, dir, config).await?;
            changed = true;
        }
        let force = changed || self.passes % 10 == 1;
        let applied_file = dir.join("applied.conf");
        if std::fs::read_to_string(&applied_file).ok().as_deref() != Some(config) {
            changed = true;
        }
        let frr = self
            .dc_frr
            .entry(ns.to_string())
            .or_insert_with(|| Frr::new(dir.to_path_buf()));
        frr.apply(config, expect, force)
            .await
            .map_err(|e| format!("{ns}: FRR: {e}"))?;
        if let Err(e) = std::fs::write(&applied_file, config) {
            warn!(file = %applied_file.display(), error = %e, "cannot record the applied FRR configuration");
        }
        Ok(changed)
    }

    /// The Maglev tables of router `r` (namespace `ns`) over its UP backends, in
    /// [`nft::load_balancers`] order (`lbs`: those, or the IPv6 side's
    /// [`crate::nft6::load_balancers6`]), and the status each would report once installed.
    fn lb_tables(
        &self,
        ns: &str,
        r: &VpcRouter,
        lbs: Vec<&sf_core::desired::LoadBalancer>,
        cache: &mut HashMap<String, Arc<nft::LbTable>>,
    ) -> (Vec<Arc<nft::LbTable>>, BTreeMap<String, LbStatus>) {
        let mut tables = Vec::new();
        let mut status = BTreeMap::new();
        for lb in lbs {
            let reading = nft::LbReading::new(lb, |b| match lb.health {
                HealthCheck::None => (true, true),
                _ => self.health.state(ns, &lb.name, &b.name),
            });
            let key = reading.key();
            let t = match cache.get(&key).or_else(|| self.lb_cache.get(&key)) {
                Some(t) => t.clone(),
                None => Arc::new(reading.table()),
            };
            cache.insert(key, t.clone());
            status.insert(
                format!("{}/{}/{}", r.tenant, r.vpc, lb.name),
                LbStatus {
                    table_digest: t.maglev_digest.clone(),
                    backends: reading.status(),
                    unverified: reading.unverified(),
                },
            );
            tables.push(t);
        }
        (tables, status)
    }

    /// This process's first look at a running router (after a restart): each checked
    /// backend without a probe starts as the map installed in the kernel holds it, so a
    /// backend the previous process had taken out stays out until it rises (see
    /// [`crate::health`]). A map whose contents cannot be rebuilt from its digest seeds
    /// nothing: its backends start UP.
    async fn seed_health(&mut self, ns: &str, r: &VpcRouter, r6: Option<&VpcRouter6>) {
        let lbs = [
            nft::load_balancers(r),
            r6.map(crate::nft6::load_balancers6).unwrap_or_default(),
        ];
        let unprobed = |lb: &&sf_core::desired::LoadBalancer| {
            lb.health != HealthCheck::None
                && nft::lb_backends(lb)
                    .iter()
                    .any(|b| !self.health.is_probed(ns, &lb.name, &b.name))
        };
        if !lbs.iter().flatten().any(unprobed) {
            return;
        }
        let installed = match device::observe_lb_maps(&self.kernel, ns).await {
            Ok(m) => m,
            Err(e) => {
                warn!(%ns, error = %e, "cannot read the installed load balancer maps: backends start UP");
                return;
            }
        };
        for (lbs, installed) in lbs.iter().zip(&installed) {
            for (i, lb) in lbs.iter().enumerate() {
                if lb.health == HealthCheck::None {
                    continue;
                }
                let Some(table) = installed.get(&i).and_then(|d| nft::installed_table(lb, d))
                else {
                    continue;
                };
                for b in nft::lb_backends(lb) {
                    let member = table.targets.contains(&(b.ip, b.port));
                    self.health.seed(ns, &lb.name, &b.name, member);
                }
                info!(%ns, lb = %lb.name, up = table.targets.len(), "backends start as installed");
            }
        }
    }

    /// A passive router cannot check its backends (its tier links are down): it holds the
    /// serving gateway's word instead (`LoadBalancer::peer_down`, compiled from that
    /// gateway's status), so its tables match the serving router's and its checks start from
    /// that word when it turns active: a failover puts no dead backend back, not even for
    /// the first check. The word is a seed ([`Health::seed`]), verified: once checked here a
    /// DOWN backend must rise and an UP one must fail `fall` times. Not unverified: the first
    /// check of a router that just turned active can time out while its links come up (0.5 s
    /// in one CI run), and a healthy backend taken out on that would lose its established
    /// connections (they are cut when a backend goes DOWN). A probed backend ignores seeds:
    /// a router's own checks outrank another gateway's.
    fn follow_peer_health(&mut self, ns: &str, r: &VpcRouter, r6: Option<&VpcRouter6>) {
        let lbs6 = r6.map(crate::nft6::load_balancers6).unwrap_or_default();
        for lb in nft::load_balancers(r).into_iter().chain(lbs6) {
            // No word (no gateway serves it now, as while a drained one hands over): the
            // last word stands.
            let Some(peer_down) = &lb.peer_down else {
                continue;
            };
            if lb.health == HealthCheck::None {
                continue;
            }
            for b in nft::lb_backends(lb) {
                let up = !peer_down.contains(&b.name);
                self.health.seed(ns, &lb.name, &b.name, up);
            }
        }
    }

    /// Health probes of router `r`'s load balancers, IPv6 ones (of `r6`) included.
    fn probes(r: &VpcRouter, r6: Option<&VpcRouter6>) -> Vec<Probe> {
        nft::load_balancers(r)
            .into_iter()
            .chain(r6.map(crate::nft6::load_balancers6).unwrap_or_default())
            .filter(|lb| lb.health != HealthCheck::None)
            .flat_map(|lb| {
                nft::lb_backends(lb).into_iter().map(move |b| Probe {
                    lb: lb.name.clone(),
                    backend: b.name.clone(),
                    ip: b.ip,
                    port: b.port,
                    check: lb.health.clone(),
                })
            })
            .collect()
    }

    /// Whether frr-reload.py would change anything (first pass of a process only: after a
    /// restart, applying the same configuration must not count as a change).
    async fn frr_differs(&self, config: &str) -> bool {
        let conf = self.frr.dir.join("stackfabric.check.conf");
        if std::fs::write(&conf, config).is_err() {
            return true;
        }
        let dir = self.frr.dir.to_string_lossy().to_string();
        let out = sf_linux::run(
            "python3",
            &[
                &self.frr.reload_script.to_string_lossy(),
                "--test",
                "--stdout",
                "--vty_socket",
                &dir,
                "--confdir",
                &dir,
                "--rundir",
                &dir,
                &conf.to_string_lossy(),
            ],
        )
        .await;
        let _ = std::fs::remove_file(&conf);
        match out {
            Ok(o) => frr_diff_is_real(&o),
            Err(_) => true,
        }
    }
}

/// Whether `frr-reload.py --test` output contains a real difference. FRR 8.4 always reports
/// two no-ops: the per-daemon `hostname` (daemons without one show the system's) and
/// `no bgp ebgp-requires-policy` (the `datacenter` default, so never shown as running).
/// Context lines (`router bgp N`, `address-family ...`) only frame the real lines.
pub fn frr_diff_is_real(test_output: &str) -> bool {
    let mut in_diff = false;
    for line in test_output.lines() {
        let l = line.trim();
        if l == "Lines To Delete" || l == "Lines To Add" {
            in_diff = true;
            continue;
        }
        if !in_diff || l.is_empty() || l.starts_with("===") || l == "!" {
            continue;
        }
        let noise = l.starts_with("hostname ")
            || l.starts_with("no hostname ")
            || l == "no bgp ebgp-requires-policy"
            || l.starts_with("router ")
            || l.starts_with("address-family ")
            || l.starts_with("exit");
        if !noise {
            return true;
        }
    }
    false
}

/// Where a pass's time went, stage by stage (the debug log of each pass).
struct StageClock {
    last: std::time::Instant,
    laps: Vec<(&'static str, u128)>,
}

impl StageClock {
    fn start() -> Self {
        StageClock {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((stage, (now - self.last).as_micros()));
        self.last = now;
    }
}

impl std::fmt::Display for StageClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (stage, us)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{stage} {:.1} ms", *us as f64 / 1000.0)?;
        }
        Ok(())
    }
}

/// The object name of VPC router `id` in errors and logs.
fn vpc(id: u32) -> String {
    format!("vpc {id}")
}

/// Per-pass inputs shared by the stages of a gateway's reconcile.
struct Scope<'a> {
    prefix: String,
    routers: BTreeMap<u32, &'a VpcRouter>,
    /// The IPv6 sides of the dual-stack routers, by id.
    routers6: BTreeMap<u32, &'a VpcRouter6>,
    /// VPC routers whose namespace exists at the start of the pass.
    running: BTreeSet<u32>,
    d: plan::Decision,
    /// The host as observed at the start of the pass. Unless the pass removed a router, the
    /// routers are converged against this observation instead of a second dump of every
    /// host link (~4,000 at 1,000 routers, each veth's peer namespace looked up): what the
    /// pass changed before them, the overlay's bridges and VXLAN devices and the pools'
    /// blackhole routes, is in no router's view ([`HostState::by_router`] keeps a router's
    /// own links and the routes through them), and a bridge is found by name when a
    /// router's link joins it.
    host: HostState,
}

impl Scope<'_> {
    fn ns(&self, id: u32) -> String {
        netns_name(&self.prefix, id)
    }
}

impl Gateway {
    /// Observes the running routers, decides what this pass converges and removes, and tells
    /// the failover controller which routers are placed here.
    async fn scope<'a>(&mut self, pass: &mut Pass, desired: &'a NodeDesired) -> Option<Scope<'a>> {
        let prefix = self.netns_prefix.clone();
        let routers: BTreeMap<u32, &VpcRouter> = desired.routers().map(|r| (r.id, r)).collect();
        let routers6 = routers6(desired);
        for r in routers.values() {
            pass.refused(&vpc(r.id), nft::validate(r));
            pass.refused(&vpc(r.id), dc::validate(r));
        }
        let namespaces = pass
            .observe("namespaces", device::namespaces(&prefix))
            .await?;
        // Sockets of namespaces that are gone would keep them alive.
        self.kernel.retain(&namespaces);
        let running: BTreeSet<u32> = namespaces
            .iter()
            .filter_map(|n| netns_id(&prefix, n))
            .collect();
        let wanted: BTreeSet<u32> = routers.keys().copied().collect();
        let d = plan::decide(&wanted, &running);
        let host = self.observe_host(pass, self.converges_all()).await?;
        let specs = routers
            .values()
            .filter(|r| plan::validate_router(r).is_empty())
            .map(|r| router_spec(r, routers6.get(&r.id).copied()))
            .collect();
        self.failover.sync(specs, &host);
        Some(Scope {
            prefix,
            routers,
            routers6,
            running,
            d,
            host,
        })
    }

    /// Whether this pass converges every router whatever the change flags say (one in ten).
    fn converges_all(&self) -> bool {
        self.passes % 10 == 1
    }

    /// The host's links, routes and addresses from the mirror, brought up to now (see
    /// [`Gateway::sync_mirror`]), and its forwarding switch (which no message reports).
    async fn observe_host(&mut self, pass: &mut Pass, full: bool) -> Option<HostState> {
        if let Err(e) = self.sync_mirror(full).await {
            pass.error(ReconcileError::Observe {
                object: "host".into(),
                source: e,
            });
            return None;
        }
        let forwarding = pass
            .observe("host forwarding", device::host_forwarding())
            .await?;
        let (m, _) = self.mirror.as_ref()?;
        Some(device::host_from_mirror(m.state(), forwarding))
    }

    /// Brings the host's mirror up to now: the messages waiting on its socket, or, the first
    /// time, after lost messages and when `full` asks (the pass that converges every
    /// router), a dump of every link, address and route.
    async fn sync_mirror(&mut self, full: bool) -> Result<(), sf_linux::DeviceError> {
        if self.mirror.is_none() {
            let m = Mirror::open().map_err(|source| sf_linux::DeviceError::Spawn {
                cmd: "subscribe to the host's links, addresses and routes".into(),
                source,
            })?;
            let nl =
                sf_linux::netlink::Netlink::open().map_err(|e| e.on("open a netlink socket"))?;
            self.mirror = Some((m, nl));
        }
        let (m, nl) = self.mirror.as_mut().expect("opened");
        let t = std::time::Instant::now();
        let dumps = m.dumps();
        m.sync(nl, full)
            .await
            .map_err(|e| e.on("mirror the host's links, addresses and routes"))?;
        if m.dumps() != dumps {
            tracing::debug!(
                links = m.state().links().len(),
                elapsed_ms = t.elapsed().as_millis() as u64,
                "dumped the host"
            );
        }
        Ok(())
    }

    /// Removes the routers no longer served: per router, its per-VPC FRR, then its public
    /// routes, veths and namespace (a failed step skips the rest of that router).
    async fn remove_routers(&mut self, pass: &mut Pass, s: &Scope<'_>) {
        if s.d.remove.is_empty() {
            return;
        }
        let Some(host) = self.observe_host(pass, false).await else {
            return;
        };
        for &id in &s.d.remove {
            info!(id, "removing VPC router");
            self.remove_dc_frr(&s.ns(id), pass).await;
            // Our socket in it would keep the namespace alive after `ip netns del`.
            self.kernel.forget(&s.ns(id));
            let steps = Exec::all(plan::plan_removal(&s.prefix, id, &host), &self.kernel);
            pass.execute(&vpc(id), &steps, OnFailure::Stop).await;
        }
    }

    /// The overlay (bridges, VXLAN devices, the VTEP address) through the host's netlink
    /// socket, reading only the overlay's links: the host's veths (four per VPC router) are
    /// none of its business, and the `ip link show` plus one `/proc/sys` read per overlay link
    /// it replaced were half of an idle gateway's CPU at 1,000 routers (each `/proc` lookup
    /// scans the host's whole `net/ipv6/conf` directory, one entry per link).
    async fn converge_l2(&mut self, pass: &mut Pass, vnis: &BTreeSet<u32>, vtep: Ipv4Addr) {
        if crate::exec::iproute2_selected() {
            l2::converge(pass, vnis, vtep).await;
            return;
        }
        let observed = async {
            self.sync_mirror(false).await?;
            Ok::<_, sf_linux::DeviceError>((self.kernel.host()?, self.overlay_seen()))
        };
        let (nl, observed) = match observed.await {
            Ok(o) => o,
            Err(e) => {
                return pass.error(ReconcileError::Observe {
                    object: "links".into(),
                    source: e,
                })
            }
        };
        let done = sf_linux::netlink::l2::converge_observed(pass, &nl, vnis, vtep, &observed).await;
        if let Some((m, _)) = self.mirror.as_mut() {
            m.state_mut().record_l2(&done);
        }
    }

    /// The overlay's links (bridges and VXLAN devices) and the loopback's addresses, as the
    /// mirror holds them: all that the L2 plan reads.
    fn overlay_seen(&self) -> sf_linux::l2::Observed {
        let Some((m, _)) = self.mirror.as_ref() else {
            return sf_linux::l2::Observed::default();
        };
        let st = m.state();
        let mut links: Vec<Link> = st
            .links()
            .iter()
            .filter(|l| matches!(l.kind.as_deref(), Some("bridge" | "vxlan")))
            .cloned()
            .collect();
        links.sort_by_key(|l| l.ifindex);
        sf_linux::l2::Observed {
            links,
            lo: st.loopback_v4(),
        }
    }

    /// Converges each router this pass may converge; returns those that are served (built
    /// without any error), whose load balancer tables are then installed. `removed`: the
    /// pass removed routers (or tried to), so the host is observed again first.
    async fn converge_routers(
        &mut self,
        pass: &mut Pass,
        s: &Scope<'_>,
        removed: bool,
    ) -> BTreeSet<u32> {
        let mut served = BTreeSet::new();
        let mut cache = HashMap::new();
        if !s.d.converge.is_empty() {
            let host = if !removed {
                Some(s.host.clone())
            } else {
                self.observe_host(pass, false).await
            };
            if let Some(mut host) = host {
                if !host.forwarding {
                    let forward = [Exec::new(Action::SetForwarding { ns: None }, &self.kernel)];
                    pass.execute("host", &forward, OnFailure::Stop).await;
                    host.forwarding = true;
                }
                if !s.routers6.is_empty() && !host6_forwarding() {
                    let forward = [Exec::new(Action::SetForwarding6 { ns: None }, &self.kernel)];
                    pass.execute("host", &forward, OnFailure::Stop).await;
                }
                let views = host.by_router();
                let unseen = HostState {
                    forwarding: host.forwarding,
                    ..HostState::default()
                };
                let verify_all = self.converges_all();
                self.health_seeded.retain(|id| s.routers.contains_key(id));
                self.health.retain_seeds(|ns| {
                    netns_id(&s.prefix, ns).is_some_and(|id| s.routers.contains_key(&id))
                });
                self.quiet.retain(|id, _| s.d.converge.contains(id));
                let (mut quiet, mut converged) = (0, 0);
                for &id in &s.d.converge {
                    let r = s.routers[&id];
                    let host = views.get(&id).unwrap_or(&unseen);
                    let ns = s.ns(id);
                    let r6 = s.routers6.get(&id).copied();
                    if s.running.contains(&id) && self.health_seeded.insert(id) {
                        self.seed_health(&ns, r, r6).await;
                    }
                    let active = self.failover.is_active(id);
                    if !active {
                        self.follow_peer_health(&ns, r, r6);
                    }
                    let (tables, mut lb_status) =
                        self.lb_tables(&ns, r, nft::load_balancers(r), &mut cache);
                    let lbs6 = r6.map(crate::nft6::load_balancers6).unwrap_or_default();
                    let (tables6, lb_status6) = self.lb_tables(&ns, r, lbs6, &mut cache);
                    lb_status.extend(lb_status6);
                    let mut all_tables = tables.clone();
                    all_tables.extend(tables6.iter().cloned());
                    let inputs = router_inputs(r, r6, host, &all_tables, active);
                    let sock = match s.running.contains(&id) {
                        true => self.kernel.ns(&ns).ok(),
                        false => None,
                    };
                    // Drained before observing: what moves from here on is seen next time.
                    let moved = sock.as_ref().is_none_or(|k| k.moved());
                    let was = self.quiet.remove(&id);
                    if !verify_all && !moved {
                        if let (Some(q), Some(k)) = (&was, &sock) {
                            let now = quiet_state(k);
                            if q.inputs == inputs && now == Some((q.nft_generation, q.forwarding)) {
                                self.quiet.insert(id, q.clone());
                                // The same tables, yet the report may have moved: a first
                                // check confirmed a backend UP (see `health`).
                                self.lb_installed.insert(id, lb_status);
                                served.insert(id);
                                quiet += 1;
                                continue;
                            }
                        }
                    }
                    converged += 1;
                    let k = self.kernel.clone();
                    let observe = async {
                        match s.running.contains(&id) {
                            true => device::observe_ns(&k, &ns).await.map(Some),
                            false => Ok(None),
                        }
                    };
                    // The controller flips no router while one is converged.
                    let kernel = self.failover.kernel.clone();
                    let _kernel = kernel.lock().await;
                    let plan = |st: &Option<NsState>| {
                        let (mut steps, mut problems) =
                            plan::plan_router(&s.prefix, r, host, st.as_ref(), &tables, active);
                        if problems.is_empty() {
                            let (more, p6) = plan6::plan_router6(
                                r,
                                r6,
                                host,
                                st.as_ref(),
                                &ns,
                                active,
                                &tables6,
                            );
                            steps.extend(more);
                            problems.extend(p6);
                        }
                        Plan::new(Exec::all(steps, &k), problems)
                    };
                    let c = pass
                        .converge(&vpc(id), observe, plan, OnFailure::Stop)
                        .await;
                    if c.clean {
                        let after = self.kernel.ns(&ns).ok();
                        if let Some((nft_generation, forwarding)) =
                            after.as_deref().and_then(quiet_state)
                        {
                            self.quiet.insert(
                                id,
                                Quiet {
                                    inputs,
                                    nft_generation,
                                    forwarding,
                                },
                            );
                        }
                        self.failover.built(id);
                        served.insert(id);
                        self.lb_installed.insert(id, lb_status);
                        self.cut_lost_translations(pass, &ns, id, r, r6).await;
                    }
                }
                self.last_quiet = quiet;
                self.last_converged = converged;
                if quiet > 0 {
                    tracing::debug!(quiet, converged, "routers left as they were");
                }
            }
        }
        self.lb_cache = cache;
        served
    }

    /// After router `id` converged: cuts the established flows of translations it no longer
    /// performs (a deleted port forward or static NAT, a backend down or removed).
    async fn cut_lost_translations(
        &mut self,
        pass: &mut Pass,
        ns: &str,
        id: u32,
        r: &VpcRouter,
        r6: Option<&VpcRouter6>,
    ) {
        let up = |lb: &sf_core::desired::LoadBalancer, b: &sf_core::desired::LbBackend| {
            lb.health == HealthCheck::None || self.health.is_up(ns, &lb.name, &b.name)
        };
        let now = conntrack::targets(r, r6, &up);
        let Some(before) = self.dnat_installed.insert(id, now.clone()) else {
            return;
        };
        let filters = conntrack::cuts(&before, &now);
        if filters.is_empty() {
            return;
        }
        let result = conntrack::cut(ns, &filters).await;
        if result.is_ok() {
            info!(%ns, cuts = filters.len(), "cut the flows of removed translations");
        } else {
            // Tried again on the next pass.
            self.dnat_installed.insert(id, before);
        }
        pass.applied(&format!("conntrack {}", vpc(id)), result.map(|()| true));
    }

    /// Direct Connect speakers: converged for the routers of this pass, kept (and reported)
    /// for the routers left as they are, removed for namespaces that are gone.
    async fn converge_dc(&mut self, pass: &mut Pass, s: &Scope<'_>, served: &BTreeSet<u32>) {
        let mut targets = BTreeMap::new();
        for &id in &s.d.converge {
            if !(served.contains(&id) || s.running.contains(&id)) {
                continue;
            }
            let r = s.routers[&id];
            let ns = s.ns(id);
            let dir = dc::instance_dir(&self.state_dir, &ns);
            let Some(config) = dc::render(&ns, r) else {
                self.remove_dc_frr(&ns, pass).await;
                continue;
            };
            match self
                .sync_dc_frr(&ns, &dir, &config, &dc::expected_lines(r))
                .await
            {
                Ok(true) => pass.changes += 1,
                Ok(false) => {}
                Err(detail) => pass.error(ReconcileError::Problem {
                    object: ns.clone(),
                    stage: Stage::Execute,
                    detail,
                }),
            }
            targets.insert(ns, dc_target(r, dir));
        }
        // Routers left as they are (lease unknown): their speakers too, still reported.
        for &id in s
            .running
            .iter()
            .filter(|id| !s.d.converge.contains(id) && !s.d.remove.contains(id))
        {
            let ns = s.ns(id);
            let dir = dc::instance_dir(&self.state_dir, &ns);
            if let (Some(r), true) = (s.routers.get(&id), dc::any_alive(&dir)) {
                targets.insert(ns, dc_target(r, dir));
            }
        }
        // Speakers of namespaces that no longer exist (removed behind our back, or before a
        // restart of the agent).
        let live_ns: BTreeSet<String> = s
            .running
            .union(served)
            .filter(|id| !s.d.remove.contains(id))
            .map(|&id| s.ns(id))
            .collect();
        if let Ok(entries) = std::fs::read_dir(dc::root(&self.state_dir)) {
            let orphans: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| netns_id(&s.prefix, n).is_some() && !live_ns.contains(n))
                .collect();
            for ns in orphans {
                warn!(%ns, "per-VPC FRR of a namespace that is gone: removing it");
                self.remove_dc_frr(&ns, pass).await;
            }
        }
        let polling = !targets.is_empty();
        *self.dc_poller.targets.lock().unwrap() = targets;
        if polling && self.dc_poll_task.is_none() {
            self.dc_poll_task = Some(tokio::spawn(self.dc_poller.clone().run(self.wake.clone())));
        }
    }

    /// Router advertisements on the dual-stack tiers of the routers that forward (a passive
    /// router sends none; the failover controller's flip wakes a pass, which starts them).
    fn sync_ra(&mut self, pass: &mut Pass, s: &Scope<'_>, served: &BTreeSet<u32>) {
        let active = self.failover.active();
        let wanted: BTreeMap<String, ra::RaConfig> = s
            .routers6
            .iter()
            .filter(|(id, _)| served.contains(id) && active.contains(id))
            .filter_map(|(&id, r6)| {
                let mac = ra::parse_mac(&s.routers[&id].mac)?;
                let tiers = r6
                    .tiers
                    .iter()
                    .map(|t| ra::RaTier {
                        link: crate::names::tier_ns(t.vni),
                        prefix: t.prefix,
                    })
                    .collect();
                Some((s.ns(id), ra::RaConfig { mac, tiers }))
            })
            .collect();
        for detail in self.ra.sync(wanted) {
            pass.error(ReconcileError::Problem {
                object: "router advertisements".into(),
                stage: Stage::Execute,
                detail,
            });
        }
    }

    /// Health checks for the load balancers of the routers that forward (a passive router's
    /// segments are down: it could not reach a backend, and must not show its MAC there).
    fn sync_health(&mut self, pass: &mut Pass, s: &Scope<'_>, served: &BTreeSet<u32>) {
        let active = self.failover.active();
        let runs: BTreeSet<u32> = s
            .routers
            .keys()
            .copied()
            .filter(|id| {
                (served.contains(id) || (s.running.contains(id) && !s.d.remove.contains(id)))
                    && active.contains(id)
            })
            .collect();
        self.lb_installed.retain(|id, _| runs.contains(id));
        let probes: BTreeMap<String, Vec<Probe>> = runs
            .iter()
            .map(|&id| {
                let r6 = s.routers6.get(&id).copied();
                (s.ns(id), Self::probes(s.routers[&id], r6))
            })
            .collect();
        for detail in self.health.sync(probes) {
            pass.error(ReconcileError::Problem {
                object: "health checks".into(),
                stage: Stage::Execute,
                detail,
            });
        }
    }

    /// The node's FRR. It announces the active routers' host routes by redistribution
    /// (`Underlay::redistribute_host_routes`), never per-VPC `network` statements: a gateway
    /// announces only what its failover controller routes.
    async fn converge_frr(&mut self, pass: &mut Pass, underlay: &Underlay) {
        let mut u = underlay.clone();
        u.announce.clear();
        let config = render(&self.node, &u);
        let changed = self.last_frr.as_deref() != Some(config.as_str());
        // A full reload re-verifies what FRR runs. It is needed when a daemon restarted (it
        // then runs its own file, not what was applied); otherwise it only guards against
        // hand edits, so it runs every 60th pass (30 min at the default resync): every 10th
        // cost ~0.1 % of a core at rest (`frr-reload.py` and its `vtysh` runs).
        let force = self.passes % 60 == 1 || self.frr.restarted_since_apply();
        if !(changed || force) {
            return;
        }
        let counts = if self.last_frr.is_none() {
            self.frr_differs(&config).await
        } else {
            changed
        };
        match self.frr.apply(&config, &expected_lines(&u), force).await {
            Ok(_) => {
                if counts {
                    pass.changes += 1;
                }
                self.last_frr = Some(config);
            }
            Err(source) => pass.error(ReconcileError::Apply {
                object: "FRR".into(),
                source,
            }),
        }
    }
}

/// The IPv6 sides of the node's dual-stack routers, by id.
fn routers6(desired: &NodeDesired) -> BTreeMap<u32, &VpcRouter6> {
    desired
        .objects
        .values()
        .filter_map(|o| match o {
            DesiredObject::VpcRouter6(r) => Some((r.id, r)),
            _ => None,
        })
        .collect()
}

/// Whether the host forwards IPv6 (false when it cannot tell, so the write is tried).
fn host6_forwarding() -> bool {
    std::fs::read_to_string(crate::kernel::IP6_FORWARD).is_ok_and(|v| v.trim() == "1")
}

/// What the failover controller needs of router `r` (validated) and its IPv6 side.
fn router_spec(r: &VpcRouter, r6: Option<&VpcRouter6>) -> RouterSpec {
    let segments = plan::pairs(r)
        .into_iter()
        .filter(|p| p.master.is_some())
        .map(|p| p.host)
        .collect();
    RouterSpec {
        id: r.id,
        vpc: format!("{}/{}", r.tenant, r.vpc),
        role: r.role,
        anchor: crate::names::transit_addrs(r.id).expect("validated id").0,
        segments,
        routes: plan::host_routes(r),
        routes6: r6
            .filter(|x| plan6::validate6(r, x).is_empty())
            .map(plan6::host_routes6)
            .unwrap_or_default(),
    }
}

/// What the Direct Connect poller watches for router `r`.
fn dc_target(r: &VpcRouter, dir: PathBuf) -> dc::Target {
    let peers = dc::usable(r)
        .0
        .iter()
        .map(|x| (dc::status_key(r, x), x.peer))
        .collect();
    dc::Target { dir, peers }
}

impl Step for Action {
    fn describe(&self) -> String {
        match self {
            Action::LoadNft { ns, lbs, .. } => {
                format!("LoadNft {{ ns: {ns:?}, lb_maps: {} }}", lbs.maps.len())
            }
            Action::LoadNft6 { ns, table, lbs } => format!(
                "LoadNft6 {{ ns: {ns:?}, remove: {}, lb_maps: {} }}",
                table.is_none(),
                lbs.maps.len()
            ),
            Action::LoadLbMaps6 { ns, lbs } => format!("LoadLbMaps6 {{ ns: {ns:?}, {lbs:?} }}"),
            _ => format!("{self:?}"),
        }
    }
    async fn execute(&self) -> Result<(), sf_linux::DeviceError> {
        device::execute(self).await
    }
}

#[async_trait::async_trait]
impl Dataplane for Gateway {
    async fn reconcile(
        &mut self,
        desired: &NodeDesired,
        ctx: &ReconcileContext,
    ) -> ReconcileReport {
        let mut pass = Pass::default();
        self.passes += 1;
        let Some(underlay) = desired.underlay() else {
            pass.error(ReconcileError::NoUnderlay);
            return pass.into();
        };
        let _ = ctx; // the lease does not decide who forwards: the fabric does
        if self.failover_task.is_none() {
            self.failover_task = Some(tokio::spawn(self.failover.clone().run()));
        }
        let mut clock = StageClock::start();
        let Some(s) = self.scope(&mut pass, desired).await else {
            return pass.into();
        };
        clock.lap("scope");
        // The pools' blackhole routes, before any removal: a public address this gateway
        // stops serving must be dropped here, not routed back to the leaf that may still
        // send it here (a loop, then an ICMP error that aborts the client's connect).
        let wanted = blackhole::of_underlay(underlay);
        match self
            .mirror
            .as_ref()
            .filter(|_| !crate::exec::iproute2_selected())
        {
            // The mirror was brought up to now by the scope.
            Some((m, _)) => {
                let seen = blackhole::of_mirror(m.state());
                blackhole::converge_observed(&mut pass, &wanted, seen).await
            }
            None => blackhole::converge(&mut pass, &wanted).await,
        }
        // 2. Removals first (they free names, and withdraw before anything else).
        let before = (pass.changes, pass.errors.len());
        self.remove_routers(&mut pass, &s).await;
        let removed = (pass.changes, pass.errors.len()) != before;
        clock.lap("blackholes and removals");
        // 3. L2, exactly like a hypervisor.
        let vnis: BTreeSet<u32> = desired.networks().map(|n| n.vni).collect();
        self.converge_l2(&mut pass, &vnis, underlay.loopback).await;
        clock.lap("l2");
        // 4. Routers, then (4b) their Direct Connect speakers.
        let served = self.converge_routers(&mut pass, &s, removed).await;
        clock.lap("routers");
        self.converge_dc(&mut pass, &s, &served).await;
        // 6. Health checks, then 5. FRR.
        self.sync_health(&mut pass, &s, &served);
        self.sync_ra(&mut pass, &s, &served);
        clock.lap("dc, health, ra");
        self.converge_frr(&mut pass, underlay).await;
        clock.lap("frr");
        tracing::debug!(
            stages = %clock,
            quiet = self.last_quiet,
            converged = self.last_converged,
            changes = pass.changes,
            "gateway pass"
        );
        pass.into()
    }

    async fn lb_status(&mut self) -> BTreeMap<String, LbStatus> {
        self.lb_installed
            .values()
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    async fn dc_status(&mut self) -> BTreeMap<String, DcStatus> {
        self.dc_poller.status()
    }

    async fn failover_status(&mut self) -> sf_core::status::FailoverStatus {
        self.failover.status()
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    fn status_wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.status_wake.clone())
    }

    /// Counters of each running VPC router's NAT, load balancer and ACL rules, scoped by
    /// the router's namespace name (`<prefix><id>`): one rule dump on each namespace's
    /// netfilter socket (see [`crate::nfrules`]), no process.
    async fn rule_counters(&mut self) -> Vec<sf_metrics::RuleSample> {
        let namespaces = match device::namespaces(&self.netns_prefix).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "listing VPC namespaces for rule counters");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for ns in namespaces {
            let read = if crate::exec::iproute2_selected() {
                // The former reader (bench baseline): an `nft` process per router.
                sf_linux::nft_counters::read_in_netns(&ns, "ip", crate::nft::TABLE, &ns).await
            } else {
                self.kernel
                    .ns(&ns)
                    .and_then(|s| s.rule_counters(crate::nft::TABLE, &ns))
                    .inspect_err(|_| self.kernel.forget(&ns))
            };
            match read {
                Ok(samples) => out.extend(samples),
                Err(e) => warn!(netns = %ns, error = %e, "reading rule counters"),
            }
        }
        out
    }

    /// Every 3 s (the runtime's status check): the foreign bridges' VNIs, from the host's
    /// mirror brought up to now (the messages since the last look, no dump).
    async fn observed_vnis(&mut self) -> BTreeSet<u32> {
        if let Err(e) = self.sync_mirror(false).await {
            warn!(error = %e, "observing links");
            return BTreeSet::new();
        }
        self.mirror
            .as_ref()
            .map(|(m, _)| foreign_vnis(m.state().links().iter()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::frr_diff_is_real;

    #[test]
    fn frr_test_output_noise_is_not_a_change() {
        let noise = "x INFO: Loading\n\nLines To Delete\n===============\nno hostname vm\n\nLines To Add\n============\nrouter bgp 65011\n no bgp ebgp-requires-policy\n";
        assert!(!frr_diff_is_real(noise));
        assert!(!frr_diff_is_real("INFO: nothing\n"));
        let real = "Lines To Add\n============\nrouter bgp 65011\n address-family ipv4 unicast\n  network 203.0.113.10/32\n";
        assert!(frr_diff_is_real(real));
    }
}
