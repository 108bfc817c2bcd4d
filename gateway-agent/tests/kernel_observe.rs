//! Kernel tests of the gateway's netlink observation: a VPC-router-like namespace is built
//! with `ip` in a named namespace of this test (`sfgo<pid><n>`, deleted at the end, also on
//! failure), then observed through the agent's long-lived sockets and, independently, by the
//! former iproute2 observer; both must agree on every field. The host view is checked the
//! same way on a thread with a namespace of its own. Skipped, with a note, when not root.

use sf_gateway_agent::device::{self, iproute2};
use sf_gateway_agent::kernel::Kernel;
use sf_gateway_agent::plan::NsState;

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A named namespace removed when dropped.
struct Ns(String);

impl Ns {
    fn new(n: u32) -> Ns {
        let name = format!("sfgo{}{n}", std::process::id());
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Ns(name)
    }
    fn ip(&self, args: &str) {
        sh(&format!("ip -n {} {args}", self.0));
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// What a VPC router's namespace holds, plus routes the observer must leave out (FRR's,
/// a blackhole) or report without a device (multipath).
fn build_router(ns: &Ns) {
    ns.ip("link add transit type veth peer name t7");
    ns.ip("link set transit alias stackfabric addrgenmode none");
    ns.ip("link set t7 address 02:00:00:00:07:01");
    ns.ip("addr add 198.18.0.15/31 dev transit");
    ns.ip("addr add 10.1.0.1/24 dev t7");
    ns.ip("addr add 10.1.1.1/24 dev t7");
    ns.ip("link set transit up");
    ns.ip("link set t7 up");
    ns.ip("route add default via 198.18.0.14 dev transit");
    ns.ip("route add 203.0.113.10 via 10.1.0.2");
    ns.ip("route add 10.9.0.0/16 dev t7");
    ns.ip("route add blackhole 10.8.0.0/16");
    ns.ip("route add 192.168.100.0/24 via 10.1.0.3 proto bgp");
    ns.ip("route add 10.50.0.0/16 nexthop via 10.1.0.2 nexthop via 10.1.0.3");
    ns.ip("route add 10.60.0.0/16 via 10.1.0.2 table 100");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_vpc_namespace_is_seen_as_iproute2_sees_it() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let (a, b) = (Ns::new(1), Ns::new(2));
    build_router(&a);
    sh(&format!(
        "ip netns exec {} sysctl -qw net.ipv4.ip_forward=1",
        a.0
    ));
    rt().block_on(async {
        let k = Kernel::default();
        let by_nl = device::observe_ns(&k, &a.0).await.unwrap();
        let by_ip = iproute2::observe_ns(&a.0).await.unwrap();
        assert_eq!(ns_v4(&by_nl), by_ip);
        assert_eq!(by_nl.addrs6["lo"], ["::1/128".parse().unwrap()]);
        assert!(by_nl.forwarding);
        assert_eq!(by_nl.routes.len(), 4, "{:?}", by_nl.routes);
        assert_eq!(by_nl.link("t7").unwrap().addrs.len(), 2);
        assert!(by_nl.link("transit").unwrap().owned);
        // Forwarding is read per namespace: b's is off.
        let other = device::observe_ns(&k, &b.0).await.unwrap();
        assert!(!other.forwarding);
        assert_eq!(ns_v4(&other), iproute2::observe_ns(&b.0).await.unwrap());
        assert_eq!(k.open_namespaces(), 2);
        // A change is seen on the same socket.
        a.ip("route del 203.0.113.10");
        a.ip("addr del 10.1.1.1/24 dev t7");
        let again = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!(again.routes.len(), 3);
        assert_eq!(ns_v4(&again), iproute2::observe_ns(&a.0).await.unwrap());
    });
}

#[test]
fn a_recreated_namespace_gets_a_new_socket() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let a = Ns::new(3);
    build_router(&a);
    rt().block_on(async {
        let k = Kernel::default();
        let before = device::observe_ns(&k, &a.0).await.unwrap();
        assert!(before.link("transit").is_some());
        // Deleted and made again under the same name, empty: a stale socket would still
        // show the old namespace (which it keeps alive).
        sh(&format!("ip netns del {0} && ip netns add {0}", a.0));
        let after = device::observe_ns(&k, &a.0).await.unwrap();
        assert!(after.link("transit").is_none(), "{after:?}");
        assert_eq!(ns_v4(&after), iproute2::observe_ns(&a.0).await.unwrap());
        k.retain(&Default::default());
        assert_eq!(k.open_namespaces(), 0);
    });
}

#[test]
fn the_host_is_seen_as_iproute2_sees_it() {
    if !root() {
        eprintln!("skipped (needs root for a network namespace)");
        return;
    }
    // The "host" is a namespace of this thread's own, gone when the thread ends.
    std::thread::spawn(|| {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sh("ip link set lo up");
            sh("ip link add brvx-1000001 type bridge && ip link set brvx-1000001 up");
            sh("ip link add gx7 type veth peer name gx7p");
            sh("ip link set gx7 master brvx-1000001 alias stackfabric up");
            sh("ip addr add 198.18.0.14/31 dev gx7");
            sh("ip route add 203.0.113.10/32 via 198.18.0.15 dev gx7");
            let by_nl = device::observe_host(&Kernel::default()).await.unwrap();
            let by_ip = iproute2::observe_host().await.unwrap();
            let mut v4 = by_nl.clone();
            (v4.addrs6, v4.routes6) = Default::default();
            assert_eq!(v4, by_ip);
            assert_eq!(
                by_nl.link("gx7").unwrap().master.as_deref(),
                Some("brvx-1000001")
            );
            assert_eq!(by_nl.routes.len(), 1);
        });
    })
    .join()
    .expect("test thread");
}

/// The IPv4 part of a namespace's view: the iproute2 observer (the bench's baseline executor)
/// reads no IPv6, the netlink one does.
fn ns_v4(s: &NsState) -> NsState {
    NsState {
        forwarding6: false,
        addrs6: Default::default(),
        routes6: Vec::new(),
        ..s.clone()
    }
}

/// Loads `script` with `nft -f` in namespace `ns`.
fn nft(ns: &Ns, script: &str) {
    use std::io::Write;
    let mut c = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "nft -f: {script}");
}

fn table(digest: &str) -> String {
    let t = sf_gateway_agent::nft::TABLE;
    let c = "sf:"; // nft.rs COMMENT_PREFIX (private)
    format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n comment \"{c}{digest}\"\n}}\n")
}

#[test]
fn nft_runs_again_only_after_an_nftables_change() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let a = Ns::new(4);
    nft(&a, &table("d1"));
    rt().block_on(async {
        let k = Kernel::default();
        let first = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!(first.nft_digest.as_deref(), Some("d1"));
        assert_eq!(k.nft_reads(), 1);
        // Nothing changed: no nft process, the same view.
        let idle = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!((idle, k.nft_reads()), (first.clone(), 1));
        // Somebody replaces the table: seen on the next observation.
        nft(&a, &table("d2"));
        let changed = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!(changed.nft_digest.as_deref(), Some("d2"));
        assert_eq!(k.nft_reads(), 2);
        assert_eq!(ns_v4(&changed), iproute2::observe_ns(&a.0).await.unwrap());
        // Any other nftables change also moves the generation: read again, same digest.
        nft(&a, "table inet other {\n}\n");
        let other = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!(
            (other.nft_digest.as_deref(), k.nft_reads()),
            (Some("d2"), 3)
        );
        // The table deleted: gone from the view.
        nft(
            &a,
            &format!("delete table ip {}\n", sf_gateway_agent::nft::TABLE),
        );
        let gone = device::observe_ns(&k, &a.0).await.unwrap();
        assert_eq!((gone.nft_digest, k.nft_reads()), (None, 4));
    });
}

#[test]
fn rule_counters_are_read_without_the_map_elements() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let a = Ns::new(5);
    let elements: Vec<String> = (0..5000)
        .map(|i| format!("{i} : 10.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    nft(
        &a,
        &format!(
            "table ip stackfabric {{\n map lb0 {{\n  type mark : ipv4_addr\n  elements = {{ {} }}\n }}\n chain pre {{\n  type nat hook prerouting priority -100;\n  ip daddr 203.0.113.1 counter dnat ip to meta mark map @lb0 comment \"lb 203.0.113.1:80/tcp\"\n }}\n}}\n",
            elements.join(", ")
        ),
    );
    rt().block_on(async {
        let prefix = ["ip", "netns", "exec", a.0.as_str()];
        let samples = sf_linux::nft_counters::read(&prefix, "ip", "stackfabric", &a.0)
            .await
            .unwrap();
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].rule, "lb 203.0.113.1:80/tcp");
        // nft started inside the namespace reads the same table (the test's own namespace
        // has none: it would read nothing).
        let inside = sf_linux::nft_counters::read_in_netns(&a.0, "ip", "stackfabric", &a.0)
            .await
            .unwrap();
        assert_eq!(inside, samples);
        let none = sf_linux::nft_counters::read_in_netns(&a.0, "ip", "nosuchtable", &a.0)
            .await
            .unwrap();
        assert!(none.is_empty());
    });
}

#[test]
fn rule_counters_from_a_netlink_dump_match_nft() {
    if !root() {
        eprintln!("skipped (needs root for network namespaces)");
        return;
    }
    let a = Ns::new(6);
    rt().block_on(async {
        let k = Kernel::default();
        // No table yet: no samples, no error.
        let none = k.ns(&a.0).unwrap().rule_counters("stackfabric", &a.0);
        assert!(none.unwrap().is_empty());
        let elements: Vec<String> = (0..3000)
            .map(|i| format!("{i} : 10.0.{}.{}", i / 250, i % 250 + 1))
            .collect();
        nft(
            &a,
            &format!(
                "table ip stackfabric {{\n map lb0 {{\n  type mark : ipv4_addr\n  elements = {{ {} }}\n }}\n \
                 chain pre {{\n  type nat hook prerouting priority -100;\n  \
                 ip daddr 203.0.113.1 counter dnat ip to meta mark map @lb0 comment \"lb 203.0.113.1:80/tcp\"\n  \
                 ip daddr 203.0.113.2 counter dnat ip to 10.0.0.2\n  ip daddr 203.0.113.3 dnat ip to 10.0.0.3\n }}\n \
                 chain post {{\n  type nat hook postrouting priority 100;\n  oifname \"lo\" counter packets 5 bytes 420 masquerade comment \"snat\"\n }}\n}}\n\
                 table ip other {{\n chain c {{\n  type filter hook input priority 0;\n  counter comment \"not ours\"\n }}\n}}\n",
                elements.join(", ")
            ),
        );
        let by_nl = k.ns(&a.0).unwrap().rule_counters("stackfabric", &a.0).unwrap();
        let by_nft = sf_linux::nft_counters::read_in_netns(&a.0, "ip", "stackfabric", &a.0)
            .await
            .unwrap();
        assert_eq!(by_nl, by_nft);
        assert_eq!(by_nl.len(), 3, "{by_nl:?}");
        let snat = by_nl.iter().find(|s| s.rule == "snat").unwrap();
        assert_eq!((snat.chain.as_str(), snat.packets, snat.bytes), ("post", 5, 420));
        assert!(by_nl.iter().any(|s| s.rule.starts_with("handle ")));
    });
}
