//! Command-line and environment configuration common to every agent.

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// This node's name; must equal the common name of its certificate.
    #[arg(long, env = "SF_NODE")]
    pub node: String,
    /// Coordinator endpoints (https://host:port), comma separated; tried in turn.
    #[arg(long, env = "SF_COORDINATOR", value_delimiter = ',')]
    pub coordinator: Vec<String>,
    /// etcd (for the lease and status keys under `nodes/<node>/`, the only keys a node's etcd
    /// user may write).
    #[command(flatten)]
    pub etcd: sf_store::etcd::EtcdArgs,
    /// This node's client certificate and key (PEM), issued by the fabric CA.
    #[arg(long, env = "SF_TLS_CERT")]
    pub tls_cert: PathBuf,
    #[arg(long, env = "SF_TLS_KEY")]
    pub tls_key: PathBuf,
    /// CA that signed the coordinator's certificate.
    #[arg(long, env = "SF_TLS_CA")]
    pub tls_ca: PathBuf,
    /// Name the coordinator's certificate must carry.
    #[arg(long, env = "SF_TLS_SERVER_NAME", default_value = "coordinator")]
    pub tls_server_name: String,
    /// Local state: the desired-state cache and the lease id.
    #[arg(long, env = "SF_STATE_DIR", default_value = "/var/lib/stackfabric")]
    pub state_dir: PathBuf,
    /// Lease TTL in seconds; the heartbeat is renewed every TTL/3.
    #[arg(long, env = "SF_LEASE_TTL", default_value_t = 6)]
    pub lease_ttl: i64,
    /// Seconds of silence on the Sync connection after which the agent sends an HTTP/2 ping
    /// (a coordinator that does not answer within 5 s more is left for the next one). Every
    /// ping costs both ends a TLS record, a write and a wake-up; at 5 s a coordinator with
    /// 5,000 agents answered 1,000 pings a second. 15 s still notices a hung coordinator
    /// within 20 s; a crashed one closes its connections and is noticed at once.
    #[arg(long, env = "SF_SYNC_KEEPALIVE_SECS", default_value_t = 15)]
    pub sync_keepalive_secs: u64,
    /// Longest delay, in seconds, of a status report that only moves the applied revision,
    /// digest or counters (the coordinators have those from the Sync stream's acks); each agent
    /// adds its own jitter of up to as much again. See `lease::status_flush`.
    #[arg(long, env = "SF_STATUS_FLUSH_SECS", default_value_t = 10)]
    pub status_flush_secs: u64,
    /// Seconds between level-triggered resyncs even without changes.
    #[arg(long, env = "SF_RESYNC_SECS", default_value_t = 30)]
    pub resync_secs: u64,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9101).
    #[arg(long, env = "SF_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Which kernel rule counters get a series of their own in /metrics: `aggregate` (each
    /// chain kind summed: a handful of series however many rules), `per-rule`, or a comma
    /// separated list of chains (e.g. `in_1000001`) whose rules are exported one by one.
    #[arg(long, env = "SF_RULE_METRICS", default_value = "aggregate")]
    pub rule_metrics: sf_metrics::RuleDetail,
    /// FRR vty socket directory whose underlay BGP sessions the agent reports in its status
    /// (read every 5 s, off the reconcile loop). Reads the same SF_FRR_DIR as the agents'
    /// `--frr-dir`; unset, no session is reported.
    #[arg(long, env = "SF_FRR_DIR")]
    pub bgp_status_frr_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "SF_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Debug: connect, print the first message of the Sync stream as JSON, exit.
    #[arg(long)]
    pub once: bool,
}
