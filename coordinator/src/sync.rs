//! The southbound AgentSync service. Each agent opens one bidirectional stream, proves its
//! identity with its client certificate and says hello with the revision and digest it last
//! applied. If that digest equals its current desired state the agent gets a `Resume` (nothing
//! resent: a reconnect or coordinator restart causes no snapshot storm); otherwise one
//! `Snapshot`. After that every change of the node's desired state is sent as a `Delta`
//! against what this stream last sent. Acks carry the revision the agent applied.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use sf_core::desired::{DesiredDelta, NodeDesired};
use sf_proto::v1 as pb;
use sf_proto::v1::agent_sync_server::AgentSync;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::fabric::Fabric;
use crate::identity::peer_node;

pub struct Sync {
    pub fabric: Arc<Fabric>,
    /// Ignore agents' applied digests and always start a stream with a full snapshot
    /// (benchmarks compare it with resume; an operator's last resort against a digest bug).
    pub always_snapshot: bool,
}

fn entry(key: &str, obj: &sf_core::desired::DesiredObject) -> pb::Entry {
    pb::Entry {
        key: key.to_string(),
        value: sf_core::desired::encode_object(obj),
    }
}

fn snapshot(d: &NodeDesired, intent_time_ms: u64) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Snapshot(pb::Snapshot {
            revision: d.revision,
            digest: d.digest(),
            entries: d.objects.iter().map(|(k, v)| entry(k, v)).collect(),
            intent_time_ms,
        })),
    }
}

fn delta(
    revision: u64,
    digest: String,
    d: DesiredDelta,
    intent_time_ms: u64,
) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Delta(pb::Delta {
            revision,
            digest,
            upserts: d.upserts.iter().map(|(k, v)| entry(k, v)).collect(),
            deletes: d.deletes,
            intent_time_ms,
        })),
    }
}

/// Counts an open stream for as long as it lives.
struct StreamGauge(Arc<Fabric>);
impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.agent_streams.dec();
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

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
        if hello.node != identity {
            warn!(certificate = %identity, asked = %hello.node, "node asked for another node's scope");
            return Err(Status::permission_denied(format!(
                "certificate identifies node {identity:?}; it may not sync node {:?}",
                hello.node
            )));
        }
        let mut rx = self.fabric.subscribe(&identity);
        let fabric = self.fabric.clone();
        let always_snapshot = self.always_snapshot;
        let (tx, out) = mpsc::channel::<Result<pb::CoordinatorMessage, Status>>(16);
        let span = info_span!("sync", node = %identity);
        tokio::spawn(
            async move {
                info!(applied = hello.applied_revision, "agent connected");
                fabric.metrics.agent_streams.inc();
                let _gauge = StreamGauge(fabric.clone());
                let mut last_acked = hello.applied_revision;
                // Wait until the node is in the inventory.
                let first = match rx.wait_for(|d| d.is_some()).await {
                    Ok(d) => d.clone().expect("waited for Some"),
                    Err(_) => return,
                };
                let msg = if !always_snapshot && first.digest() == hello.applied_digest {
                    fabric.metrics.sync_resumes.inc();
                    info!(revision = first.revision, "resume: agent is current");
                    pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::Resume(pb::Resume {
                            revision: first.revision,
                            digest: first.digest(),
                        })),
                    }
                } else {
                    info!(revision = first.revision, objects = first.objects.len(), "snapshot");
                    fabric.metrics.sync_snapshots.inc();
                    snapshot(&first, fabric.stamp_of(first.revision))
                };
                fabric.metrics.sync_bytes.inc_by(msg.encoded_len() as u64);
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                let mut last: Arc<NodeDesired> = first;
                loop {
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() { return; }
                            let Some(next) = rx.borrow_and_update().clone() else {
                                // Removed from the inventory: keep the stream, send nothing.
                                continue;
                            };
                            let d = last.delta_to(&next);
                            if d.is_empty() { last = next; continue; }
                            debug!(revision = next.revision, upserts = d.upserts.len(), deletes = d.deletes.len(), "delta");
                            let stamp = fabric.stamp_of(next.revision);
                            let msg = delta(next.revision, next.digest(), d, stamp);
                            fabric.metrics.sync_deltas.inc();
                            fabric.metrics.sync_bytes.inc_by(msg.encoded_len() as u64);
                            if tx.send(Ok(msg)).await.is_err() { return; }
                            last = next;
                        }
                        msg = inbound.message() => match msg {
                            Ok(Some(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Ack(ack)) })) => {
                                fabric.metrics.acks.inc();
                                fabric.record_ack(&identity, ack.revision, &ack.digest, &ack.errors);
                                if ack.errors.is_empty() {
                                    debug!(revision = ack.revision, "ack");
                                    // Once per node and revision: the coordinator's view of
                                    // intent-to-dataplane latency.
                                    if ack.revision > last_acked {
                                        let stamp = fabric.stamp_of(ack.revision);
                                        if stamp > 0 {
                                            fabric.metrics.intent_to_ack.observe(sf_metrics::seconds_since(stamp));
                                        }
                                        last_acked = ack.revision;
                                    }
                                } else {
                                    fabric.metrics.ack_errors.inc();
                                    warn!(revision = ack.revision, errors = ?ack.errors, "agent reported errors");
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => {
                                info!("agent disconnected");
                                fabric.forget_acks(&identity);
                                return;
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
