//! Gateway placement: which gateway nodes hold each VPC, as primary and warm standby.
//!
//! A new VPC is placed by rendezvous (highest-random-weight) hashing over the eligible
//! gateways of its site (live, not drained): the highest score is the primary, the second
//! the standby. After that, placement **follows the fabric and is sticky** ([`compute`]):
//! which gateway forwards is decided on the gateways themselves, from BFD and the VPC's
//! anchor route (see the gateway agent's failover controller); placement records it.
//! - a gateway that reports it forwards the VPC (and is eligible) is its primary;
//! - otherwise the current primary stays while it is eligible (no failback: a returning
//!   gateway does not take its VPCs back, every flap would move them twice);
//! - a primary that lost its lease but is still seen serving by another gateway (partitioned
//!   from etcd, alive in the fabric) stays primary;
//! - else the standby is promoted, else rendezvous picks one.
//!
//! The standby is kept while eligible (a demoted primary becomes the standby: its router is
//! warm), else the best-scored other eligible gateway.
//! Every coordinator computes the same answer from the same view.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::event::VpcRef;
use crate::model::{Intent, NodeRole, Placement};

/// Score of `node` for a VPC: the first 8 bytes of SHA-256("tenant/vpc/node").
pub fn score(vpc: &VpcRef, node: &str) -> u64 {
    let h = Sha256::digest(format!("{}/{}/{}", vpc.tenant, vpc.vpc, node).as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Primary and standby among `candidates`.
pub fn place(vpc: &VpcRef, candidates: &BTreeSet<String>) -> Placement {
    let mut ranked: Vec<(u64, &String)> = candidates.iter().map(|n| (score(vpc, n), n)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    Placement {
        primary: ranked.first().map(|(_, n)| (*n).clone()),
        standby: ranked.get(1).map(|(_, n)| (*n).clone()),
    }
}

/// What gateways report of the fabric (their status): per VPC, the gateways forwarding it and
/// whether some gateway sees it announced by another.
#[derive(Debug, Clone, Default)]
pub struct FabricReports {
    pub serving: BTreeMap<VpcRef, BTreeSet<String>>,
    pub seen_elsewhere: BTreeSet<VpcRef>,
}

/// One VPC's placement, given the eligible `candidates`, its `current` placement and what the
/// fabric reports (see the module documentation for the rules).
pub fn place_sticky(
    vpc: &VpcRef,
    candidates: &BTreeSet<String>,
    current: Option<&Placement>,
    serving: Option<&BTreeSet<String>>,
    seen_elsewhere: bool,
    drained: &BTreeSet<String>,
) -> Placement {
    let eligible = |n: &Option<String>| n.as_ref().filter(|n| candidates.contains(*n)).cloned();
    let cur = current.cloned().unwrap_or_default();
    let empty = BTreeSet::new();
    let serving: BTreeSet<&String> = serving
        .unwrap_or(&empty)
        .iter()
        .filter(|n| candidates.contains(*n))
        .collect();
    let followed = [&cur.primary, &cur.standby]
        .into_iter()
        .flatten()
        .find(|n| serving.contains(n))
        .or_else(|| serving.iter().next().copied())
        .cloned();
    let kept_unseen = cur
        .primary
        .clone()
        .filter(|p| seen_elsewhere && !drained.contains(p));
    let primary = followed
        .or_else(|| eligible(&cur.primary))
        .or(kept_unseen)
        .or_else(|| eligible(&cur.standby))
        .or_else(|| place(vpc, candidates).primary);
    let others: BTreeSet<String> = candidates
        .iter()
        .filter(|n| Some(*n) != primary.as_ref())
        .cloned()
        .collect();
    // Whoever of the two already holds the router warm stays in the pair.
    let standby = [&cur.standby, &cur.primary]
        .into_iter()
        .filter_map(eligible)
        .find(|s| Some(s) != primary.as_ref())
        .or_else(|| place(vpc, &others).primary);
    Placement { primary, standby }
}

/// The gateways eligible in each site: in the inventory, alive and not drained.
pub fn candidates<'a>(
    intent: &'a Intent,
    alive: &BTreeSet<String>,
) -> BTreeMap<&'a str, BTreeSet<String>> {
    let mut by_site: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for n in intent.nodes.values() {
        if n.role == NodeRole::Gateway
            && alive.contains(&n.name)
            && !intent.drained.contains(&n.name)
        {
            by_site
                .entry(n.site.as_str())
                .or_default()
                .insert(n.name.clone());
        }
    }
    by_site
}

/// Placement of every VPC given which nodes are alive and what the fabric reports.
pub fn compute(
    intent: &Intent,
    alive: &BTreeSet<String>,
    fabric: &FabricReports,
) -> BTreeMap<VpcRef, Placement> {
    let by_site = candidates(intent, alive);
    let empty = BTreeSet::new();
    intent
        .vpcs
        .values()
        .map(|v| {
            let key = v.key();
            let candidates = by_site.get(v.site.as_str()).unwrap_or(&empty);
            let p = place_sticky(
                &key,
                candidates,
                intent.placements.get(&key),
                fabric.serving.get(&key),
                fabric.seen_elsewhere.contains(&key),
                &intent.drained,
            );
            (key, p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> BTreeSet<String> {
        (1..=n).map(|i| format!("gw{i}")).collect()
    }

    fn vpcs(n: usize) -> Vec<VpcRef> {
        (0..n)
            .map(|i| VpcRef::new("t", format!("vpc{i}")))
            .collect()
    }

    #[test]
    fn primary_and_standby_differ_and_are_stable() {
        let c = nodes(3);
        for v in vpcs(50) {
            let p = place(&v, &c);
            assert_ne!(p.primary, p.standby);
            assert_eq!(p, place(&v, &c), "deterministic");
        }
        let one = place(&vpcs(1)[0], &nodes(1));
        assert_eq!((one.primary.as_deref(), one.standby), (Some("gw1"), None));
        assert_eq!(place(&vpcs(1)[0], &BTreeSet::new()), Placement::default());
    }

    #[test]
    fn removing_a_node_moves_only_its_vpcs_to_their_standby() {
        let all = nodes(4);
        let mut fewer = all.clone();
        fewer.remove("gw2");
        for v in vpcs(400) {
            let before = place(&v, &all);
            let after = place(&v, &fewer);
            if before.primary.as_deref() == Some("gw2") {
                assert_eq!(after.primary, before.standby, "moves to its standby");
            } else {
                assert_eq!(after.primary, before.primary, "others do not move");
            }
        }
    }

    fn sticky(
        v: &VpcRef,
        c: &BTreeSet<String>,
        cur: &Placement,
        serving: &[&str],
        seen: bool,
    ) -> Placement {
        let serving: BTreeSet<String> = serving.iter().map(|s| s.to_string()).collect();
        place_sticky(v, c, Some(cur), Some(&serving), seen, &BTreeSet::new())
    }

    fn pl(p: &str, s: Option<&str>) -> Placement {
        Placement {
            primary: Some(p.into()),
            standby: s.map(Into::into),
        }
    }

    /// Placement records what the fabric decided and does not fail back.
    #[test]
    fn placement_follows_the_fabric_and_is_sticky() {
        let v = &vpcs(1)[0];
        let all = nodes(3);
        let cur = pl("gw1", Some("gw2"));
        // Nothing reported: the placement stays, whatever rendezvous would say now.
        assert_eq!(sticky(v, &all, &cur, &[], false), cur);
        // The standby took over in the fabric: it becomes primary, the old primary standby.
        assert_eq!(
            sticky(v, &all, &cur, &["gw2"], false),
            pl("gw2", Some("gw1"))
        );
        // The primary lost its lease but the fabric still sees it serving: it stays.
        let no_gw1: BTreeSet<String> = ["gw2", "gw3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(sticky(v, &no_gw1, &cur, &[], true), pl("gw1", Some("gw2")));
        // Gone from the fabric too: the standby is promoted, a new standby is chosen.
        assert_eq!(sticky(v, &no_gw1, &cur, &[], false), pl("gw2", Some("gw3")));
        // A returning gateway takes nothing back.
        let after = pl("gw2", Some("gw3"));
        assert_eq!(sticky(v, &all, &after, &["gw2"], false), after);
        // A drained primary is moved even while it still serves.
        let drained = BTreeSet::from(["gw1".to_string()]);
        let serving = BTreeSet::from(["gw1".to_string()]);
        assert_eq!(
            place_sticky(v, &no_gw1, Some(&cur), Some(&serving), true, &drained),
            pl("gw2", Some("gw3"))
        );
        // A new VPC is placed by rendezvous.
        assert_eq!(
            place_sticky(v, &all, None, None, false, &drained),
            place(v, &all)
        );
    }

    #[test]
    fn adding_a_node_moves_about_one_nth() {
        let vs = vpcs(2000);
        let before: Vec<_> = vs.iter().map(|v| place(v, &nodes(4))).collect();
        let after: Vec<_> = vs.iter().map(|v| place(v, &nodes(5))).collect();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.primary != b.primary)
            .count();
        // Ideal 1/5 = 400; allow sampling noise.
        assert!((300..=500).contains(&moved), "moved {moved} of 2000");
        assert!(
            after
                .iter()
                .zip(&before)
                .filter(|(a, b)| a.primary != b.primary)
                .all(|(a, _)| a.primary.as_deref() == Some("gw5")),
            "VPCs only move to the new node"
        );
    }
}
