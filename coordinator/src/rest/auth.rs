//! Users, password hashes and sessions of the REST API.
//!
//! Users come from a file of `user:<argon2 PHC hash>` lines (`#` comments and blank lines are
//! skipped), read at start-up; `sf-coordinator hash-password` prints such a hash for a password
//! read from standard input. A successful `POST /api/auth` creates a session: a random 256-bit
//! token sent back as the `connect.sid` cookie. Sessions live in etcd
//! (`<root>/rest-sessions/<SHA-256 of the token>`, value: the user) under a lease of the session
//! TTL, so every coordinator replica accepts a session any of them created, a logout through
//! one ends it everywhere, and an unused session expires with its lease; each authenticated
//! request renews the lease (at most every [`RENEW_EVERY`], from a per-replica cache). A client
//! that gets 401 logs in again, which is what CloudStack's Netris client does. A user holds at
//! most `--rest-max-sessions` sessions; a login beyond that ends unused, then old ones
//! ([`Sessions::create`]). Login rate limits are in [`super::limits`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sf_store::KvStore;
use sha2::{Digest, Sha256};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

/// The session cookie's name (the one Netris' Express server uses).
pub const COOKIE: &str = "connect.sid";

/// Accepted users and their password hashes.
#[derive(Debug, Clone, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// Parses `user:<PHC hash>` lines. Rejects malformed lines and hashes naming the line.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut hashes = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:<argon2 hash>", i + 1))?;
            if user.is_empty() {
                return Err(format!("line {}: empty user name", i + 1));
            }
            PasswordHash::new(hash)
                .map_err(|e| format!("line {}: not a PHC password hash: {e}", i + 1))?;
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Users { hashes })
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks a password (CPU-heavy: call from a blocking thread). Unknown users cost the same
    /// as a wrong password, so the answer time does not tell which users exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| hash_password("not a password"));
        let (hash, known) = match self.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    }
}

/// An argon2id PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// `sf-coordinator hash-password`: reads one password from stdin, prints its hash.
pub fn hash_password_cli() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!pw.is_empty(), "empty password on standard input");
    println!("{}", hash_password(pw));
    Ok(())
}

/// Longest time a replica trusts its cache of a session without asking etcd (a logout through
/// another replica takes at most this long to reach it).
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// A session used through this replica within this long is spared by the session cap while
/// others can go.
const IN_USE: Duration = Duration::from_secs(300);

/// Live sessions, shared by every replica through etcd.
pub struct Sessions {
    ttl: Duration,
    kv: Arc<dyn KvStore>,
    prefix: String,
    /// Live sessions one user may hold (see [`Sessions::create`]).
    max_per_user: usize,
    /// Token hash -> what this replica knows of the session.
    cache: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    user: String,
    /// Last time etcd confirmed the session.
    confirmed: Instant,
    /// Last authenticated request through this replica (none yet after login).
    used: Option<Instant>,
}

impl Sessions {
    /// Sessions under `<root>/rest-sessions/`.
    pub fn new(ttl: Duration, kv: Arc<dyn KvStore>, root: &str) -> Self {
        Sessions {
            ttl,
            kv,
            prefix: format!("{}/rest-sessions/", root.trim_end_matches('/')),
            max_per_user: super::DEFAULT_MAX_SESSIONS,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Caps the live sessions of one user at `n` (at least 1).
    pub fn with_max_per_user(mut self, n: usize) -> Self {
        self.max_per_user = n.max(1);
        self
    }

    fn key(&self, token: &str) -> (String, String) {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        (format!("{}{hash}", self.prefix), hash)
    }

    /// A new session for `user`; returns its token. When the user already holds the maximum,
    /// sessions are ended first to make room: never used through this replica, then oldest
    /// first, a session in use here within [`IN_USE`] last. Refusing instead would lock out
    /// a restarted CloudStack (it never logs out, so its dead sessions linger for the TTL).
    /// Concurrent logins may overshoot the cap by their number, briefly.
    pub async fn create(&self, user: &str) -> Result<String, sf_store::StoreError> {
        self.make_room(user).await?;
        let bytes: [u8; 32] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let lease = self
            .kv
            .lease_grant(self.ttl.as_secs().max(1) as i64)
            .await?;
        let (key, hash) = self.key(&token);
        self.kv.put(&key, user.as_bytes().to_vec(), lease).await?;
        let entry = Cached {
            user: user.to_string(),
            confirmed: Instant::now(),
            used: None,
        };
        self.cache.lock().unwrap().insert(hash, entry);
        Ok(token)
    }

    /// Ends `user`'s sessions beyond `max_per_user - 1` (see [`Sessions::create`]).
    async fn make_room(&self, user: &str) -> Result<(), sf_store::StoreError> {
        let (all, _) = self.kv.list(&self.prefix).await?;
        let mut mine: Vec<_> = all
            .into_iter()
            .filter(|kv| kv.lease != 0 && kv.value == user.as_bytes())
            .collect();
        if mine.len() < self.max_per_user {
            return Ok(());
        }
        let in_use = |key: &str| {
            let hash = key.strip_prefix(&self.prefix).unwrap_or(key);
            let cache = self.cache.lock().unwrap();
            cache
                .get(hash)
                .and_then(|c| c.used)
                .map(|t| t.elapsed() < IN_USE)
        };
        // None (never used here) < Some(false) (used long ago) < Some(true), then by age.
        mine.sort_by_cached_key(|kv| (in_use(&kv.key), kv.create_revision));
        let excess = mine.len() + 1 - self.max_per_user;
        for kv in mine.into_iter().take(excess) {
            tracing::info!(
                user,
                "REST session cap reached: ending the user's oldest session"
            );
            let hash = kv.key.strip_prefix(&self.prefix).unwrap_or(&kv.key);
            self.cache.lock().unwrap().remove(hash);
            self.kv.lease_revoke(kv.lease).await?;
        }
        Ok(())
    }

    /// The session's user if the token is live; renews it.
    pub async fn check(&self, token: &str) -> Option<String> {
        let (key, hash) = self.key(token);
        {
            let mut cache = self.cache.lock().unwrap();
            if let Some(c) = cache.get_mut(&hash) {
                c.used = Some(Instant::now());
                if c.confirmed.elapsed() < RENEW_EVERY.min(self.ttl / 2) {
                    return Some(c.user.clone());
                }
            }
        }
        let found = match self.kv.get(&key).await {
            Ok(Some(kv)) if kv.lease != 0 => kv,
            Ok(_) => {
                self.cache.lock().unwrap().remove(&hash);
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "REST session lookup failed");
                return None;
            }
        };
        if self.kv.lease_keep_alive(found.lease).await.is_err() {
            self.cache.lock().unwrap().remove(&hash);
            return None;
        }
        let user = String::from_utf8_lossy(&found.value).into_owned();
        let mut cache = self.cache.lock().unwrap();
        // Forget sessions nobody used for a whole TTL (their leases expire in etcd).
        cache.retain(|_, c| c.confirmed.elapsed() < self.ttl);
        let now = Instant::now();
        let entry = Cached {
            user: user.clone(),
            confirmed: now,
            used: Some(now),
        };
        cache.insert(hash, entry);
        Some(user)
    }

    /// Ends the session on every replica (this one at once, the others within RENEW_EVERY).
    pub async fn remove(&self, token: &str) {
        let (key, hash) = self.key(token);
        self.cache.lock().unwrap().remove(&hash);
        match self.kv.get(&key).await {
            Ok(Some(kv)) if kv.lease != 0 => {
                let _ = self.kv.lease_revoke(kv.lease).await;
            }
            _ => {
                let _ = self.kv.delete(&key).await;
            }
        }
    }
}

/// The value of cookie `name` in a `Cookie` header value (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_and_verify() {
        let h = hash_password("s3cret");
        let users = Users::parse(&format!("# comment\n\ncloudstack:{h}\n")).unwrap();
        assert!(users.verify("cloudstack", "s3cret"));
        assert!(!users.verify("cloudstack", "wrong"));
        assert!(!users.verify("nobody", "s3cret"));
        assert!(Users::parse("nohash").is_err());
        assert!(Users::parse("u:plaintext").is_err());
    }

    #[tokio::test]
    async fn sessions_are_shared_by_replicas_and_expire() {
        let kv: Arc<dyn KvStore> = Arc::new(sf_store::mem::MemStore::new());
        let a = Sessions::new(Duration::from_secs(1), kv.clone(), "/t");
        let b = Sessions::new(Duration::from_secs(1), kv.clone(), "/t");
        let t = a.create("u").await.unwrap();
        assert_eq!(a.check(&t).await.as_deref(), Some("u"));
        assert_eq!(
            b.check(&t).await.as_deref(),
            Some("u"),
            "another replica accepts it"
        );
        assert_eq!(b.check("other").await, None);
        // The token itself is not stored, only its hash.
        let (keys, _) = kv.list("/t/rest-sessions/").await.unwrap();
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].key.contains(&t));
        // Used, it outlives its TTL; unused, it expires.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(b.check(&t).await.as_deref(), Some("u"));
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(a.check(&t).await, None);
        // A logout through one replica ends it on the other.
        let t2 = a.create("u").await.unwrap();
        assert_eq!(b.check(&t2).await.as_deref(), Some("u"));
        a.remove(&t2).await;
        tokio::time::sleep(Duration::from_millis(600)).await; // past b's cache window (ttl/2)
        assert_eq!(b.check(&t2).await, None);
    }

    #[tokio::test]
    async fn the_session_cap_ends_unused_then_oldest_sessions() {
        let kv: Arc<dyn KvStore> = Arc::new(sf_store::mem::MemStore::new());
        let s = Sessions::new(Duration::from_secs(60), kv.clone(), "/t").with_max_per_user(3);
        let used = s.create("u").await.unwrap();
        assert!(s.check(&used).await.is_some());
        let idle1 = s.create("u").await.unwrap();
        let idle2 = s.create("u").await.unwrap();
        let other = s.create("v").await.unwrap();
        // A fourth session of u ends the oldest unused one, not the older one in use.
        let newest = s.create("u").await.unwrap();
        let (keys, _) = kv.list("/t/rest-sessions/").await.unwrap();
        assert_eq!(keys.len(), 4, "3 of u and 1 of v");
        let fresh = Sessions::new(Duration::from_secs(60), kv.clone(), "/t");
        assert!(
            fresh.check(&used).await.is_some(),
            "the session in use stays"
        );
        assert!(
            fresh.check(&idle1).await.is_none(),
            "the oldest unused one went"
        );
        assert!(fresh.check(&idle2).await.is_some());
        assert!(fresh.check(&newest).await.is_some());
        assert!(
            fresh.check(&other).await.is_some(),
            "other users are not counted"
        );
    }

    #[test]
    fn cookies_and_forms() {
        assert_eq!(
            cookie_value("a=1; connect.sid=abc; b=2", COOKIE),
            Some("abc")
        );
        assert_eq!(cookie_value("a=1", COOKIE), None);
        let f = parse_form("user=cloud+stack&password=p%40ss%3D&auth_scheme_id=1");
        assert_eq!(f["user"], "cloud stack");
        assert_eq!(f["password"], "p@ss=");
        assert_eq!(f["auth_scheme_id"], "1");
        assert_eq!(parse_form("x=%zz%")["x"], "%zz%");
    }
}
