//! NAT of a VPC router: one nftables table `ip stackfabric` inside the VPC namespace, owned
//! by the agent and replaced atomically (one `nft -f` transaction) only when its rendering
//! changed. [`render_nft`] is pure; the table carries a digest of its own rendering as its
//! comment, so a restarted agent can tell from the kernel whether a reload is needed.
//!
//! Per-packet cost does not grow with the number of NAT entries: every translation is one
//! lookup in a map (port forwards keyed by public address and port, static NAT both ways).
//! NAT chains only see the first packet of a connection; conntrack handles the rest.
//!
//! - prerouting (dstnat): port forwards (`pf_tcp`, `pf_udp`), then static NAT (`static_in`).
//!   No interface match, so VMs reaching their own VPC's public addresses are translated too.
//! - postrouting (srcnat), traffic leaving through `transit`: static NAT source
//!   (`static_out`) first, otherwise SNAT with port overloading to the VPC's SNAT address.
//! - hairpin: a connection that was DNATed and comes from inside the VPC towards the inside
//!   is masqueraded to the tier gateway address, so the replies come back through the
//!   router (and are un-NATed) instead of going straight VM to VM.
//! - forward filter: from `transit` only DNATed connections and replies enter the VPC; the
//!   host namespace cannot reach private addresses directly.
//! - Direct Connect links (`d<vni>`, see [`crate::dc`]) are not tiers: nothing leaving
//!   through them is source-NATed (SNAT and static NAT match `oifname "transit"` only, and
//!   the hairpin masquerade excludes them), traffic between them and the tiers is forwarded
//!   (policy accept, tier ACLs are north-south on `transit`), and nothing entering from one
//!   is forwarded to `transit`.
//! - north-south ACLs (tiers with a `TierAcl`): after `ct state established,related accept`
//!   (replies of allowed flows always pass) and `ct state invalid drop`, a new connection
//!   entering from `transit` (already DNATed: port forward, static NAT, load balancer) is
//!   sent by `ip daddr vmap { <tier cidr> : jump acl_in_<vni> }` to the tier's ingress rules,
//!   one leaving to `transit` by `ip saddr vmap { … : jump acl_eg_<vni> }` to its egress
//!   rules (before SNAT, so the private source is matched). The chains are rendered by
//!   `sf_linux::acl` (first match wins, then the list's default, counters on every rule).
//!   Traffic between tiers is filtered on the hypervisors, at the source.
//!
//! Load balancers (Maglev, see [`lb_table`]): per load balancer `i` (in name order) a map
//! `lb<i>` of type `mark : ipv4_addr . inet_service`, slot → backend, holding the Maglev
//! table of the currently healthy backends. In prerouting, before the port forwards:
//!
//! ```text
//! ip daddr VIP tcp dport PORT meta mark set jhash ip saddr . tcp sport . ip daddr . tcp dport mod M seed 0x0
//! ip daddr VIP tcp dport PORT dnat ip to meta mark map @lb<i>
//! ```
//!
//! (nft 1.0.6 refuses a map keyed by `jhash` directly, and lists a `typeof jhash` map with a
//! crash, hence the mark as the carrier.) The seed is fixed, so every gateway hashes a 5-tuple
//! to the same slot. A filter chain `lb_guard` right after dstnat clears the mark again (so it
//! never reaches routing) and rejects new connections to a VIP that were not translated
//! (no healthy backend: the map is empty). Hairpin (a VM of the VPC using the VIP) is
//! masqueraded like port forwards. The maps are filled outside the table body: a health
//! change rewrites only the affected map, never the NAT, and in that map only the slots
//! whose backend changes (`delete element` + `add element` of about 1/N of the slots, in
//! one transaction, [`lb_script`], [`map_load`]). The set `lbsum` carries, as element
//! comments, the digest of the table body (`sf:table=`) and of each map's contents
//! (`sf:lb<i>=`); listing that small set is instant, whereas any listing of the table makes
//! nft fetch every element of the 65,537-slot maps (about 0.5 s). A map's digest ends with
//! the mask of the backends in it, so the installed table can be rebuilt, and the slot diff
//! computed, from `lbsum` alone, also by a restarted agent ([`installed_table`]); a
//! rebuild that does not reproduce the digest means the contents are unknown: whole load.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use sf_core::desired::{HealthCheck, L4Protocol, LbBackend, LoadBalancer, RouterTier, VpcRouter};
use sf_core::maglev;
use sf_linux::acl::{render_chain, Direction, Verdicts};
use sha2::{Digest, Sha256};

use crate::names::TRANSIT_NS;

pub const TABLE: &str = "stackfabric";
const COMMENT_PREFIX: &str = "sf:";
/// Largest Maglev table accepted (slots); 65,537 is the usual size.
pub const LB_MAX_TABLE: u32 = 1 << 20;
/// Key of the table digest element in `lbsum` (load balancer keys are their index).
const LBSUM_TABLE_KEY: u32 = u32::MAX;

pub(crate) fn proto_name(p: L4Protocol) -> &'static str {
    match p {
        L4Protocol::Tcp => "tcp",
        L4Protocol::Udp => "udp",
    }
}

/// Why a load balancer cannot be rendered, if it cannot.
pub fn lb_problem(lb: &LoadBalancer) -> Option<String> {
    if lb.table_size > LB_MAX_TABLE || !maglev::is_prime(lb.table_size) {
        return Some(format!(
            "table_size {} must be a prime of at most {LB_MAX_TABLE}",
            lb.table_size
        ));
    }
    if lb.port == 0 {
        return Some("port 0".into());
    }
    // A Maglev map and a source set hold one family: the VIP's.
    if let Some(b) = lb
        .backends
        .iter()
        .find(|b| b.ip.is_ipv6() != lb.vip.is_ipv6())
    {
        return Some(format!("backend {} is not of the VIP's family", b.name));
    }
    if let Some(c) = lb
        .source_cidrs
        .iter()
        .find(|c| matches!(c, IpNet::V6(_)) != lb.vip.is_ipv6())
    {
        return Some(format!("source {c} is not of the VIP's family"));
    }
    None
}

/// The load balancers that are rendered, in name order: valid ones, the first of a name and
/// of a (protocol, VIP, port) in declaration order wins (problems are reported by [`validate`]). Map `lb<i>` belongs
/// to the `i`-th of this list.
pub fn load_balancers(r: &VpcRouter) -> Vec<&LoadBalancer> {
    rendered_lbs(&r.load_balancers, false)
}

/// The load balancers of `list` with a VIP of one family (IPv6 ones for the router's IPv6
/// table, [`crate::nft6`]) that are rendered, as [`load_balancers`] chooses them.
pub fn rendered_lbs(list: &[LoadBalancer], ipv6: bool) -> Vec<&LoadBalancer> {
    let mut names = std::collections::BTreeSet::new();
    let mut vips = std::collections::BTreeSet::new();
    let mut v: Vec<&LoadBalancer> = list
        .iter()
        .filter(|lb| lb.vip.is_ipv6() == ipv6)
        .filter(|lb| names.insert(lb.name.as_str()))
        .filter(|lb| lb_problem(lb).is_none())
        .filter(|lb| vips.insert((lb.protocol, lb.vip, lb.port)))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The backends of a load balancer, first of a name wins, in name order.
pub fn lb_backends(lb: &LoadBalancer) -> Vec<&LbBackend> {
    let mut m: BTreeMap<&str, &LbBackend> = BTreeMap::new();
    for b in &lb.backends {
        m.entry(b.name.as_str()).or_insert(b);
    }
    m.into_values().collect()
}

/// Longest member mask (hex digits) carried in a map's `lbsum` comment: nft limits a comment
/// to 128 bytes. Load balancers with more backends (4 per digit) are always loaded whole.
const LB_MASK_MAX_DIGITS: usize = 96;

/// The installed contents of one load balancer map.
#[derive(Clone, PartialEq, Eq)]
pub struct LbTable {
    /// `sf_core::maglev::digest` of the table in backend names (what gateways compare).
    pub maglev_digest: String,
    /// Digest of the map contents as loaded (slots, addresses, ports), then `-` and the
    /// member mask (hex; bit i: the i-th of [`lb_backends`] is in the table), so the table
    /// a map holds can be rebuilt from its `lbsum` comment alone ([`installed_table`]).
    /// Carried in `lbsum`.
    pub digest: String,
    /// `slot : ip . port, ...` (empty: no healthy backend).
    pub elements: String,
    /// Backend name → slots it holds (healthy backends with weight only).
    pub slots: BTreeMap<String, usize>,
    /// The Maglev table: slot → index into `targets`.
    pub table: Vec<u32>,
    /// The backends in the table (address, port), in name order.
    pub targets: Vec<(IpAddr, u16)>,
}

impl std::fmt::Debug for LbTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbTable")
            .field("maglev_digest", &self.maglev_digest)
            .field("digest", &self.digest)
            .field("slots", &self.slots)
            .finish()
    }
}

/// One reading of the health of a load balancer's backends ([`lb_backends`] order), from
/// which its cache key, its table and its reported status all follow. A probe flips at any
/// time: a table built from a second reading would be cached, installed and reported under
/// a key and a status it does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbReading<'a> {
    lb: &'a LoadBalancer,
    backends: Vec<&'a LbBackend>,
    up: Vec<bool>,
    /// Whether a check vouched for `up` (else it is the default UP of an unchecked backend).
    verified: Vec<bool>,
}

impl<'a> LbReading<'a> {
    /// Asks `state` once per backend: (UP, verified).
    pub fn new(lb: &'a LoadBalancer, state: impl Fn(&LbBackend) -> (bool, bool)) -> Self {
        let backends = lb_backends(lb);
        let (up, verified) = backends.iter().map(|b| state(b)).unzip();
        LbReading {
            lb,
            backends,
            up,
            verified,
        }
    }

    /// What the table is a function of: size, backends (name, address, port, weight) and
    /// their health in this reading.
    pub fn key(&self) -> String {
        let mut key = self.lb.table_size.to_string();
        for (b, up) in self.backends.iter().zip(&self.up) {
            let state = if *up { '+' } else { '-' };
            let _ = write!(key, "|{}={}:{}*{}{state}", b.name, b.ip, b.port, b.weight);
        }
        key
    }

    /// The Maglev table over the backends UP in this reading.
    pub fn table(&self) -> LbTable {
        let member = |b: &LbBackend| {
            self.backends
                .iter()
                .position(|x| std::ptr::eq(*x, b))
                .is_some_and(|i| self.up[i])
        };
        lb_table(self.lb, &member)
    }

    /// Backend name → UP in this reading.
    pub fn status(&self) -> BTreeMap<String, bool> {
        self.backends
            .iter()
            .zip(&self.up)
            .map(|(b, up)| (b.name.clone(), *up))
            .collect()
    }

    /// The backends UP by default only: no check vouched for them yet.
    pub fn unverified(&self) -> std::collections::BTreeSet<String> {
        self.backends
            .iter()
            .zip(&self.verified)
            .filter(|(_, v)| !**v)
            .map(|(b, _)| b.name.clone())
            .collect()
    }
}

/// The Maglev table of `lb` over the backends `healthy` accepts (weights honoured, names
/// sorted, `table_size` slots). Pure; the caller caches by input.
pub fn lb_table(lb: &LoadBalancer, healthy: &dyn Fn(&LbBackend) -> bool) -> LbTable {
    let up: Vec<&LbBackend> = lb_backends(lb)
        .into_iter()
        .filter(|b| b.weight > 0 && healthy(b))
        .collect();
    let input: Vec<(&str, u32)> = up.iter().map(|b| (b.name.as_str(), b.weight)).collect();
    let table = if lb_problem(lb).is_some() {
        Vec::new()
    } else {
        maglev::build(&input, lb.table_size)
    };
    let names: Vec<&str> = input.iter().map(|x| x.0).collect();
    let members: Vec<bool> = lb_backends(lb)
        .iter()
        .map(|b| up.iter().any(|u| std::ptr::eq(*u, *b)))
        .collect();
    let mut elements = String::with_capacity(table.len() * 24);
    let mut slots: BTreeMap<String, usize> = BTreeMap::new();
    for (slot, &i) in table.iter().enumerate() {
        let b = up[i as usize];
        if slot > 0 {
            elements.push_str(", ");
        }
        let _ = write!(elements, "{slot} : {} . {}", b.ip, b.port);
        *slots.entry(b.name.clone()).or_default() += 1;
    }
    let content = digest(&format!("{}\n{elements}", lb.table_size));
    LbTable {
        maglev_digest: maglev::digest(&table, &names),
        digest: match member_mask(&members) {
            Some(mask) => format!("{content}-{mask}"),
            None => content,
        },
        elements,
        slots,
        targets: up.iter().map(|b| (b.ip, b.port)).collect(),
        table,
    }
}

/// Hex digits of a member mask, 4 members per digit, first member in the lowest bit of the
/// last digit; `None` when it would not fit in a comment.
fn member_mask(members: &[bool]) -> Option<String> {
    let digits = members.len().div_ceil(4).max(1);
    if digits > LB_MASK_MAX_DIGITS {
        return None;
    }
    let mut mask = String::with_capacity(digits);
    for d in (0..digits).rev() {
        let nibble = (0..4)
            .filter(|b| members.get(d * 4 + b).copied().unwrap_or(false))
            .fold(0u32, |n, b| n | 1 << b);
        mask.push(char::from_digit(nibble, 16).expect("a nibble"));
    }
    Some(mask)
}

/// Whether member `i` is set in a mask from [`member_mask`].
fn mask_has(mask: &str, i: usize) -> bool {
    let digits = mask.as_bytes();
    let Some(&c) = digits
        .len()
        .checked_sub(1 + i / 4)
        .and_then(|d| digits.get(d))
    else {
        return false;
    };
    (c as char)
        .to_digit(16)
        .is_some_and(|n| n >> (i % 4) & 1 == 1)
}

/// The table a map of `lb` holds, rebuilt from the digest its `lbsum` comment carries: the
/// members named by the mask, under `lb`'s current backends, weights and size. `None`
/// unless the rebuilt table has exactly that digest (no mask, a backend's address, weight
/// or the table size changed since): then the map's contents are unknown.
pub fn installed_table(lb: &LoadBalancer, installed_digest: &str) -> Option<LbTable> {
    let (_, mask) = installed_digest.split_once('-')?;
    if mask.is_empty() || !mask.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let backends = lb_backends(lb);
    let member = |b: &LbBackend| {
        backends
            .iter()
            .position(|x| std::ptr::eq(*x, b))
            .is_some_and(|i| mask_has(mask, i))
    };
    let t = lb_table(lb, &member);
    (t.digest == installed_digest).then_some(t)
}

/// How to bring a map of `lb` from what it holds (`installed`: its `lbsum` digest, if any)
/// to `new`: only the slots that change when the old table is known (a health flip moves
/// about 1/N of them), else the whole map. Rewriting a slot costs a delete and an add, so
/// past half of the slots a whole load is cheaper.
pub fn map_load(lb: &LoadBalancer, installed: Option<&str>, new: Arc<LbTable>) -> MapLoad {
    let changed = installed
        .and_then(|d| installed_table(lb, d))
        .and_then(|old| maglev::changed_slots(&old.table, &old.targets, &new.table, &new.targets));
    match changed {
        Some(slots) if slots.len() * 2 < new.table.len() => MapLoad::Slots(new, slots),
        _ => MapLoad::Full(new),
    }
}

/// The internal (non-public) VIPs the router must answer for on a tier link: those inside
/// the tier's subnet (VMs ARP for them). VIPs elsewhere are routed to the router anyway.
pub fn tier_vips(r: &VpcRouter, tier: &Ipv4Net, gateway: Ipv4Addr) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = load_balancers(r)
        .iter()
        .filter_map(|lb| match lb.vip {
            IpAddr::V4(v) if !lb.public && tier.contains(&v) && v != gateway => Some(v),
            _ => None,
        })
        .map(|v| Ipv4Net::new(v, 32).expect("/32"))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Port forwards of one protocol: (public ip, public port) → (private ip, private port);
/// the first entry for a key wins (duplicates are reported by [`validate`]).
pub fn port_forward_map(
    r: &VpcRouter,
    proto: L4Protocol,
) -> BTreeMap<(Ipv4Addr, u16), (Ipv4Addr, u16)> {
    let mut m = BTreeMap::new();
    for p in r.port_forwards.iter().filter(|p| p.protocol == proto) {
        m.entry((p.public_ip, p.public_port))
            .or_insert((p.private_ip, p.private_port));
    }
    m
}

/// Static NAT inbound (public → private) and outbound (private → public) maps.
pub fn static_maps(r: &VpcRouter) -> (BTreeMap<Ipv4Addr, Ipv4Addr>, BTreeMap<Ipv4Addr, Ipv4Addr>) {
    let (mut inb, mut outb) = (BTreeMap::new(), BTreeMap::new());
    for s in &r.static_nats {
        inb.entry(s.public_ip).or_insert(s.private_ip);
        outb.entry(s.private_ip).or_insert(s.public_ip);
    }
    (inb, outb)
}

/// The VPC's own address space (VPC CIDR and tier CIDRs, aggregated).
pub fn inside(r: &VpcRouter) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = std::iter::once(r.cidr.trunc())
        .chain(r.tiers.iter().map(|t| t.cidr.trunc()))
        .collect();
    v.sort();
    Ipv4Net::aggregate(&v)
}

/// Problems with the NAT configuration that rendering silently resolves (first entry wins).
pub fn validate(r: &VpcRouter) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = BTreeMap::new();
    for p in &r.port_forwards {
        if let Some(prev) = seen.insert((p.protocol, p.public_ip, p.public_port), p) {
            if prev != p {
                errors.push(format!(
                    "vpc {}: duplicate port forward {:?} {}:{} (first one kept)",
                    r.id, p.protocol, p.public_ip, p.public_port
                ));
            }
        }
    }
    let (mut pubs, mut privs) = (BTreeMap::new(), BTreeMap::new());
    for s in &r.static_nats {
        if pubs
            .insert(s.public_ip, s.private_ip)
            .is_some_and(|p| p != s.private_ip)
        {
            errors.push(format!(
                "vpc {}: static NAT {} mapped twice (first one kept)",
                r.id, s.public_ip
            ));
        }
        if privs
            .insert(s.private_ip, s.public_ip)
            .is_some_and(|p| p != s.public_ip)
        {
            errors.push(format!(
                "vpc {}: {} has two static NATs (first one kept)",
                r.id, s.private_ip
            ));
        }
    }
    let kept = tier_acls(r);
    for t in r.tiers.iter().filter(|t| t.acl.is_some()) {
        if !kept.iter().any(|k| std::ptr::eq(*k, t)) {
            errors.push(format!(
                "vpc {}: tier {} ({}) overlaps another tier with an ACL: its ACL is not enforced",
                r.id, t.name, t.cidr
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let mut vips = std::collections::BTreeSet::new();
    for lb in &r.load_balancers {
        let at = format!("vpc {}: load balancer {}", r.id, lb.name);
        if !names.insert(lb.name.as_str()) {
            errors.push(format!("{at}: name used twice (first one kept)"));
            continue;
        }
        if let Some(p) = lb_problem(lb) {
            errors.push(format!("{at}: {p} (not served)"));
            continue;
        }
        if !vips.insert((lb.protocol, lb.vip, lb.port)) {
            errors.push(format!(
                "{at}: {} {}:{} already balanced (first one kept)",
                proto_name(lb.protocol),
                lb.vip,
                lb.port
            ));
        }
        if r.port_forwards
            .iter()
            .any(|p| p.protocol == lb.protocol && p.public_ip == lb.vip && p.public_port == lb.port)
        {
            errors.push(format!(
                "{at}: {}:{} is also a port forward (the load balancer wins)",
                lb.vip, lb.port
            ));
        }
        if lb_backends(lb).len() != lb.backends.len() {
            errors.push(format!("{at}: backend name used twice (first one kept)"));
        }
        if let HealthCheck::Http { path, .. } = &lb.health {
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                errors.push(format!("{at}: health check path {path:?} must start with / and contain no spaces or control characters"));
            }
        }
    }
    errors
}

fn elements<I: IntoIterator<Item = String>>(c: &mut String, items: I) {
    let items: Vec<String> = items.into_iter().collect();
    if !items.is_empty() {
        let _ = writeln!(c, "\t\telements = {{ {} }}", items.join(", "));
    }
}

/// The address family a load balancer is rendered in: the IPv4 table's load balancers and
/// the IPv6 table's ([`crate::nft6`]) are the same rules in nft's two families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LbFamily {
    V4,
    V6,
}

impl LbFamily {
    /// nft's family keyword in matches and NAT statements (`ip daddr`, `dnat ip6 to`).
    fn keyword(self) -> &'static str {
        match self {
            LbFamily::V4 => "ip",
            LbFamily::V6 => "ip6",
        }
    }

    /// nft's address type of sets and map keys.
    fn addr_type(self) -> &'static str {
        match self {
            LbFamily::V4 => "ipv4_addr",
            LbFamily::V6 => "ipv6_addr",
        }
    }
}

/// "vip:port/proto" ("[vip]:port/proto" in IPv6), as rule comments name a load balancer.
fn lb_label(lb: &LoadBalancer) -> String {
    format!(
        "{}/{}",
        std::net::SocketAddr::new(lb.vip, lb.port),
        proto_name(lb.protocol)
    )
}

/// The load balancers' sets and maps, in family `fam`: `lbsum` (the digests), a Maglev map
/// `lb<i>` per load balancer `i`, a set `lbsrc<i>` per source allow-list and the `lb_source`
/// chain dropping other sources; nothing without load balancers.
pub(crate) fn lb_declarations(c: &mut String, fam: LbFamily, lbs: &[&LoadBalancer]) {
    let (f, addr) = (fam.keyword(), fam.addr_type());
    if !lbs.is_empty() {
        let _ = writeln!(c, "\tset lbsum {{\n\t\ttype mark\n\t}}");
    }
    for i in 0..lbs.len() {
        let _ = writeln!(
            c,
            "\tmap lb{i} {{\n\t\ttype mark : {addr} . inet_service\n\t}}"
        );
    }
    let restricted: Vec<(usize, &LoadBalancer)> = lbs
        .iter()
        .enumerate()
        .filter(|(_, lb)| !lb.source_cidrs.is_empty())
        .map(|(i, lb)| (i, *lb))
        .collect();
    for (i, lb) in &restricted {
        let _ = writeln!(
            c,
            "\tset lbsrc{i} {{\n\t\ttype {addr}\n\t\tflags interval\n\t\tauto-merge"
        );
        elements(c, lb.source_cidrs.iter().map(|n| n.to_string()));
        let _ = writeln!(c, "\t}}");
    }
    if !restricted.is_empty() {
        // Before DNAT (the VIP is still the destination), every packet of the original
        // direction: a source outside the list never reaches the Maglev mark or the NAT.
        let _ = writeln!(c, "\tchain lb_source {{");
        let _ = writeln!(
            c,
            "\t\ttype filter hook prerouting priority dstnat - 1; policy accept;"
        );
        for (i, lb) in &restricted {
            let (p, v, port) = (proto_name(lb.protocol), lb.vip, lb.port);
            let _ = writeln!(
                c,
                "\t\t{f} daddr {v} {p} dport {port} {f} saddr != @lbsrc{i} counter drop comment \"lb {} source\"",
                lb_label(lb)
            );
        }
        let _ = writeln!(c, "\t}}");
    }
}

/// The prerouting (DNAT) rules of the load balancers, in family `fam`: per load balancer
/// the Maglev slot hashed into the mark, then the DNAT to the backend the map holds there.
pub(crate) fn lb_dnat_rules(c: &mut String, fam: LbFamily, lbs: &[&LoadBalancer]) {
    let f = fam.keyword();
    for (i, lb) in lbs.iter().enumerate() {
        let (p, v, port, m) = (proto_name(lb.protocol), lb.vip, lb.port, lb.table_size);
        let _ = writeln!(
            c,
            "\t\t{f} daddr {v} {p} dport {port} meta mark set jhash {f} saddr . {p} sport . {f} daddr . {p} dport mod {m} seed 0x0"
        );
        let _ = writeln!(
            c,
            "\t\t{f} daddr {v} {p} dport {port} counter dnat {f} to meta mark map @lb{i} comment \"lb {}\"",
            lb_label(lb)
        );
    }
}

/// The `lb_guard` chain in family `fam`, right after DNAT: clears the mark, and rejects a
/// connection to a VIP that no backend took (its slot empty: none healthy); nothing
/// without load balancers.
pub(crate) fn lb_guard_chain(c: &mut String, fam: LbFamily, lbs: &[&LoadBalancer]) {
    if lbs.is_empty() {
        return;
    }
    let f = fam.keyword();
    let _ = writeln!(c, "\tchain lb_guard {{");
    let _ = writeln!(
        c,
        "\t\ttype filter hook prerouting priority dstnat + 1; policy accept;"
    );
    let _ = writeln!(c, "\t\tmeta mark != 0x00000000 meta mark set 0x00000000");
    for lb in lbs {
        let (p, v, port) = (proto_name(lb.protocol), lb.vip, lb.port);
        let with = match lb.protocol {
            L4Protocol::Tcp => " with tcp reset",
            L4Protocol::Udp => "",
        };
        let _ = writeln!(
            c,
            "\t\t{f} daddr {v} {p} dport {port} counter reject{with} comment \"lb {} no backend\"",
            lb_label(lb)
        );
    }
    let _ = writeln!(c, "\t}}");
}

fn body(r: &VpcRouter) -> String {
    let mut c = String::new();
    let t = TRANSIT_NS;
    let _ = writeln!(c, "\tset inside {{\n\t\ttype ipv4_addr\n\t\tflags interval");
    elements(&mut c, inside(r).iter().map(|n| n.to_string()));
    let _ = writeln!(c, "\t}}");
    let (acl_sets, acl_chains) = acl_text(r);
    c.push_str(&acl_sets);
    for (name, proto) in [("pf_tcp", L4Protocol::Tcp), ("pf_udp", L4Protocol::Udp)] {
        let _ = writeln!(
            c,
            "\tmap {name} {{\n\t\ttype ipv4_addr . inet_service : ipv4_addr . inet_service"
        );
        elements(
            &mut c,
            port_forward_map(r, proto)
                .iter()
                .map(|((pi, pp), (vi, vp))| format!("{pi} . {pp} : {vi} . {vp}")),
        );
        let _ = writeln!(c, "\t}}");
    }
    let (inb, outb) = static_maps(r);
    for (name, m) in [("static_in", &inb), ("static_out", &outb)] {
        let _ = writeln!(c, "\tmap {name} {{\n\t\ttype ipv4_addr : ipv4_addr");
        elements(&mut c, m.iter().map(|(k, v)| format!("{k} : {v}")));
        let _ = writeln!(c, "\t}}");
    }
    let lbs = load_balancers(r);
    lb_declarations(&mut c, LbFamily::V4, &lbs);
    let _ = writeln!(c, "\tchain prerouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    lb_dnat_rules(&mut c, LbFamily::V4, &lbs);
    // Counters per NAT kind (map elements carry no counter of their own).
    let _ = writeln!(
        c,
        "\t\tcounter dnat ip to ip daddr . tcp dport map @pf_tcp comment \"port-forward tcp\""
    );
    let _ = writeln!(
        c,
        "\t\tcounter dnat ip to ip daddr . udp dport map @pf_udp comment \"port-forward udp\""
    );
    let _ = writeln!(
        c,
        "\t\tcounter dnat ip to ip daddr map @static_in comment \"static-nat in\""
    );
    let _ = writeln!(c, "\t}}");
    let _ = writeln!(c, "\tchain postrouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        c,
        "\t\toifname \"{t}\" counter snat ip to ip saddr map @static_out comment \"static-nat out\""
    );
    if let Some(s) = r.snat {
        let _ = writeln!(
            c,
            "\t\toifname \"{t}\" ip saddr @inside counter snat ip to {s} comment \"snat {s}\""
        );
    }
    // Hairpin only towards the VPC's own tiers: never on a Direct Connect (no NAT there).
    let dcs = dc_links(r);
    let not_dc: String = dcs.iter().map(|d| format!(" oifname != \"{d}\"")).collect();
    let _ = writeln!(
        c,
        "\t\toifname != \"{t}\"{not_dc} ct status dnat ip saddr @inside counter masquerade comment \"hairpin\""
    );
    let _ = writeln!(c, "\t}}");
    lb_guard_chain(&mut c, LbFamily::V4, &lbs);
    let acls = tier_acls(r);
    let _ = writeln!(c, "\tchain forward {{");
    let _ = writeln!(
        c,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    if acls.is_empty() {
        let _ = writeln!(c, "\t\tct state established,related accept");
    } else {
        let ins: Vec<String> = acls
            .iter()
            .map(|t| format!("{} : jump acl_in_{}", t.cidr.trunc(), t.vni))
            .collect();
        let egs: Vec<String> = acls
            .iter()
            .map(|t| format!("{} : jump acl_eg_{}", t.cidr.trunc(), t.vni))
            .collect();
        let vmaps = format!(
            "\t\tiifname \"{t}\" ct status dnat ip daddr vmap {{ {} }}\n\t\toifname \"{t}\" ip saddr vmap {{ {} }}\n",
            ins.join(", "),
            egs.join(", ")
        );
        let generation = acl_generation(&vmaps, &acl_chains);
        // Established flows pass at once only if admitted under these very rules (their
        // conntrack mark). One admitted under earlier rules is checked again, once, in its
        // original direction: allowed, it is re-marked; newly denied, it is cut (dropped).
        let _ = writeln!(
            c,
            "\t\tct state established,related ct mark {generation:#010x} accept"
        );
        let _ = writeln!(
            c,
            "\t\tct direction reply ct state established,related accept"
        );
        // The router sees both directions of every flow it forwards: invalid is safe to drop.
        let _ = writeln!(c, "\t\tct state invalid drop");
        c.push_str(&vmaps);
        let _ = writeln!(c, "\t\tct mark set {generation:#010x}");
    }
    if !dcs.is_empty() {
        // A Direct Connect reaches the VPC, not the internet through it (and would leak its
        // addresses unNATed).
        let set: Vec<String> = dcs.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = writeln!(
            c,
            "\t\tiifname {{ {} }} oifname \"{t}\" drop",
            set.join(", ")
        );
    }
    let _ = writeln!(c, "\t\tiifname \"{t}\" ct status dnat accept");
    let _ = writeln!(c, "\t\tiifname \"{t}\" drop");
    let _ = writeln!(c, "\t}}");
    c.push_str(&acl_chains);
    c
}

/// The router-side links of the Direct Connects served (`d<vni>`), in VNI order.
pub fn dc_links(r: &VpcRouter) -> Vec<String> {
    let mut v: Vec<u32> = crate::dc::usable(r).0.iter().map(|d| d.vni).collect();
    v.sort();
    v.into_iter().map(crate::names::dc_ns).collect()
}

/// The ACL chains of the tiers (`acl_in_<vni>`, `acl_eg_<vni>`) and the prefix-list sets
/// they use (`acl_ins_<vni>_<n>`, `acl_egs_<vni>_<n>`): (sets, chains).
fn acl_text(r: &VpcRouter) -> (String, String) {
    let (mut sets, mut chains) = (String::new(), String::new());
    for tier in tier_acls(r) {
        let acl = tier.acl.as_ref().expect("filtered on acl");
        let v = tier.vni;
        for (d, name, setp) in [
            (
                Direction::Ingress,
                format!("acl_in_{v}"),
                format!("acl_ins_{v}_"),
            ),
            (
                Direction::Egress,
                format!("acl_eg_{v}"),
                format!("acl_egs_{v}_"),
            ),
        ] {
            let t = render_chain(acl, d, Verdicts::FINAL, &setp);
            sets.push_str(&t.sets);
            let _ = write!(chains, "\tchain {name} {{\n{}\t}}\n", t.rules);
        }
    }
    (sets, chains)
}

/// The tiers whose north-south ACL the router enforces, in VNI order: those with an ACL,
/// the first of a VNI, and none whose CIDR overlaps an earlier one (nft refuses overlapping
/// intervals in a verdict map; reported by [`validate`]).
pub fn tier_acls(r: &VpcRouter) -> Vec<&RouterTier> {
    let mut v: Vec<&RouterTier> = r.tiers.iter().filter(|t| t.acl.is_some()).collect();
    v.sort_by_key(|t| t.vni);
    let mut kept: Vec<&RouterTier> = Vec::with_capacity(v.len());
    for t in v {
        let c = t.cidr.trunc();
        if kept.iter().any(|k| {
            k.vni == t.vni
                || k.cidr.trunc().contains(&c.network())
                || c.contains(&k.cidr.trunc().network())
        }) {
            continue;
        }
        kept.push(t);
    }
    kept
}

/// The conntrack mark of flows admitted under one set of north-south ACLs: a hash of their
/// rendering, never 0 (the mark of flows admitted before any ACL existed).
fn acl_generation(vmaps: &str, chains: &str) -> u32 {
    let h = Sha256::digest(format!("{vmaps}{chains}").as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]).max(1)
}

/// Short digest identifying a rendering (carried in the table's comment).
pub fn digest(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

/// The table definition of router `r`, with its digest as the table comment.
pub fn render_nft(r: &VpcRouter) -> String {
    let b = body(r);
    format!(
        "table ip {TABLE} {{\n\tcomment \"{COMMENT_PREFIX}{}\"\n{b}}}\n",
        digest(&b)
    )
}

/// The digest a rendering carries (from [`render_nft`] or `nft -t list table` output).
pub fn digest_of(listing: &str) -> Option<String> {
    listing.lines().find_map(|l| {
        l.trim()
            .strip_prefix("comment \"")?
            .strip_prefix(COMMENT_PREFIX)?
            .strip_suffix('"')
            .map(str::to_string)
    })
}

/// One `nft -f` transaction replacing the table atomically: declare (so the delete cannot
/// fail), delete, define. Packets see either the old or the new ruleset, never none.
pub fn transaction(table: &str) -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n{table}")
}

/// How one load balancer map is rewritten.
#[derive(Clone, PartialEq, Eq)]
pub enum MapLoad {
    /// Flush it and add every slot (a new map, or one whose contents are unknown).
    Full(Arc<LbTable>),
    /// Rewrite only these slots of the installed map (see [`map_load`]): `delete element`
    /// then `add element` in the same transaction, since nft refuses to `add` over an
    /// existing key with another value.
    Slots(Arc<LbTable>, Vec<u32>),
}

impl MapLoad {
    pub fn table(&self) -> &Arc<LbTable> {
        match self {
            MapLoad::Full(t) | MapLoad::Slots(t, _) => t,
        }
    }
}

impl std::fmt::Debug for MapLoad {
    /// What the agent logs for a load: how many slots it writes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapLoad::Full(t) => write!(f, "all {} slots", t.table.len()),
            MapLoad::Slots(t, s) => write!(f, "{} of {} slots", s.len(), t.table.len()),
        }
    }
}

/// The load balancer maps to (re)load with a table digest: `digests` are every map's
/// digest (the `lbsum` contents), `maps` the maps whose contents are rewritten.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LbLoad {
    pub table_digest: String,
    pub digests: BTreeMap<usize, String>,
    pub maps: Vec<(usize, MapLoad)>,
}

impl std::fmt::Debug for LbLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let maps: Vec<String> = self
            .maps
            .iter()
            .map(|(i, m)| format!("lb{i}: {m:?}"))
            .collect();
        f.debug_struct("LbLoad")
            .field("table_digest", &self.table_digest)
            .field("digests", &self.digests)
            .field("maps", &maps)
            .finish()
    }
}

/// nft commands (for one `nft -f` transaction) rewriting `lbsum` and the maps of `load`.
/// Empty when the router has no load balancer.
pub fn lb_script(load: &LbLoad) -> String {
    lb_script_in(&format!("ip {TABLE}"), load)
}

/// [`lb_script`] for the maps of table `table` ("ip stackfabric", "ip6 stackfabric6").
pub fn lb_script_in(table: &str, load: &LbLoad) -> String {
    if load.digests.is_empty() {
        return String::new();
    }
    let mut s = format!("flush set {table} lbsum\nadd element {table} lbsum {{ ");
    let _ = write!(
        s,
        "{LBSUM_TABLE_KEY} comment \"{COMMENT_PREFIX}table={}\"",
        load.table_digest
    );
    for (i, d) in &load.digests {
        let _ = write!(s, ", {i} comment \"{COMMENT_PREFIX}lb{i}={d}\"");
    }
    s.push_str(" }\n");
    for (i, m) in &load.maps {
        match m {
            MapLoad::Full(t) => {
                let _ = writeln!(s, "flush map {table} lb{i}");
                if !t.elements.is_empty() {
                    let _ = writeln!(s, "add element {table} lb{i} {{ {} }}", t.elements);
                }
            }
            MapLoad::Slots(t, slots) => slot_script(&mut s, table, *i, t, slots),
        }
    }
    s
}

/// Rewrites `slots` of map `lb<i>` with their backend in `t` (nothing when none changed).
fn slot_script(s: &mut String, table: &str, i: usize, t: &LbTable, slots: &[u32]) {
    if slots.is_empty() {
        return;
    }
    let keys: Vec<String> = slots.iter().map(u32::to_string).collect();
    let _ = writeln!(s, "delete element {table} lb{i} {{ {} }}", keys.join(", "));
    let values: Vec<String> = slots
        .iter()
        .map(|&slot| {
            let (ip, port) = t.targets[t.table[slot as usize] as usize];
            format!("{slot} : {ip} . {port}")
        })
        .collect();
    let _ = writeln!(s, "add element {table} lb{i} {{ {} }}", values.join(", "));
}

/// Parses `nft list set ip stackfabric lbsum`: (table digest, map digests).
pub fn parse_lbsum(listing: &str) -> (Option<String>, BTreeMap<usize, String>) {
    let mut table = None;
    let mut maps = BTreeMap::new();
    let tag = format!("comment \"{COMMENT_PREFIX}");
    for part in listing.split(tag.as_str()).skip(1) {
        let Some(value) = part.split('"').next() else {
            continue;
        };
        if let Some(d) = value.strip_prefix("table=") {
            table = Some(d.to_string());
        } else if let Some((i, d)) = value.strip_prefix("lb").and_then(|v| v.split_once('=')) {
            if let Ok(i) = i.parse() {
                maps.insert(i, d.to_string());
            }
        }
    }
    (table, maps)
}

#[cfg(test)]
pub use tests::{example, lb_example};

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::{PortForward, RouterTier, StaticNat};
    use std::sync::Arc;

    /// [`example`] with a public HTTP load balancer of three backends on 203.0.113.20:80.
    pub fn lb_example() -> VpcRouter {
        let mut r = example();
        r.load_balancers.push(LoadBalancer {
            name: "web".into(),
            vip: "203.0.113.20".parse().unwrap(),
            protocol: L4Protocol::Tcp,
            port: 80,
            backends: (1..=3)
                .map(|i| LbBackend {
                    name: format!("10.10.1.2{i}:80"),
                    ip: Ipv4Addr::new(10, 10, 1, 20 + i).into(),
                    port: 80,
                    weight: 1,
                })
                .collect(),
            health: HealthCheck::Tcp {
                interval_ms: 1000,
                timeout_ms: 500,
                rise: 2,
                fall: 2,
            },
            table_size: 251,
            public: true,
            source_cidrs: Vec::new(),
            peer_down: Default::default(),
        });
        r
    }

    pub fn example() -> VpcRouter {
        VpcRouter {
            role: Default::default(),
            tenant: "acme".into(),
            vpc: "prod".into(),
            id: 7,
            cidr: "10.10.0.0/16".parse().unwrap(),
            mac: sf_core::desired::vpc_mac(7),
            tiers: vec![RouterTier {
                name: "web".into(),
                vni: 1_000_001,
                cidr: "10.10.1.0/24".parse().unwrap(),
                gateway: "10.10.1.1".parse().unwrap(),
                acl: None,
            }],
            routes: vec![],
            snat: Some("203.0.113.10".parse().unwrap()),
            port_forwards: vec![PortForward {
                protocol: L4Protocol::Tcp,
                public_ip: "203.0.113.11".parse().unwrap(),
                public_port: 8080,
                private_ip: "10.10.1.11".parse().unwrap(),
                private_port: 80,
            }],
            static_nats: vec![StaticNat {
                public_ip: "203.0.113.12".parse().unwrap(),
                private_ip: "10.10.1.11".parse().unwrap(),
            }],
            load_balancers: vec![],
            direct_connects: vec![],
        }
    }

    #[test]
    fn load_balancer_renders_hash_mark_dnat_map_and_guard() {
        let r = lb_example();
        let t = render_nft(&r);
        assert!(t.contains("\tmap lb0 {\n\t\ttype mark : ipv4_addr . inet_service\n\t}\n"));
        assert!(t.contains("\tset lbsum {\n\t\ttype mark\n\t}\n"));
        let hash = "\t\tip daddr 203.0.113.20 tcp dport 80 meta mark set jhash ip saddr . tcp sport . ip daddr . tcp dport mod 251 seed 0x0\n";
        let dnat = "\t\tip daddr 203.0.113.20 tcp dport 80 counter dnat ip to meta mark map @lb0 comment \"lb 203.0.113.20:80/tcp\"\n";
        assert!(t.contains(hash) && t.contains(dnat), "{t}");
        // Before the port forwards, hash before lookup.
        assert!(t.find(hash).unwrap() < t.find(dnat).unwrap());
        assert!(t.find(dnat).unwrap() < t.find("@pf_tcp").unwrap());
        assert!(t.contains("type filter hook prerouting priority dstnat + 1; policy accept;"));
        assert!(t.contains("\t\tip daddr 203.0.113.20 tcp dport 80 counter reject with tcp reset comment \"lb 203.0.113.20:80/tcp no backend\"\n"));
        assert!(t.contains("meta mark != 0x00000000 meta mark set 0x00000000"));
        // No element in the body: health changes do not change the table digest.
        assert!(!t.contains("10.10.1.21"));
        assert!(!render_nft(&example()).contains("lbsum"));
        assert_ne!(digest_of(&t), digest_of(&render_nft(&example())));
    }

    #[test]
    fn load_balancer_source_cidrs_drop_others_before_dnat() {
        let open = render_nft(&lb_example());
        assert!(!open.contains("lbsrc") && !open.contains("lb_source"));
        let mut r = lb_example();
        r.load_balancers[0].source_cidrs = vec![
            "198.51.100.0/24".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        let t = render_nft(&r);
        assert!(
            t.contains("\tset lbsrc0 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 198.51.100.0/24, 192.0.2.7/32 }\n\t}\n"),
            "{t}"
        );
        assert!(t.contains("\tchain lb_source {\n\t\ttype filter hook prerouting priority dstnat - 1; policy accept;\n"));
        let drop = "\t\tip daddr 203.0.113.20 tcp dport 80 ip saddr != @lbsrc0 counter drop comment \"lb 203.0.113.20:80/tcp source\"\n";
        assert!(t.contains(drop), "{t}");
        // A change of the list changes the table body (and its digest): it is reloaded.
        assert_ne!(digest_of(&t), digest_of(&open));
        // Clearing the list removes set and chain.
        r.load_balancers[0].source_cidrs.clear();
        assert_eq!(render_nft(&r), open);
    }

    #[test]
    fn lb_table_spreads_over_healthy_backends_and_tracks_health() {
        let r = lb_example();
        let lb = &r.load_balancers[0];
        let all = lb_table(lb, &|_| true);
        assert_eq!(all.slots.values().sum::<usize>(), 251);
        assert_eq!(all.slots.len(), 3);
        for n in all.slots.values() {
            assert!(n.abs_diff(251 / 3) <= 3, "{:?}", all.slots);
        }
        assert!(all.elements.starts_with("0 : 10.10.1.2"));
        assert_eq!(all.elements.matches(", ").count(), 250);
        let two = lb_table(lb, &|b| b.name != "10.10.1.22:80");
        assert_eq!(two.slots.len(), 2);
        assert_ne!(two.digest, all.digest);
        assert_ne!(two.maglev_digest, all.maglev_digest);
        assert!(!two.elements.contains("10.10.1.22"));
        // Minimal disruption: nearly all slots of the remaining backends stay where they were
        // (Maglev moves a little more than the removed backend's share).
        let slot_of = |t: &LbTable| -> Vec<String> {
            t.elements
                .split(", ")
                .map(|e| e.split(" : ").nth(1).unwrap().to_string())
                .collect()
        };
        let (a, b) = (slot_of(&all), slot_of(&two));
        let kept = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        let others = a.iter().filter(|x| !x.contains("10.10.1.22")).count();
        assert!(kept * 100 >= others * 90, "{kept} of {others} kept");
        // The Maglev digest is the shared one (order of input does not matter).
        let mut rev = lb.clone();
        rev.backends.reverse();
        assert_eq!(lb_table(&rev, &|_| true), all);
        // Weights honoured.
        let mut w = lb.clone();
        w.backends[0].weight = 2;
        let wt = lb_table(&w, &|_| true);
        assert!(wt.slots["10.10.1.21:80"] > wt.slots["10.10.1.22:80"] * 3 / 2);
        // None healthy: empty map.
        let none = lb_table(lb, &|_| false);
        assert!(none.elements.is_empty() && none.slots.is_empty());
    }

    #[test]
    fn a_reading_holds_still_while_the_health_it_was_taken_from_flips() {
        let r = lb_example();
        let lb = &r.load_balancers[0];
        // A probe flips 10.10.1.22 on every look, as a check thread may between two looks.
        let looks = std::cell::Cell::new(0u32);
        let flapping = |b: &LbBackend| {
            if b.name != "10.10.1.22:80" {
                return true;
            }
            looks.set(looks.get() + 1);
            looks.get() % 2 == 1
        };
        let reading = LbReading::new(lb, |b| (flapping(b), true));
        let status = reading.status();
        let table = reading.table();
        let key = reading.key();
        assert_eq!(
            reading.table(),
            table,
            "the same table from the same reading"
        );
        assert_eq!(reading.key(), key);
        let up: Vec<&String> = status
            .iter()
            .filter(|(_, up)| **up)
            .map(|(n, _)| n)
            .collect();
        let holding: Vec<&String> = table.slots.keys().collect();
        assert_eq!(up, holding, "the table holds the backends reported UP");
        assert_eq!(
            key.contains("10.10.1.22:80=10.10.1.22:80*1+"),
            status["10.10.1.22:80"],
            "{key}"
        );
        assert!(reading.unverified().is_empty());
        let fresh = LbReading::new(lb, |b| (true, b.name != "10.10.1.23:80"));
        assert_eq!(
            fresh.unverified().into_iter().collect::<Vec<_>>(),
            ["10.10.1.23:80"]
        );
        // Health is part of the key: the other reading has another key and table.
        let other = LbReading::new(lb, |b| {
            (b.name != "10.10.1.22:80" || !status[&b.name], true)
        });
        assert_ne!(other.key(), key);
        assert_ne!(other.table().digest, table.digest);
    }

    #[test]
    fn installed_table_is_rebuilt_from_its_digest_and_a_flip_writes_only_changed_slots() {
        let r = lb_example();
        let lb = &r.load_balancers[0];
        let all = Arc::new(lb_table(lb, &|_| true));
        let two = Arc::new(lb_table(lb, &|b| b.name != "10.10.1.22:80"));
        // Members in name order, first in the lowest bit: 21, 22, 23 -> 0b111, 0b101.
        assert!(
            all.digest.ends_with("-7") && two.digest.ends_with("-5"),
            "{}",
            two.digest
        );
        assert_eq!(installed_table(lb, &two.digest).as_ref(), Some(&*two));
        assert_eq!(installed_table(lb, &all.digest).as_ref(), Some(&*all));
        // Unknown contents: no mask (an older agent), a changed backend, a foreign digest.
        assert_eq!(
            installed_table(lb, all.digest.split('-').next().unwrap()),
            None
        );
        let mut moved = lb.clone();
        moved.backends[0].ip = "10.10.1.99".parse().unwrap();
        assert_eq!(installed_table(&moved, &all.digest), None);
        assert_eq!(installed_table(lb, "0011223344556677-z"), None);
        // A flip rewrites the slots of the leaving backend (and Maglev's few others).
        let MapLoad::Slots(t, slots) = map_load(lb, Some(&all.digest), two.clone()) else {
            panic!("not incremental")
        };
        assert!(Arc::ptr_eq(&t, &two));
        let share = all.slots["10.10.1.22:80"];
        assert!(
            slots.len() >= share && slots.len() < share * 3 / 2,
            "{}",
            slots.len()
        );
        let s = lb_script(&LbLoad {
            table_digest: "x".into(),
            digests: BTreeMap::from([(0, two.digest.clone())]),
            maps: vec![(0, MapLoad::Slots(two.clone(), slots.clone()))],
        });
        let del = s.lines().find(|l| l.starts_with("delete element")).unwrap();
        let add = s
            .lines()
            .find(|l| l.starts_with("add element ip stackfabric lb0"))
            .unwrap();
        assert!(!s.contains("flush map"), "{s}");
        assert_eq!(del.matches(", ").count() + 1, slots.len());
        assert_eq!(add.matches(" : ").count(), slots.len());
        assert!(!add.contains("10.10.1.22"), "no slot goes to the leaver");
        // Applying the rewrite to the old contents gives exactly the new contents.
        let parse = |elements: &str| -> BTreeMap<String, String> {
            elements
                .split(", ")
                .map(|e| {
                    let (k, v) = e.split_once(" : ").unwrap();
                    (k.into(), v.into())
                })
                .collect()
        };
        let mut map = parse(&all.elements);
        let rewritten = parse(add.split_once("{ ").unwrap().1.trim_end_matches(" }"));
        for (k, v) in rewritten {
            assert!(map.insert(k.clone(), v).is_some(), "slot {k} existed");
        }
        assert_eq!(map, parse(&two.elements));
        // Unknown or empty on either side: whole map.
        assert!(matches!(map_load(lb, None, two.clone()), MapLoad::Full(_)));
        let none = Arc::new(lb_table(lb, &|_| false));
        assert!(matches!(
            map_load(lb, Some(&all.digest), none.clone()),
            MapLoad::Full(_)
        ));
        assert!(matches!(
            map_load(lb, Some(&none.digest), all.clone()),
            MapLoad::Full(_)
        ));
        // No change in the slots (a zero-weight member is no member): nothing to write.
        let s = lb_script(&LbLoad {
            table_digest: "x".into(),
            digests: BTreeMap::from([(0, all.digest.clone())]),
            maps: vec![(0, MapLoad::Slots(all.clone(), Vec::new()))],
        });
        assert!(!s.contains("lb0 {"), "{s}");
        assert_eq!(
            format!("{:?}", MapLoad::Slots(two, slots.clone())),
            format!("{} of 251 slots", slots.len())
        );
    }

    #[test]
    fn member_masks_round_trip_and_stay_within_a_comment() {
        let members: Vec<bool> = (0..9).map(|i| i % 3 == 0).collect();
        let m = member_mask(&members).unwrap();
        assert_eq!(m, "049"); // 0, 3, 6 in the first two digits, 9 absent: 0b1_0100_1001
        for (i, &want) in members.iter().enumerate() {
            assert_eq!(mask_has(&m, i), want, "member {i}");
        }
        assert!(!mask_has(&m, 40));
        assert_eq!(member_mask(&[]).as_deref(), Some("0"));
        assert_eq!(
            member_mask(&vec![true; 4 * LB_MASK_MAX_DIGITS]).map(|m| m.len()),
            Some(96)
        );
        assert_eq!(member_mask(&vec![true; 4 * LB_MASK_MAX_DIGITS + 1]), None);
        // "sf:lb<i>=" + 16 + "-" + 96 stays within nft's 128-byte comments.
        assert!("sf:lb99=".len() + 16 + 1 + LB_MASK_MAX_DIGITS <= 128);
    }

    #[test]
    fn lb_script_rewrites_only_given_maps_and_lbsum_parses_back() {
        let r = lb_example();
        let t = Arc::new(lb_table(&r.load_balancers[0], &|_| true));
        let load = LbLoad {
            table_digest: digest_of(&render_nft(&r)).unwrap(),
            digests: BTreeMap::from([(0, t.digest.clone()), (1, "00ff".into())]),
            maps: vec![(0, MapLoad::Full(t.clone()))],
        };
        let s = lb_script(&load);
        assert!(s.starts_with("flush set ip stackfabric lbsum\nadd element ip stackfabric lbsum { 4294967295 comment \"sf:table="));
        assert!(s.contains("flush map ip stackfabric lb0\nadd element ip stackfabric lb0 { 0 : "));
        assert!(!s.contains("lb1 {"));
        let listing = format!(
            "table ip stackfabric {{\n\tset lbsum {{\n\t\ttype mark\n\t\telements = {{ 0x00000000 comment \"sf:lb0={}\", 0x00000001 comment \"sf:lb1=00ff\",\n\t\t\t     0xffffffff comment \"sf:table={}\" }}\n\t}}\n}}\n",
            t.digest, load.table_digest
        );
        let (td, maps) = parse_lbsum(&listing);
        assert_eq!(td.as_deref(), Some(load.table_digest.as_str()));
        assert_eq!(maps, load.digests);
        // Empty table: flushed, nothing added (nft rejects `{ }`).
        let empty = Arc::new(lb_table(&r.load_balancers[0], &|_| false));
        let s = lb_script(&LbLoad {
            table_digest: "x".into(),
            digests: BTreeMap::from([(0, empty.digest.clone())]),
            maps: vec![(0, MapLoad::Full(empty))],
        });
        assert!(
            s.contains("flush map ip stackfabric lb0\n")
                && !s.contains("add element ip stackfabric lb0")
        );
        assert_eq!(lb_script(&LbLoad::default()), "");
    }

    #[test]
    fn lb_validation_and_internal_vips() {
        let mut r = lb_example();
        assert!(validate(&r).is_empty(), "{:?}", validate(&r));
        let mut bad = r.load_balancers[0].clone();
        bad.name = "bad".into();
        bad.table_size = 65_536;
        r.load_balancers.push(bad);
        let mut dup = r.load_balancers[0].clone();
        dup.name = "dup".into();
        r.load_balancers.push(dup);
        let mut internal = r.load_balancers[0].clone();
        internal.name = "internal".into();
        internal.vip = "10.10.1.200".parse().unwrap();
        internal.public = false;
        r.load_balancers.push(internal);
        let e = validate(&r);
        assert_eq!(e.len(), 2, "{e:?}");
        let names: Vec<&str> = load_balancers(&r).iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["internal", "web"]);
        let t = render_nft(&r);
        assert!(t.contains("map @lb1") && !t.contains("map @lb2"));
        assert_eq!(
            tier_vips(
                &r,
                &"10.10.1.0/24".parse().unwrap(),
                "10.10.1.1".parse().unwrap()
            ),
            vec!["10.10.1.200/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(tier_vips(
            &r,
            &"10.10.2.0/24".parse().unwrap(),
            "10.10.2.1".parse().unwrap()
        )
        .is_empty());
    }

    #[test]
    fn direct_connects_are_never_natted_nor_transit() {
        let plain = render_nft(&example());
        let mut r = example();
        r.direct_connects
            .push(sf_core::desired::DirectConnectPeering {
                name: "hq".into(),
                vni: 1_000_100,
                local: "169.254.100.1/30".parse().unwrap(),
                peer: "169.254.100.2".parse().unwrap(),
                local_asn: 65010,
                peer_asn: 65100,
                accept: vec![],
                announce: vec![],
            });
        let t = render_nft(&r);
        // SNAT and static NAT only towards transit; hairpin not on the DC link.
        assert!(t.contains("\t\toifname \"transit\" ip saddr @inside counter snat ip to 203.0.113.10 comment \"snat 203.0.113.10\"\n"));
        assert!(t.contains("\t\toifname \"transit\" counter snat ip to ip saddr map @static_out comment \"static-nat out\"\n"));
        assert!(t.contains(
            "\t\toifname != \"transit\" oifname != \"d1000100\" ct status dnat ip saddr @inside counter masquerade comment \"hairpin\"\n"
        ));
        assert_eq!(t.matches("snat").count(), plain.matches("snat").count());
        // Forwarded both ways (policy accept), never from the DC to transit.
        assert!(t.contains("\t\tiifname { \"d1000100\" } oifname \"transit\" drop\n"));
        assert!(t.contains("policy accept;"));
        // The DC's segment is not inside the VPC.
        assert!(t.contains("\t\telements = { 10.10.0.0/16 }\n"));
        // A router without DC renders exactly as before (no reload on upgrade).
        assert!(!plain.contains("d1000100"));
        assert!(plain
            .contains("\t\toifname != \"transit\" ct status dnat ip saddr @inside counter masquerade comment \"hairpin\"\n"));
    }

    #[test]
    fn example_renders_maps_with_their_elements() {
        let r = example();
        let t = render_nft(&r);
        assert!(t.starts_with("table ip stackfabric {\n\tcomment \"sf:"));
        assert!(t.contains("\t\telements = { 203.0.113.11 . 8080 : 10.10.1.11 . 80 }\n"));
        assert!(t.contains("\t\telements = { 203.0.113.12 : 10.10.1.11 }\n"));
        assert!(t.contains("\t\telements = { 10.10.1.11 : 203.0.113.12 }\n"));
        assert!(
            t.contains("\t\telements = { 10.10.0.0/16 }\n"),
            "tier inside VPC CIDR is aggregated"
        );
        assert!(t.contains("\t\toifname \"transit\" ip saddr @inside counter snat ip to 203.0.113.10 comment \"snat 203.0.113.10\"\n"));
        assert!(t.contains("dnat ip to ip daddr . tcp dport map @pf_tcp"));
        assert!(t.contains("ct status dnat ip saddr @inside counter masquerade"));
        // pf_udp is empty: declared without an elements line (nft rejects `elements = { }`).
        let udp = t.split("map pf_udp {").nth(1).unwrap();
        let udp = &udp[..udp.find('}').unwrap()];
        assert!(!udp.contains("elements"));
        // Static NAT before SNAT in postrouting, so a VM with an Elastic IP leaves from it.
        assert!(t.find("@static_out").unwrap() < t.find("snat ip to 203.0.113.10").unwrap());
        assert_eq!(digest_of(&t), Some(digest(&body(&r))));
        println!("{}", transaction(&t));
    }

    #[test]
    fn rule_count_is_independent_of_nat_entries() {
        let mut r = example();
        let rules = |t: &str| {
            t.lines()
                .filter(|l| {
                    l.starts_with("\t\t")
                        && !l.contains("type ")
                        && !l.contains("elements")
                        && !l.contains("flags")
                })
                .count()
        };
        let base = rules(&render_nft(&r));
        for i in 0..200u16 {
            r.port_forwards.push(PortForward {
                protocol: if i % 2 == 0 {
                    L4Protocol::Tcp
                } else {
                    L4Protocol::Udp
                },
                public_ip: "203.0.113.11".parse().unwrap(),
                public_port: 10_000 + i,
                private_ip: Ipv4Addr::new(10, 10, 1, 20 + (i % 100) as u8),
                private_port: 22,
            });
            r.static_nats.push(StaticNat {
                public_ip: Ipv4Addr::new(203, 0, 114, i as u8),
                private_ip: Ipv4Addr::new(10, 10, 2, i as u8),
            });
        }
        let t = render_nft(&r);
        assert_eq!(rules(&t), base);
        assert_eq!(port_forward_map(&r, L4Protocol::Udp).len(), 100);
        assert!(t.contains("203.0.113.11 . 10001 : 10.10.1.21 . 22"));
        assert!(t.contains("203.0.114.5 : 10.10.2.5"));
    }

    #[test]
    fn no_snat_means_no_snat_rule_and_digest_tracks_content() {
        let mut r = example();
        let with = render_nft(&r);
        r.snat = None;
        let without = render_nft(&r);
        assert!(!without.contains("snat ip to 203"));
        assert_ne!(digest_of(&with), digest_of(&without));
        assert_eq!(render_nft(&r), without, "rendering is deterministic");
    }

    #[test]
    fn duplicates_are_reported_and_first_wins() {
        let mut r = example();
        let mut dup = r.port_forwards[0].clone();
        dup.private_ip = "10.10.1.99".parse().unwrap();
        r.port_forwards.push(dup);
        r.static_nats.push(StaticNat {
            public_ip: "203.0.113.12".parse().unwrap(),
            private_ip: "10.10.1.50".parse().unwrap(),
        });
        assert_eq!(validate(&r).len(), 2);
        let t = render_nft(&r);
        assert!(t.contains("203.0.113.11 . 8080 : 10.10.1.11 . 80"));
        assert!(!t.contains("10.10.1.99"));
        assert!(validate(&example()).is_empty());
    }

    fn db_acl() -> sf_core::desired::TierAcl {
        use sf_core::desired::{AclAction, AclProtocol, AclRule, TierAcl};
        let rule = |number, action, ports: Option<(u16, u16)>, cidrs: &[&str]| AclRule {
            number,
            action,
            protocol: AclProtocol::Tcp,
            ports,
            icmp_type: None,
            icmp_code: None,
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        };
        TierAcl {
            list: "db".into(),
            default_action: AclAction::Deny,
            ingress: vec![
                rule(5, AclAction::Deny, Some((80, 80)), &["198.51.100.66/32"]),
                rule(10, AclAction::Allow, Some((80, 80)), &["0.0.0.0/0"]),
            ],
            egress: vec![rule(10, AclAction::Allow, Some((443, 443)), &[])],
        }
    }

    /// The mark of the current rules.
    fn generation(t: &str) -> String {
        let l = t
            .lines()
            .find(|l| l.contains("ct state established,related ct mark"))
            .expect("marked fast path");
        l.split_whitespace().nth(5).unwrap().to_string()
    }

    /// Established flows are re-checked once when the rules change, so a rule that newly
    /// denies a flow cuts it: the fast path accepts only flows marked with the current rules'
    /// generation, and every flow passing the ACLs is re-marked.
    #[test]
    fn an_acl_change_rechecks_established_flows_once() {
        let mut r = example();
        r.tiers[0].acl = Some(db_acl());
        let t = render_nft(&r);
        let g = generation(&t);
        assert_ne!(g, "0x00000000");
        let fwd = &t[t.find("\tchain forward {").unwrap()..];
        let fast = fwd
            .find(&format!("ct state established,related ct mark {g} accept"))
            .unwrap();
        let replies = fwd
            .find("ct direction reply ct state established,related accept")
            .unwrap();
        let out = fwd.find("oifname \"transit\" ip saddr vmap").unwrap();
        let mark = fwd.find(&format!("ct mark set {g}")).unwrap();
        let keep = fwd
            .find("iifname \"transit\" ct status dnat accept")
            .unwrap();
        assert!(
            fast < replies && replies < out && out < mark && mark < keep,
            "{fwd}"
        );
        assert!(
            !fwd.contains("\t\tct state established,related accept\n"),
            "no unconditional fast path"
        );
        // A changed rule is a new generation; a NAT change is not.
        let mut denied = r.clone();
        denied.tiers[0].acl.as_mut().unwrap().ingress.remove(1);
        assert_ne!(generation(&render_nft(&denied)), g);
        let mut nat = r.clone();
        nat.snat = Some("203.0.113.99".parse().unwrap());
        assert_eq!(generation(&render_nft(&nat)), g);
    }

    #[test]
    fn tier_acls_filter_transit_traffic_after_dnat() {
        let mut r = example();
        let plain = render_nft(&r);
        assert!(!plain.contains("acl_") && !plain.contains("ct state invalid"));
        r.tiers[0].acl = Some(db_acl());
        let t = render_nft(&r);
        assert_ne!(digest_of(&t), digest_of(&plain));
        let fwd = &t[t.find("\tchain forward {").unwrap()..];
        let est = fwd.find("ct state established,related accept").unwrap();
        let inv = fwd.find("ct state invalid drop").unwrap();
        let into = fwd
            .find("iifname \"transit\" ct status dnat ip daddr vmap { 10.10.1.0/24 : jump acl_in_1000001 }")
            .unwrap();
        let out = fwd
            .find("oifname \"transit\" ip saddr vmap { 10.10.1.0/24 : jump acl_eg_1000001 }")
            .unwrap();
        let keep = fwd
            .find("iifname \"transit\" ct status dnat accept")
            .unwrap();
        let drop = fwd.find("iifname \"transit\" drop").unwrap();
        assert!(
            est < inv && inv < into && into < out && out < keep && keep < drop,
            "{fwd}"
        );
        // Rules in order, final verdicts, default last.
        let ins = &t[t.find("\tchain acl_in_1000001 {").unwrap()..];
        let ins = &ins[..ins.find("\n\t}").unwrap()];
        assert_eq!(
            ins.lines().skip(1).map(str::trim).collect::<Vec<_>>(),
            [
                "tcp dport 80 ip saddr 198.51.100.66 counter drop comment \"ingress 5\"",
                "tcp dport 80 counter accept comment \"ingress 10\"",
                "counter drop comment \"ingress default\"",
            ]
        );
        assert!(t.contains("\t\ttcp dport 443 counter accept comment \"egress 10\"\n\t\tcounter drop comment \"egress default\"\n"));
        assert!(validate(&r).is_empty());
        // A list of prefixes is a named set declared before the chains.
        r.tiers[0].acl.as_mut().unwrap().ingress[0].cidrs = vec![
            "198.51.100.66/32".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
        let t = render_nft(&r);
        let set = t
            .find("\tset acl_ins_1000001_0 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 192.0.2.0/24, 198.51.100.66 }\n\t}\n")
            .unwrap();
        assert!(set < t.find("\tchain ").unwrap());
        assert!(t.contains(
            "tcp dport 80 ip saddr @acl_ins_1000001_0 counter drop comment \"ingress 5\""
        ));
        // A second tier overlapping the first is not enforced (and reported).
        let mut bad = r.tiers[0].clone();
        bad.name = "dup".into();
        bad.vni = 1_000_009;
        bad.cidr = "10.10.1.128/25".parse().unwrap();
        r.tiers.push(bad);
        assert_eq!(tier_acls(&r).len(), 1);
        assert_eq!(validate(&r).len(), 1, "{:?}", validate(&r));
        assert!(!render_nft(&r).contains("acl_in_1000009"));
    }

    #[test]
    fn digest_parses_from_nft_listing() {
        let listing = "table ip stackfabric {\n\tcomment \"sf:0011223344556677\"\n\tset inside {\n";
        assert_eq!(digest_of(listing).as_deref(), Some("0011223344556677"));
        assert_eq!(digest_of("table ip stackfabric {\n}"), None);
    }
}
