//! Direct Connect on the VPC router: one eBGP session per [`DirectConnectPeering`] with the
//! customer's router, across the hand-off segment `brvx-<vni>` (a leaf hands the customer's
//! VLAN into the same VNI, so the segment is plain L2 between the two routers).
//!
//! - The router joins the segment with a veth `g<id>d<vni>` (host end, in `brvx-<vni>`) ↔
//!   `d<vni>` (in the VPC namespace, address `local`, the VPC's virtual MAC), planned by
//!   [`crate::plan::plan_router`] like a tier's but with none of a tier's semantics: not in the
//!   `inside` set, no ACL chain, no hairpin masquerade, never source-NATed (SNAT only applies
//!   to `transit`), and nothing from a DC is forwarded to `transit` (no transit through the
//!   VPC to the internet).
//! - The speaker is a per-VPC FRR (zebra + bgpd) running *inside* the VPC namespace, so what
//!   it learns is installed in that VPC only. It runs only while the router has at least one
//!   usable DC: directory `<state-dir>/vpc-frr/<netns>` (owned frr:frr, mode 755) holding
//!   `frr.conf`, the pid files `zebra.pid`/`bgpd.pid`, `zserv.api`, the vty sockets (so
//!   `vtysh --vty_socket <dir>` talks to it) and the logs; daemons are started as
//!   `ip netns exec <netns> /usr/lib/frr/{zebra,bgpd} -d -u frr -g frr -N <netns> -P 0 -f
//!   <dir>/frr.conf -i <dir>/<d>.pid -z <dir>/zserv.api --vty_socket <dir> --log
//!   file:<dir>/<d>.log`, and are alive when the pid file's process has that command line
//!   (checked every pass: a dead instance is restarted). The configuration is [`render`]ed
//!   (pure) and applied with `frr-reload.py` (only the diff, sessions are not reset).
//! - Status: [`Poller`] asks every instance every [`POLL`] for `show bgp ipv4 unicast summary
//!   json` (state, accepted = `pfxRcd`, sent = `pfxSnt`) and, per neighbor, `received-routes
//!   json` (`totalPrefixCounter`, the pre-policy count kept by soft-reconfiguration inbound),
//!   and triggers the dataplane's wakeup on any change. An instance that does not answer is
//!   reported in state [`STATE_DOWN`] (and the wakeup makes the next pass restart it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use sf_core::desired::{DirectConnectPeering, VpcRouter};
use sf_core::status::DcStatus;
use sf_core::validate::overlaps;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::names::{transit_addrs, TRANSIT_BASE};

/// FRR daemons of a per-VPC instance, in start order.
pub const DAEMONS: [&str; 2] = ["zebra", "bgpd"];
/// Where FRR's binaries are.
pub const FRR_BIN: &str = "/usr/lib/frr";
/// Status poll interval.
pub const POLL: Duration = Duration::from_secs(2);
/// State reported for a DC whose VPC's FRR does not answer.
pub const STATE_DOWN: &str = "Down";

/// The per-VPC FRR instances' root under the agent's state dir.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("vpc-frr")
}

/// The directory (and vty socket directory) of the FRR instance of VPC namespace `ns`.
pub fn instance_dir(state_dir: &Path, ns: &str) -> PathBuf {
    root(state_dir).join(ns)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The DCs of `r` that can be served, in name order, and the problems of the others (which
/// are left out: one bad DC does not take the others down).
pub fn usable(r: &VpcRouter) -> (Vec<&DirectConnectPeering>, Vec<String>) {
    let mut errors = Vec::new();
    let mut v: Vec<&DirectConnectPeering> = r.direct_connects.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    let tier_vnis: BTreeSet<u32> = r.tiers.iter().map(|t| t.vni).collect();
    let transit = transit_addrs(r.id)
        .map(|(h, _)| Ipv4Net::new(h, 31).expect("/31"))
        .unwrap_or_else(|| Ipv4Net::new(TRANSIT_BASE, 15).expect("/15"));
    let mut kept: Vec<&DirectConnectPeering> = Vec::new();
    for dc in v {
        let at = format!("vpc {}: direct connect {}", r.id, dc.name);
        let problem = if !valid_name(&dc.name) {
            Some("name must be 1-64 of [A-Za-z0-9._-]".to_string())
        } else if kept.iter().any(|k| k.name == dc.name) {
            Some("name used twice (first one kept)".into())
        } else if dc.vni == 0 || dc.vni > 0xff_ffff {
            Some(format!("VNI {} is not a 24-bit VNI", dc.vni))
        } else if tier_vnis.contains(&dc.vni) {
            Some(format!("VNI {} is also a tier's", dc.vni))
        } else if kept.iter().any(|k| k.vni == dc.vni) {
            Some(format!("VNI {} used by another direct connect", dc.vni))
        } else if dc.local.prefix_len() > 31 {
            Some(format!("local {} leaves no room for the peer", dc.local))
        } else if !dc.local.contains(&dc.peer) || dc.peer == dc.local.addr() {
            Some(format!(
                "peer {} is not another address of {}",
                dc.peer, dc.local
            ))
        } else if dc.local.prefix_len() < 31
            && [dc.local.addr(), dc.peer]
                .iter()
                .any(|a| *a == dc.local.network() || *a == dc.local.broadcast())
        {
            Some(format!(
                "{} / {}: network or broadcast address",
                dc.local, dc.peer
            ))
        } else if let Some(t) = r.tiers.iter().find(|t| overlaps(t.cidr, dc.local)) {
            Some(format!(
                "{} overlaps tier {} ({})",
                dc.local, t.name, t.cidr
            ))
        } else if let Some(k) = kept.iter().find(|k| overlaps(k.local, dc.local)) {
            Some(format!("{} overlaps direct connect {}", dc.local, k.name))
        } else if overlaps(transit, dc.local) {
            Some(format!("{} overlaps the transit link", dc.local))
        } else if dc.local_asn == 0 || dc.peer_asn == 0 {
            Some("ASN 0".into())
        } else {
            None
        };
        match problem {
            Some(p) => errors.push(format!("{at}: {p} (not served)")),
            None => kept.push(dc),
        }
    }
    (kept, errors)
}

/// Problems with the DCs of `r` (those DCs are not served).
pub fn validate(r: &VpcRouter) -> Vec<String> {
    usable(r).1
}

fn plist(dc: &DirectConnectPeering, dir: &str) -> String {
    format!("DC-{}-{dir}", dc.name)
}

/// The status key of a DC: "tenant/vpc/name".
pub fn status_key(r: &VpcRouter, dc: &DirectConnectPeering) -> String {
    format!("{}/{}/{}", r.tenant, r.vpc, dc.name)
}

/// The FRR configuration of VPC namespace `ns` for the usable DCs of `r`; None when there is
/// none (no FRR runs for that VPC). All DCs of a VPC are neighbors of one `router bgp`: its
/// ASN and router id are those of the first DC in name order; a DC with another local ASN
/// presents it with `local-as ... no-prepend replace-as`.
pub fn render(ns: &str, r: &VpcRouter) -> Option<String> {
    let (dcs, _) = usable(r);
    let first = *dcs.first()?;
    let asn = first.local_asn;
    let mut c = String::new();
    let _ = writeln!(c, "frr defaults datacenter");
    let _ = writeln!(c, "hostname {ns}");
    let _ = writeln!(c, "!");
    let _ = writeln!(c, "router bgp {asn}");
    let _ = writeln!(c, " bgp router-id {}", first.local.addr());
    for dc in &dcs {
        let p = dc.peer;
        let _ = writeln!(c, " neighbor {p} remote-as {}", dc.peer_asn);
        if dc.local_asn != asn {
            let _ = writeln!(
                c,
                " neighbor {p} local-as {} no-prepend replace-as",
                dc.local_asn
            );
        }
        let _ = writeln!(c, " neighbor {p} description dc {}", dc.name);
    }
    let _ = writeln!(c, " address-family ipv4 unicast");
    let networks: BTreeSet<Ipv4Net> = dcs
        .iter()
        .flat_map(|dc| dc.announce.iter().map(|n| n.trunc()))
        .collect();
    for n in &networks {
        let _ = writeln!(c, "  network {n}");
    }
    for dc in &dcs {
        let p = dc.peer;
        let _ = writeln!(c, "  neighbor {p} soft-reconfiguration inbound");
        let _ = writeln!(c, "  neighbor {p} prefix-list {} in", plist(dc, "IN"));
        let _ = writeln!(c, "  neighbor {p} prefix-list {} out", plist(dc, "OUT"));
    }
    let _ = writeln!(c, " exit-address-family");
    let _ = writeln!(c, "exit");
    let _ = writeln!(c, "!");
    for dc in &dcs {
        let name = plist(dc, "IN");
        if dc.accept.is_empty() {
            let _ = writeln!(c, "ip prefix-list {name} seq 5 deny any");
        }
        for (i, f) in dc.accept.iter().enumerate() {
            let _ = writeln!(c, "ip prefix-list {name} seq {} permit {f}", 5 * (i + 1));
        }
        let name = plist(dc, "OUT");
        let announce: BTreeSet<Ipv4Net> = dc.announce.iter().map(|n| n.trunc()).collect();
        if announce.is_empty() {
            let _ = writeln!(c, "ip prefix-list {name} seq 5 deny any");
        }
        for (i, n) in announce.iter().enumerate() {
            let _ = writeln!(c, "ip prefix-list {name} seq {} permit {n}", 5 * (i + 1));
        }
    }
    let _ = writeln!(c, "!");
    Some(c)
}

/// Lines `show running-config` must contain once [`render`]'s configuration is applied.
pub fn expected_lines(r: &VpcRouter) -> Vec<String> {
    let (dcs, _) = usable(r);
    let Some(first) = dcs.first() else {
        return Vec::new();
    };
    let mut v = vec![format!("router bgp {}", first.local_asn)];
    for dc in &dcs {
        v.push(format!("neighbor {} remote-as {}", dc.peer, dc.peer_asn));
        v.push(format!(
            "neighbor {} prefix-list {} in",
            dc.peer,
            plist(dc, "IN")
        ));
    }
    v
}

/// One neighbor of `show bgp ipv4 unicast summary json`: (state, pfxRcd, pfxSnt).
pub fn parse_summary(json: &str) -> Result<BTreeMap<Ipv4Addr, (String, u64, u64)>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    // `show bgp ipv4 unicast summary json` has the peers at the top; `show bgp summary json`
    // nests them per address family.
    let peers = v
        .get("peers")
        .or_else(|| v.get("ipv4Unicast").and_then(|a| a.get("peers")));
    let mut m = BTreeMap::new();
    if let Some(peers) = peers.and_then(|p| p.as_object()) {
        for (addr, p) in peers {
            let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                continue;
            };
            let state = p
                .get("state")
                .and_then(|s| s.as_str())
                .unwrap_or("Idle")
                .to_string();
            let n = |k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
            m.insert(ip, (state, n("pfxRcd"), n("pfxSnt")));
        }
    }
    Ok(m)
}

/// `totalPrefixCounter` of `show bgp ipv4 unicast neighbors P received-routes json`.
pub fn parse_received(json: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("totalPrefixCounter").and_then(|x| x.as_u64()))
        .unwrap_or(0)
}

/// What the poller asks: one instance and its DCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dir: PathBuf,
    /// status key → peer address.
    pub peers: BTreeMap<String, Ipv4Addr>,
}

async fn vtysh(dir: &Path, cmd: &str) -> Result<String, sf_linux::DeviceError> {
    let dir = dir.to_string_lossy().to_string();
    tokio::time::timeout(
        Duration::from_secs(5),
        sf_linux::run("vtysh", &["--vty_socket", &dir, "-c", cmd]),
    )
    .await
    .unwrap_or_else(|_| {
        Err(sf_linux::DeviceError::Verify(format!(
            "vtysh {cmd}: timed out"
        )))
    })
}

/// The status of every DC of one instance.
pub async fn query(t: &Target) -> BTreeMap<String, DcStatus> {
    let down = || DcStatus {
        state: STATE_DOWN.into(),
        ..Default::default()
    };
    let summary = match vtysh(&t.dir, "show bgp ipv4 unicast summary json").await {
        Ok(s) => parse_summary(&s).ok(),
        Err(_) => None,
    };
    let Some(summary) = summary else {
        return t.peers.keys().map(|k| (k.clone(), down())).collect();
    };
    let mut out = BTreeMap::new();
    for (key, peer) in &t.peers {
        let (state, accepted, sent) = summary
            .get(peer)
            .cloned()
            .unwrap_or_else(|| ("Idle".into(), 0, 0));
        let received = if state == "Established" {
            vtysh(
                &t.dir,
                &format!("show bgp ipv4 unicast neighbors {peer} received-routes json"),
            )
            .await
            .map(|s| parse_received(&s))
            .unwrap_or(0)
        } else {
            0
        };
        out.insert(
            key.clone(),
            DcStatus {
                state,
                received,
                accepted,
                sent,
            },
        );
    }
    out
}

/// The background status poller: what to poll (set by each reconcile pass) and what was
/// last seen.
#[derive(Clone, Default)]
pub struct Poller {
    pub targets: Arc<Mutex<BTreeMap<String, Target>>>,
    pub seen: Arc<Mutex<BTreeMap<String, DcStatus>>>,
}

impl Poller {
    /// Runs forever: polls every [`POLL`], and notifies `wake` when anything changed.
    pub async fn run(self, wake: Arc<Notify>) {
        loop {
            tokio::time::sleep(POLL).await;
            let targets: Vec<Target> = self.targets.lock().unwrap().values().cloned().collect();
            let mut now = BTreeMap::new();
            for t in &targets {
                now.extend(query(t).await);
            }
            let changed = {
                let mut seen = self.seen.lock().unwrap();
                if *seen != now {
                    for (k, v) in &now {
                        if seen.get(k) != Some(v) {
                            info!(dc = %k, state = %v.state, received = v.received,
                                  accepted = v.accepted, sent = v.sent, "direct connect status");
                        }
                    }
                    *seen = now;
                    true
                } else {
                    false
                }
            };
            if changed {
                wake.notify_one();
            }
        }
    }

    /// What to report: every polled DC, those not polled yet as Idle.
    pub fn status(&self) -> BTreeMap<String, DcStatus> {
        let seen = self.seen.lock().unwrap();
        self.targets
            .lock()
            .unwrap()
            .values()
            .flat_map(|t| t.peers.keys())
            .map(|k| {
                (
                    k.clone(),
                    seen.get(k).cloned().unwrap_or_else(|| DcStatus {
                        state: "Idle".into(),
                        ..Default::default()
                    }),
                )
            })
            .collect()
    }
}

// ---- the per-VPC FRR processes ----

fn pid_of(dir: &Path, daemon: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("{daemon}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live `daemon` of the instance in `dir` (its command line names the
/// daemon and the directory: a recycled pid is not mistaken for it).
fn is_ours(pid: i32, daemon: &str, dir: &Path) -> bool {
    let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let c = String::from_utf8_lossy(&c);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(true);
    !zombie && c.contains(&format!("/{daemon}\0")) && c.contains(&*dir.to_string_lossy())
}

/// Whether every daemon of the instance in `dir` runs.
pub fn alive(dir: &Path) -> bool {
    DAEMONS
        .iter()
        .all(|d| pid_of(dir, d).is_some_and(|p| is_ours(p, d, dir)))
}

/// Whether any daemon of the instance in `dir` runs.
pub fn any_alive(dir: &Path) -> bool {
    DAEMONS
        .iter()
        .any(|d| pid_of(dir, d).is_some_and(|p| is_ours(p, d, dir)))
}

/// Stops the instance in `dir`: SIGTERM to bgpd then zebra (zebra withdraws the routes it
/// installed), waits up to 5 s each, then SIGKILL. Returns whether anything was running.
pub async fn stop(dir: &Path) -> bool {
    let mut any = false;
    for d in DAEMONS.iter().rev() {
        let Some(pid) = pid_of(dir, d) else { continue };
        if !is_ours(pid, d, dir) {
            continue;
        }
        any = true;
        // SAFETY: kill(2) of a pid verified to be this instance's daemon.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let mut gone = false;
        for _ in 0..100 {
            if !is_ours(pid, d, dir) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !gone {
            warn!(pid, daemon = d, dir = %dir.display(), "FRR daemon ignores SIGTERM: killing");
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            for _ in 0..40 {
                if !is_ours(pid, d, dir) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = std::fs::remove_file(dir.join(format!("{d}.pid")));
    }
    any
}

/// Stops the instance in `dir` and removes its directory (and the empty
/// `/var/run/frr/<netns>` FRR creates for its `-N` pathspace).
pub async fn remove(dir: &Path) -> bool {
    let any = stop(dir).await;
    if let Some(ns) = dir.file_name() {
        let _ = std::fs::remove_dir(Path::new("/var/run/frr").join(ns));
    }
    let existed = dir.exists();
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(dir = %dir.display(), error = %e, "cannot remove FRR directory");
        }
    }
    any || existed
}

const COMMAND_SECS: u64 = sf_linux::COMMAND_TIMEOUT.as_secs();

fn chown_frr(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(path)
        .output()
        .map_err(|e| format!("chown: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "chown -R frr:frr {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    for _ in 0..200 {
        if ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what}: not ready after 10 s"))
}

/// (Re)starts the instance of VPC namespace `ns` in `dir` with `config` as its startup
/// configuration: whatever is left of an earlier one is stopped first.
pub async fn start(ns: &str, dir: &Path, config: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    stop(dir).await;
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    for f in ["zserv.api", "zebra.vty", "bgpd.vty", "applied.conf"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::write(dir.join("frr.conf"), config).map_err(io)?;
    std::fs::write(dir.join("vtysh.conf"), "").map_err(io)?;
    chown_frr(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    let d = dir.to_string_lossy().to_string();
    for daemon in DAEMONS {
        let bin = format!("{FRR_BIN}/{daemon}");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("start.err"))
            .map_err(io)?;
        let status = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns, &bin, "-d", "-u", "frr", "-g", "frr"])
            .args(["-N", ns, "-P", "0"])
            .args(["-f", &format!("{d}/frr.conf")])
            .args(["-i", &format!("{d}/{daemon}.pid")])
            .args(["-z", &format!("{d}/zserv.api")])
            .args(["--vty_socket", &d])
            .args(["--log", &format!("file:{d}/{daemon}.log")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            // `-d` daemonizes at once; a start that hangs instead is killed at the timeout.
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(sf_linux::COMMAND_TIMEOUT, status)
            .await
            .map_err(|_| format!("{bin}: did not daemonize within {COMMAND_SECS} s"))?
            .map_err(|e| format!("{bin}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "{ns}: {daemon} did not start ({status}; see {d}/{daemon}.log, {d}/start.err)"
            ));
        }
        if daemon == "zebra" {
            let sock = dir.join("zserv.api");
            wait_for(&format!("{ns}: zebra zserv.api"), || sock.exists()).await?;
        }
        let vty = dir.join(format!("{daemon}.vty"));
        wait_for(&format!("{ns}: {daemon} vty"), || {
            vty.exists() && pid_of(dir, daemon).is_some_and(|p| is_ours(p, daemon, dir))
        })
        .await?;
    }
    info!(%ns, dir = %d, "per-VPC FRR started");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::PrefixFilter;

    pub fn dc(name: &str, vni: u32, local: &str, peer: &str) -> DirectConnectPeering {
        DirectConnectPeering {
            name: name.into(),
            vni,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            local_asn: 65010,
            peer_asn: 65100,
            accept: vec!["192.168.100.0/24".parse().unwrap()],
            announce: vec!["10.10.1.0/24".parse().unwrap()],
        }
    }

    fn router() -> VpcRouter {
        let mut r = crate::nft::example();
        r.direct_connects
            .push(dc("hq", 1_000_100, "169.254.100.1/30", "169.254.100.2"));
        r
    }

    #[test]
    fn renders_the_documented_configuration() {
        let r = router();
        let c = render("sfvpc-7", &r).unwrap();
        assert_eq!(
            c,
            "frr defaults datacenter
hostname sfvpc-7
!
router bgp 65010
 bgp router-id 169.254.100.1
 neighbor 169.254.100.2 remote-as 65100
 neighbor 169.254.100.2 description dc hq
 address-family ipv4 unicast
  network 10.10.1.0/24
  neighbor 169.254.100.2 soft-reconfiguration inbound
  neighbor 169.254.100.2 prefix-list DC-hq-IN in
  neighbor 169.254.100.2 prefix-list DC-hq-OUT out
 exit-address-family
exit
!
ip prefix-list DC-hq-IN seq 5 permit 192.168.100.0/24
ip prefix-list DC-hq-OUT seq 5 permit 10.10.1.0/24
!
"
        );
        assert_eq!(
            expected_lines(&r),
            [
                "router bgp 65010",
                "neighbor 169.254.100.2 remote-as 65100",
                "neighbor 169.254.100.2 prefix-list DC-hq-IN in"
            ]
        );
        // No DC: no FRR at all.
        assert_eq!(render("sfvpc-7", &crate::nft::example()), None);
        assert!(expected_lines(&crate::nft::example()).is_empty());
    }

    #[test]
    fn several_dcs_share_one_instance_and_filters_follow_the_intent() {
        let mut r = router();
        let mut b = dc("branch", 1_000_101, "169.254.101.1/30", "169.254.101.2");
        b.local_asn = 65011;
        b.peer_asn = 65200;
        b.accept = vec![
            "10.50.0.0/16".parse::<PrefixFilter>().unwrap(),
            "172.16.0.0/12 ge 24 le 28".parse().unwrap(),
        ];
        b.announce = vec![
            "10.10.2.0/24".parse().unwrap(),
            "10.10.1.0/24".parse().unwrap(),
        ];
        let mut none = dc("lab", 1_000_102, "169.254.102.1/30", "169.254.102.2");
        none.accept.clear();
        none.announce.clear();
        r.direct_connects.push(none);
        r.direct_connects.push(b);
        let c = render("sfvpc-7", &r).unwrap();
        // Name order: branch first, so its ASN and address lead.
        assert!(
            c.contains("router bgp 65011\n bgp router-id 169.254.101.1\n"),
            "{c}"
        );
        assert!(c.contains(" neighbor 169.254.100.2 local-as 65010 no-prepend replace-as\n"));
        assert!(!c.contains(" neighbor 169.254.101.2 local-as"));
        assert!(c.contains(" neighbor 169.254.101.2 remote-as 65200\n"));
        assert!(c.contains("  network 10.10.1.0/24\n  network 10.10.2.0/24\n"));
        assert!(c.contains("ip prefix-list DC-branch-IN seq 5 permit 10.50.0.0/16\n"));
        assert!(c.contains("ip prefix-list DC-branch-IN seq 10 permit 172.16.0.0/12 ge 24 le 28\n"));
        assert!(c.contains("ip prefix-list DC-branch-OUT seq 5 permit 10.10.1.0/24\nip prefix-list DC-branch-OUT seq 10 permit 10.10.2.0/24\n"));
        assert!(c.contains("ip prefix-list DC-lab-IN seq 5 deny any\n"));
        assert!(c.contains("ip prefix-list DC-lab-OUT seq 5 deny any\n"));
        assert_eq!(c.matches("router bgp").count(), 1);
        assert_eq!(expected_lines(&r).len(), 7);
    }

    #[test]
    fn bad_dcs_are_left_out_and_reported() {
        let mut r = router();
        let good = r.direct_connects[0].clone();
        let mut bad = vec![
            dc("hq", 1_000_200, "169.254.200.1/30", "169.254.200.2"), // name twice
            dc("tier", 1_000_001, "169.254.201.1/30", "169.254.201.2"), // tier VNI
            dc("samevni", 1_000_100, "169.254.202.1/30", "169.254.202.2"),
            dc("outside", 1_000_203, "169.254.203.1/30", "169.254.9.2"),
            dc("bcast", 1_000_204, "169.254.204.1/30", "169.254.204.3"),
            dc("overlap", 1_000_205, "10.10.1.200/30", "10.10.1.201"),
            dc("zoverlap", 1_000_206, "169.254.100.0/24", "169.254.100.9"),
            dc("transit", 1_000_207, "198.18.0.13/30", "198.18.0.14"),
            dc("bad name", 1_000_208, "169.254.208.1/30", "169.254.208.2"),
        ];
        bad[0].peer_asn = 1;
        r.direct_connects.extend(bad);
        let mut p2p = dc("p2p", 1_000_209, "169.254.209.0/31", "169.254.209.1");
        p2p.peer_asn = 65300;
        r.direct_connects.push(p2p);
        let (ok, errors) = usable(&r);
        let names: Vec<&str> = ok.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["hq", "p2p"], "{errors:#?}");
        assert_eq!(ok[0], &good);
        assert_eq!(errors.len(), 9, "{errors:#?}");
        assert!(errors.iter().all(|e| e.ends_with("(not served)")));
    }

    #[test]
    fn parses_frr_status_json() {
        let summary = r#"{"routerId":"169.254.100.1","as":65010,"vrfId":0,"vrfName":"default",
          "peers":{"169.254.100.2":{"remoteAs":65100,"state":"Established","peerState":"OK",
                    "pfxRcd":1,"pfxSnt":2},
                   "169.254.101.2":{"remoteAs":65200,"state":"Active","peerState":"OK"}},
          "failedPeers":1,"totalPeers":2}"#;
        let m = parse_summary(summary).unwrap();
        assert_eq!(
            m[&"169.254.100.2".parse::<Ipv4Addr>().unwrap()],
            ("Established".into(), 1, 2)
        );
        assert_eq!(
            m[&"169.254.101.2".parse::<Ipv4Addr>().unwrap()],
            ("Active".into(), 0, 0)
        );
        let nested = r#"{"ipv4Unicast":{"peers":{"169.254.100.2":{"state":"Connect"}}}}"#;
        assert_eq!(parse_summary(nested).unwrap().len(), 1);
        assert!(parse_summary("{}").unwrap().is_empty());
        assert!(parse_summary("% no bgp").is_err());
        assert_eq!(
            parse_received(
                r#"{"receivedRoutes":{},"totalPrefixCounter":2,"filteredPrefixCounter":0}"#
            ),
            2
        );
        assert_eq!(parse_received("{}"), 0);
    }
}
