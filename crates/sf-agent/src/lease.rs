//! The node's liveness in etcd: one lease per node, a tiny heartbeat key and the status key
//! under it, renewed every TTL/3. The lease id is kept in the state dir, so an agent restarted
//! within the TTL keeps its lease (the node never looks down). On shutdown the lease is *not*
//! revoked: a supervisor restart must not look like a node failure; it expires by itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sf_core::status::AgentStatus;
use sf_store::etcd::EtcdStore;
use sf_store::keys::Keys;
use sf_store::{KvStore, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::AgentArgs;
use crate::Counters;

fn lease_file(args: &AgentArgs) -> PathBuf {
    args.state_dir.join("lease")
}

/// Lease health, published to the reconciler: when the last renewal succeeded, and whether
/// the current lease is the one held before (continuity).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseHealth {
    pub last_renewed: Option<std::time::Instant>,
    pub continuous: bool,
    /// Incremented on every (re)acquisition, so the reconciler can tell sessions apart.
    pub generation: u64,
}

impl LeaseHealth {
    /// The lease is considered lost once two renewals (2/3 of the TTL) were missed: it may
    /// expire at the server within TTL of the last renewal the server saw, which is no later
    /// than the last one the agent saw, so standing down at 2/3 TTL happens before expiry.
    pub fn state(&self, ttl: Duration) -> crate::LeaseState {
        match self.last_renewed {
            None => crate::LeaseState::Unknown,
            Some(t) if t.elapsed() >= ttl * 2 / 3 => crate::LeaseState::Lost,
            Some(_) => crate::LeaseState::Held {
                continuous: self.continuous,
            },
        }
    }
}

/// Keeps the lease, heartbeat and status alive forever, publishing the lease's health.
pub async fn run(
    args: AgentArgs,
    mut status_rx: watch::Receiver<AgentStatus>,
    counters: Arc<Counters>,
    health: watch::Sender<LeaseHealth>,
) {
    let keys = args.etcd.keys();
    let mut attempt = 0;
    loop {
        let store = match args.etcd.connect().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "etcd unreachable; retrying");
                tokio::time::sleep(crate::sync::backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        if let Err(e) = hold(&args, &keys, &store, &mut status_rx, &counters, &health).await {
            warn!(error = %e, "lease lost or etcd failed; re-establishing");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Returns the lease id and whether it is the same lease as before (kept alive throughout).
async fn acquire(args: &AgentArgs, store: &EtcdStore) -> Result<(i64, bool), StoreError> {
    if let Ok(text) = std::fs::read_to_string(lease_file(args)) {
        if let Ok(id) = text.trim().parse::<i64>() {
            if store.lease_keep_alive(id).await.is_ok() {
                info!(lease = id, "reusing the lease of the previous run");
                return Ok((id, true));
            }
        }
    }
    let id = store.lease_grant(args.lease_ttl).await?;
    if let Err(e) = std::fs::write(lease_file(args), id.to_string()) {
        warn!(error = %e, "cannot persist lease id");
    }
    info!(lease = id, ttl = args.lease_ttl, "lease granted");
    Ok((id, false))
}

async fn hold(
    args: &AgentArgs,
    keys: &Keys,
    store: &EtcdStore,
    status_rx: &mut watch::Receiver<AgentStatus>,
    counters: &Counters,
    health: &watch::Sender<LeaseHealth>,
) -> Result<(), StoreError> {
    let (lease, continuous) = acquire(args, store).await?;
    let heartbeat = serde_json::json!({"node": args.node, "pid": std::process::id()});
    store
        .put(
            &keys.heartbeat(&args.node),
            heartbeat.to_string().into_bytes(),
            lease,
        )
        .await?;
    let put_status = |s: AgentStatus| {
        let key = keys.status(&args.node);
        async move {
            store
                .put(&key, serde_json::to_vec(&s).expect("serializes"), lease)
                .await
        }
    };
    let first = status_rx.borrow_and_update().clone();
    let mut written = significant(&first);
    put_status(first).await?;
    health.send_modify(|h| {
        let was_lost = h
            .last_renewed
            .is_none_or(|t| t.elapsed() >= ttl_of(args) * 2 / 3);
        h.continuous = continuous && !(was_lost && h.generation > 0);
        h.generation += 1;
        h.last_renewed = Some(std::time::Instant::now());
    });
    mark_lease_ok(args);
    let period = Duration::from_millis((args.lease_ttl.max(1) as u64 * 1000) / 3);
    let mut tick = tokio::time::interval(period);
    let flush_every = status_flush(args);
    let mut flush = tokio::time::interval(flush_every);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<AgentStatus> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                store.lease_keep_alive(lease).await?;
                health.send_modify(|h| h.last_renewed = Some(std::time::Instant::now()));
                mark_lease_ok(args);
                counters.incr("lease_renewals");
            }
            changed = status_rx.changed() => {
                if changed.is_err() { return Ok(()); }
                let s = status_rx.borrow_and_update().clone();
                let now = significant(&s);
                if now != written {
                    written = now;
                    pending = None;
                    put_status(s).await?;
                } else {
                    // Only the revision, digest or counters moved: the coordinator has them
                    // from the ack already; etcd gets them with the next flush.
                    pending = Some(s);
                }
            }
            _ = flush.tick() => {
                if let Some(s) = pending.take() {
                    put_status(s).await?;
                }
            }
        }
    }
}

/// How often this agent writes a status report that only moves the applied revision, digest
/// or counters: `--status-flush-secs` plus a jitter of up to as much again, drawn once per
/// agent. Writing those at once would make every change that reaches N agents cost N etcd
/// writes (and N watch events at every coordinator) within the same second; the coordinators
/// learn the applied revision from the Sync stream's acks instead. The jitter spreads a
/// fleet's deferred reports after one change over the whole window: with 3 s + up to 1 s, the
/// 5,000 reports of a change to every agent reached etcd within 4 s, and a port bound for one
/// agent during those seconds waited behind them (`sf-bench fanout`, change to one).
pub fn status_flush(args: &AgentArgs) -> Duration {
    flush_with_jitter(args.status_flush_secs, rand::random_range(0.0..1.0))
}

fn flush_with_jitter(secs: u64, jitter: f64) -> Duration {
    let base = Duration::from_secs(secs.max(1));
    base + base.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The part of a status report that must reach etcd at once: errors, observed VNIs, load
/// balancer and Direct Connect state, BGP session states, identity (what placement,
/// compilation and operators act on). A BGP session's prefix counts and established time
/// wait for the flush: prefix counts move on every VNI or route anywhere in the fabric.
fn significant(s: &AgentStatus) -> AgentStatus {
    let mut out = AgentStatus {
        applied_revision: 0,
        applied_digest: String::new(),
        counters: Default::default(),
        reported_at_ms: 0,
        ..s.clone()
    };
    for b in &mut out.bgp_sessions {
        b.prefixes.clear();
        b.established_epoch = 0;
    }
    out
}

pub fn ttl_of(args: &AgentArgs) -> Duration {
    Duration::from_secs(args.lease_ttl.max(1) as u64)
}

/// File whose modification time is the last successful lease renewal. A process that must
/// act when the agent is gone (the gateway's fence) reads it; see [`lease_ok_age`].
pub fn lease_ok_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("lease-ok")
}

fn mark_lease_ok(args: &AgentArgs) {
    if let Err(e) = std::fs::write(lease_ok_file(&args.state_dir), b"") {
        warn!(error = %e, "cannot mark the lease renewal on disk");
    }
}

/// How long ago the lease was last renewed, per the on-disk mark (None if never).
pub fn lease_ok_age(state_dir: &std::path::Path) -> Option<Duration> {
    let modified = std::fs::metadata(lease_ok_file(state_dir))
        .ok()?
        .modified()
        .ok()?;
    Some(modified.elapsed().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_revision_digest_counters_and_time_are_deferred() {
        let base = AgentStatus {
            node: "hv1".into(),
            applied_revision: 5,
            applied_digest: "a".into(),
            ..Default::default()
        };
        let mut moved = base.clone();
        moved.applied_revision = 6;
        moved.applied_digest = "b".into();
        moved.counters.insert("reconciles".into(), 3);
        moved.reported_at_ms = 99;
        assert_eq!(significant(&base), significant(&moved));
        let mut failed = moved.clone();
        failed.errors.push("vxlan1000001: exists".into());
        assert_ne!(significant(&base), significant(&failed));
        let mut observed = moved.clone();
        observed.observed_vnis.insert(1_000_001);
        assert_ne!(significant(&base), significant(&observed));
    }

    /// A fleet's deferred reports spread over a window as long as the flush itself.
    #[test]
    fn deferred_reports_spread_over_a_window_as_long_as_the_flush() {
        assert_eq!(flush_with_jitter(10, 0.0), Duration::from_secs(10));
        assert_eq!(flush_with_jitter(10, 0.5), Duration::from_secs(15));
        assert_eq!(flush_with_jitter(10, 1.0), Duration::from_secs(20));
        assert_eq!(flush_with_jitter(0, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn bgp_state_goes_at_once_prefix_counts_wait() {
        let session = |state: &str, received: u64| sf_core::status::BgpSession {
            peer: "leaf1".into(),
            state: state.into(),
            established_epoch: received,
            prefixes: [(
                "ipv4Unicast".to_string(),
                sf_core::status::PrefixCounts { received, sent: 1 },
            )]
            .into(),
            ..Default::default()
        };
        let mut base = AgentStatus::default();
        base.bgp_sessions.push(session("Established", 10));
        let mut counted = base.clone();
        counted.bgp_sessions[0] = session("Established", 11);
        assert_eq!(significant(&base), significant(&counted));
        let mut down = base.clone();
        down.bgp_sessions[0] = session("Idle", 0);
        assert_ne!(significant(&base), significant(&down));
    }
}
