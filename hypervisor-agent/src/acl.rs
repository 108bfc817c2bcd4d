//! East-west network ACLs on a hypervisor: one nftables table `bridge stackfabric`, owned by
//! the agent, filtering the bridged traffic of VM ports on the `brvx-<VNI>` bridges whose
//! tier (or a peer tier of its VPC) carries an ACL. [`render`] is pure; [`apply`] observes
//! the kernel cheaply and changes it only when the rendering's digest differs.
//!
//! # Why no `ct state` here
//!
//! The bridge family has connection tracking only with `nf_conntrack_bridge`
//! (`CONFIG_NF_CONNTRACK_BRIDGE`); without it the kernel refuses any `ct` expression in a
//! bridge table ("Protocol error"), and the kernels this project targets in the lab lack it.
//! `br_netfilter` (handing bridged frames to the IPv4 hooks) would push every bridge of the
//! host through the host's own IP firewall, so it is not used. Instead the table keeps its
//! own flow state in dynamic sets, per tier (so overlapping tenant addresses in different
//! VNIs never share state):
//!
//! - `flows_<vni>`: TCP/UDP 5-tuples (`saddr . daddr . proto . sport . dport`), both
//!   directions are inserted when a new flow is allowed; a hit is accepted and refreshes the
//!   entry's timeout (TCP 1 day, UDP 3 min). This is the "established" of conntrack.
//! - `pings_<vni>`: `saddr . daddr . icmp id` of the expected echo replies (30 s).
//! - ICMP errors (unreachable, time exceeded, parameter problem) pass as the "related" of
//!   conntrack (needed for path MTU discovery); non-first IPv4 fragments pass (their first
//!   fragment, which carries the ports, was filtered); DHCP (udp 67/68) passes.
//!
//! Per packet an established flow costs a port lookup (vmap), one hash lookup and a timeout
//! refresh, whatever the size of the ACLs. On a kernel with `nf_conntrack_bridge` the same
//! layout works with `ct state established,related accept` in place of the set lookups.
//!
//! # Layout
//!
//! ```text
//! table bridge stackfabric {
//!   set sfmeta    { type mark }   # 0xffffffff "sf:digest=<d>", <vni> "sf:c=…;s=…" (what exists)
//!   set flows_V / pings_V          # per local tier with ACL involvement
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname vmap { "vnet0" : goto from_V, … }   # frames leaving a local VM of tier V
//!     oifname vmap { "vnet0" : goto to_V, … } }   # frames to a local VM from elsewhere
//!   chain from_V { non-IPv4 accept; established accept; jump eg_V;
//!                  ip daddr <V cidr> (not the gateway) jump in_V;   # same tier: drop at source
//!                  ip daddr vmap { <U cidr> : jump in_U, … };       # peer tiers of the VPC
//!                  goto new_V }
//!   chain to_V   { non-IPv4 accept; established accept; jump in_V; goto new_V }
//!   chain new_V  { remember both directions; accept }
//!   chain in_V / eg_V { one rule per ACL rule: allow → return, deny → drop; default }
//! }
//! ```
//!
//! VM ports are the ports of `brvx-<VNI>` other than `vxlan<VNI>` (CloudStack's `vnetN`
//! taps), taken from the observed links.
//!
//! # Applying as a delta
//!
//! A change is one `nft -f` transaction that flushes the table's rules, deletes its chains
//! and defines them anew, re-declares the flow sets (a no-op for existing ones) and deletes
//! the sets of tiers that left. The flow sets survive, so established flows keep passing
//! across any ACL change, and packets see either the old or the new ruleset. The digest of
//! the rendering sits in `sfmeta`, whose listing is instant however many rules the table
//! holds. The table is deleted only when no tier needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use sf_core::desired::{L2Network, TierAcl};
use sf_linux::acl::{render_chain, Direction, Verdicts};
use sf_linux::l2::vxlan_name;
use sf_linux::links::Link;
use sha2::{Digest, Sha256};

pub const TABLE: &str = "stackfabric";
pub const META_SET: &str = "sfmeta";
const FORWARD_HOOK: &str = "type filter hook forward priority filter; policy accept;";
const DIGEST_KEY: u32 = u32::MAX;
const DIGEST_TAG: &str = "sf:digest=";
/// Capacity of one tier's flow set (entries; two per flow).
pub const FLOWS_SIZE: u32 = 262_144;
pub const TCP_TIMEOUT: &str = "1d";
pub const UDP_TIMEOUT: &str = "3m";
pub const PING_TIMEOUT: &str = "30s";

/// What the table holds for one VNI: chain and set kinds (names are `<kind>_<vni>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VniObjects {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    /// Number of prefix-list sets of the ACL chains (`ins_<vni>_<n>`, `egs_<vni>_<n>`).
    pub in_sets: usize,
    pub eg_sets: usize,
}

impl VniObjects {
    fn comment(&self) -> String {
        let j = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("+");
        format!(
            "sf:c={};s={};n={}+{}",
            j(&self.chains),
            j(&self.sets),
            self.in_sets,
            self.eg_sets
        )
    }
    fn parse(comment: &str) -> Option<VniObjects> {
        let rest = comment.strip_prefix("sf:c=")?;
        let (c, rest) = rest.split_once(";s=")?;
        let (s, n) = rest.split_once(";n=").unwrap_or((rest, "0+0"));
        let (i, e) = n.split_once('+')?;
        let split = |x: &str| -> BTreeSet<String> {
            x.split('+')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        };
        Some(VniObjects {
            chains: split(c),
            sets: split(s),
            in_sets: i.parse().ok()?,
            eg_sets: e.parse().ok()?,
        })
    }
}

/// The rendered table: `body` is the `table bridge stackfabric { … }` definition (without
/// the meta elements), `objects` what it creates per VNI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub body: String,
    pub digest: String,
    pub objects: BTreeMap<u32, VniObjects>,
    /// Problems rendering resolved on its own (reported, not fatal).
    pub errors: Vec<String>,
}

impl Ruleset {
    /// No tier needs filtering: the table should not exist.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The VM ports of each bridge `brvx-<VNI>`: every port other than `vxlan<VNI>`, sorted.
pub fn vm_ports(links: &[Link]) -> BTreeMap<u32, Vec<String>> {
    let mut m: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for l in links {
        let Some(master) = l.master.as_deref() else {
            continue;
        };
        let Some(vni) = master
            .strip_prefix("brvx-")
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if l.name != vxlan_name(vni) {
            m.entry(vni).or_default().push(l.name.clone());
        }
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn involved(n: &L2Network) -> bool {
    n.acl.is_some() || n.peer_tiers.iter().any(|p| p.acl.is_some())
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// Renders the table for the networks in scope and their observed VM ports.
pub fn render(networks: &[&L2Network], ports: &BTreeMap<u32, Vec<String>>) -> Ruleset {
    let mut rs = Ruleset::default();
    let local: Vec<&L2Network> = networks.iter().copied().filter(|n| involved(n)).collect();
    if local.is_empty() {
        return rs;
    }
    // Every ACL whose ingress chain is needed: local tiers first (authoritative), then peers.
    let mut ingress: BTreeMap<u32, &TierAcl> = BTreeMap::new();
    for n in &local {
        if let Some(a) = &n.acl {
            ingress.insert(n.vni, a);
        }
    }
    for n in &local {
        for p in &n.peer_tiers {
            if let Some(a) = &p.acl {
                match ingress.get(&p.vni) {
                    None => {
                        ingress.insert(p.vni, a);
                    }
                    Some(have) if *have != a => rs.errors.push(format!(
                        "net {}: peer tier {} ACL differs from another view of it (first kept)",
                        n.vni, p.vni
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    for n in &local {
        let o = rs.objects.entry(n.vni).or_default();
        for c in ["from", "to", "new"] {
            o.chains.insert(c.into());
        }
        for s in ["flows", "pings"] {
            o.sets.insert(s.into());
        }
        if n.acl.is_some() {
            o.chains.insert("eg".into());
        }
    }
    for &vni in ingress.keys() {
        rs.objects
            .entry(vni)
            .or_default()
            .chains
            .insert("in".into());
    }

    // ACL chains first: their prefix-list sets must precede every chain in the table.
    let mut acl_sets = String::new();
    let mut acl_chains = String::new();
    for n in &local {
        if let Some(a) = &n.acl {
            let v = n.vni;
            let c = render_chain(a, Direction::Egress, Verdicts::STAGE, &format!("egs_{v}_"));
            acl_sets.push_str(&c.sets);
            let _ = write!(acl_chains, "\tchain eg_{v} {{\n{}\t}}\n", c.rules);
            rs.objects.entry(v).or_default().eg_sets = c.set_count;
        }
    }
    for (vni, a) in &ingress {
        let c = render_chain(
            a,
            Direction::Ingress,
            Verdicts::STAGE,
            &format!("ins_{vni}_"),
        );
        acl_sets.push_str(&c.sets);
        let _ = write!(acl_chains, "\tchain in_{vni} {{\n{}\t}}\n", c.rules);
        rs.objects.entry(*vni).or_default().in_sets = c.set_count;
    }

    let mut b = String::new();
    let _ = writeln!(b, "table bridge {TABLE} {{");
    let _ = writeln!(b, "\tset {META_SET} {{\n\t\ttype mark\n\t}}");
    for n in &local {
        let v = n.vni;
        let _ = writeln!(
            b,
            "\tset flows_{v} {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service\n\t\tsize {FLOWS_SIZE}\n\t\tflags dynamic,timeout\n\t}}"
        );
        let _ = writeln!(
            b,
            "\tset pings_{v} {{\n\t\ttypeof ip saddr . ip daddr . icmp id\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t}}",
            FLOWS_SIZE / 4
        );
    }
    b.push_str(&acl_sets);
    // Dispatch by port.
    let mut from = Vec::new();
    let mut to = Vec::new();
    for n in &local {
        for p in ports.get(&n.vni).map(Vec::as_slice).unwrap_or_default() {
            from.push(format!("{} : goto from_{}", quote(p), n.vni));
            to.push(format!("{} : goto to_{}", quote(p), n.vni));
        }
    }
    let _ = writeln!(b, "\tchain forward {{");
    let _ = writeln!(b, "\t\t{FORWARD_HOOK}");
    if !from.is_empty() {
        let _ = writeln!(b, "\t\tiifname vmap {{ {} }}", from.join(", "));
        let _ = writeln!(b, "\t\toifname vmap {{ {} }}", to.join(", "));
    }
    let _ = writeln!(b, "\t}}");

    let flow = "ip saddr . ip daddr . meta l4proto . th sport . th dport";
    let rev = "ip daddr . ip saddr . meta l4proto . th dport . th sport";
    let common = |b: &mut String, v: u32| {
        let _ = writeln!(
            b,
            "\t\tether type {{ 8021q, 8021ad }} counter drop comment \"tagged frames would bypass the ACL\""
        );
        let _ = writeln!(b, "\t\tether type != ip accept");
        for (p, t) in [("tcp", TCP_TIMEOUT), ("udp", UDP_TIMEOUT)] {
            let _ = writeln!(
                b,
                "\t\tmeta l4proto {p} {flow} @flows_{v} update @flows_{v} {{ {flow} timeout {t} }} accept"
            );
        }
        let _ = writeln!(
            b,
            "\t\ticmp type echo-reply ip saddr . ip daddr . icmp id @pings_{v} accept"
        );
        let _ = writeln!(
            b,
            "\t\ticmp type {{ destination-unreachable, time-exceeded, parameter-problem }} accept"
        );
        let _ = writeln!(b, "\t\tip frag-off & 0x1fff != 0 accept");
        let _ = writeln!(b, "\t\tudp sport 68 udp dport 67 accept");
        let _ = writeln!(b, "\t\tudp sport 67 udp dport 68 accept");
    };
    for n in &local {
        let v = n.vni;
        // Leaving a local VM.
        let _ = writeln!(b, "\tchain from_{v} {{");
        common(&mut b, v);
        if n.acl.is_some() {
            let _ = writeln!(b, "\t\tjump eg_{v}");
            let _ = writeln!(
                b,
                "\t\tip daddr {} ip daddr != {} jump in_{v}",
                n.cidr.trunc(),
                n.gateway
            );
        }
        let mut peers: Vec<(String, u32)> = Vec::new();
        let mut seen = vec![n.cidr.trunc()];
        for p in &n.peer_tiers {
            if p.acl.is_none() || p.vni == v {
                continue;
            }
            let c = p.cidr.trunc();
            if seen
                .iter()
                .any(|s| s.contains(&c.network()) || c.contains(&s.network()))
            {
                rs.errors.push(format!(
                    "net {v}: peer tier {} cidr {} overlaps another tier (its ACL is not applied at the source)",
                    p.vni, p.cidr
                ));
                continue;
            }
            seen.push(c);
            peers.push((p.cidr.trunc().to_string(), p.vni));
        }
        peers.sort();
        if !peers.is_empty() {
            let items: Vec<String> = peers
                .iter()
                .map(|(c, u)| format!("{c} : jump in_{u}"))
                .collect();
            let _ = writeln!(b, "\t\tip daddr vmap {{ {} }}", items.join(", "));
        }
        let _ = writeln!(b, "\t\tgoto new_{v}");
        let _ = writeln!(b, "\t}}");
        // To a local VM from elsewhere (remote VMs, the router).
        let _ = writeln!(b, "\tchain to_{v} {{");
        common(&mut b, v);
        if n.acl.is_some() {
            let _ = writeln!(b, "\t\tjump in_{v}");
        }
        let _ = writeln!(b, "\t\tgoto new_{v}");
        let _ = writeln!(b, "\t}}");
        // An allowed new flow: remember both directions.
        let _ = writeln!(b, "\tchain new_{v} {{");
        for (p, t) in [("tcp", TCP_TIMEOUT), ("udp", UDP_TIMEOUT)] {
            let _ = writeln!(
                b,
                "\t\tmeta l4proto {p} update @flows_{v} {{ {flow} timeout {t} }}"
            );
            let _ = writeln!(
                b,
                "\t\tmeta l4proto {p} update @flows_{v} {{ {rev} timeout {t} }}"
            );
        }
        let _ = writeln!(
            b,
            "\t\ticmp type echo-request update @pings_{v} {{ ip daddr . ip saddr . icmp id timeout {PING_TIMEOUT} }}"
        );
        let _ = writeln!(b, "\t\taccept");
        let _ = writeln!(b, "\t}}");
    }
    b.push_str(&acl_chains);
    let _ = writeln!(b, "}}");
    rs.digest = hex::encode(&Sha256::digest(b.as_bytes())[..12]);
    rs.body = b;
    rs
}

/// What the kernel holds, read from `nft list set bridge stackfabric sfmeta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No table.
    Absent,
    /// A table without (parsable) meta: replaced as a whole.
    Foreign,
    Ours {
        digest: Option<String>,
        objects: BTreeMap<u32, VniObjects>,
    },
}

/// Parses the listing of the meta set.
pub fn parse_meta(listing: &str) -> Observed {
    let mut digest = None;
    let mut objects = BTreeMap::new();
    let Some(start) = listing.find("elements = {") else {
        return Observed::Ours { digest, objects };
    };
    let body = &listing[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    for item in body.split(',') {
        let item = item.trim();
        let Some((key, rest)) = item.split_once(" comment \"") else {
            continue;
        };
        let comment = rest.trim_end_matches('"');
        let key = key.trim();
        let key = if let Some(h) = key.strip_prefix("0x") {
            u32::from_str_radix(h, 16).ok()
        } else {
            key.parse().ok()
        };
        match key {
            Some(DIGEST_KEY) => digest = comment.strip_prefix(DIGEST_TAG).map(str::to_string),
            Some(vni) => {
                if let Some(o) = VniObjects::parse(comment) {
                    objects.insert(vni, o);
                }
            }
            None => {}
        }
    }
    Observed::Ours { digest, objects }
}

fn meta_elements(rs: &Ruleset) -> String {
    let mut items = vec![format!(
        "{DIGEST_KEY} comment \"{DIGEST_TAG}{}\"",
        rs.digest
    )];
    for (vni, o) in &rs.objects {
        items.push(format!("{vni} comment \"{}\"", o.comment()));
    }
    format!(
        "flush set bridge {TABLE} {META_SET}\nadd element bridge {TABLE} {META_SET} {{ {} }}\n",
        items.join(", ")
    )
}

/// One transaction turning the table described by `old` into `rs`, keeping the flow sets
/// of the tiers that stay (so established flows keep passing).
pub fn update_script(old: &BTreeMap<u32, VniObjects>, rs: &Ruleset) -> String {
    // Declared first so that the delete cannot fail on a new table.
    let mut s = format!(
        "add table bridge {TABLE}\nadd chain bridge {TABLE} forward {{ {FORWARD_HOOK} }}\nflush table bridge {TABLE}\ndelete chain bridge {TABLE} forward\n"
    );
    for (vni, o) in old {
        for c in &o.chains {
            let _ = writeln!(s, "delete chain bridge {TABLE} {c}_{vni}");
        }
    }
    for (vni, o) in old {
        for n in 0..o.in_sets {
            let _ = writeln!(s, "delete set bridge {TABLE} ins_{vni}_{n}");
        }
        for n in 0..o.eg_sets {
            let _ = writeln!(s, "delete set bridge {TABLE} egs_{vni}_{n}");
        }
        let keep = rs.objects.get(vni);
        for set in &o.sets {
            if !keep.is_some_and(|k| k.sets.contains(set)) {
                let _ = writeln!(s, "delete set bridge {TABLE} {set}_{vni}");
            }
        }
    }
    s.push_str(&rs.body);
    s.push_str(&meta_elements(rs));
    s
}

/// One transaction replacing whatever table exists by `rs` (flow state is lost: only for a
/// table whose contents are unknown).
pub fn full_script(rs: &Ruleset) -> String {
    let mut s = format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n");
    s.push_str(&rs.body);
    s.push_str(&meta_elements(rs));
    s
}

/// Observes the table (one small listing) and converges it to `rs`. Returns whether it
/// changed anything.
pub async fn apply(rs: &Ruleset) -> Result<bool, sf_linux::DeviceError> {
    let observed = observe().await?;
    match (&observed, rs.is_empty()) {
        (Observed::Absent, true) => return Ok(false),
        (_, true) => {
            sf_linux::run("nft", &["delete", "table", "bridge", TABLE]).await?;
            return Ok(true);
        }
        (Observed::Ours { digest, .. }, false) if digest.as_deref() == Some(&rs.digest) => {
            return Ok(false)
        }
        _ => {}
    }
    let script = match &observed {
        Observed::Ours { objects, .. } => update_script(objects, rs),
        Observed::Absent => update_script(&BTreeMap::new(), rs),
        Observed::Foreign => full_script(rs),
    };
    match run_stdin("nft", &["-f", "-"], &script).await {
        Ok(()) => Ok(true),
        Err(e) if !matches!(observed, Observed::Foreign) => {
            tracing::warn!(error = %e, "incremental ACL update refused; replacing the table");
            run_stdin("nft", &["-f", "-"], &full_script(rs)).await?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Reads the meta set. Absent table → [`Observed::Absent`].
pub async fn observe() -> Result<Observed, sf_linux::DeviceError> {
    match sf_linux::run("nft", &["list", "set", "bridge", TABLE, META_SET]).await {
        Ok(listing) => Ok(parse_meta(&listing)),
        Err(sf_linux::DeviceError::Command { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            // Either no table or a table without our meta set.
            match sf_linux::run("nft", &["list", "tables", "bridge"]).await {
                Ok(t)
                    if t.lines()
                        .any(|l| l.trim() == format!("table bridge {TABLE}")) =>
                {
                    Ok(Observed::Foreign)
                }
                Ok(_) => Ok(Observed::Absent),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Runs a command with `input` on stdin (sf-linux's runner, with its timeout).
pub async fn run_stdin(
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<(), sf_linux::DeviceError> {
    sf_linux::run_stdin(program, args, input).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::{AclAction, AclProtocol, AclRule, PeerTier};

    pub fn db_acl() -> TierAcl {
        TierAcl {
            list: "db".into(),
            default_action: AclAction::Deny,
            ingress: vec![
                AclRule {
                    number: 5,
                    action: AclAction::Deny,
                    protocol: AclProtocol::Tcp,
                    ports: Some((5432, 5432)),
                    icmp_type: None,
                    icmp_code: None,
                    cidrs: vec!["10.10.1.66/32".parse().unwrap()],
                },
                AclRule {
                    number: 10,
                    action: AclAction::Allow,
                    protocol: AclProtocol::Tcp,
                    ports: Some((5432, 5432)),
                    icmp_type: None,
                    icmp_code: None,
                    cidrs: vec!["10.10.1.0/24".parse().unwrap()],
                },
            ],
            egress: vec![
                AclRule {
                    number: 10,
                    action: AclAction::Allow,
                    protocol: AclProtocol::Tcp,
                    ports: None,
                    icmp_type: None,
                    icmp_code: None,
                    cidrs: vec![
                        "10.0.0.0/8".parse().unwrap(),
                        "192.168.0.0/16".parse().unwrap(),
                    ],
                },
                AclRule {
                    number: 20,
                    action: AclAction::Allow,
                    protocol: AclProtocol::All,
                    ports: None,
                    icmp_type: None,
                    icmp_code: None,
                    cidrs: vec![],
                },
            ],
        }
    }

    fn net(vni: u32, name: &str, third: u8, acl: Option<TierAcl>) -> L2Network {
        L2Network {
            vni,
            tenant: "acme".into(),
            vpc: "prod".into(),
            network: name.into(),
            cidr: format!("10.10.{third}.0/24").parse().unwrap(),
            gateway: format!("10.10.{third}.1").parse().unwrap(),
            ports: vec![],
            acl,
            peer_tiers: vec![],
        }
    }

    /// web (1000001, no ACL) and db (1000002, ACL) on one hypervisor, each tier knowing the
    /// other as a peer; plus an unrelated network without ACLs.
    fn example() -> (Vec<L2Network>, BTreeMap<u32, Vec<String>>) {
        let mut web = net(1_000_001, "web", 1, None);
        let mut db = net(1_000_002, "db", 2, Some(db_acl()));
        web.peer_tiers = vec![PeerTier {
            vni: db.vni,
            cidr: db.cidr,
            acl: db.acl.clone(),
        }];
        db.peer_tiers = vec![PeerTier {
            vni: web.vni,
            cidr: web.cidr,
            acl: None,
        }];
        let other = net(2_000_000, "other", 9, None);
        let ports = BTreeMap::from([
            (1_000_001, vec!["vnet0".to_string()]),
            (1_000_002, vec!["vnet1".to_string(), "vnet2".to_string()]),
            (2_000_000, vec!["vnet3".to_string()]),
        ]);
        (vec![web, db, other], ports)
    }

    #[test]
    fn renders_dispatch_stages_and_state() {
        let (nets, ports) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &ports);
        let b = &rs.body;
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        // Only ACL-involved tiers are dispatched; the unrelated network is untouched.
        assert!(b.contains("iifname vmap { \"vnet0\" : goto from_1000001, \"vnet1\" : goto from_1000002, \"vnet2\" : goto from_1000002 }"), "{b}");
        assert!(b.contains("oifname vmap { \"vnet0\" : goto to_1000001, "));
        assert!(!b.contains("vnet3") && !b.contains("2000000"));
        // web has no ACL of its own but applies db's ingress at the source.
        let from_web = section(b, "chain from_1000001 {");
        assert!(!from_web.contains("jump eg_1000001"));
        assert!(from_web.contains("ip daddr vmap { 10.10.2.0/24 : jump in_1000002 }"));
        assert!(
            from_web.trim_end().ends_with("goto new_1000001\n\t}")
                || from_web.contains("goto new_1000001")
        );
        // db: egress, then its own ingress for same-tier traffic (not to the gateway).
        let from_db = section(b, "chain from_1000002 {");
        let eg = from_db.find("jump eg_1000002").unwrap();
        let same = from_db
            .find("ip daddr 10.10.2.0/24 ip daddr != 10.10.2.1 jump in_1000002")
            .unwrap();
        assert!(eg < same && same < from_db.find("goto new_1000002").unwrap());
        // Established before any ACL, non-IPv4 passes.
        let est = from_db
            .find("@flows_1000002 update @flows_1000002")
            .unwrap();
        assert!(from_db.find("ether type != ip accept").unwrap() < est && est < eg);
        let to_db = section(b, "chain to_1000002 {");
        assert!(to_db.contains("jump in_1000002"));
        assert!(!section(b, "chain to_1000001 {").contains("jump in_"));
        // The ACL chain: deny 5 before allow 10, default last, with counters.
        let ins = section(b, "chain in_1000002 {");
        let d = ins
            .find("tcp dport 5432 ip saddr 10.10.1.66 counter drop comment \"ingress 5\"")
            .unwrap();
        let a = ins
            .find("tcp dport 5432 ip saddr 10.10.1.0/24 counter return comment \"ingress 10\"")
            .unwrap();
        let def = ins
            .find("counter drop comment \"ingress default\"")
            .unwrap();
        assert!(d < a && a < def);
        // New flows are remembered both ways.
        let new = section(b, "chain new_1000002 {");
        assert!(new.contains("update @flows_1000002 { ip daddr . ip saddr . meta l4proto . th dport . th sport timeout 1d }"));
        assert!(new.trim_end().ends_with("accept\n\t}") || new.contains("\t\taccept\n"));
        // Objects bookkeeping.
        assert_eq!(rs.objects.len(), 2);
        assert!(rs.objects[&1_000_002].chains.contains("in"));
        assert_eq!(rs.objects[&1_000_002].eg_sets, 1);
        let eg = section(b, "chain eg_1000002 {");
        assert!(eg.contains(
            "meta l4proto tcp ip daddr @egs_1000002_0 counter return comment \"egress 10\""
        ));
        assert!(b.find("set egs_1000002_0 {").unwrap() < b.find("chain forward").unwrap());
        assert!(!rs.objects[&1_000_001].chains.contains("in"));
    }

    fn section<'a>(b: &'a str, head: &str) -> &'a str {
        let s = b.find(head).unwrap_or_else(|| panic!("no {head} in {b}"));
        let rest = &b[s..];
        &rest[..rest.find("\n\t}\n").map(|e| e + 4).unwrap_or(rest.len())]
    }

    #[test]
    fn no_acl_means_no_table_and_digest_tracks_content() {
        let (mut nets, ports) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let a = render(&refs, &ports);
        assert_eq!(render(&refs, &ports), a, "deterministic");
        let mut p2 = ports.clone();
        p2.get_mut(&1_000_002).unwrap().push("vnet9".into());
        assert_ne!(
            render(&refs, &p2).digest,
            a.digest,
            "a new VM port changes it"
        );
        for n in &mut nets {
            n.acl = None;
            n.peer_tiers.clear();
        }
        let refs: Vec<&L2Network> = nets.iter().collect();
        assert!(render(&refs, &ports).is_empty());
    }

    #[test]
    fn update_keeps_flow_sets_and_meta_round_trips() {
        let (nets, ports) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &ports);
        let fresh = update_script(&BTreeMap::new(), &rs);
        assert!(fresh.starts_with("add table bridge stackfabric\nadd chain bridge stackfabric forward { type filter hook forward priority filter; policy accept; }\nflush table bridge stackfabric\ndelete chain bridge stackfabric forward\ntable bridge"), "{fresh}");
        assert!(!fresh.contains("delete set"));
        assert!(fresh
            .contains("add element bridge stackfabric sfmeta { 4294967295 comment \"sf:digest="));
        // The meta listing parses back into what the script recorded.
        let listing = format!(
            "table bridge stackfabric {{\n\tset sfmeta {{\n\t\ttype mark\n\t\telements = {{ 0x000f4241 comment \"{}\", 0x000f4242 comment \"{}\",\n\t\t\t     0xffffffff comment \"sf:digest={}\" }}\n\t}}\n}}\n",
            rs.objects[&1_000_001].comment(),
            rs.objects[&1_000_002].comment(),
            rs.digest
        );
        let Observed::Ours { digest, objects } = parse_meta(&listing) else {
            panic!()
        };
        assert_eq!(digest.as_deref(), Some(rs.digest.as_str()));
        assert_eq!(objects, rs.objects);
        // db leaves this hypervisor: its chains and sets go, web's flow set stays.
        let web_only: Vec<&L2Network> = nets.iter().filter(|n| n.vni == 1_000_001).collect();
        let rs2 = render(&web_only, &ports);
        let s = update_script(&objects, &rs2);
        assert!(s.contains("delete chain bridge stackfabric from_1000002\n"));
        assert!(s.contains("delete chain bridge stackfabric in_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric flows_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric egs_1000002_0\n"));
        assert!(!s.contains("egs_1000002_1"));
        assert!(!s.contains("delete set bridge stackfabric flows_1000001"));
        // Sets are deleted after the flush (no rule refers to them any more).
        assert!(s.find("flush table").unwrap() < s.find("delete set").unwrap());
        assert!(full_script(&rs2)
            .starts_with("table bridge stackfabric\ndelete table bridge stackfabric\n"));
    }

    #[test]
    fn vm_ports_are_bridge_ports_other_than_the_vxlan() {
        let l = |name: &str, master: Option<&str>| Link {
            name: name.into(),
            master: master.map(str::to_string),
            ..Default::default()
        };
        let links = vec![
            l("brvx-1000001", None),
            l("vxlan1000001", Some("brvx-1000001")),
            l("vnet2", Some("brvx-1000001")),
            l("vnet0", Some("brvx-1000001")),
            l("eth0", Some("br0")),
        ];
        assert_eq!(
            vm_ports(&links),
            BTreeMap::from([(1_000_001, vec!["vnet0".to_string(), "vnet2".to_string()])])
        );
    }
}
