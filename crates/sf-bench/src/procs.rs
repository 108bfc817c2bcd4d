//! The real processes a benchmark drives: an etcd server and the `sf-coordinator` binary, on
//! loopback ports of this run, plus what the benchmark reads off them (`/proc` memory and CPU,
//! the coordinator's Prometheus metrics). Children are killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Keeps the run's directory when `SF_BENCH_KEEP=1` (returns None then), else deletes it on drop.
pub fn keep_if_asked(dir: tempfile::TempDir) -> Option<tempfile::TempDir> {
    if std::env::var("SF_BENCH_KEEP").as_deref() == Ok("1") {
        eprintln!("keeping {}", dir.keep().display());
        None
    } else {
        Some(dir)
    }
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) `pid` has used, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux architecture this runs on.
    ticks as f64 / 100.0
}

pub struct Etcd {
    child: Child,
    pub endpoint: String,
}

impl Etcd {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("etcd is not installed (deploy/deps.sh installs etcd-server)")?;
        let data_dir = etcd_data_dir(dir)?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            // 100,000 VPCs with their allocations are ~600k keys.
            .args(["--quota-backend-bytes", "8589934592"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log"))?)
            .spawn()
            .context("starting etcd")?;
        let etcd = Etcd { child, endpoint };
        // Generous: on a loaded shared machine (CI, builds beside it) etcd's first fsyncs
        // have taken over 20 s, and one 5,000-agent run gave up at 60 s.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(s) =
                sf_store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await
            {
                use sf_store::KvStore;
                if s.get("/probe").await.is_ok() {
                    return Ok(etcd);
                }
            }
            if Instant::now() > deadline {
                bail!("etcd did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// etcd's data directory: under the run's directory (this machine's disk, fsync on), or with
/// `SF_BENCH_ETCD_TMPFS=1` on tmpfs. On this 2-core machine shared with builders writing
/// gigabytes, etcd's fsyncs stalled for seconds at 5,000 agents: agents' lease renewals and
/// the coordinator's etcd calls timed out ("etcd member unavailable", the leader lease lost),
/// agents re-acquired their leases and resynced, and the fleet never settled. tmpfs measures
/// the control plane without the shared disk; the put→watch baseline uses the same etcd.
fn etcd_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if std::env::var("SF_BENCH_ETCD_TMPFS").as_deref() != Ok("1") {
        return Ok(dir.join("etcd"));
    }
    let d = tempfile::Builder::new()
        .prefix("sf-bench-etcd")
        .tempdir_in("/dev/shm")?
        .keep();
    LEFT_TO_REMOVE.lock().unwrap().push(d.clone());
    eprintln!("etcd data on tmpfs: {}", d.display());
    Ok(d)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where and how the coordinator runs; restartable with the same ports and files.
pub struct CoordinatorSpec {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub etcd: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub token_file: PathBuf,
    pub grpc_port: u16,
    pub metrics_port: u16,
    /// `--agent-keepalive-secs` (None: the coordinator's default).
    pub keepalive_secs: Option<u64>,
    /// `--tls-ticket-key-file`: kept across restarts, as a deployment keeps it, so agents
    /// resume their TLS sessions with the restarted coordinator.
    pub ticket_key: PathBuf,
}

pub struct Coordinator {
    child: Child,
    pub started: Instant,
    pub metrics_port: u16,
}

impl CoordinatorSpec {
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// Starts the coordinator and returns once `/healthz` says its index is loaded.
    pub async fn start(&self, always_snapshot: bool) -> anyhow::Result<(Coordinator, Duration)> {
        self.start_with(always_snapshot, true).await
    }

    /// [`CoordinatorSpec::start`]; without `ticket_key` the coordinator seals TLS session
    /// tickets with a secret of its own (none it did not issue opens).
    pub async fn start_with(
        &self,
        always_snapshot: bool,
        ticket_key: bool,
    ) -> anyhow::Result<(Coordinator, Duration)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("coordinator.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--etcd-endpoints", &self.etcd])
            .arg("--tls-cert")
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .arg("--tls-ca")
            .arg(&self.ca)
            .arg("--api-token-file")
            .arg(&self.token_file)
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            // Per-agent info lines would cost as much as the work measured.
            .env(
                "RUST_LOG",
                std::env::var("SF_BENCH_COORDINATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // tracing's formatter writes to stdout.
            .stdout(log.try_clone()?)
            .stderr(log);
        if always_snapshot {
            cmd.arg("--always-snapshot");
        }
        if ticket_key {
            cmd.arg("--tls-ticket-key-file").arg(&self.ticket_key);
        }
        if let Some(secs) = self.keepalive_secs {
            cmd.args(["--agent-keepalive-secs", &secs.to_string()]);
        }
        let started = Instant::now();
        let child = cmd.spawn().context("starting sf-coordinator")?;
        let mut c = Coordinator {
            child,
            started,
            metrics_port: self.metrics_port,
        };
        let deadline = started + Duration::from_secs(600);
        loop {
            if let Some(status) = c.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!(
                    "the coordinator exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Ok((200, _)) = http_get(self.metrics_port, "/healthz").await {
                return Ok((c, started.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("coordinator did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Coordinator {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One metric's value (sum over label sets) from `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics").await?;
        Ok(parse_metric(&body, name))
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // Our own child, by its pid: the graceful path a supervisor takes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of a metric's samples in Prometheus text format (`name` or `name_total`).
pub fn parse_metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name || base == format!("{name}_total")).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Minimal HTTP/1.0 GET on loopback (the metrics endpoint), returning status and body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Work directories to remove after the runtime has stopped.
pub static LEFT_TO_REMOVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// What every benchmark starts from: a work directory (kept with `SF_BENCH_KEEP=1`), a real
/// etcd, a PKI with the coordinator's certificate, an API token, and how to run the
/// coordinator against them.
pub struct Bench {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub etcd: Etcd,
    pub pki: crate::pki::Pki,
    pub token: String,
    pub spec: CoordinatorSpec,
}

impl Bench {
    pub async fn start(name: &str, bin_dir: &Path) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("sf-bench-{name}"))
            .tempdir()?;
        let dir = tmp.path().to_path_buf();
        let tmp = keep_if_asked(tmp);
        if tmp.is_some() {
            // Simulated agents may still write their caches while the TempDir is dropped;
            // main removes the directory again once the runtime (and every agent) is gone.
            LEFT_TO_REMOVE.lock().unwrap().push(dir.clone());
        }
        let etcd = Etcd::start(&dir).await?;
        let pki = crate::pki::Pki::new(&dir.join("pki"))?;
        let server = pki.issue("coordinator", true)?;
        let token = format!("bench-{}", rand::random::<u64>());
        std::fs::write(dir.join("token"), &token)?;
        let secret: [u8; 32] = rand::random();
        std::fs::write(dir.join("ticket.key"), secret)?;
        let spec = CoordinatorSpec {
            bin: bin_dir.join("sf-coordinator"),
            dir: dir.clone(),
            etcd: etcd.endpoint.clone(),
            cert: server.cert,
            key: server.key,
            ca: pki.ca_path(),
            token_file: dir.join("token"),
            grpc_port: free_port(),
            metrics_port: free_port(),
            keepalive_secs: None,
            ticket_key: dir.join("ticket.key"),
        };
        Ok(Bench {
            dir,
            _tmp: tmp,
            etcd,
            pki,
            token,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_parsing_sums_label_sets_and_counter_suffix() {
        let body = "# HELP x\nsf_a_total 3\nsf_b{le=\"1\"} 2\nsf_b{le=\"2\"} 5\nsf_ab 9\n";
        assert_eq!(parse_metric(body, "sf_a"), 3.0);
        assert_eq!(parse_metric(body, "sf_b"), 7.0);
        assert_eq!(parse_metric(body, "sf_c"), 0.0);
    }
}
