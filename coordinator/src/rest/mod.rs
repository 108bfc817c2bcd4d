//! The Netris-compatible REST API CloudStack's Netris provider drives (contract:
//! `docs/contract/netris-api.md`), served on its own listener (`--rest-listen`; HTTPS with
//! `--rest-tls-cert`/`--rest-tls-key`, as the lab and the packaged units run it).
//!
//! # Endpoints
//!
//! Every answer is `{"isSuccess", "message", "data"}`; failures carry the HTTP status (400 bad
//! input or malformed JSON, 401 no session, 404 unknown id or reference, 409 duplicate name with
//! other content, object in use, or a raced write; 413 body over 1 MiB; 429 too many logins,
//! with `Retry-After`; 503 etcd unavailable). Limits: [`limits`].
//!
//! - Session: `POST /api/auth` (JSON `{user, password}` or form `user=…&password=…`; sets the
//!   `connect.sid` cookie), `GET /api/auth` (200 with a live session, else 401),
//!   `DELETE /api/auth` (log out). Everything else needs the cookie.
//! - `GET /api/sites` (the one site, id 1, `--rest-site`), `GET /api/tenants`.
//! - v2: `vpc` (`GET`, `POST`, `GET|PUT|DELETE /{id}`, `GET /{id}/resources`), `ipam`
//!   (`GET /api/v2/ipam` as a tree, `GET ipam/subnets`, `GET ipam/allocations`,
//!   `POST ipam/allocation`, `PUT|DELETE ipam/allocation/{id}`, same for `ipam/subnet`),
//!   `vnet`, `nat`, `l4lb` (`GET`, `POST`, `GET|PUT|DELETE /{id}`).
//! - v1: `acl` and `routes` (`GET`, `POST`, `PUT` with the id in the body, `DELETE` with
//!   `{"id": [..]}` / `{"id": n}` in the body; `DELETE /{id}` too).
//! - Lists filter by the `vpc` (id or name) and `site` (id or name) query parameters, and by
//!   the SDK's repeated `filterByVpc` / `filterBySites` (ids).
//! - Answers follow the Netris Java SDK's Gson models (`docs/contract/netris-sdk-models.md`), checked
//!   by `tests/rest_contract.rs`; headers go out Title-Case ([`serve_title_case`]).
//!
//! # Mapping onto StackFabric's model
//!
//! - Netris tenant = StackFabric tenant of the same name. `GET /api/tenants` lists every
//!   StackFabric tenant with a Netris id; the admin tenant CloudStack is configured with
//!   (`--rest-admin-tenant`, default `Admin`) is created in StackFabric on that first call.
//! - The System VPC (id 1, `isSystem`, `isDefault`) is built in. An IPAM allocation in it is a
//!   StackFabric **pool** (site `--rest-fabric-site`); a pool with exactly that CIDR that
//!   already exists (e.g. the lab's `public`) is adopted and left in place on delete. Its `nat`
//!   and `load-balancer` subnets (the /32s CloudStack reserves) must lie in such an allocation,
//!   so every public address CloudStack uses is in a pool; NAT and LB addresses are checked
//!   against pools by sf-core as for sfctl.
//! - A tenant VPC is only a record until CloudStack posts its IPAM allocation (the VPC CIDR);
//!   the allocation then creates the StackFabric **VPC** with that CIDR, named after the Netris
//!   VPC, and owns it: deleting the allocation deletes the VPC (refused while it holds tiers,
//!   NAT, routes or LBs). Further allocations of the same VPC are recorded but do not widen it.
//! - vnet → **network** (tier) with VNI `vxlanID` (allocated if 0), gateway
//!   `gateways[0].prefix`, CIDR from the VPC's `common` subnet holding the gateway or else the
//!   gateway prefix's network. Tier subnets are records only.
//! - IPv6: an IPv6 allocation of the System VPC (a zone's IPv6 range) is an IPv6 pool of the
//!   fabric site; a pool of the site that holds it (the same prefix, or a larger block the
//!   operator made, as a zone's public IPv6 range is often a /64 of the site's block) is
//!   adopted. A tenant VPC's IPv6 allocations (CloudStack posts one per tier, the tier's /64,
//!   unless one of the VPC's allocations holds it already) are its `ipv6_ranges`. A vnet's
//!   second gateway (`addr/64` or the bare `…::1`) makes the tier dual-stack with that /64, on
//!   POST or on a later PUT.
//! - nat: SNAT → source NAT (`snatToIP`; the rule covers the whole VPC, `sourceAddress` is
//!   kept but not used), DNAT TCP/UDP → port forward, DNAT protocol ALL → static NAT.
//!   `state: disabled` keeps the record without a StackFabric rule.
//! - l4lb → **load balancer** (`healthCheck` None/TCP/HTTP, weights 1, Maglev table of the
//!   default size; `status: disable` keeps only the record; `automatic` picks the first free
//!   address of the System VPC's `load-balancer` subnets).
//! - routes → **static route**; the Netris name is the prefix (CloudStack identifies its routes
//!   by prefix, all routes of a VPC share one description), unique per VPC.
//! - acl → rules of the tier's **ACL list** when `dst_prefix` (ingress) or `src_prefix`
//!   (egress) is the CIDR of a tier of the VPC ([`acl_map`]); System-VPC records naming an LB's
//!   VIP/32 become that LB's source CIDRs. Any other record is stored and listed back but not
//!   enforced, and its answer's message says so.
//! - StackFabric names are the Netris names when valid (`[A-Za-z0-9._-]{1,64}`, CloudStack's
//!   `D1-A2-Z1-V5-…` names are), else sanitized with a `-n<id>` suffix ([`wire::sf_name`]).
//!   A rename (`PUT`) changes the Netris name only; the StackFabric name stays.
//! - Creates are idempotent by name (per tenant and kind): posting an existing name with the
//!   same content returns the existing object; with other content it is a 409.
//!
//! The etcd layout of the REST metadata is in [`meta`]; the coordinator's index keeps it in
//! memory from its watch (`Fabric::rest_db`), so requests do not read etcd. Writes run under
//! the coordinator's write lock, validate with sf-core against the index, commit one guarded
//! transaction built with sf-store's write surface and wait until the index has it, like the
//! gRPC API.

pub mod acl_map;
pub mod auth;
mod handlers;
pub mod limits;
pub mod meta;
pub mod tls;
pub mod wire;
#[cfg(test)]
mod wire_props;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::fabric::Fabric;

/// Default of `--rest-max-sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 64;

/// REST settings (from `sf-coordinator`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct RestArgs {
    /// Listen address of the Netris-compatible REST API; none when absent.
    #[arg(long, env = "SF_REST_LISTEN")]
    pub rest_listen: Option<SocketAddr>,
    /// PEM certificate chain: serve HTTPS instead of plain HTTP (with --rest-tls-key).
    #[arg(long, env = "SF_REST_TLS_CERT", requires = "rest_tls_key")]
    pub rest_tls_cert: Option<PathBuf>,
    /// PEM private key of --rest-tls-cert.
    #[arg(long, env = "SF_REST_TLS_KEY", requires = "rest_tls_cert")]
    pub rest_tls_key: Option<PathBuf>,
    /// File of REST users, `user:<argon2 hash>` per line (`sf-coordinator hash-password`).
    #[arg(long, env = "SF_REST_USERS_FILE")]
    pub rest_users_file: Option<PathBuf>,
    /// Site name the REST API shows (CloudStack's `sitename`).
    #[arg(long, env = "SF_REST_SITE", default_value = "lab")]
    pub rest_site: String,
    /// StackFabric site (nodes' `site`) that REST-created VPCs and pools belong to.
    #[arg(long, env = "SF_REST_FABRIC_SITE", default_value = "")]
    pub rest_fabric_site: String,
    /// Tenant CloudStack is configured with (`tenantname`); created on first use.
    #[arg(long, env = "SF_REST_ADMIN_TENANT", default_value = "Admin")]
    pub rest_admin_tenant: String,
    /// Seconds a REST session lives without use (default 30 days: CloudStack logs in once and
    /// never again, so a shorter idle lifetime strands an idle provider; see ARCHITECTURE.md).
    #[arg(long, env = "SF_REST_SESSION_TTL", default_value_t = 30 * 24 * 3600)]
    pub rest_session_ttl: u64,
    /// Live sessions one user may hold; a login beyond it ends that user's oldest session
    /// (see ARCHITECTURE.md, "REST limits").
    #[arg(long, env = "SF_REST_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS)]
    pub rest_max_sessions: usize,
}

/// Shared state of the REST handlers.
pub struct Rest {
    pub fabric: Arc<Fabric>,
    pub users: auth::Users,
    pub sessions: auth::Sessions,
    pub site: String,
    pub fabric_site: String,
    pub admin_tenant: String,
    pub keys: meta::RestKeys,
    /// Login rate limits and the bound on concurrent password checks.
    pub login_guard: limits::LoginGuard,
    /// Answers of unfiltered lists (CloudStack lists VPCs and NAT rules unfiltered on nearly
    /// every operation), per list, tagged with the index revision they were rendered at.
    list_cache: std::sync::Mutex<std::collections::HashMap<&'static str, (i64, axum::body::Bytes)>>,
}

impl Rest {
    /// State with the default session cap ([`DEFAULT_MAX_SESSIONS`]).
    pub fn new(
        fabric: Arc<Fabric>,
        users: auth::Users,
        session_ttl: Duration,
        site: &str,
        fabric_site: &str,
        admin_tenant: &str,
    ) -> Arc<Self> {
        let sessions = SessionLimits {
            ttl: session_ttl,
            max_per_user: DEFAULT_MAX_SESSIONS,
        };
        Self::with_sessions(fabric, users, sessions, site, fabric_site, admin_tenant)
    }

    pub fn with_sessions(
        fabric: Arc<Fabric>,
        users: auth::Users,
        sessions: SessionLimits,
        site: &str,
        fabric_site: &str,
        admin_tenant: &str,
    ) -> Arc<Self> {
        let keys = meta::RestKeys::new(fabric.store().keys().root());
        let sessions = auth::Sessions::new(
            sessions.ttl,
            fabric.store().kv().clone(),
            fabric.store().keys().root(),
        )
        .with_max_per_user(sessions.max_per_user);
        Arc::new(Rest {
            fabric,
            users,
            sessions,
            site: site.into(),
            fabric_site: fabric_site.into(),
            admin_tenant: admin_tenant.into(),
            keys,
            login_guard: limits::LoginGuard::new(),
            list_cache: Default::default(),
        })
    }
}

/// Lifetime and number of REST sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Idle lifetime.
    pub ttl: Duration,
    /// Live sessions per user (at least 1).
    pub max_per_user: usize,
}

/// The axum router of the REST API.
pub fn router(state: Arc<Rest>) -> axum::Router {
    handlers::router(state)
}

/// Starts the REST listener if configured; returns when it is bound.
pub async fn spawn(args: &RestArgs, fabric: Arc<Fabric>) -> anyhow::Result<()> {
    let Some(addr) = args.rest_listen else {
        return Ok(());
    };
    let file = args
        .rest_users_file
        .as_ref()
        .context("--rest-listen needs --rest-users-file")?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let users =
        auth::Users::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    anyhow::ensure!(!users.is_empty(), "{} holds no user", file.display());
    anyhow::ensure!(
        sf_core::validate::validate_name("tenant", &args.rest_admin_tenant).is_ok(),
        "--rest-admin-tenant {:?} is not a valid tenant name",
        args.rest_admin_tenant
    );
    let state = Rest::with_sessions(
        fabric,
        users,
        SessionLimits {
            ttl: Duration::from_secs(args.rest_session_ttl.max(1)),
            max_per_user: args.rest_max_sessions.max(1),
        },
        &args.rest_site,
        &args.rest_fabric_site,
        &args.rest_admin_tenant,
    );
    let tls = match (&args.rest_tls_cert, &args.rest_tls_key) {
        (Some(c), Some(k)) => Some(tls::server_config(c, k)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding REST listener {addr}"))?;
    tracing::info!(listen = %addr, tls = tls.is_some(), "serving the Netris-compatible REST API");
    let app = router(state);
    match tls {
        Some(cfg) => {
            let listener = tls::TlsListener::new(listener, cfg)?;
            tokio::spawn(serve_title_case(listener, app));
        }
        None => {
            tokio::spawn(serve_title_case(listener, app));
        }
    }
    Ok(())
}

/// Serves `app` over HTTP/1 with Title-Case header names (`Set-Cookie`, `Content-Type`):
/// the Netris Java SDK (okhttp 2.7.5) keeps header names as sent and looks the login cookie
/// up under exactly `Set-Cookie`; hyper's default (and `axum::serve`) sends lowercase names.
/// Each request carries the peer's address as [`axum::extract::ConnectInfo`] (login limits).
pub async fn serve_title_case<L>(mut listener: L, app: axum::Router)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Send + 'static,
{
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    loop {
        let (io, addr) = listener.accept().await;
        let app = app
            .clone()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                req
            });
        let svc = hyper_util::service::TowerToHyperService::new(app);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "REST connection ended with an error");
            }
        });
    }
}
