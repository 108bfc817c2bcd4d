//! `sf-gateway-agent`: serves VPC routers (SoftGate) on a gateway node from its desired state.
//!
//! Debug aid: `--apply-file FILE` reads a `NodeDesired` JSON, runs one reconcile as if the
//! lease were held and the state fresh (or as `--lease unknown|lost`, `--stale` say), prints
//! the outcome and exits (non-zero on errors). With `--hold SECONDS` it keeps running that
//! long after the first pass: health checks run, and a pass follows every health flip
//! (the dataplane's wakeup) and every 10 s; each pass prints its outcome and, when it
//! changed, `lb-status: <JSON>` and `dc-status: <JSON>` (what the agent would report). It
//! needs no coordinator, etcd or certificates. It changes the network namespace it runs in:
//! run it only inside the gateway's namespace (`nsenter --net=/run/netns/GW ...`).
//!
//! Namespaces: VPC namespaces are created with `ip netns add`, whose bind mount under
//! /run/netns must be visible to everyone. Start the agent in the host mount namespace (a
//! systemd unit, or in the lab `nsenter --net=/run/netns/NS`), not with `ip netns exec`,
//! which gives it a private mount namespace where those mounts would stay invisible and die
//! with the agent.

use std::path::PathBuf;

use clap::Parser;
use sf_agent::{Dataplane, LeaseState, ReconcileContext};
use sf_core::desired::NodeDesired;
use sf_gateway_agent::dataplane::Gateway;
use sf_linux::frr::Frr;

#[derive(Parser, Debug)]
#[command(version, about = "StackFabric gateway (SoftGate) agent")]
struct Args {
    #[command(flatten)]
    agent: sf_agent::AgentArgs,
    #[command(flatten)]
    local: LocalArgs,
    /// Debug: apply the NodeDesired JSON in FILE once (lease held, fresh) and exit. Needs
    /// only --node and the options below.
    #[arg(long, value_name = "FILE")]
    apply_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct LocalArgs {
    /// FRR vty socket directory of this host's FRR instance.
    #[arg(long, env = "SF_FRR_DIR", default_value = "/var/run/frr")]
    frr_dir: PathBuf,
    /// Prefix of the VPC router namespaces (`<prefix><id>`); namespaces with this prefix
    /// belong to the agent and are removed when not desired.
    #[arg(long, env = "SF_NETNS_PREFIX", default_value = "sfvpc-")]
    netns_prefix: String,
}

/// The `--apply-file` debug path: no coordinator, so none of the connection options.
#[derive(Parser, Debug)]
#[command(about = "StackFabric gateway agent, one reconcile from a file (debug)")]
struct ApplyArgs {
    #[arg(long, env = "SF_NODE")]
    node: String,
    #[arg(long)]
    apply_file: PathBuf,
    #[command(flatten)]
    local: LocalArgs,
    #[arg(long, env = "SF_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Local state: per-VPC FRR instances (Direct Connect) live in DIR/vpc-frr/<netns>.
    #[arg(long, env = "SF_STATE_DIR", default_value = "/var/lib/stackfabric")]
    state_dir: PathBuf,
    /// Lease state to pretend: held, unknown or lost (tests the exclusivity rules).
    #[arg(long, default_value = "held")]
    lease: String,
    /// Pretend the desired state is not fresh (cached / from before a lease re-grant).
    #[arg(long)]
    stale: bool,
    /// Keep running for this many seconds after the first pass (health checks, a pass on
    /// every health flip and every 10 s); SIGTERM/SIGINT end it early.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    hold: u64,
}

/// VPC namespaces made by `ip netns add` from a mount namespace whose /run/netns does not
/// propagate back (as `ip netns exec` gives: the mount becomes a slave) are invisible to
/// everyone else and vanish when the agent exits: say so loudly.
fn check_mount_namespace() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    if let Some(line) = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/run/netns"))
    {
        let optional: Vec<&str> = line
            .split(" - ")
            .next()
            .unwrap_or("")
            .split(' ')
            .skip(6)
            .collect();
        if !optional.iter().any(|f| f.starts_with("shared:")) {
            tracing::warn!(
                "/run/netns is not a shared mount here (started with `ip netns exec`?): VPC \
                 namespaces this agent creates are visible only to it and die with it; start \
                 it with `nsenter --net=/run/netns/NS` (or as a host service) instead"
            );
        }
    }
}

async fn apply_file(a: ApplyArgs) -> anyhow::Result<()> {
    sf_agent::runtime::init_logging(&a.log_format);
    check_mount_namespace();
    let desired: NodeDesired = serde_json::from_slice(&std::fs::read(&a.apply_file)?)?;
    let mut dp = Gateway::new(
        a.node,
        Frr::new(a.local.frr_dir),
        a.local.netns_prefix,
        a.state_dir,
    );
    // No fabric to ask here: every router this file places forwards.
    dp.failover.force_active();
    let lease = match a.lease.as_str() {
        "held" => LeaseState::Held { continuous: true },
        "unknown" => LeaseState::Unknown,
        "lost" => LeaseState::Lost,
        other => anyhow::bail!("--lease {other}: expected held, unknown or lost"),
    };
    let ctx = ReconcileContext {
        lease,
        fresh: !a.stale,
    };
    let hold = std::time::Duration::from_secs(a.hold);
    let deadline = tokio::time::Instant::now() + hold;
    let wake = dp.wakeup().expect("the gateway has a wakeup");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_status = None;
    let mut last_dc = None;
    loop {
        let t = std::time::Instant::now();
        let report = dp.reconcile(&desired, &ctx).await;
        println!(
            "reconcile: changes={} errors={} elapsed_ms={}",
            report.changes,
            report.errors.len(),
            t.elapsed().as_millis()
        );
        for e in &report.errors {
            println!("error: {e}");
        }
        let status = dp.lb_status().await;
        if a.hold > 0 && last_status.as_ref() != Some(&status) {
            println!("lb-status: {}", serde_json::to_string(&status)?);
            last_status = Some(status);
        }
        let dcs = dp.dc_status().await;
        if a.hold > 0 && !dcs.is_empty() && last_dc.as_ref() != Some(&dcs) {
            println!("dc-status: {}", serde_json::to_string(&dcs)?);
            last_dc = Some(dcs);
        }
        if a.hold == 0 || tokio::time::Instant::now() >= deadline {
            if report.errors.is_empty() {
                return Ok(());
            }
            anyhow::bail!("{} errors", report.errors.len())
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--apply-file" || a.starts_with("--apply-file=")) {
        return apply_file(ApplyArgs::parse()).await;
    }
    if std::env::args().any(|a| a == "--fence") {
        let a = <sf_gateway_agent::fence::FenceArgs as clap::Parser>::parse();
        sf_agent::runtime::init_logging("text");
        return sf_gateway_agent::fence::run(a).await;
    }
    let args = Args::parse();
    sf_agent::runtime::init_logging(&args.agent.log_format);
    check_mount_namespace();
    std::fs::create_dir_all(&args.agent.state_dir)?;
    match sf_gateway_agent::fence::spawn(
        &args.agent.state_dir,
        &args.agent.node,
        &args.local.frr_dir,
        &args.local.netns_prefix,
        args.agent.lease_ttl,
    ) {
        Ok(pid) => tracing::info!(pid, "fence started"),
        Err(e) => tracing::warn!(error = %e, "cannot start the fence"),
    }
    tokio::spawn(sf_gateway_agent::fence::keep_alive_mark(
        args.agent.state_dir.clone(),
    ));
    let dp = Gateway::new(
        args.agent.node.clone(),
        Frr::new(args.local.frr_dir),
        args.local.netns_prefix,
        args.agent.state_dir.clone(),
    );
    sf_agent::run(args.agent, "gateway", dp).await
}
