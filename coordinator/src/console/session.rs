//! Console sessions: a random 256-bit token in the `sf_console` cookie, kept in this
//! replica's memory by its SHA-256 digest (so a memory dump shows no usable token), with the
//! user and the role the login proved, and an idle lifetime. A console user who lands on
//! another replica logs in again; the console is an operator's tool, not an API.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::identity::Role;

/// The session cookie's name.
pub const COOKIE: &str = "sf_console";

/// Sessions a replica keeps at most; the least recently used goes first beyond it.
const MAX_SESSIONS: usize = 256;

/// Who a session is.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    last_used: Instant,
}

/// The live sessions of this replica.
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A new session; returns its `Set-Cookie` value.
    pub fn create(&self, user: &str, role: Role) -> String {
        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        let mut live = self.live.lock().unwrap();
        let ttl = self.ttl;
        live.retain(|_, s| s.last_used.elapsed() < ttl);
        if live.len() >= MAX_SESSIONS {
            let oldest = live
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                live.remove(&k);
            }
        }
        let session = Session {
            user: user.to_string(),
            role,
            last_used: Instant::now(),
        };
        live.insert(digest(&token), session);
        format!(
            "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            self.ttl.as_secs()
        )
    }

    /// The live session named by the request's cookie (renewing it), if any.
    pub fn check(&self, headers: &HeaderMap) -> Option<Session> {
        let token = token_of(headers)?;
        let mut live = self.live.lock().unwrap();
        let key = digest(token);
        let s = live.get_mut(&key)?;
        if s.last_used.elapsed() >= self.ttl {
            live.remove(&key);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.clone())
    }

    /// Ends the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(token) = token_of(headers) {
            self.live.lock().unwrap().remove(&digest(token));
        }
    }
}

/// A `Set-Cookie` value that deletes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| crate::rest::auth::cookie_value(v, COOKIE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let s = Sessions::new(Duration::from_secs(60));
        let c = s.create("cloudstack", Role::Admin);
        assert!(c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Strict"));
        let found = s.check(&with_cookie(&c)).unwrap();
        assert_eq!(
            (found.user.as_str(), found.role),
            ("cloudstack", Role::Admin)
        );
        assert!(s.check(&with_cookie("sf_console=00")).is_none());
        assert!(s.check(&HeaderMap::new()).is_none());
        s.remove(&with_cookie(&c));
        assert!(s.check(&with_cookie(&c)).is_none());
    }

    #[test]
    fn an_idle_session_expires() {
        let s = Sessions::new(Duration::from_millis(20));
        let c = s.create("t", Role::Reader);
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.check(&with_cookie(&c)).is_none());
    }
}
