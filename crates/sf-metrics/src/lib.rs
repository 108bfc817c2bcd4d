//! Prometheus metrics and the health endpoint that every StackFabric binary serves with
//! `--metrics-listen`: the metric families of agents ([`AgentMetrics`]) and of the
//! coordinator ([`CoordinatorMetrics`]), one latency bucket layout, and a small HTTP server
//! for `/metrics` (OpenMetrics text) and `/healthz`.
//!
//! The headline figure is intent-to-dataplane latency. The coordinator stamps each intent
//! revision once, with the wall-clock time it observed the revision's watch event (within
//! milliseconds of the API call returning), and sends the stamp with every Snapshot and Delta
//! of that revision. Agents observe `now - stamp` once per revision after a reconcile applied
//! it without error; the coordinator observes the same at each ack. So an operator reads in
//! production the figure `deploy/bench.sh` measures (clocks synchronized by NTP, as etcd and
//! TLS already require).
//!
//! Every binary also exports `sf_build_info{component, version}` and, once it has read its
//! certificate, `sf_tls_cert_expiry_timestamp_seconds` (the certificate's notAfter), which the
//! alert rules in `deploy/monitoring/` watch. Per-rule kernel counters are summed per chain
//! kind unless an operator opts rules in ([`RuleDetail`]): 10,000 rules on 1,000 nodes must
//! not become 10 million series.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry as MetricsRegistry;

/// Latency buckets: 5 ms doubling to about 41 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Milliseconds since the Unix epoch (the stamp's unit).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds from `stamp_ms` to now (0 if the stamp is in the future: skewed clocks).
pub fn seconds_since(stamp_ms: u64) -> f64 {
    now_ms().saturating_sub(stamp_ms) as f64 / 1000.0
}

/// One kernel rule counter: where the rule lives (`scope`: the node, or a VPC router's
/// namespace), its chain, and the rule's name (its nftables comment, e.g. `ingress 10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSample {
    pub scope: String,
    pub chain: String,
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Which rules get a series of their own (`--rule-metrics`). The others are summed per chain
/// kind (the chain name without its VNI or id: `in_1000001` -> `in`) into one series labelled
/// `scope="_all", chain=KIND, rule="_all"`, so a node exports a handful of series however many
/// rules it holds, and `sum(rate(sf_rule_packets_total[5m]))` means the same in every mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuleDetail {
    /// Every rule summed per chain kind (the default).
    #[default]
    Aggregate,
    /// One series per rule (small fleets, labs, debugging).
    PerRule,
    /// One series per rule of the named chains (exactly, e.g. `in_1000001`), the rest summed.
    Chains(Vec<String>),
}

impl std::str::FromStr for RuleDetail {
    type Err = String;

    /// `aggregate`, `per-rule`, or a comma separated list of chain names.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "aggregate" => Ok(RuleDetail::Aggregate),
            "per-rule" => Ok(RuleDetail::PerRule),
            "" => Err("expected aggregate, per-rule or a list of chain names".into()),
            list => Ok(RuleDetail::Chains(
                list.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
        }
    }
}

impl RuleDetail {
    fn per_rule(&self, chain: &str) -> bool {
        match self {
            RuleDetail::Aggregate => false,
            RuleDetail::PerRule => true,
            RuleDetail::Chains(c) => c.iter().any(|x| x == chain),
        }
    }
}

/// The kind of a chain: its name without trailing ids (`acl_in_1000001` -> `acl_in`,
/// `vip-12` -> `vip`); a name that is all digits stays as it is.
pub fn chain_kind(chain: &str) -> &str {
    let kind = chain.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_' || c == '-');
    if kind.is_empty() {
        chain
    } else {
        kind
    }
}

/// The latest per-rule counters an agent read from the kernel, exported on each scrape as
/// `sf_rule_packets_total` and `sf_rule_bytes_total{scope, chain, rule}`, per rule or summed
/// as [`RuleDetail`] says. They are the kernel's own counters (they restart at 0 when a rule is
/// replaced, which Prometheus' `rate()` treats as a counter reset).
#[derive(Debug, Clone, Default)]
pub struct RuleCounters(Arc<std::sync::Mutex<(Vec<RuleSample>, RuleDetail)>>);

impl RuleCounters {
    pub fn replace(&self, samples: Vec<RuleSample>) {
        self.0.lock().unwrap().0 = samples;
    }

    pub fn snapshot(&self) -> Vec<RuleSample> {
        self.0.lock().unwrap().0.clone()
    }

    /// Chooses which rules get series of their own (default: none, all summed).
    pub fn set_detail(&self, detail: RuleDetail) {
        self.0.lock().unwrap().1 = detail;
    }

    /// The series to export: the opted-in rules as they are, the rest summed per chain kind
    /// (in a stable order, so scrapes list them alike).
    pub fn exported(&self) -> Vec<RuleSample> {
        let (samples, detail) = &*self.0.lock().unwrap();
        let mut out = Vec::new();
        let mut sums: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for s in samples {
            if detail.per_rule(&s.chain) {
                out.push(s.clone());
            } else {
                let e = sums.entry(chain_kind(&s.chain)).or_default();
                e.0 = e.0.wrapping_add(s.packets);
                e.1 = e.1.wrapping_add(s.bytes);
            }
        }
        out.extend(sums.into_iter().map(|(kind, (packets, bytes))| RuleSample {
            scope: "_all".into(),
            chain: kind.to_string(),
            rule: "_all".into(),
            packets,
            bytes,
        }));
        out
    }
}

impl prometheus_client::collector::Collector for RuleCounters {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let samples = self.exported();
        if samples.is_empty() {
            return Ok(());
        }
        for (name, help, value) in [
            (
                "sf_rule_packets",
                "Packets matched by a NAT, load balancer or ACL rule (kernel counter)",
                (|s: &RuleSample| s.packets) as fn(&RuleSample) -> u64,
            ),
            (
                "sf_rule_bytes",
                "Bytes matched by a NAT, load balancer or ACL rule (kernel counter)",
                |s: &RuleSample| s.bytes,
            ),
        ] {
            let probe = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for s in &samples {
                let labels = [
                    ("scope", s.scope.as_str()),
                    ("chain", s.chain.as_str()),
                    ("rule", s.rule.as_str()),
                ];
                ConstCounter::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Registers `sf_build_info{component, version} 1`: which build runs where (and, with
/// `count by (version)`, how far a rolling upgrade got).
pub fn register_build_info(reg: &mut Registry, component: &str) {
    let info = prometheus_client::metrics::info::Info::new(vec![
        ("component".to_string(), component.to_string()),
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    reg.register("sf_build", "The running StackFabric build", info);
}

/// A certificate's expiry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("not an X.509 certificate: {0}")]
    X509(String),
}

/// The notAfter of the first certificate in `pem`, in seconds since the Unix epoch.
pub fn cert_not_after(pem: &[u8]) -> Result<i64, CertError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| CertError::Pem(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::X509(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Sets `gauge` to the expiry of the certificate in the PEM file at `path`; a certificate
/// that cannot be read is logged and leaves the gauge unset (0), which the expiry alert does
/// not mistake for an expired certificate.
pub fn set_cert_expiry(gauge: &Gauge, path: &std::path::Path) {
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| cert_not_after(&pem).map_err(|e| e.to_string()))
    {
        Ok(t) => {
            gauge.set(t);
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read certificate expiry")
        }
    }
}

const CERT_EXPIRY_HELP: &str =
    "notAfter of this process's TLS certificate, seconds since the Unix epoch (0: unknown)";

/// What asked for a reconcile pass (the label of `sf_agent_pass_triggers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassTrigger {
    /// A new desired state arrived.
    Delivery,
    /// The periodic resync tick.
    Resync,
    /// The dataplane's own wakeup (health, failover, Direct Connect status).
    Wakeup,
    /// The lease state moved (held, lost, regained).
    Lease,
}

impl PassTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            PassTrigger::Delivery => "delivery",
            PassTrigger::Resync => "resync",
            PassTrigger::Wakeup => "wakeup",
            PassTrigger::Lease => "lease",
        }
    }
}

/// What every agent exports.
#[derive(Clone)]
pub struct AgentMetrics {
    pub intent_to_dataplane: Histogram,
    pub applied_revision: Gauge,
    /// Revision of the desired state last received (applied or not): with
    /// `applied_revision` it shows a node stuck behind.
    pub desired_revision: Gauge,
    pub desired_objects: Gauge,
    pub reconciles: Counter,
    /// Reconcile passes by what asked for them (see [`PassTrigger`]): an idle node whose
    /// passes come faster than its resync interval shows here which source wakes it.
    pub pass_triggers: prometheus_client::metrics::family::Family<Vec<(String, String)>, Counter>,
    pub reconcile_errors: Counter,
    pub lease_up: Gauge,
    pub coordinator_connected: Gauge,
    pub snapshots: Counter,
    pub deltas: Counter,
    /// Per-rule packet and byte counters read from the kernel (nftables `counter`s).
    pub rules: RuleCounters,
    /// The agent's client certificate's notAfter (Unix seconds).
    pub cert_expiry: Gauge,
    /// Underlay BGP sessions by state (see [`AgentMetrics::set_bgp_states`]).
    pub bgp_sessions: prometheus_client::metrics::family::Family<Vec<(String, String)>, Gauge>,
}

impl AgentMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = AgentMetrics {
            intent_to_dataplane: latency_histogram(),
            applied_revision: Gauge::default(),
            desired_revision: Gauge::default(),
            desired_objects: Gauge::default(),
            reconciles: Counter::default(),
            pass_triggers: Default::default(),
            reconcile_errors: Counter::default(),
            lease_up: Gauge::default(),
            coordinator_connected: Gauge::default(),
            snapshots: Counter::default(),
            deltas: Counter::default(),
            rules: RuleCounters::default(),
            cert_expiry: Gauge::default(),
            bgp_sessions: Default::default(),
        };
        register_build_info(reg, "agent");
        reg.register(
            "sf_tls_cert_expiry_timestamp_seconds",
            CERT_EXPIRY_HELP,
            m.cert_expiry.clone(),
        );
        reg.register_collector(Box::new(m.rules.clone()));
        reg.register(
            "sf_agent_intent_to_dataplane_seconds",
            "Time from the coordinator observing an intent revision to this node's dataplane applying it without error",
            m.intent_to_dataplane.clone(),
        );
        reg.register(
            "sf_agent_applied_revision",
            "Intent revision last applied without error",
            m.applied_revision.clone(),
        );
        reg.register(
            "sf_agent_desired_revision",
            "Revision of the desired state this node last received from a coordinator",
            m.desired_revision.clone(),
        );
        reg.register(
            "sf_agent_desired_objects",
            "Objects in this node's desired state",
            m.desired_objects.clone(),
        );
        reg.register(
            "sf_agent_reconciles",
            "Reconcile passes",
            m.reconciles.clone(),
        );
        reg.register(
            "sf_agent_pass_triggers",
            "Reconcile passes by trigger: delivery (new desired state), resync (the periodic full pass), wakeup (the dataplane asked: a health flip, a failover flip, a Direct Connect status change; a change of the report alone makes no pass), lease (the lease state moved)",
            m.pass_triggers.clone(),
        );
        reg.register(
            "sf_agent_reconcile_errors",
            "Reconcile passes that reported errors",
            m.reconcile_errors.clone(),
        );
        reg.register(
            "sf_agent_lease_up",
            "1 while this node holds its etcd lease (renewed in time), else 0",
            m.lease_up.clone(),
        );
        reg.register(
            "sf_agent_coordinator_connected",
            "1 while the Sync stream to a coordinator is open, else 0",
            m.coordinator_connected.clone(),
        );
        reg.register(
            "sf_agent_snapshots",
            "Full snapshots received",
            m.snapshots.clone(),
        );
        reg.register("sf_agent_deltas", "Deltas received", m.deltas.clone());
        reg.register(
            "sf_agent_bgp_sessions",
            "Underlay BGP sessions of this node's FRR by state",
            m.bgp_sessions.clone(),
        );
        m
    }

    /// Sets the session count of every BGP state from `states` (one entry per session). The
    /// label takes FRR's six states and "other", so the series stay bounded whatever FRR says.
    /// Counts one reconcile pass under its trigger.
    pub fn count_pass(&self, trigger: PassTrigger) {
        self.pass_triggers
            .get_or_create(&vec![("trigger".into(), trigger.as_str().into())])
            .inc();
    }

    pub fn set_bgp_states<'a>(&self, states: impl IntoIterator<Item = &'a str>) {
        const KNOWN: [&str; 6] = [
            "Idle",
            "Connect",
            "Active",
            "OpenSent",
            "OpenConfirm",
            "Established",
        ];
        let mut counts = [0i64; 7];
        for s in states {
            let i = KNOWN.iter().position(|k| *k == s).unwrap_or(6);
            counts[i] += 1;
        }
        for (i, n) in counts.iter().enumerate() {
            let label = KNOWN.get(i).copied().unwrap_or("other");
            self.bgp_sessions
                .get_or_create(&vec![("state".to_string(), label.to_string())])
                .set(*n);
        }
    }
}

/// What the coordinator exports.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    pub intent_to_ack: Histogram,
    pub agent_streams: Gauge,
    pub intent_revision: Gauge,
    pub desired_publishes: Counter,
    pub acks: Counter,
    pub ack_errors: Counter,
    pub api_writes: Counter,
    /// Sync messages sent, by kind, and their encoded size: what a reconnect storm costs.
    pub sync_snapshots: Counter,
    pub sync_resumes: Counter,
    pub sync_deltas: Counter,
    pub sync_bytes: Counter,
    /// 1 while this replica holds the coordinator leadership.
    pub is_leader: Gauge,
    pub leader_elections: Counter,
    /// The server certificate's notAfter (Unix seconds).
    pub cert_expiry: Gauge,
    /// 1 while this replica's etcd watch confirms its index current.
    pub index_current: Gauge,
    /// gRPC TLS handshakes completed in full, and resumed from a session ticket.
    pub tls_full_handshakes: Counter,
    pub tls_resumed_handshakes: Counter,
}

impl CoordinatorMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = CoordinatorMetrics {
            intent_to_ack: latency_histogram(),
            agent_streams: Gauge::default(),
            intent_revision: Gauge::default(),
            desired_publishes: Counter::default(),
            acks: Counter::default(),
            ack_errors: Counter::default(),
            api_writes: Counter::default(),
            sync_snapshots: Counter::default(),
            sync_resumes: Counter::default(),
            sync_deltas: Counter::default(),
            sync_bytes: Counter::default(),
            is_leader: Gauge::default(),
            leader_elections: Counter::default(),
            cert_expiry: Gauge::default(),
            index_current: Gauge::default(),
            tls_full_handshakes: Counter::default(),
            tls_resumed_handshakes: Counter::default(),
        };
        register_build_info(reg, "coordinator");
        reg.register(
            "sf_coordinator_index_current",
            "1 while this replica's etcd watch confirms its index current (etcd reachable), else 0",
            m.index_current.clone(),
        );
        reg.register(
            "sf_tls_cert_expiry_timestamp_seconds",
            CERT_EXPIRY_HELP,
            m.cert_expiry.clone(),
        );
        reg.register(
            "sf_coordinator_is_leader",
            "1 while this replica is the elected leader (runs placement), else 0",
            m.is_leader.clone(),
        );
        reg.register(
            "sf_coordinator_leader_elections",
            "Times this replica won the leader election",
            m.leader_elections.clone(),
        );
        reg.register(
            "sf_coordinator_intent_to_ack_seconds",
            "Time from observing an intent revision to an agent acknowledging it (once per node and revision)",
            m.intent_to_ack.clone(),
        );
        reg.register(
            "sf_coordinator_agent_streams",
            "Open agent Sync streams",
            m.agent_streams.clone(),
        );
        reg.register(
            "sf_coordinator_intent_revision",
            "etcd revision the coordinator's index reflects",
            m.intent_revision.clone(),
        );
        reg.register(
            "sf_coordinator_desired_publishes",
            "Node desired states recompiled to a new digest and published",
            m.desired_publishes.clone(),
        );
        reg.register(
            "sf_coordinator_acks",
            "Acks received from agents",
            m.acks.clone(),
        );
        reg.register(
            "sf_coordinator_ack_errors",
            "Acks that carried agent errors",
            m.ack_errors.clone(),
        );
        reg.register(
            "sf_coordinator_api_writes",
            "Intent writes committed through the APIs",
            m.api_writes.clone(),
        );
        reg.register(
            "sf_coordinator_sync_snapshots",
            "Full snapshots sent to agents",
            m.sync_snapshots.clone(),
        );
        reg.register(
            "sf_coordinator_grpc_tls_full_handshakes",
            "gRPC TLS handshakes completed in full (certificates exchanged and verified)",
            m.tls_full_handshakes.clone(),
        );
        reg.register(
            "sf_coordinator_grpc_tls_resumed_handshakes",
            "gRPC TLS handshakes resumed from a session ticket (no certificate, no signature)",
            m.tls_resumed_handshakes.clone(),
        );
        reg.register(
            "sf_coordinator_sync_resumes",
            "Resumes sent to agents that were already current (nothing resent)",
            m.sync_resumes.clone(),
        );
        reg.register(
            "sf_coordinator_sync_deltas",
            "Deltas sent to agents",
            m.sync_deltas.clone(),
        );
        reg.register(
            "sf_coordinator_sync_sent_bytes",
            "Encoded bytes of all Sync messages sent to agents",
            m.sync_bytes.clone(),
        );
        m
    }
}

/// Whether the process is healthy, for `/healthz`.
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

/// Renders the registry in the OpenMetrics text format.
pub fn render(reg: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, reg).expect("writing to a String cannot fail");
    out
}

/// Runs before each `/metrics` render: brings values read on demand up to date (the agents'
/// rule counters), so what costs a pass over the node is paid per scrape, not on a timer
/// whether anyone scrapes or not (Prometheus' collect-on-scrape). It must bound its own wait.
pub type Refresh =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Binds `addr` and serves `/metrics` and `/healthz` in the background; returns once bound.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    refresh: Option<Refresh>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let reg = registry.clone();
                let refresh = refresh.clone();
                async move {
                    if let Some(r) = refresh {
                        r().await;
                    }
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(&reg),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let ok = health();
                async move {
                    if ok {
                        (StatusCode::OK, "ok\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response()
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(listen = %bound, "serving /metrics and /healthz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names() {
        let mut reg = Registry::default();
        let a = AgentMetrics::register(&mut reg);
        let c = CoordinatorMetrics::register(&mut reg);
        a.intent_to_dataplane.observe(0.012);
        a.applied_revision.set(42);
        c.intent_to_ack.observe(0.020);
        let text = render(&reg);
        assert!(
            text.contains("sf_agent_intent_to_dataplane_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("sf_agent_applied_revision 42"), "{text}");
        assert!(
            text.contains("sf_coordinator_intent_to_ack_seconds_bucket{le=\"0.04\"} 1"),
            "{text}"
        );
        assert!(text.contains("sf_agent_reconciles_total 0"), "{text}");
        a.count_pass(PassTrigger::Wakeup);
        a.count_pass(PassTrigger::Wakeup);
        a.count_pass(PassTrigger::Resync);
        let text = render(&reg);
        assert!(
            text.contains("sf_agent_pass_triggers_total{trigger=\"wakeup\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sf_agent_pass_triggers_total{trigger=\"resync\"} 1"),
            "{text}"
        );
        assert!(!text.contains("sf_rule_"), "no rule, no family: {text}");
        a.rules.set_detail(RuleDetail::PerRule);
        a.rules.replace(vec![RuleSample {
            scope: "vpc3".into(),
            chain: "acl_in_1000001".into(),
            rule: "ingress 10".into(),
            packets: 7,
            bytes: 588,
        }]);
        let text = render(&reg);
        assert!(
            text.contains(
                "sf_rule_packets_total{scope=\"vpc3\",chain=\"acl_in_1000001\",rule=\"ingress 10\"} 7"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE sf_rule_bytes counter"), "{text}");
        assert!(text.contains("rule=\"ingress 10\"} 588"), "{text}");
    }

    fn sample(scope: &str, chain: &str, rule: &str, packets: u64) -> RuleSample {
        RuleSample {
            scope: scope.into(),
            chain: chain.into(),
            rule: rule.into(),
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn rules_are_summed_per_chain_kind_unless_opted_in() {
        let r = RuleCounters::default();
        r.replace(vec![
            sample("node", "in_1000001", "ingress 10", 3),
            sample("node", "in_1000002", "ingress 10", 4),
            sample("node", "eg_1000001", "egress 20", 5),
        ]);
        let by_chain = |v: Vec<RuleSample>| -> Vec<(String, String, u64, u64)> {
            v.into_iter()
                .map(|s| (s.chain, s.rule, s.packets, s.bytes))
                .collect()
        };
        assert_eq!(
            by_chain(r.exported()),
            [
                ("eg".into(), "_all".into(), 5, 500),
                ("in".into(), "_all".into(), 7, 700)
            ]
        );
        r.set_detail("in_1000002".parse().unwrap());
        assert_eq!(
            by_chain(r.exported()),
            [
                ("in_1000002".into(), "ingress 10".into(), 4, 400),
                ("eg".into(), "_all".into(), 5, 500),
                ("in".into(), "_all".into(), 3, 300)
            ]
        );
        r.set_detail("per-rule".parse().unwrap());
        assert_eq!(r.exported().len(), 3);
        assert!("".parse::<RuleDetail>().is_err());
        assert_eq!(chain_kind("acl_in_1000001"), "acl_in");
        assert_eq!(chain_kind("vip-12"), "vip");
        assert_eq!(chain_kind("42"), "42");
    }

    #[test]
    fn ten_thousand_rules_stay_a_handful_of_series() {
        let r = RuleCounters::default();
        let samples = (0..10_000)
            .map(|i| {
                let chain = match i % 3 {
                    0 => format!("in_{}", 1_000_000 + i / 10),
                    1 => format!("eg_{}", 1_000_000 + i / 10),
                    _ => format!("dnat_{}", i / 10),
                };
                sample(
                    &format!("vpc{}", i / 100),
                    &chain,
                    &format!("ingress {i}"),
                    1,
                )
            })
            .collect();
        r.replace(samples);
        let out = r.exported();
        assert_eq!(out.len(), 3, "one series per chain kind");
        assert_eq!(out.iter().map(|s| s.packets).sum::<u64>(), 10_000);
    }

    #[test]
    fn build_info_and_certificate_expiry() {
        let mut reg = Registry::default();
        let c = CoordinatorMetrics::register(&mut reg);
        let mut params = rcgen::CertificateParams::new(vec!["coordinator".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        // 2031-01-02T00:00:00Z
        assert_eq!(cert_not_after(pem.as_bytes()).unwrap(), 1_925_078_400);
        assert!(cert_not_after(b"not a certificate").is_err());
        let dir = std::env::temp_dir().join(format!("sf-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, &pem).unwrap();
        set_cert_expiry(&c.cert_expiry, &path);
        std::fs::remove_dir_all(&dir).unwrap();
        let text = render(&reg);
        assert!(
            text.contains("sf_tls_cert_expiry_timestamp_seconds 1925078400"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "sf_build_info{{component=\"coordinator\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    /// Every `sf_*` series the alert rules and the Grafana dashboard in deploy/monitoring
    /// query is one these families render: a renamed metric fails here, not as an alert
    /// that can never fire.
    #[test]
    fn monitoring_queries_name_existing_series() {
        let mut reg = Registry::default();
        let a = AgentMetrics::register(&mut reg);
        let c = CoordinatorMetrics::register(&mut reg);
        a.intent_to_dataplane.observe(0.1);
        c.intent_to_ack.observe(0.1);
        a.rules
            .replace(vec![sample("node", "in_1", "ingress 10", 1)]);
        let text = render(&reg);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring");
        let mut checked = 0;
        for file in ["alerts.yml", "grafana-dashboard.json"] {
            let body = std::fs::read_to_string(dir.join(file)).unwrap();
            let mut rest = body.as_str();
            while let Some(i) = rest.find("sf_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                let before = body.len() - rest.len() - name.len();
                // Only whole words (not e.g. `xsf_`).
                let prev = body[..before].chars().last();
                if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "{file} queries {name}, which no family renders"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "found only {checked} names");
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let mut reg = Registry::default();
        let a = AgentMetrics::register(&mut reg);
        a.reconciles.inc();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        // The refresh hook runs before each render: what it updates is in that scrape.
        let refreshed = a.reconciles.clone();
        let refresh: Refresh = Arc::new(move || {
            let r = refreshed.clone();
            Box::pin(async move {
                r.inc();
            })
        });
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(reg),
            Arc::new(move || h.load(std::sync::atomic::Ordering::SeqCst)),
            Some(refresh),
        )
        .await
        .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.0 200"), "{m}");
        assert!(m.contains("sf_agent_reconciles_total 2"), "{m}");
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(get("/healthz").await.starts_with("HTTP/1.0 503"));
    }
}
