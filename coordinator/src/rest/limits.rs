//! Resource limits of the REST API: the request body limit (413), login rate limits and the
//! bound on concurrent password checks (429), and the envelope every error answer wears, also
//! those axum produces itself (405, bad query strings, bad path segments).
//!
//! Why each exists: a large body must get a readable 413, not a reset connection; a login
//! costs one argon2 verification (tens of milliseconds of CPU and ~19 MiB), so unlimited
//! attempts from one client, or from many, would starve the coordinator's API.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::wire::ApiError;

/// Largest request body accepted (CloudStack's largest bodies are a few hundred bytes).
pub const BODY_LIMIT: usize = 1 << 20;
/// How much of an oversized body is read and discarded so the client, still sending, can read
/// the 413 (closing a socket with unread data makes the kernel send a reset, and most clients
/// then report the reset instead of the answer). Beyond this the connection is just closed.
const DRAIN_MAX: usize = 64 << 20;
/// How long draining an oversized body may take.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Login attempts one client address may burst, then one per [`ADDR_PERIOD`].
const ADDR_BURST: u32 = 20;
const ADDR_PERIOD: Duration = Duration::from_secs(1);
/// Login attempts of all clients together: a burst, then [`GLOBAL_PER_SEC`] a second.
const GLOBAL_BURST: u32 = 40;
const GLOBAL_PER_SEC: u32 = 10;
/// How long a login waits for a password-check slot before it is refused.
const VERIFY_WAIT: Duration = Duration::from_secs(5);
/// Client addresses remembered before stale entries are dropped.
const ADDR_TABLE_MAX: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// body limit

/// Middleware: reads the body up to [`BODY_LIMIT`] and hands it on; a larger one (declared or
/// sent) is answered 413 with the envelope and `Connection: close`.
pub async fn limit_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer without reading
        // (polling the body would make hyper invite the upload).
        let expects = parts.headers.contains_key(header::EXPECT);
        if !expects {
            drain(body.into_data_stream(), 0).await;
        }
        return too_large();
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::bad("the request body could not be read").into_response();
        };
        if buf.len() + chunk.len() > BODY_LIMIT {
            drain(stream, buf.len() + chunk.len()).await;
            return too_large();
        }
        buf.extend_from_slice(&chunk);
    }
    let req = Request::from_parts(parts, Body::from(Bytes::from(buf)));
    next.run(req).await
}

/// Reads and discards the rest of a body, within [`DRAIN_MAX`] and [`DRAIN_DEADLINE`].
async fn drain(mut stream: axum::body::BodyDataStream, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        while seen <= DRAIN_MAX {
            match stream.next().await {
                Some(Ok(c)) => seen += c.len(),
                _ => break,
            }
        }
    })
    .await;
}

fn too_large() -> Response {
    let mut r = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {BODY_LIMIT} bytes"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

// ---------------------------------------------------------------------------------------------
// error envelope

/// Middleware: an error answer that is not JSON (axum's own 405, query and path rejections)
/// gets the `{isSuccess: false, message, data: null}` envelope, keeping its status and headers.
pub async fn envelope_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let st = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if !(st.is_client_error() || st.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut msg = String::from_utf8_lossy(&text).trim().to_string();
    if msg.is_empty() {
        msg = st.canonical_reason().unwrap_or("error").to_string();
    }
    let mut out = ApiError::new(st, msg).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// login limits

/// Rate limits of login attempts (per client address and overall) and the bound on
/// concurrent argon2 verifications.
pub struct LoginGuard {
    per_addr: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    verify: Arc<Semaphore>,
}

/// A refused login attempt: answer 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
    pub why: &'static str,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginGuard {
    pub fn new() -> Self {
        let nz = |n: u32| NonZeroU32::new(n).expect("non-zero constant");
        let addr_quota = Quota::with_period(ADDR_PERIOD)
            .expect("non-zero period")
            .allow_burst(nz(ADDR_BURST));
        let global_quota = Quota::per_second(nz(GLOBAL_PER_SEC)).allow_burst(nz(GLOBAL_BURST));
        // Half the cores at most verify passwords; the rest keep serving the APIs.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoginGuard {
            per_addr: governor::RateLimiter::keyed(addr_quota),
            global: governor::RateLimiter::direct(global_quota),
            verify: Arc::new(Semaphore::new((cores / 2).max(1))),
        }
    }

    /// Takes one attempt from the client's and the global budget.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), Throttled> {
        let now = DefaultClock::default().now();
        if let Some(ip) = client {
            if self.per_addr.len() > ADDR_TABLE_MAX {
                self.per_addr.retain_recent();
            }
            if let Err(n) = self.per_addr.check_key(&ip) {
                return Err(Throttled {
                    retry_after: n.wait_time_from(now),
                    why: "too many login attempts from this address",
                });
            }
        }
        self.global.check().map_err(|n| Throttled {
            retry_after: n.wait_time_from(now),
            why: "too many login attempts",
        })
    }

    /// A slot to run one password verification in; refused when none frees up in time.
    pub async fn verify_slot(&self) -> Result<OwnedSemaphorePermit, Throttled> {
        let sem = self.verify.clone();
        match tokio::time::timeout(VERIFY_WAIT, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Throttled {
                retry_after: Duration::from_secs(1),
                why: "too many logins in progress",
            }),
        }
    }
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{}; retry in {secs} s", self.why),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A router with both middlewares around a handler that echoes the body's length.
    fn app() -> axum::Router {
        async fn echo(body: Bytes) -> String {
            body.len().to_string()
        }
        axum::Router::new()
            .route("/e", axum::routing::post(echo))
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn(limit_body))
            .layer(axum::middleware::from_fn(envelope_errors))
    }

    async fn send(req: Request) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let r = app().oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let b = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, b.to_vec(), parts.headers)
    }

    fn envelope(b: &[u8]) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(b).expect("a JSON envelope");
        assert_eq!(v["isSuccess"], false, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    fn post(body: Body, len: Option<usize>) -> Request {
        let mut b = Request::post("/e");
        if let Some(n) = len {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(body).unwrap()
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_pass() {
        let (st, b, _) = send(post(Body::from(vec![b'x'; BODY_LIMIT]), None)).await;
        assert_eq!(
            (st, b),
            (StatusCode::OK, BODY_LIMIT.to_string().into_bytes())
        );
    }

    #[tokio::test]
    async fn larger_bodies_get_413_with_the_envelope() {
        // Sent (chunked, no length) and declared (Content-Length).
        let n = BODY_LIMIT + 1;
        for req in [
            post(Body::from(vec![b'x'; n]), None),
            post(Body::from(vec![b'x'; n]), Some(n)),
        ] {
            let (st, b, h) = send(req).await;
            assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
            envelope(&b);
            assert_eq!(h[header::CONNECTION], "close");
        }
    }

    #[tokio::test]
    async fn axums_own_errors_get_the_envelope() {
        let req = Request::get("/e").body(Body::empty()).unwrap();
        let (st, b, h) = send(req).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        envelope(&b);
        assert!(h.contains_key(header::ALLOW), "the Allow header is kept");
    }

    #[test]
    fn one_address_is_limited_before_the_others() {
        let g = LoginGuard::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..ADDR_BURST {
            g.admit(Some(a)).unwrap();
        }
        let t = g.admit(Some(a)).unwrap_err();
        assert!(t.retry_after > Duration::ZERO && t.retry_after <= ADDR_PERIOD);
        g.admit(Some(b))
            .expect("another address still has its budget");
    }

    #[test]
    fn all_addresses_share_a_global_budget() {
        let g = LoginGuard::new();
        let mut refused = 0;
        for i in 0..(GLOBAL_BURST + 10) {
            let ip = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            if g.admit(Some(ip)).is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 5, "only {refused} refused");
    }

    #[tokio::test]
    async fn verification_slots_are_bounded() {
        let g = LoginGuard::new();
        let n = g.verify.available_permits();
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(g.verify_slot().await.unwrap());
        }
        assert!(g.verify.try_acquire().is_err(), "all {n} slots are held");
    }
}
