//! The hypervisor's Linux dataplane: VTEP on `lo`, one `vxlan<VNI>` in `brvx-<VNI>` per
//! network in scope, FRR with `advertise-all-vni`. Each reconcile observes the kernel, plans
//! with [`crate::plan`] and runs only the planned commands, so a converged host sees no change
//! at all (no interface is ever recreated by a restart).

use std::collections::BTreeSet;

use sf_agent::{Dataplane, ReconcileReport};
use sf_core::desired::NodeDesired;
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::links::{self, OWNER_ALIAS};
use tracing::{info, warn};

use crate::plan::{foreign_vnis, plan, Action, VXLAN_PORT};

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

async fn execute(a: &Action) -> Result<(), sf_linux::DeviceError> {
    match a {
        Action::AddLoopbackAddress(ip) => {
            links::ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]).await
        }
        Action::AddBridge { name } => {
            links::ip(&["link", "add", name, "type", "bridge", "stp_state", "0"]).await?;
            links::ip(&["link", "set", "dev", name, "alias", OWNER_ALIAS]).await
        }
        Action::AddVxlan { name, vni, local } => {
            links::ip(&[
                "link",
                "add",
                name,
                "type",
                "vxlan",
                "id",
                &vni.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "local",
                &local.to_string(),
                "nolearning",
            ])
            .await?;
            links::ip(&["link", "set", "dev", name, "alias", OWNER_ALIAS]).await
        }
        Action::SetMaster { link, master } => {
            links::ip(&["link", "set", "dev", link, "master", master]).await
        }
        Action::SetPortFlags { link } => {
            links::bridge(&[
                "link",
                "set",
                "dev",
                link,
                "neigh_suppress",
                "on",
                "learning",
                "off",
            ])
            .await
        }
        Action::SetUp { link } => links::ip(&["link", "set", "dev", link, "up"]).await,
        Action::Delete { link } => links::ip(&["link", "del", "dev", link]).await,
    }
}

#[async_trait::async_trait]
impl Dataplane for Hypervisor {
    async fn reconcile(&mut self, desired: &NodeDesired) -> ReconcileReport {
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
