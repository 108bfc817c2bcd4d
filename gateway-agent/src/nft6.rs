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
//! - ICMPv6 that IPv6 cannot work without is always accepted: neighbour discovery
//!   (RS, RA, NS, NA) and the errors PMTU discovery and traceroute rely on (packet-too-big,
//!   time-exceeded, parameter-problem, destination-unreachable).
//! - towards `transit` (egress to the internet): only sources inside one of the router's
//!   dual-stack tiers (no spoofed or Direct Connect source leaves the VPC), accepted.
//! - from `transit` (new connections from the internet): dropped, as NAT does for IPv4.
//! - between tiers: policy accept, as the IPv4 table (east-west is filtered on the
//!   hypervisors, at the source).
//!
//! A separate table rather than turning `ip stackfabric` into `inet`: the IPv4 table stays
//! byte for byte what it was (same digest, so upgrading reloads no IPv4-only router), its
//! NAT and Maglev maps are IPv4-typed anyway, and an IPv4-only router gets no IPv6 table.

use std::fmt::Write;

use sf_core::desired::{VpcRouter, VpcRouter6};

use crate::names::TRANSIT_NS;
use crate::nft::digest;

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

fn body(r: &VpcRouter, r6: &VpcRouter6) -> String {
    let mut c = String::new();
    let t = TRANSIT_NS;
    let _ = writeln!(c, "\tset tiers6 {{\n\t\ttype ipv6_addr\n\t\tflags interval");
    let tiers = tier_prefixes(r, r6);
    if !tiers.is_empty() {
        let _ = writeln!(c, "\t\telements = {{ {} }}", tiers.join(", "));
    }
    let _ = writeln!(c, "\t}}");
    let _ = writeln!(c, "\tchain forward {{");
    let _ = writeln!(
        c,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(c, "\t\tct state established,related counter accept");
    let _ = writeln!(
        c,
        "\t\ticmpv6 type {{ {ICMPV6_ALWAYS} }} counter accept comment \"icmpv6 needed\""
    );
    let _ = writeln!(
        c,
        "\t\toifname \"{t}\" ip6 saddr @tiers6 counter accept comment \"egress\""
    );
    let _ = writeln!(
        c,
        "\t\toifname \"{t}\" counter drop comment \"egress not from a tier\""
    );
    let _ = writeln!(
        c,
        "\t\tiifname \"{t}\" counter drop comment \"new inbound\""
    );
    let _ = writeln!(c, "\t}}");
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
    use sf_core::desired::RouterTier6;

    fn r6(r: &VpcRouter) -> VpcRouter6 {
        VpcRouter6 {
            tenant: r.tenant.clone(),
            vpc: r.vpc.clone(),
            id: r.id,
            role: r.role,
            link_local: sf_core::desired::vpc_link_local(r.id),
            tiers: vec![RouterTier6 {
                name: "web".into(),
                vni: 1_000_001,
                prefix: "2001:db8:100:1::/64".parse().unwrap(),
                gateway: "2001:db8:100:1::1".parse().unwrap(),
            }],
            announce: vec!["2001:db8:100::/48".parse().unwrap()],
        }
    }

    fn forward(t: &str) -> &str {
        &t[t.find("\tchain forward {").unwrap()..]
    }

    /// Established first, ICMPv6 errors and ND next, then egress from the tiers, then the
    /// drop of everything new from transit: the order is the semantics.
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
            "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment \"icmpv6 needed\"\n",
            "\t\toifname \"transit\" ip6 saddr @tiers6 counter accept comment \"egress\"\n",
            "\t\toifname \"transit\" counter drop comment \"egress not from a tier\"\n",
            "\t\tiifname \"transit\" counter drop comment \"new inbound\"\n",
        ];
        let at: Vec<usize> = order.iter().map(|l| f.find(l).expect(l)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{f}");
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
