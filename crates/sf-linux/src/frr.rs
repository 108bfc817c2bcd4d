//! FRR: the underlay and EVPN control plane. [`render`] is pure (unit-tested); [`Frr::apply`]
//! hands the rendered configuration to FRR's `frr-reload.py`, which diffs it against the
//! running configuration and sends only the difference through vtysh (sessions that did not
//! change are not reset), then checks the running configuration carries what was asked.
//!
//! The agent owns the node's whole FRR configuration: anything not rendered here is removed by
//! the reload. Daemons are addressed through their vty socket directory, which works the same
//! inside a network namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::PathBuf;

use sf_core::desired::{EvpnRole, PeerFilter, Underlay, BFD_INTERVAL_MS, BFD_MULTIPLIER};
use tracing::{info, warn};

use crate::{run, DeviceError};

/// Renders the full FRR configuration of a node.
pub fn render(hostname: &str, u: &Underlay) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "frr defaults datacenter");
    let _ = writeln!(c, "hostname {hostname}");
    if u.evpn == EvpnRole::Transit || u.forwarding {
        let _ = writeln!(c, "ip forwarding");
        let _ = writeln!(c, "ipv6 forwarding");
    }
    let _ = writeln!(c, "!");
    render_filters(&mut c, &u.peer_filters);
    if u.ipv6_unicast {
        render_filters6(&mut c, &u.peer_filters);
    }
    render_evpn_filters(&mut c, &u.peer_filters);
    if u.peer_filters.iter().any(|f| f.evpn.is_some()) {
        let _ = writeln!(c, "bgp route-map delay-timer {EVPN_FILTER_DELAY_S}");
        let _ = writeln!(c, "!");
    }
    render_bfd(&mut c, u);
    render_redistribution(&mut c, u);
    render_redistribution6(&mut c, u);
    render_local_only(&mut c, u);
    let _ = writeln!(c, "router bgp {}", u.asn);
    let _ = writeln!(c, " bgp router-id {}", u.router_id);
    let _ = writeln!(c, " no bgp ebgp-requires-policy");
    let _ = writeln!(c, " bgp bestpath as-path multipath-relax");
    let _ = writeln!(c, " neighbor FABRIC peer-group");
    let _ = writeln!(c, " neighbor FABRIC remote-as external");
    for n in &u.neighbors {
        let _ = writeln!(c, " neighbor {n} interface peer-group FABRIC");
    }
    for n in &u.bfd_neighbors {
        // Both lines, as `show running-config` has them: without the first, frr-reload
        // deletes `neighbor N bfd` on every reload, which resets the BFD session and with it
        // the BGP session (the gateway leaves the fabric for seconds).
        let _ = writeln!(c, " neighbor {n} bfd");
        let _ = writeln!(c, " neighbor {n} bfd profile {BFD_PROFILE}");
    }
    let _ = writeln!(c, " !");
    let _ = writeln!(c, " address-family ipv4 unicast");
    let _ = writeln!(c, "  network {}/32", u.loopback);
    // Switches originate the pools; gateways only drop what they do not serve.
    let pools = if u.forwarding { &u.blackhole[..] } else { &[] };
    for p in u.announce.iter().chain(pools) {
        let _ = writeln!(c, "  network {p}");
    }
    if !u.redistribute_host_routes.is_empty() {
        let _ = writeln!(c, "  redistribute kernel route-map {REDISTRIBUTE}");
    }
    if local_only(u) {
        let _ = writeln!(c, "  neighbor FABRIC route-map {LOCAL_ONLY} out");
    }
    for f in &u.peer_filters {
        let _ = writeln!(
            c,
            "  neighbor {} route-map {} in",
            f.neighbor,
            filter_name(f)
        );
    }
    let _ = writeln!(c, " exit-address-family");
    let _ = writeln!(c, " !");
    if u.ipv6_unicast {
        render_ipv6_unicast(&mut c, u);
    }
    let _ = writeln!(c, " address-family l2vpn evpn");
    let _ = writeln!(c, "  neighbor FABRIC activate");
    for f in u.peer_filters.iter().filter(|f| f.evpn.is_some()) {
        let _ = writeln!(
            c,
            "  neighbor {} route-map {} in",
            f.neighbor,
            evpn_filter_name(f)
        );
    }
    if u.evpn == EvpnRole::Vtep {
        // Every local VNI (vxlan<VNI> in a bridge) is advertised without per-VNI config; route
        // targets are auto-derived and FRR imports them on the VNI alone, across ASNs.
        let _ = writeln!(c, "  advertise-all-vni");
    }
    let _ = writeln!(c, " exit-address-family");
    let _ = writeln!(c, "exit");
    c
}

const BFD_PROFILE: &str = "sf-fabric";
const REDISTRIBUTE: &str = "SF-HOST-ROUTES";
const REDISTRIBUTE6: &str = "SF-HOST-ROUTES6";
const LOCAL_ONLY: &str = "SF-LOCAL-ONLY";

/// The BFD profile of the fabric sessions that have it (see [`BFD_INTERVAL_MS`]).
fn render_bfd(c: &mut String, u: &Underlay) {
    if u.bfd_neighbors.is_empty() {
        return;
    }
    let _ = writeln!(c, "bfd");
    let _ = writeln!(c, " profile {BFD_PROFILE}");
    let _ = writeln!(c, "  detect-multiplier {BFD_MULTIPLIER}");
    let _ = writeln!(c, "  receive-interval {BFD_INTERVAL_MS}");
    let _ = writeln!(c, "  transmit-interval {BFD_INTERVAL_MS}");
    let _ = writeln!(c, " exit");
    let _ = writeln!(c, "exit");
    let _ = writeln!(c, "!");
}

/// Which kernel routes a gateway announces: host routes (/32) inside its pools and the anchor
/// range, i.e. exactly the routes its failover controller installs for the VPCs it serves.
/// The pools' own blackhole routes are shorter and stay unannounced.
fn render_redistribution(c: &mut String, u: &Underlay) {
    let none: &[ipnet::Ipv4Net] = &[];
    render_prefix_route_map(
        c,
        "ip",
        REDISTRIBUTE,
        none,
        &u.redistribute_host_routes,
        "ge 32",
    );
}

/// A prefix list of `denied` (each `deny <p>`, exactly that prefix) then `prefixes` (each
/// `permit <p> <range>`), and the route map `name` matching it, in family `ip` or `ipv6`;
/// nothing when there are no prefixes to permit.
fn render_prefix_route_map<P: std::fmt::Display>(
    c: &mut String,
    family: &str,
    name: &str,
    denied: &[P],
    prefixes: &[P],
    range: &str,
) {
    if prefixes.is_empty() {
        return;
    }
    let lines = denied
        .iter()
        .map(|p| format!("deny {p}"))
        .chain(prefixes.iter().map(|p| format!("permit {p} {range}")));
    for (i, line) in lines.enumerate() {
        let seq = (i + 1) * 5;
        let _ = writeln!(c, "{family} prefix-list {name} seq {seq} {line}");
    }
    let _ = writeln!(c, "route-map {name} permit 10");
    let _ = writeln!(c, " match {family} address prefix-list {name}");
    let _ = writeln!(c, "exit");
    let _ = writeln!(c, "!");
}

/// Whether the node announces only what it originates (a gateway: it redistributes).
fn local_only(u: &Underlay) -> bool {
    !u.redistribute_host_routes.is_empty() || !u.redistribute_host_routes6.is_empty()
}

/// The outbound policy of a gateway's fabric sessions, in both families.
fn render_local_only(c: &mut String, u: &Underlay) {
    if !local_only(u) {
        return;
    }
    // A gateway is not transit: it sends the fabric only what it originates (an empty AS
    // path), never another gateway's VPC routes learned from one leaf back to the other leaf
    // (a second, longer path to an address that gateway does not serve).
    let _ = writeln!(c, "bgp as-path access-list {LOCAL_ONLY} seq 5 permit ^$");
    let _ = writeln!(c, "!");
    let _ = writeln!(c, "route-map {LOCAL_ONLY} permit 10");
    let _ = writeln!(c, " match as-path {LOCAL_ONLY}");
    let _ = writeln!(c, "exit");
    let _ = writeln!(c, "!");
}

/// Which kernel routes a gateway announces in IPv6: any prefix inside its site's IPv6 pools
/// (`le 128`, so a VPC range that is a whole pool matches too, which a `ge` longer than the
/// pool would miss), i.e. the routed ranges of the VPCs it serves as the active
/// router, as the gateway agent installs them. As in IPv4, no VPC is named here. The
/// pools' own blackhole routes ([`Underlay::blackhole6`]) are denied first: `le 128` would
/// match them, where IPv4's `ge 32` leaves the shorter pool routes out by itself.
fn render_redistribution6(c: &mut String, u: &Underlay) {
    // Switches announce their blackholes by `network`; only a redistributing node denies.
    let denied = if u.forwarding {
        &[][..]
    } else {
        &u.blackhole6[..]
    };
    render_prefix_route_map(
        c,
        "ipv6",
        REDISTRIBUTE6,
        denied,
        &u.redistribute_host_routes6,
        "le 128",
    );
}

/// IPv6 unicast on the fabric sessions (BGP unnumbered: IPv6 NLRI over the link-local
/// session, next hop the peer's link-local), with the same policies as IPv4: a gateway
/// redistributes its routed ranges and sends only its own; a switch filters each hypervisor
/// and gateway.
fn render_ipv6_unicast(c: &mut String, u: &Underlay) {
    let _ = writeln!(c, " address-family ipv6 unicast");
    // Switches originate the IPv6 pools, as the IPv4 ones; gateways only drop what they do
    // not serve.
    if u.forwarding {
        for p in &u.blackhole6 {
            let _ = writeln!(c, "  network {p}");
        }
    }
    if !u.redistribute_host_routes6.is_empty() {
        let _ = writeln!(c, "  redistribute kernel route-map {REDISTRIBUTE6}");
    }
    let _ = writeln!(c, "  neighbor FABRIC activate");
    if local_only(u) {
        let _ = writeln!(c, "  neighbor FABRIC route-map {LOCAL_ONLY} out");
    }
    for f in &u.peer_filters {
        let _ = writeln!(
            c,
            "  neighbor {} route-map {} in",
            f.neighbor,
            filter6_name(f)
        );
    }
    let _ = writeln!(c, " exit-address-family");
    let _ = writeln!(c, " !");
}

/// The IPv6 prefix list and route map holding what a switch accepts from one neighbour.
fn filter6_name(f: &PeerFilter) -> String {
    format!("SF-FROM6-{}", f.neighbor)
}

/// IPv6 unicast filters, one per filtered neighbour: any prefix inside the permitted ones
/// (a gateway's site IPv6 pools); a neighbour with none (a hypervisor) gets a route map that
/// denies everything, so it cannot announce any IPv6 prefix (a default route, say).
fn render_filters6(c: &mut String, filters: &[PeerFilter]) {
    for f in filters {
        let name = filter6_name(f);
        if f.permit6.is_empty() {
            let _ = writeln!(c, "route-map {name} deny 10");
            let _ = writeln!(c, "exit");
            let _ = writeln!(c, "!");
            continue;
        }
        for (i, p) in f.permit6.iter().enumerate() {
            let _ = writeln!(
                c,
                "ipv6 prefix-list {name} seq {} permit {p} le 128",
                (i + 1) * 5
            );
        }
        let _ = writeln!(c, "route-map {name} permit 10");
        let _ = writeln!(c, " match ipv6 address prefix-list {name}");
        let _ = writeln!(c, "exit");
        let _ = writeln!(c, "!");
    }
}

/// The prefix list and route map holding what a switch accepts from one neighbour.
fn filter_name(f: &PeerFilter) -> String {
    format!("SF-FROM-{}", f.neighbor)
}

/// One prefix list and one route map per filtered neighbour: a route the list does not permit
/// meets the route map's implicit deny. Applied inbound in IPv4 unicast only (EVPN routes are
/// not filtered here).
fn render_filters(c: &mut String, filters: &[PeerFilter]) {
    for f in filters {
        let name = filter_name(f);
        for (i, m) in f.permit.iter().enumerate() {
            let ge = if m.host_routes { " ge 32" } else { "" };
            let _ = writeln!(
                c,
                "ip prefix-list {name} seq {} permit {}{ge}",
                (i + 1) * 5,
                m.prefix
            );
        }
        let _ = writeln!(c, "route-map {name} permit 10");
        let _ = writeln!(c, " match ip address prefix-list {name}");
        let _ = writeln!(c, "exit");
        let _ = writeln!(c, "!");
    }
}

/// The route map holding which EVPN routes a switch accepts from one neighbour.
fn evpn_filter_name(f: &PeerFilter) -> String {
    format!("SF-EVPN-FROM-{}", f.neighbor)
}

/// Routes carrying more than one route target: never sent by our nodes, which derive one
/// route target per VNI; refused so a node cannot smuggle a foreign VNI's target onto a
/// route of its own VNI (FRR imports by route target).
const EVPN_MULTI_RT: &str = "SF-EVPN-MULTI-RT";

/// Seconds FRR waits after a policy change before re-reading the neighbours' routes through
/// it (a route refresh). FRR's default is 5 s; a node's new VNI is refused at the leaf until
/// then, so a VM on a newly used tier would wait that long. 0 would disable the update.
const EVPN_FILTER_DELAY_S: u32 = 1;

/// EVPN routes a switch accepts from a hypervisor or gateway: MAC/IP (type 2) and multicast
/// (type 3) routes it originated (so not another node's routes relayed between two leaves)
/// whose only route target names a VNI in the neighbour's scope. Prefix
/// routes, Ethernet-segment routes and any other VNI meet the route map's implicit deny. The
/// route target's AS half is not checked (FRR imports auto-derived targets on the VNI alone).
fn render_evpn_filters(c: &mut String, filters: &[PeerFilter]) {
    if filters.iter().all(|f| f.evpn.is_none()) {
        return;
    }
    let _ = writeln!(
        c,
        "bgp extcommunity-list expanded {EVPN_MULTI_RT} seq 5 permit RT:.*RT:"
    );
    let _ = writeln!(c, "!");
    for f in filters {
        let Some(scope) = &f.evpn else { continue };
        let name = evpn_filter_name(f);
        let _ = writeln!(
            c,
            "bgp as-path access-list {name} seq 5 permit ^{}$",
            scope.asn
        );
        // `_` is FRR's delimiter class in BGP regular expressions (start, end or a space).
        // The sequence number is the VNI: a VNI joining or leaving the scope is one line
        // added or removed, never a renumbering of the others (see `list_delta`).
        for vni in &scope.vnis {
            let _ = writeln!(
                c,
                "bgp extcommunity-list expanded {name} seq {vni} permit _RT:[0-9.]+:{vni}_"
            );
        }
        let _ = writeln!(c, "route-map {name} deny 5");
        let _ = writeln!(c, " match extcommunity {EVPN_MULTI_RT}");
        let _ = writeln!(c, "exit");
        for (seq, kind) in [(10, "macip"), (20, "multicast")] {
            let _ = writeln!(c, "route-map {name} permit {seq}");
            let _ = writeln!(c, " match as-path {name}");
            let _ = writeln!(c, " match evpn route-type {kind}");
            let _ = writeln!(c, " match extcommunity {name}");
            let _ = writeln!(c, "exit");
        }
        let _ = writeln!(c, "!");
    }
}

/// Lines that must appear in `show running-config` once `u` is applied.
pub fn expected_lines(u: &Underlay) -> Vec<String> {
    let mut v = vec![format!("router bgp {}", u.asn)];
    v.extend(
        u.neighbors
            .iter()
            .map(|n| format!("neighbor {n} interface peer-group FABRIC")),
    );
    if u.evpn == EvpnRole::Vtep {
        v.push("advertise-all-vni".into());
    }
    v.extend(
        u.peer_filters
            .iter()
            .map(|f| format!("neighbor {} route-map {} in", f.neighbor, filter_name(f))),
    );
    v.extend(u.peer_filters.iter().filter(|f| f.evpn.is_some()).map(|f| {
        format!(
            "neighbor {} route-map {} in",
            f.neighbor,
            evpn_filter_name(f)
        )
    }));
    v.extend(
        u.bfd_neighbors
            .iter()
            .map(|n| format!("neighbor {n} bfd profile {BFD_PROFILE}")),
    );
    if !u.redistribute_host_routes.is_empty() {
        v.push(format!("redistribute kernel route-map {REDISTRIBUTE}"));
        v.push(format!("neighbor FABRIC route-map {LOCAL_ONLY} out"));
    }
    if u.ipv6_unicast {
        v.push("address-family ipv6 unicast".into());
        v.extend(
            u.peer_filters
                .iter()
                .map(|f| format!("neighbor {} route-map {} in", f.neighbor, filter6_name(f))),
        );
    }
    if !u.redistribute_host_routes6.is_empty() {
        v.push(format!("redistribute kernel route-map {REDISTRIBUTE6}"));
    }
    v
}

/// Top-level one-line statements applied as a delta: the EVPN scope lists, keyed by list
/// name and sequence number (the VNI), so a VNI joining or leaving is one line and nothing is
/// renumbered; bgpd alone takes them, so a hung other daemon cannot leave a delta half
/// applied. Prefix lists are not among them: vtysh sends those to every daemon (a stopped
/// staticd held a gateway's delta after its first removal, and the gateway stopped
/// announcing), and their sequence numbers shift when a pool sorts in before the others.
const LIST_STATEMENTS: [&str; 1] = ["bgp extcommunity-list "];

/// The list lines to add and remove to go from one rendered configuration to the next.
#[derive(Debug, PartialEq, Eq)]
pub struct ListDelta<'a> {
    pub added: Vec<&'a str>,
    pub removed: Vec<&'a str>,
}

/// When two configurations differ only in [`LIST_STATEMENTS`] lines (a leaf's EVPN scope
/// growing or shrinking by a VNI), the lines to add and remove; `None` when anything else
/// differs. Applying this through vtysh costs a fraction of a second where
/// frr-reload.py reads back and diffs the whole configuration (seconds on a leaf with
/// thousands of filter lines; docs/PERFORMANCE.md).
pub fn list_delta<'a>(old: &'a str, new: &'a str) -> Option<ListDelta<'a>> {
    let is_list = |l: &&str| LIST_STATEMENTS.iter().any(|p| l.starts_with(p));
    if !old
        .lines()
        .filter(|l| !is_list(l))
        .eq(new.lines().filter(|l| !is_list(l)))
    {
        return None;
    }
    let o: BTreeSet<&str> = old.lines().filter(is_list).collect();
    let n: BTreeSet<&str> = new.lines().filter(is_list).collect();
    Some(ListDelta {
        added: n.difference(&o).copied().collect(),
        removed: o.difference(&n).copied().collect(),
    })
}

/// One FRR instance, addressed through its vty socket directory.
pub struct Frr {
    pub dir: PathBuf,
    pub reload_script: PathBuf,
    last_applied: Option<String>,
    /// The daemons' pids (from their `*.pid` files) when `last_applied` was applied.
    applied_to: Option<BTreeMap<String, String>>,
}

impl Frr {
    pub fn new(dir: PathBuf) -> Self {
        Frr {
            dir,
            reload_script: PathBuf::from("/usr/lib/frr/frr-reload.py"),
            last_applied: None,
            applied_to: None,
        }
    }

    /// The running daemons as their pid files in the FRR directory name them.
    fn daemons(&self) -> BTreeMap<String, String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let daemon = name.strip_suffix(".pid")?.to_string();
                let pid = std::fs::read_to_string(e.path()).ok()?;
                Some((daemon, pid.trim().to_string()))
            })
            .collect()
    }

    /// Records a full reload of `config` into the daemons running now.
    fn reloaded(&mut self, config: &str) {
        self.last_applied = Some(config.to_string());
        self.applied_to = Some(self.daemons());
    }

    /// Whether an FRR daemon started (or stopped) since the last apply: a restarted daemon
    /// runs whatever its own configuration file holds, not what was applied to its
    /// predecessor, so the next apply must reload in full. True before any apply.
    pub fn restarted_since_apply(&self) -> bool {
        self.applied_to.as_ref() != Some(&self.daemons())
    }

    /// Applies `config` as a delta unless it is what we applied last (or `force`). Returns
    /// whether a reload ran.
    pub async fn apply(
        &mut self,
        config: &str,
        expect: &[String],
        force: bool,
    ) -> Result<bool, DeviceError> {
        if !force && self.last_applied.as_deref() == Some(config) {
            return Ok(false);
        }
        if !force {
            if let Some(delta) = self
                .last_applied
                .as_deref()
                .and_then(|o| list_delta(o, config))
            {
                match self.apply_list_delta(&delta).await {
                    Ok(()) => {
                        self.last_applied = Some(config.to_string());
                        return Ok(true);
                    }
                    // Whatever went wrong, the full reload below converges.
                    Err(e) => warn!(error = %e, "FRR list delta failed; reloading in full"),
                }
            }
        }
        let dir = self.dir.to_string_lossy().to_string();
        let conf = self.dir.join("stackfabric.conf");
        let vtysh_conf = self.dir.join("vtysh.conf");
        let io = |e: std::io::Error| DeviceError::Spawn {
            cmd: format!("write {}", conf.display()),
            source: e,
        };
        if !vtysh_conf.exists() {
            std::fs::write(&vtysh_conf, "").map_err(io)?;
        }
        std::fs::write(&conf, config).map_err(io)?;
        let conf_s = conf.to_string_lossy().to_string();
        let script = self.reload_script.to_string_lossy().to_string();
        run(
            "python3",
            &[
                &script,
                "--reload",
                "--stdout",
                "--vty_socket",
                &dir,
                "--confdir",
                &dir,
                "--rundir",
                &dir,
                &conf_s,
            ],
        )
        .await?;
        let running = self.running_config().await?;
        let missing: Vec<&String> = expect
            .iter()
            .filter(|l| !running.contains(l.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(DeviceError::Verify(format!(
                "missing after reload: {missing:?}"
            )));
        }
        info!(dir = %dir, "FRR configuration applied");
        self.reloaded(config);
        Ok(true)
    }

    /// Applies a [`ListDelta`] through `vtysh -f` (removals first, so a sequence number
    /// that changes content is freed before it is reused), then checks the running
    /// configuration holds every added line and none of the removed ones.
    async fn apply_list_delta(&self, delta: &ListDelta<'_>) -> Result<(), DeviceError> {
        let dir = self.dir.to_string_lossy().to_string();
        let file = self.dir.join("stackfabric-delta.conf");
        let mut script = String::new();
        for l in &delta.removed {
            let _ = writeln!(script, "no {l}");
        }
        for l in &delta.added {
            let _ = writeln!(script, "{l}");
        }
        std::fs::write(&file, &script).map_err(|e| DeviceError::Spawn {
            cmd: format!("write {}", file.display()),
            source: e,
        })?;
        let file_s = file.to_string_lossy().to_string();
        let out = run("vtysh", &["--vty_socket", &dir, "-f", &file_s]).await?;
        if let Some(err) = out.lines().find(|l| l.starts_with('%')) {
            return Err(DeviceError::Verify(format!("vtysh: {err}")));
        }
        let running = self.running_config().await?;
        let lines: BTreeSet<&str> = running.lines().map(str::trim_end).collect();
        let missing = delta.added.iter().filter(|l| !lines.contains(*l)).count();
        let left = delta.removed.iter().filter(|l| lines.contains(*l)).count();
        if missing + left > 0 {
            return Err(DeviceError::Verify(format!(
                "list delta: {missing} added lines missing, {left} removed lines left"
            )));
        }
        info!(
            dir = %dir,
            added = delta.added.len(),
            removed = delta.removed.len(),
            "FRR list delta applied"
        );
        Ok(())
    }

    pub async fn running_config(&self) -> Result<String, DeviceError> {
        let dir = self.dir.to_string_lossy().to_string();
        run(
            "vtysh",
            &["--vty_socket", &dir, "-c", "show running-config"],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon restarted (its pid file changed), started or stopped since the last full
    /// reload asks for a full one: it runs its own file, not what was applied.
    #[test]
    fn a_restarted_daemon_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let pid = |d: &str, p: &str| std::fs::write(dir.path().join(format!("{d}.pid")), p);
        pid("zebra", "100\n").unwrap();
        pid("bgpd", "101\n").unwrap();
        let mut frr = Frr::new(dir.path().to_path_buf());
        assert!(frr.restarted_since_apply(), "never applied");
        frr.reloaded("router bgp 65001\n");
        assert!(!frr.restarted_since_apply());
        pid("bgpd", "202\n").unwrap();
        assert!(frr.restarted_since_apply(), "bgpd restarted");
        frr.reloaded("router bgp 65001\n");
        assert!(!frr.restarted_since_apply());
        pid("bfdd", "203\n").unwrap();
        assert!(frr.restarted_since_apply(), "a daemon started");
        frr.reloaded("router bgp 65001\n");
        std::fs::remove_file(dir.path().join("bfdd.pid")).unwrap();
        assert!(frr.restarted_since_apply(), "a daemon stopped");
    }

    fn underlay(evpn: EvpnRole) -> Underlay {
        Underlay {
            asn: 65001,
            router_id: "10.255.1.1".parse().unwrap(),
            loopback: "10.255.1.1".parse().unwrap(),
            neighbors: vec!["leaf1".into(), "leaf2".into()],
            evpn,
            announce: vec![],
            blackhole: vec![],
            forwarding: false,
            peer_filters: vec![],
            bfd_neighbors: vec![],
            redistribute_host_routes: vec![],
            ipv6_unicast: false,
            redistribute_host_routes6: vec![],
            blackhole6: vec![],
        }
    }

    /// A leaf accepts from a hypervisor only its VTEP, from a gateway its loopback and host
    /// routes in the pools; everything else meets the route map's implicit deny.
    #[test]
    fn switches_filter_what_hypervisors_and_gateways_announce() {
        use sf_core::desired::PrefixMatch;
        let mut u = underlay(EvpnRole::Transit);
        u.neighbors = vec!["hv1".into(), "gw1".into(), "spine1".into()];
        let m = |p: &str, host_routes| PrefixMatch {
            prefix: p.parse().unwrap(),
            host_routes,
        };
        u.peer_filters = vec![
            PeerFilter {
                neighbor: "hv1".into(),
                permit: vec![m("10.255.3.1/32", false)],
                evpn: None,
                permit6: vec![],
            },
            PeerFilter {
                neighbor: "gw1".into(),
                permit: vec![m("10.255.2.1/32", false), m("203.0.113.0/24", true)],
                evpn: None,
                permit6: vec![],
            },
        ];
        let c = render("leaf1", &u);
        assert!(c.contains("ip prefix-list SF-FROM-hv1 seq 5 permit 10.255.3.1/32\n"));
        assert!(c.contains("ip prefix-list SF-FROM-gw1 seq 10 permit 203.0.113.0/24 ge 32\n"));
        assert!(c.contains(
            "route-map SF-FROM-gw1 permit 10\n match ip address prefix-list SF-FROM-gw1\n"
        ));
        assert!(c.contains("  neighbor hv1 route-map SF-FROM-hv1 in\n"));
        assert!(
            !c.contains("neighbor spine1 route-map"),
            "switches are not filtered"
        );
        // The filters are defined before BGP refers to them.
        assert!(c.find("route-map SF-FROM-hv1 permit").unwrap() < c.find("router bgp").unwrap());
        assert!(expected_lines(&u).contains(&"neighbor gw1 route-map SF-FROM-gw1 in".to_string()));
    }

    /// EVPN: a leaf accepts from a hypervisor only MAC/IP and multicast routes it originated,
    /// carrying exactly one route target, of a VNI in its scope; an empty scope accepts
    /// nothing, and a neighbour without a scope is not filtered.
    #[test]
    fn switches_filter_evpn_routes_by_origin_and_vni() {
        use sf_core::desired::EvpnScope;
        let mut u = underlay(EvpnRole::Transit);
        u.neighbors = vec!["hv1".into(), "hv2".into(), "gw1".into()];
        let scoped = |n: &str, asn, vnis: &[u32]| PeerFilter {
            neighbor: n.into(),
            permit: vec![],
            evpn: Some(EvpnScope {
                asn,
                vnis: vnis.to_vec(),
            }),
            permit6: vec![],
        };
        u.peer_filters = vec![
            scoped("hv1", 65001, &[100, 1_000_001]),
            scoped("hv2", 65002, &[]),
            PeerFilter {
                neighbor: "gw1".into(),
                permit: vec![],
                evpn: None,
                permit6: vec![],
            },
        ];
        let c = render("leaf1", &u);
        assert!(c.contains(
            "bgp as-path access-list SF-EVPN-FROM-hv1 seq 5 permit ^65001$
"
        ));
        assert!(c.contains(
            "bgp extcommunity-list expanded SF-EVPN-FROM-hv1 seq 100 permit _RT:[0-9.]+:100_
\
             bgp extcommunity-list expanded SF-EVPN-FROM-hv1 seq 1000001 permit _RT:[0-9.]+:1000001_
"
        ));
        assert!(c.contains(
            "route-map SF-EVPN-FROM-hv1 deny 5
 match extcommunity SF-EVPN-MULTI-RT
exit
"
        ));
        assert!(c.contains(
            "route-map SF-EVPN-FROM-hv1 permit 20
 match as-path SF-EVPN-FROM-hv1
 match evpn route-type multicast
 match extcommunity SF-EVPN-FROM-hv1
exit
"
        ));
        assert!(
            !c.contains("extcommunity-list expanded SF-EVPN-FROM-hv2"),
            "empty scope: no list, so no route matches"
        );
        assert!(c.contains(
            "route-map SF-EVPN-FROM-hv2 permit 10
"
        ));
        assert!(c.contains(
            " address-family l2vpn evpn
  neighbor FABRIC activate
  neighbor hv1 route-map SF-EVPN-FROM-hv1 in
  neighbor hv2 route-map SF-EVPN-FROM-hv2 in
"
        ));
        assert!(!c.contains("SF-EVPN-FROM-gw1"), "no scope, no filter");
        assert!(c.contains(
            "bgp route-map delay-timer 1
"
        ));
        assert!(
            c.find("route-map SF-EVPN-FROM-hv1 permit").unwrap() < c.find("router bgp").unwrap()
        );
        assert!(
            expected_lines(&u).contains(&"neighbor hv2 route-map SF-EVPN-FROM-hv2 in".to_string())
        );
        u.peer_filters.truncate(0);
        assert!(!render("leaf1", &u).contains("delay-timer"));
    }

    /// A VNI joining a neighbour's scope is one list line added (sequence numbers are the
    /// VNIs, so the others do not move); any other difference needs the full reload.
    #[test]
    fn a_scope_change_is_a_list_delta() {
        use sf_core::desired::EvpnScope;
        let mut u = underlay(EvpnRole::Transit);
        u.neighbors = vec!["hv1".into()];
        let with = |vnis: &[u32]| {
            let mut u = u.clone();
            u.peer_filters = vec![PeerFilter {
                neighbor: "hv1".into(),
                permit: vec![],
                evpn: Some(EvpnScope {
                    asn: 65001,
                    vnis: vnis.to_vec(),
                }),
                permit6: vec![],
            }];
            render("leaf1", &u)
        };
        let (old, new) = (with(&[100, 300]), with(&[100, 200, 300]));
        assert_eq!(
            list_delta(&old, &new),
            Some(ListDelta {
                added: vec![
                    "bgp extcommunity-list expanded SF-EVPN-FROM-hv1 seq 200 permit _RT:[0-9.]+:200_"
                ],
                removed: vec![],
            })
        );
        let shrunk = with(&[300]);
        assert_eq!(list_delta(&old, &shrunk).unwrap().removed.len(), 1);
        // A new neighbour adds route-map entries and a session line: not a list delta.
        let mut two = u.clone();
        two.neighbors.push("hv2".into());
        assert_eq!(list_delta(&old, &render("leaf1", &two)), None);
        assert_eq!(
            list_delta(&old, &old),
            Some(ListDelta {
                added: vec![],
                removed: vec![]
            })
        );
        // A pool added on a gateway renumbers its redistribution prefix list: full reload.
        let mut gw = underlay(EvpnRole::Vtep);
        gw.redistribute_host_routes = vec!["203.0.113.0/24".parse().unwrap()];
        let before = render("gw1", &gw);
        gw.redistribute_host_routes
            .insert(0, "100.64.50.0/24".parse().unwrap());
        assert_eq!(list_delta(&before, &render("gw1", &gw)), None);
    }

    /// Sessions to gateways are watched by BFD with the fabric profile; others are not.
    #[test]
    fn bfd_watches_the_listed_sessions() {
        let mut u = underlay(EvpnRole::Transit);
        assert!(!render("leaf1", &u).contains("bfd"));
        u.neighbors = vec!["hv1".into(), "gw1".into()];
        u.bfd_neighbors = vec!["gw1".into()];
        let c = render("leaf1", &u);
        assert!(c.contains("bfd\n profile sf-fabric\n  detect-multiplier 5\n  receive-interval 100\n  transmit-interval 100\n exit\nexit\n"), "{c}");
        assert!(c.contains(" neighbor gw1 bfd\n neighbor gw1 bfd profile sf-fabric\n"));
        assert!(!c.contains("neighbor hv1 bfd"));
        assert!(expected_lines(&u).contains(&"neighbor gw1 bfd profile sf-fabric".to_string()));
    }

    #[test]
    fn vtep_config_advertises_all_vnis_over_unnumbered_peers() {
        let c = render("hv1", &underlay(EvpnRole::Vtep));
        assert!(c.contains("router bgp 65001\n bgp router-id 10.255.1.1\n"));
        assert!(c.contains(" neighbor leaf1 interface peer-group FABRIC\n"));
        assert!(c.contains(" neighbor leaf2 interface peer-group FABRIC\n"));
        assert!(c.contains("  network 10.255.1.1/32\n"));
        assert!(c.contains("  advertise-all-vni\n"));
        assert!(!c.contains("ip forwarding"));
    }

    #[test]
    fn transit_config_forwards_and_does_not_terminate_vnis() {
        let c = render("leaf1", &underlay(EvpnRole::Transit));
        assert!(c.contains("ip forwarding\n"));
        assert!(!c.contains("advertise-all-vni"));
        assert!(c.contains("  neighbor FABRIC activate\n"));
        assert_eq!(expected_lines(&underlay(EvpnRole::Transit)).len(), 3);
    }

    #[test]
    fn a_leaf_that_terminates_vnis_still_forwards() {
        let mut u = underlay(EvpnRole::Vtep);
        u.forwarding = true;
        let c = render("leaf1", &u);
        assert!(c.contains("ip forwarding\n"));
        assert!(c.contains("  advertise-all-vni\n"));
    }

    /// A gateway announces what its failover controller routes (host routes in the pools and
    /// anchors), by redistribution: its FRR configuration does not name a single VPC.
    #[test]
    fn switches_announce_the_pools_gateways_only_hold_them() {
        let mut u = underlay(EvpnRole::Vtep);
        u.blackhole = vec!["203.0.113.0/24".parse().unwrap()];
        u.redistribute_host_routes = vec![
            "203.0.113.0/24".parse().unwrap(),
            sf_core::desired::ANCHOR_RANGE,
        ];
        let gw = render("gw1", &u);
        assert!(gw.contains("ip prefix-list SF-HOST-ROUTES seq 5 permit 203.0.113.0/24 ge 32\n"));
        assert!(gw.contains("ip prefix-list SF-HOST-ROUTES seq 10 permit 198.18.0.0/15 ge 32\n"));
        assert!(gw.contains("  redistribute kernel route-map SF-HOST-ROUTES\n"));
        assert!(gw.contains("bgp as-path access-list SF-LOCAL-ONLY seq 5 permit ^$\n"));
        assert!(gw.contains("  neighbor FABRIC route-map SF-LOCAL-ONLY out\n"));
        assert!(!gw.contains("network 203.0.113"), "{gw}");
        u.redistribute_host_routes.clear();
        u.announce = vec!["203.0.113.11/32".parse().unwrap()];
        u.forwarding = true;
        u.announce.clear();
        assert!(render("leaf1", &u).contains("  network 203.0.113.0/24\n"));
    }

    /// IPv6 unicast on a leaf of a site with IPv6 pools: a gateway may announce any prefix
    /// inside them, a hypervisor nothing; switches (not listed) are unfiltered. Without
    /// IPv6 the rendering is exactly the IPv4 one.
    #[test]
    fn switches_filter_ipv6_from_gateways_and_refuse_it_from_hypervisors() {
        let mut u = underlay(EvpnRole::Transit);
        u.forwarding = true;
        u.neighbors = vec!["hv1".into(), "gw1".into(), "spine1".into()];
        let filter = |n: &str, permit6: &[&str]| PeerFilter {
            neighbor: n.into(),
            permit: vec![],
            evpn: None,
            permit6: permit6.iter().map(|p| p.parse().unwrap()).collect(),
        };
        u.peer_filters = vec![filter("hv1", &[]), filter("gw1", &["2001:db8:100::/40"])];
        let v4_only = render("leaf1", &u);
        assert!(!v4_only.contains("ipv6 unicast") && !v4_only.contains("SF-FROM6"));
        u.ipv6_unicast = true;
        let c = render("leaf1", &u);
        assert!(c.starts_with(&v4_only[..v4_only.find("route-map SF-FROM-gw1").unwrap()]));
        assert!(c.contains(
            "ipv6 prefix-list SF-FROM6-gw1 seq 5 permit 2001:db8:100::/40 le 128\n\
             route-map SF-FROM6-gw1 permit 10\n match ipv6 address prefix-list SF-FROM6-gw1\nexit\n"
        ), "{c}");
        assert!(c.contains("route-map SF-FROM6-hv1 deny 10\nexit\n"), "{c}");
        assert!(!c.contains("prefix-list SF-FROM6-hv1"));
        assert!(
            c.contains(
                " address-family ipv6 unicast\n  neighbor FABRIC activate\n\
             \x20 neighbor hv1 route-map SF-FROM6-hv1 in\n\
             \x20 neighbor gw1 route-map SF-FROM6-gw1 in\n exit-address-family\n"
            ),
            "{c}"
        );
        assert!(!c.contains("SF-FROM6-spine1"));
        assert!(
            !c.contains("SF-LOCAL-ONLY"),
            "a switch is transit in IPv6 too"
        );
        assert!(c.find("route-map SF-FROM6-hv1").unwrap() < c.find("router bgp").unwrap());
        assert!(expected_lines(&u).contains(&"neighbor hv1 route-map SF-FROM6-hv1 in".to_string()));
    }

    /// A gateway of a site with IPv6 pools redistributes kernel routes inside them (any
    /// length from the pool's down) in IPv6 unicast and sends only its own routes; its IPv4
    /// lines stay as they were.
    #[test]
    fn gateways_redistribute_routed_ipv6_inside_the_pools() {
        let mut u = underlay(EvpnRole::Vtep);
        u.blackhole = vec!["203.0.113.0/24".parse().unwrap()];
        u.redistribute_host_routes = vec!["203.0.113.0/24".parse().unwrap()];
        let v4_only = render("gw1", &u);
        u.ipv6_unicast = true;
        u.redistribute_host_routes6 = vec![
            "2001:db8:100::/40".parse().unwrap(),
            "2001:db8:300::/44".parse().unwrap(),
        ];
        let c = render("gw1", &u);
        assert!(
            c.contains("ipv6 prefix-list SF-HOST-ROUTES6 seq 5 permit 2001:db8:100::/40 le 128\n")
        );
        assert!(
            c.contains("ipv6 prefix-list SF-HOST-ROUTES6 seq 10 permit 2001:db8:300::/44 le 128\n")
        );
        assert!(c.contains(
            "route-map SF-HOST-ROUTES6 permit 10\n match ipv6 address prefix-list SF-HOST-ROUTES6\n"
        ));
        assert!(
            c.contains(
                " address-family ipv6 unicast\n  redistribute kernel route-map SF-HOST-ROUTES6\n\
             \x20 neighbor FABRIC activate\n  neighbor FABRIC route-map SF-LOCAL-ONLY out\n\
             \x20exit-address-family\n"
            ),
            "{c}"
        );
        // The IPv4 address family is unchanged.
        let af4 = |c: &str| {
            let s = c.find(" address-family ipv4 unicast").unwrap();
            c[s..s + c[s..].find("exit-address-family").unwrap()].to_string()
        };
        assert_eq!(af4(&c), af4(&v4_only));
        assert_eq!(
            c.matches("bgp as-path access-list SF-LOCAL-ONLY").count(),
            1
        );
        assert!(expected_lines(&u)
            .contains(&"redistribute kernel route-map SF-HOST-ROUTES6".to_string()));
    }

    /// The IPv6 pools' blackholes as IPv4's: a switch originates each (`network`), a gateway
    /// holds them and keeps them out of its redistribution (exactly the pool denied, before
    /// the `le 128` that would match it); VPC ranges and VIPs inside still pass.
    #[test]
    fn ipv6_pool_blackholes_are_announced_by_switches_and_denied_on_gateways() {
        let pool6: ipnet::Ipv6Net = "2001:db8:100::/40".parse().unwrap();
        let mut u = underlay(EvpnRole::Vtep);
        u.ipv6_unicast = true;
        u.blackhole6 = vec![pool6];
        u.redistribute_host_routes6 = vec![pool6];
        let gw = render("gw1", &u);
        assert!(
            gw.contains(
                "ipv6 prefix-list SF-HOST-ROUTES6 seq 5 deny 2001:db8:100::/40\n\
                 ipv6 prefix-list SF-HOST-ROUTES6 seq 10 permit 2001:db8:100::/40 le 128\n"
            ),
            "{gw}"
        );
        assert!(!gw.contains("network 2001:db8:100::/40"), "{gw}");
        u.redistribute_host_routes6.clear();
        u.forwarding = true;
        let leaf = render("leaf1", &u);
        assert!(
            leaf.contains(" address-family ipv6 unicast\n  network 2001:db8:100::/40\n"),
            "{leaf}"
        );
        assert!(!leaf.contains("SF-HOST-ROUTES6"), "{leaf}");
    }
}
