//! `sf-coordinator`: loads intent from etcd, serves FabricApi and AgentSync over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sf_coordinator::{api::Api, fabric::Fabric, identity::Tokens, sync::Sync};
use sf_proto::v1::{agent_sync_server::AgentSyncServer, fabric_api_server::FabricApiServer};
use sf_store::intent::IntentStore;
use tonic::transport::Server;

#[derive(Parser, Debug)]
#[command(version, about = "StackFabric coordinator")]
struct Args {
    /// gRPC listen address (FabricApi and AgentSync, TLS).
    #[arg(long, env = "SF_LISTEN", default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    #[command(flatten)]
    etcd: sf_store::etcd::EtcdArgs,
    /// This replica's name in the leader election, unique per replica (default: the host
    /// name).
    #[arg(long, env = "SF_COORDINATOR_NAME")]
    name: Option<String>,
    /// TTL of the leader lease in seconds: how long a crashed leader holds the leadership.
    #[arg(long, env = "SF_LEADER_LEASE_SECS", default_value_t = 5)]
    leader_lease_secs: i64,
    /// Server certificate (PEM).
    #[arg(long, env = "SF_TLS_CERT")]
    tls_cert: PathBuf,
    #[arg(long, env = "SF_TLS_KEY")]
    tls_key: PathBuf,
    /// CA that signs agents' client certificates (PEM).
    #[arg(long, env = "SF_TLS_CA")]
    tls_ca: PathBuf,
    /// Secret (at least 32 bytes) the TLS session tickets' keys are derived from, shared by
    /// the replicas: agents resume their sessions after a restart or on another replica
    /// without a full handshake. Keep it as secret as the CA's key. Without it the tickets
    /// last as long as the process.
    #[arg(long, env = "SF_TLS_TICKET_KEY_FILE")]
    tls_ticket_key_file: Option<PathBuf>,
    /// File of accepted API bearer tokens, one per line.
    #[arg(long, env = "SF_API_TOKEN_FILE")]
    api_token_file: PathBuf,
    #[command(flatten)]
    rest: sf_coordinator::rest::RestArgs,
    #[command(flatten)]
    console: sf_coordinator::console::ConsoleArgs,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9100).
    #[arg(long, env = "SF_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "SF_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Send every connecting agent a full snapshot even when its applied digest is current
    /// (benchmarks compare this with resume).
    #[arg(long, env = "SF_ALWAYS_SNAPSHOT")]
    always_snapshot: bool,
    /// Seconds of silence on a connection after which the coordinator sends an HTTP/2 ping
    /// (no answer within 5 s more ends the connection and its agent's stream, so the agent's
    /// reconnection is no longer refused as a second stream). Agents ping at 15 s by default
    /// (`--sync-keepalive-secs`); a connection that read anything, such as the agent's ping,
    /// does not ping back, so each idle connection costs one ping per the shorter interval.
    #[arg(long, env = "SF_AGENT_KEEPALIVE_SECS", default_value_t = 15)]
    agent_keepalive_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `sf-coordinator hash-password`: argon2 hash of a password read from stdin, for
    // --rest-users-file lines `user:<hash>`.
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        return sf_coordinator::rest::auth::hash_password_cli();
    }
    let args = Args::parse();
    init_logging(&args.log_format);
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = sf_coordinator::grpc_tls::server_config(
        &args.tls_cert,
        &args.tls_key,
        &args.tls_ca,
        args.tls_ticket_key_file.as_deref(),
    )
    .context("gRPC TLS configuration")?;
    let tokens = Tokens::parse(&String::from_utf8_lossy(&read(&args.api_token_file)?))
        .with_context(|| args.api_token_file.display().to_string())?;
    anyhow::ensure!(
        !tokens.is_empty(),
        "{} holds no token",
        args.api_token_file.display()
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) =
        sf_coordinator::grpc_health::reflection().context("gRPC reflection")?;

    let kv = args
        .etcd
        .connect()
        .await
        .with_context(|| format!("connecting to etcd at {:?}", args.etcd.endpoints))?;
    let fabric = Fabric::new(IntentStore::new(Arc::new(kv), args.etcd.keys()));
    sf_metrics::set_cert_expiry(&fabric.metrics.cert_expiry, &args.tls_cert);
    tokio::spawn(sf_coordinator::grpc_health::follow_currency(
        health,
        fabric.current(),
    ));
    tokio::spawn(sf_coordinator::grpc_health::gauge_currency(
        fabric.metrics.index_current.clone(),
        fabric.current(),
    ));
    tokio::spawn(fabric.clone().run());
    tokio::spawn(fabric.clone().run_placement());
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "coordinator".into())
    });
    let resign = Arc::new(tokio::sync::Notify::new());
    let election = tokio::spawn(sf_coordinator::election::run(
        fabric.clone(),
        name,
        args.leader_lease_secs,
        resign.clone(),
    ));
    sf_coordinator::rest::spawn(&args.rest, fabric.clone()).await?;
    sf_coordinator::console::spawn(
        &args.console,
        fabric.clone(),
        tokens.clone(),
        args.rest.rest_users_file.as_deref(),
        (&args.tls_cert, &args.tls_key),
    )
    .await?;
    if let Some(addr) = args.metrics_listen {
        let f = fabric.clone();
        sf_metrics::serve(
            addr,
            fabric.registry.clone(),
            // Healthy while the index is loaded and its etcd watch confirms it current.
            Arc::new(move || f.is_current()),
            None,
        )
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    }

    tracing::info!(listen = %args.listen, "serving FabricApi and AgentSync");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = stop.clone();
    let incoming = sf_coordinator::listen::grpc_listener(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    let incoming = sf_coordinator::grpc_tls::incoming(incoming, tls, fabric.metrics.clone());
    let server = Server::builder()
        // Ends a vanished agent's stream within ~20 s, so its reconnection (refused while
        // the old stream looks live: one stream per node) is not held up for long. At 5 s,
        // 5,000 idle agents cost 1,000 pings a second (docs/PERFORMANCE.md, issue 22).
        .http2_keepalive_interval(Some(Duration::from_secs(args.agent_keepalive_secs.max(1))))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        // The API's handlers authorize by method (a reader token reads only).
        .layer(tower::util::MapRequestLayer::new(
            sf_coordinator::identity::tag_method::<tonic::body::Body>,
        ))
        .layer(tower::util::MapResponseLayer::new(
            sf_coordinator::identity::undecodable_is_invalid_argument::<tonic::body::Body>,
        ))
        .add_service(FabricApiServer::new(Api {
            fabric: fabric.clone(),
            tokens,
        }))
        .add_service(AgentSyncServer::new(Sync::new(
            fabric,
            args.always_snapshot,
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_signal().await;
            // Hand the leadership over first: a follower takes it within half a second.
            resign.notify_one();
            stopping.notify_one();
        });
    // Agent streams never end by themselves: after SIGTERM, in-flight API calls get a short
    // grace period, then the process exits and agents reconnect elsewhere (or to us, restarted).
    tokio::select! {
        served = server => served.context("gRPC server")?,
        _ = async {
            stop.notified().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => tracing::info!("grace period over; closing the remaining agent streams"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), election).await;
    tracing::info!("shut down");
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files (the gateway's fence.log) get text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
