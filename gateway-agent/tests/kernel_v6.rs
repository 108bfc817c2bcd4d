//! Kernel test of a dual-stack VPC router (issue 21): planned and built by the netlink
//! executor in a throwaway "host" namespace (a thread's own) and a named VPC namespace of
//! this test (`sfg6<pid>-7`, deleted at the end, also on failure), read back through netlink
//! and `ip`: the tier's `::1/64` and the stable link-local as its only link-local, the
//! transit link-locals, the namespace's default route and IPv6 forwarding, and the announced
//! range routed into the namespace only while the router is active, and a static IPv6 route
//! via a host of the tier.
//! Skipped, with a note, when not root.

use std::sync::Arc;

use sf_core::desired::{RouterRoute6, RouterTier, RouterTier6, VpcRouter, VpcRouter6};
use sf_gateway_agent::exec::Exec;
use sf_gateway_agent::kernel::Kernel;
use sf_gateway_agent::plan::{self, Action};
use sf_gateway_agent::{device, names, plan6};
use sf_linux::converge::{OnFailure, Pass};

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the VPC namespace, also after a failure.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn router() -> (VpcRouter, VpcRouter6) {
    let r = VpcRouter {
        role: Default::default(),
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
            acl: None,
        }],
        routes: vec![],
        snat: None,
        port_forwards: vec![],
        static_nats: vec![],
        load_balancers: vec![],
        direct_connects: vec![],
    };
    let r6 = VpcRouter6 {
        tenant: "acme".into(),
        vpc: "prod".into(),
        id: 7,
        role: Default::default(),
        link_local: sf_core::desired::vpc_link_local(7),
        tiers: vec![RouterTier6 {
            name: "web".into(),
            vni: 1_000_001,
            prefix: "2001:db8:100:1::/64".parse().unwrap(),
            gateway: "2001:db8:100:1::1".parse().unwrap(),
        }],
        announce: vec!["2001:db8:100::/48".parse().unwrap()],
        // A static route: via a host of the tier, on the tier's link.
        routes: vec![RouterRoute6 {
            prefix: "fd10:99::/64".parse().unwrap(),
            nexthop: "2001:db8:100:1::11".parse().unwrap(),
        }],
        load_balancers: vec![],
    };
    (r, r6)
}

/// Plans both sides against what the kernel shows.
async fn plan_both(
    k: &Arc<Kernel>,
    prefix: &str,
    r: &VpcRouter,
    r6: &VpcRouter6,
    active: bool,
) -> Vec<Action> {
    let ns = names::netns_name(prefix, r.id);
    let host = device::observe_host(k).await.unwrap();
    let seen = match device::namespaces(prefix).await.unwrap().contains(&ns) {
        true => Some(device::observe_ns(k, &ns).await.unwrap()),
        false => None,
    };
    let (mut a, e) = plan::plan_router(prefix, r, &host, seen.as_ref(), &[], active);
    assert!(e.is_empty(), "{e:?}");
    let (b, e) = plan6::plan_router6(r, Some(r6), &host, seen.as_ref(), &ns, active, &[]);
    assert!(e.is_empty(), "{e:?}");
    a.extend(b);
    a
}

async fn run(k: &Arc<Kernel>, actions: Vec<Action>) {
    let mut pass = Pass::default();
    let ok = pass
        .execute("vpc 7", &Exec::all(actions, k), OnFailure::Stop)
        .await;
    assert!(ok, "{:?}", pass.errors);
}

async fn build_and_flip(prefix: &str) {
    let (r, r6) = router();
    let ns = names::netns_name(prefix, r.id);
    let k = Arc::new(Kernel::default());
    run(&k, plan_both(&k, prefix, &r, &r6, true).await).await;
    let again = plan_both(&k, prefix, &r, &r6, true).await;
    assert!(again.is_empty(), "still to do after the build: {again:?}");

    // Read back through netlink.
    let seen = device::observe_ns(&k, &ns).await.unwrap();
    assert!(seen.forwarding6);
    let ll = ipnet::Ipv6Net::new(r6.link_local, 64).unwrap();
    let mut tier = seen.addrs6["t1000001"].clone();
    tier.sort();
    let mut want = vec!["2001:db8:100:1::1/64".parse().unwrap(), ll];
    want.sort();
    assert_eq!(tier, want, "the tier's only IPv6 addresses");
    assert_eq!(seen.addrs6["transit"], vec!["fe80::2/64".parse().unwrap()]);
    let mut routes6 = seen.routes6.clone();
    routes6.sort();
    assert_eq!(routes6, plan6::ns_routes6(Some(&r6)));
    let host = device::observe_host(&k).await.unwrap();
    assert_eq!(host.addrs6["gx7"], vec!["fe80::1/64".parse().unwrap()]);
    assert_eq!(host.routes6, plan6::host_routes6(&r6));
    // And through `ip`: no tentative address (nodad), exactly one link-local on the tier,
    // the one derived from the VPC MAC.
    let addrs = sh(&format!("ip -n {ns} -6 -o addr show dev t1000001"));
    assert!(!addrs.contains("tentative"), "{addrs}");
    let lls: Vec<&str> = addrs.lines().filter(|l| l.contains("fe80:")).collect();
    assert_eq!(lls.len(), 1, "{addrs}");
    assert!(lls[0].contains(&format!("{}/64", r6.link_local)), "{addrs}");
    let routes = sh(&format!("ip -n {ns} -6 route show fd10:99::/64"));
    assert!(
        routes.contains("via 2001:db8:100:1::11 dev t1000001"),
        "{routes}"
    );
    let fwd = sh(&format!(
        "ip netns exec {ns} sysctl -n net.ipv6.conf.t1000001.forwarding"
    ));
    assert_eq!(fwd.trim(), "1");

    // Passive: the range leaves the host, the namespace keeps its addresses.
    run(&k, plan_both(&k, prefix, &r, &r6, false).await).await;
    let host = device::observe_host(&k).await.unwrap();
    assert!(host.routes6.is_empty(), "{:?}", host.routes6);
    let seen = device::observe_ns(&k, &ns).await.unwrap();
    assert_eq!(seen.addrs6["t1000001"].len(), 2);
    assert!(plan_both(&k, prefix, &r, &r6, false).await.is_empty());

    let host = device::observe_host(&k).await.unwrap();
    run(&k, plan::plan_removal(prefix, 7, &host)).await;
}

#[test]
fn a_dual_stack_router_is_built_and_flipped_through_netlink() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let prefix = format!("sfg6{}-", std::process::id());
    let _clean = Cleanup(format!("{prefix}7"));
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        sh("ip link set lo up");
        sh("ip link add brvx-1000001 type bridge && ip link set brvx-1000001 up");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(build_and_flip(&prefix));
    })
    .join()
    .expect("test thread");
}
