//! `sf-switch-agent` as a library: a leaf or spine's dataplane is its loopback address, its
//! FRR (underlay eBGP on every fabric port; EVPN transit between VTEPs, or a VTEP itself on a
//! leaf that hands server-facing ports into VNIs), those ports ([`ports`]) and the public
//! pools it originates (`sf_linux::blackhole`). Links and addresses go through one
//! long-lived netlink socket ([`sf_linux::netlink`]), pipelined, no `ip` process.

pub mod ports;

use std::collections::BTreeSet;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{L2Network, NodeDesired};
use sf_linux::blackhole;
use sf_linux::converge::{Pass, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::netlink::{self, Netlink, NetlinkError};

pub struct Switch {
    pub node: String,
    pub frr: Frr,
    nl: Netlink,
    passes: u64,
}

impl Switch {
    /// Opens the switch's netlink socket (in the agent's namespace; inside a tokio runtime).
    pub fn new(node: String, frr: Frr) -> Result<Self, NetlinkError> {
        Ok(Switch {
            node,
            frr,
            nl: Netlink::open()?,
            passes: 0,
        })
    }
}

/// Observes the links again (the L2 step may have just made the bridges), plans the
/// server-facing members and runs the plan through netlink.
async fn converge_ports(pass: &mut Pass, nl: &Netlink, nets: &[&L2Network]) {
    let observed = netlink::observe::links(nl);
    let observed = async { observed.await.map_err(|e| e.on("dump links")) };
    let Some(links) = pass.observe("ports", observed).await else {
        return;
    };
    let (actions, problems) = ports::plan(&ports::wanted(nets), &links);
    pass.refused("ports", problems);
    let results = ports::execute(nl, &actions, &links).await;
    for (a, r) in actions.iter().zip(results) {
        pass.record_described("ports", format!("{a:?}"), r);
    }
}

#[async_trait::async_trait]
impl Dataplane for Switch {
    async fn reconcile(
        &mut self,
        desired: &NodeDesired,
        _ctx: &ReconcileContext,
    ) -> ReconcileReport {
        let mut pass = Pass::default();
        self.passes += 1;
        let Some(u) = desired.underlay() else {
            pass.error(ReconcileError::NoUnderlay);
            return pass.into();
        };
        // The loopback's VTEP address (the L2 plan adds it when missing, VNIs or not), the
        // VNIs this switch terminates: `vxlan<VNI>` in `brvx-<VNI>` (the same layout as a
        // hypervisor's), then the server-facing members of those bridges.
        let nets: Vec<&L2Network> = desired.networks().collect();
        let vnis: BTreeSet<u32> = nets.iter().map(|n| n.vni).collect();
        netlink::l2::converge(&mut pass, &self.nl, &vnis, u.loopback).await;
        converge_ports(&mut pass, &self.nl, &nets).await;
        // Before FRR, so its `network` statements for the pools find their routes.
        blackhole::converge(&mut pass, &blackhole::of_underlay(u)).await;
        // A full reload re-verifies what FRR runs: needed when a daemon restarted (it then
        // runs its own file, not what was applied), otherwise only a guard against hand
        // edits, every 60th pass (30 min at the default resync).
        let force = self.passes % 60 == 1 || self.frr.restarted_since_apply();
        let (config, expect) = (render(&self.node, u), expected_lines(u));
        pass.applied("FRR", self.frr.apply(&config, &expect, force).await);
        pass.into()
    }
}
