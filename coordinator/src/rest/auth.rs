//! Users, password hashes and sessions of the REST API.
//!
//! Users come from a file of `user:<argon2 PHC hash>` lines (`#` comments and blank lines are
//! skipped), read at start-up; `sf-coordinator hash-password` prints such a hash for a password
//! read from standard input. A successful `POST /api/auth` creates a session: a random 256-bit
//! token sent back as the `connect.sid` cookie. Sessions live in this coordinator's memory and
//! expire after the configured TTL without use (each authenticated request renews it); a client
//! that gets 401 logs in again, which is what CloudStack's Netris client does. With several
//! coordinators behind one address a client must stick to one of them (or log in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Live sessions: token → (user, expiry).
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `user`; returns its token.
    pub fn create(&self, user: &str) -> String {
        let bytes: [u8; 32] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut m = self.map.lock().unwrap();
        m.retain(|_, (_, exp)| *exp > now);
        m.insert(token.clone(), (user.to_string(), now + self.ttl));
        token
    }

    /// The session's user if the token is live; renews its expiry.
    pub fn check(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut m = self.map.lock().unwrap();
        match m.get_mut(token) {
            Some((user, exp)) if *exp > now => {
                *exp = now + self.ttl;
                Some(user.clone())
            }
            Some(_) => {
                m.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, token: &str) {
        self.map.lock().unwrap().remove(token);
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

    #[test]
    fn sessions_expire() {
        let s = Sessions::new(Duration::from_millis(30));
        let t = s.create("u");
        assert_eq!(s.check(&t).as_deref(), Some("u"));
        assert_eq!(s.check("other"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&t), None);
        let t2 = s.create("u");
        s.remove(&t2);
        assert_eq!(s.check(&t2), None);
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
