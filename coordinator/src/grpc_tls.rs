//! TLS of the gRPC listener, done here rather than by tonic so that the rustls configuration
//! is ours: TLS 1.3 session tickets sealed with keys that outlive the process.
//!
//! A coordinator restart makes every agent reconnect at once, and a full mutual-TLS
//! handshake (certificate chains sent and verified both ways, a signature each way) was most
//! of what each reconnect cost (`sf-bench fanout`, 5,000 agents, issue 22). An agent keeps its
//! client configuration across reconnects (`sf_agent::sync::Dialer`) and with it the tickets
//! the coordinator sent; a ticket this coordinator (or a replica, or its successor after a
//! restart) can open resumes the session: one key exchange, no certificate, no signature. The
//! ticket carries the client's certificate chain, so the node's identity
//! (`crate::identity`) is the one its certificate proved in the full handshake.
//!
//! The ticket keys are derived (HKDF-SHA256) from a secret file shared by the replicas
//! (`--tls-ticket-key-file`), one key per period of [`PERIOD_SECS`]; a ticket is accepted
//! in its own period and the next, then no key can open it (rustls' own ticketer rotates
//! the same way, with random keys). Without the file the secret is random per process:
//! tickets resume sessions only until the coordinator restarts. The file must be as secret
//! as the CA's key: whoever holds it can mint a ticket for any node. TLS 1.3 resumption in
//! rustls always runs a fresh key exchange (psk_dhe_ke), so the secret does not open past
//! traffic.
//!
//! Handshakes run in tasks of their own with a deadline (as the REST listener's), so a
//! silent client never holds up the others.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::{Stream, StreamExt};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long one ticket key seals new tickets; a ticket opens for up to two periods.
pub const PERIOD_SECS: u64 = 6 * 3600;

/// How long a client may take to complete the handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Handshakes in progress at once, beyond which accepting waits.
const HANDSHAKES_IN_FLIGHT: usize = 1024;

/// The server's configuration: its certificate and key, client certificates verified
/// against `ca` but optional (API clients authenticate with a token; AgentSync insists on
/// a certificate itself), HTTP/2, and sealed tickets (see the module docs).
pub fn server_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
    ticket_secret: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = crate::rest::tls::identity(cert, key)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("parsing {}", ca.display()))?)
            .with_context(|| format!("a CA certificate of {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let secret = match ticket_secret {
        Some(p) => read_secret(p)?,
        None => {
            let mut s = vec![0u8; 32];
            SystemRandom::new()
                .fill(&mut s)
                .map_err(|_| anyhow::anyhow!("no randomness for the ticket secret"))?;
            s
        }
    };
    cfg.ticketer = Arc::new(SealedTickets::new(&secret));
    Ok(Arc::new(cfg))
}

/// At least 32 bytes, whatever they are (e.g. `head -c 32 /dev/urandom`).
fn read_secret(p: &Path) -> anyhow::Result<Vec<u8>> {
    let s = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    anyhow::ensure!(
        s.len() >= 32,
        "{} holds {} bytes; a ticket secret needs at least 32",
        p.display(),
        s.len()
    );
    Ok(s)
}

/// Tickets sealed with ChaCha20-Poly1305 under a key per period derived from the secret.
/// A ticket is `period (8 bytes) | nonce (12) | ciphertext | tag`, the period authenticated
/// as associated data.
pub struct SealedTickets {
    prk: hkdf::Prk,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedTickets")
    }
}

impl SealedTickets {
    pub fn new(secret: &[u8]) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"stackfabric grpc tls tickets v1");
        SealedTickets {
            prk: salt.extract(secret),
            rng: SystemRandom::new(),
        }
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let info = period.to_be_bytes();
        let info = [info.as_slice()];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn seal_at(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let head = period.to_be_bytes();
        let mut body = plain.to_vec();
        self.key(period)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(head),
                &mut body,
            )
            .ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now: u64, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < 8 + NONCE_LEN {
            return None;
        }
        let (head, rest) = cipher.split_at(8);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let period = u64::from_be_bytes(head.try_into().ok()?);
        // This period's tickets and the last one's; none from the future.
        if period > now || now - period > 1 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = self
            .key(period)?
            .open_in_place(nonce, Aad::from(period.to_be_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

fn period_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / PERIOD_SECS
}

impl ProducesTickets for SealedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(period_now(), cipher)
    }
}

/// The TLS connections of `tcp`, each handshake in a task of its own (at most
/// [`HANDSHAKES_IN_FLIGHT`] at once); failed and timed-out handshakes are dropped.
pub fn incoming<S>(
    tcp: S,
    cfg: Arc<rustls::ServerConfig>,
    metrics: sf_metrics::CoordinatorMetrics,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>>
where
    S: Stream<Item = Result<TcpStream, std::io::Error>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(cfg);
    tcp.filter_map(|c| async move {
        match c {
            Ok(c) => Some(c),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    })
    .map(move |stream| {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await
        })
    })
    .buffer_unordered(HANDSHAKES_IN_FLIGHT)
    .filter_map(move |done| {
        let metrics = metrics.clone();
        async move {
            match done {
                Ok(Ok(Ok(tls))) => {
                    let resumed =
                        tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    match resumed {
                        true => metrics.tls_resumed_handshakes.inc(),
                        false => metrics.tls_full_handshakes.inc(),
                    };
                    Some(Ok(tls))
                }
                Ok(Ok(Err(e))) => {
                    tracing::debug!(error = %e, "gRPC TLS handshake failed");
                    None
                }
                Ok(Err(_)) => {
                    tracing::debug!("gRPC TLS handshake timed out");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC TLS handshake task failed");
                    None
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA, the coordinator's certificate and node hv1's, as PEM files in `dir`.
    fn pki(dir: &Path) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        for (name, eku) in [
            ("coordinator", rcgen::ExtendedKeyUsagePurpose::ServerAuth),
            ("hv1", rcgen::ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![eku];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
    }

    /// Serves one coordinator configuration; each accepted connection reports whether it
    /// was resumed and the client's certificate's common name, and gets one byte.
    async fn serve(
        dir: &Path,
        secret: &str,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<(bool, Option<String>)>,
    ) {
        let cfg = server_config(
            &dir.join("coordinator.pem"),
            &dir.join("coordinator.key"),
            &dir.join("ca.pem"),
            Some(&dir.join(secret)),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = tonic::transport::server::TcpIncoming::from(listener);
        let mut conns = Box::pin(incoming(
            tcp,
            cfg,
            sf_metrics::CoordinatorMetrics::register(&mut Default::default()),
        ));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(mut tls)) = conns.next().await {
                let (_, conn) = tls.get_ref();
                let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let cn = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::identity::common_name(c));
                let _ = tx.send((resumed, cn));
                let _ = tls.write_all(b"x").await;
                let _ = tls.flush().await;
            }
        });
        (addr, rx)
    }

    async fn dial(addr: std::net::SocketAddr, client: &Arc<rustls::ClientConfig>) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("coordinator").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        // Reading takes in the session tickets the server sent after its handshake.
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.unwrap();
    }

    #[tokio::test]
    async fn a_node_resumes_its_session_after_a_restart_and_keeps_its_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        pki(dir);
        std::fs::write(dir.join("secret"), [1u8; 32]).unwrap();
        std::fs::write(dir.join("other"), [2u8; 32]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("hv1.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("hv1.key")).unwrap();
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
        );
        let hv1 = Some("hv1".to_string());
        let (addr, mut seen) = serve(dir, "secret").await;
        dial(addr, &client).await;
        assert_eq!(seen.recv().await.unwrap(), (false, hv1.clone()));
        dial(addr, &client).await;
        assert_eq!(seen.recv().await.unwrap(), (true, hv1.clone()));
        // A restart (a new configuration from the same secret): still resumed, still hv1.
        let (addr, mut seen) = serve(dir, "secret").await;
        dial(addr, &client).await;
        assert_eq!(seen.recv().await.unwrap(), (true, hv1.clone()));
        // Another secret cannot open the tickets: a full handshake, the same identity.
        let (addr, mut seen) = serve(dir, "other").await;
        dial(addr, &client).await;
        assert_eq!(seen.recv().await.unwrap(), (false, hv1));
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let t = SealedTickets::new(&[7u8; 32]);
        let sealed = t.seal_at(100, b"session").unwrap();
        assert_eq!(t.open_at(100, &sealed).as_deref(), Some(&b"session"[..]));
        assert_eq!(t.open_at(101, &sealed).as_deref(), Some(&b"session"[..]));
        assert_eq!(t.open_at(102, &sealed), None);
        assert_eq!(t.open_at(99, &sealed), None);
    }

    #[test]
    fn another_secret_or_a_changed_byte_opens_nothing() {
        let t = SealedTickets::new(&[7u8; 32]);
        let sealed = t.seal_at(100, b"session").unwrap();
        // A restart with the same secret opens it; another secret does not.
        assert!(SealedTickets::new(&[7u8; 32])
            .open_at(100, &sealed)
            .is_some());
        assert_eq!(SealedTickets::new(&[8u8; 32]).open_at(100, &sealed), None);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(t.open_at(100, &bad), None, "byte {i} changed");
        }
        assert_eq!(t.open_at(100, &sealed[..10]), None);
    }
}
