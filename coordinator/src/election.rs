//! Coordinator leader election through etcd. Every replica registers itself under
//! `coordinators/replicas/<name>` with a lease and campaigns for `coordinators/leader` with a
//! create-if-absent transaction under the same lease. The winner runs the controllers that
//! must have one writer (placement); every replica serves agent streams and the APIs (their
//! writes are serialized by the intent-version fence, not by the leader).
//!
//! Failover: a leader that stops cleanly revokes its lease, so a follower takes over on its
//! next tick (<= 0.5 s); one that dies loses the key when its lease expires (the TTL). A
//! leader that cannot renew steps down at once; its placement writes compare the leader key's
//! revision, so even a paused leader that has not noticed cannot overwrite its successor.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sf_store::{Compare, Op};
use tracing::{info, warn};

use crate::fabric::Fabric;

/// How often a follower looks for a vacant leadership and a replica checks its lease.
const TICK: Duration = Duration::from_millis(500);

/// Runs the election until `stop` fires; then revokes the lease (handing leadership over at
/// once) and returns.
pub async fn run(fabric: Arc<Fabric>, name: String, ttl_secs: i64, stop: Arc<tokio::sync::Notify>) {
    fabric.set_replica_name(&name);
    let kv = fabric.store().kv().clone();
    let keys = fabric.store().keys().clone();
    let lease = AtomicI64::new(0);
    let lease = &lease;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let term = async {
            let lease = {
                let id = kv.lease_grant(ttl_secs).await?;
                lease.store(id, Ordering::Relaxed);
                id
            };
            kv.put(&keys.replica(&name), name.clone().into_bytes(), lease)
                .await?;
            // A previous incarnation of this replica (restarted before its lease expired)
            // still holding the leader key would delay every election by the TTL.
            if let Some(old) = kv.get(&keys.leader()).await? {
                if old.value == name.as_bytes() && old.lease != lease {
                    kv.txn(
                        vec![Compare::ModRevision(keys.leader(), old.mod_revision)],
                        vec![Op::Delete { key: keys.leader() }],
                    )
                    .await?;
                }
            }
            info!(replica = %name, lease, "registered; campaigning");
            let mut renewed = Instant::now();
            let renew_every = Duration::from_secs((ttl_secs as u64 / 3).max(1));
            loop {
                if renewed.elapsed() >= renew_every {
                    kv.lease_keep_alive(lease).await?;
                    renewed = Instant::now();
                }
                // Campaign only while the index (which follows the watch) shows no leader:
                // followers do not send etcd a transaction every tick.
                let vacant = fabric.with_view(|v, _| v.leader.is_none());
                if fabric.leader_revision().is_none() && vacant {
                    let out = kv
                        .txn(
                            vec![Compare::Absent(keys.leader())],
                            vec![Op::Put {
                                key: keys.leader(),
                                value: name.clone().into_bytes(),
                                lease,
                            }],
                        )
                        .await?;
                    if out.succeeded {
                        info!(replica = %name, revision = out.revision, "elected leader");
                        fabric.set_leadership(Some(out.revision));
                    }
                }
                tokio::time::sleep(TICK).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), sf_store::StoreError>(())
        };
        tokio::select! {
            res = term => {
                if let Err(e) = res {
                    if fabric.leader_revision().is_some() {
                        warn!(error = %e, "lease lost or etcd failed; stepping down");
                    } else {
                        warn!(error = %e, "lease lost or etcd failed; campaigning again");
                    }
                }
                fabric.set_leadership(None);
                // Release the old term's keys if etcd still has them (best effort).
                let old = lease.swap(0, Ordering::Relaxed);
                if old != 0 {
                    let _ = tokio::time::timeout(Duration::from_secs(1), kv.lease_revoke(old)).await;
                }
                tokio::time::sleep(TICK).await;
            }
            _ = &mut stopped => {
                fabric.set_leadership(None);
                let id = lease.load(Ordering::Relaxed);
                if id != 0 {
                    // Deletes the leader and replica keys: a follower leads on its next tick.
                    let _ = tokio::time::timeout(Duration::from_secs(2), kv.lease_revoke(id)).await;
                }
                info!(replica = %name, "left the election");
                return;
            }
        }
    }
}
