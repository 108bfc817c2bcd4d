//! Simulated agents: the real agent runtime (`sf_agent::run`: mTLS Sync client, etcd lease and
//! status, on-disk cache, reconcile loop) with an in-memory dataplane that records, per agent,
//! when each revision was applied. Thousands run in this one process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sf_agent::{AgentArgs, Dataplane, ReconcileContext, ReconcileReport};
use sf_core::desired::{DesiredObject, NodeDesired};

use crate::pki::Pki;

/// Per agent: the last revision applied and when it was first applied.
#[derive(Default)]
pub struct Board {
    slots: Vec<Mutex<(u64, Option<Instant>)>>,
}

impl Board {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Board {
            slots: (0..n).map(|_| Mutex::new((0, None))).collect(),
        })
    }

    fn applied(&self, idx: usize, revision: u64) {
        let mut s = self.slots[idx].lock().unwrap();
        if revision > s.0 {
            *s = (revision, Some(Instant::now()));
        }
    }

    /// Waits until every agent in `which` applied `revision` or later; returns each one's
    /// latency from `since`, or None on timeout.
    pub async fn wait_all(
        &self,
        which: &[usize],
        revision: u64,
        since: Instant,
        timeout: Duration,
    ) -> Option<Vec<Duration>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut out = Vec::with_capacity(which.len());
            for &i in which {
                let s = *self.slots[i].lock().unwrap();
                match s {
                    (r, Some(t)) if r >= revision => out.push(t.saturating_duration_since(since)),
                    _ => break,
                }
            }
            if out.len() == which.len() {
                return Some(out);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// An in-memory device: keeps the objects it was told to program, diffing like a real
/// dataplane would (so the work grows with what changed, not with nothing).
pub struct MemDataplane {
    idx: usize,
    board: Arc<Board>,
    programmed: BTreeMap<String, DesiredObject>,
}

#[async_trait::async_trait]
impl Dataplane for MemDataplane {
    async fn reconcile(&mut self, desired: &NodeDesired, _: &ReconcileContext) -> ReconcileReport {
        let mut changes = 0;
        self.programmed.retain(|k, _| {
            let keep = desired.objects.contains_key(k);
            changes += usize::from(!keep);
            keep
        });
        for (k, v) in &desired.objects {
            if self.programmed.get(k) != Some(v) {
                self.programmed.insert(k.clone(), v.clone());
                changes += 1;
            }
        }
        self.board.applied(self.idx, desired.revision);
        ReconcileReport {
            changes,
            errors: vec![],
        }
    }
}

pub struct FleetConfig<'a> {
    pub coordinator: String,
    pub etcd: String,
    pub pki: &'a Pki,
    pub state_root: &'a Path,
    /// Longer than production's 6 s so thousands of keep-alives from one 2-core box do not
    /// dominate what is measured (each agent still holds and renews its own lease).
    pub lease_ttl: i64,
    pub liveness: Liveness,
}

/// How often agents and the coordinator ping idle Sync connections and how long agents defer
/// revision-only status reports: this build's defaults, or the values before issue 22's
/// profiling (`--legacy-liveness`, the same-run baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub agent_keepalive_secs: u64,
    pub coordinator_keepalive_secs: u64,
    pub status_flush_secs: u64,
}

impl Liveness {
    pub const DEFAULT: Liveness = Liveness {
        agent_keepalive_secs: 15,
        coordinator_keepalive_secs: 15,
        status_flush_secs: 10,
    };
    /// Pings every 5 s from both ends; status flushed after 3 s (then 3–4 s jittered; the
    /// flush now jitters by up to its own length, so this gives 3–6 s: if anything it spreads
    /// the baseline's status writes more than the old code did).
    pub const LEGACY: Liveness = Liveness {
        agent_keepalive_secs: 5,
        coordinator_keepalive_secs: 5,
        status_flush_secs: 3,
    };
}

/// Where the simulated agents keep their state directories (desired-state cache, lease id,
/// lease mark). By default a fresh directory on tmpfs (`/dev/shm`): each real agent writes
/// its cache to its own host's disk, but thousands of simulated ones writing theirs to the
/// one ext4 file system of this machine spent 38 % of the simulating process's CPU on inode
/// allocation and rename writeback (`perf`, 1,000 agents), time the measured changes then
/// waited for on the runtime's two threads. `on_disk` keeps them under `dir` as before.
/// The directory is removed with the run's (see [`crate::procs::LEFT_TO_REMOVE`]).
pub fn agent_state_root(dir: &Path, on_disk: bool) -> anyhow::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    if on_disk || !shm.is_dir() {
        return Ok(dir.join("agents"));
    }
    let root = tempfile::Builder::new()
        .prefix("sf-bench-agents")
        .tempdir_in(shm)?
        .keep();
    crate::procs::LEFT_TO_REMOVE
        .lock()
        .unwrap()
        .push(root.clone());
    Ok(root)
}

/// Node name of simulated agent `i`.
pub fn node_name(i: usize) -> String {
    format!("hv{i:05}")
}

/// Starts agents `from..to` (their certificates issued here), paced so connections arrive
/// as from a fleet rather than in one burst.
pub async fn spawn_agents(
    cfg: &FleetConfig<'_>,
    board: &Arc<Board>,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    for i in from..to {
        let name = node_name(i);
        let issued = cfg.pki.issue(&name, false)?;
        let args = AgentArgs {
            node: name.clone(),
            coordinator: vec![cfg.coordinator.clone()],
            etcd: sf_store::etcd::EtcdArgs::plain(vec![cfg.etcd.clone()]),
            tls_cert: issued.cert,
            tls_key: issued.key,
            tls_ca: cfg.pki.ca_path(),
            tls_server_name: "coordinator".into(),
            state_dir: cfg.state_root.join(&name),
            lease_ttl: cfg.lease_ttl,
            resync_secs: 60,
            sync_keepalive_secs: cfg.liveness.agent_keepalive_secs,
            status_flush_secs: cfg.liveness.status_flush_secs,
            metrics_listen: None,
            rule_metrics: Default::default(),
            // Simulated agents run no FRR: no BGP sessions to report.
            bgp_status_frr_dir: None,
            log_format: "text".into(),
            once: false,
        };
        let dp = MemDataplane {
            idx: i,
            board: board.clone(),
            programmed: BTreeMap::new(),
        };
        tokio::spawn(async move {
            if let Err(e) = sf_agent::run(args, "hypervisor", dp).await {
                eprintln!("agent {name}: {e:#}");
            }
        });
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
