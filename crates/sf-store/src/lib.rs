//! All of StackFabric's etcd code lives here, and nowhere else.
//!
//! - [`keys`]: the one documented key layout.
//! - [`KvStore`]: the small slice of etcd we use (get/list, transactions with compares, watch
//!   from a revision, leases), implemented by [`etcd::EtcdStore`] against a real cluster and by
//!   [`mem::MemStore`], its in-memory twin for unit tests. Both pass the same conformance suite
//!   (`tests/conformance.rs`).
//! - [`intent`]: typed, validated intent operations (create/delete objects, atomic VNI
//!   allocation) and loading the whole intent at a revision.
//! - [`alloc`]: the index of allocated VNIs and VPC ids a view keeps, for O(log n) allocation.
//! - [`write`]: the one write surface: per object kind, the compares and operations of a
//!   create, replace or delete (allocation claims included), for the gRPC and REST APIs alike.

pub mod alloc;
pub mod etcd;
pub mod intent;
pub mod keys;
pub mod mem;
pub mod write;

use std::pin::Pin;

use futures::Stream;

/// A key with its value and etcd metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Present(String),
    /// The key was last modified at exactly this revision.
    ModRevision(String, i64),
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put; `lease` 0 means no lease.
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
}

/// Result of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// Store revision after the transaction (unchanged if it failed).
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For deletes, `kv.value` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// All events of one revision (one transaction), in order. A batch with no events is a
/// progress notification: the watch has delivered every event up to `revision` (etcd's
/// watch progress). Watches send one at least every [`PROGRESS_INTERVAL`] while they are
/// current, so a follower can tell a quiet store from a watch that fell behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

impl WatchBatch {
    /// Whether this is a progress notification (no events).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// How often a watch confirms its progress (see [`WatchBatch`]).
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The requested start revision was compacted away; re-list and watch again.
    #[error("revision {requested} is compacted (oldest available {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    #[error("watch ended: {0}")]
    WatchEnded(String),
    /// A node-written value over [`intent::NODE_VALUE_MAX`]: ignored wherever it is read.
    #[error("value under {key} is {len} bytes, over the {max}-byte cap of node-written keys")]
    TooLarge { key: String, len: usize, max: usize },
    #[error("stored value under {key} is not valid: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The part of etcd StackFabric uses. Implementations must give etcd's semantics: one global
/// revision incremented per successful write transaction, watches that replay from a revision.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// All keys under `prefix`, sorted by key, and the store revision they were read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;
    /// [`KvStore::list`] without the keys under `except` (a sub-prefix of `prefix`), all at
    /// one revision. Stores that can read a key range directly skip those keys' cost.
    async fn list_except(&self, prefix: &str, except: &str) -> Result<(Vec<KeyValue>, i64)> {
        let (mut kvs, revision) = self.list(prefix).await?;
        kvs.retain(|kv| !kv.key.starts_with(except));
        Ok((kvs, revision))
    }
    /// Applies `ops` atomically if every compare holds.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome>;
    /// Events under `prefix` from `start_revision` (inclusive) on, one batch per revision,
    /// with progress notifications (empty batches) at least every [`PROGRESS_INTERVAL`]
    /// while the watch is current.
    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream>;
    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64>;
    /// Renews a lease; returns the remaining TTL, or `LeaseNotFound` if it expired.
    async fn lease_keep_alive(&self, lease: i64) -> Result<i64>;
    async fn lease_revoke(&self, lease: i64) -> Result<()>;

    async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64> {
        let out = self
            .txn(
                vec![],
                vec![Op::Put {
                    key: key.to_string(),
                    value,
                    lease,
                }],
            )
            .await?;
        Ok(out.revision)
    }

    async fn delete(&self, key: &str) -> Result<i64> {
        let out = self
            .txn(
                vec![],
                vec![Op::Delete {
                    key: key.to_string(),
                }],
            )
            .await?;
        Ok(out.revision)
    }
}
