//! Kernel test of the switch's passes over its mirror: in a network namespace of its own
//! (gone when the test's thread ends), the switch agent's dataplane makes a leaf's VTEP and
//! networks, then passes again and repairs a link deleted behind its back, without a dump of
//! its links after the first pass; what it leaves is what a fresh dump shows. FRR is not
//! running there, so each pass also reports FRR's error, which the test sets aside.
//! Skipped, with a note, when not root.

use sf_agent::{Dataplane, LeaseState, ReconcileContext, ReconcileReport};
use sf_core::desired::NodeDesired;
use sf_linux::frr::Frr;
use sf_linux::netlink::{self, Netlink};
use sf_switch_agent::Switch;

fn desired(n: u32) -> NodeDesired {
    let mut objs = serde_json::json!({"underlay": {"kind": "underlay", "asn": 65101,
        "router_id": "10.255.0.1", "loopback": "10.255.0.1", "neighbors": ["spine1"],
        "evpn": "vtep"}});
    for i in 0..n {
        let p = format!("10.{}.{}", i / 256 % 256, i % 256);
        objs[format!("net/{}", 3_000_001 + i)] = serde_json::json!({"kind": "l2_network",
            "vni": 3_000_001 + i, "tenant": "t", "vpc": format!("vpc{i}"),
            "network": format!("tier{i}"), "cidr": format!("{p}.0/24"),
            "gateway": format!("{p}.1"), "ports": []});
    }
    serde_json::from_value(serde_json::json!({"node": "leaf1", "revision": 1, "objects": objs}))
        .unwrap()
}

/// One pass; its link changes, and its errors other than FRR's.
async fn pass(sw: &mut Switch, d: &NodeDesired) -> (usize, Vec<String>) {
    let ctx = ReconcileContext {
        lease: LeaseState::Held { continuous: true },
        fresh: true,
    };
    let r: ReconcileReport = sw.reconcile(d, &ctx).await;
    let errors = r
        .errors
        .into_iter()
        .filter(|e| !e.contains("FRR"))
        .collect();
    (r.changes, errors)
}

async fn ip(args: &[&str]) {
    sf_linux::run("ip", args).await.expect("ip");
}

#[test]
fn passes_read_the_mirror_and_repair_without_a_dump() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("passes_read_the_mirror: skipped (needs root for a namespace)");
        return;
    }
    std::thread::spawn(|| {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let rt = tokio::runtime::Builder::new_current_thread()
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
    let dir = tempfile::tempdir().unwrap();
    let mut sw = Switch::new("leaf1".into(), Frr::new(dir.path().to_path_buf())).unwrap();
    let d = desired(3);
    // The VTEP address and 6 actions per network.
    let (changes, errors) = pass(&mut sw, &d).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(changes, 1 + 3 * 6);
    assert_eq!(sw.mirror_dumps(), 1);
    // Nothing to do, and nothing dumped.
    assert_eq!(pass(&mut sw, &d).await, (0, vec![]));
    // A link deleted behind the agent's back is seen in the mirror and made again.
    ip(&["link", "del", "vxlan3000002"]).await;
    let (changes, errors) = pass(&mut sw, &d).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(changes >= 3, "{changes} changes");
    assert_eq!(pass(&mut sw, &d).await, (0, vec![]));
    assert_eq!(sw.mirror_dumps(), 1, "a pass dumped the links");
    // What the passes left is what a dump shows: the overlay of all three networks.
    let nl = Netlink::open().unwrap();
    let links = netlink::observe::links(&nl).await.unwrap();
    for vni in 3_000_001..=3_000_003 {
        let vx = links
            .iter()
            .find(|l| l.name == format!("vxlan{vni}"))
            .unwrap_or_else(|| panic!("no vxlan{vni}"));
        assert!(vx.up && vx.owned, "{vx:?}");
        assert_eq!(vx.master.as_deref(), Some(format!("brvx-{vni}").as_str()));
    }
}
