//! Incremental compilation equals a full recompile. Random sequences of puts and deletes over a
//! small universe of every object kind are applied one at a time with `compile::apply`; only the
//! nodes it names are recompiled, and after every event the result must equal compiling every
//! node from scratch. A role whose `affected_by` forgets an input fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;
use sf_core::compile::{self, compile_node};
use sf_core::desired::{
    AclAction, AclProtocol, AclRule, DesiredObject, HealthCheck, L4Protocol, PrefixFilter,
    SwitchAttachment,
};
use sf_core::event::{IntentEvent, Object, ObjectRef, PortRef, VpcChildRef, VpcRef};
use sf_core::model::*;

const NODES: [&str; 5] = ["hv1", "hv2", "gw1", "gw2", "leaf1"];
const VPCS: [&str; 2] = ["v1", "v2"];
const NETS: [&str; 2] = ["n1", "n2"];
const TENANT: &str = "t1";

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(items)
}

/// The VNI of a network key is fixed, as allocation makes it (unique per network).
fn net_vni(vpc: &str, net: &str) -> u32 {
    let v = VPCS.iter().position(|x| *x == vpc).unwrap() as u32;
    let n = NETS.iter().position(|x| *x == net).unwrap() as u32;
    1_000_000 + v * 10 + n
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn node_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&NODES),
        pick(&[NodeRole::Hypervisor, NodeRole::Switch, NodeRole::Gateway]),
        pick(&["", "b"]),
        any::<bool>(),
        // Fabric neighbours among the nodes: a switch's filters follow its neighbours' scope.
        prop::sample::subsequence(NODES.to_vec(), 0..=NODES.len()),
    )
        .prop_map(|(name, role, site, delete, neighbours)| {
            let r = ObjectRef::Node(name.to_string());
            if delete {
                return IntentEvent::Delete(r);
            }
            let idx = NODES.iter().position(|n| *n == name).unwrap() as u8;
            IntentEvent::Put(
                r,
                Object::Node(Node {
                    name: name.to_string(),
                    role,
                    site: site.to_string(),
                    asn: 65000 + idx as u32,
                    loopback: ip(10, 255, 0, idx + 1),
                    fabric_ports: neighbours
                        .into_iter()
                        .filter(|n| *n != name)
                        .map(String::from)
                        .chain(["eth1".to_string()])
                        .collect(),
                }),
            )
        })
}

fn vpc_event() -> impl Strategy<Value = IntentEvent> {
    (pick(&VPCS), pick(&["", "b"]), any::<bool>()).prop_map(|(vpc, site, delete)| {
        let r = ObjectRef::Vpc(VpcRef::new(TENANT, vpc));
        if delete {
            return IntentEvent::Delete(r);
        }
        IntentEvent::Put(
            r,
            Object::Vpc(Vpc {
                ipv6_ranges: Vec::new(),
                tenant: TENANT.into(),
                name: vpc.into(),
                cidr: "10.0.0.0/16".parse().unwrap(),
                site: site.into(),
                id: if vpc == "v1" { 1 } else { 2 },
            }),
        )
    })
}

fn network_event() -> impl Strategy<Value = IntentEvent> {
    (pick(&VPCS), pick(&NETS), 1u8..3, any::<bool>()).prop_map(|(vpc, net, third, delete)| {
        let r = ObjectRef::Network(VpcChildRef::new(TENANT, vpc, net));
        if delete {
            return IntentEvent::Delete(r);
        }
        IntentEvent::Put(
            r,
            Object::Network(Network {
                ipv6_prefix: None,
                tenant: TENANT.into(),
                vpc: vpc.into(),
                name: net.into(),
                cidr: format!("10.0.{third}.0/24").parse().unwrap(),
                vni: net_vni(vpc, net),
                gateway: ip(10, 0, third, 1),
            }),
        )
    })
}

fn port_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&["p1", "p2", "p3", "p4"]),
        pick(&VPCS),
        pick(&NETS),
        pick(&NODES),
        prop::option::of(pick(&[None, Some(100u16)])),
        10u8..13,
        any::<bool>(),
    )
        .prop_map(|(name, vpc, net, node, attach, host, delete)| {
            let r = ObjectRef::Port(PortRef::new(TENANT, name));
            if delete {
                return IntentEvent::Delete(r);
            }
            IntentEvent::Put(
                r,
                Object::Port(PortBinding {
                    ipv6: None,
                    tenant: TENANT.into(),
                    name: name.into(),
                    vpc: vpc.into(),
                    network: net.into(),
                    node: node.into(),
                    ip: ip(10, 0, 1, host),
                    mac: None,
                    attach: attach.map(|vlan| SwitchAttachment {
                        interface: "swp5".into(),
                        vlan,
                    }),
                }),
            )
        })
}

fn pool_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&["pa", "pb"]),
        pick(&["203.0.113.0/24", "198.51.100.0/24"]),
        pick(&["", "b"]),
        any::<bool>(),
    )
        .prop_map(|(name, cidr, site, delete)| {
            let r = ObjectRef::Pool(name.to_string());
            if delete {
                return IntentEvent::Delete(r);
            }
            IntentEvent::Put(
                r,
                Object::Pool(Pool {
                    name: name.into(),
                    cidr: cidr.parse().unwrap(),
                    site: site.into(),
                }),
            )
        })
}

fn nat_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&VPCS),
        pick(&["r1", "r2"]),
        0u8..3,
        10u8..13,
        any::<bool>(),
    )
        .prop_map(|(vpc, name, kind, host, delete)| {
            let r = ObjectRef::Nat(VpcChildRef::new(TENANT, vpc, name));
            if delete {
                return IntentEvent::Delete(r);
            }
            let public_ip = ip(203, 0, 113, host);
            let private_ip = ip(10, 0, 1, host);
            let kind = match kind {
                0 => NatKind::Snat { public_ip },
                1 => NatKind::StaticNat {
                    public_ip,
                    private_ip,
                },
                _ => NatKind::PortForward {
                    public_ip,
                    protocol: L4Protocol::Tcp,
                    public_port: 8080,
                    private_ip,
                    private_port: 80,
                },
            };
            IntentEvent::Put(
                r,
                Object::Nat(NatRule {
                    tenant: TENANT.into(),
                    vpc: vpc.into(),
                    name: name.into(),
                    kind,
                }),
            )
        })
}

fn route_event() -> impl Strategy<Value = IntentEvent> {
    (pick(&VPCS), 1u8..3, any::<bool>()).prop_map(|(vpc, hop, delete)| {
        let r = ObjectRef::Route(VpcChildRef::new(TENANT, vpc, "rt1"));
        if delete {
            return IntentEvent::Delete(r);
        }
        IntentEvent::Put(
            r,
            Object::Route(StaticRoute {
                tenant: TENANT.into(),
                vpc: vpc.into(),
                name: "rt1".into(),
                prefix: "192.168.0.0/16".parse().unwrap(),
                nexthop: ip(10, 0, 1, hop).into(),
            }),
        )
    })
}

fn acl_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&VPCS),
        pick(&["a1", "a2"]),
        pick(&[AclAction::Allow, AclAction::Deny]),
        prop::collection::btree_set(pick(&NETS), 0..=2),
        0u16..3,
        any::<bool>(),
    )
        .prop_map(|(vpc, name, default_action, tiers, rules, delete)| {
            let r = ObjectRef::Acl(VpcChildRef::new(TENANT, vpc, name));
            if delete {
                return IntentEvent::Delete(r);
            }
            let rules = (0..rules)
                .map(|n| AclListRule {
                    direction: if n % 2 == 0 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    rule: AclRule {
                        number: 10 + n as u32,
                        action: AclAction::Allow,
                        protocol: AclProtocol::Tcp,
                        ports: Some((22 + n, 22 + n)),
                        icmp_type: None,
                        icmp_code: None,
                        cidrs: vec!["0.0.0.0/0".parse().unwrap()],
                    },
                })
                .collect();
            IntentEvent::Put(
                r,
                Object::Acl(AclList {
                    tenant: TENANT.into(),
                    vpc: vpc.into(),
                    name: name.into(),
                    default_action,
                    rules,
                    tiers: tiers.into_iter().map(str::to_string).collect(),
                }),
            )
        })
}

fn lb_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&VPCS),
        pick(&["203.0.113.50", "10.0.1.50"]),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(vpc, vip, backends, delete)| {
            let r = ObjectRef::LoadBalancer(VpcChildRef::new(TENANT, vpc, "lb1"));
            if delete {
                return IntentEvent::Delete(r);
            }
            IntentEvent::Put(
                r,
                Object::LoadBalancer(LoadBalancer {
                    tenant: TENANT.into(),
                    vpc: vpc.into(),
                    name: "lb1".into(),
                    vip: vip.parse().unwrap(),
                    protocol: L4Protocol::Tcp,
                    port: 80,
                    backends: (0..backends)
                        .map(|b| Backend {
                            ip: ip(10, 0, 1, 10 + b as u8).into(),
                            port: 80,
                            weight: 1,
                        })
                        .collect(),
                    health: HealthCheck::None,
                    table_size: 251,
                    source_cidrs: Vec::new(),
                }),
            )
        })
}

fn dc_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&VPCS),
        pick(&NODES),
        prop::option::of(100u16..102),
        any::<bool>(),
    )
        .prop_map(|(vpc, switch, vlan, delete)| {
            let r = ObjectRef::DirectConnect(VpcChildRef::new(TENANT, vpc, "dc1"));
            if delete {
                return IntentEvent::Delete(r);
            }
            IntentEvent::Put(
                r,
                Object::DirectConnect(DirectConnect {
                    tenant: TENANT.into(),
                    vpc: vpc.into(),
                    name: "dc1".into(),
                    switch: switch.into(),
                    interface: "swp9".into(),
                    vlan,
                    local_address: "169.254.100.1/30".parse().unwrap(),
                    peer_address: ip(169, 254, 100, 2),
                    local_asn: 64512,
                    customer_asn: 65300,
                    accept: vec![PrefixFilter {
                        prefix: "192.168.0.0/16".parse().unwrap(),
                        ge: None,
                        le: Some(24),
                    }],
                    vni: 1_500_000 + if vpc == "v1" { 0 } else { 1 },
                }),
            )
        })
}

fn placement_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&VPCS),
        pick(&[None, Some("gw1"), Some("gw2"), Some("hv1")]),
        any::<bool>(),
    )
        .prop_map(|(vpc, primary, delete)| {
            let r = ObjectRef::Placement(VpcRef::new(TENANT, vpc));
            if delete {
                return IntentEvent::Delete(r);
            }
            IntentEvent::Put(
                r,
                Object::Placement(Placement {
                    primary: primary.map(str::to_string),
                    standby: None,
                }),
            )
        })
}

fn misc_event() -> impl Strategy<Value = IntentEvent> {
    let vnis: Vec<u32> = VPCS
        .iter()
        .flat_map(|v| NETS.iter().map(move |n| net_vni(v, n)))
        .chain([1_500_000, 4_000])
        .collect();
    (
        pick(&NODES),
        prop::collection::btree_set(prop::sample::select(vnis), 0..=3),
        0u8..4,
    )
        .prop_map(|(node, observed, which)| match which {
            0 => IntentEvent::Put(ObjectRef::Observed(node.into()), Object::Observed(observed)),
            1 => IntentEvent::Put(ObjectRef::Drained(node.into()), Object::Drained),
            2 => IntentEvent::Delete(ObjectRef::Drained(node.into())),
            _ => IntentEvent::Put(
                ObjectRef::Tenant(TENANT.into()),
                Object::Tenant(Tenant {
                    name: TENANT.into(),
                    description: String::new(),
                }),
            ),
        })
}

/// A gateway's report of the backends its checks hold down (one VPC's load balancer; an
/// empty set is no report).
fn lb_down_event() -> impl Strategy<Value = IntentEvent> {
    (
        pick(&["gw1", "gw2"]),
        pick(&VPCS),
        prop::collection::btree_set(pick(&["10.0.1.10:80", "10.0.1.11:80"]), 0..=2),
    )
        .prop_map(|(node, vpc, down)| {
            let down: BTreeSet<String> = down.into_iter().map(str::to_string).collect();
            let report = [(VpcChildRef::new(TENANT, vpc, "lb1"), down)].into();
            IntentEvent::Put(ObjectRef::LbDown(node.into()), Object::LbDown(report))
        })
}

fn any_event() -> impl Strategy<Value = IntentEvent> {
    prop_oneof![
        node_event(),
        vpc_event(),
        network_event(),
        port_event(),
        pool_event(),
        nat_event(),
        route_event(),
        acl_event(),
        lb_event(),
        dc_event(),
        placement_event(),
        misc_event(),
        lb_down_event(),
    ]
}

type Compiled = BTreeMap<String, BTreeMap<String, DesiredObject>>;

/// Every node compiled from scratch.
fn full(intent: &Intent) -> Compiled {
    intent
        .nodes
        .keys()
        .filter_map(|n| compile_node(intent, n, 0).map(|d| (n.clone(), d.objects)))
        .collect()
}

/// Replays `events`, recompiling only what `compile::apply` names; checks against a full
/// recompile after each event. Returns the first divergence.
fn replay(events: &[IntentEvent]) -> Result<(), String> {
    let mut intent = Intent::default();
    let mut compiled = Compiled::new();
    for (i, ev) in events.iter().enumerate() {
        let touched: BTreeSet<String> =
            compile::apply(&mut intent, ev.clone()).map_err(|e| e.to_string())?;
        for node in touched {
            match compile_node(&intent, &node, 0) {
                Some(d) => compiled.insert(node, d.objects),
                None => compiled.remove(&node),
            };
        }
        let want = full(&intent);
        if compiled != want {
            let differ: BTreeSet<&String> = want
                .keys()
                .chain(compiled.keys())
                .filter(|n| want.get(*n) != compiled.get(*n))
                .collect();
            return Err(format!(
                "after event {i} ({ev:?}) nodes {differ:?} differ from a full recompile"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn incremental_compilation_equals_a_full_recompile(
        events in prop::collection::vec(any_event(), 1..60)
    ) {
        if let Err(e) = replay(&events) {
            prop_assert!(false, "{}", e);
        }
    }
}
