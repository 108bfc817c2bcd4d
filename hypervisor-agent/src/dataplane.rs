//! The hypervisor's Linux dataplane: VTEP on `lo`, one `vxlan<VNI>` in `brvx-<VNI>` per
//! network in scope, FRR with `advertise-all-vni`. Each reconcile observes the kernel, plans
//! with [`sf_linux::l2`] and runs only the planned commands, so a converged host sees no change
//! at all (no interface is ever recreated by a restart).
//!
//! Links go through one rtnetlink socket of the hypervisor's namespace
//! ([`sf_linux::netlink`]): observed with one dump, changed with the plan's requests
//! pipelined. A subscription to link events (RTNLGRP_LINK) wakes the agent when a port joins
//! or leaves a bridge and tells it when the foreign VNIs it reports may have changed, so the
//! runtime's 3 s status check no longer dumps every link: it re-reads them only after a
//! `brvx-*` change, a lost event, or without a live subscription.
//!
//! East-west ACLs: after the links, the `bridge stackfabric` table is rendered from the
//! networks in scope and the VM ports observed on their bridges, and reloaded only when its
//! digest changed (see [`crate::acl`]). The link events wake the agent up, so a VM port
//! CloudStack plugs into a filtered bridge is dispatched to its tier's chains within one
//! pass, not at the next periodic resync. When the ACL stages change, established flows they
//! now deny are cut ([`crate::cut`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{DesiredObject, L2Network, L2Network6, NodeDesired};
use sf_linux::converge::{Pass, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::l2::{bridge_name, foreign_vnis, plan, plan_delta, vni_of, vxlan_name, Action};
use sf_linux::links::Link;
use sf_linux::netlink::events::{LinkEvent, LinkUpdate};
use sf_linux::netlink::view::LinkView;
use sf_linux::netlink::Netlink;
use sf_linux::DeviceError;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::acl;
use crate::pin::Tap;

/// A full pass (dump every link, plan every network, check the ACL table and FRR against
/// the host) at least this often, whatever the link messages say: drift that sends no
/// message (an address, a devconf write, an nft table) is caught within this time.
const FULL_RESYNC: Duration = Duration::from_secs(300);

pub struct Hypervisor {
    pub node: String,
    pub frr: Frr,
    /// Skip FRR (debug `--apply-file --no-frr`: links and ACLs only).
    pub skip_frr: bool,
    /// Duration of the last ACL table change (None: the last pass changed nothing).
    pub last_acl_change: Option<Duration>,
    /// Per ACL tier, the digest of the rules its established flows were last judged by
    /// (None: no pass yet).
    cut_for: Option<BTreeMap<u32, String>>,
    wake: Arc<Notify>,
    /// The netlink socket of this namespace, opened at the first pass.
    nl: Option<Netlink>,
    /// The links as the last dump and the link messages since show them.
    view: Arc<Mutex<LinkView>>,
    /// The link watcher's subscription is live (without it, every pass dumps).
    watching: Arc<AtomicBool>,
    /// What the last passes established: the loopback's addresses, the VNIs and VTEP
    /// planned for, the planner's refusals by VNI, when the last full pass ran.
    lo: Vec<Ipv4Addr>,
    planned: Option<(BTreeSet<u32>, Ipv4Addr)>,
    refusals: BTreeMap<u32, Vec<String>>,
    last_full: Option<Instant>,
    /// The ACL table's inputs at its last successful check (None: check next pass).
    acl_inputs: Option<(Vec<L2Network>, Vec<L2Network6>, Vec<Tap>)>,
    /// What the last pass planned: whether it was a full pass, and how many networks.
    pub last_pass: PassScope,
}

/// How much of the host a pass looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassScope {
    pub full: bool,
    pub networks: usize,
}

impl Hypervisor {
    pub fn new(node: String, frr: Frr) -> Self {
        Hypervisor {
            node,
            frr,
            skip_frr: false,
            last_acl_change: None,
            cut_for: None,
            wake: Arc::new(Notify::new()),
            nl: None,
            view: Arc::new(Mutex::new(LinkView::new())),
            watching: Arc::new(AtomicBool::new(false)),
            lo: Vec::new(),
            planned: None,
            refusals: BTreeMap::new(),
            last_full: None,
            acl_inputs: None,
            last_pass: PassScope::default(),
        }
    }

    /// The namespace's netlink socket, opened on first use.
    fn netlink(&mut self) -> Result<Netlink, DeviceError> {
        if self.nl.is_none() {
            self.nl = Some(Netlink::open().map_err(|e| e.on("open socket"))?);
        }
        Ok(self.nl.clone().expect("opened"))
    }

    fn view(&self) -> MutexGuard<'_, LinkView> {
        lock(&self.view)
    }

    /// Whether the link messages are being received (the view follows the kernel).
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::SeqCst)
    }

    /// Keeps the link view up to date from netlink link messages (RTNLGRP_LINK) and wakes
    /// the agent on changes: new or moved bridge ports, overlay links, deletions, lost
    /// messages. Resubscribes if the socket fails. Must be called inside a tokio runtime.
    pub fn watch_links(&self) {
        let (wake, view, watching) = (self.wake.clone(), self.view.clone(), self.watching.clone());
        tokio::spawn(async move {
            loop {
                match sf_linux::netlink::events::link_updates() {
                    Ok(updates) => {
                        // Whatever changed before the subscription is read by a dump.
                        lock(&view).mark_stale();
                        watching.store(true, Ordering::SeqCst);
                        settle_and_wake(Box::pin(updates), &wake, &view).await;
                        watching.store(false, Ordering::SeqCst);
                        lock(&view).mark_stale();
                        warn!("link event subscription ended; resubscribing");
                    }
                    Err(e) => warn!(error = %e, "subscribing to link events"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
}

/// The view, also after a panic elsewhere while it was held (it holds no invariant that a
/// half-applied message could break beyond what the next dump repairs).
fn lock(view: &Mutex<LinkView>) -> MutexGuard<'_, LinkView> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies link messages to the view until the stream ends. A burst (one pass creating
/// thousands of links) settles into one wakeup 100 ms after its first relevant message;
/// the messages are read on meanwhile, so the socket's buffer keeps draining.
async fn settle_and_wake(
    mut updates: std::pin::Pin<Box<impl futures::Stream<Item = LinkUpdate>>>,
    wake: &Notify,
    view: &Mutex<LinkView>,
) {
    use futures::StreamExt;
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let next = match due {
            Some(at) => match tokio::time::timeout_at(at, updates.next()).await {
                Ok(e) => e,
                Err(_) => {
                    due = None;
                    wake.notify_one();
                    continue;
                }
            },
            None => updates.next().await,
        };
        let Some(u) = next else {
            if due.is_some() {
                wake.notify_one();
            }
            return;
        };
        if !lock(view).apply(&u) {
            continue;
        }
        let relevant = match u.event() {
            LinkEvent::Changed { name, master } => master || vni_of(&name).is_some(),
            LinkEvent::Deleted { .. } | LinkEvent::Overrun => true,
        };
        if relevant && due.is_none() {
            due = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
    }
}

impl Hypervisor {
    /// Whether this pass must dump and plan everything: no trustworthy view (first pass,
    /// lost messages, no subscription), a new VTEP, or the periodic full resync is due.
    fn needs_full(&self, vtep: Ipv4Addr) -> bool {
        self.view().is_stale()
            || !self.watching()
            || self.planned.as_ref().is_none_or(|(_, v)| *v != vtep)
            || self.last_full.is_none_or(|t| t.elapsed() >= FULL_RESYNC)
    }

    /// Dumps every link, plans every network and runs the plan. False when the dump failed.
    async fn converge_links_full(
        &mut self,
        pass: &mut Pass,
        nl: &Netlink,
        vnis: &BTreeSet<u32>,
        vtep: Ipv4Addr,
    ) -> bool {
        self.view().begin_dump();
        let t = Instant::now();
        let Some(observed) = pass
            .observe("links", sf_linux::netlink::l2::observe(nl))
            .await
        else {
            self.view().abort_dump();
            return false;
        };
        let links = {
            let mut v = self.view();
            v.finish_dump(observed.links);
            // Planned from the view just below: what changed so far is in it.
            v.take_dirty();
            v.to_vec()
        };
        debug!(
            links = links.len(),
            elapsed_ms = t.elapsed().as_millis() as u64,
            "dumped links"
        );
        self.lo = observed.lo;
        let p = plan(vnis, vtep, &self.lo, &links);
        self.refusals.clear();
        self.last_full = Some(Instant::now());
        self.last_pass = PassScope {
            full: true,
            networks: vnis.len(),
        };
        self.run_plan(pass, nl, p, &links).await;
        true
    }

    /// Plans and runs only the networks whose desired presence changed since the last pass
    /// or whose links sent a message since: no dump.
    async fn converge_links_delta(
        &mut self,
        pass: &mut Pass,
        nl: &Netlink,
        vnis: &BTreeSet<u32>,
        vtep: Ipv4Addr,
    ) {
        // Links whose last message was a bridge port's only are read back first.
        if let Err(e) = sf_linux::netlink::view::refresh(nl, &self.view).await {
            warn!(error = %e, "reading back changed bridge ports");
        }
        let mut dirty: BTreeSet<u32> = self
            .view()
            .take_dirty()
            .iter()
            .filter_map(|n| vni_of(n))
            .collect();
        if let Some((before, _)) = &self.planned {
            dirty.extend(vnis.symmetric_difference(before));
        }
        self.last_pass = PassScope {
            full: false,
            networks: dirty.len(),
        };
        if dirty.is_empty() && self.lo.contains(&vtep) {
            return;
        }
        let links: Vec<Link> = {
            let v = self.view();
            dirty
                .iter()
                .flat_map(|&vni| [bridge_name(vni), vxlan_name(vni)])
                .chain(["lo".to_string()])
                .filter_map(|n| v.get(&n).cloned())
                .collect()
        };
        let p = plan_delta(vnis, &dirty, vtep, &self.lo, &links);
        for v in &dirty {
            self.refusals.remove(v);
        }
        self.run_plan(pass, nl, p, &links).await;
    }

    /// Runs a plan made from `links`; remembers its refusals and what the kernel announces
    /// no message for. A failed action makes the next pass a full one (it retries).
    async fn run_plan(
        &mut self,
        pass: &mut Pass,
        nl: &Netlink,
        p: sf_linux::l2::Plan,
        links: &[Link],
    ) {
        for e in p.errors {
            let vni = e.split_whitespace().next().and_then(vni_of).unwrap_or(0);
            self.refusals.entry(vni).or_default().push(e);
        }
        let results = sf_linux::netlink::l2::execute(nl, &p.actions, links).await;
        for (a, r) in p.actions.iter().zip(results) {
            let ok = pass.record("links", a, r);
            match (a, ok) {
                (_, false) => self.last_full = None,
                (Action::AddLoopbackAddress(ip), true) => self.lo.push(*ip),
                (
                    Action::DisableIpv6 { link: name }
                    | Action::AddBridge { name }
                    | Action::AddVxlan { name, .. },
                    true,
                ) => self.view().set_ipv6_disabled(name),
                _ => {}
            }
        }
    }

    /// East-west ACLs over the bridges (they exist now) and the observed VM ports: rendered
    /// and checked against the table when a full pass asks or their inputs changed.
    async fn converge_acl(
        &mut self,
        pass: &mut Pass,
        nets: &[&L2Network],
        nets6: &[&L2Network6],
        full: bool,
    ) {
        let taps = acl::bridge_taps(self.view().iter());
        self.last_acl_change = None;
        let same = self.acl_inputs.as_ref().is_some_and(|(n, n6, t)| {
            *t == taps
                && n.len() == nets.len()
                && n.iter().zip(nets).all(|(a, b)| a == *b)
                && n6.len() == nets6.len()
                && n6.iter().zip(nets6).all(|(a, b)| a == *b)
        });
        if same && !full {
            return;
        }
        self.acl_inputs = None;
        let rs = acl::render(nets, nets6, &taps);
        pass.refused("ACL", rs.errors.iter().map(|e| format!("ACL: {e}")));
        let t = Instant::now();
        let applied = acl::apply(&rs).await;
        if let Ok(true) = applied {
            self.last_acl_change = Some(t.elapsed());
            info!(digest = %rs.digest, tiers = rs.objects.len(), elapsed_ms = t.elapsed().as_millis() as u64, "ACL table applied");
        }
        let changed_table = matches!(applied, Ok(true));
        let ok = applied.is_ok();
        pass.applied("ACL", applied);
        if ok {
            self.acl_inputs = Some((
                nets.iter().map(|n| (*n).clone()).collect(),
                nets6.iter().map(|n| (*n).clone()).collect(),
                taps,
            ));
            self.cut_denied(nets, nets6, changed_table).await;
        }
    }
    /// Established flows that changed rules deny are cut: on the tiers whose rules changed
    /// since the last pass, or, on the first pass, on every tier if the table changed (the
    /// rules may have changed while the agent was down).
    async fn cut_denied(
        &mut self,
        nets: &[&L2Network],
        nets6: &[&L2Network6],
        changed_table: bool,
    ) {
        let now = acl::tier_acl_digests(nets);
        let vnis: BTreeSet<u32> = match &self.cut_for {
            None if changed_table => now.keys().copied().collect(),
            None => BTreeSet::new(),
            Some(old) => now
                .iter()
                .filter(|(v, d)| old.get(v).is_some_and(|o| o != *d))
                .map(|(v, _)| *v)
                .collect(),
        };
        if vnis.is_empty() {
            self.cut_for = Some(now);
            return;
        }
        let t = std::time::Instant::now();
        match crate::cut::cut_denied(nets, nets6, &vnis).await {
            Ok(n) => {
                info!(
                    flows = n,
                    tiers = vnis.len(),
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "cut the established flows changed ACLs deny"
                );
                self.cut_for = Some(now);
            }
            // Retried at the next pass (cut_for keeps the old digests).
            Err(e) => warn!(error = %e, "cutting flows changed ACLs deny"),
        }
    }
}

#[async_trait::async_trait]
impl Dataplane for Hypervisor {
    async fn reconcile(
        &mut self,
        desired: &NodeDesired,
        _ctx: &ReconcileContext,
    ) -> ReconcileReport {
        let mut pass = Pass::default();
        let Some(underlay) = desired.underlay() else {
            pass.error(ReconcileError::NoUnderlay);
            return pass.into();
        };
        let vnis: BTreeSet<u32> = desired.networks().map(|n| n.vni).collect();
        let nl = match self.netlink() {
            Ok(nl) => nl,
            Err(source) => {
                pass.error(ReconcileError::Observe {
                    object: "links".into(),
                    source,
                });
                return pass.into();
            }
        };
        let vtep = underlay.loopback;
        let full = self.needs_full(vtep);
        let t = Instant::now();
        if full {
            if !self.converge_links_full(&mut pass, &nl, &vnis, vtep).await {
                return pass.into();
            }
        } else {
            self.converge_links_delta(&mut pass, &nl, &vnis, vtep).await;
        }
        self.planned = Some((vnis, vtep));
        pass.refused("links", self.refusals.values().flatten().cloned());
        debug!(
            full,
            networks = self.last_pass.networks,
            elapsed_us = t.elapsed().as_micros() as u64,
            "links converged"
        );
        let nets: Vec<&L2Network> = desired.networks().collect();
        // The IPv6 sides of dual-stack tiers (anti-spoofing of their ports' IPv6).
        let nets6: Vec<&L2Network6> = desired
            .objects
            .values()
            .filter_map(|o| match o {
                DesiredObject::L2Network6(n) => Some(n),
                _ => None,
            })
            .collect();
        self.converge_acl(&mut pass, &nets, &nets6, full).await;
        if self.skip_frr {
            return pass.into();
        }
        // FRR after the links, so the VTEP exists before advertise-all-vni sees the VNIs.
        // Reloaded only when its rendered configuration changed (`Frr::apply` compares with
        // what it last applied); re-verified against the running config on full passes and
        // after a daemon restarted (it then runs its own file, not what was applied).
        let config = render(&self.node, underlay);
        let expect = expected_lines(underlay);
        let force = full || self.frr.restarted_since_apply();
        pass.applied("FRR", self.frr.apply(&config, &expect, force).await);
        pass.into()
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    /// Counters of the east-west ACL rules (table `bridge stackfabric`), scope "node".
    async fn rule_counters(&mut self) -> Vec<sf_metrics::RuleSample> {
        match sf_linux::nft_counters::read(&[], "bridge", crate::acl::TABLE, "node").await {
            Ok(samples) => samples,
            Err(e) => {
                warn!(error = %e, "reading ACL rule counters");
                Vec::new()
            }
        }
    }

    /// Called every 3 s by the runtime: answers from the link view, which the link
    /// messages keep current; dumps only when the view cannot be trusted.
    async fn observed_vnis(&mut self) -> BTreeSet<u32> {
        if !self.view().is_stale() && self.watching() {
            return foreign_vnis(self.view().iter());
        }
        let nl = match self.netlink() {
            Ok(nl) => nl,
            Err(e) => {
                warn!(error = %e, "observing links");
                return BTreeSet::new();
            }
        };
        self.view().begin_dump();
        match sf_linux::netlink::observe::links(&nl).await {
            Ok(l) => {
                // Whatever changed while the view was stale was never marked: the next
                // pass plans everything.
                self.last_full = None;
                let mut v = self.view();
                v.finish_dump(l);
                foreign_vnis(v.iter())
            }
            Err(e) => {
                self.view().abort_dump();
                warn!(error = %e.on("dump links"), "observing links");
                BTreeSet::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

    fn link(index: u32, name: &str, attrs: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.extend(attrs);
        m
    }

    fn bridge(index: u32, name: &str) -> LinkUpdate {
        LinkUpdate::New(link(
            index,
            name,
            vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )])],
        ))
    }

    fn port(index: u32, name: &str, master: u32) -> LinkUpdate {
        LinkUpdate::New(link(index, name, vec![LinkAttribute::Controller(master)]))
    }

    /// Whether `wake` fires within `ms` milliseconds.
    async fn woke(wake: &Notify, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn link_messages_update_the_view_and_wake_once_per_burst() {
        let (tx, rx) = mpsc::unbounded();
        let wake = Arc::new(Notify::new());
        let view = Arc::new(Mutex::new(LinkView::new()));
        lock(&view).begin_dump();
        lock(&view).finish_dump(vec![]);
        let (w, v) = (wake.clone(), view.clone());
        let task = tokio::spawn(async move { settle_and_wake(Box::pin(rx), &w, &v).await });
        // CloudStack's bridge appears: a foreign VNI, and a pass for its network.
        tx.unbounded_send(bridge(10, "brvx-2000000")).unwrap();
        assert!(woke(&wake, 1_000).await);
        assert_eq!(
            foreign_vnis(lock(&view).iter()),
            BTreeSet::from([2_000_000])
        );
        // A burst of VM ports plugged into it: one wakeup, the ports in the view.
        for i in 0..50 {
            tx.unbounded_send(port(100 + i, &format!("vnet{i}"), 10))
                .unwrap();
        }
        assert!(woke(&wake, 1_000).await);
        assert!(!woke(&wake, 300).await, "one wakeup for the burst");
        let taps = acl::bridge_taps(lock(&view).iter());
        assert_eq!(taps.len(), 50);
        assert!(taps.iter().all(|t| t.bridge == "brvx-2000000"));
        // A link outside the overlay with no master: no pass.
        tx.unbounded_send(bridge(7, "eth9")).unwrap();
        assert!(!woke(&wake, 300).await);
        // Lost messages: wake, and the view is stale (the next pass dumps).
        tx.unbounded_send(LinkUpdate::Overrun).unwrap();
        assert!(woke(&wake, 1_000).await);
        assert!(lock(&view).is_stale());
        // A deletion just before the subscription ends still wakes.
        tx.unbounded_send(LinkUpdate::Deleted(link(103, "vnet3", vec![])))
            .unwrap();
        drop(tx);
        task.await.unwrap();
        assert!(woke(&wake, 100).await);
        assert!(lock(&view).get("vnet3").is_none());
    }
}
