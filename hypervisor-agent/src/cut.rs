//! Cutting established flows that a changed ACL denies. The flow sets of the
//! `bridge stackfabric` table (see [`crate::acl`]) let an admitted flow pass whatever the
//! rules say afterwards, so an operator blocking an attack could not stop a running one.
//! After an ACL change the agent lists each tier's `orig_<vni>` set (off the packet path),
//! evaluates every flow against the new rules here in pure Rust, the way the tier chains
//! would for a new flow, and deletes the denied flows' entries from `orig_<vni>` and
//! `reply_<vni>`; their next packet meets the ACL and is dropped.
//!
//! Which chain a flow took on this hypervisor: `from_<vni>` when its originator is a local
//! VM of the tier (its address is one of the tier's ports, or, for a tier without port
//! records, inside the tier's CIDR), `to_<vni>` otherwise. IPv6 flows of a dual-stack tier
//! (`orig6_<vni>`, [`crate::acl6`]) are judged the same way against the IPv6 side (its
//! ports' `ipv6`, its /64), with no peer tier's ingress at the source, as in their chains.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use sf_core::desired::{AclAction, AclProtocol, AclRule, L2Network, L2Network6, TierAcl};
use sf_linux::acl::Direction;

use crate::acl::{ingress_acls, involved, TABLE};

/// The 5-tuple of a flow's originator packet (an `orig_<vni>` element).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    fn key(&self) -> String {
        format!(
            "{} . {} . {} . {} . {}",
            self.saddr, self.daddr, self.proto, self.sport, self.dport
        )
    }
    fn rev_key(&self) -> String {
        format!(
            "{} . {} . {} . {} . {}",
            self.daddr, self.saddr, self.proto, self.dport, self.sport
        )
    }
}

fn rule_matches(r: &AclRule, dir: Direction, f: &Flow) -> bool {
    let proto = match r.protocol {
        AclProtocol::All => true,
        AclProtocol::Tcp => f.proto == 6,
        AclProtocol::Udp => f.proto == 17,
        AclProtocol::Icmp | AclProtocol::Icmpv6 => false,
    };
    let ports = r.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&f.dport))
        || r.protocol == AclProtocol::All;
    let remote = match dir {
        Direction::Ingress => f.saddr,
        Direction::Egress => f.daddr,
    };
    proto && ports && (r.cidrs.is_empty() || r.cidrs.iter().any(|c| c.contains(&remote)))
}

/// Whether one direction of an ACL allows the flow as a new flow (first match wins).
pub fn allows(acl: &TierAcl, dir: Direction, f: &Flow) -> bool {
    let rules = match dir {
        Direction::Ingress => &acl.ingress,
        Direction::Egress => &acl.egress,
    };
    let action = rules
        .iter()
        .find(|r| rule_matches(r, dir, f))
        .map_or(acl.default_action, |r| r.action);
    action == AclAction::Allow
}

fn originates_here(n: &L2Network, n6: Option<&L2Network6>, f: &Flow) -> bool {
    match (f.saddr, n6) {
        (IpAddr::V4(a), _) if n.ports.is_empty() => n.cidr.contains(&a),
        (IpAddr::V4(a), _) => n.ports.iter().any(|p| p.ip == a),
        (IpAddr::V6(a), Some(n6)) if n6.ports.is_empty() => n6.prefix.contains(&a),
        (IpAddr::V6(a), Some(n6)) => n6.ports.iter().any(|p| p.ipv6 == a),
        (IpAddr::V6(_), None) => false,
    }
}

/// Whether the flow's destination is in the tier itself but not its router (the
/// same-tier ingress check of `from_V`/`from6_V`).
fn same_tier(n: &L2Network, n6: Option<&L2Network6>, f: &Flow) -> bool {
    match (f.daddr, n6) {
        (IpAddr::V4(d), _) => n.cidr.contains(&d) && d != n.gateway,
        (IpAddr::V6(d), Some(n6)) => n6.prefix.contains(&d) && d != n6.gateway,
        (IpAddr::V6(_), None) => false,
    }
}

/// Whether tier `n`'s chains (with its IPv6 side `n6`), with the ingress ACLs of the VPC's
/// tiers by VNI, now deny the flow.
pub fn denied(
    n: &L2Network,
    n6: Option<&L2Network6>,
    ingress: &BTreeMap<u32, &TierAcl>,
    f: &Flow,
) -> bool {
    let ing = |vni: u32| {
        ingress
            .get(&vni)
            .is_some_and(|a| !allows(a, Direction::Ingress, f))
    };
    if !originates_here(n, n6, f) {
        return n.acl.is_some() && ing(n.vni);
    }
    if let Some(a) = &n.acl {
        if !allows(a, Direction::Egress, f) {
            return true;
        }
        if same_tier(n, n6, f) && ing(n.vni) {
            return true;
        }
    }
    let IpAddr::V4(daddr) = f.daddr else {
        return false; // IPv6: no peer tier's ingress at the source
    };
    n.peer_tiers
        .iter()
        .filter(|p| p.vni != n.vni && p.acl.is_some() && !n.cidr.contains(&p.cidr.network()))
        .any(|p| p.cidr.contains(&daddr) && ing(p.vni))
}

/// The flows of an `nft -j list set` listing of an `orig_<vni>` set. Elements that do not
/// parse (a service name instead of a port, say) are skipped: never cut by mistake.
pub fn parse_flows(json: &str) -> Vec<Flow> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    let elems = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["set"]["elem"].as_array())
        .flatten();
    elems
        .filter_map(|e| {
            let c = e["elem"]["val"]["concat"]
                .as_array()
                .or_else(|| e["concat"].as_array())?;
            let addr = |i: usize| c.get(i)?.as_str()?.parse::<IpAddr>().ok();
            let num = |i: usize| c.get(i)?.as_u64().and_then(|n| u16::try_from(n).ok());
            let proto = match &c.get(2)? {
                serde_json::Value::String(s) if s == "tcp" => 6,
                serde_json::Value::String(s) if s == "udp" => 17,
                x => x.as_u64().and_then(|n| u8::try_from(n).ok())?,
            };
            Some(Flow {
                saddr: addr(0)?,
                daddr: addr(1)?,
                proto,
                sport: num(3)?,
                dport: num(4)?,
            })
        })
        .collect()
}

/// One transaction removing the flows from a tier's sets. Each delete is preceded by an
/// add (a no-op for an existing element) so that an entry that expired since the listing
/// cannot fail the transaction.
pub fn cut_script(vni: u32, flows: &[Flow]) -> String {
    let mut s = String::new();
    for f in flows {
        let fam = if f.saddr.is_ipv6() { "6" } else { "" };
        for (set, k) in [("orig", f.key()), ("reply", f.rev_key())] {
            let set = format!("{set}{fam}");
            let _ = writeln!(
                s,
                "add element bridge {TABLE} {set}_{vni} {{ {k} timeout 1s }}"
            );
            let _ = writeln!(s, "delete element bridge {TABLE} {set}_{vni} {{ {k} }}");
        }
    }
    s
}

/// Lists the flow sets of the ACL tiers `vnis` among `networks` (the networks in scope),
/// deletes the flows the current ACLs deny. Returns how many flows were cut.
pub async fn cut_denied(
    networks: &[&L2Network],
    nets6: &[&L2Network6],
    vnis: &BTreeSet<u32>,
) -> Result<usize, sf_linux::DeviceError> {
    let local: Vec<&L2Network> = networks.iter().copied().filter(|n| involved(n)).collect();
    let ingress = ingress_acls(&local, &mut Vec::new());
    let mut cut = 0;
    for n in local.into_iter().filter(|n| vnis.contains(&n.vni)) {
        let n6 = nets6.iter().copied().find(|x| x.vni == n.vni);
        let mut flows = Vec::new();
        let sets = std::iter::once("orig").chain(n6.map(|_| "orig6"));
        for set in sets {
            let set = format!("{set}_{}", n.vni);
            let listing =
                sf_linux::run("nft", &["-j", "list", "set", "bridge", TABLE, &set]).await?;
            flows.extend(
                parse_flows(&listing)
                    .into_iter()
                    .filter(|f| denied(n, n6, &ingress, f)),
            );
        }
        if flows.is_empty() {
            continue;
        }
        sf_linux::run_stdin("nft", &["-f", "-"], &cut_script(n.vni, &flows)).await?;
        cut += flows.len();
    }
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::tests::db_acl;
    use sf_core::desired::{LocalPort, PeerTier};

    fn flow(s: &str, d: &str, proto: u8, sport: u16, dport: u16) -> Flow {
        Flow {
            saddr: s.parse().unwrap(),
            daddr: d.parse().unwrap(),
            proto,
            sport,
            dport,
        }
    }

    fn db(ports: bool) -> L2Network {
        L2Network {
            vni: 2,
            tenant: "t".into(),
            vpc: "v".into(),
            network: "db".into(),
            cidr: "10.10.2.0/24".parse().unwrap(),
            gateway: "10.10.2.1".parse().unwrap(),
            ports: if ports {
                vec![LocalPort {
                    name: "db-1".into(),
                    ip: "10.10.2.11".parse().unwrap(),
                    mac: None,
                    attach: None,
                }]
            } else {
                vec![]
            },
            acl: Some(db_acl()),
            peer_tiers: vec![PeerTier {
                vni: 1,
                cidr: "10.10.1.0/24".parse().unwrap(),
                acl: None,
            }],
        }
    }

    #[test]
    fn flows_are_judged_by_the_chain_they_took() {
        let n = db(true);
        let acl = db_acl();
        let ingress = BTreeMap::from([(2, &acl)]);
        // web -> db:5432 arrives (to_db): ingress 10 allows from web, 5 denies web-66.
        assert!(!denied(
            &n,
            None,
            &ingress,
            &flow("10.10.1.12", "10.10.2.11", 6, 40000, 5432)
        ));
        assert!(denied(
            &n,
            None,
            &ingress,
            &flow("10.10.1.66", "10.10.2.11", 6, 40000, 5432)
        ));
        assert!(denied(
            &n,
            None,
            &ingress,
            &flow("10.10.1.12", "10.10.2.11", 6, 40000, 22)
        ));
        assert!(denied(
            &n,
            None,
            &ingress,
            &flow("10.10.1.12", "10.10.2.11", 17, 40000, 5432)
        ));
        // db-1 originates (from_db): egress allows all; to the same tier its ingress applies.
        assert!(!denied(
            &n,
            None,
            &ingress,
            &flow("10.10.2.11", "10.10.1.12", 6, 40000, 22)
        ));
        assert!(denied(
            &n,
            None,
            &ingress,
            &flow("10.10.2.11", "10.10.2.12", 6, 40000, 22)
        ));
        assert!(!denied(
            &n,
            None,
            &ingress,
            &flow("10.10.2.11", "10.10.2.1", 6, 40000, 22)
        ));
        // A tier without port records: the CIDR says who is local.
        let n = db(false);
        assert!(denied(
            &n,
            None,
            &ingress,
            &flow("10.10.2.13", "10.10.2.12", 6, 40000, 22)
        ));
    }

    #[test]
    fn a_peer_tiers_ingress_applies_at_the_source() {
        let mut web = db(true);
        web.vni = 1;
        web.network = "web".into();
        web.cidr = "10.10.1.0/24".parse().unwrap();
        web.gateway = "10.10.1.1".parse().unwrap();
        web.ports[0].ip = "10.10.1.66".parse().unwrap();
        web.acl = None;
        web.peer_tiers = vec![PeerTier {
            vni: 2,
            cidr: "10.10.2.0/24".parse().unwrap(),
            acl: Some(db_acl()),
        }];
        let acl = db_acl();
        let ingress = BTreeMap::from([(2, &acl)]);
        assert!(denied(
            &web,
            None,
            &ingress,
            &flow("10.10.1.66", "10.10.2.11", 6, 40000, 5432)
        ));
        assert!(!denied(
            &web,
            None,
            &ingress,
            &flow("10.10.1.66", "10.10.9.9", 6, 40000, 5432)
        ));
    }

    #[test]
    fn listing_parses_and_script_survives_expiry() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"set": {"family": "bridge", "name": "orig_2", "elem": [
            {"elem": {"val": {"concat": ["10.10.1.12", "10.10.2.11", "tcp", 40000, 5432]}, "timeout": 86400, "expires": 86399}},
            {"elem": {"val": {"concat": ["10.10.1.12", "10.10.2.11", 17, 40001, 53]}, "timeout": 30}},
            {"elem": {"val": {"concat": ["10.10.1.12", "10.10.2.11", "tcp", "ssh", 5432]}}}
        ]}}]}"#;
        let f = parse_flows(json);
        assert_eq!(
            f,
            vec![
                flow("10.10.1.12", "10.10.2.11", 6, 40000, 5432),
                flow("10.10.1.12", "10.10.2.11", 17, 40001, 53)
            ]
        );
        assert!(parse_flows("not json").is_empty());
        let s = cut_script(2, &f[..1]);
        assert_eq!(
            s,
            "add element bridge stackfabric orig_2 { 10.10.1.12 . 10.10.2.11 . 6 . 40000 . 5432 timeout 1s }\n\
             delete element bridge stackfabric orig_2 { 10.10.1.12 . 10.10.2.11 . 6 . 40000 . 5432 }\n\
             add element bridge stackfabric reply_2 { 10.10.2.11 . 10.10.1.12 . 6 . 5432 . 40000 timeout 1s }\n\
             delete element bridge stackfabric reply_2 { 10.10.2.11 . 10.10.1.12 . 6 . 5432 . 40000 }\n"
        );
    }

    #[test]
    fn ipv6_flows_are_judged_by_the_ipv6_rules() {
        let mut n = db(true);
        n.acl = Some(crate::acl::tests::db_acl6());
        let acl = n.acl.clone().unwrap();
        let ingress = BTreeMap::from([(2, &acl)]);
        let n6 = sf_core::desired::L2Network6 {
            vni: 2,
            prefix: "fd10:10:0:2::/64".parse().unwrap(),
            gateway: "fd10:10:0:2::1".parse().unwrap(),
            router_link_local: "fe80::5f:ff:fe00:1".parse().unwrap(),
            vpc_tiers: vec![],
            ports: vec![sf_core::desired::LocalPort6 {
                name: "db-1".into(),
                ipv6: "fd10:10:0:2::11".parse().unwrap(),
                mac: None,
            }],
        };
        let j = |f: &Flow| denied(&n, Some(&n6), &ingress, f);
        // In: tcp 80 from fd40::/16 is allowed (ingress 20), port 22 or another source is not.
        assert!(!j(&flow("fd40:40::5", "fd10:10:0:2::11", 6, 40000, 80)));
        assert!(j(&flow("fd40:40::5", "fd10:10:0:2::11", 6, 40000, 22)));
        assert!(j(&flow("fd50::5", "fd10:10:0:2::11", 6, 40000, 80)));
        // Out from db-1: egress 20 allows ::/0; inside the tier its own ingress applies too.
        assert!(!j(&flow("fd10:10:0:2::11", "2001:db8::1", 17, 5000, 53)));
        assert!(j(&flow("fd10:10:0:2::11", "fd10:10:0:2::12", 6, 40000, 22)));
        // An IPv4 rule never admits an IPv6 flow (ingress 10 is tcp 5432 from 10.10.1.0/24).
        assert!(j(&flow("fd40:40::5", "fd10:10:0:2::11", 6, 40000, 5432)));
        // Listing and cut script of an IPv6 set.
        let json = r#"{"nftables": [{"set": {"name": "orig6_2", "elem": [{"elem": {"val": {"concat": ["fd40:40::5", "fd10:10:0:2::11", "tcp", 40000, 22]}, "timeout": 86400}}]}}]}"#;
        let flows = parse_flows(json);
        assert_eq!(
            flows,
            vec![flow("fd40:40::5", "fd10:10:0:2::11", 6, 40000, 22)]
        );
        let script = cut_script(2, &flows);
        assert!(script.contains("delete element bridge stackfabric orig6_2 { fd40:40::5 . fd10:10:0:2::11 . 6 . 40000 . 22 }"), "{script}");
        assert!(script.contains("delete element bridge stackfabric reply6_2 { fd10:10:0:2::11 . fd40:40::5 . 6 . 22 . 40000 }"));
    }
}
