//! `sf-switch-agent` as a library: a leaf or spine's dataplane is its loopback address, its
//! FRR (underlay eBGP on every fabric port; EVPN transit between VTEPs, or a VTEP itself on a
//! leaf that hands server-facing ports into VNIs), those ports ([`ports`]) and the public
//! pools it originates (`sf_linux::blackhole`). Links and addresses go through one
//! long-lived netlink socket ([`sf_linux::netlink`]), pipelined, no `ip` process; what the
//! plans read (links, the loopback's addresses, the blackhole routes) comes from a mirror
//! kept from netlink messages ([`sf_linux::netlink::mirror`]), dumped again every
//! [`FULL_EVERY`]th pass, not from a dump of every link per pass.

pub mod ports;

use std::collections::BTreeSet;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{L2Network, NodeDesired};
use sf_linux::blackhole;
use sf_linux::converge::{Pass, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::netlink::mirror::Mirror;
use sf_linux::netlink::{self, Netlink, NetlinkError};

/// Every how many passes the mirror is dumped again (5 min at the default 30 s resync): what
/// the kernel announces without a message, if anything changes it behind the agent's back.
pub const FULL_EVERY: u64 = 10;

pub struct Switch {
    pub node: String,
    pub frr: Frr,
    nl: Netlink,
    /// The switch's links, addresses and routes, kept from netlink messages.
    mirror: Mirror,
    passes: u64,
}

impl Switch {
    /// Opens the switch's netlink socket (in the agent's namespace; inside a tokio runtime).
    pub fn new(node: String, frr: Frr) -> Result<Self, NetlinkError> {
        Ok(Switch {
            node,
            frr,
            nl: Netlink::open()?,
            mirror: Mirror::open().map_err(NetlinkError::Open)?,
            passes: 0,
        })
    }
}

impl Switch {
    /// How many times the mirror dumped every link, address and route (the first sync
    /// included).
    pub fn mirror_dumps(&self) -> u64 {
        self.mirror.dumps()
    }

    /// Brings the mirror up to now (a dump when `full`, or when messages were lost).
    async fn sync(&mut self, pass: &mut Pass, full: bool) -> bool {
        let synced = self.mirror.sync(&self.nl, full).await;
        let synced = async { synced.map_err(|e| e.on("mirror links, addresses and routes")) };
        pass.observe("links", synced).await.is_some()
    }

    /// The loopback's VTEP address and the overlay links of `vnis`, from the mirror.
    async fn converge_l2(
        &mut self,
        pass: &mut Pass,
        vnis: &BTreeSet<u32>,
        vtep: std::net::Ipv4Addr,
    ) {
        let st = self.mirror.state();
        let observed = sf_linux::l2::Observed {
            links: st.links().to_vec(),
            lo: st.loopback_v4(),
        };
        let done = netlink::l2::converge_observed(pass, &self.nl, vnis, vtep, &observed).await;
        self.mirror.state_mut().record_l2(&done);
    }

    /// Plans the server-facing members from the mirror brought up to now (the L2 step may
    /// have just made the bridges) and runs the plan through netlink.
    async fn converge_ports(&mut self, pass: &mut Pass, nets: &[&L2Network]) {
        if !self.sync(pass, false).await {
            return;
        }
        let links = self.mirror.state().links().to_vec();
        let (actions, problems) = ports::plan(&ports::wanted(nets), &links);
        pass.refused("ports", problems);
        let results = ports::execute(&self.nl, &actions, &links).await;
        for (a, r) in actions.iter().zip(results) {
            pass.record_described("ports", format!("{a:?}"), r);
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
        if self.sync(&mut pass, self.passes % FULL_EVERY == 1).await {
            self.converge_l2(&mut pass, &vnis, u.loopback).await;
            self.converge_ports(&mut pass, &nets).await;
            // Before FRR, so its `network` statements for the pools find their routes.
            let seen = blackhole::of_mirror(self.mirror.state());
            blackhole::converge_observed(&mut pass, &blackhole::of_underlay(u), seen).await;
        }
        // A full reload re-verifies what FRR runs: needed when a daemon restarted (it then
        // runs its own file, not what was applied), otherwise only a guard against hand
        // edits, every 60th pass (30 min at the default resync).
        let force = self.passes % 60 == 1 || self.frr.restarted_since_apply();
        let (config, expect) = (render(&self.node, u), expected_lines(u));
        pass.applied("FRR", self.frr.apply(&config, &expect, force).await);
        pass.into()
    }
}
