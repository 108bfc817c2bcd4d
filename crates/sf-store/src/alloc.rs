//! The coordinator's index of allocated ids: which VNIs (networks and Direct Connect hand-offs)
//! and which VPC ids (per site) the view holds, kept up to date event by event by
//! [`crate::intent::ClusterView::apply`]. It answers "the lowest free id of a pool" and "is
//! this VNI taken" in O(log n), so creating a network or VPC costs the same with 100 or
//! 100,000 of them present (a scan of the whole intent per create cost 40-50 ms at 100,000).
//! The store's compare on each claim key stays the authority; this only picks candidates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;

use sf_core::event::{IntentEvent, Object, ObjectRef};
use sf_core::model::Intent;

/// A set of `u32` kept as maximal runs of consecutive members (start -> end, inclusive).
/// Allocation fills pools from the bottom, so a pool of 200,000 taken VNIs is one run and the
/// lowest free id is found in one lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSet {
    runs: BTreeMap<u32, u32>,
    len: usize,
}

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The run holding `id`, if any.
    fn run_of(&self, id: u32) -> Option<(u32, u32)> {
        self.runs
            .range(..=id)
            .next_back()
            .filter(|(_, &end)| end >= id)
            .map(|(&s, &e)| (s, e))
    }

    pub fn contains(&self, id: u32) -> bool {
        self.run_of(id).is_some()
    }

    /// Adds `id`, merging it with the runs it touches; returns whether it was new.
    pub fn insert(&mut self, id: u32) -> bool {
        if self.contains(id) {
            return false;
        }
        let mut start = id;
        let mut end = id;
        // A run ending just below joins from the left.
        if let Some((s, _)) = id.checked_sub(1).and_then(|below| self.run_of(below)) {
            start = s;
        }
        // A run starting just above joins from the right.
        if let Some(above) = id.checked_add(1) {
            if let Some(e) = self.runs.remove(&above) {
                end = e;
            }
        }
        self.runs.insert(start, end);
        self.len += 1;
        true
    }

    /// Removes `id`, splitting its run; returns whether it was present.
    pub fn remove(&mut self, id: u32) -> bool {
        let Some((s, e)) = self.run_of(id) else {
            return false;
        };
        self.runs.remove(&s);
        if s < id {
            self.runs.insert(s, id - 1);
        }
        if id < e {
            self.runs.insert(id + 1, e);
        }
        self.len -= 1;
        true
    }

    /// The lowest id of `range` that is neither in the set nor in `skip` (ids a caller
    /// already lost a race for). Each step jumps over a whole run.
    pub fn lowest_free(&self, range: &RangeInclusive<u32>, skip: &BTreeSet<u32>) -> Option<u32> {
        let mut id = *range.start();
        while range.contains(&id) {
            if let Some((_, end)) = self.run_of(id) {
                id = end.checked_add(1)?;
            } else if skip.contains(&id) {
                id = id.checked_add(1)?;
            } else {
                return Some(id);
            }
        }
        None
    }
}

impl FromIterator<u32> for IdSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut s = IdSet::new();
        for id in iter {
            s.insert(id);
        }
        s
    }
}

/// The allocated VNIs and VPC ids of a view.
#[derive(Debug, Clone, Default)]
pub struct AllocIndex {
    vnis: IdSet,
    /// How many objects hold each VNI: one, unless hand-edited intent gives two objects the
    /// same VNI (a VNI leaves `vnis` with its last holder). Counts, not the holders' keys: at
    /// 200,000 networks the keys cost ~40 MB, and only a refused create asks who holds a VNI.
    holders: HashMap<u32, u32>,
    /// VPC ids per site, with how many VPCs hold each (normally one).
    vpc_ids: BTreeMap<String, (IdSet, BTreeMap<u32, u32>)>,
}

impl AllocIndex {
    /// Every VNI in use (networks and Direct Connects).
    pub fn vnis(&self) -> &IdSet {
        &self.vnis
    }

    /// The VPC ids in use in `site`.
    pub fn vpc_ids(&self, site: &str) -> IdSet {
        self.vpc_ids
            .get(site)
            .map(|(s, _)| s.clone())
            .unwrap_or_default()
    }

    /// The lowest VPC id of `range` free in `site`.
    pub fn free_vpc_id(&self, site: &str, range: &RangeInclusive<u32>) -> Option<u32> {
        match self.vpc_ids.get(site) {
            Some((s, _)) => s.lowest_free(range, &BTreeSet::new()),
            None => Some(*range.start()).filter(|_| !range.is_empty()),
        }
    }

    /// The network holding `vni` in `intent` (the intent this index follows), if any: `None`
    /// at once for a free VNI (every create's check), a scan of the networks for a taken one
    /// (a create about to be refused, which names the holder).
    pub fn network_by_vni<'a>(
        &self,
        intent: &'a Intent,
        vni: u32,
    ) -> Option<&'a sf_core::model::Network> {
        if !self.vnis.contains(vni) {
            return None;
        }
        intent.network_by_vni(vni)
    }

    fn add_vni(&mut self, vni: u32) {
        *self.holders.entry(vni).or_default() += 1;
        self.vnis.insert(vni);
    }

    fn drop_vni(&mut self, vni: u32) {
        if let Some(c) = self.holders.get_mut(&vni) {
            *c -= 1;
            if *c == 0 {
                self.holders.remove(&vni);
                self.vnis.remove(vni);
            }
        }
    }

    fn add_vpc_id(&mut self, site: &str, id: u32) {
        let (set, counts) = self.vpc_ids.entry(site.to_string()).or_default();
        *counts.entry(id).or_default() += 1;
        set.insert(id);
    }

    fn drop_vpc_id(&mut self, site: &str, id: u32) {
        let Some((set, counts)) = self.vpc_ids.get_mut(site) else {
            return;
        };
        if let Some(c) = counts.get_mut(&id) {
            *c -= 1;
            if *c == 0 {
                counts.remove(&id);
                set.remove(id);
            }
        }
    }

    /// Follows `event`, which is about to be applied to `intent` (the old object is read from
    /// it, so this runs before the intent changes). A put whose object is not of its
    /// reference's kind changes nothing, as the intent refuses it too.
    pub fn follow(&mut self, intent: &Intent, event: &IntentEvent) {
        let (r, new) = match event {
            IntentEvent::Delete(r) => (r, None),
            IntentEvent::Put(r, o) => match (r, o) {
                (ObjectRef::Network(_), Object::Network(n)) => (r, Some(n.vni)),
                (ObjectRef::DirectConnect(_), Object::DirectConnect(d)) => (r, Some(d.vni)),
                (ObjectRef::Vpc(_), Object::Vpc(_)) => (r, None),
                _ => return,
            },
        };
        match r {
            ObjectRef::Network(k) => {
                if let Some(old) = intent.networks.get(k) {
                    self.drop_vni(old.vni);
                }
                if let Some(vni) = new {
                    self.add_vni(vni);
                }
            }
            ObjectRef::DirectConnect(k) => {
                if let Some(old) = intent.direct_connects.get(k) {
                    self.drop_vni(old.vni);
                }
                if let Some(vni) = new {
                    self.add_vni(vni);
                }
            }
            ObjectRef::Vpc(k) => {
                if let Some(old) = intent.vpcs.get(k) {
                    self.drop_vpc_id(&old.site, old.id);
                }
                if let IntentEvent::Put(_, Object::Vpc(v)) = event {
                    self.add_vpc_id(&v.site, v.id);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_and_split() {
        let mut s = IdSet::new();
        for id in [5, 7, 6, 1, 2] {
            assert!(s.insert(id));
        }
        assert!(!s.insert(6));
        assert_eq!(s.runs, BTreeMap::from([(1, 2), (5, 7)]));
        assert_eq!(s.len(), 5);
        assert!(s.remove(6));
        assert!(!s.remove(6));
        assert_eq!(s.runs, BTreeMap::from([(1, 2), (5, 5), (7, 7)]));
        assert!(s.contains(7) && !s.contains(6) && !s.contains(3));
        assert_eq!(s.len(), 4);
        s.insert(u32::MAX);
        s.insert(0);
        assert_eq!(s.runs.get(&0), Some(&2));
        assert!(s.contains(u32::MAX));
    }

    #[test]
    fn lowest_free_is_the_lowest_gap_of_the_range() {
        let s: IdSet = (10..=20).chain([22, 23]).collect();
        let none = BTreeSet::new();
        assert_eq!(s.lowest_free(&(1..=100), &none), Some(1));
        assert_eq!(s.lowest_free(&(10..=100), &none), Some(21));
        assert_eq!(s.lowest_free(&(10..=100), &BTreeSet::from([21])), Some(24));
        assert_eq!(s.lowest_free(&(10..=20), &none), None);
        assert_eq!(s.lowest_free(&(10..=21), &BTreeSet::from([21])), None);
        let full: IdSet = [u32::MAX].into_iter().collect();
        assert_eq!(full.lowest_free(&(u32::MAX..=u32::MAX), &none), None);
    }

    /// The index agrees with a brute-force scan of the intent after random creates, replaces
    /// and deletes (the linear scans it replaces are the reference).
    #[test]
    fn the_index_matches_a_scan_of_the_intent() {
        use sf_core::model::{Network, Vpc};
        let mut intent = Intent::default();
        let mut idx = AllocIndex::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..5000 {
            let (name, vni, id) = (format!("n{}", next(300)), next(400) as u32, next(50) as u32);
            let site = format!("s{}", next(3));
            let (nk, vk) = (
                sf_core::event::VpcChildRef::new("t", "v", &name),
                sf_core::event::VpcRef::new("t", &name),
            );
            let ev = match next(4) {
                0 => IntentEvent::Delete(ObjectRef::Network(nk)),
                1 => IntentEvent::Delete(ObjectRef::Vpc(vk)),
                2 => IntentEvent::Put(
                    ObjectRef::Vpc(vk),
                    Object::Vpc(Vpc {
                        ipv6_ranges: Vec::new(),
                        tenant: "t".into(),
                        name: name.clone(),
                        cidr: "10.0.0.0/16".parse().unwrap(),
                        site,
                        id,
                    }),
                ),
                _ => IntentEvent::Put(
                    ObjectRef::Network(nk),
                    Object::Network(Network {
                        ipv6_prefix: None,
                        tenant: "t".into(),
                        vpc: "v".into(),
                        name,
                        cidr: "10.0.1.0/24".parse().unwrap(),
                        vni,
                        gateway: "10.0.1.1".parse().unwrap(),
                    }),
                ),
            };
            idx.follow(&intent, &ev);
            intent.apply(ev).unwrap();
        }
        let used = intent.used_vnis();
        assert_eq!(idx.vnis().len(), used.len());
        for vni in 0..400 {
            assert_eq!(idx.vnis().contains(vni), used.contains(&vni), "vni {vni}");
            assert_eq!(
                idx.network_by_vni(&intent, vni).map(|n| n.key()),
                intent.network_by_vni(vni).map(|n| n.key())
            );
        }
        let pool = 0..=400;
        let lowest = pool.clone().find(|v| !used.contains(v));
        assert_eq!(idx.vnis().lowest_free(&pool, &BTreeSet::new()), lowest);
        for site in ["s0", "s1", "s2", "s9"] {
            let scan: BTreeSet<u32> = intent
                .vpcs
                .values()
                .filter(|v| v.site == site)
                .map(|v| v.id)
                .collect();
            let ids = idx.vpc_ids(site);
            assert_eq!(ids.len(), scan.len(), "site {site}");
            assert!(scan.iter().all(|&i| ids.contains(i)));
            let lowest = (1..=60).find(|i| !scan.contains(i));
            assert_eq!(idx.free_vpc_id(site, &(1..=60)), lowest);
        }
    }
}
