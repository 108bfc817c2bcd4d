//! Connection to the coordinator: builds the tonic channel (plain or TLS with the operator's CA
//! root), applies connect/request timeouts, and attaches the bearer credential to every call
//! through an interceptor. Failures here are `SetupError`s, which `main` maps to exit code 2.
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use sf_proto::v1::fabric_api_client::FabricApiClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::cli::GlobalOpts;

/// The FabricApi client type every command uses.
pub type Client = FabricApiClient<InterceptedService<Channel, AuthInterceptor>>;

/// A failure before any RPC could be issued: bad local configuration or an unreachable
/// coordinator. Distinguished from RPC failures so `main` can exit with code 2.
#[derive(Debug)]
pub struct SetupError(pub anyhow::Error);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Transport errors often repeat their source's text in their own message; print each
        // distinct cause once.
        f.write_str(&cause_text(&self.0))
    }
}

impl std::error::Error for SetupError {}

/// Adds `authorization: Bearer <token>` to each outgoing request when a token is configured,
/// and `sf-dry-run: true` under `--dry-run` (the coordinator validates a write, writes nothing).
#[derive(Clone)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
    dry_run: bool,
}

impl AuthInterceptor {
    /// Builds the interceptor; fails if the token cannot be carried in gRPC metadata.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let header = match token {
            None => None,
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| anyhow!("token contains characters not allowed in a header"))?,
            ),
        };
        Ok(Self {
            header,
            dry_run: false,
        })
    }

    /// Marks every request as a dry run.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.header {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if self.dry_run {
            req.metadata_mut()
                .insert("sf-dry-run", MetadataValue::from_static("true"));
        }
        Ok(req)
    }
}

/// Resolves the bearer token: `--token` wins over `--token-file`; none means no header.
fn load_token(opts: &GlobalOpts) -> anyhow::Result<Option<String>> {
    if let Some(t) = &opts.token {
        let t = t.trim();
        if t.is_empty() {
            bail!("--token (SF_TOKEN) is empty");
        }
        return Ok(Some(t.to_string()));
    }
    if let Some(path) = &opts.token_file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
        let t = raw.trim();
        if t.is_empty() {
            bail!("token file {} is empty", path.display());
        }
        return Ok(Some(t.to_string()));
    }
    Ok(None)
}

/// The coordinator replicas named by `--endpoint` (a comma separated list), in order, and
/// what went wrong with each one already tried. `connect_next` hands out a client for the next
/// replica that accepts a connection; once none is left, its error names every replica.
pub struct Replicas {
    opts: GlobalOpts,
    urls: Vec<String>,
    next: usize,
    failures: Vec<(String, String)>,
}

impl Replicas {
    /// Parses the endpoint list; fails (a setup error) when it names no endpoint.
    pub fn new(opts: &GlobalOpts) -> Result<Self, SetupError> {
        let urls = parse_endpoints(opts.endpoint()).map_err(SetupError)?;
        Ok(Self {
            opts: opts.clone(),
            urls,
            next: 0,
            failures: Vec::new(),
        })
    }

    /// Connects to the next replica that completes TCP (and TLS) within `--timeout`. A replica
    /// skipped here was sent nothing, so a write may safely move on past it.
    pub async fn connect_next(&mut self) -> Result<(Client, String), SetupError> {
        while let Some(url) = self.urls.get(self.next).cloned() {
            self.next += 1;
            match connect_one(&self.opts, &url).await {
                Ok(client) => return Ok((client, url)),
                // Local configuration errors are the same for every replica: stop at once.
                Err(ConnectError::Setup(e)) => return Err(SetupError(e)),
                Err(ConnectError::Unreachable(e)) => self.record_failure(&url, &e),
            }
        }
        Err(self.exhausted())
    }

    /// Remembers why `url` could not be used, for the final error.
    pub fn record_failure(&mut self, url: &str, err: &anyhow::Error) {
        self.failures.push((url.to_string(), cause_text(err)));
    }

    fn exhausted(&self) -> SetupError {
        match self.failures.as_slice() {
            [(url, why)] => SetupError(anyhow!("cannot reach coordinator at {url}: {why}")),
            all => {
                let each: Vec<String> = all.iter().map(|(u, w)| format!("{u}: {w}")).collect();
                SetupError(anyhow!(
                    "cannot reach any of {} coordinator replicas: {}",
                    all.len(),
                    each.join("; ")
                ))
            }
        }
    }
}

/// Splits `--endpoint` on commas, trimming blanks; at least one endpoint is required.
fn parse_endpoints(raw: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        bail!("--endpoint (SF_ENDPOINT) names no coordinator");
    }
    Ok(urls)
}

/// Every distinct cause of `err`, once, joined by ": " (see `SetupError`'s Display).
fn cause_text(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

enum ConnectError {
    /// Bad local configuration (token, CA file, URL): no replica would work.
    Setup(anyhow::Error),
    /// This replica did not accept a connection in time.
    Unreachable(anyhow::Error),
}

/// Opens a channel to one coordinator and wraps it in an authenticated FabricApi client.
async fn connect_one(opts: &GlobalOpts, url: &str) -> Result<Client, ConnectError> {
    let token = load_token(opts).map_err(ConnectError::Setup)?;
    let interceptor = AuthInterceptor::new(token.as_deref())
        .map_err(ConnectError::Setup)?
        .with_dry_run(opts.dry_run);
    let timeout = Duration::from_secs(opts.timeout.max(1));
    let endpoint = endpoint_for(opts, url, timeout).map_err(ConnectError::Setup)?;
    // connect_timeout bounds the TCP connect; the outer timeout also bounds the TLS handshake.
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow!("timed out after {}s", timeout.as_secs()))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .map_err(ConnectError::Unreachable)?;
    Ok(FabricApiClient::with_interceptor(channel, interceptor))
}

/// The tonic endpoint for `url` with timeouts and, for https, the operator's CA.
fn endpoint_for(opts: &GlobalOpts, url: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    let endpoint = Channel::from_shared(url.to_string())
        .with_context(|| format!("invalid endpoint {url:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca_path = opts.ca.as_ref().ok_or_else(|| {
        anyhow!(
            "endpoint {url} uses https: pass --ca (or SF_CA) with the coordinator's CA certificate"
        )
    })?;
    let pem = std::fs::read(ca_path)
        .with_context(|| format!("cannot read CA file {}", ca_path.display()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name(opts.server_name().to_string());
    endpoint
        .tls_config(tls)
        .context("invalid TLS configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interceptor_adds_bearer_header() {
        let mut i = AuthInterceptor::new(Some("s3cret")).unwrap();
        let req = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer s3cret"
        );
        let mut none = AuthInterceptor::new(None).unwrap();
        let req = none.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(req.metadata().get("sf-dry-run").is_none());
        let mut dry = AuthInterceptor::new(None).unwrap().with_dry_run(true);
        let req = dry.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("sf-dry-run").unwrap(), "true");
    }

    #[test]
    fn setup_error_prints_each_cause_once() {
        let e = anyhow::anyhow!("tcp connect error")
            .context("tcp connect error")
            .context("cannot reach coordinator at http://x");
        assert_eq!(
            SetupError(e).to_string(),
            "cannot reach coordinator at http://x: tcp connect error"
        );
    }

    #[test]
    fn rejects_token_with_newline() {
        assert!(AuthInterceptor::new(Some("a\nb")).is_err());
    }
    fn opts(endpoint: &str) -> GlobalOpts {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "sfctl",
            "--endpoint",
            endpoint,
            "--timeout",
            "2",
            "status",
        ])
        .unwrap();
        cli.global
    }

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn endpoint_list_is_split_and_trimmed() {
        assert_eq!(
            parse_endpoints("https://a:1, https://b:2,,https://c:3 ").unwrap(),
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert!(parse_endpoints(" , ").is_err());
    }

    #[tokio::test]
    async fn connect_moves_on_from_a_closed_replica_to_a_listening_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = format!("http://{}", listener.local_addr().unwrap());
        // Accept and keep connections open (an HTTP/2 client needs no answer to connect).
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let dead = format!("http://127.0.0.1:{}", closed_port());
        let mut replicas = Replicas::new(&opts(&format!("{dead},{live}"))).unwrap();
        let (_client, url) = replicas.connect_next().await.unwrap();
        assert_eq!(url, live);
        // The next call has no replica left and names the one that failed.
        let err = replicas.connect_next().await.err().unwrap().to_string();
        assert!(err.contains(&dead), "{err}");
    }

    #[tokio::test]
    async fn the_error_names_every_replica_that_failed() {
        let a = format!("http://127.0.0.1:{}", closed_port());
        let b = format!("http://127.0.0.1:{}", closed_port());
        let mut replicas = Replicas::new(&opts(&format!("{a},{b}"))).unwrap();
        let err = replicas.connect_next().await.err().unwrap().to_string();
        assert!(
            err.starts_with("cannot reach any of 2 coordinator replicas"),
            "{err}"
        );
        assert!(err.contains(&a) && err.contains(&b), "{err}");
        // One replica keeps the single-endpoint message.
        let mut one = Replicas::new(&opts(&a)).unwrap();
        let err = one.connect_next().await.err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("cannot reach coordinator at {a}: ")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_local_setup_error_stops_at_once() {
        let a = format!("https://127.0.0.1:{}", closed_port());
        let b = format!("https://127.0.0.1:{}", closed_port());
        // https without --ca: the same for every replica, reported as such.
        let mut replicas = Replicas::new(&opts(&format!("{a},{b}"))).unwrap();
        let err = replicas.connect_next().await.err().unwrap().to_string();
        assert!(err.contains("pass --ca"), "{err}");
    }
}
