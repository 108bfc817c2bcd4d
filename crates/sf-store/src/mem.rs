//! In-memory twin of etcd for unit tests: the same revision, transaction, watch and lease
//! semantics as [`crate::etcd::EtcdStore`] (checked by the shared conformance suite), without a
//! server. Leases expire lazily, on the next operation after their deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::{
    Compare, EventKind, KeyValue, KvStore, Op, Result, StoreError, TxnOutcome, WatchBatch,
    WatchEvent, WatchStream,
};

#[derive(Default)]
struct Inner {
    revision: i64,
    data: BTreeMap<String, KeyValue>,
    /// Every batch ever committed, for watches that start in the past.
    history: Vec<WatchBatch>,
    leases: HashMap<i64, (Duration, Instant)>,
    next_lease: i64,
}

/// An etcd stand-in living in process memory.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WatchBatch>,
    /// While set, watches deliver nothing (tests of a follower whose watch fell behind).
    stalled: Arc<AtomicBool>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        MemStore {
            inner: Arc::new(Mutex::new(Inner {
                revision: 1,
                next_lease: 1,
                ..Default::default()
            })),
            events,
            stalled: Arc::default(),
        }
    }

    /// Stalls (true) or resumes (false) every watch: a stalled watch delivers neither events
    /// nor progress notifications, like one whose etcd member is partitioned away.
    pub fn stall_watches(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    fn commit(&self, inner: &mut Inner, events: Vec<WatchEvent>) {
        let batch = WatchBatch {
            revision: inner.revision,
            events,
        };
        inner.history.push(batch.clone());
        let _ = self.events.send(batch);
    }

    fn expire_leases(&self, inner: &mut Inner) {
        let now = Instant::now();
        let expired: Vec<i64> = inner
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_lease(inner, id);
        }
    }

    fn drop_lease(&self, inner: &mut Inner, id: i64) {
        inner.leases.remove(&id);
        let keys: Vec<String> = inner
            .data
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        inner.revision += 1;
        let rev = inner.revision;
        let events = keys
            .into_iter()
            .map(|k| {
                inner.data.remove(&k);
                deleted(k, rev)
            })
            .collect();
        self.commit(inner, events);
    }
}

fn deleted(key: String, rev: i64) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key,
            value: vec![],
            create_revision: 0,
            mod_revision: rev,
            lease: 0,
        },
    }
}

#[async_trait::async_trait]
impl KvStore for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut inner = self.inner.lock().unwrap();
        self.expire_leases(&mut inner);
        Ok(inner.data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let mut inner = self.inner.lock().unwrap();
        self.expire_leases(&mut inner);
        let kvs = inner
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((kvs, inner.revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let mut inner = self.inner.lock().unwrap();
        self.expire_leases(&mut inner);
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !inner.data.contains_key(k),
            Compare::Present(k) => inner.data.contains_key(k),
            Compare::ModRevision(k, rev) => {
                inner.data.get(k).map(|kv| kv.mod_revision).unwrap_or(0) == *rev
            }
        });
        if !holds {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: inner.revision,
            });
        }
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !inner.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        let changes = ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete { key } => inner.data.contains_key(key),
        });
        if !changes {
            return Ok(TxnOutcome {
                succeeded: true,
                revision: inner.revision,
            });
        }
        inner.revision += 1;
        let rev = inner.revision;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let create_revision = inner
                        .data
                        .get(&key)
                        .map(|kv| kv.create_revision)
                        .unwrap_or(rev);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: rev,
                        lease,
                    };
                    inner.data.insert(key, kv.clone());
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Op::Delete { key } => {
                    if inner.data.remove(&key).is_some() {
                        events.push(deleted(key, rev));
                    }
                }
            }
        }
        self.commit(&mut inner, events);
        Ok(TxnOutcome {
            succeeded: true,
            revision: rev,
        })
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        let (backlog, mut rx) = {
            let inner = self.inner.lock().unwrap();
            let backlog: Vec<WatchBatch> = inner
                .history
                .iter()
                .filter(|b| b.revision >= start_revision)
                .cloned()
                .collect();
            (backlog, self.events.subscribe())
        };
        let prefix = prefix.to_string();
        let filter = move |b: WatchBatch| -> Option<WatchBatch> {
            let events: Vec<WatchEvent> = b
                .events
                .into_iter()
                .filter(|e| e.kv.key.starts_with(&prefix))
                .collect();
            (!events.is_empty()).then_some(WatchBatch {
                revision: b.revision,
                events,
            })
        };
        let last_backlog = backlog.last().map(|b| b.revision).unwrap_or(0);
        let (tx, out) = tokio::sync::mpsc::channel(1024);
        let (inner, stalled) = (self.inner.clone(), self.stalled.clone());
        tokio::spawn(async move {
            let mut delivered = last_backlog;
            for b in backlog {
                if let Some(b) = filter(b) {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            }
            let mut progress = tokio::time::interval(crate::PROGRESS_INTERVAL);
            let wait_unstalled = || async {
                while stalled.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            loop {
                wait_unstalled().await;
                let next = tokio::select! {
                    b = rx.recv() => {
                        // Received just as the stall began: held back like the rest.
                        wait_unstalled().await;
                        b
                    }
                    _ = progress.tick() => {
                        wait_unstalled().await;
                        // Every batch up to `now` is already queued (commits send under the
                        // lock): deliver them, then confirm `now`.
                        let now = inner.lock().unwrap().revision;
                        while delivered < now {
                            match rx.try_recv() {
                                Ok(b) if b.revision <= delivered => {}
                                Ok(b) => {
                                    delivered = b.revision;
                                    if let Some(b) = filter(b) {
                                        if tx.send(Ok(b)).await.is_err() { return; }
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        let p = WatchBatch { revision: now.max(delivered), events: vec![] };
                        if tx.send(Ok(p)).await.is_err() { return; }
                        continue;
                    }
                };
                match next {
                    Ok(b) if b.revision <= delivered => continue,
                    Ok(b) => {
                        delivered = b.revision;
                        if let Some(b) = filter(b) {
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(StoreError::WatchEnded(format!(
                                "watcher lagged by {n}"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.next_lease;
        inner.next_lease += 1;
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        inner.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<i64> {
        let mut inner = self.inner.lock().unwrap();
        self.expire_leases(&mut inner);
        match inner.leases.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(ttl.as_secs() as i64)
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if !inner.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        self.drop_lease(&mut inner, lease);
        Ok(())
    }
}
