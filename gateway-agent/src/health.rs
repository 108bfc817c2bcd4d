//! Health checks of load balancer backends, run by the agent from inside each VPC's
//! namespace (backend addresses are private to the VPC and may overlap between VPCs).
//!
//! Threading: one OS thread per VPC namespace with checked backends. The thread enters the
//! namespace once (`setns(CLONE_NEWNET)` on `/run/netns/<ns>`, which affects only that
//! thread) and runs a current-thread tokio runtime with one task per probe (load balancer ×
//! backend): a TCP connect, or a minimal HTTP/1.0 GET whose status line must carry the
//! expected status, every `interval_ms`, each attempt bounded by `timeout_ms`. Sockets
//! created on that thread live in the VPC namespace; nothing else of the agent moves.
//!
//! State: [`Updown`], HAProxy-like. A backend starts UP, unverified (so a new load balancer
//! serves at once and never empties a working table); its first check decides (a failure
//! takes it DOWN at once: nothing vouched for it yet); after that `fall` consecutive failures
//! take it DOWN, `rise` consecutive successes bring it back. The first check runs as soon as
//! the probe starts, so a backend that is down from the start (a new load balancer, a router
//! that turned active without the serving gateway's word) leaves the table after one check,
//! not `interval × fall`. A
//! restarted agent starts each backend as the map it finds installed holds it
//! ([`Health::seed`], HAProxy's server-state file with the kernel as the file), verified: a
//! backend that was DOWN stays out until it rises. A passive router, which cannot check, is
//! seeded the same way from the serving gateway's word (the dataplane's
//! `follow_peer_health`): what that gateway's checks hold DOWN is DOWN here and what they
//! hold UP is UP, verified, so its tables match and a takeover starts its checks from there
//! (unverified remains for backends nobody has checked: a new load balancer's). When a
//! probe's configuration changes
//! (address, port, check), the new probe inherits the old one's state. `HealthCheck::None`:
//! no probe, always UP.
//!
//! A flip updates the shared state and triggers the dataplane's wakeup `Notify`, so the
//! runtime runs a reconcile pass at once and reinstalls that load balancer's map (the Maglev
//! minimal-disruption property keeps the other backends' slots). [`Health::sync`] (called
//! at the end of each reconcile pass) starts, reconfigures and stops the threads: a VPC that
//! is no longer served (or has no checked backend) loses its thread, and a namespace that
//! was re-created (other inode) gets a new one (the old thread would hold the dead
//! namespace alive).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sf_core::desired::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// UP/DOWN with rise/fall counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updown {
    pub up: bool,
    /// Consecutive results contradicting `up`.
    streak: u32,
    /// Whether `up` rests on a check result (this probe's, or one it inherited).
    verified: bool,
}

impl Updown {
    /// A state some check established.
    pub fn new(up: bool) -> Self {
        Updown {
            up,
            streak: 0,
            verified: true,
        }
    }

    /// UP until the first check, which decides alone.
    pub fn unverified() -> Self {
        Updown {
            up: true,
            streak: 0,
            verified: false,
        }
    }

    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Records one check result; returns true when the state flipped. `rise`/`fall` of 0
    /// count as 1.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if !self.verified {
            self.verified = true;
            self.streak = 0;
            let flipped = ok != self.up;
            self.up = ok;
            return flipped;
        }
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let need = if self.up { fall } else { rise }.max(1);
        if self.streak >= need {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// The HTTP/1.0 request of a check (`Host` is the backend address, an IPv6 one in
/// brackets as in a URL).
pub fn http_request(path: &str, ip: IpAddr) -> String {
    let mut path: String = path
        .chars()
        .map(|c| {
            if c <= ' ' || c == '\x7f' {
                format!("%{:02X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let host = match ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: stackfabric-health\r\nConnection: close\r\n\r\n")
}

/// The status code of an HTTP response's status line (`HTTP/1.x NNN ...`), if complete.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

/// What one probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub lb: String,
    pub backend: String,
    /// IPv4 or IPv6 (the probe connects from inside the VPC namespace, which routes both).
    pub ip: IpAddr,
    pub port: u16,
    /// `Tcp` or `Http` (`None` is never probed).
    pub check: HealthCheck,
}

impl Probe {
    fn timing(&self) -> (Duration, Duration, u32, u32) {
        let (i, t, r, f) = match &self.check {
            HealthCheck::None => (1000, 1000, 1, 1),
            HealthCheck::Tcp {
                interval_ms,
                timeout_ms,
                rise,
                fall,
            }
            | HealthCheck::Http {
                interval_ms,
                timeout_ms,
                rise,
                fall,
                ..
            } => (*interval_ms, *timeout_ms, *rise, *fall),
        };
        (
            Duration::from_millis(i.max(100) as u64),
            Duration::from_millis(t.max(50) as u64),
            r,
            f,
        )
    }
}

/// (namespace, load balancer, backend name).
type Key = (String, String, String);

struct Entry {
    probe: Probe,
    /// Identity of the probe task allowed to update this entry.
    id: u64,
    up: bool,
    /// `up` rests on a check result (see [`Updown::unverified`]).
    verified: bool,
}

type Shared = Arc<Mutex<BTreeMap<Key, Entry>>>;

struct Checker {
    ino: (u64, u64),
    tx: watch::Sender<Vec<(u64, Probe)>>,
    thread: std::thread::JoinHandle<()>,
}

/// The health checkers of a gateway: threads per VPC namespace and their shared results.
pub struct Health {
    shared: Shared,
    wake: Arc<Notify>,
    checkers: BTreeMap<String, Checker>,
    next_id: AtomicU64,
    /// The state a backend without a probe yet starts in, when not UP ([`Health::seed`]).
    seeds: BTreeMap<Key, bool>,
}

impl Health {
    pub fn new(wake: Arc<Notify>) -> Self {
        Health {
            shared: Arc::default(),
            wake,
            checkers: BTreeMap::new(),
            next_id: AtomicU64::new(1),
            seeds: BTreeMap::new(),
        }
    }

    /// Whether a backend is UP. A backend that is not (yet) probed counts as seeded, else UP.
    pub fn is_up(&self, ns: &str, lb: &str, backend: &str) -> bool {
        self.state(ns, lb, backend).0
    }

    /// (UP, verified): whether a backend is UP, and whether a check result (this process's,
    /// or a seed's) says so rather than the default.
    pub fn state(&self, ns: &str, lb: &str, backend: &str) -> (bool, bool) {
        let key = (ns.to_string(), lb.to_string(), backend.to_string());
        let m = self.shared.lock().expect("health lock");
        match (m.get(&key), self.seeds.get(&key)) {
            (Some(e), _) => (e.up, e.verified),
            (None, Some(&up)) => (up, true),
            (None, None) => (true, false),
        }
    }

    /// Whether a backend has a probe (its state is its own, not a seed's).
    pub fn is_probed(&self, ns: &str, lb: &str, backend: &str) -> bool {
        let key = (ns.to_string(), lb.to_string(), backend.to_string());
        self.shared.lock().expect("health lock").contains_key(&key)
    }

    /// Sets the state a backend without a probe starts in (ignored once it has one). A seed
    /// lasts until [`Health::sync`] starts the backend's probe from it (a passive router's
    /// backends keep theirs until it turns active) or [`Health::retain_seeds`] drops it.
    pub fn seed(&mut self, ns: &str, lb: &str, backend: &str, up: bool) {
        let key = (ns.to_string(), lb.to_string(), backend.to_string());
        if !self.shared.lock().expect("health lock").contains_key(&key) {
            self.seeds.insert(key, up);
        }
    }

    /// Drops the seeds of namespaces `keep` refuses (routers gone).
    pub fn retain_seeds(&mut self, keep: impl Fn(&str) -> bool) {
        self.seeds.retain(|k, _| keep(&k.0));
    }

    /// Namespaces with a running checker thread.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.checkers.keys().cloned().collect()
    }

    /// Makes the checkers match `wanted` (namespace → probes): starts, reconfigures and stops
    /// threads. Returns problems (a namespace that cannot be found).
    pub fn sync(&mut self, wanted: BTreeMap<String, Vec<Probe>>) -> Vec<String> {
        let mut errors = Vec::new();
        let wanted: BTreeMap<String, Vec<Probe>> =
            wanted.into_iter().filter(|(_, p)| !p.is_empty()).collect();
        // Stop what is no longer wanted.
        let gone: Vec<String> = self
            .checkers
            .keys()
            .filter(|ns| !wanted.contains_key(*ns))
            .cloned()
            .collect();
        for ns in gone {
            info!(%ns, "stopping health checks");
            self.checkers.remove(&ns); // dropping the sender ends the thread
        }
        let mut shared = self.shared.lock().expect("health lock");
        shared.retain(|k, _| wanted.contains_key(&k.0));
        for (ns, probes) in &wanted {
            // Entries: keep unchanged probes, re-identify changed ones (state inherited).
            let keys: BTreeSet<Key> = probes
                .iter()
                .map(|p| (ns.clone(), p.lb.clone(), p.backend.clone()))
                .collect();
            shared.retain(|k, _| &k.0 != ns || keys.contains(k));
            let mut list = Vec::new();
            for p in probes {
                let key = (ns.clone(), p.lb.clone(), p.backend.clone());
                let id = match shared.get_mut(&key) {
                    Some(e) if e.probe == *p => e.id,
                    Some(e) => {
                        e.probe = p.clone();
                        e.id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        e.id
                    }
                    None => {
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        let seed = self.seeds.remove(&key);
                        shared.insert(
                            key,
                            Entry {
                                probe: p.clone(),
                                id,
                                up: seed.unwrap_or(true),
                                verified: seed.is_some(),
                            },
                        );
                        id
                    }
                };
                list.push((id, p.clone()));
            }
            let ino = match netns_inode(ns) {
                Ok(i) => i,
                Err(e) => {
                    errors.push(format!("health checks in {ns}: {e}"));
                    self.checkers.remove(ns);
                    continue;
                }
            };
            match self.checkers.get(ns) {
                Some(c) if c.ino == ino && !c.thread.is_finished() => {
                    c.tx.send_if_modified(|cur| {
                        if *cur == list {
                            false
                        } else {
                            *cur = list.clone();
                            true
                        }
                    });
                }
                _ => {
                    info!(%ns, probes = list.len(), "starting health checks");
                    let (tx, rx) = watch::channel(list);
                    let (sh, wake, name) = (self.shared.clone(), self.wake.clone(), ns.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("hc-{ns}"))
                        .spawn(move || checker_thread(name, ino, rx, sh, wake));
                    match spawned {
                        Ok(thread) => {
                            self.checkers
                                .insert(ns.clone(), Checker { ino, tx, thread });
                        }
                        Err(e) => errors.push(format!("health check thread for {ns}: {e}")),
                    }
                }
            }
        }
        errors
    }
}

fn netns_path(ns: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/netns").join(ns)
}

pub(crate) fn netns_inode(ns: &str) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(netns_path(ns))?;
    Ok((m.dev(), m.ino()))
}

/// Moves the calling thread into network namespace `ns` (the one with inode `ino`).
pub(crate) fn enter_netns(ns: &str, ino: (u64, u64)) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::open(netns_path(ns))?;
    let m = f.metadata()?;
    if (m.dev(), m.ino()) != ino {
        return Err(std::io::Error::other("namespace re-created meanwhile"));
    }
    // SAFETY: setns on a valid, open namespace file descriptor; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn checker_thread(
    ns: String,
    ino: (u64, u64),
    mut rx: watch::Receiver<Vec<(u64, Probe)>>,
    shared: Shared,
    wake: Arc<Notify>,
) {
    if let Err(e) = enter_netns(&ns, ino) {
        warn!(%ns, error = %e, "health checks: cannot enter namespace");
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(%ns, error = %e, "health checks: no runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut tasks: BTreeMap<u64, tokio::task::JoinHandle<()>> = BTreeMap::new();
        loop {
            let probes = rx.borrow_and_update().clone();
            let ids: BTreeSet<u64> = probes.iter().map(|p| p.0).collect();
            tasks.retain(|id, t| {
                let keep = ids.contains(id);
                if !keep {
                    t.abort();
                }
                keep
            });
            for (id, p) in probes {
                if tasks.contains_key(&id) {
                    continue;
                }
                let key = (ns.clone(), p.lb.clone(), p.backend.clone());
                tasks.insert(
                    id,
                    tokio::spawn(probe_loop(id, key, p, shared.clone(), wake.clone())),
                );
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
        for t in tasks.values() {
            t.abort();
        }
    });
}

async fn probe_loop(id: u64, key: Key, p: Probe, shared: Shared, wake: Arc<Notify>) {
    let (interval, timeout, rise, fall) = p.timing();
    let mut state = {
        let m = shared.lock().expect("health lock");
        match m.get(&key) {
            Some(e) if e.id == id && e.verified => Updown::new(e.up),
            Some(e) if e.id == id => Updown::unverified(),
            _ => return,
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = check(&p, timeout).await;
        let first = !state.is_verified();
        let flipped = state.observe(ok, rise, fall);
        if !flipped && !first {
            continue;
        }
        {
            let mut m = shared.lock().expect("health lock");
            match m.get_mut(&key) {
                Some(e) if e.id == id => (e.up, e.verified) = (state.up, true),
                _ => return, // replaced or removed
            }
        }
        if !flipped {
            // The first result confirmed the state: the report names it UP now.
            wake.notify_one();
            continue;
        }
        if state.up {
            info!(ns = %key.0, lb = %key.1, backend = %key.2, "backend UP");
        } else {
            warn!(ns = %key.0, lb = %key.1, backend = %key.2, "backend DOWN");
        }
        wake.notify_one();
    }
}

/// One check, bounded by `timeout`.
async fn check(p: &Probe, timeout: Duration) -> bool {
    let addr = SocketAddr::from((p.ip, p.port));
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let HealthCheck::Http {
            path,
            expect_status,
            ..
        } = &p.check
        else {
            return Ok::<bool, std::io::Error>(true);
        };
        s.write_all(http_request(path, p.ip).as_bytes()).await?;
        let mut head = Vec::with_capacity(128);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(parse_status(&head) == Some(*expect_status))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut s = Updown::new(true);
        assert!(!s.observe(false, 2, 3));
        assert!(!s.observe(false, 2, 3));
        assert!(!s.observe(true, 2, 3), "a success resets the fall count");
        assert!(!s.observe(false, 2, 3));
        assert!(!s.observe(false, 2, 3));
        assert!(s.observe(false, 2, 3));
        assert!(!s.up);
        assert!(!s.observe(false, 2, 3), "staying down is no flip");
        assert!(!s.observe(true, 2, 3));
        assert!(!s.observe(false, 2, 3), "a failure resets the rise count");
        assert!(!s.observe(true, 2, 3));
        assert!(s.observe(true, 2, 3));
        assert!(s.up);
        // rise/fall 0 behave as 1; fall 1 flips on the first failure.
        let mut s = Updown::new(true);
        assert!(s.observe(false, 0, 0));
        assert!(s.observe(true, 0, 0));
        // Starting UP, a dead backend is DOWN after exactly `fall` checks.
        let mut s = Updown::new(true);
        let n = (1..=10).find(|_| s.observe(false, 2, 2)).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn an_unverified_backend_is_decided_by_its_first_check() {
        // A dead backend of a new load balancer (or a router just turned active) leaves at
        // its first check, not after `fall`.
        let mut s = Updown::unverified();
        assert!(s.up && !s.is_verified());
        assert!(s.observe(false, 2, 3), "the first failure takes it DOWN");
        assert!(!s.up && s.is_verified());
        assert!(!s.observe(true, 2, 3), "then DOWN needs `rise` successes");
        assert!(s.observe(true, 2, 3));
        // A first success confirms UP; from then on `fall` failures count.
        let mut s = Updown::unverified();
        assert!(!s.observe(true, 2, 3));
        assert!(s.up && s.is_verified());
        assert!(!s.observe(false, 2, 3));
        assert!(!s.observe(false, 2, 3));
        assert!(s.observe(false, 2, 3));
    }

    #[test]
    fn http_status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\nServer: x\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.1 500 Internal Server Error\r\n"),
            Some(500)
        );
        assert_eq!(parse_status(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found\n"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK"), None, "incomplete line");
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.0 2000 OK\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.0 abc OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(
            http_request("/healthz", "10.0.0.1".parse().unwrap()),
            "GET /healthz HTTP/1.0\r\nHost: 10.0.0.1\r\nUser-Agent: stackfabric-health\r\nConnection: close\r\n\r\n"
        );
        assert!(http_request("x\r\nEvil: 1", "10.0.0.1".parse().unwrap())
            .starts_with("GET /x%0D%0AEvil:%201 HTTP/1.0\r\n"));
        // An IPv6 backend: the Host header carries the address in brackets, as a URL does.
        assert!(http_request("/", "fd10:10:0:1::11".parse().unwrap())
            .contains("\r\nHost: [fd10:10:0:1::11]\r\n"));
    }

    /// A TCP probe of backend `backend` of load balancer "web" (at 10.0.0.1:80).
    fn tcp_probe(backend: &str) -> Probe {
        Probe {
            lb: "web".into(),
            backend: backend.into(),
            ip: "10.0.0.1".parse().unwrap(),
            port: 80,
            check: HealthCheck::Tcp {
                interval_ms: 1000,
                timeout_ms: 500,
                rise: 2,
                fall: 2,
            },
        }
    }

    #[test]
    fn a_seeded_backend_starts_its_probe_in_the_seeded_state() {
        let mut h = Health::new(Arc::new(Notify::new()));
        let ns = "sfl-no-such-namespace-y";
        h.seed(ns, "web", "b1", false);
        h.seed(ns, "web", "b2", true);
        assert!(!h.is_up(ns, "web", "b1"), "a seed counts before any probe");
        assert!(h.is_up(ns, "web", "b2"));
        assert!(h.is_up(ns, "web", "b3"), "no seed: UP");
        assert_eq!(
            h.state(ns, "web", "b1"),
            (false, true),
            "a seed is verified"
        );
        assert_eq!(
            h.state(ns, "web", "b3"),
            (true, false),
            "the default is not"
        );
        // A passive router starts no probe: its seeds stay.
        h.sync(BTreeMap::new());
        assert!(!h.is_up(ns, "web", "b1"));
        // The probe starts from the seed (the namespace is missing, the entry is made).
        h.sync(BTreeMap::from([(
            ns.to_string(),
            vec![tcp_probe("b1"), tcp_probe("b2")],
        )]));
        assert!(h.is_probed(ns, "web", "b1"));
        assert!(!h.is_up(ns, "web", "b1"), "the probe starts DOWN");
        assert_eq!(h.state(ns, "web", "b1"), (false, true));
        assert!(h.seeds.is_empty(), "consumed");
        // Once probed, a seed changes nothing.
        h.seed(ns, "web", "b2", false);
        assert!(h.is_up(ns, "web", "b2"));
        // Seeds of routers gone are dropped.
        h.seed("sfl-gone", "web", "b1", false);
        h.retain_seeds(|n| n != "sfl-gone");
        assert!(h.is_up("sfl-gone", "web", "b1"));
    }

    /// A passive router holds the serving gateway's word, in both directions, until its own
    /// probe starts from it; after that only its own checks count.
    #[test]
    fn a_passive_router_follows_the_serving_gateway_until_its_own_probe_starts() {
        let mut h = Health::new(Arc::new(Notify::new()));
        let ns = "sfl-no-such-namespace-z";
        h.seed(ns, "web", "b1", false);
        assert_eq!(
            h.state(ns, "web", "b1"),
            (false, true),
            "DOWN: it must rise"
        );
        h.seed(ns, "web", "b1", true);
        assert_eq!(h.state(ns, "web", "b1"), (true, true), "UP: it must fall");
        h.seed(ns, "web", "b1", false);
        h.sync(BTreeMap::from([(ns.to_string(), vec![tcp_probe("b1")])]));
        assert_eq!(
            h.state(ns, "web", "b1"),
            (false, true),
            "the probe starts DOWN"
        );
        h.seed(ns, "web", "b1", true);
        assert!(
            !h.is_up(ns, "web", "b1"),
            "a probed backend ignores the peer"
        );
    }

    #[test]
    fn unprobed_backends_count_as_up_and_sync_without_namespace_reports() {
        let mut h = Health::new(Arc::new(Notify::new()));
        assert!(h.is_up("sfl-none", "web", "b1"));
        let p = tcp_probe("b1");
        let e = h.sync(BTreeMap::from([(
            "sfl-no-such-namespace-x".to_string(),
            vec![p],
        )]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(h.namespaces().is_empty());
        assert!(h.is_up("sfl-no-such-namespace-x", "web", "b1"));
        assert!(h.sync(BTreeMap::new()).is_empty());
    }
}
