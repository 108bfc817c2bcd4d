//! The hypervisor's Linux dataplane: VTEP on `lo`, one `vxlan<VNI>` in `brvx-<VNI>` per
//! network in scope, FRR with `advertise-all-vni`. Each reconcile observes the kernel, plans
//! with [`sf_linux::l2`] and runs only the planned commands, so a converged host sees no change
//! at all (no interface is ever recreated by a restart).
//!
//! East-west ACLs: after the links, the `bridge stackfabric` table is rendered from the
//! networks in scope and the VM ports observed on their bridges, and reloaded only when its
//! digest changed (see [`crate::acl`]). A watcher of link changes (`ip monitor link`) wakes
//! the agent up, so a VM port CloudStack plugs into a filtered bridge is dispatched to its
//! tier's chains within one pass, not at the next periodic resync. When the ACL stages
//! change, established flows they now deny are cut ([`crate::cut`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{L2Network, NodeDesired};
use sf_linux::converge::{Pass, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::l2::{self, foreign_vnis};
use sf_linux::links::{self, Link};
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
        }
    }

    /// Wakes the agent on link changes (`ip monitor link`): new or moved bridge ports.
    /// Restarts the monitor if it dies. Must be called inside a tokio runtime.
    pub fn watch_links(&self) {
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                match tokio::process::Command::new("ip")
                    .args(["monitor", "link"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                {
                    Ok(mut child) => {
                        use tokio::io::AsyncBufReadExt;
                        let out = child.stdout.take().expect("piped");
                        let mut lines = tokio::io::BufReader::new(out).lines();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l.contains("master ") || l.starts_with("Deleted") {
                                // Let a burst of changes settle into one pass.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                wake.notify_one();
                            }
                        }
                        let _ = child.wait().await;
                    }
                    Err(e) => warn!(error = %e, "ip monitor link"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
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
        let Some(observed) = l2::converge(&mut pass, &vnis, underlay.loopback).await else {
            return pass.into();
        };
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

    async fn observed_vnis(&mut self) -> BTreeSet<u32> {
        match links::observe().await {
            Ok(l) => foreign_vnis(&l),
            Err(e) => {
                warn!(error = %e, "observing links");
                BTreeSet::new()
            }
        }
    }
}
