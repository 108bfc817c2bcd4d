//! The hypervisor's Linux dataplane: VTEP on `lo`, one `vxlan<VNI>` in `brvx-<VNI>` per
//! network in scope, FRR with `advertise-all-vni`. Each reconcile observes the kernel, plans
//! with [`sf_linux::l2`] and runs only the planned commands, so a converged host sees no change
//! at all (no interface is ever recreated by a restart).

use std::collections::BTreeSet;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::NodeDesired;
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::links;
use tracing::{info, warn};

use sf_linux::l2::{execute, foreign_vnis, plan};

pub struct Hypervisor {
    pub node: String,
    pub frr: Frr,
    passes: u64,
}

impl Hypervisor {
    pub fn new(node: String, frr: Frr) -> Self {
        Hypervisor {
            node,
            frr,
            passes: 0,
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
        let mut report = ReconcileReport::default();
        self.passes += 1;
        let Some(underlay) = desired.underlay() else {
            report.errors.push("desired state has no underlay".into());
            return report;
        };
        let vnis: BTreeSet<u32> = desired.networks().map(|n| n.vni).collect();
        let (observed, lo) = match (links::observe().await, links::addresses("lo").await) {
            (Ok(l), Ok(a)) => (l, a),
            (Err(e), _) | (_, Err(e)) => {
                report.errors.push(format!("observing links: {e}"));
                return report;
            }
        };
        let p = plan(&vnis, underlay.loopback, &lo, &observed);
        report.errors.extend(p.errors);
        for action in &p.actions {
            match execute(action).await {
                Ok(()) => {
                    info!(?action, "applied");
                    report.changes += 1;
                }
                Err(e) => {
                    warn!(?action, error = %e, "action failed");
                    report.errors.push(e.to_string());
                }
            }
        }
        // FRR after the links, so the VTEP exists before advertise-all-vni sees the VNIs.
        // Re-verify FRR every 10th pass (cheap delta, catches drift).
        let config = render(&self.node, underlay);
        match self
            .frr
            .apply(&config, &expected_lines(underlay), self.passes % 10 == 1)
            .await
        {
            Ok(true) => report.changes += 1,
            Ok(false) => {}
            Err(e) => report.errors.push(format!("FRR: {e}")),
        }
        report
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
