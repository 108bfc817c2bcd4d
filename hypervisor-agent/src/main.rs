//! `sf-hypervisor-agent`: programs a KVM host's VXLAN/EVPN dataplane from its desired state.
//!
//! Debug aid: `--apply-file FILE` reads a `NodeDesired` JSON, runs one reconcile pass (links,
//! east-west ACL table, FRR unless `--no-frr`), prints the outcome and exits (non-zero on
//! errors). Given more than once, the files are applied one after the other by the same
//! agent, as a daemon would apply successive desired states: the first pass is a full one,
//! the next ones plan only what changed (the link view kept from netlink link messages). It needs no coordinator, etcd or certificates. It changes the network namespace
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
    #[arg(long, required = true)]
    apply_file: Vec<PathBuf>,
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
    let mut dp = Hypervisor::new(a.node, Frr::new(a.frr_dir));
    dp.skip_frr = a.no_frr;
    if a.apply_file.len() > 1 {
        // Later passes follow the link messages, as the daemon does.
        dp.watch_links();
        wait_watching(&dp).await;
    }
    let mut errors = 0;
    for (i, file) in a.apply_file.iter().enumerate() {
        if i > 0 {
            // The messages of the previous pass's changes reach the view.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let desired: NodeDesired = serde_json::from_slice(&std::fs::read(file)?)?;
        errors += apply_once(&mut dp, &desired).await;
    }
    if errors == 0 {
        Ok(())
    } else {
        anyhow::bail!("{errors} errors")
    }
}

/// One pass; prints its outcome and returns its error count.
async fn apply_once(dp: &mut Hypervisor, desired: &NodeDesired) -> usize {
    let ctx = ReconcileContext {
        lease: LeaseState::Held { continuous: true },
        fresh: true,
    };
    let t = std::time::Instant::now();
    let report = dp.reconcile(desired, &ctx).await;
    println!(
        "reconcile: changes={} errors={} elapsed_ms={} elapsed_us={} scope={} networks_planned={} acl_change_ms={}",
        report.changes,
        report.errors.len(),
        t.elapsed().as_millis(),
        t.elapsed().as_micros(),
        if dp.last_pass.full { "full" } else { "delta" },
        dp.last_pass.networks,
        dp.last_acl_change
            .map(|d| d.as_millis().to_string())
            .unwrap_or_else(|| "-".into())
    );
    for e in &report.errors {
        println!("error: {e}");
    }
    report.errors.len()
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
    // The first pass's dump then starts the view: a subscription that began after it would
    // make the view stale again, and cost a second dump and full pass right after.
    wait_watching(&dp).await;
    sf_agent::run(args.agent, "hypervisor", dp).await
}

/// Waits up to 1 s for the link subscription (without it, passes are full ones).
async fn wait_watching(dp: &Hypervisor) {
    for _ in 0..100 {
        if dp.watching() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
