//! `sf-switch-agent` as a library: a leaf or spine's dataplane is its loopback address and its
//! FRR (underlay eBGP on every fabric port, EVPN transit between VTEPs).

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::NodeDesired;
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::links;

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
