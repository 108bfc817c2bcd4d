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
use crate::runtime::Counters;

fn lease_file(args: &AgentArgs) -> PathBuf {
    args.state_dir.join("lease")
}

/// Keeps the lease, heartbeat and status alive forever.
pub async fn run(
    args: AgentArgs,
    mut status_rx: watch::Receiver<AgentStatus>,
    counters: Arc<Counters>,
) {
    let keys = Keys::new(&args.etcd_root);
    let mut attempt = 0;
    loop {
        let store = match EtcdStore::connect(&args.etcd_endpoints).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "etcd unreachable; retrying");
                tokio::time::sleep(crate::sync::backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        if let Err(e) = hold(&args, &keys, &store, &mut status_rx, &counters).await {
            warn!(error = %e, "lease lost or etcd failed; re-establishing");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn acquire(args: &AgentArgs, store: &EtcdStore) -> Result<i64, StoreError> {
    if let Ok(text) = std::fs::read_to_string(lease_file(args)) {
        if let Ok(id) = text.trim().parse::<i64>() {
            if store.lease_keep_alive(id).await.is_ok() {
                info!(lease = id, "reusing the lease of the previous run");
                return Ok(id);
            }
        }
    }
    let id = store.lease_grant(args.lease_ttl).await?;
    if let Err(e) = std::fs::write(lease_file(args), id.to_string()) {
        warn!(error = %e, "cannot persist lease id");
    }
    info!(lease = id, ttl = args.lease_ttl, "lease granted");
    Ok(id)
}

async fn hold(
    args: &AgentArgs,
    keys: &Keys,
    store: &EtcdStore,
    status_rx: &mut watch::Receiver<AgentStatus>,
    counters: &Counters,
) -> Result<(), StoreError> {
    let lease = acquire(args, store).await?;
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
    put_status(first).await?;
    let period = Duration::from_millis((args.lease_ttl.max(1) as u64 * 1000) / 3);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                store.lease_keep_alive(lease).await?;
                counters.incr("lease_renewals");
            }
            changed = status_rx.changed() => {
                if changed.is_err() { return Ok(()); }
                let s = status_rx.borrow_and_update().clone();
                put_status(s).await?;
            }
        }
    }
}
