//! [`KvStore`] on a real etcd cluster (v3 API, 3.4+), through `etcd-client`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::Mutex;
use tracing::warn;

use crate::{
    Compare, EventKind, KeyValue, KvStore, Op, Result, StoreError, TxnOutcome, WatchBatch,
    WatchEvent, WatchStream,
};

/// etcd-backed store. Cheap to clone; clones share the connections.
///
/// Like etcd's own Go client, it talks to one member at a time (pinned) and moves to the next
/// when that member fails, instead of balancing every request over all members: a balancer
/// keeps sending a share of requests to a dead member (each failing with "connection
/// refused") until it notices, which in a lease keep-alive is enough to lose the lease.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<Members>,
    /// One keep-alive stream per lease, reused across renewals, with its last use.
    keepers: Arc<Mutex<HashMap<i64, Keeper>>>,
}

type Keeper = (LeaseKeeper, LeaseKeepAliveStream, std::time::Instant);

/// A keep-alive stream unused this long is closed (reopened on the next renewal): leases
/// renewed once in a while, such as REST sessions, must not hold a stream each forever.
const KEEPER_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// One lazily connected client per member, and the member in use.
struct Members {
    clients: Vec<Client>,
    current: AtomicUsize,
}

/// Whether a failed request may be sent again (to another member).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, lease grants and keep-alives: on any unavailability.
    Idempotent,
    /// Writes: only when the request certainly never reached etcd (no connection, or the
    /// member refused it for having no leader). A write that timed out may have committed;
    /// the caller gets the error, like etcd's own client gives it.
    Unsent,
}

/// Attempts per request: every member twice.
fn attempts(members: usize) -> usize {
    (members * 2).max(3)
}

fn unsent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    matches!(e, etcd_client::Error::TransportError(_))
        || text.contains("ConnectError")
        || text.contains("tcp connect error")
        || text.contains("no leader")
}

fn unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Keys per range request when listing a prefix (see [`EtcdStore::list_range`]).
const LIST_PAGE: i64 = 50_000;

/// The largest range response the client accepts: 50,000 intent objects are ~10-15 MB.
const LIST_MESSAGE_MAX: usize = 64 << 20;

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: to the end of the keyspace.
    vec![0]
}

/// Client TLS towards etcd: the CA that signed the members' certificates and this process's
/// own certificate. With etcd's `--client-cert-auth` and auth enabled, the certificate's
/// common name is the etcd user, so the certificate alone decides which keys a node may write.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl EtcdTls {
    /// Reads the three PEM files; `None` when none is given, an error when only some are.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> std::io::Result<Option<Self>> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(EtcdTls {
                ca_pem: read(ca)?,
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            })),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "etcd TLS needs all three of --etcd-ca, --etcd-cert and --etcd-key",
            )),
        }
    }
}

/// The etcd connection flags every binary shares.
#[derive(clap::Args, Debug, Clone)]
pub struct EtcdArgs {
    /// etcd endpoints, comma separated ("https://10.0.0.1:2379,https://10.0.0.2:2379"): a
    /// request goes to another member when one is down.
    #[arg(
        long = "etcd-endpoints",
        env = "SF_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Root of StackFabric's keys in etcd.
    #[arg(
        long = "etcd-root",
        env = "SF_ETCD_ROOT",
        default_value = "/stackfabric"
    )]
    pub root: String,
    /// CA that signed the etcd members' certificates (PEM). With --etcd-cert and --etcd-key:
    /// etcd over TLS, authenticated as the certificate's common name.
    #[arg(long = "etcd-ca", env = "SF_ETCD_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// This process's etcd client certificate (PEM).
    #[arg(long = "etcd-cert", env = "SF_ETCD_CERT")]
    pub cert: Option<std::path::PathBuf>,
    #[arg(long = "etcd-key", env = "SF_ETCD_KEY")]
    pub key: Option<std::path::PathBuf>,
}

impl EtcdArgs {
    /// Plain connection to `endpoints` under the default root (tests, benchmarks).
    pub fn plain(endpoints: Vec<String>) -> Self {
        EtcdArgs {
            endpoints,
            root: "/stackfabric".into(),
            ca: None,
            cert: None,
            key: None,
        }
    }

    pub fn keys(&self) -> crate::keys::Keys {
        crate::keys::Keys::new(&self.root)
    }

    /// Reads the TLS files (if any) and connects.
    pub async fn connect(&self) -> std::result::Result<EtcdStore, ConnectError> {
        let tls = EtcdTls::from_files(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )
        .map_err(ConnectError::Tls)?;
        EtcdStore::connect_with(&self.endpoints, tls.as_ref())
            .await
            .map_err(ConnectError::Store)
    }
}

/// Why [`EtcdArgs::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("etcd TLS files: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Store(StoreError),
}

impl EtcdStore {
    /// Connects to any of `endpoints` ("http://host:2379") without TLS.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(endpoints, None).await
    }

    /// Connects to any of `endpoints`; with `tls`, over TLS ("https://host:2379") as the
    /// certificate's etcd user. The client balances over the endpoints and retries a request
    /// on another member when one is down.
    pub async fn connect_with(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Self> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(3))
            .with_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(3),
            );
        if let Some(t) = tls {
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&t.ca_pem))
                    .identity(Identity::from_pem(&t.cert_pem, &t.key_pem)),
            );
        }
        // Members without a leader (partitioned away) refuse requests instead of serving
        // stale reads or silent watches; the request then moves to another member.
        opts = opts.with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            // Lazy: nothing is dialled until the first request.
            clients.push(Client::connect([e], Some(opts.clone())).await?);
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoint".into()).into());
        }
        // Start at a different member in each process, so a fleet spreads over the cluster.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0)
            % clients.len();
        Ok(EtcdStore {
            members: Arc::new(Members {
                clients,
                current: AtomicUsize::new(start),
            }),
            keepers: Arc::default(),
        })
    }

    /// The member in use and its client.
    fn pick(&self) -> (usize, Client) {
        let i = self.members.current.load(Ordering::Relaxed) % self.members.clients.len();
        (i, self.members.clients[i].clone())
    }

    /// Moves off member `i` (unless another request already did).
    fn fail_over(&self, i: usize) {
        let next = (i + 1) % self.members.clients.len();
        if self
            .members
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            warn!(
                from = i,
                to = next,
                "etcd member unavailable; using the next one"
            );
        }
    }

    /// Runs `f` against the member in use, moving to the next member and trying again when
    /// the failure allows it (see [`Retry`]).
    /// Keys in `[from, end)` at `revision` (0: the current one), and the revision read at. A
    /// single range response over a large prefix would exceed a gRPC message, so this reads
    /// in pages, all at the first page's revision. etcd 3.4 walks (counts) the whole remaining
    /// range for every page, so the cost is ~ keys² / page: pages are large ([`LIST_PAGE`]
    /// keys, with the client's message limit raised to [`LIST_MESSAGE_MAX`]) and halve only
    /// when a page of large values does not fit.
    async fn list_range(
        &self,
        from: &[u8],
        end: &[u8],
        mut revision: i64,
    ) -> Result<(Vec<KeyValue>, i64)> {
        let mut from = from.to_vec();
        let mut out = Vec::new();
        let mut page = LIST_PAGE;
        loop {
            let mut opts = GetOptions::new().with_range(end.to_vec()).with_limit(page);
            if revision != 0 {
                opts = opts.with_revision(revision);
            }
            let resp = match self
                .call(Retry::Idempotent, |c| {
                    let (from, opts) = (from.clone(), opts.clone());
                    let mut kv = c.kv_client().max_decoding_message_size(LIST_MESSAGE_MAX);
                    async move { kv.get(from, Some(opts)).await }
                })
                .await
            {
                Ok(r) => r,
                Err(e) if page > 1 && e.to_string().contains("message length too large") => {
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if revision == 0 {
                revision = header_revision(resp.header());
            }
            out.extend(resp.kvs().iter().map(kv));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key returned.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((out, revision))
    }

    async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let tries = attempts(self.members.clients.len());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (i, client) = self.pick();
            match f(client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let moved = unsent(&e) || unavailable(&e);
                    if moved {
                        self.fail_over(i);
                    }
                    let again = match retry {
                        Retry::Idempotent => moved,
                        Retry::Unsent => unsent(&e),
                    };
                    if !again || attempt >= tries {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
                }
            }
        }
    }
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        lease: k.lease(),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(0)
}

#[async_trait::async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .call(
                Retry::Idempotent,
                |mut c| async move { c.get(key, None).await },
            )
            .await?;
        Ok(resp.kvs().first().map(kv))
    }

    /// Lists in pages, all read at the revision of the first page (one consistent snapshot);
    /// see [`EtcdStore::list_range`].
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.list_range(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0)
            .await
    }

    /// The two key ranges around `except`, the second read at the first's revision: at start-up
    /// the coordinator skips the allocation claims (most of the keys at scale) this way.
    async fn list_except(&self, prefix: &str, except: &str) -> Result<(Vec<KeyValue>, i64)> {
        let (p, x) = (prefix.as_bytes(), except.as_bytes());
        if !x.starts_with(p) {
            return self.list(prefix).await;
        }
        let (mut out, revision) = self.list_range(p, x, 0).await?;
        let (rest, _) = self
            .list_range(&prefix_end(x), &prefix_end(p), revision)
            .await?;
        out.extend(rest);
        Ok((out, revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let compares: Vec<EtcdCompare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::Absent(k) => EtcdCompare::create_revision(k, CompareOp::Equal, 0),
                Compare::Present(k) => EtcdCompare::create_revision(k, CompareOp::Greater, 0),
                Compare::ModRevision(k, r) => EtcdCompare::mod_revision(k, CompareOp::Equal, r),
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                    TxnOp::put(key, value, opts)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self
            .call(Retry::Unsent, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| match e {
                etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
                    StoreError::LeaseNotFound(0)
                }
                e => e.into(),
            })?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header()),
        })
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let stream = self
            .call(Retry::Idempotent, |mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        let (requests, responses) = stream.split();
        tokio::spawn(request_progress(requests));
        let out = responses.filter_map(move |item| async move {
            match item {
                Err(e) => Some(Err(StoreError::from(e))),
                Ok(resp) => {
                    if resp.compact_revision() > 0 {
                        return Some(Err(StoreError::Compacted {
                            requested: start_revision,
                            compacted: resp.compact_revision(),
                        }));
                    }
                    if resp.canceled() {
                        return Some(Err(StoreError::WatchEnded(resp.cancel_reason().into())));
                    }
                    if resp.created() {
                        return None;
                    }
                    if resp.events().is_empty() {
                        // A progress notification: every event up to this revision was sent.
                        let revision = header_revision(resp.header());
                        return (revision > 0).then(|| {
                            Ok(WatchBatch {
                                revision,
                                events: vec![],
                            })
                        });
                    }
                    let mut revision = 0;
                    let events = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let k = e.kv()?;
                            revision = revision.max(k.mod_revision());
                            Some(WatchEvent {
                                kind: match e.event_type() {
                                    EventType::Put => EventKind::Put,
                                    EventType::Delete => EventKind::Delete,
                                },
                                kv: kv(k),
                            })
                        })
                        .collect();
                    Some(Ok(WatchBatch { revision, events }))
                }
            }
        });
        Ok(Box::pin(split_by_revision(out)))
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        // A grant that timed out may have created a lease nobody renews: it expires alone.
        Ok(self
            .call(Retry::Idempotent, |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?
            .id())
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<i64> {
        let mut keepers = self.keepers.lock().await;
        keepers.retain(|id, (_, _, used)| *id == lease || used.elapsed() < KEEPER_IDLE);
        let tries = attempts(self.members.clients.len());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (member, client) = self.pick();
            let result = async {
                if let std::collections::hash_map::Entry::Vacant(slot) = keepers.entry(lease) {
                    let (keeper, stream) = client.clone().lease_keep_alive(lease).await?;
                    slot.insert((keeper, stream, std::time::Instant::now()));
                }
                let (keeper, stream, used) = keepers.get_mut(&lease).expect("inserted above");
                *used = std::time::Instant::now();
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
                    Some(_) => Err(StoreError::LeaseNotFound(lease)),
                    None => Err(StoreError::WatchEnded(
                        "lease keep-alive stream closed".into(),
                    )),
                }
            }
            .await;
            let Err(e) = result else {
                return result;
            };
            // The stream is bound to one member: open a new one on the next attempt.
            keepers.remove(&lease);
            let e = match e {
                StoreError::Etcd(etcd_client::Error::GRpcStatus(s))
                    if s.message().contains("not found") =>
                {
                    StoreError::LeaseNotFound(lease)
                }
                StoreError::Etcd(etcd_client::Error::LeaseKeepAliveError(m))
                    if m.contains("not found") =>
                {
                    StoreError::LeaseNotFound(lease)
                }
                e => e,
            };
            let retry = match &e {
                StoreError::LeaseNotFound(_) => false,
                StoreError::Etcd(inner) => unsent(inner) || unavailable(inner),
                // The member closed the stream (it stopped or lost its leader).
                StoreError::WatchEnded(_) => true,
                _ => false,
            };
            if !retry || attempt >= tries {
                return Err(e);
            }
            self.fail_over(member);
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
        }
    }

    async fn lease_revoke(&self, lease: i64) -> Result<()> {
        self.keepers.lock().await.remove(&lease);
        self.call(Retry::Idempotent, |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await?;
        Ok(())
    }
}

/// Asks etcd for a progress notification every [`crate::PROGRESS_INTERVAL`] for as long as the
/// watch lives (etcd answers once the watcher has caught up, with the store's revision; the
/// periodic `progress_notify` alone comes only every ten minutes by default).
async fn request_progress(mut requests: etcd_client::WatchRequestSender) {
    let mut tick = tokio::time::interval(crate::PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Fails once the watch's stream is gone: the watch was dropped.
        if requests.request_progress().await.is_err() {
            return;
        }
    }
}

/// etcd may deliver events of several revisions in one response; split them so each batch is
/// exactly one revision, as the trait promises. Progress notifications pass through.
fn split_by_revision(
    s: impl futures::Stream<Item = Result<WatchBatch>> + Send + 'static,
) -> impl futures::Stream<Item = Result<WatchBatch>> + Send + 'static {
    s.flat_map(|item| {
        let batches: Vec<Result<WatchBatch>> = match item {
            Err(e) => vec![Err(e)],
            Ok(b) if b.is_progress() => vec![Ok(b)],
            Ok(b) => {
                let mut out: Vec<WatchBatch> = Vec::new();
                for e in b.events {
                    let rev = e.kv.mod_revision;
                    match out.last_mut() {
                        Some(last) if last.revision == rev => last.events.push(e),
                        _ => out.push(WatchBatch {
                            revision: rev,
                            events: vec![e],
                        }),
                    }
                }
                out.into_iter().map(Ok).collect()
            }
        };
        futures::stream::iter(batches)
    })
}
