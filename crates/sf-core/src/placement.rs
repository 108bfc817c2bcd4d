//! Gateway placement: which gateway nodes serve each VPC. Rendezvous (highest-random-weight)
//! hashing over the eligible gateways of the VPC's site (live, not drained): the highest score
//! is the primary, the second the standby. Removing a node moves exactly the VPCs it was
//! primary for, each to its standby (the next score); adding one moves about 1/N of the VPCs;
//! nothing depends on order or history, so every coordinator computes the same answer.

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

/// Placement of every VPC given which nodes are alive.
pub fn compute(intent: &Intent, alive: &BTreeSet<String>) -> BTreeMap<VpcRef, Placement> {
    let by_site = candidates(intent, alive);
    let empty = BTreeSet::new();
    intent
        .vpcs
        .iter()
        .map(|(k, v)| {
            let c = by_site.get(v.site.as_str()).unwrap_or(&empty);
            (k.clone(), place(k, c))
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
