//! Pure planning of the L2 overlay of a VTEP host (hypervisor or gateway): given the networks it
//! must carry, its VTEP and the links it observed, the ordered actions that converge the host to CloudStack's
//! `modifyvxlan-evpn.sh` layout: `vxlan<VNI>` (dstport 4789, nolearning, local VTEP) enslaved
//! to `brvx-<VNI>`, bridge-port neigh_suppress on and learning off, everything up. Links we did
//! not create are adopted when they already match and never deleted.
//!
//! Both links get the host's IPv6 disabled when created (as `modifyvxlan-evpn.sh` does): they
//! are pure L2, and a host link-local on each of thousands of them puts one `fe80::/64` and one
//! `ff00::/8` route per device into the same IPv6 FIB nodes, so that every later link change
//! walks them all (5,000 networks took minutes instead of seconds). Every change is one
//! `ip` command addressing a single link: the `bridge` tool dumps every link of the host
//! before each change, which is quadratic at that scale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::links::Link;

pub const VXLAN_PORT: u16 = 4789;

pub fn bridge_name(vni: u32) -> String {
    format!("brvx-{vni}")
}
pub fn vxlan_name(vni: u32) -> String {
    format!("vxlan{vni}")
}

/// The VNI a link name denotes, for our two naming patterns.
pub fn vni_of(name: &str) -> Option<u32> {
    name.strip_prefix("brvx-")
        .or_else(|| name.strip_prefix("vxlan"))
        .and_then(|s| s.parse().ok())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AddLoopbackAddress(Ipv4Addr),
    AddBridge {
        name: String,
    },
    AddVxlan {
        name: String,
        vni: u32,
        local: Ipv4Addr,
    },
    SetMaster {
        link: String,
        master: String,
    },
    SetPortFlags {
        link: String,
    },
    SetUp {
        link: String,
    },
    /// Turn the host's IPv6 off on an existing overlay link (one we or CloudStack made).
    DisableIpv6 {
        link: String,
    },
    Delete {
        link: String,
    },
}

/// Actions and the problems that no action can fix (reported, not forced).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub errors: Vec<String>,
}

pub fn plan(vnis: &BTreeSet<u32>, vtep: Ipv4Addr, lo_addrs: &[Ipv4Addr], links: &[Link]) -> Plan {
    let mut p = Plan::default();
    let by_name: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    if !lo_addrs.contains(&vtep) {
        p.actions.push(Action::AddLoopbackAddress(vtep));
    }
    for &vni in vnis {
        let br = bridge_name(vni);
        let vx = vxlan_name(vni);
        match by_name.get(br.as_str()) {
            None => {
                p.actions.push(Action::AddBridge { name: br.clone() });
                p.actions.push(Action::SetUp { link: br.clone() });
            }
            Some(l) if l.kind.as_deref() != Some("bridge") => {
                p.errors
                    .push(format!("{br} exists but is a {:?}, not a bridge", l.kind));
                continue;
            }
            Some(l) => {
                if l.ipv6_enabled == Some(true) {
                    p.actions.push(Action::DisableIpv6 { link: br.clone() });
                }
                if !l.up {
                    p.actions.push(Action::SetUp { link: br.clone() });
                }
            }
        }
        let existing = by_name.get(vx.as_str());
        let matches = existing.is_some_and(|l| {
            l.vxlan.as_ref().is_some_and(|v| {
                v.vni == vni && v.local == Some(vtep) && v.port == VXLAN_PORT && !v.learning
            })
        });
        let create = match existing {
            None => true,
            Some(_) if matches => false,
            Some(l) if l.owned => {
                // Ours but wrong (e.g. the VTEP changed): recreate.
                p.actions.push(Action::Delete { link: vx.clone() });
                true
            }
            Some(_) => {
                p.errors.push(format!(
                    "{vx} exists, was not created by StackFabric and does not match (vni {vni}, local {vtep}, dstport {VXLAN_PORT}, nolearning); left alone"
                ));
                continue;
            }
        };
        if create {
            p.actions.push(Action::AddVxlan {
                name: vx.clone(),
                vni,
                local: vtep,
            });
            p.actions.push(Action::SetMaster {
                link: vx.clone(),
                master: br.clone(),
            });
            p.actions.push(Action::SetPortFlags { link: vx.clone() });
            p.actions.push(Action::SetUp { link: vx.clone() });
            continue;
        }
        let l = existing.expect("exists");
        if l.ipv6_enabled == Some(true) {
            p.actions.push(Action::DisableIpv6 { link: vx.clone() });
        }
        if l.master.as_deref() != Some(br.as_str()) {
            p.actions.push(Action::SetMaster {
                link: vx.clone(),
                master: br.clone(),
            });
            p.actions.push(Action::SetPortFlags { link: vx.clone() });
        } else if l.port_learning != Some(false) || l.port_neigh_suppress != Some(true) {
            p.actions.push(Action::SetPortFlags { link: vx.clone() });
        }
        if !l.up {
            p.actions.push(Action::SetUp { link: vx.clone() });
        }
    }
    // Remove what we created for networks no longer in scope: vxlan first, then its bridge.
    let stale = |l: &&Link| l.owned && vni_of(&l.name).is_some_and(|v| !vnis.contains(&v));
    for l in links
        .iter()
        .filter(stale)
        .filter(|l| l.kind.as_deref() == Some("vxlan"))
    {
        p.actions.push(Action::Delete {
            link: l.name.clone(),
        });
    }
    for l in links
        .iter()
        .filter(stale)
        .filter(|l| l.kind.as_deref() == Some("bridge"))
    {
        p.actions.push(Action::Delete {
            link: l.name.clone(),
        });
    }
    p
}

/// The plan for the networks whose VNI is in `dirty` only (their desired presence changed,
/// or their links did): the same plan as [`plan`] restricted to them, so the cost of a change
/// of one network does not grow with the networks around it. `links` may be every link or
/// just those of the dirty VNIs; the others are left out either way.
pub fn plan_delta(
    vnis: &BTreeSet<u32>,
    dirty: &BTreeSet<u32>,
    vtep: Ipv4Addr,
    lo_addrs: &[Ipv4Addr],
    links: &[Link],
) -> Plan {
    let scope: BTreeSet<u32> = vnis.intersection(dirty).copied().collect();
    let touched: Vec<Link> = links
        .iter()
        .filter(|l| vni_of(&l.name).is_some_and(|v| dirty.contains(&v)))
        .cloned()
        .collect();
    plan(&scope, vtep, lo_addrs, &touched)
}

impl From<Plan> for crate::converge::Plan<Action> {
    fn from(p: Plan) -> Self {
        crate::converge::Plan::new(p.actions, p.errors)
    }
}

/// What the L2 planner reads: every link (with the overlay links' IPv6 state) and the
/// loopback's addresses.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub links: Vec<Link>,
    pub lo: Vec<Ipv4Addr>,
}

/// Reads the links and the loopback's addresses (both, even when the first fails).
pub async fn observe() -> Result<Observed, crate::DeviceError> {
    match (
        crate::links::observe().await,
        crate::links::addresses("lo").await,
    ) {
        (Ok(links), Ok(lo)) => Ok(Observed { links, lo }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Observes, plans and executes the overlay of `vnis` with VTEP `vtep`; returns what was
/// observed (None when observation failed).
pub async fn converge(
    pass: &mut crate::converge::Pass,
    vnis: &BTreeSet<u32>,
    vtep: Ipv4Addr,
) -> Option<Observed> {
    let plan = |o: &Observed| plan(vnis, vtep, &o.lo, &o.links).into();
    pass.converge(
        "links",
        observe(),
        plan,
        crate::converge::OnFailure::Continue,
    )
    .await
    .observed
}

impl crate::converge::Step for Action {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
    async fn execute(&self) -> Result<(), crate::DeviceError> {
        execute(self).await
    }
}

/// Runs one planned action with iproute2; links we create get the owner alias.
pub async fn execute(a: &Action) -> Result<(), crate::DeviceError> {
    use crate::links::{ip, OWNER_ALIAS};
    match a {
        Action::AddLoopbackAddress(addr) => {
            ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]).await
        }
        Action::AddBridge { name } => {
            ip(&["link", "add", name, "type", "bridge", "stp_state", "0"]).await?;
            ip(&["link", "set", "dev", name, "alias", OWNER_ALIAS]).await?;
            disable_ipv6(name)
        }
        Action::AddVxlan { name, vni, local } => {
            ip(&[
                "link",
                "add",
                name,
                "type",
                "vxlan",
                "id",
                &vni.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "local",
                &local.to_string(),
                "nolearning",
            ])
            .await?;
            ip(&["link", "set", "dev", name, "alias", OWNER_ALIAS]).await?;
            disable_ipv6(name)
        }
        Action::SetMaster { link, master } => {
            ip(&["link", "set", "dev", link, "master", master]).await
        }
        Action::SetPortFlags { link } => {
            ip(&[
                "link",
                "set",
                "dev",
                link,
                "type",
                "bridge_slave",
                "neigh_suppress",
                "on",
                "learning",
                "off",
            ])
            .await
        }
        Action::SetUp { link } => ip(&["link", "set", "dev", link, "up"]).await,
        Action::DisableIpv6 { link } => disable_ipv6(link),
        Action::Delete { link } => ip(&["link", "del", "dev", link]).await,
    }
}

/// Turns the host's IPv6 off on a link we just created, before it goes up (no link-local
/// address, no per-device IPv6 routes). A kernel without IPv6 has nothing to turn off.
pub(crate) fn disable_ipv6(link: &str) -> Result<(), crate::DeviceError> {
    let path = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(crate::DeviceError::Spawn {
            cmd: format!("write 1 to {path}"),
            source,
        }),
    }
}

/// VNIs of `brvx-<VNI>` bridges present that we did not create (CloudStack's): they widen
/// this hypervisor's scope.
pub fn foreign_vnis<'a>(links: impl IntoIterator<Item = &'a Link>) -> BTreeSet<u32> {
    links
        .into_iter()
        .filter(|l| !l.owned && l.kind.as_deref() == Some("bridge") && l.name.starts_with("brvx-"))
        .filter_map(|l| vni_of(&l.name))
        .collect()
}

/// Applies actions to an in-memory link table: the in-memory twin used to test that plans
/// converge. Mirrors what the Linux executor does.
pub fn apply_in_memory(links: &mut Vec<Link>, lo: &mut Vec<Ipv4Addr>, actions: &[Action]) {
    let mut next_index = links.iter().map(|l| l.ifindex).max().unwrap_or(1) + 1;
    for a in actions {
        match a {
            Action::AddLoopbackAddress(ip) => lo.push(*ip),
            Action::AddBridge { name } => {
                links.push(Link {
                    name: name.clone(),
                    ifindex: next_index,
                    kind: Some("bridge".into()),
                    owned: true,
                    ipv6_enabled: Some(false),
                    ..Default::default()
                });
                next_index += 1;
            }
            Action::AddVxlan { name, vni, local } => {
                links.push(Link {
                    name: name.clone(),
                    ifindex: next_index,
                    kind: Some("vxlan".into()),
                    owned: true,
                    vxlan: Some(crate::links::VxlanInfo {
                        vni: *vni,
                        local: Some(*local),
                        port: VXLAN_PORT,
                        learning: false,
                    }),
                    ipv6_enabled: Some(false),
                    ..Default::default()
                });
                next_index += 1;
            }
            Action::SetMaster { link, master } => {
                if let Some(l) = links.iter_mut().find(|l| &l.name == link) {
                    l.master = Some(master.clone());
                    l.port_learning = Some(true);
                    l.port_neigh_suppress = Some(false);
                }
            }
            Action::SetPortFlags { link } => {
                if let Some(l) = links.iter_mut().find(|l| &l.name == link) {
                    l.port_learning = Some(false);
                    l.port_neigh_suppress = Some(true);
                }
            }
            Action::SetUp { link } => {
                if let Some(l) = links.iter_mut().find(|l| &l.name == link) {
                    l.up = true;
                }
            }
            Action::DisableIpv6 { link } => {
                if let Some(l) = links.iter_mut().find(|l| &l.name == link) {
                    l.ipv6_enabled = Some(false);
                }
            }
            Action::Delete { link } => links.retain(|l| &l.name != link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtep() -> Ipv4Addr {
        "10.255.1.1".parse().unwrap()
    }

    fn converge(vnis: &BTreeSet<u32>, links: &mut Vec<Link>, lo: &mut Vec<Ipv4Addr>) -> usize {
        let first = plan(vnis, vtep(), lo, links);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        apply_in_memory(links, lo, &first.actions);
        first.actions.len()
    }

    /// `n` networks from VNI 1,000,001, converged in memory.
    fn converged(n: u32) -> (BTreeSet<u32>, Vec<Link>, Vec<Ipv4Addr>) {
        let (mut links, mut lo) = (vec![], vec![]);
        let vnis: BTreeSet<u32> = (1_000_001..1_000_001 + n).collect();
        converge(&vnis, &mut links, &mut lo);
        (vnis, links, lo)
    }

    #[test]
    fn delta_plans_only_the_changed_networks() {
        let (mut vnis, mut links, mut lo) = converged(2_000);
        // One network more: its six actions, nothing about the 2,000 others.
        vnis.insert(1_100_000);
        let one = BTreeSet::from([1_100_000]);
        let p = plan_delta(&vnis, &one, vtep(), &lo, &links);
        assert!(p.errors.is_empty());
        assert_eq!(p.actions.len(), 6, "{:?}", p.actions);
        assert!(p
            .actions
            .iter()
            .all(|a| format!("{a:?}").contains("1100000")));
        apply_in_memory(&mut links, &mut lo, &p.actions);
        // The full plan agrees: nothing left anywhere.
        assert_eq!(plan(&vnis, vtep(), &lo, &links), Plan::default());
        // One network less: its two links go, vxlan first.
        vnis.remove(&1_000_005);
        let gone = BTreeSet::from([1_000_005]);
        let p = plan_delta(&vnis, &gone, vtep(), &lo, &links);
        assert_eq!(
            p.actions,
            vec![
                Action::Delete {
                    link: "vxlan1000005".into()
                },
                Action::Delete {
                    link: "brvx-1000005".into()
                }
            ]
        );
        apply_in_memory(&mut links, &mut lo, &p.actions);
        assert_eq!(plan(&vnis, vtep(), &lo, &links), Plan::default());
    }

    #[test]
    fn delta_repairs_a_changed_link_and_matches_the_full_plan() {
        let (vnis, mut links, lo) = converged(50);
        // Someone set a vxlan down and took another bridge's port away.
        for l in links.iter_mut() {
            match l.name.as_str() {
                "vxlan1000003" => l.up = false,
                "vxlan1000007" => l.master = None,
                _ => {}
            }
        }
        let full = plan(&vnis, vtep(), &lo, &links);
        let dirty = BTreeSet::from([1_000_003, 1_000_007]);
        assert_eq!(plan_delta(&vnis, &dirty, vtep(), &lo, &links), full);
        assert_eq!(full.actions.len(), 3, "{:?}", full.actions);
        // Only the dirty networks' links need be passed.
        let few: Vec<Link> = links
            .iter()
            .filter(|l| vni_of(&l.name).is_some_and(|v| dirty.contains(&v)))
            .cloned()
            .collect();
        assert_eq!(plan_delta(&vnis, &dirty, vtep(), &lo, &few), full);
        // A network not marked dirty is not looked at.
        let other = BTreeSet::from([1_000_010]);
        assert_eq!(
            plan_delta(&vnis, &other, vtep(), &lo, &links),
            Plan::default()
        );
    }

    #[test]
    fn creates_cloudstack_layout_and_then_is_idempotent() {
        let (mut links, mut lo) = (vec![], vec![]);
        let vnis = BTreeSet::from([1_000_001, 1_000_002]);
        assert!(converge(&vnis, &mut links, &mut lo) > 0);
        assert_eq!(lo, vec![vtep()]);
        let vx = links.iter().find(|l| l.name == "vxlan1000001").unwrap();
        assert_eq!(vx.master.as_deref(), Some("brvx-1000001"));
        assert_eq!(
            (vx.port_learning, vx.port_neigh_suppress),
            (Some(false), Some(true))
        );
        // Second pass: nothing to do, so a restart recreates nothing (same ifindex).
        let again = plan(&vnis, vtep(), &lo, &links);
        assert_eq!(again, Plan::default());
    }

    #[test]
    fn ipv6_left_on_is_turned_off_on_the_next_pass() {
        // A creation whose IPv6 write failed (e.g. a read-only /proc/sys) leaves the links up
        // with IPv6 on: the next pass must retry, not consider the network done.
        let (mut links, mut lo) = (vec![], vec![]);
        let vnis = BTreeSet::from([1_000_001]);
        converge(&vnis, &mut links, &mut lo);
        for l in links.iter_mut() {
            l.ipv6_enabled = Some(true);
        }
        let p = plan(&vnis, vtep(), &lo, &links);
        assert_eq!(
            p.actions,
            vec![
                Action::DisableIpv6 {
                    link: "brvx-1000001".into()
                },
                Action::DisableIpv6 {
                    link: "vxlan1000001".into()
                }
            ]
        );
        apply_in_memory(&mut links, &mut lo, &p.actions);
        assert_eq!(plan(&vnis, vtep(), &lo, &links), Plan::default());
    }

    #[test]
    fn removes_only_what_it_owns() {
        let (mut links, mut lo) = (vec![], vec![]);
        converge(&BTreeSet::from([1_000_001, 1_000_002]), &mut links, &mut lo);
        // CloudStack made brvx-2000000 itself.
        links.push(Link {
            name: "brvx-2000000".into(),
            ifindex: 99,
            kind: Some("bridge".into()),
            up: true,
            ..Default::default()
        });
        let p = plan(&BTreeSet::from([1_000_001]), vtep(), &lo, &links);
        assert_eq!(
            p.actions,
            vec![
                Action::Delete {
                    link: "vxlan1000002".into()
                },
                Action::Delete {
                    link: "brvx-1000002".into()
                }
            ]
        );
        assert_eq!(foreign_vnis(&links), BTreeSet::from([2_000_000]));
    }

    #[test]
    fn adopts_a_matching_foreign_bridge_and_vxlan() {
        let mut links = vec![
            Link {
                name: "brvx-1000005".into(),
                ifindex: 5,
                kind: Some("bridge".into()),
                up: true,
                ..Default::default()
            },
            Link {
                name: "vxlan1000005".into(),
                ifindex: 6,
                kind: Some("vxlan".into()),
                up: true,
                master: Some("brvx-1000005".into()),
                vxlan: Some(crate::links::VxlanInfo {
                    vni: 1_000_005,
                    local: Some(vtep()),
                    port: 4789,
                    learning: false,
                }),
                port_learning: Some(true),
                port_neigh_suppress: Some(false),
                ..Default::default()
            },
        ];
        let lo = vec![vtep()];
        let p = plan(&BTreeSet::from([1_000_005]), vtep(), &lo, &links);
        assert_eq!(
            p.actions,
            vec![Action::SetPortFlags {
                link: "vxlan1000005".into()
            }]
        );
        apply_in_memory(&mut links, &mut lo.clone(), &p.actions);
        assert!(links.iter().all(|l| !l.owned), "adopted links stay foreign");
    }

    #[test]
    fn foreign_mismatch_is_reported_not_forced() {
        let links = vec![Link {
            name: "vxlan1000007".into(),
            ifindex: 7,
            kind: Some("vxlan".into()),
            vxlan: Some(crate::links::VxlanInfo {
                vni: 1_000_007,
                local: Some("10.0.0.9".parse().unwrap()),
                port: 4789,
                learning: false,
            }),
            ..Default::default()
        }];
        let p = plan(&BTreeSet::from([1_000_007]), vtep(), &[vtep()], &links);
        assert_eq!(p.errors.len(), 1);
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Delete { .. })));
    }

    #[test]
    fn owned_vxlan_with_wrong_vtep_is_recreated() {
        let (mut links, mut lo) = (vec![], vec![]);
        converge(&BTreeSet::from([1_000_001]), &mut links, &mut lo);
        let new_vtep: Ipv4Addr = "10.255.1.9".parse().unwrap();
        let p = plan(&BTreeSet::from([1_000_001]), new_vtep, &lo, &links);
        assert!(p.actions.contains(&Action::Delete {
            link: "vxlan1000001".into()
        }));
        assert!(p.actions.contains(&Action::AddVxlan {
            name: "vxlan1000001".into(),
            vni: 1_000_001,
            local: new_vtep
        }));
    }
}
