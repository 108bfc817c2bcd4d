//! The fence: a small process the gateway agent leaves running beside itself, which stands
//! the node down when the agent is dead or hung.
//!
//! The failover controller runs inside the agent: without it nobody on this node follows the
//! fabric or the intent, while the kernel and FRR keep forwarding and announcing its active
//! VPC routers. The fence watches two things only: whether the agent process is alive, and
//! the agent's liveness mark (`alive` in its state dir: a `CLOCK_BOOTTIME` reading the agent
//! writes every [`MARK_INTERVAL`]; monotonic, so a wall-clock step cannot fool it). When the
//! agent is dead, or its mark is older than the grace (2/3 of the lease TTL, so a supervisor
//! restart keeps everything in place), the fence makes every router passive from what it
//! observes in the kernel ([`failover::stand_down_changes`]: host routes withdrawn, segment
//! links down; namespaces kept warm). The standbys see the anchors leave the fabric and take
//! over. A dead agent's fence then exits; a hung agent's fence keeps watching (if the agent
//! resumes, its controller sees the standby serving and stays passive).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::failover;

const PID_FILE: &str = "fence.pid";
const MARK_FILE: &str = "alive";
/// How often the agent writes its liveness mark.
pub const MARK_INTERVAL: Duration = Duration::from_millis(500);

/// `CLOCK_BOOTTIME` now: monotonic across processes of one boot, counting suspend.
fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Writes the agent's liveness mark forever (a task of the agent process: a SIGSTOP or a
/// wedged runtime stops it with the rest).
pub async fn keep_alive_mark(state_dir: PathBuf) {
    let file = state_dir.join(MARK_FILE);
    loop {
        let now = boottime().as_millis().to_string();
        if let Err(e) = tokio::fs::write(&file, now).await {
            tracing::warn!(file = %file.display(), error = %e, "cannot write the liveness mark");
        }
        tokio::time::sleep(MARK_INTERVAL).await;
    }
}

/// Age of the agent's liveness mark; None when there is none (never written).
fn mark_age(state_dir: &Path) -> Option<Duration> {
    let ms: u64 = std::fs::read_to_string(state_dir.join(MARK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(boottime().saturating_sub(Duration::from_millis(ms)))
}

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

/// The fence's whole life: watch; stand down when the agent is dead or hung; exit once a
/// dead agent's node stood down.
pub async fn run(a: FenceArgs) -> anyhow::Result<()> {
    ignore_stop_signals();
    let grace = Duration::from_secs(a.lease_ttl.max(1)) * 2 / 3;
    let mut dead_since: Option<std::time::Instant> = None;
    let mut stood_down = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive = alive(a.agent_pid, "sf-gateway-agent");
        let dead_for = match (alive, dead_since) {
            (true, _) => {
                dead_since = None;
                Duration::ZERO
            }
            (false, None) => {
                dead_since = Some(std::time::Instant::now());
                Duration::ZERO
            }
            (false, Some(t)) => t.elapsed(),
        };
        let hung = alive && mark_age(&a.state_dir).is_some_and(|age| age >= grace);
        if !(hung || dead_for >= grace) {
            stood_down = false;
            continue;
        }
        if !stood_down {
            let why = if hung {
                "hung (no liveness mark)"
            } else {
                "dead"
            };
            tracing::error!(
                agent_pid = a.agent_pid,
                "FENCE: agent {why} for {grace:?}: standing down"
            );
            match stand_down().await {
                Ok(n) => tracing::error!(changes = n, "FENCE: stood down"),
                Err(e) => {
                    tracing::error!(error = %e, "FENCE: stand-down failed; retrying");
                    continue;
                }
            }
            stood_down = true;
        }
        if !alive {
            let _ = std::fs::remove_file(a.state_dir.join(PID_FILE));
            return Ok(());
        }
    }
}

/// Makes every VPC router of the node passive, from what the kernel shows.
async fn stand_down() -> anyhow::Result<usize> {
    // Sockets of its own: the fence runs beside the agent's loop, and only rarely.
    let kernel = crate::kernel::Kernel::default();
    let host = crate::device::observe_host(&kernel).await?;
    let changes = failover::stand_down_changes(&host);
    if !changes.is_empty() {
        let applied = crate::flip::apply(&kernel.host()?, &changes).await;
        if !applied.failed.is_empty() {
            tracing::warn!(failed = ?applied.failed, "some stand-down changes failed");
        }
    }
    Ok(changes.len())
}
