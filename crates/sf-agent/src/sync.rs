//! The AgentSync client. It dials the coordinator with this node's certificate, says hello
//! with the revision and digest it last applied, and turns the coordinator's Snapshot, Delta
//! and Resume messages into the agent's desired state, verifying the digest after every
//! message (a mismatch forces a fresh snapshot). It forwards the reconciler's acks. Any
//! failure reconnects with jittered exponential backoff, cycling through the endpoints.
//!
//! Never backwards: every message carries the index revision of the replica that sent it,
//! and a message older than one already accepted is refused (the session ends and the next
//! replica is tried), so moving to a replica whose etcd watch lags cannot roll the node back.
//! Large states arrive in parts (`more`), assembled before anything is applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use sf_core::desired::{DesiredDelta, DesiredObject, NodeDesired};
use sf_proto::v1 as pb;
use sf_proto::v1::agent_sync_client::AgentSyncClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tracing::{info, warn};

use crate::config::AgentArgs;
use crate::Counters;

/// Where a desired state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The on-disk cache, enforced until the coordinator answers.
    Cache,
    /// The coordinator (a snapshot, delta or resume).
    Coordinator,
}

/// A desired state handed to the reconcile loop.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub desired: NodeDesired,
    pub origin: Origin,
    /// The coordinator's stamp (ms) of the intent change behind this revision (0: none, e.g.
    /// a resume or the cache): the loop measures intent-to-dataplane latency from it.
    pub intent_time_ms: u64,
    /// Counts the deliveries (0: the cache), so the loop can tell a new one from the last it
    /// handled even when the desired state is the same (a resume).
    pub seq: u64,
}

/// The sync client's ends of its channels to the reconcile loop. The client owns them: the
/// loop holds the other ends (a `watch::Receiver` of delivered states, the acks' sender, the
/// applied revision's sender and the resync notifier).
pub struct SyncLink {
    pub deliver: Deliver,
    /// (revision, digest) last applied without errors: the hello of the next session.
    pub applied: watch::Receiver<(u64, String)>,
    /// Acks from the loop, forwarded on the open stream.
    pub acks: mpsc::Receiver<pb::Ack>,
    /// The loop asks for a fresh snapshot (after a non-continuous lease).
    pub resync: Arc<tokio::sync::Notify>,
}

/// Where the client puts what the coordinator sent, with its counters and metrics.
pub struct Deliver {
    pub node: String,
    pub tx: watch::Sender<Option<Delivered>>,
    pub counters: Arc<Counters>,
    pub metrics: sf_metrics::AgentMetrics,
}

impl Deliver {
    fn current(&self) -> Option<NodeDesired> {
        self.tx.borrow().as_ref().map(|d| d.desired.clone())
    }

    fn send(&self, desired: NodeDesired, intent_time_ms: u64) {
        // Only this task sends, so reading the last number and sending do not race.
        let seq = self.tx.borrow().as_ref().map_or(0, |d| d.seq) + 1;
        self.tx.send_replace(Some(Delivered {
            desired,
            origin: Origin::Coordinator,
            intent_time_ms,
            seq,
        }));
    }
}

/// The bytes each object of the current desired state arrived as, by key: digests are
/// verified over them, not over this build's re-encoding (see `NodeDesired::wire_digest`).
type RawObjects = std::collections::BTreeMap<String, Vec<u8>>;

fn raw_digest(raw: &RawObjects) -> String {
    sf_core::desired::digest_entries(raw.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

/// Connects to one endpoint with mTLS.
pub async fn connect(args: &AgentArgs, endpoint: &str) -> anyhow::Result<Channel> {
    Dialer::default().connect(args, endpoint).await
}

/// Dials the coordinator, keeping each endpoint's TLS set-up (the certificates read and
/// parsed, rustls' client configuration) across reconnects: building it took a share of
/// every reconnect's CPU (5,000 agents reconnecting after a coordinator restart), and the
/// kept configuration also keeps its TLS session tickets, so a reconnect to a coordinator
/// that knows the ticket key resumes the session instead of a full handshake. A certificate
/// renewed on disk (another modification time of any of the three files) is read again.
#[derive(Default)]
pub struct Dialer {
    built: std::collections::HashMap<String, (Stamps, tonic::transport::Endpoint)>,
}

/// Modification times of the CA, certificate and key files.
type Stamps = [Option<std::time::SystemTime>; 3];

impl Dialer {
    pub async fn connect(&mut self, args: &AgentArgs, endpoint: &str) -> anyhow::Result<Channel> {
        let stamps = [&args.tls_ca, &args.tls_cert, &args.tls_key]
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let ep = match self.built.get(endpoint) {
            Some((s, ep)) if *s == stamps => ep.clone(),
            _ => {
                let ep = endpoint_of(args, endpoint)?;
                self.built
                    .insert(endpoint.to_string(), (stamps, ep.clone()));
                ep
            }
        };
        ep.connect()
            .await
            .with_context(|| format!("connecting to {endpoint}"))
    }
}

/// One endpoint with this node's mTLS identity and the session's timeouts.
fn endpoint_of(args: &AgentArgs, endpoint: &str) -> anyhow::Result<tonic::transport::Endpoint> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&args.tls_ca)?))
        .identity(Identity::from_pem(
            read(&args.tls_cert)?,
            read(&args.tls_key)?,
        ))
        .domain_name(args.tls_server_name.clone());
    Ok(Channel::from_shared(endpoint.to_string())
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(args.sync_keepalive_secs.max(1)))
        .keep_alive_timeout(Duration::from_secs(5)))
}

fn decode_entries(entries: &[pb::Entry]) -> anyhow::Result<Vec<(String, DesiredObject)>> {
    entries
        .iter()
        .map(|e| {
            let obj: DesiredObject = serde_json::from_slice(&e.value)
                .with_context(|| format!("decoding desired object {}", e.key))?;
            Ok((e.key.clone(), obj))
        })
        .collect()
}

fn hello(node: &str, applied: &(u64, String), seen: u64, force_snapshot: bool) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            node: node.to_string(),
            applied_revision: applied.0,
            applied_digest: if force_snapshot {
                String::new()
            } else {
                applied.1.clone()
            },
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            index_revision: seen,
            schema_version: sf_core::desired::SCHEMA_VERSION,
        })),
    }
}

/// The largest message accepted (one desired object larger than a part travels alone).
const MAX_MESSAGE: usize = 64 << 20;

/// Why a session ended.
enum End {
    /// The stream broke or the coordinator went away.
    Failed(anyhow::Error),
    /// State diverged; reconnect and ask for a full snapshot.
    Diverged(String),
}

/// Why a coordinator message was not applied.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// Older than a message already accepted: this replica is behind; try another.
    #[error("replica is behind: message at index revision {got}, already accepted {seen}")]
    Stale { got: u64, seen: u64 },
    /// Did not verify or does not fit the state held: ask for a snapshot.
    #[error("{0:#}")]
    Diverged(#[from] anyhow::Error),
}

/// What the client keeps across sessions.
#[derive(Default)]
struct Received {
    /// The bytes of the current state's objects.
    raw: RawObjects,
    /// The highest index revision of any message accepted (never goes down).
    seen: u64,
}

/// Runs sessions forever (until the process exits).
pub async fn run(args: AgentArgs, mut link: SyncLink) {
    // The cached state's revision is a floor too: its replica's index had reached it.
    let mut received = Received {
        seen: link.deliver.current().map_or(0, |d| d.revision),
        ..Default::default()
    };
    let mut attempt: u32 = 0;
    let mut force_snapshot = false;
    // Agents spread over the coordinator replicas (each starts at its own, by name) and move
    // on to the next one whenever a session ends.
    let mut endpoint_idx = first_endpoint(&args.node, args.coordinator.len());
    let mut dialer = Dialer::default();
    loop {
        let endpoint = args.coordinator[endpoint_idx % args.coordinator.len()].clone();
        let started = Instant::now();
        let channel = dialer.connect(&args, &endpoint).await;
        let end = match channel {
            Ok(c) => {
                session(
                    c,
                    &args,
                    &endpoint,
                    &mut link,
                    &mut received,
                    force_snapshot,
                )
                .await
            }
            Err(e) => End::Failed(e),
        };
        // A session that lasted resets the backoff however it ended. It used to be reset only
        // after a failed one, so a long session ended by a lease re-grant kept the attempt
        // count of the agent's start-up: when the immediate reconnect was refused, that agent
        // waited up to 10 s (seen at 5,000 agents).
        if started.elapsed() > Duration::from_secs(10) {
            attempt = 0;
        }
        let refused = match end {
            End::Diverged(why) => {
                warn!(%why, "desired state diverged; requesting a snapshot");
                force_snapshot = true;
                continue;
            }
            End::Failed(e) => {
                link.deliver.counters.incr("sync_failures");
                warn!(%endpoint, error = format!("{e:#}"), "sync session ended");
                connection_refused(&e)
            }
        };
        force_snapshot = false;
        endpoint_idx += 1;
        // A refused connection (nothing listens: the coordinator is restarting) costs the
        // coordinator nothing, a kernel's reset, so it is retried on the short schedule (at
        // most 400 ms): the fleet is back soon after the coordinator is, instead of after
        // the seconds of backoff a restart's refusals used to pile up. Whatever reached a
        // coordinator (a timeout, TLS, a refused Hello) backs off exponentially.
        let step = if refused { attempt.min(1) } else { attempt };
        let delay = backoff(step);
        attempt = step.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// Whether the connection was refused (nothing listened at the endpoint).
pub fn connection_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// The replica a node tries first: a stable hash of its name (FNV-1a), so a fleet spreads
/// evenly and a node returns to the same replica across restarts.
pub fn first_endpoint(node: &str, replicas: usize) -> usize {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % replicas.max(1) as u64) as usize
}

/// Exponential backoff from 200 ms to 10 s, with "equal jitter" (half fixed, half random), so
/// a fleet that lost its coordinator does not reconnect in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1u64 << attempt.min(6)).min(10_000);
    let jitter = rand::rng().random_range(0..=base / 2);
    Duration::from_millis(base / 2 + jitter)
}

async fn session(
    channel: Channel,
    args: &AgentArgs,
    endpoint: &str,
    link: &mut SyncLink,
    received: &mut Received,
    force_snapshot: bool,
) -> End {
    let mut client = AgentSyncClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (out_tx, out_rx) = mpsc::channel::<pb::AgentMessage>(16);
    let applied = link.applied.borrow().clone();
    out_tx
        .send(hello(&args.node, &applied, received.seen, force_snapshot))
        .await
        .expect("receiver alive");
    let mut inbound = match client
        .sync(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return End::Failed(anyhow::anyhow!("coordinator refused: {}", status.message()))
        }
    };
    info!(%endpoint, applied = applied.0, "sync stream open");
    link.deliver.metrics.coordinator_connected.set(1);
    // Cleared however the session ends.
    struct Connected<'a>(&'a sf_metrics::AgentMetrics);
    impl Drop for Connected<'_> {
        fn drop(&mut self) {
            self.0.coordinator_connected.set(0);
        }
    }
    let _connected = Connected(&link.deliver.metrics);
    let mut partial = None;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return End::Failed(anyhow::anyhow!("coordinator closed the stream")),
                    Err(s) => return End::Failed(anyhow::anyhow!("stream error: {}", s.message())),
                };
                match receive(msg, &mut partial, &link.deliver, received) {
                    Ok(()) => {}
                    Err(e @ Refused::Stale { .. }) => {
                        link.deliver.counters.incr("stale_refused");
                        return End::Failed(e.into());
                    }
                    Err(Refused::Diverged(e)) => return End::Diverged(format!("{e:#}")),
                }
            }
            _ = link.resync.notified() => {
                return End::Diverged("lease re-acquired: fetching a fresh snapshot".into());
            }
            Some(ack) = link.acks.recv() => {
                let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Ack(ack)) };
                if out_tx.send(m).await.is_err() {
                    return End::Failed(anyhow::anyhow!("outbound stream closed"));
                }
            }
        }
    }
}

/// The index revision a message was sent at (0: a coordinator older than the field).
fn index_revision(msg: &pb::coordinator_message::Msg) -> u64 {
    use pb::coordinator_message::Msg;
    match msg {
        Msg::Snapshot(s) => s.index_revision,
        Msg::Delta(d) => d.index_revision,
        Msg::Resume(r) => r.index_revision,
    }
}

/// Adds one part to the message being assembled; returns the whole once its last part came.
fn assemble(
    partial: &mut Option<pb::coordinator_message::Msg>,
    part: pb::coordinator_message::Msg,
) -> anyhow::Result<Option<pb::coordinator_message::Msg>> {
    use pb::coordinator_message::Msg;
    let whole = match (partial.take(), part) {
        (None, part) => part,
        (Some(Msg::Snapshot(mut a)), Msg::Snapshot(b))
            if (a.revision, &a.digest) == (b.revision, &b.digest) =>
        {
            a.entries.extend(b.entries);
            a.more = b.more;
            Msg::Snapshot(a)
        }
        (Some(Msg::Delta(mut a)), Msg::Delta(b))
            if (a.revision, &a.digest) == (b.revision, &b.digest) =>
        {
            a.upserts.extend(b.upserts);
            a.deletes.extend(b.deletes);
            a.more = b.more;
            Msg::Delta(a)
        }
        (Some(_), _) => bail!("a message interrupted the parts of another"),
    };
    let more = match &whole {
        Msg::Snapshot(s) => s.more,
        Msg::Delta(d) => d.more,
        Msg::Resume(_) => false,
    };
    if more {
        *partial = Some(whole);
        return Ok(None);
    }
    Ok(Some(whole))
}

/// Takes one message off the stream: refuses it if it is older than what was accepted,
/// assembles parts, and applies a whole message.
fn receive(
    msg: pb::CoordinatorMessage,
    partial: &mut Option<pb::coordinator_message::Msg>,
    out: &Deliver,
    received: &mut Received,
) -> Result<(), Refused> {
    let Some(part) = msg.msg else { return Ok(()) };
    let got = index_revision(&part);
    if got != 0 && got < received.seen {
        return Err(Refused::Stale {
            got,
            seen: received.seen,
        });
    }
    let Some(whole) = assemble(partial, part)? else {
        return Ok(());
    };
    handle(
        pb::CoordinatorMessage { msg: Some(whole) },
        out,
        &mut received.raw,
    )?;
    received.seen = received.seen.max(got);
    Ok(())
}

/// Applies one coordinator message to the desired state. Digests are checked over the raw
/// bytes received, so an agent whose schema lags the coordinator's (a rolling upgrade) agrees
/// on the digest as long as it can decode what it needs.
fn handle(msg: pb::CoordinatorMessage, out: &Deliver, raw: &mut RawObjects) -> anyhow::Result<()> {
    use pb::coordinator_message::Msg;
    let current = out.current();
    match msg.msg {
        Some(Msg::Snapshot(s)) => {
            let objects = decode_entries(&s.entries)?;
            let fresh_raw: RawObjects = s.entries.into_iter().map(|e| (e.key, e.value)).collect();
            if raw_digest(&fresh_raw) != s.digest {
                bail!("snapshot digest mismatch");
            }
            *raw = fresh_raw;
            out.metrics.snapshots.inc();
            let d = NodeDesired {
                node: out.node.clone(),
                revision: s.revision,
                objects: objects.into_iter().collect(),
                wire_digest: Some(s.digest),
            };
            out.counters.incr("snapshots");
            info!(
                revision = s.revision,
                objects = d.objects.len(),
                "snapshot received"
            );
            out.send(d, s.intent_time_ms);
        }
        Some(Msg::Delta(delta)) => {
            let Some(mut d) = current else {
                bail!("delta before any snapshot");
            };
            if raw.is_empty() && !d.objects.is_empty() {
                // Started from the disk cache and resumed: this build's encoding is the best
                // available (a mismatch below falls back to a snapshot).
                *raw = d
                    .objects
                    .iter()
                    .map(|(k, o)| (k.clone(), sf_core::desired::encode_object(o)))
                    .collect();
            }
            let upserts = decode_entries(&delta.upserts)?;
            let mut next_raw = raw.clone();
            for k in &delta.deletes {
                next_raw.remove(k);
            }
            for e in &delta.upserts {
                next_raw.insert(e.key.clone(), e.value.clone());
            }
            if raw_digest(&next_raw) != delta.digest {
                bail!("digest mismatch after delta at revision {}", delta.revision);
            }
            *raw = next_raw;
            out.metrics.deltas.inc();
            d.apply_delta(
                delta.revision,
                DesiredDelta {
                    upserts,
                    deletes: delta.deletes,
                },
            );
            d.wire_digest = Some(delta.digest);
            out.counters.incr("deltas");
            info!(revision = delta.revision, "delta received");
            out.send(d, delta.intent_time_ms);
        }
        Some(Msg::Resume(r)) => {
            let Some(mut d) = current else {
                bail!("resume without a cached state");
            };
            if d.digest() != r.digest {
                bail!("resume digest differs from the cached state");
            }
            out.counters.incr("resumes");
            info!(revision = r.revision, "resumed: cached state is current");
            d.revision = r.revision;
            // No stamp: the revisions in between changed nothing of this node's.
            out.send(d, 0);
        }
        None => {}
    }
    Ok(())
}

/// Debug helper behind `--once`: open the stream, print the first message, return.
pub async fn once(args: &AgentArgs) -> anyhow::Result<String> {
    let endpoint = args.coordinator.first().context("no --coordinator given")?;
    let mut client =
        AgentSyncClient::new(connect(args, endpoint).await?).max_decoding_message_size(MAX_MESSAGE);
    let (out_tx, out_rx) = mpsc::channel(1);
    out_tx
        .send(hello(&args.node, &(0, String::new()), 0, true))
        .await?;
    let mut inbound = client
        .sync(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .await
        .map_err(|s| anyhow::anyhow!("coordinator refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut partial = None;
    let whole = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .context("no answer within 10 s")?
            .map_err(|s| anyhow::anyhow!("coordinator refused: {:?}: {}", s.code(), s.message()))?
            .context("stream closed")?;
        if let Some(whole) = assemble(&mut partial, msg.msg.context("empty message")?)? {
            break whole;
        }
    };
    use pb::coordinator_message::Msg;
    let value = match Some(whole) {
        Some(Msg::Snapshot(s)) => {
            let objects: serde_json::Map<String, serde_json::Value> = decode_entries(&s.entries)?
                .into_iter()
                .map(|(k, v)| (k, serde_json::to_value(v).expect("serializes")))
                .collect();
            serde_json::json!({"snapshot": {"revision": s.revision, "digest": s.digest, "objects": objects}})
        }
        other => serde_json::json!({"other": format!("{other:?}")}),
    };
    Ok(serde_json::to_string_pretty(&value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver() -> Deliver {
        Deliver {
            node: "hv1".into(),
            tx: watch::channel(None).0,
            counters: Default::default(),
            metrics: sf_metrics::AgentMetrics::register(&mut Default::default()),
        }
    }

    fn entry(key: &str, json: &str) -> pb::Entry {
        pb::Entry {
            key: key.into(),
            value: json.as_bytes().to_vec(),
        }
    }

    fn msg(m: pb::coordinator_message::Msg) -> pb::CoordinatorMessage {
        pb::CoordinatorMessage { msg: Some(m) }
    }

    /// A newer coordinator sends a field this build does not know: the digest still verifies
    /// (over the bytes received), the agent reports the coordinator's digest, and deltas on
    /// top of it verify too.
    #[test]
    fn digests_verify_over_the_bytes_received_across_schema_skew() {
        let s = deliver();
        let mut held = RawObjects::new();
        let underlay = r#"{"kind":"underlay","asn":65001,"router_id":"10.255.1.1","loopback":"10.255.1.1","neighbors":["leaf1"],"evpn":"vtep","a_future_field":{"x":1}}"#;
        let entries = vec![entry("underlay", underlay)];
        let raw: std::collections::BTreeMap<String, Vec<u8>> = entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let digest = raw_digest(&raw);
        handle(
            msg(pb::coordinator_message::Msg::Snapshot(pb::Snapshot {
                revision: 5,
                digest: digest.clone(),
                entries,
                intent_time_ms: 0,
                ..Default::default()
            })),
            &s,
            &mut held,
        )
        .expect("snapshot with an unknown field verifies");
        let d = s.current().unwrap();
        assert_eq!(s.tx.borrow().as_ref().unwrap().origin, Origin::Coordinator);
        assert_eq!(
            d.digest(),
            digest,
            "the agent reports the coordinator's digest"
        );
        assert_ne!(
            sf_core::desired::digest_objects(&d.objects),
            digest,
            "re-encoding drops the unknown field: the old scheme would loop on mismatches"
        );
        // A delta on top, verified over raw bytes as well.
        let net = r#"{"kind":"l2_network","vni":1000001,"tenant":"t","vpc":"v","network":"n","cidr":"10.0.0.0/24","gateway":"10.0.0.1","ports":[],"newer":true}"#;
        let mut raw2 = raw.clone();
        raw2.insert("net/1000001".into(), net.as_bytes().to_vec());
        let digest2 = raw_digest(&raw2);
        handle(
            msg(pb::coordinator_message::Msg::Delta(pb::Delta {
                revision: 6,
                digest: digest2.clone(),
                upserts: vec![entry("net/1000001", net)],
                deletes: vec![],
                intent_time_ms: 0,
                ..Default::default()
            })),
            &s,
            &mut held,
        )
        .expect("delta verifies");
        assert_eq!(s.current().unwrap().digest(), digest2);
        // A wrong digest is refused (the caller then asks for a snapshot).
        let bad = handle(
            msg(pb::coordinator_message::Msg::Delta(pb::Delta {
                revision: 7,
                digest: "00".into(),
                upserts: vec![],
                deletes: vec!["net/1000001".into()],
                intent_time_ms: 0,
                ..Default::default()
            })),
            &s,
            &mut held,
        );
        assert!(bad.is_err());
        assert_eq!(s.current().unwrap().revision, 6, "unchanged");
    }

    const UNDERLAY: &str = r#"{"kind":"underlay","asn":65001,"router_id":"10.255.1.1","loopback":"10.255.1.1","neighbors":["leaf1"],"evpn":"vtep"}"#;

    fn snapshot(
        revision: u64,
        index_revision: u64,
        entries: Vec<pb::Entry>,
        more: bool,
        digest: &str,
    ) -> pb::CoordinatorMessage {
        msg(pb::coordinator_message::Msg::Snapshot(pb::Snapshot {
            revision,
            digest: digest.into(),
            entries,
            index_revision,
            more,
            ..Default::default()
        }))
    }

    fn digest_of(entries: &[pb::Entry]) -> String {
        raw_digest(
            &entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
        )
    }

    /// A replica whose index is behind what the agent accepted is refused, whatever it sends:
    /// the state stays as it was (a gateway would otherwise re-create a router that moved).
    #[test]
    fn a_message_older_than_one_accepted_is_refused() {
        let out = deliver();
        let mut got = Received::default();
        let mut partial = None;
        let new = vec![entry("underlay", UNDERLAY)];
        receive(
            snapshot(10, 20, new.clone(), false, &digest_of(&new)),
            &mut partial,
            &out,
            &mut got,
        )
        .expect("first snapshot");
        assert_eq!(got.seen, 20);
        let old: Vec<pb::Entry> = vec![];
        let r = receive(
            snapshot(8, 15, old.clone(), false, &digest_of(&old)),
            &mut partial,
            &out,
            &mut got,
        );
        assert!(
            matches!(r, Err(Refused::Stale { got: 15, seen: 20 })),
            "{r:?}"
        );
        let resume = msg(pb::coordinator_message::Msg::Resume(pb::Resume {
            revision: 10,
            digest: digest_of(&new),
            index_revision: 19,
        }));
        assert!(matches!(
            receive(resume, &mut partial, &out, &mut got),
            Err(Refused::Stale { .. })
        ));
        let d = out.current().unwrap();
        assert_eq!((d.revision, d.objects.len()), (10, 1), "state unchanged");
        // The same or a newer index is fine.
        let resume = msg(pb::coordinator_message::Msg::Resume(pb::Resume {
            revision: 10,
            digest: digest_of(&new),
            index_revision: 20,
        }));
        receive(resume, &mut partial, &out, &mut got).expect("current replica");
    }

    /// Parts are assembled: nothing is delivered until the last, then the whole verifies.
    #[test]
    fn parts_are_applied_only_whole() {
        let out = deliver();
        let mut got = Received::default();
        let mut partial = None;
        let all: Vec<pb::Entry> = (0..3)
            .map(|i| entry(&format!("underlay{i}"), UNDERLAY))
            .collect();
        let digest = digest_of(&all);
        for (i, e) in all.iter().enumerate() {
            let last = i == all.len() - 1;
            receive(
                snapshot(7, 9, vec![e.clone()], !last, &digest),
                &mut partial,
                &out,
                &mut got,
            )
            .expect("part");
            assert_eq!(
                out.current().is_some(),
                last,
                "delivered only after part {i}"
            );
        }
        assert_eq!(out.current().unwrap().objects.len(), 3);
        // A part of another message in the middle is a divergence, not a silent mix.
        receive(
            snapshot(8, 9, vec![all[0].clone()], true, "d1"),
            &mut partial,
            &out,
            &mut got,
        )
        .unwrap();
        let r = receive(
            snapshot(9, 9, vec![], false, "d2"),
            &mut partial,
            &out,
            &mut got,
        );
        assert!(matches!(r, Err(Refused::Diverged(_))), "{r:?}");
    }

    #[test]
    fn hello_carries_the_floor_and_the_schema() {
        let Some(pb::agent_message::Msg::Hello(h)) = hello("hv1", &(3, "d".into()), 77, false).msg
        else {
            panic!()
        };
        assert_eq!(
            (h.index_revision, h.schema_version),
            (77, sf_core::desired::SCHEMA_VERSION)
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_told_from_other_failures() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        let e = anyhow::Error::from(e).context("connecting");
        assert!(connection_refused(&e), "{e:#}");
        let other = anyhow::anyhow!("coordinator refused: index not loaded");
        assert!(!connection_refused(&other));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt).as_millis() as u64;
            let base = (200u64 << attempt.min(6)).min(10_000);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d} ms outside [{}, {base}]",
                base / 2
            );
        }
        assert!(backoff(30) <= Duration::from_secs(10));
    }

    #[test]
    fn nodes_spread_over_replicas() {
        let mut per_replica = [0usize; 3];
        for i in 0..300 {
            per_replica[first_endpoint(&format!("hv{i}"), 3)] += 1;
        }
        assert!(
            per_replica.iter().all(|&n| (70..=130).contains(&n)),
            "{per_replica:?}"
        );
        assert_eq!(first_endpoint("hv1", 3), first_endpoint("hv1", 3));
        assert_eq!(first_endpoint("hv1", 1), 0);
    }
}
