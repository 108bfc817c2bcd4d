//! Kernel test of the switch's port executor (netlink): in a network namespace of its own
//! (`unshare(CLONE_NEWNET)` on a thread, gone when the thread ends), server-facing
//! veths join a VNI's bridge, untagged and (where the kernel has 8021q) through a VLAN
//! sub-interface; then the attachments go away. What the kernel holds is read back with `ip -j -d link show` (a
//! child process inherits the thread's namespace). Skipped, with a note, when not root.

use std::collections::{BTreeMap, BTreeSet};

use sf_core::desired::SwitchAttachment;
use sf_linux::converge::Pass;
use sf_linux::links::{self, Link};
use sf_linux::netlink::{self, Netlink};
use sf_switch_agent::ports;

const VNI: u32 = 1_000_077;

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
        rt.block_on(test());
    })
    .join()
    .expect("test thread");
}

async fn ip(args: &[&str]) {
    sf_linux::run("ip", args).await.expect("ip");
}

async fn ip_links() -> Vec<Link> {
    let out = sf_linux::run("ip", &["-j", "-d", "link", "show"])
        .await
        .unwrap();
    links::parse_links(&out).unwrap()
}

fn find<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    links.iter().find(|l| l.name == name)
}

/// Plans the attachments `want` against the kernel and runs the plan: (actions, errors).
async fn converge(nl: &Netlink, want: &[(&str, Option<u16>)]) -> (usize, Vec<String>) {
    let want: BTreeMap<String, (SwitchAttachment, String)> = want
        .iter()
        .map(|(i, v)| {
            let a = SwitchAttachment {
                interface: i.to_string(),
                vlan: *v,
            };
            (ports::member_name(&a), (a, sf_linux::l2::bridge_name(VNI)))
        })
        .collect();
    let observed = netlink::observe::links(nl).await.unwrap();
    let (actions, problems) = ports::plan(&want, &observed);
    assert!(problems.is_empty(), "{problems:?}");
    let errors: Vec<String> = ports::execute(nl, &actions, &observed)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    (actions.len(), errors)
}

/// Whether this kernel can make VLAN sub-interfaces (8021q; this lab's kernel may lack it).
async fn vlans_supported() -> bool {
    ip(&[
        "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
    ])
    .await;
    let ok = sf_linux::run(
        "ip",
        &[
            "link", "add", "link", "probe0", "name", "probe0.9", "type", "vlan", "id", "9",
        ],
    )
    .await
    .is_ok();
    ip(&["link", "del", "probe0"]).await;
    ok
}

#[test]
fn an_untagged_attachment_joins_the_bridge_and_is_released() {
    in_netns("untagged", || async {
        ip(&["link", "set", "lo", "up"]).await;
        ip(&[
            "link",
            "add",
            "swp2",
            "type",
            "veth",
            "peer",
            "name",
            "swp2-peer",
        ])
        .await;
        let nl = Netlink::open().unwrap();
        let mut pass = Pass::default();
        let vnis = BTreeSet::from([VNI]);
        netlink::l2::converge(&mut pass, &nl, &vnis, "10.255.9.9".parse().unwrap()).await;
        assert!(pass.into_report().errors.is_empty());
        let bridge = sf_linux::l2::bridge_name(VNI);

        let (n, errors) = converge(&nl, &[("swp2", None)]).await;
        assert!(errors.is_empty(), "{errors:?}");
        // Untagged, the member is the interface: up as a parent, its master, up as a member.
        assert_eq!(n, 3);
        let k = ip_links().await;
        let swp2 = find(&k, "swp2").unwrap();
        assert_eq!(swp2.master.as_deref(), Some(bridge.as_str()));
        assert!(
            swp2.up && !swp2.owned,
            "an operator's interface is not marked ours"
        );

        let (n, errors) = converge(&nl, &[("swp2", None)]).await;
        assert_eq!((n, errors.len()), (0, 0), "a second pass changes nothing");

        let (n, errors) = converge(&nl, &[]).await;
        assert!(errors.is_empty() && n == 1, "{n} {errors:?}");
        let k = ip_links().await;
        let swp2 = find(&k, "swp2").expect("the operator's interface stays");
        assert_eq!(swp2.master, None, "and is released from the bridge");
    });
}

#[test]
fn a_tagged_attachment_is_a_sub_interface_of_ours() {
    in_netns("tagged", || async {
        ip(&["link", "set", "lo", "up"]).await;
        if !vlans_supported().await {
            eprintln!("tagged: skipped (this kernel has no VLAN sub-interfaces, 8021q)");
            return;
        }
        ip(&[
            "link",
            "add",
            "swp1",
            "type",
            "veth",
            "peer",
            "name",
            "swp1-peer",
        ])
        .await;
        let nl = Netlink::open().unwrap();
        let mut pass = Pass::default();
        let vnis = BTreeSet::from([VNI]);
        netlink::l2::converge(&mut pass, &nl, &vnis, "10.255.9.9".parse().unwrap()).await;
        let bridge = sf_linux::l2::bridge_name(VNI);
        let (_, errors) = converge(&nl, &[("swp1", Some(100))]).await;
        assert!(errors.is_empty(), "{errors:?}");
        let k = ip_links().await;
        let sub = find(&k, "swp1.100").expect("swp1.100 created");
        assert!(sub.owned, "the sub-interface carries the ownership alias");
        assert_eq!(sub.kind.as_deref(), Some("vlan"));
        assert_eq!(sub.master.as_deref(), Some(bridge.as_str()));
        assert!(sub.up && find(&k, "swp1").unwrap().up);
        let (_, errors) = converge(&nl, &[]).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            find(&ip_links().await, "swp1.100").is_none(),
            "ours is deleted"
        );
    });
}

#[test]
fn a_missing_bridge_fails_its_action_only() {
    in_netns("missing bridge", || async {
        ip(&["link", "set", "lo", "up"]).await;
        ip(&[
            "link",
            "add",
            "swp3",
            "type",
            "veth",
            "peer",
            "name",
            "swp3-peer",
        ])
        .await;
        let nl = Netlink::open().unwrap();
        // No L2 step ran: brvx-<VNI> does not exist, so only the master fails.
        let (n, errors) = converge(&nl, &[("swp3", None)]).await;
        assert_eq!((n, errors.len()), (3, 1), "{errors:?}");
        assert!(errors[0].contains("no link named brvx-"), "{errors:?}");
        assert!(find(&ip_links().await, "swp3").is_some_and(|l| l.up && l.master.is_none()));
    });
}
