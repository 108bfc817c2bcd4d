//! The agent runtime shared by `sf-switch-agent`, `sf-hypervisor-agent` (and later the gateway
//! agent). A device-specific [`Dataplane`] plugs into one level-triggered loop:
//!
//! desired (from the Sync stream, or the on-disk cache while the coordinator is unreachable)
//! → observe the device → plan → apply → report (ack on the stream, status in etcd).
//!
//! - [`sync`]: the AgentSync client (mTLS, hello with the applied revision and digest,
//!   snapshot/delta/resume handling, reconnect with jittered exponential backoff).
//! - [`lease`]: the node's etcd lease, heartbeat key and status key.
//! - [`cache`]: the desired state persisted on local disk.
//! - [`bgp`]: the underlay BGP sessions read from FRR for the status, off the loop.
//! - [`runtime`]: wiring and the reconcile loop. The tasks talk over channels only: the sync
//!   client hands the loop a `watch` of delivered states and takes its acks on an `mpsc`;
//!   the lease task publishes the lease's health on a `watch` and reports the status the
//!   loop publishes on another.

pub mod bgp;
pub mod cache;
pub mod config;
pub mod lease;
pub mod runtime;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use sf_core::desired::NodeDesired;

pub use config::AgentArgs;
pub use runtime::run;

/// Monotonic counters reported in status, kept by the sync client, the lease task and the
/// reconcile loop alike.
#[derive(Default)]
pub struct Counters(Mutex<BTreeMap<String, u64>>);

impl Counters {
    pub fn incr(&self, name: &str) {
        *self.0.lock().unwrap().entry(name.to_string()).or_default() += 1;
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// Outcome of one reconcile pass (defined with the status it feeds, so the device library
/// builds it without depending on this runtime).
pub use sf_core::status::ReconcileReport;

/// Whether this node currently holds its etcd lease, as far as the agent can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Not yet confirmed since start: do not create or remove exclusive services.
    Unknown,
    /// Held. `continuous` is false when the lease had to be re-granted after a loss, meaning
    /// the coordinator may have moved this node's exclusive services elsewhere meanwhile.
    Held { continuous: bool },
    /// Renewals failed long enough that the lease may have expired: stand down from anything
    /// only one node may serve at a time (gateway addresses and announcements).
    Lost,
}

/// What the runtime knows beyond the desired state itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileContext {
    pub lease: LeaseState,
    /// The desired state came from the coordinator after the latest lease (re)acquisition,
    /// rather than from the on-disk cache or an earlier session.
    pub fresh: bool,
}

/// A device driver: makes the node match its desired state. Implementations own only what
/// they created and must never flush state they do not own.
#[async_trait::async_trait]
pub trait Dataplane: Send + 'static {
    /// Observes the device and converges it to `desired`. Must be idempotent.
    async fn reconcile(&mut self, desired: &NodeDesired, ctx: &ReconcileContext)
        -> ReconcileReport;

    /// Per-load-balancer health and table digests to report in status (gateways).
    async fn lb_status(&mut self) -> std::collections::BTreeMap<String, sf_core::status::LbStatus> {
        std::collections::BTreeMap::new()
    }

    /// Per-Direct-Connect BGP session state to report in status (gateways).
    async fn dc_status(&mut self) -> std::collections::BTreeMap<String, sf_core::status::DcStatus> {
        std::collections::BTreeMap::new()
    }

    /// What the gateway's failover controller sees (gateways).
    async fn failover_status(&mut self) -> sf_core::status::FailoverStatus {
        sf_core::status::FailoverStatus::default()
    }

    /// A notifier the dataplane triggers when it needs a reconcile pass outside of desired
    /// state changes (for example a backend's health changed).
    fn wakeup(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// A notifier the dataplane triggers when only what it reports changed (for example which
    /// VPCs a gateway sees another gateway serve): the loop re-reads the status and publishes
    /// it, without a reconcile pass. A pass over 1,000 VPC routers costs about a second of
    /// CPU; a peer's announcements reach a gateway one by one over minutes.
    fn status_wakeup(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// The kernel's per-rule counters (NAT, load balancer, ACL rules), exported as metrics.
    async fn rule_counters(&mut self) -> Vec<sf_metrics::RuleSample> {
        Vec::new()
    }

    /// VNIs of bridges found on the device that this agent did not create.
    async fn observed_vnis(&mut self) -> BTreeSet<u32> {
        BTreeSet::new()
    }
}
