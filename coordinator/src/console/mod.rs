//! The operator's web console: a thin HTTPS server (`--console-listen`) over the
//! coordinator's own index and its one write path.
//!
//! - Assets (HTML, JS, CSS) are compiled in ([`assets`]); the page loads nothing else.
//! - Login ([`session`]): a REST user's password (`--rest-users-file`) or an API token
//!   (`--api-token-file`, with its role). A session is a random cookie (`HttpOnly; Secure;
//!   SameSite=Strict`), kept in this replica's memory; every POST must also carry the
//!   `X-SF-Console: 1` header, which a cross-site form cannot send.
//! - Reads ([`view`]) and writes ([`actions`]) call the same [`Api`] handlers sfctl's gRPC
//!   calls reach, in-process with the session's role ([`Preauthorized`]), so validation and
//!   its messages are the API's, word for word.
//! - Live: `GET /api/events` is a Server-Sent Events stream that pushes the whole view
//!   whenever it changed (checked every second), so the page never reloads.
//! - Intent-to-ack latency per role ([`latency`]) is sampled from the agents' acks.

pub mod actions;
mod assets;
pub mod latency;
pub mod session;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;

use crate::api::Api;
use crate::fabric::Fabric;
use crate::identity::{Preauthorized, Role, Tokens};
use crate::rest::{auth::Users, limits::LoginGuard};
use session::Sessions;

/// Console settings (from `sf-coordinator`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Listen address of the web console (HTTPS); no console when absent.
    #[arg(long, env = "SF_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
    /// PEM certificate chain of the console (default: --tls-cert, the coordinator's own).
    #[arg(long, env = "SF_CONSOLE_TLS_CERT", requires = "console_tls_key")]
    pub console_tls_cert: Option<PathBuf>,
    /// PEM private key of --console-tls-cert (default: --tls-key).
    #[arg(long, env = "SF_CONSOLE_TLS_KEY", requires = "console_tls_cert")]
    pub console_tls_key: Option<PathBuf>,
    /// Seconds a console session lives without use.
    #[arg(long, env = "SF_CONSOLE_SESSION_TTL", default_value_t = 8 * 3600)]
    pub console_session_ttl: u64,
}

/// The header every console POST carries (CSRF: a cross-site form cannot set it).
pub const CSRF_HEADER: &str = "x-sf-console";

/// Shared state of the console's handlers.
pub struct Console {
    pub api: Api,
    pub users: Users,
    pub tokens: Tokens,
    pub sessions: Sessions,
    pub login_guard: LoginGuard,
    pub latency: Arc<latency::Latency>,
}

impl Console {
    pub fn new(fabric: Arc<Fabric>, tokens: Tokens, users: Users, ttl: Duration) -> Arc<Self> {
        Arc::new(Console {
            api: Api {
                fabric: fabric.clone(),
                tokens: tokens.clone(),
            },
            users,
            tokens,
            sessions: Sessions::new(ttl),
            login_guard: LoginGuard::new(),
            latency: Arc::new(latency::Latency::new(fabric)),
        })
    }

    /// A FabricApi request for `method` on behalf of a session of `role`.
    pub fn request<T>(method: &str, msg: T, role: Role) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut()
            .insert(crate::identity::ApiMethod(method.into()));
        r.extensions_mut().insert(Preauthorized(role));
        r
    }
}

/// The console's routes.
pub fn router(state: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/state", get(state_json))
        .route("/api/events", get(view::events))
        .route("/api/action", post(actions::act))
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

/// Refuses a POST without [`CSRF_HEADER`] and sets the headers every answer carries.
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let csrf_ok = req.method() != axum::http::Method::POST
        || req.headers().get(CSRF_HEADER).map(|v| v.as_bytes()) == Some(b"1");
    let mut resp = if csrf_ok {
        next.run(req).await
    } else {
        error(StatusCode::FORBIDDEN, "missing X-SF-Console header")
    };
    let h = resp.headers_mut();
    let csp = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";
    h.insert(header::CONTENT_SECURITY_POLICY, csp.parse().unwrap());
    h.insert(header::X_FRAME_OPTIONS, "DENY".parse().unwrap());
    h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    resp
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The 401 answer to a request without a live session.
pub fn not_logged_in() -> Response {
    error(StatusCode::UNAUTHORIZED, "not logged in")
}

#[derive(serde::Deserialize)]
struct Login {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

/// `POST /api/login`: `{user, password}` (a REST user: admin) or `{token}` (its role).
async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(l): Json<Login>,
) -> Response {
    if let Err(t) = c.login_guard.admit(Some(peer.ip())) {
        return t.into_response();
    }
    let found = if !l.token.is_empty() {
        c.tokens
            .role_of(l.token.trim())
            .map(|r| ("token".to_string(), r))
    } else {
        let _slot = match c.login_guard.verify_slot().await {
            Ok(s) => s,
            Err(t) => return t.into_response(),
        };
        let users = c.users.clone();
        let (user, pw) = (l.user.clone(), l.password.clone());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &pw))
            .await
            .unwrap_or(false);
        ok.then(|| (l.user.clone(), Role::Admin))
    };
    let Some((user, role)) = found else {
        return error(StatusCode::UNAUTHORIZED, "invalid credentials");
    };
    let cookie = c.sessions.create(&user, role);
    let mut resp = Json(json!({"user": user, "role": role.as_str()})).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().unwrap());
    resp
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    c.sessions.remove(&headers);
    let mut resp = Json(json!({})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session::cleared_cookie().parse().unwrap(),
    );
    resp
}

async fn me(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.sessions.check(&headers) {
        Some(s) => Json(json!({"user": s.user, "role": s.role.as_str()})).into_response(),
        None => not_logged_in(),
    }
}

async fn state_json(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(s) = c.sessions.check(&headers) else {
        return not_logged_in();
    };
    match view::snapshot(&c, s.role).await {
        Ok(v) => Json(v).into_response(),
        Err(st) => error(StatusCode::SERVICE_UNAVAILABLE, st.message()),
    }
}

/// Starts the console if `--console-listen` is set; returns once it is bound.
pub async fn spawn(
    args: &ConsoleArgs,
    fabric: Arc<Fabric>,
    tokens: Tokens,
    users_file: Option<&std::path::Path>,
    default_tls: (&std::path::Path, &std::path::Path),
) -> anyhow::Result<()> {
    let Some(addr) = args.console_listen else {
        return Ok(());
    };
    let users = match users_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Users::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        None => Users::default(),
    };
    let (cert, key) = match (&args.console_tls_cert, &args.console_tls_key) {
        (Some(c), Some(k)) => (c.as_path(), k.as_path()),
        _ => default_tls,
    };
    let tls = crate::rest::tls::server_config(cert, key)?;
    let ttl = Duration::from_secs(args.console_session_ttl.max(60));
    let state = Console::new(fabric, tokens, users, ttl);
    tokio::spawn(state.latency.clone().run());
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding console listener {addr}"))?;
    let listener = crate::rest::tls::TlsListener::new(tcp, tls)?;
    tracing::info!(listen = %addr, "serving the web console");
    // The REST API's server loop: it hands each request its peer address (login limits).
    tokio::spawn(crate::rest::serve_title_case(listener, router(state)));
    Ok(())
}
