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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{L2Network, NodeDesired};
use sf_linux::converge::{Pass, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::l2::foreign_vnis;
use sf_linux::links::Link;
use sf_linux::netlink::events::LinkEvent;
use sf_linux::netlink::Netlink;
use sf_linux::DeviceError;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::acl;

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
    passes: u64,
    wake: Arc<Notify>,
    /// The netlink socket of this namespace, opened at the first pass.
    nl: Option<Netlink>,
    /// Foreign VNIs as last observed (None: not yet).
    foreign: Option<BTreeSet<u32>>,
    /// Set by the link watcher: a `brvx-*` link changed or events were lost since the
    /// foreign VNIs were read.
    links_dirty: Arc<AtomicBool>,
    /// The link watcher's subscription is live (without it, every status check re-reads).
    watching: Arc<AtomicBool>,
}

impl Hypervisor {
    pub fn new(node: String, frr: Frr) -> Self {
        Hypervisor {
            node,
            frr,
            skip_frr: false,
            last_acl_change: None,
            cut_for: None,
            passes: 0,
            wake: Arc::new(Notify::new()),
            nl: None,
            foreign: None,
            links_dirty: Arc::new(AtomicBool::new(true)),
            watching: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The namespace's netlink socket, opened on first use.
    fn netlink(&mut self) -> Result<Netlink, DeviceError> {
        if self.nl.is_none() {
            self.nl = Some(Netlink::open().map_err(|e| e.on("open socket"))?);
        }
        Ok(self.nl.clone().expect("opened"))
    }

    /// Wakes the agent on link changes (netlink RTNLGRP_LINK): new or moved bridge ports,
    /// deleted links, lost events. Resubscribes if the socket fails. Must be called inside a
    /// tokio runtime.
    pub fn watch_links(&self) {
        let (wake, dirty, watching) = (
            self.wake.clone(),
            self.links_dirty.clone(),
            self.watching.clone(),
        );
        tokio::spawn(async move {
            loop {
                match sf_linux::netlink::events::link_events() {
                    Ok(events) => {
                        // Whatever changed before the subscription is read once more.
                        dirty.store(true, Ordering::SeqCst);
                        watching.store(true, Ordering::SeqCst);
                        settle_and_wake(Box::pin(events), &wake, &dirty).await;
                        watching.store(false, Ordering::SeqCst);
                        warn!("link event subscription ended; resubscribing");
                    }
                    Err(e) => warn!(error = %e, "subscribing to link events"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
}

/// Reads link events until the stream ends. A burst (one pass creating thousands of links)
/// settles into one wakeup 100 ms after its first relevant event; the events are read on
/// meanwhile, so the socket's buffer keeps draining.
async fn settle_and_wake(
    mut events: std::pin::Pin<Box<impl futures::Stream<Item = LinkEvent>>>,
    wake: &Notify,
    dirty: &AtomicBool,
) {
    use futures::StreamExt;
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let next = match due {
            Some(at) => match tokio::time::timeout_at(at, events.next()).await {
                Ok(e) => e,
                Err(_) => {
                    due = None;
                    wake.notify_one();
                    continue;
                }
            },
            None => events.next().await,
        };
        let Some(e) = next else {
            if due.is_some() {
                wake.notify_one();
            }
            return;
        };
        let (relevant, foreign) = match &e {
            LinkEvent::Changed { name, master } => (*master, name.starts_with("brvx-")),
            LinkEvent::Deleted { name } => (true, name.starts_with("brvx-")),
            LinkEvent::Overrun => (true, true),
        };
        if foreign {
            dirty.store(true, Ordering::SeqCst);
        }
        if relevant && due.is_none() {
            due = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
    }
}

impl Hypervisor {
    /// East-west ACLs over the bridges (they exist now) and the observed VM ports.
    async fn converge_acl(&mut self, pass: &mut Pass, nets: &[&L2Network], links: &[Link]) {
        let rs = acl::render(nets, &acl::bridge_taps(links));
        pass.refused("ACL", rs.errors.iter().map(|e| format!("ACL: {e}")));
        let t = std::time::Instant::now();
        self.last_acl_change = None;
        let applied = acl::apply(&rs).await;
        if let Ok(true) = applied {
            self.last_acl_change = Some(t.elapsed());
            info!(digest = %rs.digest, tiers = rs.objects.len(), elapsed_ms = t.elapsed().as_millis() as u64, "ACL table applied");
        }
        let changed_table = matches!(applied, Ok(true));
        let ok = applied.is_ok();
        pass.applied("ACL", applied);
        if ok {
            self.cut_denied(nets, changed_table).await;
        }
    }

    /// Established flows that changed rules deny are cut: on the tiers whose rules changed
    /// since the last pass, or, on the first pass, on every tier if the table changed (the
    /// rules may have changed while the agent was down).
    async fn cut_denied(&mut self, nets: &[&L2Network], changed_table: bool) {
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
        match crate::cut::cut_denied(nets, &vnis).await {
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
        self.passes += 1;
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
        // Cleared before observing: an event during the pass marks it again.
        self.links_dirty.store(false, Ordering::SeqCst);
        let converged =
            sf_linux::netlink::l2::converge(&mut pass, &nl, &vnis, underlay.loopback).await;
        let Some(observed) = converged else {
            self.links_dirty.store(true, Ordering::SeqCst);
            return pass.into();
        };
        self.foreign = Some(foreign_vnis(&observed.links));
        let nets: Vec<&L2Network> = desired.networks().collect();
        self.converge_acl(&mut pass, &nets, &observed.links).await;
        if self.skip_frr {
            return pass.into();
        }
        // FRR after the links, so the VTEP exists before advertise-all-vni sees the VNIs.
        // Re-verify FRR every 10th pass (cheap delta, catches drift).
        let config = render(&self.node, underlay);
        let force = self.passes % 10 == 1;
        let expect = expected_lines(underlay);
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

    /// Called every 3 s by the runtime: answers from the last observation unless a link
    /// event (or a missing subscription) says the foreign bridges may have changed.
    async fn observed_vnis(&mut self) -> BTreeSet<u32> {
        let stale =
            self.links_dirty.swap(false, Ordering::SeqCst) || !self.watching.load(Ordering::SeqCst);
        if let (Some(f), false) = (&self.foreign, stale) {
            return f.clone();
        }
        let observed = match self.netlink() {
            Ok(nl) => sf_linux::netlink::observe::links(&nl)
                .await
                .map_err(|e| e.on("dump links")),
            Err(e) => Err(e),
        };
        match observed {
            Ok(l) => {
                let f = foreign_vnis(&l);
                self.foreign = Some(f.clone());
                f
            }
            Err(e) => {
                self.links_dirty.store(true, Ordering::SeqCst);
                warn!(error = %e, "observing links");
                BTreeSet::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    fn changed(name: &str, master: bool) -> LinkEvent {
        LinkEvent::Changed {
            name: name.into(),
            master,
        }
    }

    /// Whether `wake` fires within `ms` milliseconds.
    async fn woke(wake: &Notify, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn link_events_wake_on_ports_and_mark_foreign_bridges() {
        let (tx, rx) = mpsc::unbounded();
        let (wake, dirty) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let (w, d) = (wake.clone(), dirty.clone());
        let task = tokio::spawn(async move { settle_and_wake(Box::pin(rx), &w, &d).await });
        // A bridge of ours or CloudStack's appears: foreign VNIs may have changed, no pass.
        tx.unbounded_send(changed("brvx-2000000", false)).unwrap();
        assert!(!woke(&wake, 300).await);
        assert!(dirty.swap(false, Ordering::SeqCst));
        // A burst of VM ports plugged into bridges: one wakeup, no foreign change.
        for i in 0..50 {
            tx.unbounded_send(changed(&format!("vnet{i}"), true))
                .unwrap();
        }
        assert!(woke(&wake, 1_000).await);
        assert!(!woke(&wake, 300).await, "one wakeup for the burst");
        assert!(!dirty.load(Ordering::SeqCst));
        // Lost events: wake and re-read.
        tx.unbounded_send(LinkEvent::Overrun).unwrap();
        assert!(woke(&wake, 1_000).await);
        assert!(dirty.load(Ordering::SeqCst));
        // A deletion just before the subscription ends still wakes.
        tx.unbounded_send(LinkEvent::Deleted {
            name: "vnet3".into(),
        })
        .unwrap();
        drop(tx);
        task.await.unwrap();
        assert!(woke(&wake, 100).await);
    }
}
