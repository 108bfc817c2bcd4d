//! The IPv6 half of a dual-stack tier's chains in the `bridge stackfabric` table (issue 21):
//! the same stateful, first-match ACL evaluation as [`crate::acl`]'s IPv4 chains, over
//! IPv6 5-tuples in flow sets of their own (`orig6_V`, `reply6_V`, `pings6_V`, same bounds
//! and timeouts), with the list's rules rendered for IPv6 (`eg6_V`, `in6_V`: only the rules
//! naming an IPv6 network, or `icmpv6`; the same default). IPv6 frames of a dual-stack
//! tier leave `from_V`/`to_V` for `from6_V`/`to6_V` right after neighbour discovery, RA
//! and MLD have passed (they always pass; a VM's RAs never get this far, see the RA guard).
//!
//! Not applied at the source for IPv6: a peer tier's ingress rules (the hypervisor is not
//! told peer tiers' /64s); the destination hypervisor's `to6_V` applies them.

use std::fmt::Write;

use sf_core::desired::{L2Network, L2Network6};
use sf_linux::acl::{render_chain_in, Direction, Family, Verdicts};

use crate::acl::{
    VniObjects, FLOWS_SIZE, PING_TIMEOUT, TCP_CLOSE, TCP_NEW_TIMEOUT, TCP_TIMEOUT, UDP_NEW_TIMEOUT,
    UDP_TIMEOUT,
};

/// The 5-tuple of an IPv6 packet as sent, and as its reply would be sent.
const FLOW6: &str = "ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport";
const REV6: &str = "ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport";

/// Records what the IPv6 half of tier `n` creates.
pub(crate) fn objects6(n: &L2Network, o: &mut VniObjects) {
    for c in ["from6", "to6", "new6"] {
        o.chains.insert(c.into());
    }
    for s in ["orig6", "reply6", "pings6"] {
        o.sets.insert(s.into());
    }
    if n.acl.is_some() {
        o.chains.insert("eg6".into());
        o.chains.insert("in6".into());
    }
}

/// The IPv6 flow state of one tier.
pub(crate) fn flow_sets6(b: &mut String, v: u32) {
    for s in ["orig6", "reply6"] {
        let _ = writeln!(
            b,
            "\tset {s}_{v} {{\n\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service\n\t\tsize {FLOWS_SIZE}\n\t\tflags dynamic,timeout\n\t}}"
        );
    }
    let _ = writeln!(
        b,
        "\tset pings6_{v} {{\n\t\ttypeof ip6 saddr . ip6 daddr . icmpv6 id\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t}}",
        FLOWS_SIZE / 4
    );
}

/// `eg6_V` and `in6_V` of a tier with an ACL, and their prefix-list sets (returned apart:
/// sets must precede every chain of the table).
pub(crate) fn acl_chains6(
    n: &L2Network,
    o: &mut VniObjects,
    sets: &mut String,
    chains: &mut String,
) {
    let Some(a) = &n.acl else { return };
    let v = n.vni;
    for (dir, kind) in [(Direction::Egress, "eg6"), (Direction::Ingress, "in6")] {
        let set_prefix = format!("{}s6_{v}_", &kind[..kind.len() - 1]);
        let c = render_chain_in(a, dir, Verdicts::STAGE, &set_prefix, Family::V6);
        sets.push_str(&c.sets);
        let _ = write!(chains, "\tchain {kind}_{v} {{\n{}\t}}\n", c.rules);
        match dir {
            Direction::Egress => o.eg6_sets = c.set_count,
            Direction::Ingress => o.in6_sets = c.set_count,
        }
    }
}

/// Known flows and what passes without a rule, as `common` does for IPv4: RST/FIN end
/// flows, replies confirm them, echo replies of recorded pings, ICMPv6 errors (the
/// "related" of conntrack, packet-too-big above all: IPv6 routers never fragment),
/// non-first fragments, DHCPv6.
fn state6(v: u32) -> Vec<String> {
    let mut l = Vec::new();
    for (set, other) in [("reply6", "orig6"), ("orig6", "reply6")] {
        l.push(format!(
            "tcp flags & rst != 0 {FLOW6} @{set}_{v} delete @{set}_{v} {{ {FLOW6} }} delete @{other}_{v} {{ {REV6} }} accept"
        ));
        l.push(format!(
            "tcp flags & fin != 0 {FLOW6} @{set}_{v} update @{set}_{v} {{ {FLOW6} timeout {TCP_CLOSE} }} update @{other}_{v} {{ {REV6} timeout {TCP_CLOSE} }} accept"
        ));
    }
    for (p, t) in [
        ("tcp tcp flags & syn == 0", TCP_TIMEOUT),
        ("udp", UDP_TIMEOUT),
    ] {
        l.push(format!(
            "meta l4proto {p} {FLOW6} @reply6_{v} update @reply6_{v} {{ {FLOW6} timeout {t} }} update @orig6_{v} {{ {REV6} timeout {t} }} accept"
        ));
    }
    for s in ["reply6", "orig6"] {
        l.push(format!(
            "meta l4proto {{ tcp, udp }} {FLOW6} @{s}_{v} accept"
        ));
    }
    l.push(format!(
        "icmpv6 type echo-reply ip6 saddr . ip6 daddr . icmpv6 id @pings6_{v} accept"
    ));
    l.push("icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept".into());
    l.push("frag frag-off != 0 accept".into());
    l.push("udp sport 546 udp dport 547 accept".into());
    l.push("udp sport 547 udp dport 546 accept".into());
    l
}

/// `from6_V`, `to6_V` and `new6_V` of a dual-stack tier.
pub(crate) fn tier_chains6(b: &mut String, n: &L2Network, n6: &L2Network6) {
    let v = n.vni;
    let mut from = state6(v);
    let mut to = state6(v);
    if n.acl.is_some() {
        from.push(format!("jump eg6_{v}"));
        from.push(format!(
            "ip6 daddr {} ip6 daddr != {} jump in6_{v}",
            n6.prefix.trunc(),
            n6.gateway
        ));
        to.push(format!("jump in6_{v}"));
    }
    from.push(format!("goto new6_{v}"));
    to.push(format!("goto new6_{v}"));
    let new = vec![
        "tcp flags rst accept".to_string(),
        format!("meta l4proto tcp update @reply6_{v} {{ {REV6} timeout {TCP_NEW_TIMEOUT} }} update @orig6_{v} {{ {FLOW6} timeout {TCP_NEW_TIMEOUT} }} counter accept comment \"new flow\""),
        format!("meta l4proto udp update @reply6_{v} {{ {REV6} timeout {UDP_NEW_TIMEOUT} }} update @orig6_{v} {{ {FLOW6} timeout {UDP_NEW_TIMEOUT} }} counter accept comment \"new flow\""),
        "meta l4proto { tcp, udp } counter drop comment \"flow table full\"".into(),
        format!("icmpv6 type echo-request update @pings6_{v} {{ ip6 daddr . ip6 saddr . icmpv6 id timeout {PING_TIMEOUT} }} accept"),
        "icmpv6 type echo-request counter drop comment \"flow table full\"".into(),
        "accept".into(),
    ];
    for (name, lines) in [("from6", from), ("to6", to), ("new6", new)] {
        let _ = writeln!(b, "\tchain {name}_{v} {{");
        for l in lines {
            let _ = writeln!(b, "\t\t{l}");
        }
        let _ = writeln!(b, "\t}}");
    }
}
