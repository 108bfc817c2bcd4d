//! The coordinator's in-memory index. It loads everything under the etcd root at one
//! revision, then follows a watch from the next revision, applying each batch to the
//! [`ClusterView`], recompiling only the nodes the batch touches and publishing each node's
//! new [`NodeDesired`] on a per-node `watch` channel that Sync streams subscribe to. The REST
//! API's metadata (`{root}/rest/`, keys sf-store hands over raw) is kept decoded beside the
//! view from the same load and watch ([`Fabric::rest_db`]), so a REST request reads it from
//! memory and waiting for a revision covers it too. Nothing here is authoritative: a restart
//! rebuilds the same state from etcd.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sf_core::compile::{compile_node_indexed, PortsByNode};
use sf_core::desired::NodeDesired;
use sf_store::intent::{decode_event, ClusterView, IntentStore, ViewEvent};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::rest::meta::{Db as RestDb, RestKeys};

/// What a Sync stream sees for one node: `None` while the node is not in the inventory.
pub type DesiredRx = watch::Receiver<Option<Arc<NodeDesired>>>;

struct State {
    view: ClusterView,
    /// The REST metadata at the same revision as `view`.
    rest: Arc<RestDb>,
    revision: i64,
    desired: BTreeMap<String, Arc<NodeDesired>>,
}

/// Shared coordinator state.
pub struct Fabric {
    store: IntentStore,
    rest_keys: RestKeys,
    /// Whether the index was loaded (its revision may be 0 on an empty store).
    loaded: watch::Sender<bool>,
    state: RwLock<State>,
    channels: Mutex<HashMap<String, watch::Sender<Option<Arc<NodeDesired>>>>>,
    revision_tx: watch::Sender<i64>,
    /// Wakes the placement controller after any change.
    placement_kick: tokio::sync::Notify,
    /// Which VPCs' placement the changes since the controller's last pass may have moved.
    placement_dirty: Mutex<PlacementDirty>,
    /// Serializes validate-then-write sequences of the API, so validation sees every earlier
    /// write of this replica; the intent-version fence (see [`Fabric::write_guard`]) covers
    /// writes through other replicas.
    write_lock: tokio::sync::Mutex<()>,
    /// This replica's name in the election.
    name: std::sync::OnceLock<String>,
    /// `Some(revision it was elected at)` while this replica leads.
    leadership: watch::Sender<Option<i64>>,
    /// When this coordinator observed each recent intent revision (ms since the epoch): sent
    /// with Snapshots and Deltas, the origin of intent-to-dataplane latency.
    stamps: Mutex<BTreeMap<u64, u64>>,
    /// When the watch last confirmed that the index is current: the load, or a progress
    /// notification (etcd answers a progress request only once the watcher has caught up).
    confirmed: Mutex<Option<Instant>>,
    /// [`Fabric::is_current`] as a channel, kept by one task ([`Fabric::run`]), so Sync
    /// streams learn that the replica fell behind without each polling the clock.
    current: watch::Sender<bool>,
    /// What each connected agent last acknowledged on its Sync stream. Agents write the
    /// applied revision to etcd only every few seconds (see `sf_agent::lease`), so fleet
    /// status takes the fresher of the two.
    acks: Mutex<HashMap<String, AckState>>,
    pub metrics: sf_metrics::CoordinatorMetrics,
    pub registry: Arc<sf_metrics::MetricsRegistry>,
}

/// An open validate-then-write section (see [`Fabric::write_guard`]).
pub struct WriteGuard<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    store: &'a IntentStore,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.store.set_fence(None);
    }
}

/// The latest acknowledgement of a node on this coordinator's stream.
#[derive(Debug, Clone, Default)]
pub struct AckState {
    pub applied_revision: u64,
    pub applied_digest: String,
    pub errors: Vec<String>,
    /// When the last error-free ack arrived (ms since the epoch): with the revision's stamp,
    /// the intent-to-ack latency the web console plots per role.
    pub acked_at_ms: u64,
}

/// How long the index may go without its watch confirming it current before this replica
/// stops serving agents and reports unhealthy (progress is confirmed every second).
pub const INDEX_LAG_MAX: Duration = Duration::from_secs(5);

/// Revisions whose stamps are kept (older ones are long applied or superseded).
const STAMPS_KEPT: usize = 4096;

impl Fabric {
    pub fn new(store: IntentStore) -> Arc<Self> {
        let mut registry = sf_metrics::MetricsRegistry::default();
        let metrics = sf_metrics::CoordinatorMetrics::register(&mut registry);
        Arc::new(Fabric {
            stamps: Mutex::new(BTreeMap::new()),
            acks: Mutex::new(HashMap::new()),
            confirmed: Mutex::new(None),
            current: watch::channel(false).0,
            metrics,
            registry: Arc::new(registry),
            rest_keys: RestKeys::new(store.keys().root()),
            loaded: watch::channel(false).0,
            store,
            state: RwLock::new(State {
                view: ClusterView::default(),
                rest: Arc::default(),
                revision: 0,
                desired: BTreeMap::new(),
            }),
            channels: Mutex::new(HashMap::new()),
            revision_tx: watch::channel(0).0,
            placement_kick: tokio::sync::Notify::new(),
            placement_dirty: Mutex::new(PlacementDirty::All),
            write_lock: tokio::sync::Mutex::new(()),
            leadership: watch::channel(None).0,
            name: std::sync::OnceLock::new(),
        })
    }

    /// Starts a validate-then-write section: serialized with this replica's other sections,
    /// and fenced on the intent version validation is about to read, so a write fails with
    /// [`sf_store::intent::WriteError::Stale`] (instead of committing on stale validation) if
    /// intent changed through another replica in between.
    pub async fn write_guard(&self) -> WriteGuard<'_> {
        let lock = self.write_lock.lock().await;
        let seq = self.with_view(|v, _| v.intent_seq);
        self.store.set_fence(Some(seq));
        WriteGuard {
            _lock: lock,
            store: &self.store,
        }
    }

    /// Names this replica (once, by the election).
    pub fn set_replica_name(&self, name: &str) {
        let _ = self.name.set(name.to_string());
    }

    pub fn replica_name(&self) -> &str {
        self.name.get().map(String::as_str).unwrap_or("")
    }

    /// The revision this replica was elected leader at, while it leads.
    pub fn leader_revision(&self) -> Option<i64> {
        *self.leadership.borrow()
    }

    /// Called by the election: takes or gives up the leader's work (placement).
    pub fn set_leadership(&self, elected_at: Option<i64>) {
        self.leadership.send_replace(elected_at);
        self.metrics.is_leader.set(elected_at.is_some() as i64);
        if elected_at.is_some() {
            self.metrics.leader_elections.inc();
            self.kick_placement(PlacementDirty::All);
        }
    }

    pub fn store(&self) -> &IntentStore {
        &self.store
    }

    /// Records an agent's ack: a clean one moves its applied revision, one with errors only
    /// reports them (the agent still runs its previous revision's state where it could not
    /// apply the new one).
    pub fn record_ack(&self, node: &str, revision: u64, digest: &str, errors: &[String]) {
        let mut acks = self.acks.lock().unwrap();
        let a = acks.entry(node.to_string()).or_default();
        if errors.is_empty() {
            if revision >= a.applied_revision {
                a.applied_revision = revision;
                a.applied_digest = digest.to_string();
                a.acked_at_ms = sf_metrics::now_ms();
            }
            a.errors.clear();
        } else {
            a.errors = errors.to_vec();
        }
    }

    /// Forgets a node's acks when its stream ends (its etcd status is authoritative again).
    pub fn forget_acks(&self, node: &str) {
        self.acks.lock().unwrap().remove(node);
    }

    pub fn ack_of(&self, node: &str) -> Option<AckState> {
        self.acks.lock().unwrap().get(node).cloned()
    }

    /// Records when this coordinator observed `revision`.
    fn stamp(&self, revision: i64) {
        let mut st = self.stamps.lock().unwrap();
        st.entry(revision as u64).or_insert_with(sf_metrics::now_ms);
        while st.len() > STAMPS_KEPT {
            st.pop_first();
        }
        self.metrics.intent_revision.set(revision);
    }

    /// When `revision` was observed: its stamp, or the newest older one (a node's desired
    /// state carries the revision of the change that last touched it), or 0 if unknown.
    pub fn stamp_of(&self, revision: u64) -> u64 {
        self.stamps
            .lock()
            .unwrap()
            .range(..=revision)
            .next_back()
            .map(|(_, t)| *t)
            .unwrap_or(0)
    }

    /// A consistent copy of the current view and its revision.
    pub fn view(&self) -> (ClusterView, i64) {
        let s = self.state.read().unwrap();
        (s.view.clone(), s.revision)
    }

    /// Reads the view under the lock without copying it.
    pub fn with_view<T>(&self, f: impl FnOnce(&ClusterView, i64) -> T) -> T {
        let s = self.state.read().unwrap();
        f(&s.view, s.revision)
    }

    /// The REST metadata as of the index's revision (empty before the first load; see
    /// [`Fabric::wait_loaded`]).
    pub fn rest_db(&self) -> Arc<RestDb> {
        self.state.read().unwrap().rest.clone()
    }

    /// Waits (at most 10 s) until the index has been loaded; returns whether it has.
    pub async fn wait_loaded(&self) -> bool {
        let mut rx = self.loaded.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn desired(&self, node: &str) -> Option<Arc<NodeDesired>> {
        self.state.read().unwrap().desired.get(node).cloned()
    }

    /// Subscribes to a node's desired state.
    pub fn subscribe(&self, node: &str) -> DesiredRx {
        let mut ch = self.channels.lock().unwrap();
        ch.entry(node.to_string())
            .or_insert_with(|| watch::channel(self.desired(node)).0)
            .subscribe()
    }

    /// How long ago the watch last confirmed the index current (`None` before the load).
    pub fn index_lag(&self) -> Option<Duration> {
        self.confirmed.lock().unwrap().map(|t| t.elapsed())
    }

    /// Whether the index is loaded and its watch confirmed it current within
    /// [`INDEX_LAG_MAX`]: only then does this replica serve agents (and `/healthz` say so). A
    /// replica whose watch lags or keeps failing would otherwise hand an agent an older state
    /// than the one it applied.
    pub fn is_current(&self) -> bool {
        self.index_lag().is_some_and(|lag| lag <= INDEX_LAG_MAX)
    }

    /// Follows [`Fabric::is_current`]: true while the index is confirmed current.
    pub fn current(&self) -> watch::Receiver<bool> {
        self.current.subscribe()
    }

    /// Keeps the `current` channel equal to [`Fabric::is_current`]: confirmations set it at
    /// once; falling behind is noticed here, within a second of the limit.
    async fn watch_currency(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = self.is_current();
            self.current
                .send_if_modified(|c| std::mem::replace(c, now) != now);
        }
    }

    /// A progress notification: the watch is alive and caught up. It confirms currency only;
    /// it does not move the index's revision, because etcd before 3.4.24 / 3.5.8 (#15220)
    /// may answer a progress request with the store's revision while that revision's events
    /// are still on their way (seen right after the watch starts): a write's caller waiting
    /// for its revision was then answered before the index held the write. Every write under
    /// the root arrives as an event, which moves the revision in [`Fabric::apply_batch`].
    fn confirm(&self, _revision: i64) {
        *self.confirmed.lock().unwrap() = Some(Instant::now());
        self.current
            .send_if_modified(|c| !std::mem::replace(c, true));
    }

    /// The store revision the index reflects (0 before the first load).
    pub fn revision(&self) -> i64 {
        *self.revision_tx.borrow()
    }

    /// Waits until the index reflects `revision` (read-your-writes for the API).
    pub async fn wait_for_revision(&self, revision: i64) {
        self.wait_for_revision_within(revision, Duration::from_secs(10))
            .await
    }

    /// Waits at most `limit` until the index reflects `revision`.
    pub async fn wait_for_revision_within(&self, revision: i64, limit: Duration) {
        let mut rx = self.revision_tx.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await;
    }

    fn publish(&self, node: &str, desired: Option<Arc<NodeDesired>>) {
        let ch = self.channels.lock().unwrap();
        if let Some(tx) = ch.get(node) {
            tx.send_replace(desired);
        }
    }

    /// Replaces the whole view (start-up, or after a watch had to be re-established) and
    /// recompiles every node. Nodes whose digest did not change keep their old revision.
    fn reset(&self, view: ClusterView, rest: RestDb, revision: i64) {
        self.stamp(revision);
        let mut changed = Vec::new();
        {
            let mut s = self.state.write().unwrap();
            let mut desired = BTreeMap::new();
            let ports = PortsByNode::new(&view.intent);
            for name in view.intent.nodes.keys() {
                let new = sealed(
                    compile_node_indexed(&view.intent, &ports, name, revision as u64)
                        .expect("node exists"),
                );
                let keep = s
                    .desired
                    .get(name)
                    .filter(|old| old.digest() == new.digest())
                    .cloned();
                let d = keep.unwrap_or_else(|| {
                    changed.push(name.clone());
                    Arc::new(new)
                });
                desired.insert(name.clone(), d);
            }
            for gone in s.desired.keys().filter(|n| !desired.contains_key(*n)) {
                changed.push(gone.clone());
            }
            s.view = view;
            s.rest = Arc::new(rest);
            s.revision = revision;
            s.desired = desired;
        }
        for node in changed {
            self.publish(&node, self.desired(&node));
        }
        self.revision_tx.send_replace(revision);
        *self.confirmed.lock().unwrap() = Some(Instant::now());
        self.current
            .send_if_modified(|c| !std::mem::replace(c, true));
        self.loaded.send_replace(true);
        self.kick_placement(PlacementDirty::All);
    }

    /// Applies one watch batch; returns the nodes whose desired state changed.
    fn apply_batch(&self, batch: &sf_store::WatchBatch) -> BTreeSet<String> {
        self.stamp(batch.revision);
        let mut touched = BTreeSet::new();
        let mut republish = BTreeSet::new();
        let mut placement = PlacementDirty::Clean;
        {
            let mut s = self.state.write().unwrap();
            let keys = self.store.keys();
            for ev in &batch.events {
                // Decoded once; an undecodable value leaves the view as it was.
                let decoded = match decode_event(keys, ev) {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        // Not the view's: REST metadata (or an allocation claim).
                        if ev.kv.key.starts_with(self.rest_keys.prefix()) {
                            Arc::make_mut(&mut s.rest).apply(&self.rest_keys, ev);
                        }
                        continue;
                    }
                    Err(e) => {
                        warn!(key = %ev.kv.key, error = %e, "ignoring undecodable value");
                        continue;
                    }
                };
                placement.add(&decoded, &s.view.intent);
                if failover_report_changed(&s.view, &decoded) {
                    // What a gateway says it forwards moves any VPC it names.
                    placement.merge(PlacementDirty::All);
                }
                let new_observations = changed_observations(&s.view, &decoded);
                match s.view.apply(decoded) {
                    Ok(nodes) => touched.extend(nodes),
                    Err(e) => warn!(key = %ev.kv.key, error = %e, "ignoring event"),
                }
                if let Some(node) = new_observations {
                    log_refused_observations(&s.view.intent, &node);
                }
            }
            s.revision = batch.revision;
            let state = &mut *s;
            let intent = &state.view.intent;
            // One port index for the whole batch when it touches many nodes (an ACL on a tier
            // carried by thousands of hypervisors); a single node just filters its own.
            // Most batches (heartbeats, status reports) touch no node at all: no index then.
            let ports = match touched.len() {
                0 => PortsByNode::default(),
                1 => PortsByNode::for_node(intent, touched.iter().next().expect("one node")),
                _ => PortsByNode::new(intent),
            };
            for node in &touched {
                let new = compile_node_indexed(intent, &ports, node, batch.revision as u64);
                let old = state.desired.get(node);
                // Digests are over the objects alone, so comparing objects is the same test
                // without hashing both sides on every change.
                let same = match (&new, old) {
                    (Some(n), Some(o)) => n.objects == o.objects,
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    continue;
                }
                match new {
                    Some(n) => {
                        state.desired.insert(node.clone(), Arc::new(sealed(n)));
                    }
                    None => {
                        state.desired.remove(node);
                    }
                }
                republish.insert(node.clone());
            }
        }
        for node in &republish {
            self.publish(node, self.desired(node));
        }
        self.metrics
            .desired_publishes
            .inc_by(republish.len() as u64);
        self.revision_tx.send_replace(batch.revision);
        // Placement is recomputed only when its inputs changed: for the VPCs changed, or over
        // every VPC when the gateways or their liveness did.
        if !matches!(placement, PlacementDirty::Clean) {
            self.kick_placement(placement);
        }
        republish
    }

    /// Marks `dirty` for the placement controller and wakes it.
    fn kick_placement(&self, dirty: PlacementDirty) {
        self.placement_dirty.lock().unwrap().merge(dirty);
        self.placement_kick.notify_one();
    }

    /// The placement controller: keeps `placement/…` in etcd following what the gateways
    /// report of the fabric, sticky otherwise (see [`sf_core::placement`]). Runs on every relevant change, only on the elected
    /// leader (its writes are fenced on the leadership); writes only differences.
    pub async fn run_placement(self: Arc<Self>) {
        loop {
            self.placement_kick.notified().await;
            // A follower drops what it was told: election marks every VPC dirty.
            let dirty = std::mem::take(&mut *self.placement_dirty.lock().unwrap());
            let Some(elected_at) = self.leader_revision() else {
                continue;
            };
            let changes = self.with_view(|view, _| placement_changes(view, &dirty));
            if changes.is_empty() {
                continue;
            }
            info!(vpcs = changes.len(), "placement changed");
            for (k, p) in &changes {
                debug!(tenant = %k.tenant, vpc = %k.vpc, placement = ?p, "placement changed");
            }
            match self
                .store
                .write_placements(&changes, Some(elected_at))
                .await
            {
                Ok(rev) => self.wait_for_revision(rev).await,
                Err(e) if self.leader_revision() != Some(elected_at) => {
                    info!(error = %e, "placement write dropped: leadership lost");
                }
                Err(e) => {
                    warn!(error = %e, "writing placement failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.kick_placement(dirty);
                }
            }
        }
    }

    /// Loads from etcd and follows the watch forever, re-loading after any watch failure.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().watch_currency());
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.clone().follow().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, "intent watch failed; reloading from etcd");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn follow(self: Arc<Self>) -> Result<(), sf_store::StoreError> {
        let mut rest = Vec::new();
        let prefix = self.rest_keys.prefix().to_string();
        let (view, revision) = self
            .store
            .load_with(|kv| {
                if kv.key.starts_with(&prefix) {
                    rest.push(kv)
                }
            })
            .await?;
        info!(
            revision,
            nodes = view.intent.nodes.len(),
            networks = view.intent.networks.len(),
            "intent loaded"
        );
        self.reset(view, RestDb::from_kvs(&self.rest_keys, rest), revision);
        let prefix = format!("{}/", self.store.keys().root());
        let mut watch = self.store.kv().watch(&prefix, revision + 1).await?;
        while let Some(batch) = watch.next().await {
            let batch = batch?;
            if batch.is_progress() {
                self.confirm(batch.revision);
                continue;
            }
            let span = info_span!("apply", revision = batch.revision);
            async {
                let changed = self.apply_batch(&batch);
                if !changed.is_empty() {
                    info!(nodes = ?changed, "desired state changed");
                }
            }
            .instrument(span)
            .await;
        }
        Err(sf_store::StoreError::WatchEnded("stream closed".into()))
    }
}

/// `d` with its digest computed once, here, where it is compiled: every Sync send (snapshot,
/// delta, resume check) and every fleet status call asks for it, and without the stored value
/// each asked re-encodes and hashes the node's whole state (5,000 times per status call at
/// 5,000 nodes). The digest is of this build's encoding, which is what the coordinator sends.
fn sealed(mut d: NodeDesired) -> NodeDesired {
    d.wire_digest = Some(sf_core::desired::digest_objects(&d.objects));
    d
}

/// What the placement controller must recompute. A VPC change moves only that VPC's
/// placement; a gateway's inventory, drain mark, liveness or fabric report may move any VPC. Recomputing every
/// VPC on each VPC create cost ~25 ms at 100,000 VPCs, under the index's read lock, which the
/// next write's watch batch then waited for.
#[derive(Debug, Default)]
enum PlacementDirty {
    #[default]
    Clean,
    Vpcs(BTreeSet<sf_core::event::VpcRef>),
    All,
}

impl PlacementDirty {
    fn merge(&mut self, other: PlacementDirty) {
        match (&mut *self, other) {
            (_, PlacementDirty::Clean) | (PlacementDirty::All, _) => {}
            (PlacementDirty::Vpcs(a), PlacementDirty::Vpcs(b)) => a.extend(b),
            (me, other) => *me = other,
        }
    }

    /// Marks what `ev` may move (`intent`: before the event).
    fn add(&mut self, ev: &ViewEvent, intent: &sf_core::Intent) {
        use sf_core::event::ObjectRef;
        if !ev.may_move_placement() {
            return;
        }
        let vpc = match ev {
            ViewEvent::Intent(e) => match e.object_ref() {
                ObjectRef::Vpc(k) | ObjectRef::Placement(k) => Some(k.clone()),
                _ => None,
            },
            // Only a gateway's liveness counts (hypervisors' heartbeats come by thousands when a
            // fleet reconnects); a node joining the inventory as a gateway is a Node event.
            ViewEvent::Heartbeat { node, .. } => {
                let gateway = intent
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.role == sf_core::NodeRole::Gateway);
                if !gateway {
                    return;
                }
                None
            }
            _ => None,
        };
        self.merge(match vpc {
            Some(k) => PlacementDirty::Vpcs(BTreeSet::from([k])),
            None => PlacementDirty::All,
        });
    }
}

/// The placement records to write so that `placement/…` equals sticky placement (see
/// [`sf_core::placement`]) over the live, undrained gateways and their reports, for the VPCs
/// `dirty` names (`None` deletes a record).
fn placement_changes(
    view: &ClusterView,
    dirty: &PlacementDirty,
) -> Vec<(sf_core::event::VpcRef, Option<sf_core::model::Placement>)> {
    let intent = &view.intent;
    let alive: BTreeSet<String> = view
        .nodes
        .iter()
        .filter(|(_, l)| l.alive)
        .map(|(n, _)| n.clone())
        .collect();
    let by_site = sf_core::placement::candidates(intent, &alive);
    let reports = fabric_reports(view);
    let empty = BTreeSet::new();
    let mut changes = Vec::new();
    let mut check = |k: &sf_core::event::VpcRef| {
        let current = intent.placements.get(k);
        let Some(v) = intent.vpcs.get(k) else {
            if current.is_some() {
                changes.push((k.clone(), None));
            }
            return;
        };
        let c = by_site.get(v.site.as_str()).unwrap_or(&empty);
        // No gateway and no record: nothing to compute or write (the common case while a
        // site has no gateways).
        if c.is_empty() && current.is_none() {
            return;
        }
        let p = sf_core::placement::place_sticky(
            k,
            c,
            current,
            reports.serving.get(k),
            reports.seen_elsewhere.contains(k),
            &intent.drained,
        );
        let unplaced = p.primary.is_none() && p.standby.is_none();
        // A VPC that never had a gateway needs no "none" record.
        if current.is_none() && unplaced {
            return;
        }
        if current != Some(&p) {
            changes.push((k.clone(), Some(p)));
        }
    };
    match dirty {
        PlacementDirty::Clean => {}
        PlacementDirty::Vpcs(ks) => ks.iter().for_each(&mut check),
        PlacementDirty::All => {
            intent.vpcs.keys().for_each(&mut check);
            // Records of VPCs that are gone.
            for k in intent.placements.keys() {
                if !intent.vpcs.contains_key(k) {
                    check(k);
                }
            }
        }
    }
    changes
}

/// The node whose status report changes its observed VNIs, if `ev` is one.
fn changed_observations(view: &ClusterView, ev: &ViewEvent) -> Option<String> {
    let ViewEvent::Status { node, status } = ev else {
        return None;
    };
    let now = status.as_ref().map(|s| &s.observed_vnis);
    let before = view.intent.observed_vnis.get(node);
    let same = match (before, now) {
        (Some(b), Some(n)) => b == n,
        (None, n) => n.is_none_or(|n| n.is_empty()),
        (Some(b), None) => b.is_empty(),
    };
    (!same).then(|| node.clone())
}

/// Says which of a node's reported bridges do not widen its scope, and why (once per change
/// of its report: reports repeat every few seconds).
fn log_refused_observations(intent: &sf_core::Intent, node: &str) {
    const SHOWN: usize = 10;
    let refused: Vec<(u32, sf_core::compile::Refusal)> =
        sf_core::compile::observations(intent, node)
            .filter_map(|(vni, judged)| judged.err().map(|why| (vni, why)))
            .collect();
    for (vni, why) in refused.iter().take(SHOWN) {
        warn!(node, vni, reason = %why, "observed bridge refused: not in this node's scope");
    }
    if refused.len() > SHOWN {
        warn!(
            node,
            refused = refused.len(),
            "observed bridges refused (the first {SHOWN} shown)"
        );
    }
}

/// Whether a status report changes what a gateway says of the fabric (placement follows it).
/// No report and an empty one say the same (nothing served, nothing seen elsewhere): without
/// that, every hypervisor's first status, and every one re-written after its lease was
/// re-granted, recomputed placement over every node and VPC (found with `perf` at 5,000
/// agents: `placement::candidates` and `placement_changes` were the coordinator's top
/// functions, under the index's read lock that the next watch batch waits for).
fn failover_report_changed(view: &ClusterView, ev: &ViewEvent) -> bool {
    let ViewEvent::Status { node, status } = ev else {
        return false;
    };
    let none = sf_core::status::FailoverStatus::default();
    let old = view
        .nodes
        .get(node)
        .and_then(|n| n.status.as_ref())
        .map_or(&none, |s| &s.failover);
    old != status.as_ref().map_or(&none, |s| &s.failover)
}

/// The gateways' reports of the fabric, per VPC, from the live statuses in the view.
fn fabric_reports(view: &ClusterView) -> sf_core::placement::FabricReports {
    let mut r = sf_core::placement::FabricReports::default();
    let key = |k: &str| {
        k.split_once('/')
            .map(|(t, v)| sf_core::event::VpcRef::new(t, v))
    };
    for (node, live) in &view.nodes {
        let Some(st) = &live.status else { continue };
        for k in st.failover.serving.iter().filter_map(|k| key(k)) {
            r.serving.entry(k).or_default().insert(node.clone());
        }
        r.seen_elsewhere
            .extend(st.failover.seen_elsewhere.iter().filter_map(|k| key(k)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use sf_store::mem::MemStore;
    use sf_store::{Compare, KeyValue, KvStore, Op, TxnOutcome, WatchBatch, WatchStream};

    /// etcd before 3.4.24 (#15220): a progress notification carrying revision R may arrive
    /// before R's events. This store's watch sends one ahead of every event batch, and the
    /// events 300 ms later.
    struct EarlyProgress(MemStore);

    #[async_trait::async_trait]
    impl KvStore for EarlyProgress {
        async fn get(&self, key: &str) -> sf_store::Result<Option<KeyValue>> {
            self.0.get(key).await
        }
        async fn list(&self, prefix: &str) -> sf_store::Result<(Vec<KeyValue>, i64)> {
            self.0.list(prefix).await
        }
        async fn txn(&self, c: Vec<Compare>, o: Vec<Op>) -> sf_store::Result<TxnOutcome> {
            self.0.txn(c, o).await
        }
        async fn watch(&self, prefix: &str, start: i64) -> sf_store::Result<WatchStream> {
            let inner = self.0.watch(prefix, start).await?;
            Ok(Box::pin(inner.flat_map(|item| {
                let early = match &item {
                    Ok(b) if !b.is_progress() => vec![Ok(WatchBatch {
                        revision: b.revision,
                        events: vec![],
                    })],
                    _ => vec![],
                };
                futures::stream::iter(early).chain(futures::stream::once(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    item
                }))
            })))
        }
        async fn lease_grant(&self, ttl: i64) -> sf_store::Result<i64> {
            self.0.lease_grant(ttl).await
        }
        async fn lease_keep_alive(&self, lease: i64) -> sf_store::Result<i64> {
            self.0.lease_keep_alive(lease).await
        }
        async fn lease_revoke(&self, lease: i64) -> sf_store::Result<()> {
            self.0.lease_revoke(lease).await
        }
    }

    /// Waiting for a write's revision means the index holds the write, even when the store
    /// confirms the revision before delivering its events.
    fn hv1() -> sf_core::model::Node {
        sf_core::model::Node {
            name: "hv1".into(),
            role: sf_core::NodeRole::Hypervisor,
            site: String::new(),
            asn: 65001,
            loopback: "10.255.1.1".parse().unwrap(),
            fabric_ports: vec![],
        }
    }

    #[tokio::test]
    async fn a_progress_notification_ahead_of_its_events_does_not_answer_a_wait() {
        let kv = Arc::new(EarlyProgress(MemStore::new()));
        let store = IntentStore::new(kv, sf_store::keys::Keys::new("/t"));
        let fabric = Fabric::new(store.clone());
        tokio::spawn(fabric.clone().run());
        assert!(fabric.wait_loaded().await);
        let node = hv1();
        let rev = store.create_node(&node).await.unwrap();
        fabric.wait_for_revision(rev).await;
        assert!(
            fabric.with_view(|v, _| v.intent.nodes.contains_key("hv1")),
            "the wait for revision {rev} returned before the index held the write"
        );
    }

    /// A node's first status report, or one that is gone, with no failover report in it
    /// changes nothing placement reads; a gateway's report that names a VPC does.
    #[test]
    fn only_a_real_failover_report_moves_placement() {
        let view = ClusterView::default();
        let status = |failover| ViewEvent::Status {
            node: "hv1".into(),
            status: Some(sf_core::status::AgentStatus {
                node: "hv1".into(),
                failover,
                ..Default::default()
            }),
        };
        assert!(!failover_report_changed(&view, &status(Default::default())));
        let gone = ViewEvent::Status {
            node: "hv1".into(),
            status: None,
        };
        assert!(!failover_report_changed(&view, &gone));
        let serving = sf_core::status::FailoverStatus {
            serving: ["t/v".to_string()].into(),
            ..Default::default()
        };
        assert!(failover_report_changed(&view, &status(serving)));
    }

    /// A compiled state carries its digest, so sends and status calls do not recompute it;
    /// it is the digest of its objects, as the agent will verify it.
    #[tokio::test]
    async fn compiled_states_carry_their_digest() {
        let store = IntentStore::new(Arc::new(MemStore::new()), sf_store::keys::Keys::new("/t"));
        let node = hv1();
        store.create_node(&node).await.unwrap();
        let fabric = Fabric::new(store.clone());
        tokio::spawn(fabric.clone().run());
        assert!(fabric.wait_loaded().await);
        let d = fabric.desired("hv1").expect("compiled at load");
        let want = sf_core::desired::digest_objects(&d.objects);
        assert_eq!(d.wire_digest.as_deref(), Some(want.as_str()));
        // And after a change applied from the watch.
        let mut moved = node.clone();
        moved.asn = 65002;
        store.delete_node("hv1").await.unwrap();
        let rev = store.create_node(&moved).await.unwrap();
        fabric.wait_for_revision(rev).await;
        let d = fabric.desired("hv1").expect("recompiled");
        let want = sf_core::desired::digest_objects(&d.objects);
        assert_eq!(d.wire_digest.as_deref(), Some(want.as_str()));
    }
}
