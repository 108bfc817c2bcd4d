//! Kernel test of the hypervisor's delta path: in a network namespace of its own (gone when
//! the test's thread ends), the agent's dataplane programs networks, then gets one more and
//! sees a link changed behind its back; each later pass must plan only the network concerned,
//! without a dump, and leave the kernel as a fresh full pass would (read back through
//! netlink). Skipped, with a note, when not root. FRR is left out (`skip_frr`).

use std::time::Duration;

use sf_agent::{Dataplane, LeaseState, ReconcileContext};
use sf_core::desired::NodeDesired;
use sf_hypervisor_agent::dataplane::{Hypervisor, PassScope};
use sf_linux::frr::Frr;
use sf_linux::netlink::{self, Netlink};

/// A desired state with `n` networks from VNI 3,000,001 (as hv-scale-proof's gen.py).
fn desired(n: u32) -> NodeDesired {
    let mut objs = serde_json::json!({"underlay": {"kind": "underlay", "asn": 65001,
        "router_id": "10.255.1.1", "loopback": "10.255.1.1", "neighbors": ["leaf1"],
        "evpn": "vtep"}});
    for i in 0..n {
        let p = format!("10.{}.{}", i / 256 % 256, i % 256);
        objs[format!("net/{}", 3_000_001 + i)] = serde_json::json!({"kind": "l2_network",
            "vni": 3_000_001 + i, "tenant": "t", "vpc": format!("vpc{i}"),
            "network": format!("tier{i}"), "cidr": format!("{p}.0/24"),
            "gateway": format!("{p}.1"), "ports": []});
    }
    serde_json::from_value(serde_json::json!({"node": "hv1", "revision": 1, "objects": objs}))
        .unwrap()
}

async fn pass(dp: &mut Hypervisor, d: &NodeDesired) -> usize {
    let ctx = ReconcileContext {
        lease: LeaseState::Held { continuous: true },
        fresh: true,
    };
    let r = dp.reconcile(d, &ctx).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.changes
}

async fn ip(args: &[&str]) {
    sf_linux::run("ip", args).await.expect("ip");
}

#[test]
fn one_network_and_one_changed_link_are_planned_alone() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("one_network_and_one_changed_link: skipped (needs root for a namespace)");
        return;
    }
    std::thread::spawn(|| {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario());
    })
    .join()
    .expect("test thread");
}

async fn scenario() {
    ip(&["link", "set", "lo", "up"]).await;
    let dir = std::env::temp_dir().join("sf-hv-delta-test");
    let mut dp = Hypervisor::new("hv1".into(), Frr::new(dir));
    dp.skip_frr = true;
    dp.watch_links();
    for _ in 0..100 {
        if dp.watching() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wake = dp.wakeup().unwrap();
    // First pass: everything (VTEP + 6 actions per network + the ACL table, which pins
    // each tier's ports even without ACLs).
    assert_eq!(pass(&mut dp, &desired(200)).await, 1 + 200 * 6 + 1);
    assert!(dp.last_pass.full);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The messages of those changes mark their networks: the pass they wake finds the
    // view as planned (nothing to do), without a dump.
    assert_eq!(pass(&mut dp, &desired(200)).await, 0);
    assert_eq!(
        dp.last_pass,
        PassScope {
            full: false,
            networks: 200
        }
    );
    // One network more: its six actions, planned alone.
    let plus = desired(201);
    assert_eq!(pass(&mut dp, &plus).await, 6);
    assert_eq!(
        dp.last_pass,
        PassScope {
            full: false,
            networks: 1
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its own link messages: a pass that finds nothing to do.
    assert_eq!(pass(&mut dp, &plus).await, 0);
    // Someone sets a vxlan down and turns learning on its port back on.
    ip(&[
        "link",
        "set",
        "vxlan3000007",
        "type",
        "bridge_slave",
        "learning",
        "on",
    ])
    .await;
    ip(&["link", "set", "vxlan3000007", "down"]).await;
    tokio::time::timeout(Duration::from_secs(2), wake.notified())
        .await
        .expect("a link message wakes the agent");
    // The first message wakes it; let the second (the vxlan down) arrive too, so one pass
    // sees both (a pass between them would plan only the port flags, and the next the rest).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pass(&mut dp, &plus).await, 2, "port flags and up");
    assert_eq!(
        dp.last_pass,
        PassScope {
            full: false,
            networks: 1
        }
    );
    // The kernel agrees: a fresh full observation plans nothing.
    let nl = Netlink::open().unwrap();
    let o = netlink::l2::observe(&nl).await.unwrap();
    let vnis = plus.networks().map(|n| n.vni).collect();
    let p = sf_linux::l2::plan(&vnis, "10.255.1.1".parse().unwrap(), &o.lo, &o.links);
    assert_eq!(p, sf_linux::l2::Plan::default());
    // One network less: its two links go, planned alone.
    assert_eq!(pass(&mut dp, &desired(200)).await, 2);
    assert!(!dp.last_pass.full);
}
