//! East-west network ACLs and port pinning on a hypervisor: one nftables table
//! `bridge stackfabric`, owned by the agent, filtering the bridged traffic of VM ports on the
//! `brvx-<VNI>` bridges of the networks in scope. Every tier's ports are pinned to their
//! MAC and IPv4 address ([`crate::pin`]); the tiers whose ACL (or a peer tier's) applies get
//! the stateful ACL chains below. [`render`] is pure; [`apply`] observes the kernel cheaply
//! and changes it only when the rendering's digest differs.
//!
//! # Why no `ct state` here
//!
//! The bridge family has connection tracking only with `nf_conntrack_bridge`
//! (`CONFIG_NF_CONNTRACK_BRIDGE`); without it the kernel refuses any `ct` expression in a
//! bridge table ("Protocol error"), and the kernels this project targets in the lab lack it.
//! `br_netfilter` (handing bridged frames to the IPv4 hooks) would push every bridge of the
//! host through the host's own IP firewall, so it is not used. Instead the table keeps its
//! own flow state in dynamic sets, per tier (so overlapping tenant addresses in different
//! VNIs never share state), bounded like conntrack's table:
//!
//! - `orig_<vni>` / `reply_<vni>`: TCP/UDP 5-tuples (`saddr . daddr . proto . sport .
//!   dport`) of a flow's originator packets and of its replies; one entry each per flow.
//!   A new allowed flow inserts the reply's entry first, then the originator's, with a short
//!   timeout (30 s, conntrack's "unconfirmed"). A reply (for TCP, one that is not the
//!   SYN-ACK) confirms: both get the long timeout (TCP 1 day, UDP 3 min). Originator packets
//!   only look up (an unanswered flow expires). A FIN shrinks both entries to 10 s; a RST
//!   deletes both, so SYN/RST churn never accumulates.
//! - Full sets fail closed for new flows only: the insert is an `update` statement, which
//!   stops its rule when the set is full, so the rule's `accept` is skipped and the next
//!   rule drops ("flow table full"). Replies of admitted flows match existing entries,
//!   whose refresh never needs room, before any ACL stage.
//! - `pings_<vni>`: `saddr . daddr . icmp id` of the expected echo replies (30 s).
//! - ICMP errors (unreachable, time exceeded, parameter problem) pass as the "related" of
//!   conntrack (needed for path MTU discovery); non-first IPv4 fragments pass (their first
//!   fragment, which carries the ports, was filtered); DHCP (udp 67/68) passes.
//! - Router advertisements, redirects and DHCPv6 server messages from any VM tap of a tier
//!   in scope are dropped in `forward` before any dispatch (RA guard): only the VPC router,
//!   behind `vxlan<VNI>`, may send them.
//! - IPv6: neighbour/router discovery and MLD always pass (as ARP does); other IPv6 and any
//!   other ethertype get the tier's default action: the model's ACL rules are IPv4-only, so
//!   with a default deny no IPv6 flow is ever admitted (and none needs state).
//!
//! Per packet an established flow costs a port lookup (vmap), the pin lookups, one or two
//! hash lookups and a timeout refresh, whatever the size of the ACLs. On a kernel with
//! `nf_conntrack_bridge` the same layout works with `ct state established,related accept`
//! in place of the set lookups. An ACL change that denies established flows cuts them
//! ([`crate::cut`]).
//!
//! # Layout
//!
//! ```text
//! table bridge stackfabric {
//!   set sfmeta    { type mark }   # 0xffffffff "sf:digest=<d>", <vni> "sf:c=…;s=…" (what exists)
//!   set orig_V / reply_V / pings_V # per local tier with ACL involvement
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname/oifname { stray taps } drop          # the tier has ports, none has its MAC
//!     iifname/oifname "vnet*" != { known } drop    # plugged since the last pass: fail closed
//!     iifname { VM taps } RA, redirect, DHCPv6 server drop   # RA guard
//!     iifname vmap { "vnet0" : jump pin, … }      # pinned ports: MAC, IPv4, ARP, IPv6
//!     iifname vmap { "vnet0" : goto from_V, … }   # frames leaving a local VM of tier V
//!     oifname vmap { "vnet0" : goto to_V, … } }   # frames to a local VM from elsewhere
//!   chain pin    { see crate::pin }
//!   chain pin6   { IPv6 sources and ND targets of the dual-stack tiers' ports }
//!   chain from_V { ARP/ND accept; other non-IPv4: default; RST/FIN/confirm/established;
//!                  jump eg_V;
//!                  ip daddr <V cidr> (not the gateway) jump in_V;   # same tier: drop at source
//!                  ip daddr vmap { <U cidr> : jump in_U, … };       # peer tiers of the VPC
//!                  goto new_V }
//!   chain to_V   { same head; jump in_V; goto new_V }
//!   chain new_V  { remember both directions or drop when full; accept }
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
//! across any ACL change that still allows them, and packets see either the old or the new
//! ruleset. The digest of the rendering sits in `sfmeta`, whose listing is instant however
//! many rules the table holds. The table is deleted only when no network is in scope.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use std::net::Ipv6Addr;

use sf_core::desired::{AclAction, L2Network, L2Network6, TierAcl};
use sf_linux::acl::{render_chain, Direction, Verdicts};
use sf_linux::l2::vxlan_name;
use sf_linux::links::Link;
use sha2::{Digest, Sha256};

use crate::acl6;
use crate::pin::{self, quote, render_pin, Space, Tap, TapFate, TierTaps};

pub const TABLE: &str = "stackfabric";
pub const META_SET: &str = "sfmeta";
const FORWARD_HOOK: &str = "type filter hook forward priority filter; policy accept;";
const DIGEST_KEY: u32 = u32::MAX;
const DIGEST_TAG: &str = "sf:digest=";
/// Capacity of one tier's flow sets (`orig_V` and `reply_V` each; one entry per flow).
pub const FLOWS_SIZE: u32 = 262_144;
/// Timeouts in the spirit of conntrack's: short until a reply confirms the flow, long
/// once confirmed, short again once a FIN or RST is seen (so churn frees the set).
pub const TCP_NEW_TIMEOUT: &str = "30s";
pub const TCP_TIMEOUT: &str = "1d";
/// After a FIN (a RST deletes the flow's entries at once).
pub const TCP_CLOSE: &str = "10s";
pub const UDP_NEW_TIMEOUT: &str = "30s";
pub const UDP_TIMEOUT: &str = "3m";
/// ICMPv6 that IPv6 cannot work without (neighbour discovery, router discovery, MLD):
/// always passes, like ARP.
const ND_TYPES: &str = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report";
pub const PING_TIMEOUT: &str = "30s";

/// What the table holds for one VNI: chain and set kinds (names are `<kind>_<vni>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VniObjects {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    /// Number of prefix-list sets of the ACL chains (`ins_<vni>_<n>`, `egs_<vni>_<n>`).
    pub in_sets: usize,
    pub eg_sets: usize,
    /// The same for the IPv6 chains of a dual-stack tier (`ins6_<vni>_<n>`, `egs6_<vni>_<n>`).
    pub in6_sets: usize,
    pub eg6_sets: usize,
}

impl VniObjects {
    fn comment(&self) -> String {
        let j = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("+");
        let mut c = format!(
            "sf:c={};s={};n={}+{}",
            j(&self.chains),
            j(&self.sets),
            self.in_sets,
            self.eg_sets
        );
        // Only when present, so IPv4-only tiers keep the comment older agents wrote.
        if self.in6_sets + self.eg6_sets > 0 {
            let _ = write!(c, "+{}+{}", self.in6_sets, self.eg6_sets);
        }
        c
    }
    fn parse(comment: &str) -> Option<VniObjects> {
        let rest = comment.strip_prefix("sf:c=")?;
        let (c, rest) = rest.split_once(";s=")?;
        let (s, n) = rest.split_once(";n=").unwrap_or((rest, "0+0"));
        let mut counts = n.split('+').map(str::parse::<usize>);
        let mut next = || counts.next().unwrap_or(Ok(0)).ok();
        let (i, e, i6, e6) = (next()?, next()?, next()?, next()?);
        let split = |x: &str| -> BTreeSet<String> {
            x.split('+')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        };
        Some(VniObjects {
            chains: split(c),
            sets: split(s),
            in_sets: i,
            eg_sets: e,
            in6_sets: i6,
            eg6_sets: e6,
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
    /// No network in scope: the table should not exist.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Every bridge port of the host except the `vxlan<VNI>` of `brvx-<VNI>`, sorted by name:
/// the VM taps of the tiers and the ports of bridges the agent does not manage.
pub fn bridge_taps<'a>(links: impl IntoIterator<Item = &'a Link>) -> Vec<Tap> {
    let mut v: Vec<Tap> = links
        .into_iter()
        .filter_map(|l| {
            let master = l.master.as_deref()?;
            let vni = master.strip_prefix("brvx-").and_then(|v| v.parse().ok());
            if vni.is_some_and(|v| l.name == vxlan_name(v)) {
                return None;
            }
            Some(Tap {
                name: l.name.clone(),
                mac: l.mac.as_deref().map(str::to_ascii_lowercase),
                bridge: master.to_string(),
            })
        })
        .collect();
    v.sort();
    v
}

pub(crate) fn involved(n: &L2Network) -> bool {
    n.acl.is_some() || n.peer_tiers.iter().any(|p| p.acl.is_some())
}

/// The 5-tuple of a packet as sent, and as its reply would be sent.
const FLOW: &str = "ip saddr . ip daddr . meta l4proto . th sport . th dport";
const REV: &str = "ip daddr . ip saddr . meta l4proto . th dport . th sport";

/// Renders the table for the networks in scope (with the IPv6 sides of the dual-stack ones)
/// and the observed bridge ports.
pub fn render(networks: &[&L2Network], nets6: &[&L2Network6], taps: &[Tap]) -> Ruleset {
    let mut rs = Ruleset::default();
    if networks.is_empty() {
        return rs;
    }
    let fates = tap_fates(networks, taps);
    let local: Vec<&L2Network> = networks.iter().copied().filter(|n| involved(n)).collect();
    let ingress = ingress_acls(&local, &mut rs.errors);
    for n in &local {
        let o = rs.objects.entry(n.vni).or_default();
        for c in ["from", "to", "new"] {
            o.chains.insert(c.into());
        }
        for s in ["orig", "reply", "pings"] {
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
    let (mut acl_sets, mut acl_chains) = acl_chains(&local, &ingress, &mut rs.objects);
    // The dual-stack tiers among them, with their IPv6 sides.
    let dual: Vec<(&L2Network, &L2Network6)> = local
        .iter()
        .filter_map(|n| Some((*n, *nets6.iter().find(|n6| n6.vni == n.vni)?)))
        .collect();
    for (n, _) in &dual {
        let o = rs.objects.entry(n.vni).or_default();
        acl6::objects6(n, o);
        acl6::acl_chains6(n, o, &mut acl_sets, &mut acl_chains);
    }

    let mut b = String::new();
    let _ = writeln!(b, "table bridge {TABLE} {{");
    let _ = writeln!(b, "\tset {META_SET} {{\n\t\ttype mark\n\t}}");
    for n in &local {
        flow_sets(&mut b, n.vni);
    }
    for (n, _) in &dual {
        acl6::flow_sets6(&mut b, n.vni);
    }
    b.push_str(&acl_sets);
    forward_chain(&mut b, taps, &fates, &local);
    let pinned: Vec<(String, String, std::net::Ipv4Addr)> = fates
        .values()
        .flat_map(|t| t.iter())
        .filter_map(|(name, f)| match f {
            TapFate::Pinned { mac, ips } => {
                Some(ips.iter().map(|ip| (name.clone(), mac.clone(), *ip)))
            }
            _ => None,
        })
        .flatten()
        .collect();
    let v6 = pinned6(nets6, &fates);
    let spaces6 = spaces6(nets6, &fates);
    if let Some(c) = render_pin(&pinned, &spaces(networks, &fates), &v6, &spaces6) {
        b.push_str(&c);
    }
    for n in &local {
        let v6 = dual.iter().any(|(d, _)| d.vni == n.vni);
        tier_chains(&mut b, n, v6, &mut rs.errors);
    }
    for (n, n6) in &dual {
        acl6::tier_chains6(&mut b, n, n6);
    }
    b.push_str(&acl_chains);
    let _ = writeln!(b, "}}");
    rs.digest = hex::encode(&Sha256::digest(b.as_bytes())[..12]);
    rs.body = b;
    rs
}

/// Per ACL tier: a digest of what judges its flows (its ACL, addresses and peer tiers with
/// their ACLs). A tier whose digest changed has its established flows re-judged
/// ([`crate::cut`]).
pub fn tier_acl_digests(networks: &[&L2Network]) -> BTreeMap<u32, String> {
    networks
        .iter()
        .filter(|n| involved(n))
        .map(|n| {
            let what = format!("{:?} {} {} {:?}", n.acl, n.cidr, n.gateway, n.peer_tiers);
            (n.vni, hex::encode(&Sha256::digest(what.as_bytes())[..12]))
        })
        .collect()
}

/// The pinned taps of the dual-stack tiers and the IPv6 addresses each may use: its MAC's
/// link-local and SLAAC address and the `ipv6` of every port with its MAC (secondary
/// addresses are ports too, as in IPv4).
fn pinned6(nets6: &[&L2Network6], fates: &BTreeMap<u32, TierTaps>) -> Vec<(String, Vec<Ipv6Addr>)> {
    let mut out = Vec::new();
    for n6 in nets6 {
        for (tap, fate) in fates.get(&n6.vni).into_iter().flatten() {
            let TapFate::Pinned { mac, .. } = fate else {
                continue;
            };
            let mut addrs: Vec<Ipv6Addr> = pin::mac_link_local(mac).into_iter().collect();
            addrs.extend(pin::mac_slaac(n6.prefix, mac));
            addrs.extend(
                n6.ports
                    .iter()
                    .filter(|p| p.mac.as_deref().and_then(pin::canonical_mac).as_ref() == Some(mac))
                    .map(|p| p.ipv6),
            );
            addrs.sort();
            addrs.dedup();
            out.push((tap.clone(), addrs));
        }
    }
    out.sort();
    out
}

/// Per dual-stack tier: its pinned taps and its VPC's dual-stack tiers' /64s.
fn spaces6(nets6: &[&L2Network6], fates: &BTreeMap<u32, TierTaps>) -> Vec<pin::Space6> {
    nets6
        .iter()
        .map(|n6| pin::Space6 {
            taps: fates
                .get(&n6.vni)
                .into_iter()
                .flatten()
                .filter(|(_, f)| matches!(f, TapFate::Pinned { .. }))
                .map(|(t, _)| t.clone())
                .collect(),
            // Its own /64 is one of them; named too should the list be absent.
            ranges: n6.vpc_tiers.iter().copied().chain([n6.prefix]).collect(),
        })
        .collect()
}

/// Per tier: its pinned taps and the CIDRs of its VPC's tiers.
fn spaces(networks: &[&L2Network], fates: &BTreeMap<u32, TierTaps>) -> Vec<Space> {
    networks
        .iter()
        .map(|n| {
            let taps = fates.get(&n.vni).into_iter().flatten();
            let mut cidrs: Vec<String> = std::iter::once(n.cidr)
                .chain(n.peer_tiers.iter().map(|p| p.cidr))
                .map(|c| c.trunc().to_string())
                .collect();
            cidrs.sort();
            cidrs.dedup();
            Space {
                taps: taps
                    .filter(|(_, f)| matches!(f, TapFate::Pinned { .. }))
                    .map(|(t, _)| t.clone())
                    .collect(),
                cidrs,
            }
        })
        .collect()
}

/// The fate of every tap of every tier in scope, by VNI.
fn tap_fates(networks: &[&L2Network], taps: &[Tap]) -> BTreeMap<u32, TierTaps> {
    networks
        .iter()
        .map(|n| {
            let br = format!("brvx-{}", n.vni);
            let mine: Vec<&Tap> = taps.iter().filter(|t| t.bridge == br).collect();
            (n.vni, pin::plan(n, &mine))
        })
        .collect()
}

/// Every ACL whose ingress chain is needed: local tiers first (authoritative), then peers.
pub(crate) fn ingress_acls<'a>(
    local: &[&'a L2Network],
    errors: &mut Vec<String>,
) -> BTreeMap<u32, &'a TierAcl> {
    let mut ingress: BTreeMap<u32, &TierAcl> = BTreeMap::new();
    for n in local {
        if let Some(a) = &n.acl {
            ingress.insert(n.vni, a);
        }
    }
    for n in local {
        for p in &n.peer_tiers {
            if let Some(a) = &p.acl {
                match ingress.get(&p.vni) {
                    None => {
                        ingress.insert(p.vni, a);
                    }
                    Some(have) if *have != a => errors.push(format!(
                        "net {}: peer tier {} ACL differs from another view of it (first kept)",
                        n.vni, p.vni
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    ingress
}

/// The ACL stages (`eg_V`, `in_V`) and their prefix-list sets, which must precede every
/// chain of the table.
fn acl_chains(
    local: &[&L2Network],
    ingress: &BTreeMap<u32, &TierAcl>,
    objects: &mut BTreeMap<u32, VniObjects>,
) -> (String, String) {
    let mut acl_sets = String::new();
    let mut chains = String::new();
    for n in local {
        if let Some(a) = &n.acl {
            let v = n.vni;
            let c = render_chain(a, Direction::Egress, Verdicts::STAGE, &format!("egs_{v}_"));
            acl_sets.push_str(&c.sets);
            let _ = write!(chains, "\tchain eg_{v} {{\n{}\t}}\n", c.rules);
            objects.entry(v).or_default().eg_sets = c.set_count;
        }
    }
    for (vni, a) in ingress {
        let c = render_chain(
            a,
            Direction::Ingress,
            Verdicts::STAGE,
            &format!("ins_{vni}_"),
        );
        acl_sets.push_str(&c.sets);
        let _ = write!(chains, "\tchain in_{vni} {{\n{}\t}}\n", c.rules);
        objects.entry(*vni).or_default().in_sets = c.set_count;
    }
    (acl_sets, chains)
}

/// The flow state of one tier: `orig_V` holds the 5-tuples of the originators' packets,
/// `reply_V` those their replies will carry; `pings_V` the expected echo replies.
fn flow_sets(b: &mut String, v: u32) {
    for s in ["orig", "reply"] {
        let _ = writeln!(
            b,
            "\tset {s}_{v} {{\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service\n\t\tsize {FLOWS_SIZE}\n\t\tflags dynamic,timeout\n\t}}"
        );
    }
    let _ = writeln!(
        b,
        "\tset pings_{v} {{\n\t\ttypeof ip saddr . ip daddr . icmp id\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t}}",
        FLOWS_SIZE / 4
    );
}

/// The hook: unknown and stray taps dropped (fail closed), pinned taps through `pin`, the
/// taps of ACL tiers dispatched to their tier's chains.
fn forward_chain(
    b: &mut String,
    taps: &[Tap],
    fates: &BTreeMap<u32, TierTaps>,
    local: &[&L2Network],
) {
    let fate = |name: &str| fates.values().find_map(|t| t.get(name));
    let stray: Vec<String> = taps
        .iter()
        .filter(|t| fate(&t.name) == Some(&TapFate::Stray))
        .map(|t| quote(&t.name))
        .collect();
    let known: Vec<String> = taps
        .iter()
        .filter(|t| fate(&t.name) != Some(&TapFate::Stray))
        .map(|t| quote(&t.name))
        .collect();
    let _ = writeln!(b, "\tchain forward {{");
    let _ = writeln!(b, "\t\t{FORWARD_HOOK}");
    for dir in ["iifname", "oifname"] {
        if !stray.is_empty() {
            let _ = writeln!(
                b,
                "\t\t{dir} {{ {} }} counter drop comment \"no port has this tap's MAC\"",
                stray.join(", ")
            );
        }
        let not_known = if known.is_empty() {
            String::new()
        } else {
            format!(" {dir} != {{ {} }}", known.join(", "))
        };
        let _ = writeln!(
            b,
            "\t\t{dir} \"vnet*\"{not_known} counter drop comment \"port not dispatched yet\""
        );
    }
    ra_guard(b, fates);
    let pin: Vec<String> = fates
        .values()
        .flat_map(|t| t.iter())
        .filter(|(_, f)| matches!(f, TapFate::Pinned { .. }))
        .map(|(name, _)| format!("{} : jump pin", quote(name)))
        .collect();
    if !pin.is_empty() {
        let _ = writeln!(b, "\t\tiifname vmap {{ {} }}", pin.join(", "));
    }
    let mut from = Vec::new();
    let mut to = Vec::new();
    for n in local {
        for (name, f) in fates.get(&n.vni).into_iter().flatten() {
            if *f != TapFate::Stray {
                from.push(format!("{} : goto from_{}", quote(name), n.vni));
                to.push(format!("{} : goto to_{}", quote(name), n.vni));
            }
        }
    }
    if !from.is_empty() {
        let _ = writeln!(b, "\t\tiifname vmap {{ {} }}", from.join(", "));
        let _ = writeln!(b, "\t\toifname vmap {{ {} }}", to.join(", "));
    }
    let _ = writeln!(b, "\t}}");
}

/// RA guard (RFC 6105) on every VM tap of every tier, pinned or not: router advertisements
/// and redirects come only from the VPC router, over VXLAN, and so do DHCPv6 server
/// messages; a VM sending them could become its neighbours' default router. (Linux ignores
/// fragmented ND messages, RFC 6980, so an RA hidden behind fragmentation is no way round.)
fn ra_guard(b: &mut String, fates: &BTreeMap<u32, TierTaps>) {
    let taps: BTreeSet<String> = fates
        .values()
        .flat_map(|t| t.iter())
        .filter(|(_, f)| **f != TapFate::Stray)
        .map(|(name, _)| quote(name))
        .collect();
    if taps.is_empty() {
        return;
    }
    let taps = taps.into_iter().collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        b,
        "\t\tiifname {{ {taps} }} ether type ip6 icmpv6 type {{ nd-router-advert, nd-redirect }} counter drop comment \"RA guard\""
    );
    let _ = writeln!(
        b,
        "\t\tiifname {{ {taps} }} ether type ip6 udp sport 547 udp dport 546 counter drop comment \"DHCPv6 server on a VM port\""
    );
}

/// What every tier chain does before the ACL stages: drop tagged frames, pass ARP (pinned
/// at the port) and IPv6 neighbour discovery, give other non-IPv4 traffic `other` (the
/// tier's default: the model's ACL rules are IPv4-only), then let known flows pass.
fn common(b: &mut String, v: u32, other: &str, v6_chain: Option<&str>) {
    let mut r = |s: String| {
        let _ = writeln!(b, "\t\t{s}");
    };
    r(
        "ether type { 8021q, 8021ad } counter drop comment \"tagged frames would bypass the ACL\""
            .into(),
    );
    r("ether type arp accept".into());
    r(format!(
        "ether type ip6 meta l4proto ipv6-icmp icmpv6 type {{ {ND_TYPES} }} accept"
    ));
    if let Some(c) = v6_chain {
        // A dual-stack tier: IPv6 has chains of its own (crate::acl6).
        r(format!("ether type ip6 goto {c}_{v}"));
    }
    r(format!("ether type != ip {other}"));
    // A reset ends the flow: both entries go at once, so SYN/RST churn never fills the
    // sets. A FIN shrinks both to a short timeout (the last ACKs still pass).
    for (set, other_set) in [("reply", "orig"), ("orig", "reply")] {
        r(format!(
            "tcp flags & rst != 0 {FLOW} @{set}_{v} delete @{set}_{v} {{ {FLOW} }} delete @{other_set}_{v} {{ {REV} }} accept"
        ));
        r(format!(
            "tcp flags & fin != 0 {FLOW} @{set}_{v} update @{set}_{v} {{ {FLOW} timeout {TCP_CLOSE} }} update @{other_set}_{v} {{ {REV} timeout {TCP_CLOSE} }} accept"
        ));
    }
    // A reply confirms the flow: both entries get the established timeout (TCP: not on the
    // SYN-ACK, like conntrack, so a handshake whose last packet is lost does not hold
    // entries for a day). An update of an existing entry never fails, full set or not.
    for (p, t) in [
        ("tcp tcp flags & syn == 0", TCP_TIMEOUT),
        ("udp", UDP_TIMEOUT),
    ] {
        r(format!(
            "meta l4proto {p} {FLOW} @reply_{v} update @reply_{v} {{ {FLOW} timeout {t} }} update @orig_{v} {{ {REV} timeout {t} }} accept"
        ));
    }
    // Originator packets do not refresh: an unanswered flow expires as unconfirmed.
    for s in ["reply", "orig"] {
        r(format!(
            "meta l4proto {{ tcp, udp }} {FLOW} @{s}_{v} accept"
        ));
    }
    r(format!(
        "icmp type echo-reply ip saddr . ip daddr . icmp id @pings_{v} accept"
    ));
    r("icmp type { destination-unreachable, time-exceeded, parameter-problem } accept".into());
    r("ip frag-off & 0x1fff != 0 accept".into());
    r("udp sport 68 udp dport 67 accept".into());
    r("udp sport 67 udp dport 68 accept".into());
}

/// The verdict for non-IPv4 traffic of a tier with this ACL (None: no ACL of its own).
fn other_verdict(acl: Option<&TierAcl>) -> String {
    match acl.map(|a| &a.default_action) {
        Some(AclAction::Deny) => "counter drop comment \"non-IPv4 default\"".into(),
        _ => "accept".into(),
    }
}

/// `from_V` (leaving a local VM), `to_V` (to a local VM from elsewhere) and `new_V`.
fn tier_chains(b: &mut String, n: &L2Network, v6: bool, errors: &mut Vec<String>) {
    let v = n.vni;
    let other = other_verdict(n.acl.as_ref());
    let _ = writeln!(b, "\tchain from_{v} {{");
    common(b, v, &other, v6.then_some("from6"));
    if n.acl.is_some() {
        let _ = writeln!(b, "\t\tjump eg_{v}");
        let _ = writeln!(
            b,
            "\t\tip daddr {} ip daddr != {} jump in_{v}",
            n.cidr.trunc(),
            n.gateway
        );
    }
    let peers = peer_dispatch(n, errors);
    if !peers.is_empty() {
        let items: Vec<String> = peers
            .iter()
            .map(|(c, u)| format!("{c} : jump in_{u}"))
            .collect();
        let _ = writeln!(b, "\t\tip daddr vmap {{ {} }}", items.join(", "));
    }
    let _ = writeln!(b, "\t\tgoto new_{v}");
    let _ = writeln!(b, "\t}}");
    let _ = writeln!(b, "\tchain to_{v} {{");
    common(b, v, &other, v6.then_some("to6"));
    if n.acl.is_some() {
        let _ = writeln!(b, "\t\tjump in_{v}");
    }
    let _ = writeln!(b, "\t\tgoto new_{v}");
    let _ = writeln!(b, "\t}}");
    new_chain(b, v);
}

/// An allowed new flow: the reply's entry first (so that a flow is never admitted without
/// its replies), then the originator's, both with the unconfirmed timeout. When the set is
/// full the update fails, the rule stops, and the flow is dropped: full fails closed for
/// new flows, never for the replies of admitted ones.
fn new_chain(b: &mut String, v: u32) {
    let _ = writeln!(b, "\tchain new_{v} {{");
    // A reset opens nothing (conntrack calls it invalid); pass it unrecorded.
    let mut lines = vec!["tcp flags rst accept".to_string()];
    for (p, t) in [("tcp", TCP_NEW_TIMEOUT), ("udp", UDP_NEW_TIMEOUT)] {
        lines.push(format!(
            "meta l4proto {p} update @reply_{v} {{ {REV} timeout {t} }} update @orig_{v} {{ {FLOW} timeout {t} }} counter accept comment \"new flow\""
        ));
    }
    lines.push("meta l4proto { tcp, udp } counter drop comment \"flow table full\"".into());
    lines.push(format!(
        "icmp type echo-request update @pings_{v} {{ ip daddr . ip saddr . icmp id timeout {PING_TIMEOUT} }} accept"
    ));
    lines.push("icmp type echo-request counter drop comment \"flow table full\"".into());
    lines.push("accept".into());
    for l in lines {
        let _ = writeln!(b, "\t\t{l}");
    }
    let _ = writeln!(b, "\t}}");
}

/// Peer tiers with an ACL whose ingress is applied at the source, by CIDR (overlaps
/// reported and skipped).
fn peer_dispatch(n: &L2Network, errors: &mut Vec<String>) -> Vec<(String, u32)> {
    let v = n.vni;
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
            errors.push(format!(
                "net {v}: peer tier {} cidr {} overlaps another tier (its ACL is not applied at the source)",
                p.vni, p.cidr
            ));
            continue;
        }
        seen.push(c);
        peers.push((p.cidr.trunc().to_string(), p.vni));
    }
    peers.sort();
    peers
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
        "add table bridge {TABLE}\nadd chain bridge {TABLE} forward {{ {FORWARD_HOOK} }}\nflush table bridge {TABLE}\ndelete chain bridge {TABLE} forward\nadd chain bridge {TABLE} pin\ndelete chain bridge {TABLE} pin\nadd chain bridge {TABLE} pin6\ndelete chain bridge {TABLE} pin6\n"
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
        for n in 0..o.in6_sets {
            let _ = writeln!(s, "delete set bridge {TABLE} ins6_{vni}_{n}");
        }
        for n in 0..o.eg6_sets {
            let _ = writeln!(s, "delete set bridge {TABLE} egs6_{vni}_{n}");
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
pub(crate) mod tests {
    use super::*;
    use sf_core::desired::{AclProtocol, AclRule, LocalPort, PeerTier};

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

    fn tap(name: &str, vni: u32, mac: &str) -> Tap {
        Tap {
            name: name.into(),
            mac: Some(mac.into()),
            bridge: format!("brvx-{vni}"),
        }
    }

    fn port(name: &str, ip: &str, mac: &str) -> LocalPort {
        LocalPort {
            name: name.into(),
            ip: ip.parse().unwrap(),
            mac: Some(mac.into()),
            attach: None,
        }
    }

    /// web (1000001, no ACL) and db (1000002, ACL) on one hypervisor, each tier knowing the
    /// other as a peer; plus an unrelated network without ACLs. The tiers' taps follow
    /// libvirt's MAC convention; web has no port records (CloudStack-managed NICs).
    fn example() -> (Vec<L2Network>, Vec<Tap>) {
        let mut web = net(1_000_001, "web", 1, None);
        let mut db = net(1_000_002, "db", 2, Some(db_acl()));
        db.ports = vec![
            port("db-1", "10.10.2.11", "52:54:00:00:02:11"),
            port("db-2", "10.10.2.12", "52:54:00:00:02:12"),
        ];
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
        let taps = vec![
            tap("vnet0", 1_000_001, "fe:54:00:00:01:11"),
            tap("vnet1", 1_000_002, "fe:54:00:00:02:11"),
            tap("vnet2", 1_000_002, "fe:54:00:00:02:12"),
            tap("vnet3", 2_000_000, "fe:54:00:00:09:11"),
        ];
        (vec![web, db, other], taps)
    }

    #[test]
    fn renders_dispatch_stages_and_state() {
        let (nets, ports) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &ports);
        let b = &rs.body;
        assert!(rs.errors.is_empty(), "{:?}", rs.errors);
        // Only ACL-involved tiers are dispatched; the unrelated network is untouched.
        assert!(b.contains("iifname vmap { \"vnet0\" : goto from_1000001, \"vnet1\" : goto from_1000002, \"vnet2\" : goto from_1000002 }"), "{b}");
        assert!(b.contains("oifname vmap { \"vnet0\" : goto to_1000001, "));
        assert!(!b.contains("goto from_2000000") && !b.contains("chain from_2000000"));
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
            .find("@reply_1000002 update @reply_1000002")
            .unwrap();
        let other = from_db
            .find("ether type != ip counter drop comment \"non-IPv4 default\"")
            .unwrap();
        assert!(other < est && est < eg);
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
        assert!(new.contains("meta l4proto tcp update @reply_1000002 { ip daddr . ip saddr . meta l4proto . th dport . th sport timeout 30s } update @orig_1000002 { ip saddr . ip daddr . meta l4proto . th sport . th dport timeout 30s } counter accept"));
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
        let a = render(&refs, &[], &ports);
        assert_eq!(render(&refs, &[], &ports), a, "deterministic");
        let mut p2 = ports.clone();
        p2.push(tap("vnet9", 1_000_002, "fe:54:00:00:02:99"));
        assert_ne!(
            render(&refs, &[], &p2).digest,
            a.digest,
            "a new VM port changes it"
        );
        for n in &mut nets {
            n.acl = None;
            n.peer_tiers.clear();
        }
        let refs: Vec<&L2Network> = nets.iter().collect();
        // Without ACLs the table still pins the ports (anti-spoofing), with no tier chains.
        let plain = render(&refs, &[], &ports);
        assert!(!plain.is_empty() && plain.objects.is_empty());
        assert!(plain.body.contains("chain pin {") && !plain.body.contains("chain from_"));
        assert!(
            render(&[], &[], &ports).is_empty(),
            "no network in scope: no table"
        );
    }

    #[test]
    fn update_keeps_flow_sets_and_meta_round_trips() {
        let (nets, ports) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &ports);
        let fresh = update_script(&BTreeMap::new(), &rs);
        assert!(fresh.starts_with("add table bridge stackfabric\nadd chain bridge stackfabric forward { type filter hook forward priority filter; policy accept; }\nflush table bridge stackfabric\ndelete chain bridge stackfabric forward\nadd chain bridge stackfabric pin\ndelete chain bridge stackfabric pin\nadd chain bridge stackfabric pin6\ndelete chain bridge stackfabric pin6\ntable bridge"), "{fresh}");
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
        let rs2 = render(&web_only, &[], &ports);
        let s = update_script(&objects, &rs2);
        assert!(s.contains("delete chain bridge stackfabric from_1000002\n"));
        assert!(s.contains("delete chain bridge stackfabric in_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric orig_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric reply_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric egs_1000002_0\n"));
        assert!(!s.contains("egs_1000002_1"));
        assert!(!s.contains("delete set bridge stackfabric orig_1000001"));
        // Sets are deleted after the flush (no rule refers to them any more).
        assert!(s.find("flush table").unwrap() < s.find("delete set").unwrap());
        assert!(full_script(&rs2)
            .starts_with("table bridge stackfabric\ndelete table bridge stackfabric\n"));
    }

    #[test]
    fn forward_pins_ports_and_fails_closed_for_unknown_taps() {
        let (nets, mut taps) = example();
        // A tap of db whose MAC is no port's, and a tap of a bridge the agent does not manage.
        taps.push(tap("vnet7", 1_000_002, "fe:54:00:00:02:77"));
        taps.push(Tap {
            name: "vnet8".into(),
            mac: None,
            bridge: "cloudbr0".into(),
        });
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &taps);
        let fwd = section(&rs.body, "chain forward {");
        let stray = fwd
            .find("iifname { \"vnet7\" } counter drop comment \"no port has this tap's MAC\"")
            .unwrap();
        let unknown = fwd
            .find("iifname \"vnet*\" iifname != { \"vnet0\", \"vnet1\", \"vnet2\", \"vnet3\", \"vnet8\" } counter drop comment \"port not dispatched yet\"")
            .unwrap();
        assert!(fwd.contains("oifname { \"vnet7\" } counter drop"));
        assert!(fwd.contains("oifname \"vnet*\" oifname != { \"vnet0\", "));
        // Pinned: db's two ports and the unrelated network's none (it has no ports: web and
        // other are CloudStack-managed, nothing to pin with).
        let pin = fwd
            .find("iifname vmap { \"vnet1\" : jump pin, \"vnet2\" : jump pin }")
            .unwrap();
        let from = fwd
            .find("iifname vmap { \"vnet0\" : goto from_1000001")
            .unwrap();
        assert!(stray < unknown && unknown < pin && pin < from);
        assert!(!fwd.contains("\"vnet7\" : goto"));
        let pc = section(&rs.body, "chain pin {");
        assert!(pc.contains("{ \"vnet1\" . 52:54:00:00:02:11, \"vnet2\" . 52:54:00:00:02:12 }"));
        assert!(pc.contains("{ \"vnet1\" . 10.10.2.11, \"vnet2\" . 10.10.2.12 }"));
        // Sources outside the VPC's tiers pass (static-route next hops); inside, only its own.
        assert!(pc.contains(
            "iifname { \"vnet1\", \"vnet2\" } ip saddr != { 10.10.1.0/24, 10.10.2.0/24 } return"
        ));
        // No tap at all: every vnet is unknown.
        let rs = render(&refs, &[], &[]);
        assert!(rs.body.contains("\t\tiifname \"vnet*\" counter drop"));
        assert!(!rs.body.contains("chain pin"));
    }

    #[test]
    fn state_is_bounded_and_full_fails_closed_for_new_flows_only() {
        let (nets, taps) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &taps);
        let to_db = section(&rs.body, "chain to_1000002 {");
        let rst = to_db
            .find("tcp flags & rst != 0 ip saddr . ip daddr . meta l4proto . th sport . th dport @reply_1000002 delete @reply_1000002 { ip saddr . ip daddr . meta l4proto . th sport . th dport } delete @orig_1000002 { ip daddr . ip saddr . meta l4proto . th dport . th sport } accept")
            .unwrap();
        let close = to_db
            .find("tcp flags & fin != 0 ip saddr . ip daddr . meta l4proto . th sport . th dport @reply_1000002 update @reply_1000002 { ip saddr . ip daddr . meta l4proto . th sport . th dport timeout 10s } update @orig_1000002 { ip daddr . ip saddr . meta l4proto . th dport . th sport timeout 10s } accept")
            .unwrap();
        assert!(rst < close);
        assert!(to_db.contains("tcp flags & rst != 0 ip saddr . ip daddr . meta l4proto . th sport . th dport @orig_1000002 delete @orig_1000002 {"));
        assert!(to_db.contains("@orig_1000002 update @orig_1000002 { ip saddr . ip daddr . meta l4proto . th sport . th dport timeout 10s } update @reply_1000002 {"));
        let confirm = to_db
            .find("meta l4proto tcp tcp flags & syn == 0 ip saddr . ip daddr . meta l4proto . th sport . th dport @reply_1000002 update @reply_1000002 { ip saddr . ip daddr . meta l4proto . th sport . th dport timeout 1d }")
            .unwrap();
        // Without an update statement: a lookup cannot fail on a full set.
        let lookup = to_db
            .find("meta l4proto { tcp, udp } ip saddr . ip daddr . meta l4proto . th sport . th dport @reply_1000002 accept")
            .unwrap();
        let orig = to_db
            .find("meta l4proto { tcp, udp } ip saddr . ip daddr . meta l4proto . th sport . th dport @orig_1000002 accept")
            .unwrap();
        let acl = to_db.find("jump in_1000002").unwrap();
        assert!(close < confirm && confirm < lookup && lookup < orig && orig < acl);
        let new = section(&rs.body, "chain new_1000002 {");
        let rst = new.find("tcp flags rst accept").unwrap();
        let tcp = new.find("meta l4proto tcp update @reply_1000002").unwrap();
        let full = new
            .find("meta l4proto { tcp, udp } counter drop comment \"flow table full\"")
            .unwrap();
        let ping_full = new
            .find("icmp type echo-request counter drop comment \"flow table full\"")
            .unwrap();
        assert!(rst < tcp && tcp < full && full < ping_full);
        assert!(new.trim_end().ends_with("\t\taccept\n\t}"));
        assert!(rs.body.contains("set orig_1000002 {\n\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service\n\t\tsize 262144\n"));
    }

    #[test]
    fn ipv6_gets_neighbour_discovery_and_the_tier_default() {
        let (mut nets, taps) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &taps);
        for c in ["chain from_1000002 {", "chain to_1000002 {"] {
            let ch = section(&rs.body, c);
            let nd = ch.find("ether type ip6 meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert,").unwrap();
            let def = ch
                .find("ether type != ip counter drop comment \"non-IPv4 default\"")
                .unwrap();
            assert!(
                ch.find("ether type arp accept").unwrap() < nd && nd < def,
                "{ch}"
            );
        }
        // web has no ACL of its own: its IPv6 passes here (db's hypervisor applies db's).
        assert!(section(&rs.body, "chain from_1000001 {").contains("ether type != ip accept"));
        nets[1].acl.as_mut().unwrap().default_action = AclAction::Allow;
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &taps);
        assert!(section(&rs.body, "chain to_1000002 {").contains("ether type != ip accept"));
    }

    fn db6(ports: &[(&str, &str, &str)]) -> L2Network6 {
        L2Network6 {
            vni: 1_000_002,
            prefix: "fd10:10:0:2::/64".parse().unwrap(),
            gateway: "fd10:10:0:2::1".parse().unwrap(),
            router_link_local: "fe80::5f:ff:fe00:1".parse().unwrap(),
            vpc_tiers: vec!["fd10:10:0:1::/64".parse().unwrap()],
            ports: ports
                .iter()
                .map(|(n, ip, mac)| sf_core::desired::LocalPort6 {
                    name: n.to_string(),
                    ipv6: ip.parse().unwrap(),
                    mac: Some(mac.to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn ipv6_sources_and_nd_targets_are_pinned_per_port() {
        let (nets, taps) = example();
        let refs: Vec<&L2Network> = nets.iter().collect();
        // db-1 has an IPv6 address and a secondary one (a second port with its MAC); db-2
        // has none: only its link-local.
        let n6 = db6(&[
            ("db-1", "fd10:10:0:2::11", "52:54:00:00:02:11"),
            ("db-1b", "fd10:10:0:2::99", "52:54:00:00:02:11"),
        ]);
        let rs = render(&refs, &[&n6], &taps);
        let pin = section(&rs.body, "chain pin {");
        assert!(
            pin.contains("ether type ip6 iifname { \"vnet1\", \"vnet2\" } goto pin6"),
            "{pin}"
        );
        let p6 = section(&rs.body, "chain pin6 {");
        // Each tap also has its MAC's SLAAC address in the tier's /64 (…:5054:ff:fe00:2xx).
        let own = "\"vnet1\" . fd10:10:0:2::11, \"vnet1\" . fd10:10:0:2::99, \"vnet1\" . fd10:10:0:2:5054:ff:fe00:211, \"vnet1\" . fe80::5054:ff:fe00:211, \"vnet2\" . fd10:10:0:2:5054:ff:fe00:212, \"vnet2\" . fe80::5054:ff:fe00:212";
        let src = p6
            .find(&format!("ip6 saddr != :: iifname . ip6 saddr != {{ {own} }} counter drop comment \"spoofed IPv6 source\""))
            .unwrap_or_else(|| panic!("{p6}"));
        let dad = p6
            .find("ip6 saddr :: icmpv6 type != { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } counter drop")
            .unwrap();
        let na = p6
            .find("icmpv6 type nd-neighbor-advert iifname . @th,64,128 != { \"vnet1\" . 0xfd100010000000020000000000000011, ")
            .unwrap();
        let dad_target = p6
            .find("ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 != {")
            .unwrap();
        // Sources outside the VPC's ranges (a VM routing for others) pass, but only after
        // the ND checks, and neither a link-local nor a VPC address of another port does.
        let outside = p6
            .find("iifname { \"vnet1\", \"vnet2\" } ip6 saddr != { fd10:10:0:1::/64, fd10:10:0:2::/64, fe80::/10 } return")
            .unwrap_or_else(|| panic!("{p6}"));
        assert!(na < dad_target && dad_target < dad && dad < outside && outside < src);
        assert!(p6.contains("\"vnet2\" . 0xfe80000000000000505400fffe000212 }"));
        // Without an IPv6 side the tier's taps are not pinned in IPv6 (as before).
        let rs = render(&refs, &[], &taps);
        assert!(!rs.body.contains("pin6 {") && !rs.body.contains("goto pin6"));
    }

    /// db's ACL with IPv6 rules: TCP 80 from fd40::/16 in, everything out to ::/0.
    pub fn db_acl6() -> TierAcl {
        let mut a = db_acl();
        let r = |number, protocol, ports, cidr: &str| AclRule {
            number,
            action: AclAction::Allow,
            protocol,
            ports,
            icmp_type: None,
            icmp_code: None,
            cidrs: vec![cidr.parse().unwrap()],
        };
        a.ingress
            .push(r(20, AclProtocol::Tcp, Some((80, 80)), "fd40::/16"));
        a.egress.push(r(20, AclProtocol::All, None, "::/0"));
        a
    }

    #[test]
    fn a_dual_stack_tier_has_ipv6_chains_with_the_same_semantics() {
        let (mut nets, taps) = example();
        nets[1].acl = Some(db_acl6());
        let refs: Vec<&L2Network> = nets.iter().collect();
        let n6 = db6(&[("db-1", "fd10:10:0:2::11", "52:54:00:00:02:11")]);
        let rs = render(&refs, &[&n6], &taps);
        let b = &rs.body;
        // IPv6 leaves the IPv4 chains after ND, before the non-IPv4 default.
        let from = section(b, "chain from_1000002 {");
        let nd = from.find("nd-neighbor-solicit").unwrap();
        let goto = from.find("ether type ip6 goto from6_1000002").unwrap();
        let def = from.find("ether type != ip counter drop").unwrap();
        assert!(nd < goto && goto < def);
        assert!(section(b, "chain to_1000002 {").contains("ether type ip6 goto to6_1000002"));
        // web is not dual-stack: its IPv6 still gets its default.
        assert!(!section(b, "chain from_1000001 {").contains("goto from6"));
        // Same state machine over IPv6 5-tuples, in sets of their own.
        assert!(b.contains("set orig6_1000002 {\n\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service\n\t\tsize 262144\n"));
        let from6 = section(b, "chain from6_1000002 {");
        let est = from6.find("meta l4proto { tcp, udp } ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport @reply6_1000002 accept").unwrap();
        let ptb = from6.find("packet-too-big").unwrap();
        let eg = from6.find("jump eg6_1000002").unwrap();
        let same = from6
            .find("ip6 daddr fd10:10:0:2::/64 ip6 daddr != fd10:10:0:2::1 jump in6_1000002")
            .unwrap();
        assert!(
            est < ptb && ptb < eg && eg < same && same < from6.find("goto new6_1000002").unwrap()
        );
        assert!(section(b, "chain to6_1000002 {").contains("jump in6_1000002"));
        assert!(section(b, "chain new6_1000002 {").contains("meta l4proto tcp update @reply6_1000002 { ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport timeout 30s }"));
        // The list's IPv6 rules, first match, then the same default.
        let in6 = section(b, "chain in6_1000002 {");
        assert!(
            in6.contains("tcp dport 80 ip6 saddr fd40::/16 counter return comment \"ingress 20\"")
        );
        assert!(!in6.contains("10.10.1"));
        assert!(in6.contains("counter drop comment \"ingress default\""));
        assert!(section(b, "chain eg6_1000002 {").contains("counter return comment \"egress 20\""));
        assert!(!section(b, "chain in_1000002 {").contains("fd40"));
        // Bookkeeping: the IPv6 chains and sets go with the tier.
        let o = &rs.objects[&1_000_002];
        assert!(o.chains.contains("from6") && o.chains.contains("in6") && o.sets.contains("orig6"));
        assert_eq!(VniObjects::parse(&o.comment()).as_ref(), Some(o));
        let web_only: Vec<&L2Network> = nets.iter().filter(|n| n.vni == 1_000_001).collect();
        let s = update_script(&rs.objects, &render(&web_only, &[], &taps));
        assert!(s.contains("delete chain bridge stackfabric in6_1000002\n"));
        assert!(s.contains("delete set bridge stackfabric orig6_1000002\n"));
    }

    #[test]
    fn router_advertisements_and_dhcpv6_servers_are_dropped_from_every_vm_tap() {
        let (nets, mut taps) = example();
        taps.push(tap("vnet7", 1_000_002, "fe:54:00:00:02:77"));
        let refs: Vec<&L2Network> = nets.iter().collect();
        let rs = render(&refs, &[], &taps);
        let fwd = section(&rs.body, "chain forward {");
        // Every tap of every tier in scope (ACL or not, pinned or not), but not the stray
        // one (already dropped whole), before any dispatch.
        let all = "iifname { \"vnet0\", \"vnet1\", \"vnet2\", \"vnet3\" } ether type ip6";
        let ra = fwd
            .find(&format!("{all} icmpv6 type {{ nd-router-advert, nd-redirect }} counter drop comment \"RA guard\""))
            .unwrap_or_else(|| panic!("{fwd}"));
        let dhcp = fwd
            .find(&format!("{all} udp sport 547 udp dport 546 counter drop comment \"DHCPv6 server on a VM port\""))
            .unwrap();
        let stray = fwd.find("iifname { \"vnet7\" } counter drop").unwrap();
        let pin = fwd.find("jump pin").unwrap();
        assert!(stray < ra && ra < dhcp && dhcp < pin);
        // No tap: no guard lines.
        assert!(!render(&refs, &[], &[]).body.contains("RA guard"));
    }

    #[test]
    fn tier_digests_follow_the_rules_not_the_ports() {
        let (mut nets, _) = example();
        let d = |nets: &[L2Network]| tier_acl_digests(&nets.iter().collect::<Vec<_>>());
        let a = d(&nets);
        assert_eq!(
            a.keys().copied().collect::<Vec<_>>(),
            vec![1_000_001, 1_000_002]
        );
        nets[1].ports.pop();
        assert_eq!(d(&nets), a, "a port leaving judges no flow anew");
        // db's ACL changes: db and web (which applies db's ingress at the source) re-judge.
        nets[1].acl.as_mut().unwrap().ingress.pop();
        nets[0].peer_tiers[0].acl = nets[1].acl.clone();
        let b = d(&nets);
        assert_ne!(b[&1_000_001], a[&1_000_001]);
        assert_ne!(b[&1_000_002], a[&1_000_002]);
    }

    #[test]
    fn bridge_taps_are_bridge_ports_other_than_the_vxlan() {
        let l = |name: &str, master: Option<&str>| Link {
            name: name.into(),
            master: master.map(str::to_string),
            mac: Some("FE:00:00:00:00:01".into()),
            ..Default::default()
        };
        let links = vec![
            l("brvx-1000001", None),
            l("vxlan1000001", Some("brvx-1000001")),
            l("vnet2", Some("brvx-1000001")),
            l("vnet0", Some("brvx-1000001")),
            l("eth0", Some("br0")),
        ];
        let names: Vec<(String, String)> = bridge_taps(&links)
            .into_iter()
            .map(|t| (t.name, t.bridge))
            .collect();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            names,
            vec![
                pair("eth0", "br0"),
                pair("vnet0", "brvx-1000001"),
                pair("vnet2", "brvx-1000001")
            ]
        );
        assert_eq!(
            bridge_taps(&links)[0].mac.as_deref(),
            Some("fe:00:00:00:00:01")
        );
    }
}
