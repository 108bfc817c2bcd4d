//! IPv6 dual-stack intent (issue 21): VPC ranges, tier /64s and port addresses are validated
//! with the offending field named, and objects stored before IPv6 existed still load.

use sf_core::event::VpcChildRef;
use sf_core::model::*;
use sf_core::validate::*;

fn field_of(r: Result<(), ValidationError>) -> String {
    r.expect_err("must be rejected").field
}

fn node(name: &str, role: NodeRole, lo: &str) -> Node {
    Node {
        name: name.into(),
        role,
        site: "lab".into(),
        asn: 65001,
        loopback: lo.parse().unwrap(),
        fabric_ports: vec![],
    }
}

fn vpc(name: &str, ranges: &[&str]) -> Vpc {
    Vpc {
        tenant: "demo".into(),
        name: name.into(),
        cidr: "10.10.0.0/16".parse().unwrap(),
        site: "lab".into(),
        id: 1,
        ipv6_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

fn tier(vpc: &str, name: &str, third: u8, v6: Option<&str>) -> Network {
    Network {
        tenant: "demo".into(),
        vpc: vpc.into(),
        name: name.into(),
        cidr: format!("10.10.{third}.0/24").parse().unwrap(),
        vni: 1_000_000 + u32::from(third),
        gateway: format!("10.10.{third}.1").parse().unwrap(),
        ipv6_prefix: v6.map(|p| p.parse().unwrap()),
    }
}

fn port(name: &str, ip: &str, v6: Option<&str>) -> PortBinding {
    PortBinding {
        tenant: "demo".into(),
        name: name.into(),
        vpc: "blue".into(),
        network: "web".into(),
        node: "hv1".into(),
        ip: ip.parse().unwrap(),
        ipv6: v6.map(|a| a.parse().unwrap()),
        mac: None,
        attach: None,
    }
}

/// Tenant demo, dual-stack VPC blue (2001:db8:100::/56) with tier web (…:1::/64) and one
/// port, and an IPv4-only VPC red.
fn dual() -> Intent {
    let mut i = Intent::default();
    i.nodes.insert(
        "hv1".into(),
        node("hv1", NodeRole::Hypervisor, "10.255.1.1"),
    );
    i.tenants.insert(
        "demo".into(),
        Tenant {
            name: "demo".into(),
            description: String::new(),
        },
    );
    for v in [vpc("blue", &["2001:db8:100::/56"]), vpc("red", &[])] {
        i.vpcs.insert(v.key(), v);
    }
    let web = tier("blue", "web", 1, Some("2001:db8:100:1::/64"));
    i.networks.insert(web.key(), web);
    let p = port("web-1", "10.10.1.11", Some("2001:db8:100:1::11"));
    i.ports.insert(p.key(), p);
    i
}

#[test]
fn vpc_ipv6_ranges_are_checked_by_index() {
    let i = dual();
    let ok = |r: &[&str]| {
        let mut v = vpc("green", r);
        v.id = 3;
        validate_vpc(&i, &v)
    };
    assert!(ok(&[]).is_ok(), "IPv4-only VPCs stay valid");
    assert!(
        ok(&["fd00:1::/48", "2001:db8:5::/48"]).is_ok(),
        "ULA and documentation"
    );
    assert!(
        ok(&["2001:db8:100::/56"]).is_ok(),
        "two VPCs may hold the same range"
    );
    for (bad, why) in [
        (vec!["2001:db8:1::1/48"], "host bits"),
        (vec!["2001:db8:1::/96"], "longer than /64"),
        (vec!["ff02::/16"], "multicast"),
        (vec!["fe80::/10"], "link-local"),
        (vec!["::/64"], "unspecified"),
    ] {
        let e = ok(&bad).unwrap_err();
        assert_eq!(e.field, "vpc.ipv6_ranges[0]", "{bad:?}");
        assert!(e.message.contains(why), "{bad:?}: {e}");
    }
    let e = ok(&["2001:db8::/48", "2001:db8:0:5::/64"]).unwrap_err();
    assert_eq!(e.field, "vpc.ipv6_ranges[1]");
    assert!(e.message.contains("overlaps vpc.ipv6_ranges[0]"), "{e}");
}

#[test]
fn tier_ipv6_prefix_must_be_a_free_64_of_the_vpc() {
    let i = dual();
    let db = |p: Option<&str>| validate_network(&i, &tier("blue", "db", 2, p));
    assert!(
        db(None).is_ok(),
        "a tier of a dual-stack VPC may stay IPv4 only"
    );
    assert!(db(Some("2001:db8:100:2::/64")).is_ok());
    for (bad, why) in [
        ("2001:db8:100:2::/56", "must be a /64"),
        ("2001:db8:100:2::/80", "must be a /64"),
        ("2001:db8:100:2::5/64", "host bits"),
        ("2001:db8:200:2::/64", "outside the VPC's IPv6 ranges"),
        ("2001:db8:100:1::/64", "overlaps network \"web\""),
    ] {
        let e = db(Some(bad)).unwrap_err();
        assert_eq!(e.field, "network.ipv6_prefix", "{bad}");
        assert!(e.message.contains(why), "{bad}: {e}");
    }
    let red = validate_network(&i, &tier("red", "db", 2, Some("2001:db8:100:2::/64")));
    let e = red.unwrap_err();
    assert_eq!(e.field, "network.ipv6_prefix");
    assert!(e.message.contains("no IPv6 range"), "{e}");
}

#[test]
fn the_tier_gateway_is_the_prefix_one() {
    let t = tier("blue", "web", 1, Some("2001:db8:100:1::/64"));
    assert_eq!(t.ipv6_gateway(), Some("2001:db8:100:1::1".parse().unwrap()));
    assert_eq!(tier("blue", "web", 1, None).ipv6_gateway(), None);
}

#[test]
fn port_ipv6_must_be_a_free_host_of_its_tier() {
    let mut i = dual();
    assert!(validate_port(&i, &port("web-2", "10.10.1.12", None)).is_ok());
    assert!(validate_port(&i, &port("web-2", "10.10.1.12", Some("2001:db8:100:1::12"))).is_ok());
    for (bad, why) in [
        ("2001:db8:100:2::12", "not a host address"),
        ("2001:db8:100:1::", "not a host address"),
        ("2001:db8:100:1::1", "IPv6 gateway"),
        ("2001:db8:100:1::11", "already used by port \"web-1\""),
    ] {
        let e = validate_port(&i, &port("web-2", "10.10.1.12", Some(bad))).unwrap_err();
        assert_eq!(e.field, "port.ipv6", "{bad}");
        assert!(e.message.contains(why), "{bad}: {e}");
    }
    // A tier without a /64 takes no IPv6 port address.
    let key = VpcChildRef::new("demo", "blue", "web");
    i.networks.get_mut(&key).unwrap().ipv6_prefix = None;
    let e = validate_port(&i, &port("web-2", "10.10.1.12", Some("2001:db8:100:1::12")));
    assert_eq!(field_of(e), "port.ipv6");
}

#[test]
fn objects_stored_before_ipv6_still_load_and_store_unchanged() {
    let v: Vpc = serde_json::from_str(
        r#"{"tenant":"demo","name":"blue","cidr":"10.10.0.0/16","site":"lab","id":1}"#,
    )
    .unwrap();
    assert!(v.ipv6_ranges.is_empty());
    let n_json = r#"{"tenant":"demo","vpc":"blue","name":"web","cidr":"10.10.1.0/24","vni":1000001,"gateway":"10.10.1.1"}"#;
    let n: Network = serde_json::from_str(n_json).unwrap();
    assert_eq!(n.ipv6_prefix, None);
    assert_eq!(
        serde_json::to_string(&n).unwrap(),
        n_json,
        "IPv4-only JSON unchanged"
    );
    let p: PortBinding = serde_json::from_str(
        r#"{"tenant":"demo","name":"web-1","vpc":"blue","network":"web","node":"hv1","ip":"10.10.1.11"}"#,
    )
    .unwrap();
    assert_eq!(p.ipv6, None);
    let mut dual = n.clone();
    dual.ipv6_prefix = Some("2001:db8:100:1::/64".parse().unwrap());
    let back: Network = serde_json::from_str(&serde_json::to_string(&dual).unwrap()).unwrap();
    assert_eq!(back, dual);
}

#[test]
fn a_vpc_range_change_keeps_every_tier_inside() {
    let i = dual();
    let mut v = vpc("blue", &["2001:db8:100::/56", "fd00:1::/48"]);
    assert!(
        validate_vpc_ipv6_ranges_update(&i, &v).is_ok(),
        "adding a range"
    );
    v.ipv6_ranges = vec!["fd00:1::/48".parse().unwrap()];
    let e = validate_vpc_ipv6_ranges_update(&i, &v).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.kind),
        ("vpc.ipv6_ranges", ErrorKind::InUse)
    );
    assert!(e.message.contains("\"web\""), "{e}");
    let mut moved = vpc("blue", &["2001:db8:100::/56"]);
    moved.cidr = "10.11.0.0/16".parse().unwrap();
    assert_eq!(
        field_of(validate_vpc_ipv6_ranges_update(&i, &moved)),
        "vpc.cidr"
    );
    let bad = vpc("blue", &["2001:db8:100::/56", "2001:db8:100:8::/64"]);
    assert_eq!(
        field_of(validate_vpc_ipv6_ranges_update(&i, &bad)),
        "vpc.ipv6_ranges[1]"
    );
    let missing = vpc("green", &[]);
    assert_eq!(
        validate_vpc_ipv6_ranges_update(&i, &missing)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
}

fn route(name: &str, vpc: &str, prefix: &str, nexthop: &str) -> StaticRoute {
    StaticRoute {
        tenant: "demo".into(),
        vpc: vpc.into(),
        name: name.into(),
        prefix: prefix.parse().unwrap(),
        nexthop: nexthop.parse().unwrap(),
    }
}

#[test]
fn ipv4_routes_stored_before_ipv6_routes_load_and_store_unchanged() {
    let json = r#"{"tenant":"demo","vpc":"blue","name":"r1","prefix":"10.99.0.0/16","nexthop":"10.10.1.5"}"#;
    let r: StaticRoute = serde_json::from_str(json).unwrap();
    assert_eq!(r, route("r1", "blue", "10.99.0.0/16", "10.10.1.5"));
    assert_eq!(serde_json::to_string(&r).unwrap(), json);
    let v6 = route("r6", "blue", "fd10:99::/64", "2001:db8:100:1::11");
    let back: StaticRoute = serde_json::from_str(&serde_json::to_string(&v6).unwrap()).unwrap();
    assert_eq!(back, v6);
}

#[test]
fn ipv6_routes_are_checked_field_by_field() {
    let i = dual();
    assert!(validate_route(
        &i,
        &route("r", "blue", "fd10:99::/64", "2001:db8:100:1::11")
    )
    .is_ok());
    assert!(
        validate_route(&i, &route("r", "blue", "::/0", "2001:db8:100:1::abcd")).is_ok(),
        "any host of the /64 may be the next hop, not only a port's address"
    );
    let bad = |prefix: &str, nexthop: &str, vpc: &str| {
        let e = validate_route(&i, &route("r", vpc, prefix, nexthop)).unwrap_err();
        (e.field, e.message)
    };
    let (f, m) = bad("fd10:99::/64", "10.10.1.11", "blue");
    assert_eq!(f, "route.nexthop");
    assert!(m.contains("different address families"), "{m}");
    assert_eq!(
        bad("10.99.0.0/16", "2001:db8:100:1::11", "blue").0,
        "route.nexthop"
    );
    assert_eq!(
        bad("fd10:99::1/64", "2001:db8:100:1::11", "blue").0,
        "route.prefix"
    );
    let (f, m) = bad("fd10:99::/64", "2001:db8:100:2::11", "blue");
    assert_eq!(f, "route.nexthop", "outside every tier /64: {m}");
    assert_eq!(
        bad("fd10:99::/64", "2001:db8:100:1::1", "blue").0,
        "route.nexthop",
        "the router's ::1"
    );
    assert_eq!(
        bad("fd10:99::/64", "2001:db8:100:1::", "blue").0,
        "route.nexthop"
    );
    let (f, m) = bad("fd10:99::/64", "2001:db8:100:1::11", "red");
    assert_eq!(f, "route.prefix", "a VPC without IPv6: {m}");
    assert!(m.contains("no dual-stack tier"), "{m}");
    // A tier holding an IPv6 next hop cannot be deleted under the route.
    let mut held = i.clone();
    let r = route("r", "blue", "fd10:99::/64", "2001:db8:100:1::11");
    held.routes.insert(r.key(), r);
    assert_eq!(
        check_delete_network(&held, "demo", "blue", "web")
            .unwrap_err()
            .kind,
        ErrorKind::InUse
    );
}

mod compiled {
    use super::*;
    use sf_core::compile::compile_node;
    use sf_core::desired::{vpc_link_local, DesiredObject, NodeDesired, RouterRole};

    /// `dual()` with gateways gw1 (primary of blue and red) and gw2 (standby of blue).
    fn placed() -> Intent {
        let mut i = dual();
        for (n, lo) in [("gw1", "10.255.2.1"), ("gw2", "10.255.2.2")] {
            i.nodes.insert(n.into(), node(n, NodeRole::Gateway, lo));
        }
        let red = VpcChildRef::new("demo", "red", "web").vpc_ref();
        let mut red_vpc = i.vpcs[&red].clone();
        red_vpc.id = 2;
        i.vpcs.insert(red.clone(), red_vpc);
        let red_web = tier("red", "web", 5, None);
        i.networks.insert(red_web.key(), red_web);
        i.placements.insert(
            VpcChildRef::new("demo", "blue", "x").vpc_ref(),
            Placement {
                primary: Some("gw1".into()),
                standby: Some("gw2".into()),
            },
        );
        i.placements.insert(
            red,
            Placement {
                primary: Some("gw1".into()),
                standby: None,
            },
        );
        i
    }

    fn object<'a>(d: &'a NodeDesired, key: &str) -> Option<&'a DesiredObject> {
        d.objects.get(key)
    }

    #[test]
    fn the_link_local_follows_the_virtual_mac() {
        // 02:5f:00:00:00:01 -> EUI-64 005f:00ff:fe00:0001.
        assert_eq!(
            vpc_link_local(1),
            "fe80::5f:ff:fe00:1".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(
            vpc_link_local(0x0102_0304),
            "fe80::5f:1ff:fe02:304"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn gateways_get_the_vpcs_ipv6_router_the_same_on_primary_and_standby() {
        let mut i = placed();
        // blue's range is routed: inside the site's IPv6 pool (announce keeps only such).
        let pool6 = Pool {
            name: "v6".into(),
            cidr: "2001:db8:100::/40".parse().unwrap(),
            site: "lab".into(),
        };
        i.pools.insert(pool6.name.clone(), pool6);
        let gw1 = compile_node(&i, "gw1", 1).unwrap();
        let gw2 = compile_node(&i, "gw2", 1).unwrap();
        let Some(DesiredObject::VpcRouter6(p)) = object(&gw1, "vpc6/1") else {
            panic!(
                "no vpc6/1 on gw1: {:?}",
                gw1.objects.keys().collect::<Vec<_>>()
            )
        };
        let Some(DesiredObject::VpcRouter6(s)) = object(&gw2, "vpc6/1") else {
            panic!("no vpc6/1 on gw2")
        };
        assert_eq!((p.role, s.role), (RouterRole::Primary, RouterRole::Standby));
        assert_eq!(p.link_local, s.link_local, "stable across failover");
        assert_eq!(p.link_local, vpc_link_local(1));
        assert_eq!(p.tiers, s.tiers);
        assert_eq!(p.tiers.len(), 1);
        assert_eq!(p.tiers[0].prefix, "2001:db8:100:1::/64".parse().unwrap());
        assert_eq!(
            p.tiers[0].gateway,
            "2001:db8:100:1::1".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(p.announce, vec!["2001:db8:100::/56".parse().unwrap()]);
        assert!(
            object(&gw1, "vpc6/2").is_none(),
            "an IPv4-only VPC has no IPv6 router"
        );
        assert!(object(&gw1, "vpc/2").is_some());
        // The IPv4 router is unchanged by IPv6: same as with the IPv6 fields cleared.
        let mut v4 = i.clone();
        for n in v4.networks.values_mut() {
            n.ipv6_prefix = None;
        }
        for v in v4.vpcs.values_mut() {
            v.ipv6_ranges.clear();
        }
        let gw1_v4 = compile_node(&v4, "gw1", 1).unwrap();
        assert_eq!(object(&gw1, "vpc/1"), object(&gw1_v4, "vpc/1"));
        assert!(object(&gw1_v4, "vpc6/1").is_none());
    }

    #[test]
    fn hypervisors_get_the_ports_ipv6_for_anti_spoofing() {
        let mut i = placed();
        let p2 = port("web-2", "10.10.1.12", None);
        i.ports.insert(p2.key(), p2);
        let hv = compile_node(&i, "hv1", 1).unwrap();
        let Some(DesiredObject::L2Network6(n)) = object(&hv, "net6/1000001") else {
            panic!(
                "no net6/1000001: {:?}",
                hv.objects.keys().collect::<Vec<_>>()
            )
        };
        assert_eq!(n.prefix, "2001:db8:100:1::/64".parse().unwrap());
        assert_eq!(n.router_link_local, vpc_link_local(1));
        let ports: Vec<(&str, String)> = n
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.ipv6.to_string()))
            .collect();
        assert_eq!(ports, vec![("web-1", "2001:db8:100:1::11".to_string())]);
        // The desired state still round-trips through its wire encoding.
        let bytes = serde_json::to_vec(&hv.objects["net6/1000001"]).unwrap();
        let back: DesiredObject = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(&back, &hv.objects["net6/1000001"]);
    }

    #[test]
    fn ipv6_routes_go_to_the_ipv6_router_and_ipv4_routes_stay_put() {
        let mut i = placed();
        let v4 = route("r4", "blue", "10.99.0.0/16", "10.10.1.11");
        let before = compile_node(&i, "gw1", 1).unwrap();
        i.routes.insert(v4.key(), v4);
        for (n, p) in [("r6b", "fd10:99:2::/64"), ("r6a", "fd10:99:1::/64")] {
            let r = route(n, "blue", p, "2001:db8:100:1::11");
            i.routes.insert(r.key(), r);
        }
        let gw1 = compile_node(&i, "gw1", 1).unwrap();
        let Some(DesiredObject::VpcRouter(r4)) = object(&gw1, "vpc/1") else {
            panic!("no vpc/1")
        };
        let v4s: Vec<String> = r4.routes.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(
            v4s,
            vec!["10.99.0.0/16"],
            "only IPv4 routes on the IPv4 router"
        );
        let Some(DesiredObject::VpcRouter6(r6)) = object(&gw1, "vpc6/1") else {
            panic!("no vpc6/1")
        };
        let v6s: Vec<String> = r6
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.prefix, r.nexthop))
            .collect();
        assert_eq!(
            v6s,
            vec![
                "fd10:99:1::/64 via 2001:db8:100:1::11",
                "fd10:99:2::/64 via 2001:db8:100:1::11"
            ]
        );
        // Without IPv6 routes the IPv6 router's encoding has no `routes` key (objects of
        // agents built before it decode the same).
        let Some(DesiredObject::VpcRouter6(old)) = object(&before, "vpc6/1") else {
            panic!("no vpc6/1 before")
        };
        assert!(!serde_json::to_string(old).unwrap().contains("routes"));
        let bytes = serde_json::to_vec(&gw1.objects["vpc6/1"]).unwrap();
        let back: DesiredObject = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(&back, &gw1.objects["vpc6/1"]);
    }
    /// An IPv6 load balancer goes to the router's IPv6 side (public: from the site's pool,
    /// outside the VPC's ranges), backends named "[ip]:port"; the IPv4 router is unchanged.
    #[test]
    fn ipv6_load_balancers_go_to_the_ipv6_router_and_ipv4_ones_stay_put() {
        let mut i = placed();
        for (k, v) in super::lb6::with_pools().pools {
            i.pools.insert(k, v);
        }
        let before = compile_node(&i, "gw1", 1).unwrap();
        let mut public = super::lb6::lb(
            "2001:db8:1ff::80",
            &["2001:db8:100:1::12", "2001:db8:100:1::11"],
        );
        public.name = "pub6".into();
        let internal = super::lb6::lb("2001:db8:100:ff::80", &["2001:db8:100:1::11"]);
        let mut v4 = super::lb6::lb("203.0.113.20", &["10.10.1.11"]);
        v4.name = "v4".into();
        for l in [&public, &internal, &v4] {
            i.load_balancers.insert(l.key(), l.clone());
        }
        let gw1 = compile_node(&i, "gw1", 1).unwrap();
        let Some(DesiredObject::VpcRouter(r4)) = object(&gw1, "vpc/1") else {
            panic!("no vpc/1")
        };
        let names: Vec<&str> = r4.load_balancers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["v4"],
            "only IPv4 load balancers on the IPv4 router"
        );
        assert_eq!(r4.load_balancers[0].backends[0].name, "10.10.1.11:80");
        let Some(DesiredObject::VpcRouter6(r6)) = object(&gw1, "vpc6/1") else {
            panic!("no vpc6/1")
        };
        let got: Vec<(&str, bool, Vec<&str>)> = r6
            .load_balancers
            .iter()
            .map(|l| {
                let b = l.backends.iter().map(|b| b.name.as_str()).collect();
                (l.name.as_str(), l.public, b)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("lb6", false, vec!["[2001:db8:100:1::11]:80"]),
                (
                    "pub6",
                    true,
                    vec!["[2001:db8:100:1::11]:80", "[2001:db8:100:1::12]:80"]
                ),
            ]
        );
        // Without IPv6 load balancers the IPv6 router's encoding has no such key.
        let Some(DesiredObject::VpcRouter6(old)) = object(&before, "vpc6/1") else {
            panic!("no vpc6/1 before")
        };
        assert!(!serde_json::to_string(old)
            .unwrap()
            .contains("load_balancers"));
        let bytes = serde_json::to_vec(&gw1.objects["vpc6/1"]).unwrap();
        let back: DesiredObject = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(&back, &gw1.objects["vpc6/1"]);
    }
}

/// IPv6 load balancers (issue 21): VIP, backends and source CIDRs of one family, an IPv6 VIP
/// public from a site IPv6 pool or internal in the VPC's ranges outside every tier.
mod lb6 {
    use super::*;
    use sf_core::desired::{HealthCheck, L4Protocol};

    /// `dual()` with the site's IPv6 pool (blue's range inside it) and an IPv4 pool.
    pub(super) fn with_pools() -> Intent {
        let mut i = dual();
        for (name, cidr) in [("v6", "2001:db8:100::/40"), ("v4", "203.0.113.0/24")] {
            let p = Pool {
                name: name.into(),
                cidr: cidr.parse().unwrap(),
                site: "lab".into(),
            };
            i.pools.insert(p.name.clone(), p);
        }
        i
    }

    pub(super) fn lb(vip: &str, backends: &[&str]) -> LoadBalancer {
        LoadBalancer {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: "lb6".into(),
            vip: vip.parse().unwrap(),
            protocol: L4Protocol::Tcp,
            port: 80,
            backends: backends
                .iter()
                .map(|ip| Backend {
                    ip: ip.parse().unwrap(),
                    port: 80,
                    weight: 1,
                })
                .collect(),
            health: HealthCheck::Tcp {
                interval_ms: 500,
                timeout_ms: 300,
                rise: 2,
                fall: 2,
            },
            table_size: 65_537,
            source_cidrs: vec![],
        }
    }

    fn refused(i: &Intent, l: &LoadBalancer) -> (String, String) {
        let e = validate_lb(i, l).expect_err("must be refused");
        (e.field, e.message)
    }

    #[test]
    fn an_ipv6_vip_is_public_from_a_pool_or_internal_outside_the_tiers() {
        let i = with_pools();
        let b = ["2001:db8:100:1::11"];
        // Public: in the site's IPv6 pool, outside every VPC's range.
        assert!(validate_lb(&i, &lb("2001:db8:1ff::80", &b)).is_ok());
        // Internal: in blue's range, outside its tier's /64.
        assert!(validate_lb(&i, &lb("2001:db8:100:ff::80", &b)).is_ok());
        let (f, m) = refused(&i, &lb("2001:db8:100:1::50", &b));
        assert_eq!(f, "lb.vip");
        assert!(m.contains("tier \"web\""), "{m}");
        let (f, m) = refused(&i, &lb("2001:db8:ffff::80", &b));
        assert_eq!(f, "lb.vip", "neither a pool nor a range of the VPC: {m}");
        // Inside another VPC's range of the pool: that VPC's address.
        let mut other = i.clone();
        let red = VpcChildRef::new("demo", "red", "x").vpc_ref();
        other
            .vpcs
            .get_mut(&red)
            .unwrap()
            .ipv6_ranges
            .push("2001:db8:101::/48".parse().unwrap());
        let (f, m) = refused(&other, &lb("2001:db8:101::80", &b));
        assert_eq!(f, "lb.vip");
        assert!(m.contains("\"red\""), "{m}");
        // Taken by another VPC's load balancer: refused, as an IPv4 public VIP.
        let mut taken = i.clone();
        let mut theirs = lb("2001:db8:1ff::80", &[]);
        theirs.vpc = "red".into();
        theirs.name = "theirs".into();
        taken.load_balancers.insert(theirs.key(), theirs);
        let (f, m) = refused(&taken, &lb("2001:db8:1ff::80", &b));
        assert_eq!(f, "lb.vip");
        assert!(m.contains("theirs"), "{m}");
    }

    /// The opposite order of the VIP check above: a range made (or added) after a public VIP
    /// must not take it. A VPC-internal VIP of the VPC itself stays allowed.
    #[test]
    fn a_vpc_range_over_an_existing_public_vip_is_refused() {
        let mut i = with_pools();
        let public = lb("2001:db8:1ff::80", &["2001:db8:100:1::11"]);
        let mut internal = lb("2001:db8:100:ff::80", &["2001:db8:100:1::11"]);
        internal.name = "internal".into();
        for l in [public, internal] {
            validate_lb(&i, &l).expect("valid before the range");
            i.load_balancers.insert(l.key(), l);
        }
        // A new VPC whose second range holds the public VIP.
        let mut green = vpc("green", &["2001:db8:105::/48", "2001:db8:1ff::/48"]);
        green.id = 3;
        let e = validate_vpc(&i, &green).expect_err("a range over a public VIP");
        assert_eq!(
            (e.field.as_str(), e.kind),
            ("vpc.ipv6_ranges[1]", ErrorKind::InUse)
        );
        assert!(e.message.contains("2001:db8:1ff::80"), "{e}");
        assert!(e.message.contains("demo/blue/lb6"), "{e}");
        green.ipv6_ranges.pop();
        validate_vpc(&i, &green).expect("a range beside the VIP");
        // Blue (the VIP's own VPC) extending its ranges over it: refused too.
        let over = vpc("blue", &["2001:db8:100::/56", "2001:db8:1ff::/48"]);
        assert_eq!(
            field_of(validate_vpc_ipv6_ranges_update(&i, &over)),
            "vpc.ipv6_ranges[1]"
        );
        // Blue's own internal VIP inside its range does not block its ranges.
        let more = vpc("blue", &["2001:db8:100::/56", "2001:db8:1fe::/48"]);
        validate_vpc_ipv6_ranges_update(&i, &more).expect("internal VIPs are the VPC's own");
    }

    #[test]
    fn family_mismatches_and_foreign_backends_name_the_field() {
        let i = with_pools();
        let (f, m) = refused(
            &i,
            &lb("2001:db8:1ff::80", &["2001:db8:100:1::11", "10.10.1.11"]),
        );
        assert_eq!(f, "lb.backends[1].ip");
        assert!(m.contains("IPv4") && m.contains("IPv6"), "{m}");
        assert_eq!(
            refused(&i, &lb("203.0.113.20", &["2001:db8:100:1::11"])).0,
            "lb.backends[0].ip"
        );
        let mut l = lb("2001:db8:1ff::80", &["2001:db8:100:1::11"]);
        l.source_cidrs = vec![
            "2001:db8:ffff::/48".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        assert_eq!(refused(&i, &l).0, "lb.source_cidrs[1]");
        l.source_cidrs = vec!["2001:db8:ffff::1/48".parse().unwrap()];
        assert_eq!(refused(&i, &l).0, "lb.source_cidrs[0]", "host bits set");
        l.source_cidrs = vec!["2001:db8:ffff::/48".parse().unwrap()];
        assert!(validate_lb(&i, &l).is_ok());
        // An IPv6 backend is a host of a dual-stack tier's /64 of the VPC.
        for bad in [
            "2001:db8:100:2::11",
            "2001:db8:100:1::1",
            "2001:db8:100:1::",
        ] {
            assert_eq!(
                refused(&i, &lb("2001:db8:1ff::80", &[bad])).0,
                "lb.backends[0].ip",
                "{bad}"
            );
        }
        let (f, m) = refused(
            &i,
            &lb(
                "2001:db8:1ff::80",
                &["2001:db8:100:1::11", "2001:db8:100:1::11"],
            ),
        );
        assert_eq!(f, "lb.backends[1]");
        assert!(m.contains("[2001:db8:100:1::11]:80"), "{m}");
    }

    #[test]
    fn load_balancers_stored_while_ipv4_typed_load_and_store_unchanged() {
        let json = r#"{"tenant":"demo","vpc":"blue","name":"web","vip":"203.0.113.20","protocol":"tcp","port":80,"backends":[{"ip":"10.10.1.11","port":80,"weight":1}],"health":{"type":"none"},"table_size":65537,"source_cidrs":["198.51.100.0/24"]}"#;
        let l: LoadBalancer = serde_json::from_str(json).unwrap();
        assert_eq!(l.vip, "203.0.113.20".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(serde_json::to_string(&l).unwrap(), json);
        // Without weight and source CIDRs (older still): defaults.
        let old = r#"{"tenant":"demo","vpc":"blue","name":"web","vip":"203.0.113.20","protocol":"tcp","port":80,"backends":[{"ip":"10.10.1.11","port":80}],"health":{"type":"none"},"table_size":65537}"#;
        let l: LoadBalancer = serde_json::from_str(old).unwrap();
        assert_eq!(l.backends[0].weight, 1);
        assert!(l.source_cidrs.is_empty());
    }
}
