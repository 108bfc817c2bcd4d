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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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

/// The latest per-rule counters an agent read from the kernel, exported on each scrape as
/// `sf_rule_packets_total` and `sf_rule_bytes_total{scope, chain, rule}`. They are the
/// kernel's own counters (they restart at 0 when a rule is replaced, which Prometheus'
/// `rate()` treats as a counter reset).
#[derive(Debug, Clone, Default)]
pub struct RuleCounters(Arc<std::sync::Mutex<Vec<RuleSample>>>);

impl RuleCounters {
    pub fn replace(&self, samples: Vec<RuleSample>) {
        *self.0.lock().unwrap() = samples;
    }

    pub fn snapshot(&self) -> Vec<RuleSample> {
        self.0.lock().unwrap().clone()
    }
}

impl prometheus_client::collector::Collector for RuleCounters {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let samples = self.0.lock().unwrap().clone();
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

/// What every agent exports.
#[derive(Clone)]
pub struct AgentMetrics {
    pub intent_to_dataplane: Histogram,
    pub applied_revision: Gauge,
    pub desired_objects: Gauge,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub lease_up: Gauge,
    pub coordinator_connected: Gauge,
    pub snapshots: Counter,
    pub deltas: Counter,
    /// Per-rule packet and byte counters read from the kernel (nftables `counter`s).
    pub rules: RuleCounters,
}

impl AgentMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = AgentMetrics {
            intent_to_dataplane: latency_histogram(),
            applied_revision: Gauge::default(),
            desired_objects: Gauge::default(),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            lease_up: Gauge::default(),
            coordinator_connected: Gauge::default(),
            snapshots: Counter::default(),
            deltas: Counter::default(),
            rules: RuleCounters::default(),
        };
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
        m
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
        };
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

/// Binds `addr` and serves `/metrics` and `/healthz` in the background; returns once bound.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let reg = registry.clone();
                async move {
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
        assert!(!text.contains("sf_rule_"), "no rule, no family: {text}");
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

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let mut reg = Registry::default();
        let a = AgentMetrics::register(&mut reg);
        a.reconciles.inc();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(reg),
            Arc::new(move || h.load(std::sync::atomic::Ordering::SeqCst)),
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
        assert!(m.contains("sf_agent_reconciles_total 1"), "{m}");
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(get("/healthz").await.starts_with("HTTP/1.0 503"));
    }
}
