//! `sf-switch-agent` as a library: a leaf or spine's dataplane is its loopback address, its
//! FRR (underlay eBGP on every fabric port; EVPN transit between VTEPs, or a VTEP itself on a
//! leaf that hands server-facing ports into VNIs), those ports ([`ports`]) and the public
//! pools it originates (`sf_linux::blackhole`).

pub mod ports;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use sf_agent::{Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{L2Network, NodeDesired};
use sf_linux::converge::{OnFailure, Pass, Plan, ReconcileError};
use sf_linux::frr::{expected_lines, render, Frr};
use sf_linux::links::{self, Link};
use sf_linux::{blackhole, l2};

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
        let mut pass = Pass::default();
        self.passes += 1;
        let Some(u) = desired.underlay() else {
            pass.error(ReconcileError::NoUnderlay);
            return pass.into();
        };
        let loopback = |lo: &Vec<Ipv4Addr>| {
            let add =
                (!lo.contains(&u.loopback)).then_some(l2::Action::AddLoopbackAddress(u.loopback));
            Plan::new(add.into_iter().collect(), vec![])
        };
        pass.converge(
            "loopback",
            links::addresses("lo"),
            loopback,
            OnFailure::Continue,
        )
        .await;
        // VNIs this switch terminates: `vxlan<VNI>` in `brvx-<VNI>` (the same layout as a
        // hypervisor's), then the server-facing members of those bridges.
        let nets: Vec<&L2Network> = desired.networks().collect();
        let vnis: BTreeSet<u32> = nets.iter().map(|n| n.vni).collect();
        l2::converge(&mut pass, &vnis, u.loopback).await;
        let ports = |observed: &Vec<Link>| {
            let (actions, errors) = ports::plan(&ports::wanted(&nets), observed);
            Plan::new(actions, errors)
        };
        pass.converge("links", links::observe(), ports, OnFailure::Continue)
            .await;
        // Before FRR, so its `network` statements for the pools find their routes.
        blackhole::converge(&mut pass, &u.blackhole).await;
        let force = self.passes % 10 == 1;
        let (config, expect) = (render(&self.node, u), expected_lines(u));
        pass.applied("FRR", self.frr.apply(&config, &expect, force).await);
        pass.into()
    }
}
