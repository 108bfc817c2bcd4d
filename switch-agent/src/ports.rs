//! Server-facing ports of a leaf: pure planning of which interface (or 802.1Q sub-interface)
//! joins which `brvx-<VNI>` bridge, for bare-metal servers and Direct Connect hand-offs.
//!
//! An untagged attachment enslaves the interface itself; a tagged one enslaves a VLAN
//! sub-interface `<if>.<vlan>` that the agent creates (ifalias `stackfabric`, so it alone is
//! ever deleted). Members of our bridges that are no longer wanted are released (`nomaster`)
//! or, when they are our sub-interfaces, deleted. Interfaces the operator manages otherwise
//! are never touched unless an attachment names them.

use std::collections::BTreeMap;

use sf_core::desired::{L2Network, SwitchAttachment};
use sf_linux::l2::bridge_name;
use sf_linux::links::{Link, OWNER_ALIAS};
use sf_linux::netlink::{link, port, vlan, Netlink, NetlinkError, Request};
use sf_linux::DeviceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortAction {
    /// A VLAN sub-interface of `parent` (`ip link add link <parent> name <name> type vlan id
    /// <vlan>`), marked ours by the alias `stackfabric`.
    AddVlan {
        parent: String,
        name: String,
        vlan: u16,
    },
    SetMaster {
        link: String,
        master: String,
    },
    SetUp {
        link: String,
    },
    /// `ip link set <link> nomaster`: an interface we enslaved but no longer want there.
    Release {
        link: String,
    },
    Delete {
        link: String,
    },
}

/// The kernel name of an attachment's member link. `<if>.<vlan>` when it fits the 15-byte
/// limit, else a name derived from both that does.
pub fn member_name(a: &SwitchAttachment) -> String {
    match a.vlan {
        None => a.interface.clone(),
        Some(v) => {
            let n = format!("{}.{v}", a.interface);
            if n.len() <= 15 {
                n
            } else {
                // Keep the tail of the interface name (its number) and the VLAN.
                let head = format!("v{v}.");
                let keep = 15 - head.len();
                let tail = &a.interface[a.interface.len() - keep..];
                format!("{head}{tail}")
            }
        }
    }
}

/// Member link → (attachment, bridge) that the networks of a switch want.
pub fn wanted(nets: &[&L2Network]) -> BTreeMap<String, (SwitchAttachment, String)> {
    nets.iter()
        .flat_map(|n| {
            n.ports
                .iter()
                .filter_map(|p| p.attach.clone())
                .map(move |a| (member_name(&a), (a, bridge_name(n.vni))))
        })
        .collect()
}

/// Actions that converge the switch's attachments; errors no action can fix are returned
/// beside them (a missing interface).
pub fn plan(
    want: &BTreeMap<String, (SwitchAttachment, String)>,
    links: &[Link],
) -> (Vec<PortAction>, Vec<String>) {
    let by_name: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut actions = Vec::new();
    let mut errors = Vec::new();
    for (member, (a, bridge)) in want {
        let Some(parent) = by_name.get(a.interface.as_str()) else {
            errors.push(format!(
                "interface {} does not exist on this switch",
                a.interface
            ));
            continue;
        };
        if !parent.up {
            actions.push(PortAction::SetUp {
                link: a.interface.clone(),
            });
        }
        let existing = by_name.get(member.as_str());
        if let (Some(v), None) = (a.vlan, existing) {
            actions.push(PortAction::AddVlan {
                parent: a.interface.clone(),
                name: member.clone(),
                vlan: v,
            });
        }
        if existing.and_then(|l| l.master.as_deref()) != Some(bridge.as_str()) {
            actions.push(PortAction::SetMaster {
                link: member.clone(),
                master: bridge.clone(),
            });
        }
        if !existing.is_some_and(|l| l.up) {
            actions.push(PortAction::SetUp {
                link: member.clone(),
            });
        }
    }
    for l in links {
        if want.contains_key(&l.name) {
            continue;
        }
        let ours_vlan = l.owned && l.kind.as_deref() == Some("vlan");
        let in_our_bridge = l.master.as_deref().is_some_and(|m| m.starts_with("brvx-"))
            && !matches!(l.kind.as_deref(), Some("vxlan") | Some("bridge"));
        if ours_vlan {
            actions.push(PortAction::Delete {
                link: l.name.clone(),
            });
        } else if in_our_bridge {
            actions.push(PortAction::Release {
                link: l.name.clone(),
            });
        }
    }
    (actions, errors)
}

/// Runs `actions` (planned from the observed `links`) on one netlink socket, in three
/// pipelined batches, and returns one outcome per action:
/// 1. VLAN sub-interfaces created (their parent's ifindex from `links`) and links deleted;
/// 2. the ownership alias of each sub-interface whose creation succeeded (the kernel ignores
///    an alias in the creating request, and one sent behind a failed creation would mark a
///    link someone else made as ours);
/// 3. masters, releases and up, in plan order (a parent comes up before its member).
pub async fn execute(
    nl: &Netlink,
    actions: &[PortAction],
    links: &[Link],
) -> Vec<Result<(), DeviceError>> {
    let index: BTreeMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.ifindex)).collect();
    let mut out: Vec<Result<(), DeviceError>> = actions.iter().map(|_| Ok(())).collect();
    let create = |a: &PortAction| match a {
        PortAction::AddVlan { parent, name, vlan } => Some(
            index
                .get(parent.as_str())
                .map(|&p| vlan::create(name, p, *vlan))
                .ok_or_else(|| format!("no link named {parent}")),
        ),
        PortAction::Delete { link: l } => Some(Ok(link::delete(l))),
        _ => None,
    };
    batch(nl, actions, &mut out, create).await;
    let alias = |a: &PortAction| match a {
        PortAction::AddVlan { name, .. } => Some(Ok(link::set_alias(name, OWNER_ALIAS))),
        _ => None,
    };
    batch(nl, actions, &mut out, alias).await;
    let settle = |a: &PortAction| match a {
        PortAction::SetMaster { link: l, master } => Some(
            index
                .get(master.as_str())
                .map(|&m| port::set_master(l, m))
                .ok_or_else(|| format!("no link named {master}")),
        ),
        PortAction::Release { link: l } => Some(Ok(port::release(l))),
        PortAction::SetUp { link: l } => Some(Ok(link::set_up(l))),
        _ => None,
    };
    batch(nl, actions, &mut out, settle).await;
    out
}

/// Sends the request `request` makes of each action still without an error, pipelined, and
/// records each outcome (a request that cannot be built fails its action).
async fn batch(
    nl: &Netlink,
    actions: &[PortAction],
    out: &mut [Result<(), DeviceError>],
    request: impl Fn(&PortAction) -> Option<Result<Request, String>>,
) {
    let mut sent = Vec::new();
    let mut requests = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if out[i].is_err() {
            continue;
        }
        match request(a) {
            Some(Ok(r)) => {
                sent.push(i);
                requests.push(r);
            }
            Some(Err(e)) => out[i] = Err(NetlinkError::Other(e).on(format!("{a:?}"))),
            None => {}
        }
    }
    for (i, r) in sent.into_iter().zip(nl.pipeline(requests).await) {
        if let Err(e) = r {
            out[i] = Err(e.on(format!("{:?}", actions[i])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::LocalPort;

    fn link(name: &str, kind: Option<&str>, master: Option<&str>, owned: bool, up: bool) -> Link {
        Link {
            name: name.into(),
            ifindex: 1,
            kind: kind.map(String::from),
            master: master.map(String::from),
            owned,
            up,
            ..Default::default()
        }
    }

    fn net(vni: u32, attach: Vec<SwitchAttachment>) -> L2Network {
        L2Network {
            vni,
            tenant: "t".into(),
            vpc: "v".into(),
            network: "n".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ports: attach
                .into_iter()
                .map(|a| LocalPort {
                    name: "p".into(),
                    ip: "10.0.0.5".parse().unwrap(),
                    mac: None,
                    attach: Some(a),
                })
                .collect(),
            acl: None,
            peer_tiers: vec![],
        }
    }

    fn att(i: &str, v: Option<u16>) -> SwitchAttachment {
        SwitchAttachment {
            interface: i.into(),
            vlan: v,
        }
    }

    #[test]
    fn tagged_and_untagged_attachments_converge_and_are_idempotent() {
        let n1 = net(1000001, vec![att("swp5", Some(100))]);
        let n2 = net(1000002, vec![att("swp6", None)]);
        let want = wanted(&[&n1, &n2]);
        let links = vec![
            link("swp5", None, None, false, true),
            link("swp6", None, None, false, false),
        ];
        let (a, e) = plan(&want, &links);
        assert!(e.is_empty());
        assert_eq!(
            a,
            vec![
                PortAction::AddVlan {
                    parent: "swp5".into(),
                    name: "swp5.100".into(),
                    vlan: 100
                },
                PortAction::SetMaster {
                    link: "swp5.100".into(),
                    master: "brvx-1000001".into()
                },
                PortAction::SetUp {
                    link: "swp5.100".into()
                },
                PortAction::SetUp {
                    link: "swp6".into()
                },
                PortAction::SetMaster {
                    link: "swp6".into(),
                    master: "brvx-1000002".into()
                },
                PortAction::SetUp {
                    link: "swp6".into()
                },
            ]
        );
        // Converged: nothing to do.
        let links = vec![
            link("swp5", None, None, false, true),
            link("swp5.100", Some("vlan"), Some("brvx-1000001"), true, true),
            link("swp6", None, Some("brvx-1000002"), false, true),
        ];
        assert_eq!(plan(&want, &links), (vec![], vec![]));
        // Unbound: our VLAN link is deleted, the physical port released; others untouched.
        let mut links = links;
        links.push(link("eth0", None, None, false, true));
        links.push(link(
            "vxlan1000001",
            Some("vxlan"),
            Some("brvx-1000001"),
            true,
            true,
        ));
        let (a, _) = plan(&BTreeMap::new(), &links);
        assert_eq!(
            a,
            vec![
                PortAction::Delete {
                    link: "swp5.100".into()
                },
                PortAction::Release {
                    link: "swp6".into()
                },
            ]
        );
    }

    #[test]
    fn a_missing_interface_is_reported_not_forced() {
        let n = net(1000001, vec![att("swp9", Some(7))]);
        let (a, e) = plan(&wanted(&[&n]), &[]);
        assert!(a.is_empty());
        assert_eq!(
            e,
            vec!["interface swp9 does not exist on this switch".to_string()]
        );
    }

    #[test]
    fn long_names_fit_the_kernel_limit() {
        assert_eq!(member_name(&att("swp5", Some(100))), "swp5.100");
        let n = member_name(&att("Ethernet120", Some(4094)));
        assert!(n.len() <= 15, "{n}");
        assert_ne!(n, member_name(&att("Ethernet124", Some(4094))));
    }
}
