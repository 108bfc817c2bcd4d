//! Kernel tests of the netlink executor: each test runs on its own thread in a network
//! namespace of its own (`unshare(CLONE_NEWNET)`, gone when the thread ends), drives the
//! executor there and reads the kernel back, through netlink and independently through
//! `ip -j -d link show` (a child process inherits the thread's namespace). Skipped, with a
//! note, when not root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use sf_linux::converge::Pass;
use sf_linux::l2::{self, Action};
use sf_linux::links::{self, Link};
use sf_linux::netlink::{self, Netlink};

fn vtep() -> Ipv4Addr {
    "10.255.1.1".parse().unwrap()
}

/// Runs `test` in a fresh network namespace (lo up), or skips it when not root.
fn in_netns<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{name}: skipped (needs root for a network namespace)");
        return;
    }
    std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ip(&["link", "set", "lo", "up"]).await;
            test().await
        });
    })
    .join()
    .expect("test thread");
}

async fn ip(args: &[&str]) {
    sf_linux::run("ip", args).await.expect("ip");
}

/// The links as iproute2 shows them, parsed by the iproute2 parser.
async fn ip_links() -> Vec<Link> {
    let out = sf_linux::run("ip", &["-j", "-d", "link", "show"])
        .await
        .unwrap();
    links::parse_links(&out).unwrap()
}

fn by_name<'a>(links: &'a [Link], name: &str) -> &'a Link {
    links
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no link {name}"))
}

async fn converge(nl: &Netlink, vnis: &[u32]) -> (usize, Vec<String>) {
    let mut pass = Pass::default();
    let vnis: BTreeSet<u32> = vnis.iter().copied().collect();
    netlink::l2::converge(&mut pass, nl, &vnis, vtep()).await;
    let r = pass.into_report();
    (r.changes, r.errors)
}

fn ipv6_disabled(link: &str) -> bool {
    let p = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    std::fs::read_to_string(p).unwrap().trim() == "1"
}

#[test]
fn creates_the_layout_owned_and_is_idempotent() {
    in_netns("creates_the_layout", || async {
        let nl = Netlink::open().unwrap();
        let (changes, errors) = converge(&nl, &[1_000_001, 1_000_002]).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(changes, 1 + 2 * 6, "VTEP + 6 actions per network");
        let seen = ip_links().await;
        for vni in [1_000_001, 1_000_002] {
            let (br, vx) = (l2::bridge_name(vni), l2::vxlan_name(vni));
            let b = by_name(&seen, &br);
            assert!(b.owned && b.up, "{b:?}");
            assert_eq!(b.kind.as_deref(), Some("bridge"));
            let v = by_name(&seen, &vx);
            assert!(v.owned && v.up, "{v:?}");
            assert_eq!(v.master.as_deref(), Some(br.as_str()));
            let info = v.vxlan.as_ref().unwrap();
            assert_eq!(
                (info.vni, info.local, info.port, info.learning),
                (vni, Some(vtep()), 4789, false)
            );
            assert_eq!(
                (v.port_learning, v.port_neigh_suppress),
                (Some(false), Some(true))
            );
            assert!(ipv6_disabled(&br) && ipv6_disabled(&vx));
        }
        let lo = netlink::l2::observe(&nl).await.unwrap().lo;
        assert!(lo.contains(&vtep()), "{lo:?}");
        // A second pass changes nothing (same ifindexes: nothing recreated).
        assert_eq!(converge(&nl, &[1_000_001, 1_000_002]).await, (0, vec![]));
        let again = ip_links().await;
        assert_eq!(
            by_name(&again, "vxlan1000001").ifindex,
            by_name(&seen, "vxlan1000001").ifindex
        );
    });
}

#[test]
fn netlink_observation_matches_iproute2() {
    in_netns("observation", || async {
        let nl = Netlink::open().unwrap();
        converge(&nl, &[1_000_001]).await;
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]).await;
        ip(&["link", "add", "br7", "type", "bridge"]).await;
        let mut by_ip = ip_links().await;
        let mut by_nl = netlink::observe::links(&nl).await.unwrap();
        // iproute2's observer reads the overlay links' IPv6 state from /proc, netlink's from
        // the dump: both must say "off".
        for l in by_ip.iter_mut().filter(|l| l2::vni_of(&l.name).is_some()) {
            l.ipv6_enabled = links::ipv6_enabled(&l.name);
        }
        by_ip.sort_by_key(|l| l.ifindex);
        by_nl.sort_by_key(|l| l.ifindex);
        assert_eq!(by_nl, by_ip);
        assert_eq!(by_name(&by_nl, "brvx-1000001").ipv6_enabled, Some(false));
    });
}

#[test]
fn fixes_the_port_flags_of_an_adopted_foreign_vxlan() {
    in_netns("port_flags", || async {
        let nl = Netlink::open().unwrap();
        // CloudStack made these (no alias), with the bridge-port defaults.
        ip(&[
            "link",
            "add",
            "brvx-1000005",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])
        .await;
        ip(&[
            "link",
            "add",
            "vxlan1000005",
            "type",
            "vxlan",
            "id",
            "1000005",
            "dstport",
            "4789",
            "local",
            "10.255.1.1",
            "nolearning",
        ])
        .await;
        ip(&["link", "set", "vxlan1000005", "master", "brvx-1000005"]).await;
        ip(&["link", "set", "vxlan1000005", "up"]).await;
        ip(&["link", "set", "brvx-1000005", "up"]).await;
        let before = by_name(&ip_links().await, "vxlan1000005").clone();
        assert_eq!(
            (before.port_learning, before.port_neigh_suppress),
            (Some(true), Some(false))
        );
        let (_, errors) = converge(&nl, &[1_000_005]).await;
        assert!(errors.is_empty(), "{errors:?}");
        let after = ip_links().await;
        let v = by_name(&after, "vxlan1000005");
        assert_eq!(
            (v.port_learning, v.port_neigh_suppress),
            (Some(false), Some(true))
        );
        assert_eq!(v.ifindex, before.ifindex, "adopted, not recreated");
        assert!(
            !v.owned && !by_name(&after, "brvx-1000005").owned,
            "stays foreign"
        );
    });
}

#[test]
fn deletes_only_the_links_it_owns() {
    in_netns("delete_owned", || async {
        let nl = Netlink::open().unwrap();
        converge(&nl, &[1_000_001, 1_000_002]).await;
        ip(&["link", "add", "brvx-2000000", "type", "bridge"]).await;
        let before = ip_links().await;
        let (_, errors) = converge(&nl, &[1_000_001]).await;
        assert!(errors.is_empty(), "{errors:?}");
        let after = ip_links().await;
        let names: BTreeSet<&str> = after.iter().map(|l| l.name.as_str()).collect();
        assert!(!names.contains("vxlan1000002") && !names.contains("brvx-1000002"));
        assert!(names.contains("brvx-2000000"), "foreign bridge kept");
        assert_eq!(
            by_name(&after, "brvx-1000001").ifindex,
            by_name(&before, "brvx-1000001").ifindex
        );
        assert_eq!(l2::foreign_vnis(&after), BTreeSet::from([2_000_000]));
    });
}

#[test]
fn a_failed_request_fails_its_action_only() {
    in_netns("errors", || async {
        let nl = Netlink::open().unwrap();
        // A plan made from a stale view: brvx-1000009 exists already (EEXIST).
        ip(&["link", "add", "brvx-1000009", "type", "bridge"]).await;
        let actions = vec![
            Action::AddBridge {
                name: "brvx-1000009".into(),
            },
            Action::AddBridge {
                name: "brvx-1000010".into(),
            },
            Action::SetMaster {
                link: "nosuch0".into(),
                master: "brvx-1000010".into(),
            },
            Action::SetUp {
                link: "brvx-1000010".into(),
            },
        ];
        let out = netlink::l2::execute(&nl, &actions, &[]).await;
        let errno = |r: &Result<(), sf_linux::DeviceError>| match r {
            Err(sf_linux::DeviceError::Netlink { source, .. }) => source.errno(),
            _ => None,
        };
        assert_eq!(errno(&out[0]), Some(libc::EEXIST), "{:?}", out[0]);
        assert!(out[1].is_ok(), "{:?}", out[1]);
        assert_eq!(errno(&out[2]), Some(libc::ENODEV), "{:?}", out[2]);
        assert!(out[3].is_ok(), "{:?}", out[3]);
        let seen = ip_links().await;
        assert!(!by_name(&seen, "brvx-1000009").owned, "not marked ours");
        assert!(by_name(&seen, "brvx-1000010").owned && by_name(&seen, "brvx-1000010").up);
    });
}

#[test]
fn link_events_arrive() {
    use futures::StreamExt;
    in_netns("events", || async {
        let mut events = Box::pin(netlink::events::link_events().unwrap());
        ip(&["link", "add", "brvx-7", "type", "bridge"]).await;
        ip(&["link", "add", "d7", "type", "veth", "peer", "name", "d7p"]).await;
        ip(&["link", "set", "d7", "master", "brvx-7"]).await;
        ip(&["link", "del", "d7"]).await;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
            let done = matches!(&e, netlink::events::LinkEvent::Deleted { name } if name == "d7");
            seen.push(e);
            if done {
                break;
            }
        }
        use netlink::events::LinkEvent::*;
        assert!(
            seen.contains(&Changed {
                name: "brvx-7".into(),
                master: false
            }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&Changed {
                name: "d7".into(),
                master: true
            }),
            "{seen:?}"
        );
        assert!(seen.contains(&Deleted { name: "d7".into() }), "{seen:?}");
    });
}

#[test]
fn the_link_view_follows_the_kernel_without_a_dump() {
    use futures::StreamExt;
    use netlink::view::LinkView;
    use std::sync::{Arc, Mutex};
    in_netns("view", || async {
        let nl = Netlink::open().unwrap();
        converge(&nl, &[1_000_001]).await;
        let view = Arc::new(Mutex::new(LinkView::new()));
        let mut updates = Box::pin(netlink::events::link_updates().unwrap());
        let v = view.clone();
        tokio::spawn(async move {
            while let Some(u) = updates.next().await {
                v.lock().unwrap().apply(&u);
            }
        });
        view.lock().unwrap().begin_dump();
        let dumped = netlink::observe::links(&nl).await.unwrap();
        view.lock().unwrap().finish_dump(dumped);
        view.lock().unwrap().take_dirty();
        // Changes by the executor and by someone else, none of them dumped.
        converge(&nl, &[1_000_001, 1_000_002]).await;
        ip(&["link", "set", "vxlan1000001", "down"]).await;
        ip(&[
            "link",
            "set",
            "vxlan1000001",
            "type",
            "bridge_slave",
            "learning",
            "on",
        ])
        .await;
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]).await;
        ip(&["link", "set", "v0", "master", "brvx-1000001"]).await;
        ip(&["link", "del", "v1"]).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // The learning flag of the down vxlan came as a bridge-port message only (and v0's
        // enslaving ended with one): read back.
        assert!(netlink::view::refresh(&nl, &view).await.unwrap() >= 1);
        let mut kernel = netlink::observe::links(&nl).await.unwrap();
        kernel.sort_by_key(|l| l.ifindex);
        let (seen, dirty) = {
            let mut v = view.lock().unwrap();
            (v.to_vec(), v.take_dirty())
        };
        assert_eq!(seen, kernel);
        assert!(!view.lock().unwrap().is_stale());
        let vx = by_name(&seen, "vxlan1000001");
        assert!(!vx.up && vx.port_learning == Some(true), "{vx:?}");
        assert!(by_name(&seen, "vxlan1000002").owned);
        for n in ["vxlan1000001", "brvx-1000002", "vxlan1000002", "v0", "v1"] {
            assert!(dirty.contains(n), "{n} not marked changed: {dirty:?}");
        }
        assert!(!dirty.contains("lo"), "{dirty:?}");
    });
}

/// The change flag says "changed" after a link, an address or a route (either family) moved,
/// once per look, and "unchanged" when nothing did, however often it is asked.
#[test]
fn the_change_flag_sees_links_addresses_and_routes() {
    in_netns("change_flag", || async {
        use netlink::changes::ChangeFlag;
        let flag = ChangeFlag::open().unwrap();
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));
        flag.take();
        assert!(!flag.take(), "nothing moved");
        ip(&["link", "add", "cf0", "type", "veth", "peer", "name", "cf1"]).await;
        settle().await;
        assert!(flag.take(), "a link");
        assert!(!flag.take(), "once per look");
        ip(&["link", "set", "cf1", "up"]).await;
        ip(&["link", "set", "cf0", "up"]).await;
        settle().await;
        assert!(flag.take(), "up");
        flag.take();
        ip(&["addr", "add", "192.0.2.1/24", "dev", "cf0"]).await;
        settle().await;
        assert!(flag.take(), "an IPv4 address");
        ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]).await;
        settle().await;
        assert!(flag.take(), "an IPv4 route");
        assert!(!flag.take());
        ip(&["-6", "route", "add", "2001:db8:5::/64", "dev", "cf0"]).await;
        settle().await;
        assert!(flag.take(), "an IPv6 route");
        assert!(!flag.take());
        // Reading the kernel is not a change.
        ip(&["-j", "route", "show"]).await;
        settle().await;
        assert!(!flag.take(), "a dump moves nothing");
    });
}

/// The mirror's state in the shape a dump gives, sorted (links by ifindex, each link's
/// addresses, routes), for comparing with the kernel.
fn mirrored(
    m: &netlink::mirror::MirrorState,
) -> (
    Vec<Link>,
    Vec<netlink::route::RouteV4>,
    Vec<String>,
    Vec<String>,
) {
    let mut links = m.links_with_addresses();
    links.iter_mut().for_each(|l| l.addrs.sort());
    let mut r4: Vec<_> = m.routes_v4().cloned().collect();
    r4.sort_by_key(|r| format!("{r:?}"));
    let mut a6: Vec<String> = m
        .addresses_v6()
        .iter()
        .flat_map(|(i, a)| a.iter().map(move |n| format!("{i} {n}")))
        .collect();
    a6.sort();
    let mut r6: Vec<String> = m.routes_v6().map(|r| format!("{r:?}")).collect();
    r6.sort();
    (links, r4, a6, r6)
}

#[test]
fn the_mirror_follows_links_addresses_and_routes_without_a_dump() {
    use netlink::mirror::{Mirror, MirrorState};
    in_netns("mirror", || async {
        let nl = Netlink::open().unwrap();
        converge(&nl, &[1_000_001]).await;
        let mut mirror = Mirror::open().unwrap();
        mirror.sync(&nl, false).await.unwrap();
        assert_eq!(mirror.dumps(), 1);
        // Changes by the executor and by someone else, none of them dumped, and no wait:
        // each is queued on the mirror's socket before the command that made it returns.
        converge(&nl, &[1_000_001, 1_000_002]).await;
        for args in [
            "link add h0 type veth peer name h1",
            "link add h2 type veth peer name h3",
            "link set h0 up",
            "link set h1 up",
            "link set h2 up",
            "addr add 192.0.2.1/30 dev h0",
            "addr add 192.0.2.5/30 dev h2",
            "addr add 2001:db8::1/64 dev h0 nodad",
            "route add 198.51.100.0/24 via 192.0.2.6",
            "route add 203.0.113.7/32 dev h2",
            "route add 203.0.113.8/32 dev h2 metric 5",
            "route replace 198.51.100.0/24 via 192.0.2.2",
            "route add 10.9.0.0/16 dev h0",
            "route del 10.9.0.0/16",
            "-6 route add 2001:db8:1::/64 via 2001:db8::2",
            "-6 route add 2001:db8:2::/64 dev h0 metric 7",
            "-6 route del 2001:db8:2::/64",
            "addr add 192.0.2.9/32 dev h0",
            "addr del 192.0.2.9/32 dev h0",
            "link set vxlan1000001 down",
            "link set vxlan1000001 type bridge_slave learning on",
            // IPv4 routes through a link that goes down are flushed without a message;
            // a deleted link takes its addresses and routes with it.
            "link set h2 down",
            "link del h2",
        ] {
            let a: Vec<&str> = args.split_whitespace().collect();
            ip(&a).await;
        }
        mirror.sync(&nl, false).await.unwrap();
        assert_eq!(mirror.dumps(), 1, "the sync dumped");
        let seen = mirrored(mirror.state());
        let mut fresh = MirrorState::new();
        let mut again = Mirror::open().unwrap();
        again.sync(&nl, false).await.unwrap();
        std::mem::swap(&mut fresh, again.state_mut());
        let kernel = mirrored(&fresh);
        assert_eq!(seen.0, kernel.0, "links");
        assert_eq!(seen.1, kernel.1, "IPv4 routes");
        // The kernel announces an address under duplicate address detection (the links'
        // own link-local ones) only once the detection is done, a second or two after the
        // link came up; a dump lists it from the start.
        assert!(
            seen.2.iter().any(|a| a.ends_with(" 2001:db8::1/64")),
            "{:?}",
            seen.2
        );
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        mirror.sync(&nl, false).await.unwrap();
        let mut fresh = Mirror::open().unwrap();
        fresh.sync(&nl, false).await.unwrap();
        assert_eq!(
            mirrored(mirror.state()).2,
            mirrored(fresh.state()).2,
            "IPv6 addresses"
        );
        assert_eq!(mirror.dumps(), 1, "the sync dumped");
        assert_eq!(seen.3, kernel.3, "IPv6 routes");
        // And the dump itself agrees with the observers the planners used before.
        let mut dumped = netlink::observe::links_with_addresses(&nl).await.unwrap();
        dumped.sort_by_key(|l| l.ifindex);
        dumped.iter_mut().for_each(|l| l.addrs.sort());
        assert_eq!(seen.0, dumped);
        let h0 = by_name(&seen.0, "h0");
        assert_eq!(h0.addrs, vec!["192.0.2.1/30".parse().unwrap()]);
        assert!(seen.0.iter().all(|l| l.name != "h2"));
        let vx = by_name(&seen.0, "vxlan1000001");
        assert!(!vx.up, "{vx:?}");
        assert!(
            seen.1.iter().any(|r| r.dst.to_string() == "198.51.100.0/24"
                && r.gateway == Some("192.0.2.2".parse().unwrap())),
            "{:?}",
            seen.1
        );
        assert!(seen
            .1
            .iter()
            .all(|r| !r.dst.to_string().starts_with("203.0.113.")));
        assert!(
            seen.3.iter().any(|r| r.contains("2001:db8:1::")),
            "{:?}",
            seen.3
        );
        assert!(
            seen.3.iter().all(|r| !r.contains("2001:db8:2::")),
            "{:?}",
            seen.3
        );
    });
}

#[test]
fn the_mirror_holds_our_blackholes_as_ip_shows_them() {
    in_netns("mirror-blackholes", || async {
        let nl = Netlink::open().unwrap();
        let mut mirror = netlink::mirror::Mirror::open().unwrap();
        mirror.sync(&nl, false).await.unwrap();
        for args in [
            "route add blackhole 198.51.100.0/24 proto 245",
            "route add blackhole 203.0.113.0/24 proto static",
            "-6 route add blackhole 2001:db8:100::/48 proto 245",
            "route add blackhole 192.0.2.0/24 proto 245",
            "route del blackhole 192.0.2.0/24 proto 245",
        ] {
            let a: Vec<&str> = args.split_whitespace().collect();
            ip(&a).await;
        }
        mirror.sync(&nl, false).await.unwrap();
        let seen = sf_linux::blackhole::of_mirror(mirror.state());
        assert_eq!(seen, sf_linux::blackhole::observe().await.unwrap());
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(mirror.dumps(), 1);
    });
}

/// Entries in the namespace's conntrack tables as `conntrack -L` lists them (both
/// families), without the ticking timeout, sorted.
async fn conntrack_list() -> Vec<String> {
    let mut out = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let listing = sf_linux::run("conntrack", &["-L", "-f", family])
            .await
            .unwrap();
        out.extend(listing.lines().map(|l| {
            let mut f: Vec<&str> = l.split_whitespace().collect();
            f.remove(2);
            f.join(" ")
        }));
    }
    out.sort();
    out
}

/// Flows of a gateway's router: two load-balanced ones per backend and VIP port, a port
/// forward, a static NAT both ways, a SNAT'd flow, IPv6 load-balanced ones.
async fn insert_router_flows() {
    let flows = [
        "tcp -s 198.51.100.7 -d 203.0.113.20 --sport 20012 --dport 80 -r 10.10.1.22 -q 198.51.100.7 --reply-port-src 80 --reply-port-dst 20012",
        "tcp -s 198.51.100.7 -d 203.0.113.20 --sport 20013 --dport 80 -r 10.10.1.21 -q 198.51.100.7 --reply-port-src 80 --reply-port-dst 20013",
        "tcp -s 198.51.100.7 -d 203.0.113.20 --sport 20014 --dport 8080 -r 10.10.1.22 -q 198.51.100.7 --reply-port-src 80 --reply-port-dst 20014",
        "tcp -s 198.51.100.8 -d 203.0.113.11 --sport 3333 --dport 8080 -r 10.10.1.12 -q 198.51.100.8 --reply-port-src 80 --reply-port-dst 3333",
        "udp -s 198.51.100.9 -d 203.0.113.12 --sport 53 --dport 5353 -r 10.10.1.11 -q 198.51.100.9 --reply-port-src 5353 --reply-port-dst 53",
        "tcp -s 10.10.1.11 -d 198.51.100.10 --sport 40000 --dport 443 -r 198.51.100.10 -q 203.0.113.12 --reply-port-src 443 --reply-port-dst 40000",
        "tcp -s 10.10.1.30 -d 198.51.100.10 --sport 40001 --dport 443 -r 198.51.100.10 -q 203.0.113.10 --reply-port-src 443 --reply-port-dst 40001",
        "tcp -s 2001:db8::7 -d 2001:db8:1ff::80 --sport 1000 --dport 80 -r 2001:db8:100:1::22 -q 2001:db8::7 --reply-port-src 80 --reply-port-dst 1000",
        "tcp -s 2001:db8::7 -d 2001:db8:1ff::80 --sport 1001 --dport 80 -r 2001:db8:100:1::21 -q 2001:db8::7 --reply-port-src 80 --reply-port-dst 1001",
    ];
    for f in flows {
        let mut args = vec!["-I", "-p"];
        args.extend(f.split(' '));
        if f.starts_with("tcp") {
            args.extend_from_slice(&["--state", "ESTABLISHED"]);
        }
        args.extend_from_slice(&["-t", "300", "-u", "SEEN_REPLY"]);
        sf_linux::run("conntrack", &args).await.unwrap();
    }
}

/// The ctnetlink delete removes exactly what `conntrack -D` with the same options removes
/// (the tool is the reference), across both tables and filters of every kind a gateway
/// cuts with: a load balancer's backend, a static NAT's two directions, an IPv6 backend.
#[test]
fn the_conntrack_delete_removes_what_the_conntrack_tool_removes() {
    in_netns("conntrack_delete", || async {
        use netlink::conntrack::{Conntrack, Filter};
        let tcp = Some(libc::IPPROTO_TCP as u8);
        let a = |s: &str| Some(s.parse().unwrap());
        let filters = [
            Filter {
                proto: tcp,
                orig_dst: a("203.0.113.20"),
                orig_dport: Some(80),
                reply_src: a("10.10.1.22"),
                reply_sport: Some(80),
                ..Filter::default()
            },
            Filter {
                orig_dst: a("203.0.113.12"),
                reply_src: a("10.10.1.11"),
                ..Filter::default()
            },
            Filter {
                orig_src: a("10.10.1.11"),
                reply_dst: a("203.0.113.12"),
                ..Filter::default()
            },
            Filter {
                ipv6: true,
                proto: tcp,
                orig_dst: a("2001:db8:1ff::80"),
                orig_dport: Some(80),
                reply_src: a("2001:db8:100:1::22"),
                reply_sport: Some(80),
                ..Filter::default()
            },
        ];
        insert_router_flows().await;
        let all = conntrack_list().await;
        assert_eq!(all.len(), 9, "{all:#?}");
        for f in &filters {
            let opts = f.to_string();
            let mut args = vec!["-D"];
            args.extend(opts.split(' '));
            sf_linux::run("conntrack", &args).await.unwrap();
        }
        let by_tool = conntrack_list().await;
        assert_eq!(by_tool.len(), 5, "{by_tool:#?}");

        sf_linux::run("conntrack", &["-F"]).await.unwrap();
        sf_linux::run("conntrack", &["-F", "-f", "ipv6"])
            .await
            .unwrap();
        insert_router_flows().await;
        assert_eq!(conntrack_list().await, all);
        let mut ct = Conntrack::open().unwrap();
        assert_eq!(ct.entries(false).unwrap().len(), 7);
        assert_eq!(ct.entries(true).unwrap().len(), 2);
        assert_eq!(ct.delete(&filters).unwrap(), 4);
        assert_eq!(conntrack_list().await, by_tool);
        assert_eq!(ct.delete(&filters).unwrap(), 0, "nothing left to match");

        // An entry deleted meanwhile is not an error, and a stale one is not deleted.
        let stale = ct.entries(false).unwrap();
        sf_linux::run("conntrack", &["-F"]).await.unwrap();
        assert!(!ct.delete_entry(&stale[0]).unwrap());
    });
}
