//! Kernel test of the gateway's netlink executor: a VPC router is planned and built by the
//! executor in a throwaway "host" namespace (a thread's own) and a named VPC namespace of this
//! test (`sfgx<pid>-7`, deleted at the end, also on failure), read back through netlink, then
//! removed. `ip` is a logging wrapper on PATH: links, addresses and routes must not go
//! through it (only `ip netns add/del` and `nft` may), which the former executor fails.
//! Skipped, with a note, when not root. One test in this binary: it changes PATH.

use std::collections::BTreeMap;
use std::sync::Arc;

use sf_core::desired::{RouterRoute, RouterTier, VpcRouter};
use sf_gateway_agent::exec::Exec;
use sf_gateway_agent::kernel::Kernel;
use sf_gateway_agent::plan::{self, HostState};
use sf_gateway_agent::{device, names};
use sf_linux::converge::{OnFailure, Pass};

mod common;
use common::{root, IpLog};

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// Removes the VPC namespace, also after a failure.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("/usr/sbin/ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn router() -> VpcRouter {
    VpcRouter {
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
        routes: vec![RouterRoute {
            prefix: "10.99.0.0/16".parse().unwrap(),
            nexthop: "10.10.1.5".parse().unwrap(),
        }],
        snat: Some("203.0.113.10".parse().unwrap()),
        port_forwards: vec![],
        static_nats: vec![],
        load_balancers: vec![],
        direct_connects: vec![],
    }
}

/// The `ip` commands the wrapper saw since the last call.
fn ip_calls(log: &std::path::Path) -> Vec<String> {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    s.lines().map(String::from).collect()
}

async fn build_and_remove(prefix: &str, log: &std::path::Path) {
    let r = router();
    let ns = names::netns_name(prefix, r.id);
    let k = Arc::new(Kernel::default());
    let host = device::observe_host(&k).await.unwrap();
    let (actions, problems) = plan::plan_router(prefix, &r, &host, None, &[], true);
    assert!(problems.is_empty(), "{problems:?}");
    let mut pass = Pass::default();
    let ok = pass
        .execute("vpc 7", &Exec::all(actions.clone(), &k), OnFailure::Stop)
        .await;
    assert!(ok, "{:?}", pass.errors);
    assert_eq!(pass.changes, actions.len());
    // Only the namespace and nftables went through processes.
    for call in ip_calls(log) {
        assert!(
            call.starts_with("netns add ") || call.starts_with(&format!("netns exec {ns} nft")),
            "an ip process for a netlink action: ip {call}"
        );
    }

    // Read back through netlink: the planner finds nothing left to do, and the layout.
    let host = device::observe_host(&k).await.unwrap();
    let seen = device::observe_ns(&k, &ns).await.unwrap();
    let (again, _) = plan::plan_router(prefix, &r, &host, Some(&seen), &[], true);
    assert!(again.is_empty(), "still to do after the build: {again:?}");
    let tier = seen.link("t1000001").expect("tier link in the namespace");
    assert!(tier.owned && tier.up, "{tier:?}");
    assert_eq!(tier.mac.as_deref(), Some(r.mac.as_str()));
    assert_eq!(tier.addrs, vec!["10.10.1.1/24".parse().unwrap()]);
    assert!(seen.forwarding);
    assert!(seen.routes.iter().any(
        |x| x.dst.to_string() == "10.99.0.0/16" && x.via == Some("10.10.1.5".parse().unwrap())
    ));
    let hl = host.link("g7v1000001").expect("tier host end");
    assert!(hl.owned && hl.up);
    assert_eq!(hl.master.as_deref(), Some("brvx-1000001"));
    assert!(host.link("gx7").is_some_and(|l| l.owned));
    // No IPv6 link-local address generated on either end (`addrgenmode none`).
    sh("/usr/sbin/ip -d link show g7v1000001 | grep -q 'addrgenmode none'");
    sh(&format!(
        "/usr/sbin/ip -n {ns} -d link show t1000001 | grep -q 'addrgenmode none'"
    ));
    // The in-memory twin agrees on the routes (it names no device the kernel picks).
    let (mut twin_host, mut twin) = (empty_host(), BTreeMap::new());
    plan::apply_in_memory(prefix, &mut twin_host, &mut twin, &actions);
    let sorted = |v: Vec<plan::Route>| {
        let mut v: Vec<_> = v.into_iter().map(|x| (x.dst, x.via)).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(seen.routes.clone()), sorted(twin[&7].routes.clone()));
    assert_eq!(
        sorted(host.routes.clone()),
        sorted(twin_host.routes.clone())
    );

    // Removal: routes, links, namespace; only `ip netns del` is a process (the log so far
    // has the observer's `nft` reads).
    ip_calls(log);
    let steps = Exec::all(plan::plan_removal(prefix, 7, &host), &k);
    let mut pass = Pass::default();
    assert!(
        pass.execute("vpc 7", &steps, OnFailure::Stop).await,
        "{:?}",
        pass.errors
    );
    assert_eq!(ip_calls(log), vec![format!("netns del {ns}")]);
    let host = device::observe_host(&k).await.unwrap();
    assert!(host.link("gx7").is_none() && host.link("g7v1000001").is_none());
    assert!(host.routes.is_empty(), "{:?}", host.routes);
    assert!(!device::namespaces(prefix).await.unwrap().contains(&ns));
}

fn empty_host() -> HostState {
    HostState::default()
}

#[test]
fn the_executor_builds_and_removes_a_router_through_netlink() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let prefix = format!("sfgx{}-", std::process::id());
    let ip = IpLog::install("sfgx");
    let _clean = Cleanup(format!("{prefix}7"));
    let log = ip.log.clone();
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        sh("/usr/sbin/ip link set lo up");
        sh("/usr/sbin/ip link add brvx-1000001 type bridge && /usr/sbin/ip link set brvx-1000001 up");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(build_and_remove(&prefix, &log));
    })
    .join()
    .expect("test thread");
}
