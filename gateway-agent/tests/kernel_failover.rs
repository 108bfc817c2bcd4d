//! Kernel test of the failover controller: in a throwaway "host" namespace (a thread's own)
//! with a BGP route standing for the fabric, a primary VPC router is activated once the
//! fabric settled, goes passive when another gateway's route to its anchor appears, comes
//! back when that route leaves, and goes passive when the last BGP route leaves (fabric
//! lost). Each step is read back from the kernel with `/usr/sbin/ip`. The controller follows
//! the routes from a netlink subscription and flips through netlink: `ip` is a logging
//! wrapper on PATH and must never run (the former controller ran `ip monitor route` and
//! `ip -batch`). Skipped, with a note, when not root. One test in this binary: it changes
//! PATH.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sf_core::desired::RouterRole;
use sf_gateway_agent::failover::{Controller, RouterSpec};
use sf_gateway_agent::kernel::Kernel;
use sf_gateway_agent::plan::{HostState, Route};
use tokio::sync::Notify;

mod common;
use common::{root, IpLog};

/// Runs a shell command with the real `ip`; its output.
fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair `name` / `name`p, the peer up, `name` up if asked (the kernel may lack
/// dummy links).
fn veth(name: &str, up: bool) {
    sh(&format!(
        "/usr/sbin/ip link add {name} type veth peer name {name}p && /usr/sbin/ip link set {name}p up"
    ));
    if up {
        sh(&format!("/usr/sbin/ip link set {name} up"));
    }
}

fn spec() -> RouterSpec {
    RouterSpec {
        id: 7,
        vpc: "acme/prod".into(),
        role: RouterRole::Primary,
        anchor: "10.255.0.7".parse().unwrap(),
        segments: vec!["g7v100".into()],
        routes: vec![
            Route {
                dst: "10.255.0.7/32".parse().unwrap(),
                via: None,
                dev: Some("gx7".into()),
            },
            Route {
                dst: "203.0.113.10/32".parse().unwrap(),
                via: Some("198.18.0.15".parse().unwrap()),
                dev: Some("gx7".into()),
            },
        ],
        routes6: vec![],
    }
}

/// Whether the router forwards, as the kernel shows it: its anchor and public routes
/// through the transit link and its segment up; panics on a half-flipped state.
fn forwarding() -> bool {
    let routes = sh("/usr/sbin/ip -4 route show dev gx7");
    let anchor = routes.contains("10.255.0.7 ");
    let public = routes.contains("203.0.113.10 via 198.18.0.15");
    let up = sh("/usr/sbin/ip -o link show g7v100").contains(",UP");
    assert!(
        anchor == public && public == up,
        "half flipped: anchor {anchor}, public {public}, segment up {up}: {routes}"
    );
    anchor
}

async fn wait_for(what: &str, want: bool, within: Duration) {
    let t = Instant::now();
    while forwarding() != want {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{what}: {} ms", t.elapsed().as_millis());
}

async fn follow_the_fabric(log: std::path::PathBuf) {
    let kernel = Arc::new(Kernel::default());
    let c = Controller::new(Arc::new(Notify::new()), Arc::new(Notify::new()), kernel);
    c.sync(vec![spec()], &HostState::default());
    c.built(7);
    let task = tokio::spawn(c.clone().run());
    assert!(!forwarding());

    // The fabric settles (3 s) and no one else announces the VPC: the primary forwards.
    wait_for("primary activated", true, Duration::from_secs(8)).await;
    // Another gateway's route to the anchor arrives: stand down at once.
    sh("/usr/sbin/ip route add 10.255.0.7/32 via 192.0.2.2 proto bgp metric 20");
    wait_for(
        "passive when the anchor is announced elsewhere",
        false,
        Duration::from_secs(2),
    )
    .await;
    // It leaves: the primary takes the VPC back.
    sh("/usr/sbin/ip route del 10.255.0.7/32 via 192.0.2.2 proto bgp metric 20");
    wait_for(
        "active again once the peer left",
        true,
        Duration::from_secs(2),
    )
    .await;
    // The last BGP route leaves: the fabric is lost, every router goes passive.
    sh("/usr/sbin/ip route del 10.0.0.0/8 via 192.0.2.2 proto bgp");
    wait_for(
        "passive with the fabric lost",
        false,
        Duration::from_secs(2),
    )
    .await;
    task.abort();

    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(calls.is_empty(), "ip processes ran: {calls}");
}

#[test]
fn the_controller_follows_the_fabric_through_netlink() {
    if !root() {
        eprintln!("skipped (needs root for a network namespace)");
        return;
    }
    let ip = IpLog::install("sfgf");
    let log = ip.log.clone();
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        sh("/usr/sbin/ip link set lo up");
        // The fabric: one uplink and one BGP route through it.
        veth("up0", true);
        sh("/usr/sbin/ip addr add 192.0.2.1/24 dev up0");
        sh("/usr/sbin/ip route add 10.0.0.0/8 via 192.0.2.2 proto bgp");
        // The router's transit host end and its (down) segment host end.
        veth("gx7", true);
        sh("/usr/sbin/ip addr add 198.18.0.14/31 dev gx7");
        veth("g7v100", false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(follow_the_fabric(log));
    })
    .join()
    .expect("test thread");
}
