//! The fence: a small process the gateway agent leaves running beside itself, which stands
//! the node down if the agent dies and stays dead past its lease.
//!
//! Without it, a killed agent leaves its VPC routers and FRR announcements in place while the
//! coordinator, once the lease expires, moves the VPCs to their standby: two nodes would
//! announce the same public addresses. The fence watches two things only: whether the agent
//! process is alive, and the on-disk mark of the last lease renewal
//! (`sf_agent::lease::lease_ok_age`). When the agent is gone *and* two renewals were missed
//! (2/3 of the TTL, the same rule the agent applies to itself, i.e. before the lease can
//! expire at etcd), it runs the gateway dataplane once with `LeaseState::Lost` over the last
//! desired state on disk — exactly the agent's own stand-down (VPC routers and their /32
//! announcements removed, their per-VPC FRRs stopped) — and exits. A supervisor restart within the TTL finds the lease
//! still held, so nothing is withdrawn; the new agent replaces the fence on start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sf_agent::{Dataplane, LeaseState, ReconcileContext};
use sf_linux::frr::Frr;

use crate::dataplane::Gateway;

const PID_FILE: &str = "fence.pid";

/// Whether `pid` is alive and is a StackFabric gateway process (not a recycled pid).
fn alive(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(marker))
        .unwrap_or(false)
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(true)
}

/// Starts a fence for this agent, replacing one left by an earlier run.
pub fn spawn(
    state_dir: &Path,
    node: &str,
    frr_dir: &Path,
    netns_prefix: &str,
    lease_ttl: i64,
) -> std::io::Result<u32> {
    let pid_file = state_dir.join(PID_FILE);
    if let Ok(old) = std::fs::read_to_string(&pid_file) {
        if let Ok(old) = old.trim().parse::<u32>() {
            if alive(old, "--fence") {
                // SIGKILL: the fence ignores the polite signals (see `ignore_stop_signals`).
                // SAFETY: plain kill(2) of a pid we verified is our own fence.
                unsafe { libc::kill(old as i32, libc::SIGKILL) };
            }
        }
    }
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(state_dir.join("fence.log"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--fence")
        .arg("--node")
        .arg(node)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--frr-dir")
        .arg(frr_dir)
        .arg("--netns-prefix")
        .arg(netns_prefix)
        .arg("--lease-ttl")
        .arg(lease_ttl.to_string())
        .arg("--agent-pid")
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: it must outlive the agent (that is its whole point).
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and the only call made between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    std::fs::write(&pid_file, child.id().to_string())?;
    Ok(child.id())
}

/// Arguments of the fence process.
#[derive(clap::Parser, Debug)]
pub struct FenceArgs {
    #[arg(long)]
    pub fence: bool,
    #[arg(long)]
    pub node: String,
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub frr_dir: PathBuf,
    #[arg(long)]
    pub netns_prefix: String,
    #[arg(long)]
    pub lease_ttl: u64,
    #[arg(long)]
    pub agent_pid: u32,
}

/// `systemctl kill` signals every process of the unit (`--kill-whom=all` is its default), and
/// a stopped agent exits cleanly, so systemd does not restart it: a fence that died with the
/// same SIGTERM would leave a dead node announcing its VPCs once the lease expires and they
/// move. The fence therefore ignores SIGTERM, SIGINT and SIGHUP; only the next agent
/// (SIGKILL, after checking the pid is a fence) or its own stand-down ends it.
fn ignore_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: setting a signal's disposition to SIG_IGN has no handler to race with.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// The fence's whole life: wait, and stand down at most once.
pub async fn run(a: FenceArgs) -> anyhow::Result<()> {
    ignore_stop_signals();
    let limit = Duration::from_secs(a.lease_ttl.max(1)) * 2 / 3;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if alive(a.agent_pid, "sf-gateway-agent") {
            continue; // the agent is responsible for itself
        }
        let stale = sf_agent::lease::lease_ok_age(&a.state_dir).is_none_or(|age| age >= limit);
        if !stale {
            continue; // a restart within the TTL keeps everything in place
        }
        let Some(cached) = sf_agent::cache::Cache::new(&a.state_dir).load() else {
            tracing::warn!(
                "agent gone and lease stale, but no cached desired state: nothing to withdraw"
            );
            return Ok(());
        };
        tracing::error!(
            agent_pid = a.agent_pid,
            "FENCE: agent dead and lease not renewed for {limit:?}: standing down"
        );
        // Same state dir as the agent: the stand-down also stops the per-VPC FRRs (Direct
        // Connect) before deleting their namespaces.
        let mut dp = Gateway::new(
            a.node,
            Frr::new(a.frr_dir),
            a.netns_prefix,
            a.state_dir.clone(),
        );
        let ctx = ReconcileContext {
            lease: LeaseState::Lost,
            fresh: false,
        };
        let report = dp.reconcile(&cached.desired, &ctx).await;
        tracing::error!(changes = report.changes, errors = ?report.errors, "FENCE: stood down");
        let _ = std::fs::remove_file(a.state_dir.join(PID_FILE));
        return Ok(());
    }
}
