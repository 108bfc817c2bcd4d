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

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sf_core::desired::{L4Protocol, VpcRouter};
use sha2::{Digest, Sha256};

use crate::names::TRANSIT_NS;

pub const TABLE: &str = "stackfabric";
const COMMENT_PREFIX: &str = "sf:";

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
    errors
}

fn elements<I: IntoIterator<Item = String>>(c: &mut String, items: I) {
    let items: Vec<String> = items.into_iter().collect();
    if !items.is_empty() {
        let _ = writeln!(c, "\t\telements = {{ {} }}", items.join(", "));
    }
}

fn body(r: &VpcRouter) -> String {
    let mut c = String::new();
    let t = TRANSIT_NS;
    let _ = writeln!(c, "\tset inside {{\n\t\ttype ipv4_addr\n\t\tflags interval");
    elements(&mut c, inside(r).iter().map(|n| n.to_string()));
    let _ = writeln!(c, "\t}}");
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
    let _ = writeln!(c, "\tchain prerouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(c, "\t\tdnat ip to ip daddr . tcp dport map @pf_tcp");
    let _ = writeln!(c, "\t\tdnat ip to ip daddr . udp dport map @pf_udp");
    let _ = writeln!(c, "\t\tdnat ip to ip daddr map @static_in");
    let _ = writeln!(c, "\t}}");
    let _ = writeln!(c, "\tchain postrouting {{");
    let _ = writeln!(
        c,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(c, "\t\toifname \"{t}\" snat ip to ip saddr map @static_out");
    if let Some(s) = r.snat {
        let _ = writeln!(c, "\t\toifname \"{t}\" ip saddr @inside snat ip to {s}");
    }
    let _ = writeln!(
        c,
        "\t\toifname != \"{t}\" ct status dnat ip saddr @inside masquerade"
    );
    let _ = writeln!(c, "\t}}");
    let _ = writeln!(c, "\tchain forward {{");
    let _ = writeln!(
        c,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(c, "\t\tct state established,related accept");
    let _ = writeln!(c, "\t\tiifname \"{t}\" ct status dnat accept");
    let _ = writeln!(c, "\t\tiifname \"{t}\" drop");
    let _ = writeln!(c, "\t}}");
    c
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

#[cfg(test)]
pub use tests::example;

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::{PortForward, RouterTier, StaticNat};

    pub fn example() -> VpcRouter {
        VpcRouter {
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
        }
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
        assert!(t.contains("\t\toifname \"transit\" ip saddr @inside snat ip to 203.0.113.10\n"));
        assert!(t.contains("dnat ip to ip daddr . tcp dport map @pf_tcp"));
        assert!(t.contains("ct status dnat ip saddr @inside masquerade"));
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

    #[test]
    fn digest_parses_from_nft_listing() {
        let listing = "table ip stackfabric {\n\tcomment \"sf:0011223344556677\"\n\tset inside {\n";
        assert_eq!(digest_of(listing).as_deref(), Some("0011223344556677"));
        assert_eq!(digest_of("table ip stackfabric {\n}"), None);
    }
}
