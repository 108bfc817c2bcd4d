//! Typed intent operations on a [`KvStore`]: loading the whole intent at one revision, decoding
//! each watch event once into a [`ViewEvent`] that [`ClusterView::apply`] applies, and the guarded writes the coordinator performs after
//! validation (their compares and operations come from [`crate::write`]). Every write is one etcd transaction whose compares re-check what validation
//! assumed (the object is new, its parents exist, its VNI is free), so a racing writer makes
//! the write fail cleanly instead of corrupting intent.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sf_core::compile;
use sf_core::event::{IntentEvent, KindMismatch, Object, ObjectRef, PortRef, VpcChildRef, VpcRef};
use sf_core::model::{
    Intent, NatRule, Network, Node, Placement, Pool, PortBinding, StaticRoute, Tenant, Vpc,
};
use sf_core::status::AgentStatus;

use crate::alloc::{AllocIndex, IdSet};
use crate::keys::{KeyKind, Keys};
use crate::write::WriteSet;
use crate::{
    Compare, EventKind, KeyValue, KvStore, Op, Result, StoreError, TxnOutcome, WatchEvent,
};

/// Why a guarded write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A compare failed: someone else wrote first, or a parent vanished.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Intent changed (through another coordinator replica) after this write was validated:
    /// validate again against the newer state and retry.
    #[error("intent changed through another coordinator since this request was validated; retry")]
    Stale,
    #[error("VNI pool {0:?} is exhausted")]
    PoolExhausted(RangeInclusive<u32>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Liveness and status of a node as read from etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLiveness {
    pub alive: bool,
    pub status: Option<AgentStatus>,
}

/// Intent, inventory and node liveness, as one consistent view.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub intent: Intent,
    pub nodes: std::collections::BTreeMap<String, NodeLiveness>,
    /// Mod revision of `coordinators/intent-seq`: the intent version validation saw.
    pub intent_seq: i64,
    /// The elected coordinator leader (its name) and the revision it was elected at.
    pub leader: Option<(String, i64)>,
    /// Live coordinator replicas.
    pub replicas: BTreeSet<String>,
    /// The VNIs and VPC ids `intent` holds, kept by [`ClusterView::apply`].
    pub alloc: AllocIndex,
}

/// Typed access to intent in a store.
#[derive(Clone)]
pub struct IntentStore {
    store: Arc<dyn KvStore>,
    keys: Keys,
    /// The intent version (`ClusterView::intent_seq`) the current validate-then-write section
    /// validated against; set by the coordinator's write guard, which serializes those
    /// sections. Writes outside a section are not fenced (they still advance the version).
    fence: Arc<std::sync::Mutex<Option<i64>>>,
}

/// Allocation attempts that trust the caller's index before listing the allocation keys.
const HINTED_ATTEMPTS: usize = 8;

/// Operations per transaction we stay within (etcd's default `--max-txn-ops` is 128).
pub const MAX_TXN_OPS: usize = 100;

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types always serialize")
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| StoreError::Decode {
        key: kv.key.clone(),
        source,
    })
}

impl IntentStore {
    pub fn new(store: Arc<dyn KvStore>, keys: Keys) -> Self {
        IntentStore {
            store,
            keys,
            fence: Arc::default(),
        }
    }

    /// Fences the following writes on intent version `seq` (`None`: unfenced).
    pub fn set_fence(&self, seq: Option<i64>) {
        *self.fence.lock().unwrap() = seq;
    }

    /// Applies `ops` if `compares` hold and intent did not change since the fence's version;
    /// every such write also advances the version. A failure caused by the version alone is
    /// [`WriteError::Stale`]; one caused by `compares` is an unsucceeded outcome.
    pub async fn fenced_txn(
        &self,
        mut compares: Vec<Compare>,
        mut ops: Vec<Op>,
    ) -> Result<TxnOutcome, WriteError> {
        let seq_key = self.keys.intent_seq();
        let fence = *self.fence.lock().unwrap();
        if let Some(seq) = fence {
            compares.push(Compare::ModRevision(seq_key.clone(), seq));
        }
        ops.push(Self::put(seq_key.clone(), Vec::new()));
        let out = self.store.txn(compares, ops).await?;
        if out.succeeded {
            // Our own write is the only change since the fence: later writes of the same
            // section are fenced on it.
            if fence.is_some() {
                *self.fence.lock().unwrap() = Some(out.revision);
            }
        } else {
            if let Some(seq) = fence {
                let now = self.store.get(&seq_key).await?;
                if now.map(|kv| kv.mod_revision).unwrap_or(0) != seq {
                    return Err(WriteError::Stale);
                }
            }
        }
        Ok(out)
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Reads everything under the root at one revision.
    pub async fn load(&self) -> Result<(ClusterView, i64)> {
        self.load_with(|_| {}).await
    }

    /// [`Self::load`], handing every key the view does not hold (keys outside the layout,
    /// such as the coordinator's REST metadata) to `other`, raw and at the same revision, so a
    /// caller can keep its own records beside the view. Allocation claims are not read: they
    /// mirror the intent's own VNIs and VPC ids (the view indexes those, [`AllocIndex`]), and
    /// at 100,000 VPCs they are 300,000 of the 600,000 keys.
    pub async fn load_with(&self, mut other: impl FnMut(KeyValue)) -> Result<(ClusterView, i64)> {
        let (kvs, revision) = self
            .store
            .list_except(&format!("{}/", self.keys.root()), &self.keys.alloc_prefix())
            .await?;
        let mut view = ClusterView::default();
        for kv in kvs {
            let ev = WatchEvent {
                kind: EventKind::Put,
                kv,
            };
            match decode_event(&self.keys, &ev) {
                Ok(Some(e)) => view.load(e),
                Ok(None) => other(ev.kv),
                // One bad value (a node's oversized status, a hand-edited key) must not keep
                // the whole fabric from loading: it is skipped here as the watch skips it.
                Err(e) => {
                    tracing::warn!(key = %ev.kv.key, error = %e, "skipping undecodable value")
                }
            }
        }
        Ok((view, revision))
    }

    async fn guarded(&self, what: &str, w: WriteSet) -> Result<i64, WriteError> {
        let (compares, ops) = w.into_parts();
        let out = self.fenced_txn(compares, ops).await?;
        if out.succeeded {
            Ok(out.revision)
        } else {
            Err(WriteError::Conflict(format!(
                "{what} changed concurrently; retry"
            )))
        }
    }

    fn put(key: String, value: Vec<u8>) -> Op {
        Op::Put {
            key,
            value,
            lease: 0,
        }
    }

    /// The write set of creating `obj` ([`crate::write`]).
    fn creating(&self, obj: Object) -> WriteSet {
        let mut w = WriteSet::new();
        w.create(&self.keys, &obj);
        w
    }

    /// The write set of overwriting an existing object (of a kind without claims).
    fn replacing(&self, obj: Object) -> WriteSet {
        let mut w = WriteSet::new();
        w.replace(&self.keys, &obj);
        w
    }

    /// The write set of deleting the object `r` names (for kinds without a claim, which
    /// need no lookup).
    fn deleting(&self, r: ObjectRef) -> WriteSet {
        let mut w = WriteSet::new();
        w.delete(&self.keys, &r, &Intent::default());
        w
    }

    /// The write set of deleting `obj`, releasing its claim.
    fn deleting_object(&self, obj: Object) -> WriteSet {
        let mut w = WriteSet::new();
        w.delete_object(&self.keys, &obj);
        w
    }

    pub async fn create_tenant(&self, t: &Tenant) -> Result<i64, WriteError> {
        self.guarded("tenant", self.creating(Object::Tenant(t.clone())))
            .await
    }

    /// Creates a VPC, allocating its id (lowest free in `ids`) in the same transaction.
    /// Returns the id and the revision.
    pub async fn create_vpc(
        &self,
        v: &Vpc,
        ids: RangeInclusive<u32>,
    ) -> Result<(u32, i64), WriteError> {
        self.create_vpc_hinted(v, ids, None).await
    }

    /// The VPC ids `view` holds in `site`: what an allocation trusts before listing keys
    /// ([`Self::create_vpc_hinted`]), and where the REST API picks a new VPC's id.
    pub fn known_vpc_ids(view: &ClusterView, site: &str) -> IdSet {
        view.alloc.vpc_ids(site)
    }

    /// A free VPC id of `ids` in `site` for a write that claims it in its own transaction (the
    /// REST API's, which adds its records): the lowest id `known` (the caller's index) leaves
    /// free, if its claim key is indeed absent; else (a claim the index does not show) the
    /// lowest id free among the listed claim keys. The write's compare on the claim still
    /// guards against a racing allocation.
    pub async fn pick_vpc_id(
        &self,
        site: &str,
        ids: RangeInclusive<u32>,
        known: &IdSet,
    ) -> Result<u32, WriteError> {
        if let Some(id) = known.lowest_free(&ids, &BTreeSet::new()) {
            if self.store.get(&self.keys.vpc_id(site, id)).await?.is_none() {
                return Ok(id);
            }
        }
        let (kvs, _) = self.store.list(&self.keys.vpc_id_prefix(site)).await?;
        let taken: BTreeSet<u32> = kvs
            .iter()
            .filter_map(|kv| match self.keys.parse(&kv.key) {
                Some(KeyKind::VpcIdAlloc(s, i)) if s == site => Some(i),
                _ => None,
            })
            .collect();
        ids.clone()
            .find(|i| !taken.contains(i))
            .ok_or(WriteError::PoolExhausted(ids))
    }

    /// [`Self::create_vpc`] with the ids the caller's index already knows to be taken in the
    /// VPC's site: the first attempts pick from it instead of listing every allocation key
    /// (which costs as much as the site is large). The compare on the allocation key keeps
    /// it correct when the index is behind; after a few misses the keys are listed.
    pub async fn create_vpc_hinted(
        &self,
        v: &Vpc,
        ids: RangeInclusive<u32>,
        known: Option<&IdSet>,
    ) -> Result<(u32, i64), WriteError> {
        let k = self.keys.vpc(&v.tenant, &v.name);
        let mut skip = BTreeSet::new();
        for attempt in 0..64 {
            // Trust the index first (no copy of it); list the allocation keys after misses.
            let listed: IdSet;
            let taken = match known {
                Some(known) if attempt < HINTED_ATTEMPTS => known,
                _ => {
                    let (kvs, _) = self.store.list(&self.keys.vpc_id_prefix(&v.site)).await?;
                    listed = kvs
                        .iter()
                        .filter_map(|kv| match self.keys.parse(&kv.key) {
                            Some(KeyKind::VpcIdAlloc(site, i)) if site == v.site => Some(i),
                            _ => None,
                        })
                        .collect();
                    &listed
                }
            };
            let Some(id) = taken.lowest_free(&ids, &skip) else {
                return Err(WriteError::PoolExhausted(ids));
            };
            let mut with_id = v.clone();
            with_id.id = id;
            let (compares, ops) = self.creating(Object::Vpc(with_id)).into_parts();
            let out = self.fenced_txn(compares, ops).await?;
            if out.succeeded {
                return Ok((id, out.revision));
            }
            if self.store.get(&k).await?.is_some() {
                return Err(WriteError::Conflict(format!(
                    "VPC {} was created concurrently",
                    v.name
                )));
            }
            if self
                .store
                .get(&self.keys.tenant(&v.tenant))
                .await?
                .is_none()
            {
                return Err(WriteError::Conflict(format!(
                    "tenant {} was deleted",
                    v.tenant
                )));
            }
            skip.insert(id);
        }
        Err(WriteError::Conflict(
            "VPC id allocation kept racing; retry".into(),
        ))
    }

    pub async fn create_pool(&self, p: &Pool) -> Result<i64, WriteError> {
        self.guarded("pool", self.creating(Object::Pool(p.clone())))
            .await
    }

    pub async fn create_nat(&self, r: &NatRule) -> Result<i64, WriteError> {
        self.guarded("NAT rule", self.creating(Object::Nat(r.clone())))
            .await
    }

    pub async fn create_route(&self, r: &StaticRoute) -> Result<i64, WriteError> {
        self.guarded("route", self.creating(Object::Route(r.clone())))
            .await
    }

    pub async fn create_lb(&self, l: &sf_core::model::LoadBalancer) -> Result<i64, WriteError> {
        self.guarded(
            "load balancer",
            self.creating(Object::LoadBalancer(l.clone())),
        )
        .await
    }

    /// Overwrites an existing tenant (its description); refused if it vanished meanwhile.
    pub async fn update_tenant(&self, t: &Tenant) -> Result<i64, WriteError> {
        self.guarded("tenant", self.replacing(Object::Tenant(t.clone())))
            .await
    }

    /// Overwrites an existing load balancer (backends, health check, sources...); the
    /// compiled change reaches the serving gateway as a delta.
    pub async fn update_lb(&self, l: &sf_core::model::LoadBalancer) -> Result<i64, WriteError> {
        self.guarded(
            "load balancer",
            self.replacing(Object::LoadBalancer(l.clone())),
        )
        .await
    }

    /// Overwrites an existing NAT rule (its addresses and ports); refused if it vanished.
    pub async fn update_nat(&self, r: &NatRule) -> Result<i64, WriteError> {
        self.guarded("NAT rule", self.replacing(Object::Nat(r.clone())))
            .await
    }

    /// Overwrites an existing route (its prefix and next hop); refused if it vanished.
    pub async fn update_route(&self, r: &StaticRoute) -> Result<i64, WriteError> {
        self.guarded("route", self.replacing(Object::Route(r.clone())))
            .await
    }

    /// Creates or replaces an ACL list (a change applies as a delta on the agents).
    pub async fn put_acl(&self, l: &sf_core::model::AclList) -> Result<i64, WriteError> {
        let mut w = WriteSet::new();
        w.upsert(&self.keys, &Object::Acl(l.clone()));
        self.guarded("ACL list", w).await
    }

    pub async fn delete_acl(&self, t: &str, v: &str, l: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Acl(VpcChildRef::new(t, v, l));
        self.guarded("ACL list", self.deleting(r)).await
    }

    pub async fn delete_lb(&self, t: &str, v: &str, l: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::LoadBalancer(VpcChildRef::new(t, v, l));
        self.guarded("load balancer", self.deleting(r)).await
    }

    pub async fn delete_pool(&self, p: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Pool(p.to_string());
        self.guarded("pool", self.deleting(r)).await
    }
    pub async fn delete_nat(&self, t: &str, v: &str, r: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Nat(VpcChildRef::new(t, v, r));
        self.guarded("NAT rule", self.deleting(r)).await
    }
    pub async fn delete_route(&self, t: &str, v: &str, r: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Route(VpcChildRef::new(t, v, r));
        self.guarded("route", self.deleting(r)).await
    }

    /// Marks a gateway drained (out of placement) or not.
    pub async fn set_drained(&self, node: &str, drained: bool) -> Result<i64, WriteError> {
        let k = self.keys.drained(node);
        let op = if drained {
            Self::put(k, b"{}".to_vec())
        } else {
            Op::Delete { key: k }
        };
        let w = WriteSet {
            compares: vec![Compare::Present(self.keys.node(node))],
            ops: vec![op],
        };
        self.guarded("drain", w).await
    }

    /// Writes placement changes (None deletes the record) in transactions of at most
    /// [`MAX_TXN_OPS`] operations (etcd refuses larger ones; a gateway failure can move
    /// thousands of VPCs at once). Each VPC's placement is independent, so a partial write is
    /// a valid state that the next pass completes. Returns the last revision.
    ///
    /// `leader_revision` is the revision at which this coordinator won the election: each
    /// transaction compares the leader key against it, so a deposed leader (its lease expired
    /// while it was partitioned or paused) cannot overwrite its successor's placement.
    pub async fn write_placements(
        &self,
        changes: &[(sf_core::event::VpcRef, Option<Placement>)],
        leader_revision: Option<i64>,
    ) -> Result<i64, WriteError> {
        let mut revision = 0;
        for chunk in changes.chunks(MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|(k, p)| match p {
                    Some(p) => Self::put(self.keys.placement(&k.tenant, &k.vpc), encode(p)),
                    None => Op::Delete {
                        key: self.keys.placement(&k.tenant, &k.vpc),
                    },
                })
                .collect();
            let compares = leader_revision
                .map(|r| vec![Compare::ModRevision(self.keys.leader(), r)])
                .unwrap_or_default();
            let out = self.store.txn(compares, ops).await?;
            if !out.succeeded {
                return Err(WriteError::Conflict(
                    "no longer the coordinator leader".into(),
                ));
            }
            revision = out.revision;
        }
        Ok(revision)
    }

    /// Creates a network whose VNI is already chosen, claiming the VNI in the same transaction.
    pub async fn create_network(&self, n: &Network) -> Result<i64, WriteError> {
        self.guarded("network or VNI", self.creating(Object::Network(n.clone())))
            .await
    }

    /// Allocates the lowest free VNI of `pool` and creates the network with it, atomically:
    /// concurrent callers never share a VNI (the allocation key is created with a compare).
    /// Returns the VNI and the revision.
    pub async fn create_network_allocating(
        &self,
        n: &Network,
        pool: RangeInclusive<u32>,
    ) -> Result<(u32, i64), WriteError> {
        self.create_network_hinted(n, pool, None).await
    }

    /// [`Self::create_network_allocating`] with the VNIs the caller's index knows are in use
    /// (see [`Self::create_vpc_hinted`]).
    pub async fn create_network_hinted(
        &self,
        n: &Network,
        pool: RangeInclusive<u32>,
        known: Option<&IdSet>,
    ) -> Result<(u32, i64), WriteError> {
        let mut skip = BTreeSet::new();
        for attempt in 0..64 {
            let vni = self.free_vni(&pool, &skip, known, attempt).await?;
            let mut with_vni = n.clone();
            with_vni.vni = vni;
            match self.create_network(&with_vni).await {
                Ok(rev) => return Ok((vni, rev)),
                Err(WriteError::Conflict(_)) => {
                    // Either the VNI was taken by a racing allocation (retry with another), or
                    // the network/VPC itself changed (report it).
                    let k = self.keys.network(&n.tenant, &n.vpc, &n.name);
                    if self.store.get(&k).await?.is_some() {
                        return Err(WriteError::Conflict(format!(
                            "network {} was created concurrently",
                            n.name
                        )));
                    }
                    if self
                        .store
                        .get(&self.keys.vpc(&n.tenant, &n.vpc))
                        .await?
                        .is_none()
                    {
                        return Err(WriteError::Conflict(format!("VPC {} was deleted", n.vpc)));
                    }
                    skip.insert(vni);
                }
                Err(e) => return Err(e),
            }
        }
        Err(WriteError::Conflict(
            "VNI allocation kept racing; retry".into(),
        ))
    }

    /// The lowest VNI of `pool` that is neither allocated nor in `skip`.
    async fn free_vni(
        &self,
        pool: &RangeInclusive<u32>,
        skip: &BTreeSet<u32>,
        known: Option<&IdSet>,
        attempt: usize,
    ) -> Result<u32, WriteError> {
        if let Some(known) = known.filter(|_| attempt < HINTED_ATTEMPTS) {
            return known
                .lowest_free(pool, skip)
                .ok_or_else(|| WriteError::PoolExhausted(pool.clone()));
        }
        let (taken, _) = self.store.list(&self.keys.vni_prefix()).await?;
        let taken: IdSet = taken
            .iter()
            .filter_map(|kv| match self.keys.parse(&kv.key) {
                Some(KeyKind::VniAlloc(v)) => Some(v),
                _ => None,
            })
            .collect();
        taken
            .lowest_free(pool, skip)
            .ok_or_else(|| WriteError::PoolExhausted(pool.clone()))
    }

    /// Creates a Direct Connect with the lowest free VNI of `pool` for its hand-off segment
    /// (claimed in the same transaction, like a network's). Returns the VNI and the revision.
    pub async fn create_dc_allocating(
        &self,
        d: &sf_core::model::DirectConnect,
        pool: RangeInclusive<u32>,
    ) -> Result<(u32, i64), WriteError> {
        self.create_dc_hinted(d, pool, None).await
    }

    /// [`Self::create_dc_allocating`] with the VNIs the caller's index knows are in use.
    pub async fn create_dc_hinted(
        &self,
        d: &sf_core::model::DirectConnect,
        pool: RangeInclusive<u32>,
        known: Option<&IdSet>,
    ) -> Result<(u32, i64), WriteError> {
        let k = self.keys.dc(&d.tenant, &d.vpc, &d.name);
        let mut skip = BTreeSet::new();
        for attempt in 0..64 {
            let vni = self.free_vni(&pool, &skip, known, attempt).await?;
            let mut with_vni = d.clone();
            with_vni.vni = vni;
            let (compares, ops) = self.creating(Object::DirectConnect(with_vni)).into_parts();
            let out = self.fenced_txn(compares, ops).await?;
            if out.succeeded {
                return Ok((vni, out.revision));
            }
            if self.store.get(&k).await?.is_some() {
                return Err(WriteError::Conflict(format!(
                    "Direct Connect {} was created concurrently",
                    d.name
                )));
            }
            skip.insert(vni);
        }
        Err(WriteError::Conflict(
            "VNI allocation kept racing; retry".into(),
        ))
    }

    /// Deletes a Direct Connect and releases its VNI.
    pub async fn delete_dc(&self, d: &sf_core::model::DirectConnect) -> Result<i64, WriteError> {
        let w = self.deleting_object(Object::DirectConnect(d.clone()));
        self.guarded("Direct Connect", w).await
    }

    pub async fn create_port(&self, p: &PortBinding) -> Result<i64, WriteError> {
        self.guarded("port", self.creating(Object::Port(p.clone())))
            .await
    }

    pub async fn create_node(&self, n: &Node) -> Result<i64, WriteError> {
        self.guarded("node", self.creating(Object::Node(n.clone())))
            .await
    }

    pub async fn delete_tenant(&self, t: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Tenant(t.to_string());
        self.guarded("tenant", self.deleting(r)).await
    }
    /// Deletes the VPC, releasing its id.
    pub async fn delete_vpc(&self, vpc: &Vpc) -> Result<i64, WriteError> {
        let w = self.deleting_object(Object::Vpc(vpc.clone()));
        self.guarded("vpc", w).await
    }
    /// Deletes the network and releases its VNI in one transaction.
    pub async fn delete_network(&self, n: &Network) -> Result<i64, WriteError> {
        let w = self.deleting_object(Object::Network(n.clone()));
        self.guarded("network", w).await
    }
    pub async fn delete_port(&self, t: &str, p: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Port(PortRef::new(t, p));
        self.guarded("port", self.deleting(r)).await
    }
    pub async fn delete_node(&self, n: &str) -> Result<i64, WriteError> {
        let r = ObjectRef::Node(n.to_string());
        self.guarded("node", self.deleting(r)).await
    }
}

/// One watch event, decoded once: a change of intent (for the compiler), or a runtime record
/// (liveness, fencing sequence, leadership, replicas, agent status) the view keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEvent {
    Intent(IntentEvent),
    Heartbeat {
        node: String,
        alive: bool,
    },
    IntentSeq(i64),
    Leader(Option<(String, i64)>),
    Replica {
        name: String,
        live: bool,
    },
    Status {
        node: String,
        status: Option<AgentStatus>,
    },
}

impl ViewEvent {
    /// Whether gateway placement may move: it depends only on VPCs, gateway inventory, drain
    /// marks, placements and liveness (recomputing it on every port or status change would
    /// make each change cost as much as the whole fabric).
    pub fn may_move_placement(&self) -> bool {
        match self {
            ViewEvent::Heartbeat { .. } => true,
            ViewEvent::Intent(e) => matches!(
                e.object_ref(),
                ObjectRef::Vpc(_)
                    | ObjectRef::Node(_)
                    | ObjectRef::Drained(_)
                    | ObjectRef::Placement(_)
            ),
            _ => false,
        }
    }
}

/// The largest value a node may write under its own keys (heartbeat, status). Nodes write
/// there with their own etcd credentials, so the coordinator cannot stop a bigger write; it
/// ignores it instead (a status with 4,096 observed VNIs and its counters is ~60 KiB).
pub const NODE_VALUE_MAX: usize = 256 * 1024;

/// Decodes one watch event. Keys outside the layout (and allocation records, which carry no
/// state the view needs) give `None`; an undecodable value is an error and changes nothing.
/// A heartbeat counts only while it is attached to a lease (a node that wrote one without a
/// lease would otherwise look alive forever); node-written values over [`NODE_VALUE_MAX`]
/// are refused.
pub fn decode_event(keys: &Keys, ev: &WatchEvent) -> Result<Option<ViewEvent>> {
    let Some(kind) = keys.parse(&ev.kv.key) else {
        return Ok(None);
    };
    let put = ev.kind == EventKind::Put;
    let node_written = matches!(kind, KeyKind::Heartbeat(_) | KeyKind::Status(_));
    if put && node_written && ev.kv.value.len() > NODE_VALUE_MAX {
        return Err(crate::StoreError::TooLarge {
            key: ev.kv.key.clone(),
            len: ev.kv.value.len(),
            max: NODE_VALUE_MAX,
        });
    }
    // An intent object: its reference, and (for a put) its decoded value.
    macro_rules! intent {
        ($r:expr, $variant:ident) => {{
            let r = $r;
            ViewEvent::Intent(if put {
                IntentEvent::Put(r, Object::$variant(decode(&ev.kv)?))
            } else {
                IntentEvent::Delete(r)
            })
        }};
    }
    Ok(Some(match kind {
        KeyKind::Tenant(t) => intent!(ObjectRef::Tenant(t), Tenant),
        KeyKind::Vpc(t, v) => intent!(ObjectRef::Vpc(VpcRef::new(t, v)), Vpc),
        KeyKind::Network(t, v, n) => {
            intent!(ObjectRef::Network(VpcChildRef::new(t, v, n)), Network)
        }
        KeyKind::Port(t, p) => intent!(ObjectRef::Port(PortRef::new(t, p)), Port),
        KeyKind::Node(n) => intent!(ObjectRef::Node(n), Node),
        KeyKind::Pool(p) => intent!(ObjectRef::Pool(p), Pool),
        KeyKind::Nat(t, v, r) => intent!(ObjectRef::Nat(VpcChildRef::new(t, v, r)), Nat),
        KeyKind::Route(t, v, r) => intent!(ObjectRef::Route(VpcChildRef::new(t, v, r)), Route),
        KeyKind::Acl(t, v, l) => intent!(ObjectRef::Acl(VpcChildRef::new(t, v, l)), Acl),
        KeyKind::Lb(t, v, l) => {
            intent!(
                ObjectRef::LoadBalancer(VpcChildRef::new(t, v, l)),
                LoadBalancer
            )
        }
        KeyKind::Dc(t, v, d) => {
            intent!(
                ObjectRef::DirectConnect(VpcChildRef::new(t, v, d)),
                DirectConnect
            )
        }
        KeyKind::Placement(t, v) => intent!(ObjectRef::Placement(VpcRef::new(t, v)), Placement),
        KeyKind::Drained(n) => ViewEvent::Intent(if put {
            IntentEvent::Put(ObjectRef::Drained(n), Object::Drained)
        } else {
            IntentEvent::Delete(ObjectRef::Drained(n))
        }),
        KeyKind::VniAlloc(_) | KeyKind::VpcIdAlloc(..) => return Ok(None),
        KeyKind::Heartbeat(node) => ViewEvent::Heartbeat {
            node,
            alive: put && ev.kv.lease != 0,
        },
        KeyKind::IntentSeq => ViewEvent::IntentSeq(if put { ev.kv.mod_revision } else { 0 }),
        KeyKind::Leader => ViewEvent::Leader(put.then(|| {
            (
                String::from_utf8_lossy(&ev.kv.value).into_owned(),
                ev.kv.mod_revision,
            )
        })),
        KeyKind::Replica(name) => ViewEvent::Replica { name, live: put },
        KeyKind::Status(node) => ViewEvent::Status {
            node,
            status: if put { Some(decode(&ev.kv)?) } else { None },
        },
    }))
}

impl ClusterView {
    /// Applies one event of a full load: as [`ClusterView::apply`], without working out which
    /// nodes it touches (a load recompiles every node; asking per object cost about as much as
    /// decoding it, at 300,000 objects).
    pub fn load(&mut self, ev: ViewEvent) {
        match ev {
            ViewEvent::Intent(e) => {
                self.alloc.follow(&self.intent, &e);
                self.intent
                    .apply(e)
                    .expect("decode_event pairs each reference with its kind");
            }
            ViewEvent::Status {
                node,
                status: Some(status),
            } => {
                if !status.observed_vnis.is_empty() {
                    self.intent
                        .observed_vnis
                        .insert(node.clone(), status.observed_vnis.clone());
                }
                let down = status.lb_down();
                if !down.is_empty() {
                    self.intent.lb_down.insert(node.clone(), down);
                }
                self.nodes.entry(node).or_default().status = Some(status);
            }
            other => {
                self.apply(other)
                    .expect("runtime records carry no object kind");
            }
        }
    }

    /// Applies one decoded event and returns the nodes whose desired state may differ. An
    /// agent's status changes intent only through the bridges it observed.
    pub fn apply(&mut self, ev: ViewEvent) -> std::result::Result<BTreeSet<String>, KindMismatch> {
        match ev {
            ViewEvent::Intent(e) => {
                self.alloc.follow(&self.intent, &e);
                return compile::apply(&mut self.intent, e);
            }
            ViewEvent::Heartbeat { node, alive } => {
                self.nodes.entry(node).or_default().alive = alive
            }
            ViewEvent::IntentSeq(seq) => self.intent_seq = seq,
            ViewEvent::Leader(leader) => self.leader = leader,
            ViewEvent::Replica { name, live: true } => {
                self.replicas.insert(name);
            }
            ViewEvent::Replica { name, live: false } => {
                self.replicas.remove(&name);
            }
            ViewEvent::Status { node, status } => {
                let observed = status
                    .as_ref()
                    .map(|s| s.observed_vnis.clone())
                    .unwrap_or_default();
                let down = status.as_ref().map(|s| s.lb_down()).unwrap_or_default();
                self.nodes.entry(node.clone()).or_default().status = status;
                let mut touched = BTreeSet::new();
                let before = self.intent.observed_vnis.get(&node);
                if !before.map_or(observed.is_empty(), |b| *b == observed) {
                    let r = ObjectRef::Observed(node.clone());
                    let e = IntentEvent::Put(r, Object::Observed(observed));
                    touched.extend(compile::apply(&mut self.intent, e)?);
                }
                // Only a change of what it holds down recompiles its VPCs' gateways: status
                // reports repeat every few seconds.
                let before = self.intent.lb_down.get(&node);
                if !before.map_or(down.is_empty(), |b| *b == down) {
                    let e = IntentEvent::Put(ObjectRef::LbDown(node), Object::LbDown(down));
                    touched.extend(compile::apply(&mut self.intent, e)?);
                }
                return Ok(touched);
            }
        }
        Ok(BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue, WatchEvent};

    /// Decodes and applies one event, as the coordinator does.
    fn apply_event(keys: &Keys, view: &mut ClusterView, ev: &WatchEvent) -> Result<()> {
        if let Some(e) = decode_event(keys, ev)? {
            view.apply(e).unwrap();
        }
        Ok(())
    }

    fn event(kind: EventKind, key: String, value: Vec<u8>) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision: 1,
                mod_revision: 2,
                lease: 0,
            },
        }
    }

    #[test]
    fn an_undecodable_network_or_port_leaves_the_view_as_it_was() {
        let keys = Keys::new("/sf");
        let mut view = ClusterView::default();
        let net = Network {
            ipv6_prefix: None,
            tenant: "t".into(),
            vpc: "v".into(),
            name: "n".into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            vni: 1_000_001,
            gateway: "10.0.1.1".parse().unwrap(),
        };
        let port = PortBinding {
            ipv6: None,
            tenant: "t".into(),
            vpc: "v".into(),
            network: "n".into(),
            name: "p".into(),
            node: "hv1".into(),
            ip: "10.0.1.11".parse().unwrap(),
            mac: None,
            attach: None,
        };
        let (nk, pk) = (keys.network("t", "v", "n"), keys.port("t", "p"));
        let put = |k: &String, v: Vec<u8>| event(EventKind::Put, k.clone(), v);
        apply_event(
            &keys,
            &mut view,
            &put(&nk, serde_json::to_vec(&net).unwrap()),
        )
        .unwrap();
        apply_event(
            &keys,
            &mut view,
            &put(&pk, serde_json::to_vec(&port).unwrap()),
        )
        .unwrap();
        assert!(apply_event(&keys, &mut view, &put(&nk, b"{not json".to_vec())).is_err());
        assert!(apply_event(&keys, &mut view, &put(&pk, b"{not json".to_vec())).is_err());
        let key = sf_core::event::VpcChildRef::new("t", "v", "n");
        assert_eq!(view.intent.networks.get(&key), Some(&net));
        assert_eq!(
            view.intent.ports.len(),
            1,
            "the port survived its bad update"
        );
    }
    /// A node's own keys cannot lift it above its station: a heartbeat written without a lease
    /// does not make the node alive, and an oversized status is refused.
    #[test]
    fn heartbeats_need_a_lease_and_node_values_are_capped() {
        let keys = Keys::new("/sf");
        let hb = |lease: i64| {
            let mut e = event(EventKind::Put, keys.heartbeat("hv1"), b"1".to_vec());
            e.kv.lease = lease;
            decode_event(&keys, &e).unwrap()
        };
        let alive = |ev: Option<ViewEvent>| match ev {
            Some(ViewEvent::Heartbeat { alive, .. }) => alive,
            other => panic!("not a heartbeat: {other:?}"),
        };
        assert!(alive(hb(7)), "a leased heartbeat is alive");
        assert!(!alive(hb(0)), "a heartbeat without a lease never counts");
        let big = event(
            EventKind::Put,
            keys.status("hv1"),
            vec![b' '; NODE_VALUE_MAX + 1],
        );
        assert!(matches!(
            decode_event(&keys, &big),
            Err(crate::StoreError::TooLarge { .. })
        ));
    }

    /// A gateway's status recompiles the gateways of its VPCs only when what its checks
    /// hold down changes (its reports repeat every few seconds with new counters), and a
    /// status that goes (the lease ended) takes its word with it.
    #[test]
    fn only_a_change_of_the_backends_a_gateway_holds_down_recompiles_its_vpcs_gateways() {
        use sf_core::status::{AgentStatus, LbStatus};
        let mut view = ClusterView::default();
        for (i, gw) in ["gw1", "gw2", "gw3"].into_iter().enumerate() {
            let n = Node {
                name: gw.into(),
                role: sf_core::model::NodeRole::Gateway,
                site: "lab".into(),
                asn: 65011 + i as u32,
                loopback: std::net::Ipv4Addr::new(10, 255, 2, 1 + i as u8),
                fabric_ports: Vec::new(),
            };
            view.intent.nodes.insert(gw.into(), n);
        }
        view.intent.placements.insert(
            VpcRef::new("demo", "blue"),
            Placement {
                primary: Some("gw1".into()),
                standby: Some("gw2".into()),
            },
        );
        let status = |down: &[&str], reconciles: u64| {
            let mut s = AgentStatus::default();
            s.failover.serving.insert("demo/blue".into());
            s.counters.insert("reconciles".into(), reconciles);
            let backends = ["a:80", "b:80"]
                .into_iter()
                .map(|b| (b.to_string(), !down.contains(&b)))
                .collect();
            let lb = LbStatus {
                backends,
                ..Default::default()
            };
            s.load_balancers.insert("demo/blue/web".into(), lb);
            Some(s)
        };
        let mut report = |status: Option<AgentStatus>| {
            view.apply(ViewEvent::Status {
                node: "gw1".into(),
                status,
            })
            .unwrap()
        };
        let both: BTreeSet<String> = ["gw1".into(), "gw2".into()].into();
        assert_eq!(report(status(&[], 1)), both, "first word: none down");
        assert!(report(status(&[], 2)).is_empty(), "the same word");
        assert_eq!(report(status(&["b:80"], 2)), both);
        assert!(
            report(status(&["b:80"], 3)).is_empty(),
            "only counters moved"
        );
        assert_eq!(report(None), both, "the report left with the lease");
        assert!(view.intent.lb_down.is_empty());
    }

    /// A load reads no allocation claims (they are most of the keys at scale), yet the view's
    /// index knows every VNI and VPC id, so allocation after a restart skips them.
    #[tokio::test]
    async fn load_skips_allocation_claims_and_indexes_ids() {
        let kv = std::sync::Arc::new(crate::mem::MemStore::new());
        let store = IntentStore::new(kv, Keys::new("/sf"));
        let t = Tenant {
            name: "t".into(),
            description: String::new(),
        };
        store.create_tenant(&t).await.unwrap();
        let v = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "t".into(),
            name: "v".into(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            site: "s1".into(),
            id: 0,
        };
        let (vpc_id, _) = store.create_vpc(&v, 1..=100).await.unwrap();
        let net = Network {
            ipv6_prefix: None,
            tenant: "t".into(),
            vpc: "v".into(),
            name: "n".into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            vni: 0,
            gateway: "10.0.1.1".parse().unwrap(),
        };
        let (vni, _) = store
            .create_network_allocating(&net, 5000..=6000)
            .await
            .unwrap();
        let mut other = Vec::new();
        let (view, _) = store.load_with(|kv| other.push(kv.key)).await.unwrap();
        let alloc = store.keys().alloc_prefix();
        assert!(
            other.iter().all(|k| !k.starts_with(&alloc)),
            "claims were read: {other:?}"
        );
        assert!(view.alloc.vnis().contains(vni));
        assert_eq!(view.alloc.free_vpc_id("s1", &(1..=100)), Some(vpc_id + 1));
        let found = view.alloc.network_by_vni(&view.intent, vni).unwrap();
        assert_eq!(found.name, "n");
    }

    /// One undecodable value must not keep the coordinator from loading the fabric.
    #[tokio::test]
    async fn load_skips_undecodable_values() {
        use crate::KvStore;
        let kv = std::sync::Arc::new(crate::mem::MemStore::new());
        let store = IntentStore::new(kv.clone(), Keys::new("/sf"));
        store
            .create_tenant(&sf_core::model::Tenant {
                name: "t".into(),
                description: String::new(),
            })
            .await
            .unwrap();
        let keys = store.keys().clone();
        kv.put(&keys.status("hv1"), b"{not json".to_vec(), 0)
            .await
            .unwrap();
        kv.put(&keys.tenant("broken"), b"[]".to_vec(), 0)
            .await
            .unwrap();
        let (view, _) = store.load().await.expect("loads despite two bad values");
        assert_eq!(view.intent.tenants.len(), 1);
        assert!(view.intent.tenants.keys().any(|t| t == "t"));
    }
}
