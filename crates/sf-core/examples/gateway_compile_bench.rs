//! How long compiling one gateway and its leaf takes with N VPCs placed on the gateway pair
//! (one tier each), for `deploy/bench.sh`-style figures: `figure,value,baseline,ratio` lines,
//! the baseline being the smallest N scaled linearly (what a linear compiler would take).
//!
//! `--smoke`: N = 100 and 1,000 only.

use std::time::Instant;

use sf_core::compile::compile_node;
use sf_core::event::VpcRef;
use sf_core::model::{Intent, Network, Node, NodeRole, Placement, Tenant, Vpc};

fn node(name: &str, role: NodeRole, i: u32, ports: &[&str]) -> Node {
    Node {
        name: name.into(),
        role,
        site: "lab".into(),
        asn: 65000 + i,
        loopback: std::net::Ipv4Addr::new(10, 255, 0, i as u8),
        fabric_ports: ports.iter().map(|p| p.to_string()).collect(),
    }
}

fn intent(vpcs: u32) -> Intent {
    let mut i = Intent::default();
    i.nodes
        .insert("gw1".into(), node("gw1", NodeRole::Gateway, 1, &["leaf1"]));
    i.nodes
        .insert("gw2".into(), node("gw2", NodeRole::Gateway, 2, &["leaf1"]));
    i.nodes.insert(
        "leaf1".into(),
        node("leaf1", NodeRole::Switch, 3, &["gw1", "gw2"]),
    );
    i.tenants.insert(
        "t".into(),
        Tenant {
            name: "t".into(),
            description: String::new(),
        },
    );
    for v in 0..vpcs {
        let name = format!("vpc{v:06}");
        let vpc = Vpc {
            ipv6_ranges: Vec::new(),
            tenant: "t".into(),
            name: name.clone(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            site: "lab".into(),
            id: v + 1,
        };
        i.vpcs.insert(vpc.key(), vpc);
        let net = Network {
            ipv6_prefix: None,
            tenant: "t".into(),
            vpc: name.clone(),
            name: "web".into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            vni: 1_000_000 + v,
            gateway: "10.0.1.1".parse().unwrap(),
        };
        i.networks.insert(net.key(), net);
        i.placements.insert(
            VpcRef::new("t", &name),
            Placement {
                primary: Some("gw1".into()),
                standby: Some("gw2".into()),
            },
        );
    }
    i
}

fn time_ms(i: &Intent, node: &str) -> f64 {
    let t = Instant::now();
    let d = compile_node(i, node, 1).expect("node exists");
    std::hint::black_box(d);
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let sizes: &[u32] = if smoke {
        &[100, 1_000]
    } else {
        &[1_000, 5_000, 20_000]
    };
    println!("# compile one gateway / its leaf with N VPCs placed on the pair; baseline: N/N0 x the N0 time (linear)");
    let mut first: Option<(u32, f64, f64)> = None;
    for &n in sizes {
        let i = intent(n);
        let gw = time_ms(&i, "gw1");
        let leaf = time_ms(&i, "leaf1");
        let (n0, gw0, leaf0) = *first.get_or_insert((n, gw, leaf));
        let scale = n as f64 / n0 as f64;
        println!(
            "gateway_compile_ms_{n},{gw:.1},{:.1},{:.2}",
            gw0 * scale,
            gw / (gw0 * scale)
        );
        println!(
            "leaf_compile_ms_{n},{leaf:.1},{:.1},{:.2}",
            leaf0 * scale,
            leaf / (leaf0 * scale)
        );
    }
}
