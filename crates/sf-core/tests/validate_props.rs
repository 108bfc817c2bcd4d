//! Property tests of the validators (issue 18, "fuzz both APIs"): arbitrary objects, names and
//! addresses never make a validator panic, and every rejection names a field of the object
//! kind it checks, so an API user always learns what to fix.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proptest::prelude::*;
use sf_core::desired::L4Protocol;
use sf_core::model::*;
use sf_core::validate::*;

/// Names: mostly ones the demo intent holds (so lookups succeed and deeper checks run), some
/// valid unknown ones, and arbitrary strings (invalid characters, empty, too long, unicode).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["demo", "blue", "red", "web", "hv1", "gw1", "public"])
            .prop_map(String::from),
        2 => "[A-Za-z0-9._-]{1,70}",
        1 => ".{0,80}",
    ]
}

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (0u8..=255).prop_map(|h| Ipv4Addr::new(10, 10, 1, h)),
        (0u8..=255).prop_map(|h| Ipv4Addr::new(203, 0, 113, h)),
    ]
}

fn net() -> impl Strategy<Value = Ipv4Net> {
    (ip(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(a, l).unwrap())
}

/// The lab's demo: tenant demo, VPCs blue and red (10.10.0.0/16) with tier web, two nodes,
/// a public pool.
fn demo() -> Intent {
    let mut i = Intent::default();
    i.tenants.insert(
        "demo".into(),
        Tenant {
            name: "demo".into(),
            description: String::new(),
        },
    );
    for (id, (vpc, vni)) in [("blue", 1_000_001), ("red", 1_000_002)]
        .into_iter()
        .enumerate()
    {
        let v = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "demo".into(),
            name: vpc.into(),
            cidr: "10.10.0.0/16".parse().unwrap(),
            site: String::new(),
            id: id as u32 + 1,
        };
        i.vpcs.insert(v.key(), v);
        let n = Network {
            ipv6_prefix: None,
            tenant: "demo".into(),
            vpc: vpc.into(),
            name: "web".into(),
            cidr: "10.10.1.0/24".parse().unwrap(),
            vni,
            gateway: "10.10.1.1".parse().unwrap(),
        };
        i.networks.insert(n.key(), n);
    }
    for (name, role, lo) in [
        ("hv1", NodeRole::Hypervisor, "10.255.1.1"),
        ("gw1", NodeRole::Gateway, "10.255.2.1"),
    ] {
        let n = Node {
            name: name.into(),
            role,
            site: String::new(),
            asn: 65001,
            loopback: lo.parse().unwrap(),
            fabric_ports: vec!["eth1".into()],
        };
        i.nodes.insert(name.into(), n);
    }
    let p = Pool {
        name: "public".into(),
        cidr: "203.0.113.0/24".parse().unwrap(),
        site: String::new(),
    };
    i.pools.insert(p.name.clone(), p);
    i
}

/// A rejection names a field of `kinds` (`network.cidr`, `vpc`, ...) and says why.
fn named(r: Result<(), ValidationError>, kinds: &[&str]) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let head = e.field.split(['.', '[']).next().unwrap_or("");
        prop_assert!(
            kinds.contains(&head),
            "field {:?} not one of {kinds:?} ({e})",
            e.field
        );
        prop_assert!(!e.message.is_empty());
        let text = e.to_string();
        prop_assert!(text.contains(&e.field), "{text}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn names_are_checked_by_a_simple_rule(s in ".{0,80}") {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let r = validate_name("thing.name", &s);
        prop_assert_eq!(r.is_ok(), valid);
        if let Err(e) = r {
            prop_assert_eq!(e.field, "thing.name");
            prop_assert_eq!(e.kind, ErrorKind::Invalid);
        }
    }

    #[test]
    fn tenants(n in name(), d in ".{0,40}") {
        named(validate_tenant(&demo(), &Tenant { name: n, description: d }), &["tenant"])?;
    }

    #[test]
    fn vpcs(t in name(), n in name(), cidr in net(), site in name(), id in any::<u32>()) {
        let v = Vpc { ipv6_ranges: Vec::new(), tenant: t, name: n, cidr, site, id };
        named(validate_vpc(&demo(), &v), &["vpc", "tenant"])?;
    }

    #[test]
    fn networks(t in name(), v in name(), n in name(), cidr in net(), vni in any::<u32>(),
                gw in ip()) {
        let net = Network { ipv6_prefix: None, tenant: t, vpc: v, name: n, cidr, vni, gateway: gw };
        named(validate_network(&demo(), &net), &["network", "tenant", "vpc"])?;
    }

    #[test]
    fn ports(t in name(), n in name(), v in name(), nw in name(), node in name(), ip in ip(),
             mac in proptest::option::of(".{0,20}")) {
        let p = PortBinding { ipv6: None, tenant: t, name: n, vpc: v, network: nw, node, ip, mac,
                              attach: None };
        named(validate_port(&demo(), &p), &["port", "tenant", "vpc", "network", "node"])?;
    }

    #[test]
    fn nodes(n in name(), role in 0..3u8, site in name(), asn in any::<u32>(), lo in ip(),
             ports in prop::collection::vec(".{0,20}", 0..4)) {
        let role = [NodeRole::Hypervisor, NodeRole::Switch, NodeRole::Gateway][role as usize];
        let node = Node { name: n, role, site, asn, loopback: lo, fabric_ports: ports };
        named(validate_node(&demo(), &node), &["node"])?;
    }

    #[test]
    fn pools(n in name(), cidr in net(), site in name()) {
        named(validate_pool(&demo(), &Pool { name: n, cidr: cidr.into(), site }), &["pool"])?;
    }

    #[test]
    fn nat_rules(t in name(), v in name(), n in name(), which in 0..3u8, pub_ip in ip(),
                 priv_ip in ip(), pp in any::<u16>(), qp in any::<u16>(), udp in any::<bool>()) {
        let kind = match which {
            0 => NatKind::Snat { public_ip: pub_ip },
            1 => NatKind::PortForward {
                public_ip: pub_ip,
                protocol: if udp { L4Protocol::Udp } else { L4Protocol::Tcp },
                public_port: pp,
                private_ip: priv_ip,
                private_port: qp,
            },
            _ => NatKind::StaticNat { public_ip: pub_ip, private_ip: priv_ip },
        };
        let r = NatRule { tenant: t, vpc: v, name: n, kind };
        named(validate_nat(&demo(), &r), &["nat", "tenant", "vpc"])?;
    }

    #[test]
    fn routes(t in name(), v in name(), n in name(), prefix in net(), nh in ip()) {
        let r = StaticRoute { tenant: t, vpc: v, name: n, prefix: prefix.into(), nexthop: nh.into() };
        named(validate_route(&demo(), &r), &["route", "tenant", "vpc"])?;
    }

    #[test]
    fn lb_source_lists(cidrs in prop::collection::vec(net(), 0..40)) {
        let cidrs: Vec<ipnet::IpNet> = cidrs.into_iter().map(Into::into).collect();
        named(validate_lb_source_cidrs(&cidrs), &["lb", "load_balancer"])?;
    }

    #[test]
    fn deletes_never_panic(t in name(), v in name(), n in name()) {
        let i = demo();
        let _ = check_delete_tenant(&i, &t);
        let _ = check_delete_vpc(&i, &t, &v);
        let _ = check_delete_network(&i, &t, &v, &n);
        let _ = check_delete_port(&i, &t, &n);
        let _ = check_delete_node(&i, &n);
        let _ = check_delete_pool(&i, &n);
        let _ = check_delete_nat(&i, &t, &v, &n);
        let _ = check_delete_route(&i, &t, &v, &n);
        let _ = check_delete_acl(&i, &t, &v, &n);
        let _ = check_delete_lb(&i, &t, &v, &n);
        let _ = check_delete_dc(&i, &t, &v, &n);
    }
}
