//! The southbound AgentSync service. Each agent opens one bidirectional stream, proves its
//! identity with its client certificate and says hello with the revision and digest it last
//! applied, the highest index revision it has seen and the desired-state schema it speaks.
//! If that digest equals its current desired state the agent gets a `Resume` (nothing
//! resent: a reconnect or coordinator restart causes no snapshot storm); otherwise one
//! `Snapshot`. After that every change of the node's desired state is sent as a `Delta`
//! against what this stream last sent. Acks carry the revision the agent applied.
//!
//! # Never stale, never partial
//!
//! - Every message carries the index revision this replica had reached. A replica answers a
//!   hello only once its index has reached the agent's revision, and serves only while its
//!   etcd watch confirms it current ([`Fabric::is_current`]); when it falls behind it ends its
//!   streams, so agents move to a replica that is current. Agents refuse anything older than
//!   what they accepted (`sf_agent::sync`).
//! - Snapshots and deltas of any size travel in parts of about [`PART_BYTES`] (the agent
//!   applies nothing until the last part), under gRPC's 4 MiB message limit.
//! - An agent whose schema is older than this coordinator's is refused (FAILED_PRECONDITION),
//!   not fed objects whose new fields it would drop.
//! - One live stream per node on a replica: a second one waits up to 2 s for the first to
//!   end (an agent's own immediate reconnect), then is refused (ALREADY_EXISTS). HTTP/2 keep-alive (`--agent-keepalive-secs`, 15 s, plus
//!   5 s for the answer) ends a dead peer's stream within about 20 s.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use prost::Message;
use sf_core::desired::{DesiredDelta, NodeDesired, SCHEMA_VERSION};
use sf_proto::v1 as pb;
use sf_proto::v1::agent_sync_server::AgentSync;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::fabric::Fabric;
use crate::identity::peer_node;

/// Target size of one message part (an entry is never split; one larger than this travels
/// alone, and agents accept messages up to 64 MiB).
pub const PART_BYTES: usize = 1 << 20;

/// How long a hello waits for this replica's index to reach the agent's index revision.
const CATCH_UP: Duration = Duration::from_secs(5);

/// How long a hello waits for the node's previous stream on this replica to end.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

pub struct Sync {
    pub fabric: Arc<Fabric>,
    /// Ignore agents' applied digests and always start a stream with a full snapshot
    /// (benchmarks compare it with resume; an operator's last resort against a digest bug).
    pub always_snapshot: bool,
    /// Nodes with an open stream on this replica.
    live: Arc<Mutex<HashSet<String>>>,
}

impl Sync {
    pub fn new(fabric: Arc<Fabric>, always_snapshot: bool) -> Self {
        Sync {
            fabric,
            always_snapshot,
            live: Arc::default(),
        }
    }

    /// Refuses a hello this replica must not serve: another node's scope, an older schema,
    /// a second stream, or an index behind etcd or behind what the agent has already seen.
    async fn admit(&self, identity: &str, hello: &pb::Hello) -> Result<LiveStream, Status> {
        if hello.node != identity {
            warn!(certificate = %identity, asked = %hello.node, "node asked for another node's scope");
            return Err(Status::permission_denied(format!(
                "certificate identifies node {identity:?}; it may not sync node {:?}",
                hello.node
            )));
        }
        if hello.schema_version < SCHEMA_VERSION {
            warn!(node = %identity, agent = hello.schema_version, ours = SCHEMA_VERSION, version = %hello.agent_version, "refusing an agent with an older desired-state schema");
            return Err(Status::failed_precondition(format!(
                "agent {} speaks desired-state schema {}; this coordinator sends schema {SCHEMA_VERSION}: upgrade the agent",
                hello.agent_version, hello.schema_version
            )));
        }
        self.current_for(hello.index_revision).await?;
        self.register_live(identity).await
    }

    /// Registers the node's stream; if one is still live, waits up to [`RELEASE_WAIT`] for it
    /// to end before refusing. An agent that ends its own session (a lease re-grant, a digest
    /// mismatch) reconnects at once on a new connection, and its Hello can arrive before this
    /// replica has seen the old stream close: at 5,000 agents 284 such Hellos were refused in
    /// one run, and each refusal sent its agent into a backoff of up to 10 s.
    async fn register_live(&self, node: &str) -> Result<LiveStream, Status> {
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        loop {
            if let Some(stream) = LiveStream::register(&self.live, node) {
                return Ok(stream);
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(%node, "refusing a second live stream for one node");
                return Err(Status::already_exists(format!(
                    "node {node:?} already has a live Sync stream on this replica"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this replica may answer an agent that has seen `index_revision`.
    async fn current_for(&self, index_revision: u64) -> Result<(), Status> {
        if self.fabric.index_lag().is_none() {
            self.wait_first_load().await;
        }
        if !self.fabric.is_current() {
            return Err(behind(&self.fabric));
        }
        let wanted = i64::try_from(index_revision).unwrap_or(i64::MAX);
        if self.fabric.revision() < wanted {
            self.fabric.wait_for_revision_within(wanted, CATCH_UP).await;
        }
        let have = self.fabric.revision();
        if have < wanted {
            return Err(Status::unavailable(format!(
                "this replica's index is at revision {have}, older than revision {wanted} the agent has seen; try another replica"
            )));
        }
        Ok(())
    }

    /// A replica that is starting (its index not loaded yet) holds a hello up to
    /// [`CATCH_UP`] for the load instead of refusing it. The agent has already paid its TLS
    /// handshake; a refusal costs it another, after a backoff that doubles with each
    /// refusal: a coordinator restarted under 2,000 agents refused every early one that way,
    /// and the fleet's resync took as long as the slowest agents' backoff. A replica that was
    /// loaded and fell behind still refuses at once (its agents move to a current replica).
    async fn wait_first_load(&self) {
        let mut current = self.fabric.current();
        let _ = tokio::time::timeout(CATCH_UP, current.wait_for(|c| *c)).await;
    }
}

fn behind(fabric: &Fabric) -> Status {
    let lag = fabric.index_lag().map_or("never loaded".to_string(), |l| {
        format!("last confirmed {:.1} s ago", l.as_secs_f64())
    });
    Status::unavailable(format!(
        "this replica's index is not current with etcd ({lag}); try another replica"
    ))
}

/// A node's open stream on this replica, released when the stream ends.
struct LiveStream {
    live: Arc<Mutex<HashSet<String>>>,
    node: String,
}

impl LiveStream {
    /// The node's stream, or None while another one of the node's is live.
    fn register(live: &Arc<Mutex<HashSet<String>>>, node: &str) -> Option<Self> {
        if !live.lock().unwrap().insert(node.to_string()) {
            return None;
        }
        Some(LiveStream {
            live: live.clone(),
            node: node.to_string(),
        })
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.live.lock().unwrap().remove(&self.node);
    }
}

fn entry(key: &str, obj: &sf_core::desired::DesiredObject) -> pb::Entry {
    pb::Entry {
        key: key.to_string(),
        value: sf_core::desired::encode_object(obj),
    }
}

/// Splits `items` into runs whose summed `len` stays within `max` (an item larger than `max`
/// travels alone). Always at least one run, so an empty state is still one message.
pub fn split_parts<T>(items: Vec<T>, len: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        let n = len(&item);
        let last = parts.last_mut().expect("never empty");
        if !last.is_empty() && size + n > max {
            parts.push(vec![item]);
            size = n;
        } else {
            last.push(item);
            size += n;
        }
    }
    parts
}

/// What a stream sends besides the objects: where the state stands.
#[derive(Clone, Copy)]
struct Stamp {
    revision: u64,
    intent_time_ms: u64,
    index_revision: u64,
}

fn snapshot_parts(d: &NodeDesired, stamp: Stamp) -> Vec<pb::CoordinatorMessage> {
    let entries: Vec<pb::Entry> = d.objects.iter().map(|(k, v)| entry(k, v)).collect();
    let parts = split_parts(entries, |e| e.encoded_len(), PART_BYTES);
    let digest = d.digest();
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, entries)| pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Snapshot(pb::Snapshot {
                revision: stamp.revision,
                digest: digest.clone(),
                entries,
                intent_time_ms: stamp.intent_time_ms,
                index_revision: stamp.index_revision,
                more: i < last,
            })),
        })
        .collect()
}

/// One change of a delta: parts carry upserts and deletes in the delta's order.
enum Change {
    Upsert(pb::Entry),
    Delete(String),
}

fn delta_parts(digest: String, d: DesiredDelta, stamp: Stamp) -> Vec<pb::CoordinatorMessage> {
    let changes: Vec<Change> = d
        .deletes
        .into_iter()
        .map(Change::Delete)
        .chain(d.upserts.iter().map(|(k, v)| Change::Upsert(entry(k, v))))
        .collect();
    let len = |c: &Change| match c {
        Change::Upsert(e) => e.encoded_len(),
        Change::Delete(k) => k.len() + 2,
    };
    let parts = split_parts(changes, len, PART_BYTES);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
            for c in part {
                match c {
                    Change::Upsert(e) => upserts.push(e),
                    Change::Delete(k) => deletes.push(k),
                }
            }
            pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Delta(pb::Delta {
                    revision: stamp.revision,
                    digest: digest.clone(),
                    upserts,
                    deletes,
                    intent_time_ms: stamp.intent_time_ms,
                    index_revision: stamp.index_revision,
                    more: i < last,
                })),
            }
        })
        .collect()
}

/// Counts an open stream for as long as it lives.
struct StreamGauge(Arc<Fabric>);
impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.agent_streams.dec();
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;
type Out = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// Sends every part; false once the agent is gone.
async fn send_all(fabric: &Fabric, tx: &Out, msgs: Vec<pb::CoordinatorMessage>) -> bool {
    for msg in msgs {
        fabric.metrics.sync_bytes.inc_by(msg.encoded_len() as u64);
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
    }
    true
}

#[tonic::async_trait]
impl AgentSync for Sync {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<SyncStream>, Status> {
        let identity = peer_node(&req)?;
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        let live = self.admit(&identity, &hello).await?;
        let session = Session {
            fabric: self.fabric.clone(),
            rx: self.fabric.subscribe(&identity),
            identity: identity.clone(),
            always_snapshot: self.always_snapshot,
        };
        let (tx, out) = mpsc::channel::<Result<pb::CoordinatorMessage, Status>>(16);
        let span = info_span!("sync", node = %identity);
        tokio::spawn(
            async move {
                let _live = live;
                session.run(hello, inbound, tx).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

/// One admitted stream.
struct Session {
    fabric: Arc<Fabric>,
    rx: crate::fabric::DesiredRx,
    identity: String,
    always_snapshot: bool,
}

impl Session {
    fn stamp(&self, revision: u64) -> Stamp {
        Stamp {
            revision,
            intent_time_ms: self.fabric.stamp_of(revision),
            index_revision: self.fabric.revision().max(0) as u64,
        }
    }

    /// The first answer: a resume when the agent's digest is current, else a snapshot.
    fn opening(&self, first: &NodeDesired, hello: &pb::Hello) -> Vec<pb::CoordinatorMessage> {
        let m = &self.fabric.metrics;
        let stamp = self.stamp(first.revision);
        if !self.always_snapshot && first.digest() == hello.applied_digest {
            m.sync_resumes.inc();
            info!(revision = first.revision, "resume: agent is current");
            return vec![pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Resume(pb::Resume {
                    revision: first.revision,
                    digest: first.digest(),
                    index_revision: stamp.index_revision,
                })),
            }];
        }
        info!(
            revision = first.revision,
            objects = first.objects.len(),
            "snapshot"
        );
        m.sync_snapshots.inc();
        snapshot_parts(
            first,
            Stamp {
                intent_time_ms: self.fabric.stamp_of(first.revision),
                ..stamp
            },
        )
    }

    async fn run(mut self, hello: pb::Hello, mut inbound: Streaming<pb::AgentMessage>, tx: Out) {
        info!(
            applied = hello.applied_revision,
            seen = hello.index_revision,
            "agent connected"
        );
        let fabric = self.fabric.clone();
        fabric.metrics.agent_streams.inc();
        let _gauge = StreamGauge(fabric.clone());
        let mut last_acked = hello.applied_revision;
        // Wait until the node is in the inventory.
        let first = match self.rx.wait_for(|d| d.is_some()).await {
            Ok(d) => d.clone().expect("waited for Some"),
            Err(_) => return,
        };
        if !send_all(&fabric, &tx, self.opening(&first, &hello)).await {
            return;
        }
        let mut last: Arc<NodeDesired> = first;
        let mut current = fabric.current();
        loop {
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() { return; }
                    let Some(next) = self.rx.borrow_and_update().clone() else {
                        // Removed from the inventory: keep the stream, send nothing.
                        continue;
                    };
                    let d = last.delta_to(&next);
                    if d.is_empty() { last = next; continue; }
                    debug!(revision = next.revision, upserts = d.upserts.len(), deletes = d.deletes.len(), "delta");
                    fabric.metrics.sync_deltas.inc();
                    let parts = delta_parts(next.digest(), d, self.stamp(next.revision));
                    if !send_all(&fabric, &tx, parts).await { return; }
                    last = next;
                }
                changed = current.changed() => {
                    if changed.is_err() || !*current.borrow_and_update() {
                        // Stop serving: the agent moves to a replica that is current.
                        warn!("index not current with etcd; ending the stream");
                        let _ = tx.send(Err(behind(&fabric))).await;
                        return;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Ack(ack)) })) => {
                        self.record_ack(&ack, &mut last_acked);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        info!("agent disconnected");
                        fabric.forget_acks(&self.identity);
                        return;
                    }
                }
            }
        }
    }

    fn record_ack(&self, ack: &pb::Ack, last_acked: &mut u64) {
        let fabric = &self.fabric;
        fabric.metrics.acks.inc();
        fabric.record_ack(&self.identity, ack.revision, &ack.digest, &ack.errors);
        if !ack.errors.is_empty() {
            fabric.metrics.ack_errors.inc();
            warn!(revision = ack.revision, errors = ?ack.errors, "agent reported errors");
            return;
        }
        debug!(revision = ack.revision, "ack");
        // Once per node and revision: the coordinator's view of intent-to-dataplane latency.
        if ack.revision > *last_acked {
            let stamp = fabric.stamp_of(ack.revision);
            if stamp > 0 {
                fabric
                    .metrics
                    .intent_to_ack
                    .observe(sf_metrics::seconds_since(stamp));
            }
            *last_acked = ack.revision;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::DesiredObject;

    /// A replica serves an agent only while its watch confirms it current and only once its
    /// index has reached what the agent has seen; it serves again once it catches up.
    #[tokio::test]
    async fn a_replica_behind_etcd_or_behind_the_agent_refuses() {
        use sf_store::{intent::IntentStore, keys::Keys, mem::MemStore, KvStore};
        let kv = Arc::new(MemStore::new());
        let fabric = Fabric::new(IntentStore::new(kv.clone(), Keys::new("/t")));
        tokio::spawn(fabric.clone().run());
        assert!(fabric.wait_loaded().await);
        let sync = Sync::new(fabric.clone(), false);
        let seen = kv.put("/t/x", b"1".to_vec(), 0).await.unwrap() as u64;
        sync.current_for(seen)
            .await
            .expect("a current replica waits for the write and serves");

        kv.stall_watches(true);
        let newer = kv.put("/t/x", b"2".to_vec(), 0).await.unwrap() as u64;
        let e = sync
            .current_for(newer)
            .await
            .expect_err("index older than the agent's");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(
            e.message().contains("older than revision"),
            "{}",
            e.message()
        );
        tokio::time::sleep(crate::fabric::INDEX_LAG_MAX).await;
        assert!(
            !fabric.is_current(),
            "no progress for {:?}",
            crate::fabric::INDEX_LAG_MAX
        );
        let e = sync
            .current_for(0)
            .await
            .expect_err("not current with etcd");
        assert!(e.message().contains("not current"), "{}", e.message());

        kv.stall_watches(false);
        tokio::time::sleep(sf_store::PROGRESS_INTERVAL * 2).await;
        assert!(fabric.is_current());
        sync.current_for(newer).await.expect("caught up");
    }

    /// A replica still loading its index holds a hello until the load instead of refusing
    /// it (a refused agent backs off, doubling each time: a restart under a fleet then lasts
    /// as long as the slowest backoff).
    #[tokio::test]
    async fn a_starting_replica_holds_a_hello_until_its_index_is_loaded() {
        use sf_store::{intent::IntentStore, keys::Keys, mem::MemStore};
        let fabric = Fabric::new(IntentStore::new(Arc::new(MemStore::new()), Keys::new("/t")));
        let sync = Sync::new(fabric.clone(), false);
        let started = tokio::time::Instant::now();
        let loader = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tokio::spawn(fabric.clone().run());
        };
        let (answer, ()) = tokio::join!(sync.current_for(0), loader);
        answer.expect("served once the index loaded, not refused while it loaded");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// An agent that ends its session and reconnects at once can say hello before this
    /// replica saw its old stream close: the hello waits for the close instead of being
    /// refused (a refusal costs the agent a backoff).
    #[tokio::test]
    async fn a_reconnect_racing_its_old_streams_close_is_admitted() {
        use sf_store::{intent::IntentStore, keys::Keys, mem::MemStore};
        let fabric = Fabric::new(IntentStore::new(Arc::new(MemStore::new()), Keys::new("/t")));
        tokio::spawn(fabric.clone().run());
        assert!(fabric.wait_loaded().await);
        let sync = Sync::new(fabric, false);
        let hello = pb::Hello {
            node: "hv1".into(),
            schema_version: SCHEMA_VERSION,
            ..Default::default()
        };
        let old = sync.admit("hv1", &hello).await.expect("first stream");
        let closes = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(old);
        };
        let (again, ()) = tokio::join!(sync.admit("hv1", &hello), closes);
        again.expect("admitted once the old stream closed");
    }

    /// An agent whose schema is older than the coordinator's is refused (it would drop the
    /// fields it does not know and report itself in sync), and so is a second stream of a
    /// node whose first one is live; once that one ends, the node is admitted again.
    #[tokio::test]
    async fn older_schemas_and_second_streams_are_refused() {
        use sf_store::{intent::IntentStore, keys::Keys, mem::MemStore};
        let fabric = Fabric::new(IntentStore::new(Arc::new(MemStore::new()), Keys::new("/t")));
        tokio::spawn(fabric.clone().run());
        assert!(fabric.wait_loaded().await);
        let sync = Sync::new(fabric, false);
        let hello = |schema_version| pb::Hello {
            node: "hv1".into(),
            agent_version: "0.0.9".into(),
            schema_version,
            ..Default::default()
        };
        let old = sync
            .admit("hv1", &hello(SCHEMA_VERSION - 1))
            .await
            .err()
            .expect("refused");
        assert_eq!(old.code(), tonic::Code::FailedPrecondition);
        assert!(
            old.message().contains("upgrade the agent"),
            "{}",
            old.message()
        );
        let first = sync
            .admit("hv1", &hello(SCHEMA_VERSION))
            .await
            .expect("admitted");
        let second = sync
            .admit("hv1", &hello(SCHEMA_VERSION))
            .await
            .err()
            .expect("refused");
        assert_eq!(second.code(), tonic::Code::AlreadyExists);
        sync.admit(
            "hv2",
            &pb::Hello {
                node: "hv2".into(),
                ..hello(SCHEMA_VERSION)
            },
        )
        .await
        .expect("another node is not affected");
        drop(first);
        sync.admit("hv1", &hello(SCHEMA_VERSION))
            .await
            .expect("admitted once the first ended");
    }

    #[test]
    fn parts_respect_the_budget_and_keep_order() {
        let items: Vec<usize> = vec![400, 400, 400, 1500, 10, 10];
        let parts = split_parts(items.clone(), |n| *n, 1000);
        assert_eq!(
            parts,
            vec![vec![400, 400], vec![400], vec![1500], vec![10, 10]]
        );
        assert_eq!(parts.concat(), items);
        assert_eq!(
            split_parts(Vec::<usize>::new(), |n| *n, 10),
            vec![Vec::<usize>::new()]
        );
    }

    /// A desired state far over gRPC's 4 MiB default travels in parts under the limit, every
    /// part carrying the whole's revision and digest and only the last saying it is the last.
    #[test]
    fn a_large_snapshot_travels_in_parts_under_the_grpc_limit() {
        let mut d = NodeDesired {
            node: "gw1".into(),
            revision: 42,
            ..Default::default()
        };
        for i in 0..3000 {
            let name = format!("route-{i}-{}", "x".repeat(2000));
            d.objects.insert(
                format!("obj/{i:05}"),
                serde_json::from_value::<DesiredObject>(serde_json::json!({
                    "kind": "underlay", "asn": 65001, "router_id": "10.255.1.1",
                    "loopback": "10.255.1.1", "neighbors": [name], "evpn": "vtep"
                }))
                .unwrap(),
            );
        }
        let stamp = Stamp {
            revision: 42,
            intent_time_ms: 0,
            index_revision: 50,
        };
        let parts = snapshot_parts(&d, stamp);
        let total: usize = parts.iter().map(|m| m.encoded_len()).sum();
        assert!(total > 5 << 20, "the state is over 5 MiB ({total} bytes)");
        assert!(parts.len() >= 5);
        let mut keys = Vec::new();
        for (i, m) in parts.iter().enumerate() {
            assert!(m.encoded_len() < 4 << 20, "part {i} is under 4 MiB");
            let Some(pb::coordinator_message::Msg::Snapshot(s)) = &m.msg else {
                panic!()
            };
            assert_eq!((s.revision, s.index_revision), (42, 50));
            assert_eq!(s.digest, d.digest());
            assert_eq!(s.more, i + 1 < parts.len());
            keys.extend(s.entries.iter().map(|e| e.key.clone()));
        }
        assert_eq!(keys, d.objects.keys().cloned().collect::<Vec<_>>());
    }
}
