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
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

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
        let mut msg = String::new();
        for cause in self.0.chain() {
            let text = cause.to_string();
            if msg.contains(&text) {
                continue;
            }
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        f.write_str(&msg)
    }
}

impl std::error::Error for SetupError {}

/// Adds `authorization: Bearer <token>` to each outgoing request when a token is configured.
#[derive(Clone)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
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
        Ok(Self { header })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.header {
            req.metadata_mut().insert("authorization", v.clone());
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

/// Opens a channel to the coordinator and wraps it in an authenticated FabricApi client.
pub async fn connect(opts: &GlobalOpts) -> Result<Client, SetupError> {
    connect_inner(opts).await.map_err(SetupError)
}

async fn connect_inner(opts: &GlobalOpts) -> anyhow::Result<Client> {
    let token = load_token(opts)?;
    let interceptor = AuthInterceptor::new(token.as_deref())?;
    let timeout = Duration::from_secs(opts.timeout.max(1));

    let mut endpoint = Channel::from_shared(opts.endpoint.clone())
        .with_context(|| format!("invalid endpoint {:?}", opts.endpoint))?
        .connect_timeout(timeout)
        .timeout(timeout);

    if opts.endpoint.starts_with("https://") {
        let ca_path = opts.ca.as_ref().ok_or_else(|| {
            anyhow!(
                "endpoint {} uses https: pass --ca (or SF_CA) with the coordinator's CA certificate",
                opts.endpoint
            )
        })?;
        let pem = std::fs::read(ca_path)
            .with_context(|| format!("cannot read CA file {}", ca_path.display()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(opts.server_name.clone());
        endpoint = endpoint
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    }

    let unreachable = || format!("cannot reach coordinator at {}", opts.endpoint);
    // connect_timeout bounds the TCP connect; the outer timeout also bounds the TLS handshake.
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow!("timed out after {}s", timeout.as_secs()))
        .with_context(unreachable)?
        .with_context(unreachable)?;

    Ok(FabricApiClient::with_interceptor(channel, interceptor))
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
}
