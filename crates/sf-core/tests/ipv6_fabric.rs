//! Routed IPv6 across the fabric (issue 21, fabric side): a site's IPv6 pools decide which
//! VPC ranges are routed (announced, globally unique) and what the leaves accept in IPv6
//! from each gateway; hypervisors may announce nothing in IPv6.

use sf_core::compile::compile_node;
use sf_core::desired::{DesiredObject, NodeDesired, Underlay};
use sf_core::event::VpcChildRef;
use sf_core::model::*;
use sf_core::validate::*;

fn node(name: &str, role: NodeRole, lo: &str, ports: &[&str]) -> Node {
    Node {
        name: name.into(),
        role,
        site: "lab".into(),
        asn: 65001,
        loopback: lo.parse().unwrap(),
        fabric_ports: ports.iter().map(|p| p.to_string()).collect(),
    }
}

fn vpc(name: &str, id: u32, ranges: &[&str]) -> Vpc {
    Vpc {
        tenant: "demo".into(),
        name: name.into(),
        cidr: "10.10.0.0/16".parse().unwrap(),
        site: "lab".into(),
        id,
        ipv6_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

fn pool(name: &str, cidr: &str, site: &str) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        site: site.into(),
    }
}

/// A leaf with one hypervisor and one gateway, tenant demo, the IPv4 pool, and VPC blue
/// (routed 2001:db8:100::/48 and ULA fd10:10::/48) placed on gw1.
fn fabric(with_v6_pool: bool) -> Intent {
    let mut i = Intent::default();
    for n in [
        node("leaf1", NodeRole::Switch, "10.255.0.1", &["hv1", "gw1"]),
        node("hv1", NodeRole::Hypervisor, "10.255.1.1", &["leaf1"]),
        node("gw1", NodeRole::Gateway, "10.255.2.1", &["leaf1"]),
    ] {
        i.nodes.insert(n.name.clone(), n);
    }
    i.tenants.insert(
        "demo".into(),
        Tenant {
            name: "demo".into(),
            description: String::new(),
        },
    );
    let mut pools = vec![pool("public", "203.0.113.0/24", "lab")];
    if with_v6_pool {
        pools.push(pool("public6", "2001:db8:100::/40", "lab"));
        // Another site's pool: never this site's routed space.
        pools.push(pool("other6", "2001:db8:200::/40", "elsewhere"));
    }
    for p in pools {
        i.pools.insert(p.name.clone(), p);
    }
    let blue = vpc("blue", 1, &["fd10:10::/48", "2001:db8:100::/48"]);
    i.placements.insert(
        blue.key(),
        Placement {
            primary: Some("gw1".into()),
            standby: None,
        },
    );
    i.vpcs.insert(blue.key(), blue);
    i
}

fn underlay(d: &NodeDesired) -> &Underlay {
    match d.objects.get("underlay") {
        Some(DesiredObject::Underlay(u)) => u,
        o => panic!("no underlay: {o:?}"),
    }
}

#[test]
fn ipv6_pools_are_stored_as_ipv4_pools_were() {
    // A pool stored before IPv6 pools existed decodes and encodes byte for byte.
    let old = r#"{"name":"public","cidr":"203.0.113.0/24","site":"lab"}"#;
    let p: Pool = serde_json::from_str(old).unwrap();
    assert_eq!(p.v4(), Some("203.0.113.0/24".parse().unwrap()));
    assert_eq!(serde_json::to_string(&p).unwrap(), old);
    let p6: Pool =
        serde_json::from_str(r#"{"name":"p6","cidr":"2001:db8:100::/40","site":"lab"}"#).unwrap();
    assert_eq!(p6.v6(), Some("2001:db8:100::/40".parse().unwrap()));
    assert!(!p6.contains4(&"203.0.113.1".parse().unwrap()));
}

#[test]
fn ipv6_pools_are_validated_like_ipv4_pools() {
    let i = fabric(true);
    validate_pool(&i, &pool("more6", "2001:db8:300::/40", "lab")).unwrap();
    let e = validate_pool(&i, &pool("bits", "2001:db8:300::1/40", "lab")).unwrap_err();
    assert_eq!(e.field, "pool.cidr");
    let e = validate_pool(&i, &pool("inside", "2001:db8:180::/48", "lab")).unwrap_err();
    assert_eq!(e.field, "pool.cidr", "{e}");
    assert!(e.message.contains("public6"), "{e}");
    // The families never overlap each other.
    validate_pool(&i, &pool("v4", "198.51.100.0/24", "lab")).unwrap();
}

#[test]
fn routed_ranges_are_unique_across_vpcs_and_ula_ranges_are_not() {
    let i = fabric(true);
    // Inside the pool and overlapping blue's routed range: refused, naming the index.
    let e = validate_vpc(&i, &vpc("red", 2, &["fd10:10::/48", "2001:db8:100:1::/64"])).unwrap_err();
    assert_eq!(e.field, "vpc.ipv6_ranges[1]", "{e}");
    assert!(e.message.contains("demo/blue"), "{e}");
    // The same ULA range as blue, and another routed range: fine.
    validate_vpc(&i, &vpc("red", 2, &["fd10:10::/48", "2001:db8:101::/48"])).unwrap();
    // A range holding a pool is neither routed nor private.
    let e = validate_vpc(&i, &vpc("red", 2, &["2001:db8::/32"])).unwrap_err();
    assert_eq!(e.field, "vpc.ipv6_ranges[0]", "{e}");
    // Another site's pool does not make a range routed here.
    validate_vpc(&i, &vpc("red", 2, &["2001:db8:200::/48"])).unwrap();
    // Without IPv6 pools nothing is routed: overlapping ranges are private to each VPC.
    validate_vpc(&fabric(false), &vpc("red", 2, &["2001:db8:100::/48"])).unwrap();
}

#[test]
fn a_range_update_may_not_take_another_vpcs_routed_range() {
    let mut i = fabric(true);
    let red = vpc("red", 2, &["fd10:10::/48"]);
    i.vpcs.insert(red.key(), red.clone());
    let mut taken = red.clone();
    taken.ipv6_ranges.push("2001:db8:100::/56".parse().unwrap());
    let e = validate_vpc_ipv6_ranges_update(&i, &taken).unwrap_err();
    assert_eq!(e.field, "vpc.ipv6_ranges[1]", "{e}");
    // blue itself may keep (re-validate) its own range.
    let blue = i.vpcs[&VpcChildRef::new("demo", "blue", "x").vpc_ref()].clone();
    validate_vpc_ipv6_ranges_update(&i, &blue).unwrap();
}

#[test]
fn a_gateway_announces_only_routed_ranges_and_redistributes_its_sites_pools() {
    let d = compile_node(&fabric(true), "gw1", 1).unwrap();
    let Some(DesiredObject::VpcRouter6(r)) = d.objects.get("vpc6/1") else {
        panic!("no vpc6/1")
    };
    assert_eq!(r.announce, vec!["2001:db8:100::/48".parse().unwrap()]);
    let u = underlay(&d);
    assert!(u.ipv6_unicast);
    assert_eq!(
        u.redistribute_host_routes6,
        vec!["2001:db8:100::/40".parse().unwrap()]
    );
    // Without an IPv6 pool: nothing routed, and the underlay is the IPv4 one.
    let d = compile_node(&fabric(false), "gw1", 1).unwrap();
    let Some(DesiredObject::VpcRouter6(r)) = d.objects.get("vpc6/1") else {
        panic!("no vpc6/1")
    };
    assert!(r.announce.is_empty());
    let u = underlay(&d);
    assert!(!u.ipv6_unicast && u.redistribute_host_routes6.is_empty());
}

#[test]
fn a_leaf_accepts_ipv6_from_gateways_inside_the_pools_and_none_from_hypervisors() {
    let d = compile_node(&fabric(true), "leaf1", 1).unwrap();
    let u = underlay(&d);
    assert!(u.ipv6_unicast);
    let of = |n: &str| u.peer_filters.iter().find(|f| f.neighbor == n).unwrap();
    assert_eq!(
        of("gw1").permit6,
        vec!["2001:db8:100::/40".parse().unwrap()]
    );
    assert!(of("hv1").permit6.is_empty());
    // No IPv6 pool: the leaf's underlay encodes exactly as before IPv6 (no leaf churn).
    let d = compile_node(&fabric(false), "leaf1", 1).unwrap();
    let json = serde_json::to_string(underlay(&d)).unwrap();
    assert!(
        !json.contains("ipv6") && !json.contains("permit6"),
        "{json}"
    );
}

#[test]
fn an_ipv6_pool_may_not_make_overlapping_ranges_routed() {
    let mut i = fabric(false);
    // Without a pool, blue's and red's identical ranges are private to each VPC.
    let red = vpc("red", 2, &["2001:db8:100::/56"]);
    i.vpcs.insert(red.key(), red);
    let e = validate_pool(&i, &pool("public6", "2001:db8:100::/40", "lab")).unwrap_err();
    assert_eq!(e.field, "pool.cidr");
    assert!(
        e.message.contains("demo/blue") && e.message.contains("demo/red"),
        "{e}"
    );
    // A pool inside a VPC's range would split it.
    let e = validate_pool(&fabric(false), &pool("small", "2001:db8:100::/52", "lab")).unwrap_err();
    assert!(e.message.contains("split"), "{e}");
    // Another site's pool does not route this site's ranges.
    validate_pool(&i, &pool("far", "2001:db8:100::/40", "elsewhere")).unwrap();
    validate_pool(&fabric(false), &pool("public6", "2001:db8:100::/40", "lab")).unwrap();
}

#[test]
fn an_ipv6_pool_routing_a_vpc_range_cannot_be_deleted() {
    let mut i = fabric(true);
    let e = check_delete_pool(&i, "public6").unwrap_err();
    assert_eq!((e.field.as_str(), e.kind), ("pool.name", ErrorKind::InUse));
    assert!(e.message.contains("2001:db8:100::/48"), "{e}");
    check_delete_pool(&i, "other6").expect("another site's pool routes nothing here");
    for v in i.vpcs.values_mut() {
        v.ipv6_ranges.retain(|r| r.to_string().starts_with("fd"));
    }
    check_delete_pool(&i, "public6").expect("only ULA ranges left");
}

/// The site's IPv6 pools are blackholed at the edge as the IPv4 ones are (switches announce
/// them, gateways hold them), never on hypervisors and never another site's pool.
#[test]
fn switches_and_gateways_blackhole_the_sites_ipv6_pools() {
    let i = fabric(true);
    let pool6: Vec<ipnet::Ipv6Net> = vec!["2001:db8:100::/40".parse().unwrap()];
    for n in ["leaf1", "gw1"] {
        let d = compile_node(&i, n, 1).unwrap();
        assert_eq!(underlay(&d).blackhole6, pool6, "{n}");
    }
    let hv = compile_node(&i, "hv1", 1).unwrap();
    assert!(underlay(&hv).blackhole6.is_empty());
    let d = compile_node(&fabric(false), "leaf1", 1).unwrap();
    assert!(underlay(&d).blackhole6.is_empty());
}

/// A pool that is a whole routed range of a VPC placed on the gateway is routed into that
/// VPC's router with the pool's own prefix: the gateway holds no blackhole for it (the
/// switches still do), while a gateway without that VPC does.
#[test]
fn a_gateway_does_not_blackhole_a_pool_that_is_a_whole_range_of_its_vpc() {
    let mut i = fabric(true);
    let mut gw2 = i.nodes["gw1"].clone();
    gw2.name = "gw2".into();
    gw2.loopback = "10.255.2.2".parse().unwrap();
    i.nodes.insert("gw2".into(), gw2);
    i.pools
        .insert("whole6".into(), pool("whole6", "2001:db8:300::/48", "lab"));
    let key = VpcChildRef::new("demo", "blue", "x").vpc_ref();
    i.vpcs
        .get_mut(&key)
        .unwrap()
        .ipv6_ranges
        .push("2001:db8:300::/48".parse().unwrap());
    let gw1 = compile_node(&i, "gw1", 1).unwrap();
    assert_eq!(
        underlay(&gw1).blackhole6,
        vec!["2001:db8:100::/40".parse::<ipnet::Ipv6Net>().unwrap()]
    );
    let gw2 = compile_node(&i, "gw2", 1).unwrap();
    assert_eq!(underlay(&gw2).blackhole6.len(), 2);
    let leaf = compile_node(&i, "leaf1", 1).unwrap();
    assert_eq!(underlay(&leaf).blackhole6.len(), 2);
}

/// An underlay stored or sent before IPv6 blackholes existed reads as having none.
#[test]
fn an_underlay_without_blackhole6_reads_as_none() {
    let d = compile_node(&fabric(false), "leaf1", 1).unwrap();
    let json = serde_json::to_string(underlay(&d)).unwrap();
    assert!(!json.contains("blackhole6"), "{json}");
    let back: Underlay = serde_json::from_str(&json).unwrap();
    assert!(back.blackhole6.is_empty());
}
