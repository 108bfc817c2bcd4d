//! What an agent reports about itself, under its lease: the revision and digest it applied, its
//! errors and counters, and what it observed locally that should widen its scope.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Outcome of one reconcile pass of an agent's dataplane.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Changes made to the device in this pass (0 when already converged).
    pub changes: usize,
    /// Per-object problems; the pass continues past them and reports them in status.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    pub role: String,
    pub agent_version: String,
    /// Revision of the desired state last applied without error.
    pub applied_revision: u64,
    pub applied_digest: String,
    /// Errors of the last reconcile (empty when clean).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Monotonic counters since the agent started: snapshots, resumes, deltas, reconciles, ...
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// VNIs of `brvx-<VNI>` bridges present on the node that the agent did not create.
    #[serde(default)]
    pub observed_vnis: BTreeSet<u32>,
    /// Load balancers served by this node, by "tenant/vpc/name".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub load_balancers: BTreeMap<String, LbStatus>,
    /// Direct Connect BGP sessions of the VPC routers this node serves, by "tenant/vpc/name".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub direct_connects: BTreeMap<String, DcStatus>,
    /// Gateways: what the failover controller sees of the fabric (placement follows it).
    #[serde(default, skip_serializing_if = "FailoverStatus::is_empty")]
    pub failover: FailoverStatus,
    /// Underlay BGP sessions of the node's FRR (default VRF), sorted by peer; empty when the
    /// agent does not read FRR or could not (then `bgp_error` says why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp_sessions: Vec<BgpSession>,
    /// Why the last read of the BGP sessions failed ("" when it worked or is not configured).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bgp_error: String,
    /// Unix time (ms) of this report.
    #[serde(default)]
    pub reported_at_ms: u64,
}

/// A gateway's view of the VPCs placed on it, by "tenant/vpc".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// VPCs this gateway forwards (active, announced).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub serving: BTreeSet<String>,
    /// VPCs this gateway holds passive while it sees another gateway announce them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub seen_elsewhere: BTreeSet<String>,
}

impl AgentStatus {
    /// The backends this gateway's checks hold DOWN, by load balancer, of every load balancer
    /// of the VPCs it serves (an empty set: none down; a passive router's tables are not its
    /// checks' word, so its load balancers are left out). A backend no check has vouched for
    /// yet is not down.
    pub fn lb_down(&self) -> crate::model::LbDownReport {
        let mut out = crate::model::LbDownReport::new();
        for (key, lb) in &self.load_balancers {
            let mut parts = key.splitn(3, '/');
            let (Some(t), Some(v), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if !self.failover.serving.contains(&format!("{t}/{v}")) {
                continue;
            }
            let down: BTreeSet<String> = lb
                .backends
                .iter()
                .filter(|(b, up)| !**up && !lb.unverified.contains(*b))
                .map(|(b, _)| b.clone())
                .collect();
            out.insert(crate::event::VpcChildRef::new(t, v, name), down);
        }
        out
    }
}

impl FailoverStatus {
    pub fn is_empty(&self) -> bool {
        self.serving.is_empty() && self.seen_elsewhere.is_empty()
    }
}

/// What a gateway reports about one load balancer it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbStatus {
    /// Digest of the installed Maglev table (identical on every gateway with the same view).
    pub table_digest: String,
    /// Backend name → healthy.
    pub backends: BTreeMap<String, bool>,
    /// Backends counted UP (in the table) that no check has vouched for yet: a new load
    /// balancer's, or those of a router that just turned active. Shown as "unknown".
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub unverified: std::collections::BTreeSet<String>,
}

/// What a gateway reports about one Direct Connect's BGP session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcStatus {
    /// FRR's session state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Prefixes the customer sent (before the accept filter).
    pub received: u64,
    /// Prefixes accepted and installed in the VPC.
    pub accepted: u64,
    /// Prefixes announced to the customer.
    pub sent: u64,
}

/// One underlay BGP session as FRR reports it (`show bgp summary json`), merged over the
/// address families the node uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSession {
    /// The neighbor as configured: the interface of an unnumbered session, else its address.
    pub peer: String,
    /// The peer's hostname as FRR learnt it (hostname capability); "" when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    pub remote_as: u32,
    /// FRR's state: Idle, Connect, Active, OpenSent, OpenConfirm, Established (or a
    /// qualified form such as "Idle (Admin)").
    pub state: String,
    /// Unix time (s) the session became Established (0 when it is not). Kept stable by the
    /// reader while the state holds: FRR derives it from "now - uptime", which wobbles.
    #[serde(default)]
    pub established_epoch: u64,
    /// Prefix counts per address family (FRR's key, e.g. "ipv4Unicast", "l2VpnEvpn").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefixes: BTreeMap<String, PrefixCounts>,
}

impl BgpSession {
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

/// Prefixes received from and sent to a BGP peer in one address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixCounts {
    pub received: u64,
    pub sent: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(backends: &[(&str, bool)], unverified: &[&str]) -> LbStatus {
        LbStatus {
            table_digest: String::new(),
            backends: backends
                .iter()
                .map(|(b, up)| (b.to_string(), *up))
                .collect(),
            unverified: unverified.iter().map(|b| b.to_string()).collect(),
        }
    }

    /// Only a check's DOWN counts, and only for a VPC the gateway serves: a passive router's
    /// tables follow someone else's word.
    #[test]
    fn a_gateway_reports_down_only_what_its_checks_hold_down_where_it_serves() {
        let mut s = AgentStatus::default();
        s.failover.serving.insert("demo/blue".into());
        s.load_balancers.insert(
            "demo/blue/web".into(),
            lb(
                &[("a:80", true), ("b:80", false), ("c:80", false)],
                &["c:80"],
            ),
        );
        s.load_balancers
            .insert("demo/blue/up".into(), lb(&[("a:80", true)], &[]));
        s.load_balancers
            .insert("demo/red/web".into(), lb(&[("b:80", false)], &[]));
        let down = s.lb_down();
        let blue = |name: &str| crate::event::VpcChildRef::new("demo", "blue", name);
        let want = BTreeMap::from([
            (blue("web"), BTreeSet::from(["b:80".to_string()])),
            (blue("up"), BTreeSet::new()),
        ]);
        assert_eq!(down, want);
    }
}
