//! `sf-hypervisor-agent`: programs a KVM host's VXLAN/EVPN dataplane from its desired state.
//!
//! Debug aid: `--apply-file FILE` reads a `NodeDesired` JSON, runs one reconcile pass (links,
//! east-west ACL table, FRR unless `--no-frr`), prints the outcome and exits (non-zero on
//! errors). It needs no coordinator, etcd or certificates. It changes the network namespace
//! it runs in: run it only inside the hypervisor's namespace (`nsenter --net=/run/netns/HV`).

use std::path::PathBuf;

use clap::Parser;
use sf_agent::{Dataplane, LeaseState, ReconcileContext};
use sf_core::desired::NodeDesired;
use sf_hypervisor_agent::dataplane::Hypervisor;
use sf_linux::frr::Frr;

#[derive(Parser, Debug)]
#[command(version, about = "StackFabric hypervisor agent")]
struct Args {
    #[command(flatten)]
    agent: sf_agent::AgentArgs,
    /// FRR vty socket directory of this host's FRR instance.
    #[arg(long, env = "SF_FRR_DIR", default_value = "/var/run/frr")]
    frr_dir: PathBuf,
    /// Debug: apply the NodeDesired JSON in FILE once and exit (see --help of that mode:
    /// needs only --node, --frr-dir and optionally --no-frr).
    #[arg(long, value_name = "FILE")]
    apply_file: Option<PathBuf>,
}

/// The `--apply-file` debug path: no coordinator, so none of the connection options.
#[derive(Parser, Debug)]
#[command(about = "StackFabric hypervisor agent, one reconcile from a file (debug)")]
struct ApplyArgs {
    #[arg(long, env = "SF_NODE")]
    node: String,
    #[arg(long)]
    apply_file: PathBuf,
    #[arg(long, env = "SF_FRR_DIR", default_value = "/var/run/frr")]
    frr_dir: PathBuf,
    /// Links and ACLs only; leave FRR alone.
    #[arg(long)]
    no_frr: bool,
    #[arg(long, env = "SF_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn apply_file(a: ApplyArgs) -> anyhow::Result<()> {
    sf_agent::runtime::init_logging(&a.log_format);
    let desired: NodeDesired = serde_json::from_slice(&std::fs::read(&a.apply_file)?)?;
    let mut dp = Hypervisor::new(a.node, Frr::new(a.frr_dir));
    dp.skip_frr = a.no_frr;
    let ctx = ReconcileContext {
        lease: LeaseState::Held { continuous: true },
        fresh: true,
    };
    let t = std::time::Instant::now();
    let report = dp.reconcile(&desired, &ctx).await;
    println!(
        "reconcile: changes={} errors={} elapsed_ms={} acl_change_ms={}",
        report.changes,
        report.errors.len(),
        t.elapsed().as_millis(),
        dp.last_acl_change
            .map(|d| d.as_millis().to_string())
            .unwrap_or_else(|| "-".into())
    );
    for e in &report.errors {
        println!("error: {e}");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} errors", report.errors.len())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--apply-file" || a.starts_with("--apply-file=")) {
        return apply_file(ApplyArgs::parse()).await;
    }
    let args = Args::parse();
    sf_agent::runtime::init_logging(&args.agent.log_format);
    let dp = Hypervisor::new(args.agent.node.clone(), Frr::new(args.frr_dir));
    dp.watch_links();
    sf_agent::run(args.agent, "hypervisor", dp).await
}
