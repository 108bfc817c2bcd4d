//! The IPv6 firewall of a dual-stack VPC router (issue 21): one nftables table
//! `ip6 stackfabric6` in the VPC namespace, owned by the agent, replaced atomically (one
//! `nft -f` transaction) only when its rendering changed, its digest carried as its comment
//! like the IPv4 table's ([`crate::nft`]), so a restarted agent reloads nothing unchanged.
//!
//! IPv6 is routed, never translated: the VMs' own addresses are on the wire, so what NAT does
//! for IPv4 (nothing from the internet reaches a VM unless a translation says so) is a
//! stateful filter here, as CloudStack's VR does for routed IPv6. The forward chain:
//!
//! - `ct state established,related accept`: replies and related errors of admitted flows.
//! - towards `transit` (egress to the internet): a source outside the router's dual-stack
//!   tiers is dropped (no spoofed or Direct Connect source leaves the VPC), before the
//!   ICMPv6 that always passes, so no ICMPv6 type is a way around it.
//! - ICMPv6 that IPv6 cannot work without is always accepted: neighbour discovery
//!   (RS, RA, NS, NA) and the errors PMTU discovery and traceroute rely on (packet-too-big,
//!   time-exceeded, parameter-problem, destination-unreachable).
//! - towards `transit` from a tier: accepted (after its ACL, if any).
//! - between tiers no source check: a static route via a VM makes addresses outside every
//!   tier legitimate sources inside the VPC (east-west is filtered on the hypervisors, whose
//!   anti-spoofing pins only sources inside the tiers).
//! - from `transit` (new connections from the internet): dropped, as NAT does for IPv4.
//! - between tiers: policy accept, as the IPv4 table (east-west is filtered on the
//!   hypervisors, at the source).
//! - tiers with a north-south ACL (`TierAcl`): as in the IPv4 table, after the ICMPv6 that
//!   must pass, a new connection from `transit` goes by `ip6 daddr vmap` to the tier's
//!   `acl6_in_<vni>`, one to `transit` by `ip6 saddr vmap` to `acl6_eg_<vni>`: the list's
//!   rules that apply to IPv6 (`sf_linux::acl::render_chain_in` with `Family::V6`: rules
//!   naming IPv6 networks or none, `::/0` is any address), then the list's default. Flows
//!   admitted under earlier rules are checked again once (the IPv4 table's conntrack-mark
//!   generation, computed over this table's ACL rendering).
//!
//! Load balancers with an IPv6 VIP (`VpcRouter6::load_balancers`) are rendered by the IPv4
//! table's own renderer in family `ip6` ([`crate::nft::LbFamily`]): per load balancer `i`
//! (in name order) a map `lb<i>` of type `mark : ipv6_addr . inet_service` holding the Maglev table,
//! the same `jhash … mod M seed 0x0` slot in the mark and `dnat ip6 to meta mark map`, the
//! `lb_guard` chain (clears the mark, rejects what no backend took), `lbsrc<i>` sets and the
//! `lb_source` chain for source allow-lists, a hairpin masquerade for VMs of the VPC using a
//! VIP, and the set `lbsum` carrying the table's and the maps' digests, so a health flip
//! rewrites only the changed slots of one map ([`crate::nft::lb_script_in`]). The forward
//! chain admits connections from `transit` that were DNATed (only load balancers DNAT in
//! IPv6), after a tier ACL's dispatch, so an ACL applies to them as in IPv4. A router
//! without IPv6 load balancers renders byte for byte as before.
//!
//! A separate table rather than turning `ip stackfabric` into `inet`: the IPv4 table stays
//! byte for byte what it was (same digest, so upgrading reloads no IPv4-only router), its
//! NAT and Maglev maps are IPv4-typed anyway, and an IPv4-only router gets no IPv6 table.

use std::fmt::Write;

use sf_core::desired::{LoadBalancer, RouterTier, VpcRouter, VpcRouter6};
use sf_linux::acl::{render_chain_in, Direction, Family, Verdicts};
use sha2::{Digest, Sha256};

use crate::names::TRANSIT_NS;
use crate::nft::{
    digest, lb_declarations, lb_dnat_rules, lb_guard_chain, rendered_lbs, tier_acls, LbFamily,
};

/// The IPv6 load balancers that are rendered, in name order: map `lb<i>` belongs to the
/// `i`-th ([`crate::nft::load_balancers`]' rules).
pub fn load_balancers6(r6: &VpcRouter6) -> Vec<&LoadBalancer> {
    rendered_lbs(&r6.load_balancers, true)
}

/// The IPv6 load balancers' sets, maps and chains (empty without any): the IPv4 table's
/// rendering in family `ip6` ([`crate::nft::lb_declarations`], [`crate::nft::lb_dnat_rules`],
/// [`crate::nft::lb_guard_chain`]), with a prerouting chain of their own (IPv6 has no other
/// DNAT) and the hairpin.
fn lb_text6(lbs: &[&LoadBalancer]) -> String {
    let mut c = String::new();
    if lbs.is_empty() {
        return c;
    }
    lb_declarations(&mut c, LbFamily::V6, lbs);
    let _ = writeln!(c, "\tchain prerouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    lb_dnat_rules(&mut c, LbFamily::V6, lbs);
    let _ = writeln!(c, "\t}}");
    // Hairpin: a VM of the VPC using a VIP served by its own tier gets replies through the
    // router (un-DNATed) instead of straight from the backend.
    let _ = writeln!(c, "\tchain postrouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        c,
        "\t\toifname != \"{TRANSIT_NS}\" ct status dnat ip6 saddr @tiers6 counter masquerade comment \"hairpin\""
    );
    let _ = writeln!(c, "\t}}");
    lb_guard_chain(&mut c, LbFamily::V6, lbs);
    c
}

pub const TABLE6: &str = "stackfabric6";
const COMMENT_PREFIX: &str = "sf:";

/// ICMPv6 types always forwarded: neighbour discovery and the errors IPv6 needs (RFC 4890).
const ICMPV6_ALWAYS: &str = "destination-unreachable, packet-too-big, time-exceeded, \
parameter-problem, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert";

/// The /64s of the router's dual-stack tiers that the IPv4 router also has (the ones
/// [`crate::plan6`] addresses), sorted, for the `tiers6` set.
pub fn tier_prefixes(r: &VpcRouter, r6: &VpcRouter6) -> Vec<String> {
    let mut v: Vec<String> = r6
        .tiers
        .iter()
        .filter(|t| r.tiers.iter().any(|x| x.vni == t.vni))
        .map(|t| t.prefix.trunc().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The tiers whose ACL the IPv6 table enforces, in VNI order, each with its /64: those
/// [`tier_acls`] keeps for IPv4 that are dual-stack.
fn acl_tiers6<'a>(r: &'a VpcRouter, r6: &VpcRouter6) -> Vec<(&'a RouterTier, String)> {
    tier_acls(r)
        .into_iter()
        .filter_map(|t| {
            let t6 = r6.tiers.iter().find(|x| x.vni == t.vni)?;
            Some((t, t6.prefix.trunc().to_string()))
        })
        .collect()
}

/// The ACL sets and chains (`acl6_in_<vni>`, `acl6_eg_<vni>`) of the dual-stack tiers with
/// an ACL, and the two dispatch lines (`vmap`s) of the forward chain; all empty without.
fn acl_text6(r: &VpcRouter, r6: &VpcRouter6) -> (String, String, String) {
    let tiers = acl_tiers6(r, r6);
    let (mut sets, mut chains) = (String::new(), String::new());
    if tiers.is_empty() {
        return (sets, chains, String::new());
    }
    for (tier, _) in &tiers {
        let acl = tier
            .acl
            .as_ref()
            .expect("tier_acls keeps tiers with an ACL");
        let v = tier.vni;
        for (d, name, setp) in [
            (
                Direction::Ingress,
                format!("acl6_in_{v}"),
                format!("acl6_ins_{v}_"),
            ),
            (
                Direction::Egress,
                format!("acl6_eg_{v}"),
                format!("acl6_egs_{v}_"),
            ),
        ] {
            let t = render_chain_in(acl, d, Verdicts::FINAL, &setp, Family::V6);
            sets.push_str(&t.sets);
            let _ = write!(chains, "\tchain {name} {{\n{}\t}}\n", t.rules);
        }
    }
    let map = |kind: &str| -> String {
        let v: Vec<String> = tiers
            .iter()
            .map(|(t, p)| format!("{p} : jump acl6_{kind}_{}", t.vni))
            .collect();
        v.join(", ")
    };
    let t = TRANSIT_NS;
    let vmaps = format!(
        "\t\tiifname \"{t}\" ip6 daddr vmap {{ {} }}\n\t\toifname \"{t}\" ip6 saddr vmap {{ {} }}\n",
        map("in"),
        map("eg")
    );
    (sets, chains, vmaps)
}

/// The conntrack mark of IPv6 flows admitted under one set of ACLs (never 0).
fn acl_generation6(vmaps: &str, chains: &str) -> u32 {
    let h = Sha256::digest(format!("{vmaps}{chains}").as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]).max(1)
}

fn body(r: &VpcRouter, r6: &VpcRouter6) -> String {
    let mut c = String::new();
    let t = TRANSIT_NS;
    let _ = writeln!(c, "\tset tiers6 {{\n\t\ttype ipv6_addr\n\t\tflags interval");
    let tiers = tier_prefixes(r, r6);
    if !tiers.is_empty() {
        let _ = writeln!(c, "\t\telements = {{ {} }}", tiers.join(", "));
    }
    let _ = writeln!(c, "\t}}");
    let (sets, chains, vmaps) = acl_text6(r, r6);
    c.push_str(&sets);
    let lbs = load_balancers6(r6);
    c.push_str(&lb_text6(&lbs));
    let _ = writeln!(c, "\tchain forward {{");
    let _ = writeln!(
        c,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let generation = (!vmaps.is_empty()).then(|| acl_generation6(&vmaps, &chains));
    match generation {
        None => {
            let _ = writeln!(c, "\t\tct state established,related counter accept");
        }
        Some(g) => {
            // As the IPv4 table: established flows pass at once only if admitted under
            // these rules; one admitted before is checked again in its original direction.
            let _ = writeln!(
                c,
                "\t\tct state established,related ct mark {g:#010x} counter accept"
            );
            let _ = writeln!(
                c,
                "\t\tct direction reply ct state established,related counter accept"
            );
            let _ = writeln!(c, "\t\tct state invalid counter drop");
        }
    }
    // Anti-spoofing before anything is accepted for its type: the ICMPv6 that always passes
    // (errors, ND) must not let a VM put a source outside the tiers on the internet (a
    // forged packet-too-big towards a third party). Replies and related errors of admitted
    // flows are accepted above, whatever their source.
    let _ = writeln!(
        c,
        "\t\toifname \"{t}\" ip6 saddr != @tiers6 counter drop comment \"egress not from a tier\""
    );
    let _ = writeln!(
        c,
        "\t\ticmpv6 type {{ {ICMPV6_ALWAYS} }} counter accept comment \"icmpv6 needed\""
    );
    if let Some(g) = generation {
        c.push_str(&vmaps);
        let _ = writeln!(c, "\t\tct mark set {g:#010x}");
    }
    if !lbs.is_empty() {
        // New connections to a VIP, translated to a backend (a tier ACL above has judged
        // them already, as in IPv4).
        let _ = writeln!(
            c,
            "\t\tiifname \"{t}\" ct status dnat counter accept comment \"load balancer\""
        );
    }
    let _ = writeln!(
        c,
        "\t\toifname \"{t}\" ip6 saddr @tiers6 counter accept comment \"egress\""
    );
    let _ = writeln!(
        c,
        "\t\tiifname \"{t}\" counter drop comment \"new inbound\""
    );
    let _ = writeln!(c, "\t}}");
    c.push_str(&chains);
    c
}

/// The table definition of dual-stack router `r`/`r6`, with its digest as the table comment.
pub fn render_nft6(r: &VpcRouter, r6: &VpcRouter6) -> String {
    let b = body(r, r6);
    format!(
        "table ip6 {TABLE6} {{\n\tcomment \"{COMMENT_PREFIX}{}\"\n{b}}}\n",
        digest(&b)
    )
}

/// nft commands rewriting the IPv6 table's `lbsum` and the maps of `load` (empty without
/// load balancers).
pub fn lb_script6(load: &crate::nft::LbLoad) -> String {
    crate::nft::lb_script_in(&format!("ip6 {TABLE6}"), load)
}

/// One `nft -f` transaction replacing the table atomically (declare, delete, define), or,
/// with `None`, removing it (the VPC lost its IPv6 side).
pub fn transaction6(table: Option<&str>) -> String {
    format!(
        "table ip6 {TABLE6}\ndelete table ip6 {TABLE6}\n{}",
        table.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft;
    use crate::plan6::tests::router6 as r6;

    fn forward(t: &str) -> &str {
        &t[t.find("\tchain forward {").unwrap()..]
    }

    /// Established first, then the drop of spoofed egress, ICMPv6 errors and ND next, then
    /// egress from the tiers, then the drop of everything new from transit: the order is
    /// the semantics.
    #[test]
    fn a_dual_stack_router_drops_new_inbound_and_passes_replies_and_nd() {
        let r = nft::example();
        let t = render_nft6(&r, &r6(&r));
        assert!(t.starts_with("table ip6 stackfabric6 {\n\tcomment \"sf:"));
        assert!(t.contains("\tset tiers6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { 2001:db8:100:1::/64 }\n\t}\n"));
        let f = forward(&t);
        let order = [
            "\t\ttype filter hook forward priority filter; policy accept;\n",
            "\t\tct state established,related counter accept\n",
            "\t\toifname \"transit\" ip6 saddr != @tiers6 counter drop comment \"egress not from a tier\"\n",
            "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment \"icmpv6 needed\"\n",
            "\t\toifname \"transit\" ip6 saddr @tiers6 counter accept comment \"egress\"\n",
            "\t\tiifname \"transit\" counter drop comment \"new inbound\"\n",
        ];
        let at: Vec<usize> = order.iter().map(|l| f.find(l).expect(l)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{f}");
    }

    /// What leaves the VPC is checked for its source before anything is accepted for being
    /// ICMPv6: an ICMPv6 error or ND message with a source outside the tiers (a spoofed
    /// packet-too-big aimed at a third party, say) is dropped like any other spoofed
    /// packet, with or without a tier ACL. Related errors of admitted flows still pass (the
    /// `ct state` rules come first).
    #[test]
    fn spoofed_icmpv6_to_transit_is_dropped_before_icmpv6_is_accepted() {
        let mut r = nft::example();
        let x = r6(&r);
        let spoof =
            "		oifname \"transit\" ip6 saddr != @tiers6 counter drop comment \"egress not from a tier\"\n";
        for acl in [None, Some(web_acl())] {
            r.tiers[0].acl = acl;
            let t = render_nft6(&r, &x);
            let f = forward(&t);
            let at = |l: &str| f.find(l).unwrap_or_else(|| panic!("{l} in {f}"));
            assert!(at("ct state established,related") < at(spoof));
            assert!(at(spoof) < at("comment \"icmpv6 needed\""), "{f}");
            assert_eq!(f.matches("egress not from a tier").count(), 1, "{f}");
        }
    }

    #[test]
    fn digest_tracks_the_tiers_and_parses_back() {
        let r = nft::example();
        let mut x = r6(&r);
        let a = render_nft6(&r, &x);
        assert_eq!(nft::digest_of(&a), nft::digest_of(&render_nft6(&r, &x)));
        x.tiers[0].prefix = "2001:db8:100:2::/64".parse().unwrap();
        x.tiers[0].gateway = "2001:db8:100:2::1".parse().unwrap();
        let b = render_nft6(&r, &x);
        assert_ne!(nft::digest_of(&a), nft::digest_of(&b));
        assert!(b.contains("elements = { 2001:db8:100:2::/64 }"));
        // A tier the IPv4 router lacks is not in the set (plan6 refuses it anyway).
        x.tiers[0].vni = 5;
        assert!(!render_nft6(&r, &x).contains("elements"));
    }

    fn web_acl() -> sf_core::desired::TierAcl {
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
            list: "web".into(),
            default_action: AclAction::Deny,
            ingress: vec![
                rule(
                    5,
                    AclAction::Deny,
                    Some((80, 80)),
                    &["2001:db8:ffff::66/128"],
                ),
                rule(10, AclAction::Allow, Some((80, 80)), &["::/0"]),
                rule(20, AclAction::Allow, Some((22, 22)), &["0.0.0.0/0"]),
            ],
            egress: vec![rule(10, AclAction::Allow, Some((443, 443)), &[])],
        }
    }

    /// A dual-stack tier's ACL is enforced in IPv6 too: new connections from transit go to
    /// its ingress chain (IPv6 rules only, `::/0` = any address, then the default), new
    /// ones to transit to its egress chain, after the ICMPv6 that always passes; an ACL
    /// change re-checks established flows (a new conntrack mark).
    #[test]
    fn a_tier_acl_filters_ipv6_from_and_to_transit() {
        let mut r = nft::example();
        let x = r6(&r);
        let plain = render_nft6(&r, &x);
        assert!(!plain.contains("acl6_") && !plain.contains("ct mark"));
        r.tiers[0].acl = Some(web_acl());
        let t = render_nft6(&r, &x);
        let f = forward(&t);
        let order = [
            "ct state established,related ct mark 0x",
            "\t\tct direction reply ct state established,related counter accept\n",
            "\t\tct state invalid counter drop\n",
            "comment \"icmpv6 needed\"\n",
            "\t\tiifname \"transit\" ip6 daddr vmap { 2001:db8:100:1::/64 : jump acl6_in_1000001 }\n",
            "\t\toifname \"transit\" ip6 saddr vmap { 2001:db8:100:1::/64 : jump acl6_eg_1000001 }\n",
            "\t\tct mark set 0x",
            "comment \"new inbound\"",
        ];
        let at: Vec<usize> = order.iter().map(|l| f.find(l).expect(l)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{f}");
        let ins = &t[t.find("\tchain acl6_in_1000001 {").unwrap()..];
        let ins = &ins[..ins.find("\t}").unwrap()];
        assert!(
            ins.contains(
                "tcp dport 80 ip6 saddr 2001:db8:ffff::66 counter drop comment \"ingress 5\""
            ),
            "{ins}"
        );
        assert!(
            ins.contains("tcp dport 80 counter accept comment \"ingress 10\""),
            "{ins}"
        );
        assert!(
            !ins.contains("ingress 20"),
            "an IPv4-only rule is not in the IPv6 chain"
        );
        assert!(ins.contains("counter drop comment \"ingress default\""));
        assert!(t.contains(
            "\tchain acl6_eg_1000001 {\n\t\ttcp dport 443 counter accept comment \"egress 10\"\n"
        ));
        let mut changed = r.clone();
        changed.tiers[0].acl.as_mut().unwrap().ingress.remove(1);
        let mark = |t: &str| {
            t.lines()
                .find(|l| l.contains("ct mark set"))
                .map(str::to_string)
        };
        assert_ne!(mark(&t), mark(&render_nft6(&changed, &x)));
        assert_ne!(
            nft::digest_of(&t),
            nft::digest_of(&render_nft6(&changed, &x))
        );
    }

    /// IPv6 load balancers render as the IPv4 ones: an IPv6-typed Maglev map, the same
    /// hash into the mark, DNAT from the map, the guard, the source allow-list before DNAT,
    /// hairpin, and the forward chain admitting DNATed connections from transit before the
    /// drop of new inbound. Without any, the table is what it was.
    #[test]
    fn ipv6_load_balancers_render_maglev_dnat_guard_and_admission() {
        let r = nft::example();
        let plain = render_nft6(&r, &r6(&r));
        assert!(!plain.contains("lb") && !plain.contains("dnat"));
        let mut x = crate::plan6::tests::lb6_example(&r);
        let t = render_nft6(&r, &x);
        assert!(t.contains("\tset lbsum {\n\t\ttype mark\n\t}\n"));
        assert!(t.contains("\tmap lb0 {\n\t\ttype mark : ipv6_addr . inet_service\n\t}\n"));
        let hash = "\t\tip6 daddr 2001:db8:1ff::80 tcp dport 80 meta mark set jhash ip6 saddr . tcp sport . ip6 daddr . tcp dport mod 251 seed 0x0\n";
        let dnat = "\t\tip6 daddr 2001:db8:1ff::80 tcp dport 80 counter dnat ip6 to meta mark map @lb0 comment \"lb [2001:db8:1ff::80]:80/tcp\"\n";
        let (h, d) = (t.find(hash).expect(hash), t.find(dnat).expect(dnat));
        assert!(h < d, "the mark is set before the DNAT reads it");
        assert!(t.contains(
            "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        ));
        assert!(t.contains("\tchain lb_guard {\n\t\ttype filter hook prerouting priority dstnat + 1; policy accept;\n\t\tmeta mark != 0x00000000 meta mark set 0x00000000\n\t\tip6 daddr 2001:db8:1ff::80 tcp dport 80 counter reject with tcp reset comment \"lb [2001:db8:1ff::80]:80/tcp no backend\"\n"));
        assert!(t.contains("\t\toifname != \"transit\" ct status dnat ip6 saddr @tiers6 counter masquerade comment \"hairpin\"\n"));
        let f = forward(&t);
        let admit = f
            .find(
                "\t\tiifname \"transit\" ct status dnat counter accept comment \"load balancer\"\n",
            )
            .expect("DNATed connections admitted");
        assert!(admit < f.find("comment \"new inbound\"").unwrap());
        assert!(!t.contains("lb_source"), "no allow-list, no chain");
        // A source allow-list drops others before the Maglev mark and the DNAT.
        x.load_balancers[0].source_cidrs = vec!["2001:db8:ffff::/48".parse().unwrap()];
        let s = render_nft6(&r, &x);
        assert!(s.contains("\tset lbsrc0 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 2001:db8:ffff::/48 }\n\t}\n"));
        assert!(s.contains("\tchain lb_source {\n\t\ttype filter hook prerouting priority dstnat - 1; policy accept;\n\t\tip6 daddr 2001:db8:1ff::80 tcp dport 80 ip6 saddr != @lbsrc0 counter drop comment \"lb [2001:db8:1ff::80]:80/tcp source\"\n"));
        assert_ne!(nft::digest_of(&s), nft::digest_of(&t));
        // A backend of the other family makes the load balancer unrenderable, not a bad map.
        x.load_balancers[0].backends[0].ip = "10.10.1.21".parse().unwrap();
        assert!(load_balancers6(&x).is_empty());
        assert!(!render_nft6(&r, &x).contains("lb0"));
    }

    #[test]
    fn transaction_replaces_or_removes_the_table() {
        let r = nft::example();
        let t = render_nft6(&r, &r6(&r));
        let s = transaction6(Some(&t));
        assert!(s.starts_with(
            "table ip6 stackfabric6\ndelete table ip6 stackfabric6\ntable ip6 stackfabric6 {"
        ));
        assert_eq!(
            transaction6(None),
            "table ip6 stackfabric6\ndelete table ip6 stackfabric6\n"
        );
    }
}
