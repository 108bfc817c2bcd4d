//! Netris v1 ACL records → StackFabric ACL lists (pure; no I/O).
//!
//! CloudStack sends each item of a tier's network ACL as one Netris ACL record with prefixes
//! instead of a tier reference: an ingress item has `dst_prefix` = the tier's CIDR and
//! `src_prefix` = the item's CIDR, an egress item the reverse. So a record belongs to the tier
//! whose CIDR equals its destination (ingress) or, failing that, its source (egress); a
//! record that names no tier's CIDR is stored but enforces nothing, and the API says so.
//!
//! Every tier that has records gets one derived list, `cs-acl-<vnet id>`, owned by the REST
//! layer and recomputed whenever ACL records or the VPC's tiers change. Netris records carry
//! no rule number, so rules are evaluated in creation order (the Netris id, which only grows)
//! and first match wins; the list's default action is *allow*, because CloudStack sends the
//! deny items of its lists (also the `default_deny` list's "deny all") explicitly. `established`
//! needs no mapping: the dataplane is stateful, replies of allowed flows always pass. Source
//! ports are not matched (CloudStack sends 1-65535).
//!
//! IPv6 records work the same way. CloudStack puts a dual-stack tier's IPv6 /64
//! (`network.getIp6Cidr()`) where an IPv4 record has the tier's CIDR, so an IPv6 record belongs
//! to the tier whose /64 (the vnet's IPv6 gateway) equals its destination or source; both
//! prefixes of a record are of one family (the wire refuses a mix). Its rule goes into the
//! tier's one derived list, among the IPv4 rules in creation order: the model's rules carry
//! their family in their CIDRs, and each dataplane (the hypervisors' bridge filter east-west,
//! the VPC router's IPv6 firewall north-south) applies the rules of its family, as for sfctl's.
//!
//! A load balancer rule limited to source CIDRs arrives as ACL records too (System VPC,
//! `…-LBACL0-<rule>` deny-all plus one `…-LBACL{i}-<rule>` permit per CIDR, each with
//! `dst_prefix` = the VIP/32). Those are the LB's *source list*, not a tier's ACL: they become
//! the load balancer's `source_cidrs`, enforced on the serving gateway before DNAT
//! ([`lb_sources`]). The deny-all is CloudStack's "and nobody else", so order does not matter:
//! the permits are the list, whichever arrives first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sf_core::desired::{AclAction, AclProtocol, AclRule};
use sf_core::model::{AclList, AclListRule, Direction};

use super::meta::{Db, Kind, Record, SfRef, Spec};
use super::wire::{AclSpec, LbSpec};

/// Prefix of the ACL lists the REST layer owns; operators' own lists never start with it.
pub const LIST_PREFIX: &str = "cs-acl-";

/// A tier of a Netris VPC as the ACL mapping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Netris id of the vnet record (names the derived list).
    pub vnet_id: u64,
    /// Netris name of the vnet (CloudStack's, carrying its network id).
    pub vnet_name: String,
    /// The StackFabric network name.
    pub network: String,
    pub cidr: Ipv4Net,
    /// The tier's IPv6 /64 (a dual-stack vnet's IPv6 gateway), if it has one.
    pub ipv6: Option<Ipv6Net>,
}

impl Tier {
    /// Whether `prefix` is this tier's CIDR of its family.
    fn is(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(p) => *p == self.cidr,
            IpNet::V6(p) => self.ipv6 == Some(*p),
        }
    }
}

/// The name of the list derived for a vnet.
pub fn list_name(vnet_id: u64) -> String {
    format!("{LIST_PREFIX}{vnet_id}")
}

/// The tiers of Netris VPC `vpc` in `db` (vnets that own a StackFabric network).
pub fn tiers(db: &Db, vpc: u64) -> Vec<Tier> {
    db.of(Kind::Vnet)
        .filter(|r| r.vpc == vpc)
        .filter_map(|r| match (&r.spec, &r.sf) {
            (Spec::Vnet(v), Some(SfRef::Network { name, .. })) => Some(Tier {
                vnet_id: r.id,
                vnet_name: r.name.clone(),
                network: name.clone(),
                cidr: v.gateway.trunc(),
                // A vnet with a bad IPv6 gateway was refused when written; none is stored.
                ipv6: super::wire::vnet_ipv6_prefix(v).ok().flatten(),
            }),
            _ => None,
        })
        .collect()
}

/// CloudStack's network token (`N9`) in one of its names (`D1-A2-Z1-V5-N9-ACL3`,
/// `D1-A2-Z1-V5-N9-tier1`).
fn network_token(name: &str) -> Option<&str> {
    name.split('-').find(|seg| {
        seg.len() > 1 && seg.starts_with('N') && seg[1..].bytes().all(|b| b.is_ascii_digit())
    })
}

/// Which tier and direction record `a` (named `name`) applies to, if any. A rule between two
/// tiers (source one tier's CIDR, destination another's) reads both as an ingress rule of the
/// destination and an egress rule of the source; CloudStack's names settle it, as they carry
/// the id of the network whose list holds the item (`…-N9-ACL3` belongs to `…-N9-tier1`).
/// Without such a hint, ingress wins.
pub fn place<'t>(name: &str, a: &AclSpec, tiers: &'t [Tier]) -> Option<(&'t Tier, Direction)> {
    let ingress = tiers.iter().find(|t| t.is(&a.dst_prefix));
    let egress = tiers.iter().find(|t| t.is(&a.src_prefix));
    let hint = network_token(name);
    let named = |t: &&Tier| hint.is_some() && network_token(&t.vnet_name) == hint;
    match (ingress, egress) {
        (Some(i), Some(e)) if !named(&i) && named(&e) => Some((e, Direction::Egress)),
        (Some(i), _) => Some((i, Direction::Ingress)),
        (None, Some(e)) => Some((e, Direction::Egress)),
        (None, None) => None,
    }
}

/// One record as a rule of its tier's list.
pub fn rule(a: &AclSpec, number: u32, direction: Direction) -> AclListRule {
    let protocol = match a.proto.as_str() {
        "tcp" => AclProtocol::Tcp,
        "udp" => AclProtocol::Udp,
        "icmp" => AclProtocol::Icmp,
        _ => AclProtocol::All,
    };
    let ports = match protocol {
        AclProtocol::Tcp | AclProtocol::Udp => {
            let (from, to) = (a.dst_port_from.max(1), a.dst_port_to);
            (from, to)
                .ne(&(1, 65535))
                .then_some((from, to))
                .filter(|(f, t)| f <= t)
        }
        _ => None,
    };
    let remote = match direction {
        Direction::Ingress => a.src_prefix,
        Direction::Egress => a.dst_prefix,
    };
    AclListRule {
        direction,
        rule: AclRule {
            number,
            action: if a.action == "deny" {
                AclAction::Deny
            } else {
                AclAction::Allow
            },
            protocol,
            ports,
            icmp_type: None,
            icmp_code: None,
            cidrs: vec![remote],
        },
    }
}

/// The lists that the ACL records of Netris VPC `vpc` derive, by list name, for StackFabric
/// VPC (`tenant`, `sf_vpc`). Tiers without records get no list.
pub fn derive(db: &Db, vpc: u64, tenant: &str, sf_vpc: &str) -> BTreeMap<String, AclList> {
    let tiers = tiers(db, vpc);
    let mut lists: BTreeMap<String, AclList> = BTreeMap::new();
    // `db.of` yields records in id order: creation order.
    for r in db.of(Kind::Acl).filter(|r| r.vpc == vpc) {
        let Spec::Acl(a) = &r.spec else { continue };
        let Some((tier, direction)) = place(&r.name, a, &tiers) else {
            continue;
        };
        let list = lists
            .entry(list_name(tier.vnet_id))
            .or_insert_with(|| AclList {
                tenant: tenant.to_string(),
                vpc: sf_vpc.to_string(),
                name: list_name(tier.vnet_id),
                default_action: AclAction::Allow,
                rules: vec![],
                tiers: vec![tier.network.clone()],
            });
        let number = list.rules.len() as u32 + 1;
        list.rules.push(rule(a, number, direction));
    }
    lists
}

/// The source list of a VIP whose LB ACLs deny all and permit nothing: 0.0.0.0/32, an
/// address no packet from the internet carries, so the gateway's source set admits nobody
/// (an empty list would mean everyone).
pub const NO_SOURCE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32);

/// [`NO_SOURCE`] for an IPv6 VIP: `::/128`, the unspecified address, never a packet's source
/// from the internet.
pub const NO_SOURCE6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128);

/// Whether ACL record `a` is a source rule of load balancer `lb`: its destination is the
/// VIP's host prefix (/32; /128 for an IPv6 VIP, which CloudStack sends as "<v6>/32" and the
/// wire reads as the /128, see `wire::acl_prefix`) and, for TCP/UDP records, its protocol and
/// port range cover the LB's.
fn is_lb_acl(a: &AclSpec, lb: &LbSpec) -> bool {
    let Ok(vip) = lb.ip.parse::<IpAddr>() else {
        return false;
    };
    if a.dst_prefix != IpNet::from(vip) {
        return false;
    }
    match a.proto.as_str() {
        "tcp" | "udp" => {
            a.proto.eq_ignore_ascii_case(&lb.protocol)
                && (a.dst_port_from.max(1)..=a.dst_port_to).contains(&lb.port)
        }
        "icmp" => false,
        _ => true,
    }
}

/// The `source_cidrs` that the LB ACL records in `db` give load balancer `lb`: empty (everyone)
/// without LB ACLs or when a permit covers 0.0.0.0/0 (`::/0`); the permits' sources (sorted,
/// without duplicates) otherwise; [`NO_SOURCE`] ([`NO_SOURCE6`]) when only denies are listed.
pub fn lb_sources(db: &Db, lb: &LbSpec) -> Vec<IpNet> {
    let mut any = false;
    let mut permits = BTreeSet::new();
    for r in db.of(Kind::Acl) {
        let Spec::Acl(a) = &r.spec else { continue };
        if !is_lb_acl(a, lb) {
            continue;
        }
        any = true;
        if a.action != "deny" {
            permits.insert(a.src_prefix.trunc());
        }
    }
    let v6 = lb.ip.contains(':');
    let (everyone, nobody) = if v6 {
        (IpNet::V6(Ipv6Net::default()), IpNet::V6(NO_SOURCE6))
    } else {
        (IpNet::V4(Ipv4Net::default()), IpNet::V4(NO_SOURCE))
    };
    match (any, permits.is_empty()) {
        (false, _) => vec![],
        _ if permits.contains(&everyone) => vec![],
        (true, true) => vec![nobody],
        (true, false) => permits.into_iter().collect(),
    }
}

/// The load balancer record whose source list ACL record `a` belongs to, if any.
fn lb_of<'d>(db: &'d Db, a: &AclSpec) -> Option<(&'d Record, &'d LbSpec)> {
    db.of(Kind::L4lb).find_map(|r| match &r.spec {
        Spec::L4lb(l) if is_lb_acl(a, l) => Some((r, l)),
        _ => None,
    })
}

/// What a record enforces, for the API's answer ("ingress of tier X", or why nothing).
pub fn describe(db: &Db, r: &Record) -> String {
    let Spec::Acl(a) = &r.spec else {
        return String::new();
    };
    if let Some((lr, l)) = lb_of(db, a) {
        let how = if a.action == "deny" {
            "closes it to every source not permitted"
        } else {
            "admits this source"
        };
        return format!(
            "enforced as a source rule of load balancer {:?} ({}:{}): {how}",
            lr.name, l.ip, l.port
        );
    }
    let tiers = tiers(db, r.vpc);
    match place(&r.name, a, &tiers) {
        Some((t, Direction::Ingress)) => format!(
            "enforced as an ingress rule of tier {:?} (list {})",
            t.network,
            list_name(t.vnet_id)
        ),
        Some((t, Direction::Egress)) => format!(
            "enforced as an egress rule of tier {:?} (list {})",
            t.network,
            list_name(t.vnet_id)
        ),
        None => format!(
            "stored but NOT enforced: neither dst_prefix {} nor src_prefix {} is the CIDR of a tier of this VPC",
            a.dst_prefix, a.src_prefix
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::wire::VnetSpec;
    use sf_core::event::{VpcChildRef, VpcRef};

    fn acl(id: u64, action: &str, proto: &str, src: &str, dst: &str, ports: (u16, u16)) -> Record {
        Record {
            id,
            name: format!("D1-A2-Z1-V5-N9-ACL{id}"),
            tenant: "Admin".into(),
            vpc: 5,
            spec: Spec::Acl(AclSpec {
                action: action.into(),
                proto: proto.into(),
                established: false,
                src_prefix: src.parse().unwrap(),
                src_port_from: 1,
                src_port_to: 65535,
                dst_prefix: dst.parse().unwrap(),
                dst_port_from: ports.0,
                dst_port_to: ports.1,
                comment: String::new(),
            }),
            sf: None,
        }
    }

    fn vnet(id: u64, name: &str, gw: &str) -> Record {
        Record {
            id,
            name: name.into(),
            tenant: "Admin".into(),
            vpc: 5,
            spec: Spec::Vnet(VnetSpec {
                vni: 1500000 + id as u32,
                gateway: gw.parse().unwrap(),
                state: "active".into(),
                tags: vec![],
                more_gateways: vec![],
                port_addrs: vec![],
            }),
            sf: Some(SfRef::Network {
                tenant: "Admin".into(),
                vpc: "v".into(),
                name: name.into(),
            }),
        }
    }

    fn db(recs: Vec<Record>) -> Db {
        let mut db = Db::default();
        for r in recs {
            db.recs.insert(r.id, (r, 1));
        }
        db
    }

    #[test]
    fn records_map_to_their_tier_in_creation_order() {
        let db = db(vec![
            vnet(10, "D1-A2-Z1-V5-N9-tier1", "10.20.1.1/24"),
            vnet(11, "D1-A2-Z1-V5-N10-tier2", "10.20.2.1/24"),
            acl(21, "permit", "tcp", "0.0.0.0/0", "10.20.1.0/24", (80, 80)),
            acl(20, "deny", "tcp", "0.0.0.0/0", "10.20.1.0/24", (1, 65535)),
            acl(
                22,
                "deny",
                "tcp",
                "10.20.1.0/24",
                "10.20.2.0/24",
                (8022, 8022),
            ),
            acl(23, "permit", "ip", "0.0.0.0/0", "10.99.0.0/24", (1, 65535)),
        ]);
        let lists = derive(&db, 5, "Admin", "v");
        assert_eq!(lists.len(), 1, "{lists:?}");
        let l = &lists["cs-acl-10"];
        assert_eq!(l.tiers, vec!["D1-A2-Z1-V5-N9-tier1".to_string()]);
        assert_eq!(l.default_action, AclAction::Allow);
        let got: Vec<_> = l
            .rules
            .iter()
            .map(|r| (r.rule.number, r.direction, r.rule.action, r.rule.ports))
            .collect();
        // id 20 first (created first), then 21; 22 is an egress rule of tier1 (its source).
        assert_eq!(
            got,
            vec![
                (1, Direction::Ingress, AclAction::Deny, None),
                (2, Direction::Ingress, AclAction::Allow, Some((80, 80))),
                (3, Direction::Egress, AclAction::Deny, Some((8022, 8022))),
            ]
        );
        assert_eq!(l.rules[2].rule.cidrs, vec!["10.20.2.0/24".parse().unwrap()]);
        assert_eq!(l.rules[0].rule.cidrs, vec!["0.0.0.0/0".parse().unwrap()]);
        assert!(describe(&db, &db.recs[&23].0).contains("NOT enforced"));
        assert!(
            describe(&db, &db.recs[&22].0).contains("egress rule of tier \"D1-A2-Z1-V5-N9-tier1\"")
        );
        // The same record under tier2's network id is an ingress rule of tier2.
        let mut r = db.recs[&22].0.clone();
        r.name = "D1-A2-Z1-V5-N10-ACL22".into();
        let Spec::Acl(a) = &r.spec else {
            unreachable!()
        };
        let t = tiers(&db, 5);
        let (tier, dir) = place(&r.name, a, &t).unwrap();
        assert_eq!((tier.vnet_id, dir), (11, Direction::Ingress));
    }

    #[test]
    fn derived_lists_pass_validation() {
        use sf_core::model::{Intent, Network, Tenant, Vpc};
        let db = db(vec![
            vnet(10, "tier1", "10.20.1.1/24"),
            acl(
                20,
                "permit",
                "icmp",
                "10.0.0.0/8",
                "10.20.1.0/24",
                (1, 65535),
            ),
            acl(21, "permit", "udp", "0.0.0.0/0", "10.20.1.0/24", (53, 53)),
            acl(22, "deny", "ip", "10.20.1.0/24", "0.0.0.0/0", (1, 65535)),
        ]);
        let mut intent = Intent::default();
        intent.tenants.insert(
            "Admin".into(),
            Tenant {
                name: "Admin".into(),
                description: String::new(),
            },
        );
        intent.vpcs.insert(
            VpcRef::new("Admin", "v"),
            Vpc {
                ipv6_ranges: Vec::new(),
                tenant: "Admin".into(),
                name: "v".into(),
                cidr: "10.20.0.0/16".parse().unwrap(),
                site: "lab".into(),
                id: 7,
            },
        );
        intent.networks.insert(
            VpcChildRef::new("Admin", "v", "tier1"),
            Network {
                ipv6_prefix: None,
                tenant: "Admin".into(),
                vpc: "v".into(),
                name: "tier1".into(),
                cidr: "10.20.1.0/24".parse().unwrap(),
                vni: 1500010,
                gateway: "10.20.1.1".parse().unwrap(),
            },
        );
        for l in derive(&db, 5, "Admin", "v").values() {
            sf_core::validate::validate_acl(&intent, l).expect("valid");
        }
    }
}
