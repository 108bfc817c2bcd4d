//! The netlink executor of the L2 planner's [`Action`]s (the hypervisor's overlay links).
//!
//! A plan runs as a few pipelined batches instead of one process per action, because some
//! things must happen between a link's creation and its other changes:
//! 1. deletions, the VTEP address and the creations;
//! 2. the ownership alias of each link whose creation succeeded (the kernel ignores
//!    IFLA_IFALIAS in a creation, and an alias pipelined behind a failed creation would mark
//!    a link someone else made as ours);
//! 3. the host's IPv6 turned off on the new links, before they come up: netlink cannot set
//!    `disable_ipv6` (IFLA_INET6_CONF is read-only), so this is a direct write to
//!    `/proc/sys`, no process;
//! 4. the ifindex of each master that is not known yet (IFLA_MASTER takes an index), one
//!    RTM_GETLINK per name;
//! 5. masters, bridge-port flags and up, in plan order.
//!
//! A large plan goes through these batches in rounds of [`NETWORKS_PER_ROUND`] networks
//! ([`rounds`]), so FRR's zebra meets the links in the order one network after another would
//! give them (see [`rounds`] for why that matters).
//!
//! Within a batch the kernel applies the requests in the order sent, so a plan's order is
//! kept. Each action gets its own outcome (the first failed request of the action).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info};

use super::{address, bridge, link, observe, port, vxlan, Netlink, NetlinkError, Request};
use crate::converge::Pass;
use crate::l2::{plan, Action, Observed, VXLAN_PORT};
use crate::links::{Link, OWNER_ALIAS};
use crate::DeviceError;

/// Masters resolved concurrently (one RTM_GETLINK each, answers of about 2 kB).
const RESOLVE_WINDOW: usize = 64;

/// The links and the loopback's addresses, through netlink.
pub async fn observe(nl: &Netlink) -> Result<Observed, DeviceError> {
    let links = observe::links(nl).await.map_err(|e| e.on("dump links"))?;
    let lo_index = links
        .iter()
        .find(|l| l.name == "lo")
        .map_or(1, |l| l.ifindex);
    let lo = observe::addresses_v4(nl, lo_index)
        .await
        .map_err(|e| e.on("dump addresses of lo"))?;
    Ok(Observed { links, lo })
}

/// Observes, plans and executes the overlay of `vnis` with VTEP `vtep` through netlink;
/// returns what was observed (None when observation failed).
pub async fn converge(
    pass: &mut Pass,
    nl: &Netlink,
    vnis: &BTreeSet<u32>,
    vtep: Ipv4Addr,
) -> Option<Observed> {
    converge_from(pass, nl, vnis, vtep, observe(nl)).await
}

async fn converge_from(
    pass: &mut Pass,
    nl: &Netlink,
    vnis: &BTreeSet<u32>,
    vtep: Ipv4Addr,
    observation: impl std::future::Future<Output = Result<Observed, DeviceError>>,
) -> Option<Observed> {
    let t = std::time::Instant::now();
    let observed = pass.observe("links", observation).await?;
    debug!(
        links = observed.links.len(),
        elapsed_ms = t.elapsed().as_millis() as u64,
        "observed links"
    );
    converge_observed(pass, nl, vnis, vtep, &observed).await;
    Some(observed)
}

/// Plans the overlay of `vnis` from `observed` (an observation the caller keeps, such as a
/// gateway's [`super::mirror::Mirror`]) and executes the plan; returns the actions that
/// succeeded.
pub async fn converge_observed(
    pass: &mut Pass,
    nl: &Netlink,
    vnis: &BTreeSet<u32>,
    vtep: Ipv4Addr,
    observed: &Observed,
) -> Vec<Action> {
    let p = plan(vnis, vtep, &observed.lo, &observed.links);
    pass.refused("links", p.errors);
    let results = execute(nl, &p.actions, &observed.links).await;
    let mut done = Vec::new();
    for (a, r) in p.actions.into_iter().zip(results) {
        if pass.record("links", &a, r) {
            done.push(a);
        }
    }
    done
}

/// Networks whose actions run through the batches together (see [`rounds`]).
pub const NETWORKS_PER_ROUND: usize = 250;

/// Runs `actions` (a plan made from the observed `links`); one outcome per action. A large
/// plan runs in rounds of [`NETWORKS_PER_ROUND`] networks, each round through every batch.
pub async fn execute(
    nl: &Netlink,
    actions: &[Action],
    links: &[Link],
) -> Vec<Result<(), DeviceError>> {
    let mut out: Vec<Result<(), DeviceError>> = actions.iter().map(|_| Ok(())).collect();
    let lo = links
        .iter()
        .find(|l| l.name == "lo")
        .map_or(1, |l| l.ifindex);
    let mut times = [0u64; 5];
    for round in rounds(actions, NETWORKS_PER_ROUND) {
        let t = execute_round(nl, &actions[round.clone()], links, lo, &mut out[round]).await;
        for (sum, ms) in times.iter_mut().zip(t) {
            *sum += ms;
        }
    }
    if !actions.is_empty() {
        let [create_ms, alias_ms, ipv6_ms, resolve_ms, set_ms] = times;
        info!(
            actions = actions.len(),
            create_ms, alias_ms, ipv6_ms, resolve_ms, set_ms, "netlink batches done"
        );
    }
    out
}

/// The link an action names, if any.
fn link_of(a: &Action) -> Option<&str> {
    match a {
        Action::AddLoopbackAddress(_) => None,
        Action::AddBridge { name } | Action::AddVxlan { name, .. } => Some(name),
        Action::SetMaster { link, .. }
        | Action::SetPortFlags { link }
        | Action::SetUp { link }
        | Action::DisableIpv6 { link }
        | Action::Delete { link } => Some(link),
    }
}

/// Splits a plan into consecutive rounds of at most `networks` networks (the planner lists
/// each network's actions together). FRR's zebra handles each link message against every
/// link it knows by then: when all of a plan's links are created before any is enslaved or
/// brought up, each of the later messages meets all of them, while round by round it meets
/// the links of the rounds before (as when networks come one by one). Measured at 5,000
/// networks in docs/PERFORMANCE.md (session 41).
pub fn rounds(actions: &[Action], networks: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut count, mut last) = (0, 0, None);
    for (i, a) in actions.iter().enumerate() {
        let vni = link_of(a).and_then(crate::l2::vni_of);
        if vni.is_none() || vni == last {
            continue;
        }
        if count == networks.max(1) {
            out.push(start..i);
            (start, count) = (i, 0);
        }
        count += 1;
        last = vni;
    }
    if start < actions.len() {
        out.push(start..actions.len());
    }
    out
}

/// Runs one round through the batches; the milliseconds of each batch (creations, aliases,
/// IPv6 off, master lookups, settings).
async fn execute_round(
    nl: &Netlink,
    actions: &[Action],
    links: &[Link],
    lo: u32,
    out: &mut [Result<(), DeviceError>],
) -> [u64; 5] {
    let mut lap = Lap::default();
    run_batch(nl, actions, out, |a| creations(a, lo)).await;
    let create_ms = lap.ms();
    // Only after the creations succeeded: a pipelined alias would also mark a link that
    // already existed (a failed creation) as ours.
    run_batch(nl, actions, out, ownership).await;
    let alias_ms = lap.ms();
    ipv6_off(actions, out);
    let ipv6_ms = lap.ms();
    let masters = resolve_masters(nl, actions, links).await;
    for (a, r) in actions.iter().zip(out.iter_mut()) {
        if let (Action::SetMaster { link, master }, true) = (a, r.is_ok()) {
            if !masters.contains_key(master) {
                let e = NetlinkError::Other(format!("no link named {master}"));
                *r = Err(e.on(format!("set master of {link} to {master}")));
            }
        }
    }
    let resolve_ms = lap.ms();
    run_batch(nl, actions, out, |a| settings(a, &masters)).await;
    [create_ms, alias_ms, ipv6_ms, resolve_ms, lap.ms()]
}

/// Milliseconds since the last call (or creation): where a pass's time goes.
struct Lap(std::time::Instant);

impl Default for Lap {
    fn default() -> Self {
        Lap(std::time::Instant::now())
    }
}

impl Lap {
    fn ms(&mut self) -> u64 {
        let now = std::time::Instant::now();
        let ms = (now - self.0).as_millis() as u64;
        self.0 = now;
        ms
    }
}

/// The host's IPv6 off on each link created (before it comes up) and where the plan asks.
fn ipv6_off(actions: &[Action], out: &mut [Result<(), DeviceError>]) {
    for (a, r) in actions.iter().zip(out.iter_mut()) {
        if r.is_ok() {
            *r = match a {
                Action::AddBridge { name } | Action::AddVxlan { name, .. } => {
                    crate::l2::disable_ipv6(name)
                }
                Action::DisableIpv6 { link } => crate::l2::disable_ipv6(link),
                _ => Ok(()),
            };
        }
    }
}

/// The requests of the first batch for `a` (deletions, creations, the VTEP address).
fn creations(a: &Action, lo: u32) -> Vec<(String, Request)> {
    match a {
        Action::Delete { link } => vec![(format!("delete {link}"), link::delete(link))],
        Action::AddLoopbackAddress(ip) => {
            vec![(format!("add {ip}/32 to lo"), address::add_v4(lo, *ip, 32))]
        }
        Action::AddBridge { name } => vec![(format!("create bridge {name}"), bridge::create(name))],
        Action::AddVxlan { name, vni, local } => vec![(
            format!("create vxlan {name}"),
            vxlan::create(name, *vni, *local, VXLAN_PORT),
        )],
        _ => vec![],
    }
}

/// The ownership alias of a link `a` created.
fn ownership(a: &Action) -> Vec<(String, Request)> {
    match a {
        Action::AddBridge { name } | Action::AddVxlan { name, .. } => vec![(
            format!("set alias of {name}"),
            link::set_alias(name, OWNER_ALIAS),
        )],
        _ => vec![],
    }
}

/// The requests of the last batch for `a` (master, port flags, up).
fn settings(a: &Action, masters: &HashMap<String, u32>) -> Vec<(String, Request)> {
    match a {
        Action::SetMaster { link, master } => match masters.get(master) {
            Some(&i) => vec![(
                format!("set master of {link} to {master}"),
                port::set_master(link, i),
            )],
            // Unresolved: already failed in execute, never sent.
            None => vec![],
        },
        Action::SetPortFlags { link } => vec![(
            format!("set bridge-port flags of {link}"),
            port::set_evpn_flags(link),
        )],
        Action::SetUp { link } => vec![(format!("set {link} up"), link::set_up(link))],
        _ => vec![],
    }
}

/// Sends the requests `of` each action whose outcome is still Ok, in one pipeline, and
/// records each action's first failure.
async fn run_batch(
    nl: &Netlink,
    actions: &[Action],
    out: &mut [Result<(), DeviceError>],
    of: impl Fn(&Action) -> Vec<(String, Request)>,
) {
    let mut owners = Vec::new();
    let mut requests = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if out[i].is_err() {
            continue;
        }
        for (op, req) in of(a) {
            owners.push((i, op));
            requests.push(req);
        }
    }
    let results = nl.pipeline(requests).await;
    for ((i, op), r) in owners.into_iter().zip(results) {
        if let (Err(e), true) = (r, out[i].is_ok()) {
            out[i] = Err(e.on(op));
        }
    }
}

/// Ifindex of every master a SetMaster names: from the observed links, else asked from the
/// kernel by name (links created by this plan).
async fn resolve_masters(nl: &Netlink, actions: &[Action], links: &[Link]) -> HashMap<String, u32> {
    let deleted: BTreeSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { link } => Some(link.as_str()),
            _ => None,
        })
        .collect();
    let known: HashMap<&str, u32> = links
        .iter()
        .filter(|l| !deleted.contains(l.name.as_str()))
        .map(|l| (l.name.as_str(), l.ifindex))
        .collect();
    let mut masters = HashMap::new();
    let mut ask = BTreeSet::new();
    for a in actions {
        if let Action::SetMaster { master, .. } = a {
            match known.get(master.as_str()) {
                Some(&i) => {
                    masters.insert(master.clone(), i);
                }
                None => {
                    ask.insert(master.clone());
                }
            }
        }
    }
    for (name, r) in indexes_of(nl, ask).await {
        if let Ok(i) = r {
            masters.insert(name, i);
        }
    }
    masters
}

/// The ifindex of each link named in `names`, asked concurrently ([`RESOLVE_WINDOW`] at a
/// time, one RTM_GETLINK each): the lookup of links that were not in a dump.
pub async fn indexes_of(
    nl: &Netlink,
    names: BTreeSet<String>,
) -> HashMap<String, Result<u32, NetlinkError>> {
    futures::stream::iter(names)
        .map(|name| async move {
            let r = index_of(nl, &name).await;
            (name, r)
        })
        .buffer_unordered(RESOLVE_WINDOW)
        .collect()
        .await
}

/// The ifindex of the link named `name`.
pub async fn index_of(nl: &Netlink, name: &str) -> Result<u32, NetlinkError> {
    let msgs: Vec<_> = nl
        .handle()
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_collect()
        .await?;
    msgs.first()
        .map(|m| m.header.index)
        .ok_or(NetlinkError::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(vni: u32) -> Vec<Action> {
        let (br, vx) = (format!("brvx-{vni}"), format!("vxlan{vni}"));
        vec![
            Action::AddBridge { name: br.clone() },
            Action::SetUp { link: br.clone() },
            Action::AddVxlan {
                name: vx.clone(),
                vni,
                local: "10.255.1.1".parse().unwrap(),
            },
            Action::SetMaster {
                link: vx.clone(),
                master: br,
            },
            Action::SetPortFlags { link: vx.clone() },
            Action::SetUp { link: vx },
        ]
    }

    /// Rounds hold whole networks, in order, the VTEP address with the first; a removal's
    /// vxlan and bridge stay together.
    #[test]
    fn rounds_cut_between_networks() {
        let mut plan = vec![Action::AddLoopbackAddress("10.255.1.1".parse().unwrap())];
        for vni in 1..=5 {
            plan.extend(network(vni));
        }
        plan.push(Action::Delete {
            link: "vxlan9".into(),
        });
        plan.push(Action::Delete {
            link: "brvx-9".into(),
        });
        assert_eq!(rounds(&plan, 2), vec![0..13, 13..25, 25..33]);
        assert_eq!(rounds(&plan, 250), vec![0..33]);
        assert_eq!(rounds(&[], 250), Vec::<std::ops::Range<usize>>::new());
        for r in rounds(&plan, 2) {
            let vnis: std::collections::BTreeSet<u32> = plan[r]
                .iter()
                .filter_map(|a| link_of(a).and_then(crate::l2::vni_of))
                .collect();
            assert!(vnis.len() <= 2, "{vnis:?}");
        }
    }
}
