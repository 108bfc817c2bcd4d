//! `sf-switch-agent` as a library: a leaf or spine's dataplane is its loopback address, its
//! FRR (underlay eBGP on every fabric port; EVPN transit between VTEPs, or a VTEP itself on a
//! leaf that hands server-facing ports into VNIs), those ports ([`ports`]) and the public
//! pools it originates (`sf_linux::blackhole`).

pub mod ports;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::NodeDesired;
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::{blackhole, l2, links};
use tracing::info;

pub struct Switch {
    pub node: String,
    pub frr: Frr,
    passes: u64,
}

impl Switch {
    pub fn new(node: String, frr: Frr) -> Self {
        Switch {
            node,
            frr,
            passes: 0,
        }
    }
}

#[async_trait::async_trait]
impl Dataplane for Switch {
    async fn reconcile(
        &mut self,
        desired: &NodeDesired,
        _ctx: &ReconcileContext,
    ) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        self.passes += 1;
        let Some(u) = desired.underlay() else {
            report.errors.push("desired state has no underlay".into());
            return report;
        };
        match links::addresses("lo").await {
            Ok(a) if a.contains(&u.loopback) => {}
            Ok(_) => match links::ip(&["addr", "add", &format!("{}/32", u.loopback), "dev", "lo"])
                .await
            {
                Ok(()) => report.changes += 1,
                Err(e) => report.errors.push(e.to_string()),
            },
            Err(e) => report.errors.push(e.to_string()),
        }
        // VNIs this switch terminates: `vxlan<VNI>` in `brvx-<VNI>` (the same layout as a
        // hypervisor's), then the server-facing members of those bridges.
        let nets: Vec<&sf_core::desired::L2Network> = desired.networks().collect();
        let vnis: std::collections::BTreeSet<u32> = nets.iter().map(|n| n.vni).collect();
        match (links::observe().await, links::addresses("lo").await) {
            (Ok(observed), Ok(lo)) => {
                let p = l2::plan(&vnis, u.loopback, &lo, &observed);
                report.errors.extend(p.errors);
                for a in &p.actions {
                    match l2::execute(a).await {
                        Ok(()) => {
                            info!(action = ?a, "applied");
                            report.changes += 1;
                        }
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => report.errors.push(format!("observing links: {e}")),
        }
        match links::observe().await {
            Ok(observed) => {
                let (actions, errors) = ports::plan(&ports::wanted(&nets), &observed);
                report.errors.extend(errors);
                for a in &actions {
                    match ports::execute(a).await {
                        Ok(()) => {
                            info!(action = ?a, "applied");
                            report.changes += 1;
                        }
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
            }
            Err(e) => report.errors.push(format!("observing links: {e}")),
        }
        // Before FRR, so its `network` statements for the pools find their routes.
        let (changes, errors) = blackhole::converge(&u.blackhole).await;
        report.changes += changes;
        report.errors.extend(errors);
        match self
            .frr
            .apply(
                &render(&self.node, u),
                &expected_lines(u),
                self.passes % 10 == 1,
            )
            .await
        {
            Ok(true) => report.changes += 1,
            Ok(false) => {}
            Err(e) => report.errors.push(format!("FRR: {e}")),
        }
        report
    }
}
