//! Unit tests of the pure core: validation rejects with the right field, the compiler scopes
//! each node to exactly its networks, and deltas/digests round-trip.

use std::collections::{BTreeMap, BTreeSet};

use sf_core::compile::{affected_nodes, compile_node};
use sf_core::desired::{network_key, DesiredObject, EvpnRole};
use sf_core::event::{IntentEvent, Object, ObjectRef, PortRef, VpcChildRef, VpcRef};
use sf_core::model::*;
use sf_core::model::{AclList, AclListRule, Direction};
use sf_core::validate::*;

/// The reference of the network with `vni`.
fn network_ref(i: &Intent, vni: u32) -> ObjectRef {
    let n = i.network_by_vni(vni).unwrap();
    ObjectRef::Network(VpcChildRef::new(&n.tenant, &n.vpc, &n.name))
}

fn node(name: &str, role: NodeRole, asn: u32, lo: &str) -> Node {
    Node {
        name: name.into(),
        role,
        site: "lab".into(),
        asn,
        loopback: lo.parse().unwrap(),
        fabric_ports: vec!["leaf1".into(), "leaf2".into()],
    }
}

/// Two tenants' VPCs with identical addressing, as in the lab demo.
fn demo() -> Intent {
    let mut i = Intent::default();
    for n in [
        node("hv1", NodeRole::Hypervisor, 65001, "10.255.1.1"),
        node("hv2", NodeRole::Hypervisor, 65002, "10.255.1.2"),
        node("hv3", NodeRole::Hypervisor, 65003, "10.255.1.3"),
        node("leaf1", NodeRole::Switch, 65101, "10.255.0.1"),
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
    for (id, (vpc, vni)) in [("blue", 1_000_001), ("red", 1_000_002)]
        .into_iter()
        .enumerate()
    {
        let v = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "demo".into(),
            name: vpc.into(),
            cidr: "10.10.0.0/16".parse().unwrap(),
            site: "lab".into(),
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
    for (name, vpc, hv, ip) in [
        ("blue-web-1", "blue", "hv1", "10.10.1.11"),
        ("blue-web-2", "blue", "hv2", "10.10.1.12"),
        ("red-web-1", "red", "hv1", "10.10.1.11"),
        ("red-web-2", "red", "hv3", "10.10.1.12"),
    ] {
        let p = PortBinding {
            ipv6: None,
            tenant: "demo".into(),
            name: name.into(),
            vpc: vpc.into(),
            network: "web".into(),
            node: hv.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            attach: None,
        };
        i.ports.insert(p.key(), p);
    }
    i
}

fn vnis(d: &sf_core::desired::NodeDesired) -> BTreeSet<u32> {
    d.networks().map(|n| n.vni).collect()
}

#[test]
fn hypervisor_scope_is_exactly_its_bound_networks() {
    let i = demo();
    assert_eq!(
        vnis(&compile_node(&i, "hv1", 1).unwrap()),
        BTreeSet::from([1_000_001, 1_000_002])
    );
    assert_eq!(
        vnis(&compile_node(&i, "hv2", 1).unwrap()),
        BTreeSet::from([1_000_001])
    );
    assert_eq!(
        vnis(&compile_node(&i, "hv3", 1).unwrap()),
        BTreeSet::from([1_000_002])
    );
    let hv2 = compile_node(&i, "hv2", 1).unwrap();
    let net = hv2.networks().next().unwrap();
    assert_eq!(net.ports.len(), 1);
    assert_eq!(
        net.ports[0].name, "blue-web-2",
        "hv2 must not learn hv1's ports"
    );
}

#[test]
fn observed_bridges_pull_networks_into_scope() {
    let mut i = demo();
    i.observed_vnis
        .insert("hv3".into(), BTreeSet::from([1_000_001, 4_242_424]));
    let hv3 = compile_node(&i, "hv3", 1).unwrap();
    // 4242424 is not in intent: an observed bridge alone does not invent a network.
    assert_eq!(vnis(&hv3), BTreeSet::from([1_000_001, 1_000_002]));
}

/// A hypervisor's own report cannot widen its scope past what it could carry: a VNI of a VPC
/// in another site, an unknown VNI, and anything past the cap are refused, with the reason.
#[test]
fn observed_bridges_are_admitted_only_within_the_nodes_site_and_cap() {
    use sf_core::compile::{observations, Refusal, MAX_OBSERVED_VNIS};
    let mut i = demo();
    // red moves to another site: hv3 reporting red-web's bridge must not receive red's tier.
    let red_vni = i.networks.values().find(|n| n.vpc == "red").unwrap().vni;
    let blue_vni = i.networks.values().find(|n| n.vpc == "blue").unwrap().vni;
    i.vpcs.get_mut(&VpcRef::new("demo", "red")).unwrap().site = "dc2".into();
    i.ports.retain(|_, p| p.node != "hv3");
    i.observed_vnis
        .insert("hv3".into(), BTreeSet::from([blue_vni, red_vni, 4_242_424]));
    let hv3 = compile_node(&i, "hv3", 1).unwrap();
    assert_eq!(vnis(&hv3), BTreeSet::from([blue_vni]));
    let judged: Vec<(u32, Result<String, Refusal>)> = observations(&i, "hv3")
        .map(|(v, r)| (v, r.map(|n| n.name.clone())))
        .collect();
    assert_eq!(judged[0], (blue_vni, Ok("web".to_string())));
    assert!(
        matches!(&judged[1], (v, Err(Refusal::OtherSite { vpc_site, .. })) if *v == red_vni && vpc_site == "dc2"),
        "{judged:?}"
    );
    assert_eq!(judged[2], (4_242_424, Err(Refusal::UnknownVni)));
    // Red's tier change reaches no hypervisor through hv3's refused report.
    assert!(!affected_nodes(
        &i,
        &ObjectRef::Network(VpcChildRef::new("demo", "red", "web"))
    )
    .contains("hv3"));
    // Past the cap, even a VNI of the node's own site is refused.
    let many: BTreeSet<u32> = (1..=MAX_OBSERVED_VNIS as u32).collect();
    let mut seen = many.clone();
    seen.insert(blue_vni);
    i.observed_vnis.insert("hv3".into(), seen);
    let last = observations(&i, "hv3").last().unwrap();
    assert_eq!(last, (blue_vni, Err(Refusal::OverCap)));
    assert!(compile_node(&i, "hv3", 1)
        .unwrap()
        .networks()
        .next()
        .is_none());
}

#[test]
fn switch_gets_transit_underlay_and_no_networks() {
    let i = demo();
    let leaf = compile_node(&i, "leaf1", 1).unwrap();
    assert_eq!(leaf.networks().count(), 0);
    let u = leaf.underlay().unwrap();
    assert_eq!(u.evpn, EvpnRole::Transit);
    assert_eq!(u.asn, 65101);
    assert!(compile_node(&i, "nope", 1).is_none());
}

#[test]
fn compile_is_deterministic_and_digest_ignores_revision() {
    let i = demo();
    let a = compile_node(&i, "hv1", 5).unwrap();
    let b = compile_node(&i, "hv1", 9).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.objects, b.objects);
}

#[test]
fn delta_round_trips_and_digest_changes() {
    let mut i = demo();
    let before = compile_node(&i, "hv2", 1).unwrap();
    // Bind red-web-3 on hv2: hv2 gains VNI 1000002.
    let p = PortBinding {
        ipv6: None,
        tenant: "demo".into(),
        name: "red-web-3".into(),
        vpc: "red".into(),
        network: "web".into(),
        node: "hv2".into(),
        ip: "10.10.1.13".parse().unwrap(),
        mac: None,
        attach: None,
    };
    i.ports.insert(p.key(), p);
    let after = compile_node(&i, "hv2", 2).unwrap();
    assert_ne!(before.digest(), after.digest());
    let delta = before.delta_to(&after);
    assert_eq!(delta.upserts.len(), 1);
    assert_eq!(delta.upserts[0].0, network_key(1_000_002));
    assert!(delta.deletes.is_empty());
    let mut applied = before.clone();
    applied.apply_delta(2, delta);
    assert_eq!(applied, after);
    // and back
    let back = after.delta_to(&before);
    assert_eq!(back.deletes, vec![network_key(1_000_002)]);
    assert!(matches!(
        after.objects.get("underlay"),
        Some(DesiredObject::Underlay(_))
    ));
}

#[test]
fn affected_nodes_are_only_the_hosting_ones() {
    let i = demo();
    assert_eq!(
        affected_nodes(&i, &network_ref(&i, 1_000_002)),
        BTreeSet::from(["hv1".to_string(), "hv3".to_string()])
    );
    let on_hv2 = i.ports.values().find(|p| p.node == "hv2").unwrap();
    assert_eq!(
        affected_nodes(
            &i,
            &ObjectRef::Port(PortRef::new(&on_hv2.tenant, &on_hv2.name))
        ),
        BTreeSet::from(["hv2".to_string()])
    );
    assert!(affected_nodes(&i, &ObjectRef::Tenant("demo".into())).is_empty());
    // Pools reach every switch (they originate them) and no hypervisor.
    let pool_nodes = affected_nodes(&i, &ObjectRef::Pool("public".into()));
    assert!(pool_nodes.contains("leaf1"), "{pool_nodes:?}");
    assert!(
        !pool_nodes.iter().any(|n| n.starts_with("hv")),
        "{pool_nodes:?}"
    );
}

#[test]
fn switches_and_gateways_hold_the_pools_of_their_site() {
    let mut i = demo();
    i.nodes.insert(
        "gw1".into(),
        node("gw1", NodeRole::Gateway, 65011, "10.255.2.1"),
    );
    for (name, cidr, site) in [
        ("public", "203.0.113.0/24", "lab"),
        ("other-site", "198.51.100.0/24", "fra1"),
    ] {
        i.pools.insert(
            name.into(),
            Pool {
                name: name.into(),
                cidr: cidr.parse().unwrap(),
                site: site.into(),
            },
        );
    }
    let want: Vec<ipnet::Ipv4Net> = vec!["203.0.113.0/24".parse().unwrap()];
    for n in ["leaf1", "gw1"] {
        let d = compile_node(&i, n, 1).unwrap();
        assert_eq!(d.underlay().unwrap().blackhole, want, "{n}");
    }
    let hv = compile_node(&i, "hv1", 1).unwrap();
    assert!(hv.underlay().unwrap().blackhole.is_empty());
}

fn field_of(r: Result<(), ValidationError>) -> String {
    r.expect_err("must be rejected").field
}

#[test]
fn network_validation_names_the_field() {
    let i = demo();
    let base = Network {
        ipv6_prefix: None,
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "db".into(),
        cidr: "10.10.2.0/24".parse().unwrap(),
        vni: 1_000_010,
        gateway: "10.10.2.1".parse().unwrap(),
    };
    assert!(validate_network(&i, &base).is_ok());
    let mut outside = base.clone();
    outside.cidr = "10.20.2.0/24".parse().unwrap();
    outside.gateway = "10.20.2.1".parse().unwrap();
    assert_eq!(field_of(validate_network(&i, &outside)), "network.cidr");
    let mut overlap = base.clone();
    overlap.cidr = "10.10.1.128/25".parse().unwrap();
    overlap.gateway = "10.10.1.129".parse().unwrap();
    let e = validate_network(&i, &overlap).unwrap_err();
    assert_eq!(e.field, "network.cidr");
    assert!(e.message.contains("overlaps"), "{e}");
    let mut taken = base.clone();
    taken.vni = 1_000_001;
    assert_eq!(field_of(validate_network(&i, &taken)), "network.vni");
    let mut too_big = base.clone();
    too_big.vni = 1 << 24;
    assert_eq!(field_of(validate_network(&i, &too_big)), "network.vni");
    let mut no_vpc = base.clone();
    no_vpc.vpc = "green".into();
    assert_eq!(
        validate_network(&i, &no_vpc).unwrap_err().kind,
        ErrorKind::NotFound
    );
    let mut dup = base.clone();
    dup.name = "web".into();
    assert_eq!(field_of(validate_network(&i, &dup)), "network.name");
    let mut hostbits = base.clone();
    hostbits.cidr = "10.10.2.5/24".parse().unwrap();
    assert_eq!(field_of(validate_network(&i, &hostbits)), "network.cidr");
    let mut gw = base;
    gw.gateway = "10.10.3.1".parse().unwrap();
    assert_eq!(field_of(validate_network(&i, &gw)), "network.gateway");
}

#[test]
fn overlapping_addresses_across_vpcs_are_allowed() {
    let i = demo();
    // red and blue both use 10.10.1.0/24: that is the point of VPCs.
    let n = Network {
        ipv6_prefix: None,
        tenant: "demo".into(),
        vpc: "red".into(),
        name: "db".into(),
        cidr: "10.10.2.0/24".parse().unwrap(),
        vni: 1_000_011,
        gateway: "10.10.2.1".parse().unwrap(),
    };
    assert!(validate_network(&i, &n).is_ok());
}

#[test]
fn port_validation_names_the_field() {
    let i = demo();
    let base = PortBinding {
        ipv6: None,
        tenant: "demo".into(),
        name: "blue-web-3".into(),
        vpc: "blue".into(),
        network: "web".into(),
        node: "hv3".into(),
        ip: "10.10.1.13".parse().unwrap(),
        mac: Some("02:00:00:00:00:13".into()),
        attach: None,
    };
    assert!(validate_port(&i, &base).is_ok());
    let mut outside = base.clone();
    outside.ip = "10.10.2.13".parse().unwrap();
    assert_eq!(field_of(validate_port(&i, &outside)), "port.ip");
    let mut bcast = base.clone();
    bcast.ip = "10.10.1.255".parse().unwrap();
    assert_eq!(field_of(validate_port(&i, &bcast)), "port.ip");
    let mut used = base.clone();
    used.ip = "10.10.1.11".parse().unwrap();
    assert_eq!(field_of(validate_port(&i, &used)), "port.ip");
    let mut gw = base.clone();
    gw.ip = "10.10.1.1".parse().unwrap();
    assert_eq!(field_of(validate_port(&i, &gw)), "port.ip");
    let mut no_node = base.clone();
    no_node.node = "hv9".into();
    assert_eq!(field_of(validate_port(&i, &no_node)), "port.node");
    let mut switch = base.clone();
    switch.node = "leaf1".into();
    assert_eq!(
        field_of(validate_port(&i, &switch)),
        "port.interface",
        "a port on a switch needs the switch interface"
    );
    let mut no_net = base.clone();
    no_net.network = "db".into();
    assert_eq!(field_of(validate_port(&i, &no_net)), "port.network");
    let mut mac = base.clone();
    mac.mac = Some("02:00:00:00:00".into());
    assert_eq!(field_of(validate_port(&i, &mac)), "port.mac");
    let mut dup = base;
    dup.name = "blue-web-1".into();
    assert_eq!(field_of(validate_port(&i, &dup)), "port.name");
}

#[test]
fn names_and_nodes_are_checked() {
    let i = demo();
    assert_eq!(field_of(validate_name("tenant.name", "a/b")), "tenant.name");
    assert!(validate_name("x", "").is_err());
    assert!(validate_name("x", &"a".repeat(65)).is_err());
    let t = Tenant {
        name: "demo".into(),
        description: String::new(),
    };
    assert_eq!(field_of(validate_tenant(&i, &t)), "tenant.name");
    let v = Vpc {
        ipv6_ranges: Vec::new(),
        tenant: "nobody".into(),
        name: "x".into(),
        cidr: "10.0.0.0/8".parse().unwrap(),
        site: String::new(),
        id: 0,
    };
    assert_eq!(field_of(validate_vpc(&i, &v)), "vpc.tenant");
    let mut n = node("hv4", NodeRole::Hypervisor, 65004, "10.255.1.1");
    assert_eq!(field_of(validate_node(&i, &n)), "node.loopback");
    n.loopback = "10.255.1.4".parse().unwrap();
    n.asn = 0;
    assert_eq!(field_of(validate_node(&i, &n)), "node.asn");
    n.asn = 65004;
    n.fabric_ports = vec!["this-name-is-too-long".into()];
    assert_eq!(field_of(validate_node(&i, &n)), "node.fabric_ports[0]");
    // etcd's administrator: a node named so would hold its credential.
    let root = node("root", NodeRole::Hypervisor, 65009, "10.255.1.9");
    assert_eq!(field_of(validate_node(&i, &root)), "node.name");
}

#[test]
fn deletes_refuse_objects_still_in_use() {
    let i = demo();
    assert_eq!(
        check_delete_tenant(&i, "demo").unwrap_err().kind,
        ErrorKind::InUse
    );
    assert_eq!(
        check_delete_vpc(&i, "demo", "blue").unwrap_err().kind,
        ErrorKind::InUse
    );
    assert_eq!(
        check_delete_network(&i, "demo", "blue", "web")
            .unwrap_err()
            .kind,
        ErrorKind::InUse
    );
    assert_eq!(
        check_delete_node(&i, "hv1").unwrap_err().kind,
        ErrorKind::InUse
    );
    assert!(check_delete_node(&i, "leaf1").is_ok());
    assert!(check_delete_port(&i, "demo", "blue-web-1").is_ok());
    assert_eq!(
        check_delete_port(&i, "demo", "nope").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn with_gateways() -> Intent {
    let mut i = demo();
    for (n, lo) in [("gw1", "10.255.2.1"), ("gw2", "10.255.2.2")] {
        let mut g = node(n, NodeRole::Gateway, 65010, lo);
        g.asn = if n == "gw1" { 65011 } else { 65012 };
        i.nodes.insert(n.into(), g);
    }
    i.pools.insert(
        "public".into(),
        Pool {
            name: "public".into(),
            cidr: "203.0.113.0/24".parse().unwrap(),
            site: "lab".into(),
        },
    );
    i.placements.insert(
        VpcRef::new("demo", "blue"),
        Placement {
            primary: Some("gw1".into()),
            standby: Some("gw2".into()),
        },
    );
    for (name, kind) in [
        (
            "out",
            NatKind::Snat {
                public_ip: "203.0.113.10".parse().unwrap(),
            },
        ),
        (
            "web",
            NatKind::PortForward {
                public_ip: "203.0.113.11".parse().unwrap(),
                protocol: sf_core::desired::L4Protocol::Tcp,
                public_port: 8080,
                private_ip: "10.10.1.11".parse().unwrap(),
                private_port: 80,
            },
        ),
        (
            "eip",
            NatKind::StaticNat {
                public_ip: "203.0.113.12".parse().unwrap(),
                private_ip: "10.10.1.12".parse().unwrap(),
            },
        ),
    ] {
        let r = NatRule {
            tenant: "demo".into(),
            vpc: "blue".into(),
            name: name.into(),
            kind,
        };
        i.nat_rules.insert(r.key(), r);
    }
    i
}

/// A leaf accepts from each hypervisor only its VTEP, from each gateway its loopback and host
/// routes inside its site's pools; switches and the border's external peers are not
/// filtered; a neighbour's new loopback reaches the leaf's filter.
#[test]
fn leaves_filter_what_each_node_may_announce() {
    use sf_core::desired::PrefixMatch;
    let mut i = with_gateways();
    let leaf1 = i.nodes.get_mut("leaf1").unwrap();
    leaf1.fabric_ports = ["hv1", "hv2", "hv3", "gw1", "gw2", "spine1", "internet"]
        .map(String::from)
        .to_vec();
    i.nodes.insert(
        "spine1".into(),
        node("spine1", NodeRole::Switch, 65100, "10.255.0.101"),
    );
    let filters = |i: &Intent| {
        compile_node(i, "leaf1", 1)
            .unwrap()
            .underlay()
            .unwrap()
            .peer_filters
            .clone()
    };
    let f = filters(&i);
    let names: Vec<&str> = f.iter().map(|f| f.neighbor.as_str()).collect();
    assert_eq!(names, ["hv1", "hv2", "hv3", "gw1", "gw2"]);
    let host = |p: &str| PrefixMatch {
        prefix: p.parse().unwrap(),
        host_routes: false,
    };
    assert_eq!(f[0].permit, [host("10.255.1.1/32")]);
    assert_eq!(
        f[3].permit,
        [
            host("10.255.2.1/32"),
            PrefixMatch {
                prefix: sf_core::desired::ANCHOR_RANGE,
                host_routes: true
            },
            PrefixMatch {
                prefix: "203.0.113.0/24".parse().unwrap(),
                host_routes: true
            }
        ]
    );
    assert!(compile_node(&i, "hv1", 1)
        .unwrap()
        .underlay()
        .unwrap()
        .peer_filters
        .is_empty());
    // hv1 gets a new loopback: leaf1 is among the nodes the change touches, and follows.
    let mut hv1 = i.nodes["hv1"].clone();
    hv1.loopback = "10.255.1.9".parse().unwrap();
    let touched = sf_core::compile::apply(
        &mut i,
        IntentEvent::Put(ObjectRef::Node("hv1".into()), Object::Node(hv1)),
    )
    .unwrap();
    assert!(touched.contains("leaf1"), "{touched:?}");
    assert_eq!(filters(&i)[0].permit, [host("10.255.1.9/32")]);
}

/// In EVPN a leaf accepts from each hypervisor and gateway only the VNIs of the networks that
/// node carries (exactly its compiled L2 networks: a gateway's include the VPCs it stands by
/// for), and follows a port bound on a new tier.
#[test]
fn leaves_accept_evpn_routes_only_for_each_nodes_vnis() {
    use sf_core::desired::EvpnScope;
    let mut i = with_gateways();
    i.nodes.get_mut("leaf1").unwrap().fabric_ports = ["hv1", "hv2", "hv3", "gw1", "gw2", "spine1"]
        .map(String::from)
        .to_vec();
    i.nodes.insert(
        "spine1".into(),
        node("spine1", NodeRole::Switch, 65100, "10.255.0.101"),
    );
    let scopes = |i: &Intent| -> BTreeMap<String, Option<EvpnScope>> {
        compile_node(i, "leaf1", 1)
            .unwrap()
            .underlay()
            .unwrap()
            .peer_filters
            .iter()
            .map(|f| (f.neighbor.clone(), f.evpn.clone()))
            .collect()
    };
    let s = scopes(&i);
    for n in ["hv1", "hv2", "hv3", "gw1", "gw2"] {
        let scope = s[n]
            .clone()
            .unwrap_or_else(|| panic!("{n} has no EVPN scope"));
        let carried: Vec<u32> = vnis(&compile_node(&i, n, 1).unwrap()).into_iter().collect();
        assert_eq!(scope.vnis, carried, "{n}");
        assert_eq!(scope.asn, i.nodes[n].asn, "{n}");
    }
    assert_eq!(s["hv2"].as_ref().unwrap().vnis, [1_000_001]);
    assert_eq!(
        s["gw2"].as_ref().unwrap().vnis,
        [1_000_001],
        "the standby too"
    );
    assert!(!s.contains_key("spine1"), "switches are not filtered");
    // A red port bound on hv2: leaf1 is touched and now accepts red's VNI from hv2.
    let mut p = i
        .ports
        .values()
        .find(|p| p.name == "red-web-2")
        .unwrap()
        .clone();
    p.name = "red-web-3".into();
    p.node = "hv2".into();
    let touched = sf_core::compile::apply(
        &mut i,
        IntentEvent::Put(ObjectRef::Port(p.key()), Object::Port(p)),
    )
    .unwrap();
    assert!(touched.contains("leaf1"), "{touched:?}");
    assert_eq!(
        scopes(&i)["hv2"].as_ref().unwrap().vnis,
        [1_000_001, 1_000_002]
    );
    // Red placed on gw2 too: leaf1 follows.
    let touched = sf_core::compile::apply(
        &mut i,
        IntentEvent::Put(
            ObjectRef::Placement(VpcRef::new("demo", "red")),
            Object::Placement(Placement {
                primary: Some("gw2".into()),
                standby: None,
            }),
        ),
    )
    .unwrap();
    assert!(touched.contains("leaf1"), "{touched:?}");
    assert_eq!(
        scopes(&i)["gw2"].as_ref().unwrap().vnis,
        [1_000_001, 1_000_002]
    );
}

#[test]
fn active_gateway_gets_router_tiers_and_public_announcements() {
    let i = with_gateways();
    let gw1 = compile_node(&i, "gw1", 1).unwrap();
    let routers: Vec<_> = gw1.routers().collect();
    assert_eq!(routers.len(), 1);
    let r = routers[0];
    assert_eq!(
        (r.vpc.as_str(), r.id, r.mac.as_str()),
        ("blue", 1, "02:5f:00:00:00:01")
    );
    assert_eq!(r.tiers.len(), 1);
    assert_eq!(r.tiers[0].vni, 1_000_001);
    assert_eq!(r.snat, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(r.port_forwards.len(), 1);
    assert_eq!(r.static_nats.len(), 1);
    assert_eq!(
        vnis(&gw1),
        BTreeSet::from([1_000_001]),
        "gateway carries the VPC's tiers"
    );
    // Gateways announce by redistributing the host routes their failover controller
    // installs (pools and anchors), watched by BFD: no per-VPC announcement in the intent.
    let u = gw1.underlay().unwrap();
    assert!(u.announce.is_empty());
    assert_eq!(
        u.redistribute_host_routes,
        vec![
            "203.0.113.0/24".parse().unwrap(),
            sf_core::desired::ANCHOR_RANGE
        ]
    );
    assert_eq!(u.bfd_neighbors, u.neighbors);
    assert_eq!(r.role, sf_core::desired::RouterRole::Primary);
    // The standby holds the same router warm, marked as standby.
    let gw2 = compile_node(&i, "gw2", 1).unwrap();
    let standby: Vec<_> = gw2.routers().collect();
    assert_eq!(standby.len(), 1);
    assert_eq!(standby[0].role, sf_core::desired::RouterRole::Standby);
    let mut same = standby[0].clone();
    same.role = sf_core::desired::RouterRole::Primary;
    assert_eq!(&same, r, "identical tables on both");
    assert_eq!(vnis(&gw2), BTreeSet::from([1_000_001]));
    // The VPC record touches its two gateways; an ACL list of it also the hypervisors of its
    // tiers (they enforce the tiers' ACLs), nothing else.
    assert_eq!(
        affected_nodes(&i, &ObjectRef::Vpc(VpcRef::new("demo", "blue"))),
        BTreeSet::from(["gw1".to_string(), "gw2".to_string()])
    );
    assert_eq!(
        affected_nodes(
            &i,
            &ObjectRef::Acl(VpcChildRef::new("demo", "blue", "any-list"))
        ),
        BTreeSet::from([
            "gw1".to_string(),
            "gw2".to_string(),
            "hv1".to_string(),
            "hv2".to_string()
        ])
    );
    // A network change of blue touches its gateway as well as its hypervisors.
    assert!(affected_nodes(&i, &network_ref(&i, 1_000_001)).contains("gw1"));
}

#[test]
fn placement_from_liveness_moves_only_the_dead_gateways_vpcs() {
    let i = with_gateways();
    let both = BTreeSet::from(["gw1".to_string(), "gw2".to_string()]);
    let none = sf_core::placement::FabricReports::default();
    let p = sf_core::placement::compute(&i, &both, &none);
    assert_eq!(p.len(), 2);
    for (k, pl) in &p {
        let only_standby =
            sf_core::placement::compute(&i, &BTreeSet::from([pl.standby.clone().unwrap()]), &none);
        assert_eq!(
            only_standby[k].primary, pl.standby,
            "primary death moves {k:?} to its standby"
        );
    }
    // A gateway that holds VPCs cannot leave the inventory before it is drained.
    let e = sf_core::validate::check_delete_node(&i, "gw1").unwrap_err();
    assert!(e.to_string().contains("drain it first"), "{e}");
    let mut drained = i.clone();
    drained.drained.insert("gw1".into());
    let p = sf_core::placement::compute(&drained, &both, &none);
    assert!(p
        .values()
        .all(|pl| pl.primary.as_deref() == Some("gw2") && pl.standby.is_none()));
}

fn nat(kind: NatKind) -> NatRule {
    NatRule {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "new".into(),
        kind,
    }
}

#[test]
fn nat_validation_names_the_field() {
    let i = with_gateways();
    let ip = |s: &str| s.parse().unwrap();
    let fwd = |public: &str, port: u16, private: &str| NatKind::PortForward {
        public_ip: ip(public),
        protocol: sf_core::desired::L4Protocol::Tcp,
        public_port: port,
        private_ip: ip(private),
        private_port: 80,
    };
    // Port forwards may share the SNAT address (as CloudStack does) and each other's address.
    assert!(validate_nat(&i, &nat(fwd("203.0.113.10", 22, "10.10.1.12"))).is_ok());
    assert!(validate_nat(&i, &nat(fwd("203.0.113.11", 8081, "10.10.1.12"))).is_ok());
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(fwd("198.51.100.1", 22, "10.10.1.12"))
        )),
        "nat.public_ip"
    );
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(fwd("203.0.113.11", 8080, "10.10.1.12"))
        )),
        "nat.public_port"
    );
    assert_eq!(
        field_of(validate_nat(&i, &nat(fwd("203.0.113.20", 22, "10.10.9.9")))),
        "nat.private_ip"
    );
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(fwd("203.0.113.12", 22, "10.10.1.11"))
        )),
        "nat.public_ip"
    );
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(NatKind::Snat {
                public_ip: ip("203.0.113.30")
            })
        )),
        "nat.kind"
    );
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(NatKind::StaticNat {
                public_ip: ip("203.0.113.10"),
                private_ip: ip("10.10.1.11")
            })
        )),
        "nat.public_ip"
    );
    assert_eq!(
        field_of(validate_nat(
            &i,
            &nat(NatKind::StaticNat {
                public_ip: ip("203.0.113.40"),
                private_ip: ip("10.10.1.12")
            })
        )),
        "nat.private_ip",
        "one Elastic IP per VM"
    );
    // Another VPC may not use blue's public address.
    let mut red = nat(NatKind::Snat {
        public_ip: ip("203.0.113.11"),
    });
    red.vpc = "red".into();
    assert_eq!(field_of(validate_nat(&i, &red)), "nat.public_ip");
    let mut unknown = nat(NatKind::Snat {
        public_ip: ip("203.0.113.50"),
    });
    unknown.vpc = "green".into();
    assert_eq!(
        validate_nat(&i, &unknown).unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Deletes refuse what is still referenced.
    assert_eq!(
        check_delete_pool(&i, "public").unwrap_err().kind,
        ErrorKind::InUse
    );
    let mut no_ports = i.clone();
    no_ports.ports.clear();
    assert_eq!(
        check_delete_network(&no_ports, "demo", "blue", "web")
            .unwrap_err()
            .kind,
        ErrorKind::InUse
    );
}

#[test]
fn route_validation_names_the_field() {
    let i = with_gateways();
    let r = |prefix: &str, nexthop: &str| StaticRoute {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "r".into(),
        prefix: prefix.parse().unwrap(),
        nexthop: nexthop.parse().unwrap(),
    };
    assert!(validate_route(&i, &r("192.168.0.0/16", "10.10.1.20")).is_ok());
    assert_eq!(
        field_of(validate_route(&i, &r("192.168.0.0/16", "10.99.0.1"))),
        "route.nexthop"
    );
    assert_eq!(
        field_of(validate_route(&i, &r("192.168.0.1/16", "10.10.1.20"))),
        "route.prefix"
    );
}

fn lb(vip: &str, backends: &[(&str, u16)]) -> LoadBalancer {
    LoadBalancer {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "lb".into(),
        vip: vip.parse().unwrap(),
        protocol: sf_core::desired::L4Protocol::Tcp,
        port: 80,
        backends: backends
            .iter()
            .map(|(ip, port)| Backend {
                ip: ip.parse().unwrap(),
                port: *port,
                weight: 1,
            })
            .collect(),
        health: sf_core::desired::HealthCheck::Http {
            path: "/".into(),
            expect_status: 200,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
        },
        table_size: 65_537,
        source_cidrs: Vec::new(),
    }
}

#[test]
fn load_balancer_source_cidrs_are_validated_and_compiled() {
    let i = with_gateways();
    let mut l = lb("203.0.113.20", &[("10.10.1.11", 80)]);
    l.source_cidrs = vec![
        "198.51.100.0/24".parse().unwrap(),
        "192.0.2.7/32".parse().unwrap(),
    ];
    assert!(validate_lb(&i, &l).is_ok());
    l.source_cidrs = vec![
        "198.51.100.0/24".parse().unwrap(),
        "192.0.2.7/24".parse().unwrap(),
    ];
    let e = validate_lb(&i, &l).unwrap_err();
    assert_eq!(e.field, "lb.source_cidrs[1]");
    l.source_cidrs = vec!["10.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    assert_eq!(field_of(validate_lb(&i, &l)), "lb.source_cidrs[1]");
    // Carried to the gateway's desired state unchanged.
    let mut i = i;
    l.source_cidrs = vec!["198.51.100.0/24".parse().unwrap()];
    i.load_balancers.insert(l.key(), l.clone());
    let found = sf_core::compile::vpc_router(&i, &VpcRef::new(&l.tenant, &l.vpc))
        .load_balancers
        .into_iter()
        .find(|d| d.name == l.name)
        .expect("compiled lb");
    assert_eq!(found.source_cidrs, l.source_cidrs);
}

/// The backends the serving gateway reports DOWN reach both gateways' routers (the standby
/// builds its tables over them), through a change that recompiles those two. A gateway the
/// VPC has left (drained) counts while it still serves; with no report at all the routers
/// carry no word (`None`), which is not "none down".
#[test]
fn a_serving_gateways_down_backends_reach_both_routers_of_its_vpc() {
    let mut i = with_gateways();
    let l = lb("203.0.113.20", &[("10.10.1.11", 80), ("10.10.1.12", 80)]);
    i.load_balancers.insert(l.key(), l.clone());
    let peer_down = |i: &Intent, gw: &str| -> Option<BTreeSet<String>> {
        let d = compile_node(i, gw, 1).expect("gateway compiles");
        d.objects
            .values()
            .find_map(|o| match o {
                DesiredObject::VpcRouter(r) => r.load_balancers.first().cloned(),
                _ => None,
            })
            .expect("the router's load balancer")
            .peer_down
    };
    assert_eq!(peer_down(&i, "gw2"), None);
    let report = |down: &[&str]| {
        let down = down.iter().map(|b| b.to_string()).collect();
        Object::LbDown(BTreeMap::from([(l.key(), down)]))
    };
    let put = |i: &mut Intent, gw: &str, o: Object| {
        let e = IntentEvent::Put(ObjectRef::LbDown(gw.into()), o);
        sf_core::compile::apply(i, e).unwrap()
    };
    let both = BTreeSet::from(["gw1".into(), "gw2".into()]);
    assert_eq!(put(&mut i, "gw1", report(&["10.10.1.12:80"])), both);
    for gw in ["gw1", "gw2"] {
        let want = BTreeSet::from(["10.10.1.12:80".into()]);
        assert_eq!(peer_down(&i, gw), Some(want), "{gw}");
    }
    // Back up: the word is "none down".
    assert_eq!(put(&mut i, "gw1", report(&[])), both);
    assert_eq!(peer_down(&i, "gw2"), Some(BTreeSet::new()));
    // No gateway reports it (gw1's status went): no word.
    assert_eq!(put(&mut i, "gw1", Object::LbDown(BTreeMap::new())), both);
    assert!(i.lb_down.is_empty());
    assert_eq!(peer_down(&i, "gw2"), None);
    // A gateway blue is no longer placed on (drained) still serves it for a moment.
    assert_eq!(put(&mut i, "gw3", report(&["10.10.1.11:80"])), both);
    let want = BTreeSet::from(["10.10.1.11:80".into()]);
    assert_eq!(peer_down(&i, "gw2"), Some(want));
}

#[test]
fn load_balancer_validation_names_the_field() {
    let i = with_gateways();
    let ok = lb("203.0.113.20", &[("10.10.1.11", 80), ("10.10.1.12", 80)]);
    assert!(validate_lb(&i, &ok).is_ok());
    // VPC-internal VIP outside every tier is fine; inside a tier it is not.
    assert!(validate_lb(&i, &lb("10.10.100.10", &[("10.10.1.11", 80)])).is_ok());
    assert_eq!(
        field_of(validate_lb(&i, &lb("10.10.1.50", &[("10.10.1.11", 80)]))),
        "lb.vip"
    );
    assert_eq!(
        field_of(validate_lb(&i, &lb("203.0.113.11", &[("10.10.1.11", 80)]))),
        "lb.vip",
        "NAT's address"
    );
    assert_eq!(
        field_of(validate_lb(&i, &lb("203.0.113.20", &[("10.10.9.9", 80)]))),
        "lb.backends[0].ip"
    );
    assert_eq!(
        field_of(validate_lb(&i, &lb("203.0.113.20", &[("10.10.1.11", 0)]))),
        "lb.backends[0].port"
    );
    assert_eq!(
        field_of(validate_lb(&i, &lb("203.0.113.20", &[]))),
        "lb.backends"
    );
    let mut port = ok.clone();
    port.port = 0;
    assert_eq!(field_of(validate_lb(&i, &port)), "lb.port");
    let mut small = ok.clone();
    small.table_size = 101;
    assert_eq!(field_of(validate_lb(&i, &small)), "lb.table_size");
    let mut even = ok.clone();
    even.table_size = 65_536;
    assert_eq!(field_of(validate_lb(&i, &even)), "lb.table_size");
    let mut path = ok.clone();
    path.health = sf_core::desired::HealthCheck::Http {
        path: "no-slash".into(),
        expect_status: 200,
        interval_ms: 1000,
        timeout_ms: 500,
        rise: 2,
        fall: 2,
    };
    assert_eq!(field_of(validate_lb(&i, &path)), "lb.health.path");
    let mut timeout = ok.clone();
    timeout.health = sf_core::desired::HealthCheck::Tcp {
        interval_ms: 1000,
        timeout_ms: 2000,
        rise: 1,
        fall: 1,
    };
    assert_eq!(field_of(validate_lb(&i, &timeout)), "lb.health.timeout_ms");
    // A VIP already used by another load balancer.
    let mut with = i.clone();
    with.load_balancers.insert(ok.key(), ok.clone());
    let mut second = ok.clone();
    second.name = "other".into();
    assert_eq!(field_of(validate_lb(&with, &second)), "lb.vip");
    second.port = 443;
    assert!(
        validate_lb(&with, &second).is_ok(),
        "same VIP, other port, same VPC"
    );
    // NAT may not take an LB's VIP; the VPC and pool cannot be deleted under it.
    let take = NatRule {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "x".into(),
        kind: NatKind::StaticNat {
            public_ip: "203.0.113.20".parse().unwrap(),
            private_ip: "10.10.1.11".parse().unwrap(),
        },
    };
    assert_eq!(field_of(validate_nat(&with, &take)), "nat.public_ip");
    // The compiled router carries the LB with sorted backend names and routes the VIP.
    let gw1 = compile_node(&with, "gw1", 1).unwrap();
    let r = gw1.routers().next().unwrap();
    assert_eq!(r.load_balancers.len(), 1);
    assert_eq!(r.load_balancers[0].backends[0].name, "10.10.1.11:80");
    assert!(r.load_balancers[0].public);
    assert!(r.public_ips().contains(&"203.0.113.20".parse().unwrap()));
}

fn acl_rule(
    number: u32,
    direction: Direction,
    action: sf_core::desired::AclAction,
    port: Option<u16>,
    cidr: &str,
) -> AclListRule {
    AclListRule {
        direction,
        rule: sf_core::desired::AclRule {
            number,
            action,
            protocol: if port.is_some() {
                sf_core::desired::AclProtocol::Tcp
            } else {
                sf_core::desired::AclProtocol::All
            },
            ports: port.map(|p| (p, p)),
            icmp_type: None,
            icmp_code: None,
            cidrs: vec![cidr.parse().unwrap()],
        },
    }
}

fn with_db() -> Intent {
    let mut i = with_gateways();
    let db = Network {
        ipv6_prefix: None,
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "db".into(),
        cidr: "10.10.2.0/24".parse().unwrap(),
        vni: 1_000_010,
        gateway: "10.10.2.1".parse().unwrap(),
    };
    i.networks.insert(db.key(), db);
    let p = PortBinding {
        ipv6: None,
        tenant: "demo".into(),
        name: "blue-db-1".into(),
        vpc: "blue".into(),
        network: "db".into(),
        node: "hv3".into(),
        ip: "10.10.2.11".parse().unwrap(),
        mac: None,
        attach: None,
    };
    i.ports.insert(p.key(), p);
    i
}

#[test]
fn acl_compiles_in_number_order_to_hypervisors_and_gateway() {
    use sf_core::desired::AclAction::*;
    let mut i = with_db();
    let list = AclList {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "db-acl".into(),
        default_action: Deny,
        // Given out of order on purpose: evaluation order is by number.
        rules: vec![
            acl_rule(20, Direction::Ingress, Allow, Some(5432), "10.10.1.0/24"),
            acl_rule(10, Direction::Ingress, Deny, Some(5432), "10.10.1.66/32"),
            acl_rule(30, Direction::Egress, Allow, None, "0.0.0.0/0"),
        ],
        tiers: vec!["db".into()],
    };
    assert!(validate_acl(&i, &list).is_ok());
    i.acls.insert(list.key(), list);
    let hv3 = compile_node(&i, "hv3", 1).unwrap();
    let db = hv3.networks().find(|n| n.network == "db").unwrap();
    let acl = db.acl.as_ref().unwrap();
    assert_eq!(
        acl.ingress.iter().map(|r| r.number).collect::<Vec<_>>(),
        [10, 20]
    );
    assert_eq!(acl.egress.len(), 1);
    // hv1 hosts only blue's web tier but learns db as a peer with its ACL, to drop at source.
    let hv1 = compile_node(&i, "hv1", 1).unwrap();
    let web = hv1.networks().find(|n| n.vni == 1_000_001).unwrap();
    assert!(web.acl.is_none());
    let peer = web.peer_tiers.iter().find(|p| p.vni == 1_000_010).unwrap();
    assert_eq!(peer.acl.as_ref().unwrap().list, "db-acl");
    // The gateway's router tier carries it for north-south traffic.
    let gw1 = compile_node(&i, "gw1", 1).unwrap();
    let r = gw1.routers().next().unwrap();
    assert!(r
        .tiers
        .iter()
        .find(|t| t.name == "db")
        .unwrap()
        .acl
        .is_some());
    // An ACL change touches the gateway and every hypervisor of the VPC.
    let touched = affected_nodes(
        &i,
        &ObjectRef::Acl(VpcChildRef::new("demo", "blue", "db-acl")),
    );
    assert!(
        ["gw1", "hv1", "hv2", "hv3"]
            .iter()
            .all(|n| touched.contains(*n)),
        "{touched:?}"
    );
    assert_eq!(
        check_delete_network(&i, "demo", "blue", "db")
            .unwrap_err()
            .kind,
        ErrorKind::InUse
    );
}

#[test]
fn acl_validation_names_the_field() {
    use sf_core::desired::{AclAction::*, AclProtocol};
    let i = with_db();
    let base = AclList {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "a".into(),
        default_action: Deny,
        rules: vec![acl_rule(
            10,
            Direction::Ingress,
            Allow,
            Some(22),
            "10.0.0.0/8",
        )],
        tiers: vec!["db".into()],
    };
    assert!(validate_acl(&i, &base).is_ok());
    let mut dup = base.clone();
    dup.rules
        .push(acl_rule(10, Direction::Egress, Deny, None, "0.0.0.0/0"));
    assert_eq!(field_of(validate_acl(&i, &dup)), "acl.rules[1].number");
    let mut cidr = base.clone();
    cidr.rules[0].rule.cidrs = vec!["10.0.0.1/8".parse().unwrap()];
    assert_eq!(field_of(validate_acl(&i, &cidr)), "acl.rules[0].cidrs[0]");
    let mut range = base.clone();
    range.rules[0].rule.ports = Some((2000, 1000));
    assert_eq!(field_of(validate_acl(&i, &range)), "acl.rules[0].ports");
    let mut icmp_on_tcp = base.clone();
    icmp_on_tcp.rules[0].rule.icmp_type = Some(8);
    assert_eq!(
        field_of(validate_acl(&i, &icmp_on_tcp)),
        "acl.rules[0].icmp_type"
    );
    let mut ports_on_icmp = base.clone();
    ports_on_icmp.rules[0].rule.protocol = AclProtocol::Icmp;
    assert_eq!(
        field_of(validate_acl(&i, &ports_on_icmp)),
        "acl.rules[0].ports"
    );
    let mut tier = base.clone();
    tier.tiers = vec!["nope".into()];
    assert_eq!(field_of(validate_acl(&i, &tier)), "acl.tiers[0]");
    let mut taken = i.clone();
    taken.acls.insert(base.key(), base.clone());
    let mut other = base.clone();
    other.name = "b".into();
    assert_eq!(field_of(validate_acl(&taken, &other)), "acl.tiers[0]");
    // Replacing the same list is allowed (apply = create or replace).
    assert!(validate_acl(&taken, &base).is_ok());
}

#[test]
fn acl_rules_take_ipv6_networks_and_icmpv6() {
    use sf_core::desired::{AclAction::*, AclProtocol};
    let i = with_db();
    let mut l = AclList {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "a".into(),
        default_action: Deny,
        rules: vec![
            acl_rule(10, Direction::Ingress, Allow, Some(80), "fd40:40::/48"),
            acl_rule(20, Direction::Egress, Allow, None, "::/0"),
            acl_rule(30, Direction::Ingress, Allow, Some(22), "10.0.0.0/8"),
        ],
        tiers: vec!["db".into()],
    };
    l.rules[0].rule.cidrs.push("2001:db8::/32".parse().unwrap());
    assert!(validate_acl(&i, &l).is_ok());
    // Stored JSON: an IPv6 network is a string like an IPv4 one, and reads back.
    let json = serde_json::to_string(&l).unwrap();
    assert!(
        json.contains("\"cidrs\":[\"fd40:40::/48\",\"2001:db8::/32\"]"),
        "{json}"
    );
    assert!(json.contains("\"cidrs\":[\"10.0.0.0/8\"]"));
    assert_eq!(serde_json::from_str::<AclList>(&json).unwrap(), l);
    let mut host = l.clone();
    host.rules[0].rule.cidrs[1] = "2001:db8::1/32".parse().unwrap();
    assert_eq!(field_of(validate_acl(&i, &host)), "acl.rules[0].cidrs[1]");
    // ICMPv6 type/code rules; icmp and icmpv6 each need a network of their family.
    let mut icmp6 = l.clone();
    icmp6.rules[1].rule.protocol = AclProtocol::Icmpv6;
    icmp6.rules[1].rule.icmp_type = Some(128);
    icmp6.rules[1].rule.icmp_code = Some(0);
    assert!(validate_acl(&i, &icmp6).is_ok());
    icmp6.rules[1].rule.cidrs = vec!["0.0.0.0/0".parse().unwrap()];
    assert_eq!(field_of(validate_acl(&i, &icmp6)), "acl.rules[1].cidrs");
    let mut icmp4 = l.clone();
    icmp4.rules[1].rule.protocol = AclProtocol::Icmp;
    assert_eq!(field_of(validate_acl(&i, &icmp4)), "acl.rules[1].cidrs");
}

#[test]
fn acl_lists_round_trip_through_their_stored_json() {
    // What the store writes must decode again: the coordinator's index depends on it.
    let l = AclList {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "a".into(),
        default_action: sf_core::desired::AclAction::Deny,
        rules: vec![acl_rule(
            10,
            Direction::Ingress,
            sf_core::desired::AclAction::Allow,
            Some(22),
            "10.0.0.0/8",
        )],
        tiers: vec!["db".into()],
    };
    let json = serde_json::to_vec(&l).unwrap();
    assert_eq!(serde_json::from_slice::<AclList>(&json).unwrap(), l);
    let i = with_gateways();
    for r in i.nat_rules.values() {
        let back: NatRule = serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap();
        assert_eq!(&back, r);
    }
}

fn attach(interface: &str, vlan: Option<u16>) -> Option<sf_core::desired::SwitchAttachment> {
    Some(sf_core::desired::SwitchAttachment {
        interface: interface.into(),
        vlan,
    })
}

fn bare_metal(name: &str, ip: &str, a: Option<sf_core::desired::SwitchAttachment>) -> PortBinding {
    PortBinding {
        ipv6: None,
        tenant: "demo".into(),
        name: name.into(),
        vpc: "blue".into(),
        network: "web".into(),
        node: "leaf1".into(),
        ip: ip.parse().unwrap(),
        mac: None,
        attach: a,
    }
}

#[test]
fn switch_ports_check_interface_and_vlan_conflicts() {
    let mut i = demo();
    let tagged = bare_metal("bm1", "10.10.1.50", attach("swp5", Some(100)));
    validate_port(&i, &tagged).expect("tagged bare-metal port");
    i.ports.insert(tagged.key(), tagged);
    // Same VLAN on the same interface: refused naming the VLAN.
    let f = |i: &Intent, p: PortBinding| field_of(validate_port(i, &p));
    assert_eq!(
        f(
            &i,
            bare_metal("bm2", "10.10.1.51", attach("swp5", Some(100)))
        ),
        "port.vlan"
    );
    // Another VLAN on it is fine; untagged on an interface that carries VLANs is not.
    validate_port(
        &i,
        &bare_metal("bm2", "10.10.1.51", attach("swp5", Some(101))),
    )
    .unwrap();
    assert_eq!(
        f(&i, bare_metal("bm2", "10.10.1.51", attach("swp5", None))),
        "port.interface"
    );
    // A fabric port, a bad name, a VLAN out of range.
    assert_eq!(
        f(&i, bare_metal("bm2", "10.10.1.51", attach("leaf2", None))),
        "port.interface"
    );
    assert_eq!(
        f(&i, bare_metal("bm2", "10.10.1.51", attach("a/b", None))),
        "port.interface"
    );
    assert_eq!(
        f(&i, bare_metal("bm2", "10.10.1.51", attach("swp6", Some(0)))),
        "port.vlan"
    );
    assert_eq!(
        f(
            &i,
            bare_metal("bm2", "10.10.1.51", attach("swp6", Some(4095)))
        ),
        "port.vlan"
    );
    // An untagged binding takes the whole interface.
    let untagged = bare_metal("bm3", "10.10.1.52", attach("swp6", None));
    validate_port(&i, &untagged).unwrap();
    i.ports.insert(untagged.key(), untagged);
    assert_eq!(
        f(&i, bare_metal("bm4", "10.10.1.53", attach("swp6", Some(7)))),
        "port.interface"
    );
    // A hypervisor port must not name a switch interface.
    let mut hv = bare_metal("vm9", "10.10.1.54", attach("eth0", None));
    hv.node = "hv3".into();
    assert_eq!(field_of(validate_port(&i, &hv)), "port.interface");
}

fn dc() -> DirectConnect {
    DirectConnect {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: "cdc".into(),
        switch: "leaf1".into(),
        interface: "swp7".into(),
        vlan: Some(200),
        local_address: "169.254.100.1/30".parse().unwrap(),
        peer_address: "169.254.100.2".parse().unwrap(),
        local_asn: 64512,
        customer_asn: 65300,
        accept: vec!["192.168.0.0/16 le 24".parse().unwrap()],
        vni: 1_500_000,
    }
}

#[test]
fn direct_connect_validation_names_the_field() {
    let mut i = demo();
    validate_dc(&i, &dc()).expect("valid Direct Connect");
    let f = |i: &Intent, d: DirectConnect| field_of(validate_dc(i, &d));
    let with = |g: &dyn Fn(&mut DirectConnect)| {
        let mut d = dc();
        g(&mut d);
        d
    };
    assert_eq!(f(&i, with(&|d| d.customer_asn = 0)), "dc.customer_asn");
    assert_eq!(f(&i, with(&|d| d.customer_asn = 23456)), "dc.customer_asn");
    assert_eq!(f(&i, with(&|d| d.customer_asn = 64512)), "dc.customer_asn");
    assert_eq!(f(&i, with(&|d| d.local_asn = 65535)), "dc.local_asn");
    assert_eq!(f(&i, with(&|d| d.switch = "hv1".into())), "dc.switch");
    assert_eq!(f(&i, with(&|d| d.switch = "leaf9".into())), "dc.switch");
    assert_eq!(f(&i, with(&|d| d.vpc = "green".into())), "dc.vpc");
    assert_eq!(
        f(
            &i,
            with(&|d| d.peer_address = "169.254.100.3".parse().unwrap())
        ),
        "dc.peer_address"
    );
    assert_eq!(
        f(
            &i,
            with(&|d| d.peer_address = "169.254.100.1".parse().unwrap())
        ),
        "dc.peer_address"
    );
    assert_eq!(
        f(
            &i,
            with(&|d| d.local_address = "169.254.100.0/30".parse().unwrap())
        ),
        "dc.local_address"
    );
    assert_eq!(
        f(
            &i,
            with(&|d| {
                d.local_address = "10.10.9.1/30".parse().unwrap();
                d.peer_address = "10.10.9.2".parse().unwrap();
            })
        ),
        "dc.local_address",
        "inside the VPC's CIDR"
    );
    assert_eq!(f(&i, with(&|d| d.accept.clear())), "dc.accept");
    assert_eq!(
        f(
            &i,
            with(&|d| d.accept = vec!["192.168.1.1/16".parse().unwrap()])
        ),
        "dc.accept[0]"
    );
    assert_eq!(
        f(
            &i,
            with(&|d| d.accept.push("10.0.0.0/8 ge 24 le 16".parse().unwrap()))
        ),
        "dc.accept[1]"
    );
    assert!("10.0.0.0/8 le"
        .parse::<sf_core::desired::PrefixFilter>()
        .is_err());
    assert!("10.0.0.0/8 foo 3"
        .parse::<sf_core::desired::PrefixFilter>()
        .is_err());
    // Port and VLAN conflicts with bare-metal ports and other Direct Connects.
    let bm = bare_metal("bm1", "10.10.1.50", attach("swp7", Some(200)));
    i.ports.insert(bm.key(), bm);
    assert_eq!(f(&i, dc()), "dc.vlan", "VLAN 200 on swp7 is used by bm1");
    validate_dc(&i, &with(&|d| d.vlan = Some(201))).unwrap();
    let d = with(&|d| d.vlan = Some(201));
    i.direct_connects.insert(d.key(), d);
    assert_eq!(
        f(
            &i,
            with(&|d| {
                d.vlan = Some(202);
            })
        ),
        "dc.name",
        "name taken"
    );
    assert_eq!(
        f(
            &i,
            with(&|d| {
                d.name = "cdc2".into();
                d.vlan = Some(202);
            })
        ),
        "dc.local_address",
        "same segment as cdc"
    );
    // Deletes: the VPC and the switch are in use while the Direct Connect exists.
    assert_eq!(field_of(check_delete_vpc(&i, "demo", "blue")), "vpc.name");
    assert_eq!(field_of(check_delete_node(&i, "leaf1")), "node.name");
    assert_eq!(
        field_of(check_delete_dc(&i, "demo", "blue", "nope")),
        "dc.name"
    );
    check_delete_dc(&i, "demo", "blue", "cdc").unwrap();
}

#[test]
fn switch_and_gateway_compile_bare_metal_and_direct_connect() {
    let mut i = with_gateways();
    // A spine (no attachment) stays transit; leaf1 becomes a VTEP with its attachments.
    let bm = bare_metal("bm1", "10.10.1.50", attach("swp5", None));
    i.ports.insert(bm.key(), bm);
    let d = dc();
    i.direct_connects.insert(d.key(), d);
    let leaf = compile_node(&i, "leaf1", 1).unwrap();
    let u = leaf.underlay().unwrap();
    assert_eq!(u.evpn, EvpnRole::Vtep);
    assert!(
        u.forwarding,
        "a switch routes the underlay whatever its EVPN role"
    );
    let nets: Vec<_> = leaf.networks().collect();
    assert_eq!(nets.len(), 2, "{nets:?}");
    let web = nets.iter().find(|n| n.vni == 1_000_001).unwrap();
    assert_eq!(web.ports[0].attach, attach("swp5", None));
    let hand_off = nets.iter().find(|n| n.vni == 1_500_000).unwrap();
    assert_eq!(hand_off.ports[0].attach, attach("swp7", Some(200)));
    // hv2 hosts blue-web-2 only: the bare-metal port does not leak into its scope.
    let hv2 = compile_node(&i, "hv2", 1).unwrap();
    assert!(hv2
        .networks()
        .all(|n| n.ports.iter().all(|p| p.attach.is_none())));
    // The serving gateway gets the hand-off segment and the peering with the VPC's tiers.
    let gw = compile_node(&i, "gw1", 1).unwrap();
    assert!(gw.networks().any(|n| n.vni == 1_500_000));
    let router = gw
        .objects
        .values()
        .find_map(|o| match o {
            DesiredObject::VpcRouter(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let p = &router.direct_connects[0];
    assert_eq!((p.peer_asn, p.local_asn), (65300, 64512));
    assert_eq!(p.announce, vec!["10.10.1.0/24".parse().unwrap()]);
    assert_eq!(p.accept[0].to_string(), "192.168.0.0/16 le 24");
    // The standby gateway holds it warm too; a DC change touches the gateways and leaf1.
    assert!(compile_node(&i, "gw2", 1)
        .unwrap()
        .networks()
        .any(|n| n.vni == p.vni));
    let dc = i.direct_connects.values().next().unwrap();
    let touched = affected_nodes(
        &i,
        &ObjectRef::DirectConnect(VpcChildRef::new(&dc.tenant, &dc.vpc, &dc.name)),
    );
    assert!(
        touched.contains("gw1") && touched.contains("leaf1"),
        "{touched:?}"
    );
    // Without attachments leaf1 is transit again.
    i.ports.retain(|_, p| p.attach.is_none());
    i.direct_connects.clear();
    let leaf = compile_node(&i, "leaf1", 1).unwrap();
    assert_eq!(leaf.underlay().unwrap().evpn, EvpnRole::Transit);
    assert!(leaf.networks().next().is_none());
}

#[test]
fn a_load_balancer_update_is_validated_as_its_create_without_conflicting_with_itself() {
    let mut i = with_gateways();
    let old = lb("203.0.113.20", &[("10.10.1.11", 80)]);
    assert_eq!(
        validate_lb_update(&i, &old).unwrap_err().kind,
        ErrorKind::NotFound
    );
    i.load_balancers.insert(old.key(), old.clone());
    // Its own name and VIP:port are no conflict; a create of the same is one.
    let new = lb("203.0.113.20", &[("10.10.1.12", 80)]);
    assert!(validate_lb_update(&i, &new).is_ok());
    assert_eq!(
        validate_lb(&i, &new).unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    // The create's checks still apply, with the create's fields.
    let bad = lb("203.0.113.20", &[("10.10.9.9", 80)]);
    assert_eq!(field_of(validate_lb_update(&i, &bad)), "lb.backends[0].ip");
    // Another load balancer's VIP:port stays taken.
    let mut other = lb("203.0.113.21", &[("10.10.1.11", 80)]);
    other.name = "other".into();
    i.load_balancers.insert(other.key(), other);
    let taken = lb("203.0.113.21", &[("10.10.1.11", 80)]);
    assert_eq!(field_of(validate_lb_update(&i, &taken)), "lb.vip");
}

#[test]
fn a_tenant_update_needs_the_tenant() {
    let mut i = Intent::default();
    let t = Tenant {
        name: "demo".into(),
        description: "new".into(),
    };
    assert_eq!(
        validate_tenant_update(&i, &t).unwrap_err().kind,
        ErrorKind::NotFound
    );
    i.tenants.insert("demo".into(), t.clone());
    assert!(validate_tenant_update(&i, &t).is_ok());
}

#[test]
fn a_nat_rule_update_keeps_its_kind_and_does_not_conflict_with_itself() {
    let mut i = with_gateways();
    let ip = |s: &str| s.parse().unwrap();
    let fwd = |private: &str| {
        nat(NatKind::PortForward {
            public_ip: ip("203.0.113.30"),
            protocol: sf_core::desired::L4Protocol::Tcp,
            public_port: 8080,
            private_ip: ip(private),
            private_port: 80,
        })
    };
    let old = fwd("10.10.1.11");
    assert_eq!(
        validate_nat_update(&i, &old).unwrap_err().kind,
        ErrorKind::NotFound
    );
    i.nat_rules.insert(old.key(), old.clone());
    // Its own public address and port are no conflict; a create of the same is one.
    let new = fwd("10.10.1.12");
    assert!(validate_nat_update(&i, &new).is_ok());
    assert_eq!(
        validate_nat(&i, &new).unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    // The create's checks still apply, with the create's fields.
    assert_eq!(
        field_of(validate_nat_update(&i, &fwd("10.10.9.9"))),
        "nat.private_ip"
    );
    // Another kind is another rule.
    let as_static = nat(NatKind::StaticNat {
        public_ip: ip("203.0.113.30"),
        private_ip: ip("10.10.1.12"),
    });
    assert_eq!(field_of(validate_nat_update(&i, &as_static)), "nat.kind");
}

#[test]
fn a_route_update_is_validated_as_its_create_without_conflicting_with_itself() {
    let mut i = with_gateways();
    let r = |name: &str, prefix: &str, nexthop: &str| StaticRoute {
        tenant: "demo".into(),
        vpc: "blue".into(),
        name: name.into(),
        prefix: prefix.parse().unwrap(),
        nexthop: nexthop.parse().unwrap(),
    };
    let old = r("r", "192.168.0.0/16", "10.10.1.20");
    assert_eq!(
        validate_route_update(&i, &old).unwrap_err().kind,
        ErrorKind::NotFound
    );
    i.routes.insert(old.key(), old.clone());
    assert!(validate_route_update(&i, &r("r", "192.168.0.0/16", "10.10.1.21")).is_ok());
    assert_eq!(
        field_of(validate_route_update(
            &i,
            &r("r", "192.168.0.0/16", "10.99.0.1")
        )),
        "route.nexthop"
    );
    // Another route's prefix stays taken.
    let other = r("o", "172.16.0.0/12", "10.10.1.20");
    i.routes.insert(other.key(), other);
    assert_eq!(
        field_of(validate_route_update(
            &i,
            &r("r", "172.16.0.0/12", "10.10.1.20")
        )),
        "route.prefix"
    );
}
