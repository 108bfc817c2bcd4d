//! Network ACLs (CloudStack semantics) rendered into nftables rule lines. Pure: the agents
//! place the lines into their own tables (the hypervisor's `bridge stackfabric`, the VPC
//! router's `ip stackfabric`).
//!
//! One [`AclRule`] becomes exactly one nft rule, in the order given (the compiler sorts by rule
//! number; first match wins), and the chain ends with the list's default action:
//!
//! ```text
//! tcp dport 5432 ip saddr 10.10.1.0/24 counter accept comment "ingress 10"
//! udp dport 5000-5100 ip saddr { 10.0.0.0/8, 192.168.0.0/16 } counter drop comment "ingress 20"
//! icmp type 8 icmp code 0 counter accept comment "ingress 30"
//! counter drop comment "ingress default"
//! ```
//!
//! `cidrs` is the remote side: matched against `ip saddr` for ingress and `ip daddr` for
//! egress. A single prefix is matched inline; a list of several becomes a named interval set
//! (identical lists in one chain share a set), so a rule costs one set lookup per packet
//! however many prefixes it names. Named rather than anonymous sets: the kernel allocates
//! anonymous set names by scanning every set of the table, which made a 10,000-rule load
//! with 10,000 anonymous sets take 8.5 s of kernel time (named: about half; inline
//! single prefixes: 0.3 s). The rules themselves stay a linear
//! chain: CloudStack's first-match-by-number semantics make a rule's verdict depend on every
//! lower-numbered rule that overlaps it, so they cannot be folded into one verdict map
//! without computing the disjoint decomposition of the whole list (a later optimisation;
//! the chain only sees the first packet of a flow, established traffic never reaches it).
//! Every rule carries a `counter` so operators (and tests) can see which rule matched.
//!
//! The verdicts are parameters: a router accepts on allow, while a hypervisor that chains
//! several ACL stages (the sender's egress, then the receiver's ingress) `return`s on allow
//! and decides at the end.

use std::fmt::Write;

use ipnet::IpNet;
use sf_core::desired::{AclAction, AclProtocol, AclRule, TierAcl};

/// Which half of a [`TierAcl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Traffic entering the tier: `cidrs` match the source.
    Ingress,
    /// Traffic leaving the tier: `cidrs` match the destination.
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The nft statements for the two actions of an ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts<'a> {
    pub allow: &'a str,
    pub deny: &'a str,
}

impl Verdicts<'static> {
    /// Final verdicts: accept / drop.
    pub const FINAL: Verdicts<'static> = Verdicts {
        allow: "accept",
        deny: "drop",
    };
    /// For chained stages: allow returns to the caller (next stage), deny drops.
    pub const STAGE: Verdicts<'static> = Verdicts {
        allow: "return",
        deny: "drop",
    };
}

impl Verdicts<'_> {
    fn of(&self, a: AclAction) -> &str {
        match a {
            AclAction::Allow => self.allow,
            AclAction::Deny => self.deny,
        }
    }
}

/// The address family a chain filters: an ACL rule applies to a family only through its
/// networks of that family (and `icmp`/`icmpv6` only to theirs), so one list renders into
/// an IPv4 chain and an IPv6 chain with the same order and default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Whether `rule` can match packets of `fam` (an empty list: any address of either).
pub fn applies(rule: &AclRule, fam: Family) -> bool {
    match rule.protocol {
        AclProtocol::Icmp if fam != Family::V4 => false,
        AclProtocol::Icmpv6 if fam != Family::V6 => false,
        _ => rule.cidrs.is_empty() || rule.cidrs.iter().any(|c| Family::of(c) == fam),
    }
}

/// The prefixes of `cidrs` of family `fam` as an nft expression, or None for "any address"
/// (no prefix of the family, or one of length 0). Prefixes contained in another one are
/// dropped (nft refuses overlapping elements in an interval set); the rest is sorted, so
/// equal lists render equally.
pub fn cidr_expr(cidrs: &[IpNet], fam: Family) -> Option<String> {
    let mut v: Vec<IpNet> = cidrs
        .iter()
        .filter(|c| Family::of(c) == fam)
        .map(IpNet::trunc)
        .collect();
    if v.is_empty() || v.iter().any(|n| n.prefix_len() == 0) {
        return None;
    }
    v.sort_by_key(|n| (n.network(), n.prefix_len()));
    v.dedup();
    let mut kept: Vec<IpNet> = Vec::with_capacity(v.len());
    for n in v {
        // Sorted by address then length: a container precedes what it contains.
        if kept.last().is_some_and(|k| k.contains(&n)) {
            continue;
        }
        kept.push(n);
    }
    let items: Vec<String> = kept
        .iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    Some(if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    })
}

fn remote(dir: Direction, fam: Family) -> String {
    let side = match dir {
        Direction::Ingress => "saddr",
        Direction::Egress => "daddr",
    };
    format!("{} {side}", fam.ip())
}

/// The match part of one IPv4 rule (may be empty: matches every IPv4 packet).
pub fn rule_match(rule: &AclRule, dir: Direction) -> String {
    rule_match_in(rule, dir, Family::V4)
}

/// The match part of one rule in a chain of family `fam` (call only when it [`applies`]).
pub fn rule_match_in(rule: &AclRule, dir: Direction, fam: Family) -> String {
    let mut m = proto_match(rule);
    if let Some(e) = cidr_expr(&rule.cidrs, fam) {
        let _ = write!(m, "{} {e} ", remote(dir, fam));
    }
    m.trim_end().to_string()
}

/// Protocol, ports and ICMP type/code of a rule, each followed by a space.
fn proto_match(rule: &AclRule) -> String {
    let mut m = String::new();
    match rule.protocol {
        AclProtocol::All => {}
        AclProtocol::Tcp | AclProtocol::Udp => {
            let p = if rule.protocol == AclProtocol::Tcp {
                "tcp"
            } else {
                "udp"
            };
            match rule.ports {
                Some((a, b)) if a.min(b) == a.max(b) => {
                    let _ = write!(m, "{p} dport {a} ");
                }
                Some((a, b)) if (a.min(b), a.max(b)) != (0, 65535) => {
                    let _ = write!(m, "{p} dport {}-{} ", a.min(b), a.max(b));
                }
                _ => {
                    let _ = write!(m, "meta l4proto {p} ");
                }
            }
        }
        AclProtocol::Icmp | AclProtocol::Icmpv6 => {
            let (kw, l4) = if rule.protocol == AclProtocol::Icmp {
                ("icmp", "icmp")
            } else {
                ("icmpv6", "ipv6-icmp")
            };
            match (rule.icmp_type, rule.icmp_code) {
                (None, None) => {
                    let _ = write!(m, "meta l4proto {l4} ");
                }
                (t, c) => {
                    if let Some(t) = t {
                        let _ = write!(m, "{kw} type {t} ");
                    }
                    if let Some(c) = c {
                        let _ = write!(m, "{kw} code {c} ");
                    }
                }
            }
        }
    }
    m
}

/// One nft rule line (without indentation) for `rule`.
pub fn rule_line(rule: &AclRule, dir: Direction, v: Verdicts) -> String {
    let m = rule_match(rule, dir);
    let sep = if m.is_empty() { "" } else { " " };
    format!(
        "{m}{sep}counter {} comment \"{} {}\"",
        v.of(rule.action),
        dir.name(),
        rule.number
    )
}

/// The IPv4 rules of one direction of `acl`, in order, then the default action.
pub fn chain_rules(acl: &TierAcl, dir: Direction, v: Verdicts) -> Vec<String> {
    let rules = match dir {
        Direction::Ingress => &acl.ingress,
        Direction::Egress => &acl.egress,
    };
    rules
        .iter()
        .filter(|r| applies(r, Family::V4))
        .map(|r| rule_line(r, dir, v))
        .chain(std::iter::once(format!(
            "counter {} comment \"{} default\"",
            v.of(acl.default_action),
            dir.name()
        )))
        .collect()
}

/// A chain body rendered with named sets: `sets` are set definitions (each indented by one
/// tab, to be placed in the table before the chains), `rules` the rule lines (two tabs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainText {
    pub sets: String,
    pub rules: String,
    /// Number of sets defined (named `<set_prefix><index>`, index from 0).
    pub set_count: usize,
}

/// Renders one direction of `acl` like [`chain_rules`], but lists of two or more prefixes
/// become named interval sets `<set_prefix><n>` (deduplicated within the chain).
pub fn render_chain(acl: &TierAcl, dir: Direction, v: Verdicts, set_prefix: &str) -> ChainText {
    render_chain_in(acl, dir, v, set_prefix, Family::V4)
}

/// [`render_chain`] for the chain of family `fam`: only the rules that [`applies`] to it,
/// with their networks of that family; the default action closes it either way.
pub fn render_chain_in(
    acl: &TierAcl,
    dir: Direction,
    v: Verdicts,
    set_prefix: &str,
    fam: Family,
) -> ChainText {
    let rules = match dir {
        Direction::Ingress => &acl.ingress,
        Direction::Egress => &acl.egress,
    };
    let mut out = ChainText::default();
    let mut by_content: std::collections::HashMap<String, usize> = Default::default();
    for r in rules.iter().filter(|r| applies(r, fam)) {
        let mut m = proto_match(r).trim_end().to_string();
        if let Some(e) = cidr_expr(&r.cidrs, fam) {
            let e = match e.strip_prefix("{ ").and_then(|x| x.strip_suffix(" }")) {
                Some(list) => {
                    let n = *by_content.entry(list.to_string()).or_insert_with(|| {
                        let n = out.set_count;
                        let _ = writeln!(
                            out.sets,
                            "\tset {set_prefix}{n} {{\n\t\ttype {}\n\t\tflags interval\n\t\telements = {{ {list} }}\n\t}}",
                            fam.set_type()
                        );
                        out.set_count += 1;
                        n
                    });
                    format!("@{set_prefix}{n}")
                }
                None => e,
            };
            if !m.is_empty() {
                m.push(' ');
            }
            let _ = write!(m, "{} {e}", remote(dir, fam));
        }
        let sep = if m.is_empty() { "" } else { " " };
        let _ = writeln!(
            out.rules,
            "\t\t{m}{sep}counter {} comment \"{} {}\"",
            v.of(r.action),
            dir.name(),
            r.number
        );
    }
    let _ = writeln!(
        out.rules,
        "\t\tcounter {} comment \"{} default\"",
        v.of(acl.default_action),
        dir.name()
    );
    out
}

/// Appends the rules of [`chain_rules`] to `out`, each indented by two tabs (the layout of
/// a chain body in an `nft -f` table definition).
pub fn write_chain_rules(out: &mut String, acl: &TierAcl, dir: Direction, v: Verdicts) {
    for l in chain_rules(acl, dir, v) {
        let _ = writeln!(out, "\t\t{l}");
    }
}

/// The value of the first `comment "<prefix>…"` in an nft listing, e.g. a digest the agent
/// stored in a table or set element comment.
pub fn comment_value(listing: &str, prefix: &str) -> Option<String> {
    let tag = format!("comment \"{prefix}");
    let rest = &listing[listing.find(&tag)? + tag.len()..];
    rest.split('"').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(number: u32, action: AclAction, protocol: AclProtocol, cidrs: &[&str]) -> AclRule {
        AclRule {
            number,
            action,
            protocol,
            ports: None,
            icmp_type: None,
            icmp_code: None,
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn db_acl() -> TierAcl {
        let mut pg = rule(20, AclAction::Allow, AclProtocol::Tcp, &["10.10.1.0/24"]);
        pg.ports = Some((5432, 5432));
        let mut deny_one = rule(10, AclAction::Deny, AclProtocol::Tcp, &["10.10.1.66/32"]);
        deny_one.ports = Some((5432, 5432));
        let mut ping = rule(30, AclAction::Allow, AclProtocol::Icmp, &[]);
        ping.icmp_type = Some(8);
        ping.icmp_code = Some(0);
        TierAcl {
            list: "db".into(),
            default_action: AclAction::Deny,
            ingress: vec![deny_one, pg, ping],
            egress: vec![rule(10, AclAction::Allow, AclProtocol::All, &["0.0.0.0/0"])],
        }
    }

    #[test]
    fn renders_rules_in_order_then_default() {
        let l = chain_rules(&db_acl(), Direction::Ingress, Verdicts::FINAL);
        assert_eq!(
            l,
            [
                "tcp dport 5432 ip saddr 10.10.1.66 counter drop comment \"ingress 10\"",
                "tcp dport 5432 ip saddr 10.10.1.0/24 counter accept comment \"ingress 20\"",
                "icmp type 8 icmp code 0 counter accept comment \"ingress 30\"",
                "counter drop comment \"ingress default\"",
            ]
        );
        let e = chain_rules(&db_acl(), Direction::Egress, Verdicts::STAGE);
        assert_eq!(
            e,
            [
                "counter return comment \"egress 10\"",
                "counter drop comment \"egress default\""
            ]
        );
    }

    #[test]
    fn protocols_ports_and_directions() {
        let mut r = rule(
            5,
            AclAction::Allow,
            AclProtocol::Udp,
            &["192.168.0.0/16", "10.0.0.0/8"],
        );
        r.ports = Some((5100, 5000));
        assert_eq!(
            rule_match(&r, Direction::Egress),
            "udp dport 5000-5100 ip daddr { 10.0.0.0/8, 192.168.0.0/16 }"
        );
        r.ports = Some((0, 65535));
        assert_eq!(
            rule_match(&r, Direction::Ingress),
            "meta l4proto udp ip saddr { 10.0.0.0/8, 192.168.0.0/16 }"
        );
        let mut i = rule(6, AclAction::Deny, AclProtocol::Icmp, &[]);
        assert_eq!(rule_match(&i, Direction::Ingress), "meta l4proto icmp");
        i.icmp_code = Some(3);
        assert_eq!(rule_match(&i, Direction::Ingress), "icmp code 3");
        let all = rule(7, AclAction::Deny, AclProtocol::All, &[]);
        assert_eq!(
            rule_line(&all, Direction::Ingress, Verdicts::FINAL),
            "counter drop comment \"ingress 7\""
        );
    }

    #[test]
    fn cidr_lists_are_one_set_without_overlaps() {
        let n = |s: &[&str]| -> Vec<IpNet> { s.iter().map(|c| c.parse().unwrap()).collect() };
        assert_eq!(cidr_expr(&n(&[]), Family::V4), None);
        assert_eq!(
            cidr_expr(&n(&["10.0.0.0/8", "0.0.0.0/0"]), Family::V4),
            None
        );
        assert_eq!(
            cidr_expr(
                &n(&["10.1.2.0/24", "10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8"]),
                Family::V4
            ),
            Some("10.0.0.0/8".into())
        );
        // Host bits are cleared (nft would refuse them in a set).
        assert_eq!(
            cidr_expr(
                &n(&["10.1.2.3/24", "172.16.0.1/32", "10.2.0.0/16"]),
                Family::V4
            ),
            Some("{ 10.1.2.0/24, 10.2.0.0/16, 172.16.0.1 }".into())
        );
        // A rule's size on the wire grows with its list, its chain position does not.
        let many: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let mut r = rule(1, AclAction::Allow, AclProtocol::All, &[]);
        r.cidrs = many.iter().map(|c| c.parse().unwrap()).collect();
        let l = chain_rules(
            &TierAcl {
                list: "x".into(),
                default_action: AclAction::Allow,
                ingress: vec![r],
                egress: vec![],
            },
            Direction::Ingress,
            Verdicts::FINAL,
        );
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].matches(", ").count(), 999);
    }

    #[test]
    fn named_sets_for_lists_shared_by_content() {
        let mut a = db_acl();
        let mut r = rule(
            40,
            AclAction::Allow,
            AclProtocol::Udp,
            &["10.0.0.0/8", "192.168.0.0/16"],
        );
        a.ingress.push(r.clone());
        r.number = 50;
        r.protocol = AclProtocol::Tcp;
        a.ingress.push(r);
        let c = render_chain(&a, Direction::Ingress, Verdicts::FINAL, "in_7_s");
        assert_eq!(c.set_count, 1);
        assert_eq!(
            c.sets,
            "\tset in_7_s0 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.0.0.0/8, 192.168.0.0/16 }\n\t}\n"
        );
        let lines: Vec<&str> = c.rules.lines().map(str::trim).collect();
        assert_eq!(
            lines[0],
            "tcp dport 5432 ip saddr 10.10.1.66 counter drop comment \"ingress 10\""
        );
        assert_eq!(
            lines[3],
            "meta l4proto udp ip saddr @in_7_s0 counter accept comment \"ingress 40\""
        );
        assert_eq!(
            lines[4],
            "meta l4proto tcp ip saddr @in_7_s0 counter accept comment \"ingress 50\""
        );
        assert_eq!(lines[5], "counter drop comment \"ingress default\"");
        // Same rules as the anonymous-set rendering otherwise.
        let plain = chain_rules(&db_acl(), Direction::Ingress, Verdicts::FINAL);
        let named = render_chain(&db_acl(), Direction::Ingress, Verdicts::FINAL, "x");
        assert_eq!(
            named.rules.lines().map(str::trim).collect::<Vec<_>>(),
            plain
        );
    }

    #[test]
    fn one_list_renders_per_family() {
        let mut web = rule(
            10,
            AclAction::Allow,
            AclProtocol::Tcp,
            &["10.10.1.0/24", "fd40:40:0:1::/64", "2001:db8::/32"],
        );
        web.ports = Some((80, 80));
        let v6_only = rule(20, AclAction::Deny, AclProtocol::All, &["::/0"]);
        let mut echo6 = rule(30, AclAction::Allow, AclProtocol::Icmpv6, &["::/0"]);
        echo6.icmp_type = Some(128);
        let echo4 = rule(40, AclAction::Allow, AclProtocol::Icmp, &["0.0.0.0/0"]);
        let acl = TierAcl {
            list: "x".into(),
            default_action: AclAction::Deny,
            ingress: vec![web, v6_only, echo6, echo4],
            egress: vec![],
        };
        let v4 = render_chain_in(&acl, Direction::Ingress, Verdicts::FINAL, "i4_", Family::V4);
        assert_eq!(
            v4.rules.lines().map(str::trim).collect::<Vec<_>>(),
            [
                "tcp dport 80 ip saddr 10.10.1.0/24 counter accept comment \"ingress 10\"",
                "meta l4proto icmp counter accept comment \"ingress 40\"",
                "counter drop comment \"ingress default\"",
            ]
        );
        // The IPv4 rendering of a list is what it was before IPv6 rules existed.
        assert_eq!(
            v4,
            render_chain(&acl, Direction::Ingress, Verdicts::FINAL, "i4_")
        );
        let v6 = render_chain_in(&acl, Direction::Ingress, Verdicts::STAGE, "i6_", Family::V6);
        assert_eq!(
            v6.rules.lines().map(str::trim).collect::<Vec<_>>(),
            [
                "tcp dport 80 ip6 saddr @i6_0 counter return comment \"ingress 10\"",
                "counter drop comment \"ingress 20\"",
                "icmpv6 type 128 counter return comment \"ingress 30\"",
                "counter drop comment \"ingress default\"",
            ]
        );
        assert_eq!(
            v6.sets,
            "\tset i6_0 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { 2001:db8::/32, fd40:40:0:1::/64 }\n\t}\n"
        );
        let host: Vec<IpNet> = vec!["fd40::5/128".parse().unwrap(), "fd40::/16".parse().unwrap()];
        assert_eq!(cidr_expr(&host, Family::V6), Some("fd40::/16".into()));
        assert_eq!(cidr_expr(&host[..1], Family::V6), Some("fd40::5".into()));
        assert_eq!(cidr_expr(&host, Family::V4), None);
    }

    #[test]
    fn comment_values_parse_back() {
        let listing = "table bridge stackfabric {\n\tset sfmeta {\n\t\ttype mark\n\t\telements = { 0xffffffff comment \"sf:digest=00ff\" }\n";
        assert_eq!(
            comment_value(listing, "sf:digest=").as_deref(),
            Some("00ff")
        );
        assert_eq!(comment_value(listing, "sf:nope="), None);
    }
}
