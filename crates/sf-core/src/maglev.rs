//! Maglev consistent hashing (Eisenbud et al., NSDI'16, §3.4), pure and deterministic.
//!
//! Each backend gets a permutation of the table's `m` slots from its *name* (never from its
//! position in a list): `offset = h1(name) mod m`, `skip = h2(name) mod (m-1) + 1`, slot j of
//! the permutation is `(offset + j·skip) mod m`; `m` must be prime so every permutation covers
//! every slot. Backends take turns, in name order, claiming their next unclaimed preferred
//! slot until the table is full. Weights are honoured by giving each backend turns in
//! proportion to its weight (a backend of weight w claims w slots per w_max rounds, credited
//! fractionally), which keeps the per-backend share proportional. Because inputs are sorted
//! and hashed by name, every gateway computes the identical table; removing one backend of N
//! changes about 1/N of the slots (measured in `deploy/bench.sh`).

use sha2::{Digest, Sha256};

/// Default table size: prime, and > 100 × backends for up to 655 backends.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

fn hashes(name: &str) -> (u64, u64) {
    let d = Sha256::digest(name.as_bytes());
    let h1 = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
    let h2 = u64::from_be_bytes(d[8..16].try_into().expect("8 bytes"));
    (h1, h2)
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2u64;
    while i * i <= n as u64 {
        if (n as u64).is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

/// Builds the lookup table: `table[slot]` is an index into `backends` (which the caller passes
/// in any order; the result refers to the caller's indices). `backends` are (name, weight);
/// zero-weight backends get no slot. Returns an empty table when no backend has weight.
///
/// The permutations are walked lazily (each backend's next preferred slot is its previous one
/// plus `skip`, wrapped once: no division per probe), and which slots are taken is kept in a
/// bitmap (8 KiB for 65,537 slots, in L1 cache) apart from the table itself; the last √m
/// slots are found by arithmetic instead of probing (see phase 2 below). The result is
/// the same table, slot for slot, as the paper's formula `(offset + j·skip) mod m`; the tests
/// pin it with digests computed by the first (division per probe) implementation.
pub fn build(backends: &[(&str, u32)], m: u32) -> Vec<u32> {
    assert!(is_prime(m), "Maglev table size must be prime, got {m}");
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
    if order.is_empty() {
        return Vec::new();
    }
    // Name order makes the result independent of the caller's order.
    order.sort_by(|&a, &b| backends[a].0.cmp(backends[b].0));
    let m64 = m as u64;
    // Per backend, in turn order: next preferred slot, skip, weight, credit, caller's index.
    struct Walk {
        pos: u64,
        skip: u64,
        weight: u64,
        credit: u64,
        index: u32,
    }
    let mut walks: Vec<Walk> = order
        .iter()
        .map(|&i| {
            let (h1, h2) = hashes(backends[i].0);
            Walk {
                pos: h1 % m64,
                skip: h2 % (m64 - 1) + 1,
                weight: backends[i].1 as u64,
                credit: 0,
                index: i as u32,
            }
        })
        .collect();
    let max_w = walks.iter().map(|w| w.weight).max().expect("non-empty");
    let uniform = walks.iter().all(|w| w.weight == max_w);
    // A power-of-two length lets the index be masked (no bounds check per probe).
    let mut taken = vec![0u64; (m as usize).div_ceil(64).next_power_of_two()];
    let mask = taken.len() - 1;
    let mut table = vec![0u32; m as usize];
    let mut left = m64;
    // Claims the next free preferred slot of `w`; returns whether the table is now full.
    // Two probes per step on two independent chains (`pos` and `pos + skip`, each advanced
    // by 2·skip), so the add-and-wrap latency is paid once per two probes. The wrap is
    // branch-free: it is a coin toss per probe (skip is uniform in 1..m), which a branch
    // would mispredict half of the time.
    let wrap = |p: u64| -> u64 {
        let q = p.wrapping_sub(m64);
        if (q as i64) < 0 {
            p
        } else {
            q
        }
    };
    let claim = |w: &mut Walk, taken: &mut [u64], table: &mut [u32], left: &mut u64| -> bool {
        let skip2 = wrap(w.skip + w.skip);
        let mut a = w.pos;
        let mut b = wrap(a + w.skip);
        let slot = loop {
            let (wa, ba) = ((a as usize / 64) & mask, 1u64 << (a % 64));
            if taken[wa] & ba == 0 {
                w.pos = b;
                break a;
            }
            let (wb, bb) = ((b as usize / 64) & mask, 1u64 << (b % 64));
            if taken[wb] & bb == 0 {
                w.pos = wrap(a + skip2);
                break b;
            }
            a = wrap(a + skip2);
            b = wrap(b + skip2);
        };
        taken[slot as usize / 64] |= 1u64 << (slot % 64);
        table[slot as usize] = w.index;
        *left -= 1;
        *left == 0
    };
    // Fractional turns: a backend takes a turn each time its credit reaches max_w.
    let takes_turn = |w: &mut Walk| -> bool {
        if uniform {
            return true;
        }
        w.credit += w.weight;
        if w.credit < max_w {
            return false;
        }
        w.credit -= max_w;
        true
    };
    // Phase 1, probing, until only `late` ≈ √m slots are free. Probing costs m/F probes per
    // claim with F slots free, so most probes of a plain fill fall in its last few slots.
    let late = (m as f64).sqrt() as u64;
    let n = walks.len();
    let mut k = 0;
    while left > late {
        if takes_turn(&mut walks[k]) && claim(&mut walks[k], &mut taken, &mut table, &mut left) {
            return table;
        }
        k = if k + 1 == n { 0 } else { k + 1 };
    }
    if left == 0 {
        return table;
    }
    // Phase 2: the next slot a backend would probe to is, among the free slots, the one
    // earliest in its permutation: the free slot s with the least (s - pos)·skip⁻¹ mod m
    // (its distance from `pos` in steps of `skip`). One scan of the F free slots per claim
    // (F ≤ √m) instead of m/F probes. Same claims, same table.
    // The free slots, read a word of the bitmap at a time (~1,000 words, not 65,537 bits).
    let mut free: Vec<u32> = Vec::with_capacity(left as usize);
    for (i, &word) in taken.iter().enumerate().take((m as usize).div_ceil(64)) {
        let mut open = !word;
        while open != 0 {
            let s = i as u32 * 64 + open.trailing_zeros();
            if s >= m {
                break;
            }
            free.push(s);
            open &= open - 1;
        }
    }
    let modm = Barrett::new(m64);
    let mut inv = vec![0u64; n];
    loop {
        let w = &mut walks[k];
        if takes_turn(w) {
            if inv[k] == 0 {
                inv[k] = modm.pow(w.skip, m64 - 2);
            }
            let (pos, iv) = (w.pos, inv[k]);
            let mut best = (u64::MAX, 0usize);
            for (i, &s) in free.iter().enumerate() {
                let d = modm.mul(wrap(s as u64 + m64 - pos), iv);
                if d < best.0 {
                    best = (d, i);
                }
            }
            let slot = free.swap_remove(best.1);
            table[slot as usize] = w.index;
            if free.is_empty() {
                return table;
            }
        }
        k = if k + 1 == n { 0 } else { k + 1 };
    }
}

/// Multiplication modulo a fixed `m` < 2³² without a division (Barrett reduction).
struct Barrett {
    m: u64,
    r: u64,
}

impl Barrett {
    fn new(m: u64) -> Self {
        Barrett { m, r: u64::MAX / m }
    }
    /// `a·b mod m` for `a, b < m`.
    fn mul(&self, a: u64, b: u64) -> u64 {
        let x = a * b;
        let q = ((x as u128 * self.r as u128) >> 64) as u64;
        let mut rem = x - q * self.m;
        while rem >= self.m {
            rem -= self.m;
        }
        rem
    }
    fn pow(&self, mut base: u64, mut e: u64) -> u64 {
        let mut acc = 1 % self.m;
        while e > 0 {
            if e & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        acc
    }
}

/// Short digest of a table expressed in backend names, for comparing gateways.
pub fn digest(table: &[u32], names: &[&str]) -> String {
    let mut h = Sha256::new();
    for &i in table {
        h.update(names[i as usize].as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The slots whose backend differs between two tables of the same size, in slot order;
/// each table is read through its own backend list (`old[s]` indexes `old_ids`), so tables
/// built from different backend sets compare by backend identity, not by index. `None` when
/// the sizes differ (an empty table, no backend, is size 0): then nothing can be kept.
/// What a health flip must rewrite in an installed table: about 1/N of the slots.
pub fn changed_slots<T: PartialEq>(
    old: &[u32],
    old_ids: &[T],
    new: &[u32],
    new_ids: &[T],
) -> Option<Vec<u32>> {
    if old.len() != new.len() {
        return None;
    }
    let changed = old
        .iter()
        .zip(new)
        .enumerate()
        .filter(|(_, (&o, &n))| old_ids[o as usize] != new_ids[n as usize])
        .map(|(slot, _)| slot as u32)
        .collect();
    Some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1))
            .collect()
    }

    #[test]
    fn table_is_full_and_balanced() {
        let ns = names(10);
        let b: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 1)).collect();
        let t = build(&b, 65_537);
        assert_eq!(t.len(), 65_537);
        let mut count = vec![0usize; 10];
        for &i in &t {
            count[i as usize] += 1;
        }
        let ideal = 65_537 / 10;
        for c in count {
            assert!(
                c.abs_diff(ideal) <= ideal / 100 + 1,
                "share {c} vs ideal {ideal}"
            );
        }
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let ns = names(7);
        let fwd: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 1)).collect();
        let rev: Vec<(&str, u32)> = ns.iter().rev().map(|n| (n.as_str(), 1)).collect();
        let a = build(&fwd, 251);
        let b = build(&rev, 251);
        let by_name = |t: &[u32], v: &[(&str, u32)]| -> Vec<String> {
            t.iter().map(|&i| v[i as usize].0.to_string()).collect()
        };
        assert_eq!(by_name(&a, &fwd), by_name(&b, &rev));
        let fwd_names: Vec<&str> = fwd.iter().map(|x| x.0).collect();
        let rev_names: Vec<&str> = rev.iter().map(|x| x.0).collect();
        assert_eq!(digest(&a, &fwd_names), digest(&b, &rev_names));
    }

    #[test]
    fn removing_one_backend_moves_little_more_than_its_share() {
        let ns = names(20);
        let all: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 1)).collect();
        let fewer: Vec<(&str, u32)> = all.iter().filter(|b| b.0 != ns[5]).cloned().collect();
        let m = 65_537;
        let a = build(&all, m);
        let b = build(&fewer, m);
        let moved = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| all[**x as usize].0 != fewer[**y as usize].0)
            .count();
        let ideal = m as usize / 20;
        // Slots of the removed backend must move (ideal); Maglev moves only slightly more.
        assert!(moved >= ideal - ideal / 50, "moved {moved}, ideal {ideal}");
        assert!(
            moved <= ideal * 2,
            "moved {moved} is far above the ideal {ideal}"
        );
    }

    #[test]
    fn weights_are_honoured() {
        let b = [("a:80", 1), ("b:80", 3)];
        let t = build(&b, 10_007);
        let heavy = t.iter().filter(|&&i| i == 1).count() as f64 / t.len() as f64;
        assert!(
            (heavy - 0.75).abs() < 0.01,
            "weight-3 backend holds {heavy}"
        );
        assert!(build(&[("a:80", 0)], 13).is_empty());
    }

    /// Tables are part of the fabric's contract: every gateway, of any version, must compute
    /// the same one, or connections move when a gateway takes over. These digests were
    /// computed by the first implementation (one division per probe, `table[slot]` as the
    /// taken marker); a change here changes every deployed table.
    #[test]
    fn tables_are_pinned_across_versions() {
        let golden = [
            (3usize, 65_537u32, "b5f91225f1462f69", "e06721bea7b9e387"),
            (10, 251, "cfc9e9eeb6bd8b51", "6c7d7ca594f49ae5"),
            (1000, 65_537, "7a50ce4b1c97173c", "c4ee308f58218524"),
            (7, 655_373, "bb829447a74c0dc2", "603a2a8671e09ee7"),
        ];
        for (n, m, weighted, equal) in golden {
            let ns: Vec<String> = (0..n)
                .map(|i| format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256))
                .collect();
            let names: Vec<&str> = ns.iter().map(|x| x.as_str()).collect();
            let w: Vec<(&str, u32)> = ns
                .iter()
                .enumerate()
                .map(|(i, x)| (x.as_str(), (i % 3) as u32 + 1))
                .collect();
            assert_eq!(
                digest(&build(&w, m), &names),
                weighted,
                "N={n} M={m} weighted"
            );
            let e: Vec<(&str, u32)> = ns.iter().map(|x| (x.as_str(), 1)).collect();
            assert_eq!(digest(&build(&e, m), &names), equal, "N={n} M={m}");
        }
    }

    #[test]
    fn changed_slots_compare_by_identity_and_are_about_one_nth() {
        let ns = names(10);
        let all: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 1)).collect();
        let nine: Vec<(&str, u32)> = all.iter().copied().filter(|b| b.0 != ns[4]).collect();
        let (t10, t9) = (build(&all, 65_537), build(&nine, 65_537));
        let ids10: Vec<&str> = all.iter().map(|b| b.0).collect();
        let ids9: Vec<&str> = nine.iter().map(|b| b.0).collect();
        let down = changed_slots(&t10, &ids10, &t9, &ids9).unwrap();
        // Indices shift when a backend leaves the list: an index comparison would see most
        // slots change; by identity it is the leaver's share plus Maglev's small disruption.
        let share = t10.iter().filter(|&&i| ids10[i as usize] == ns[4]).count();
        assert!(
            down.len() >= share && down.len() < share * 13 / 10,
            "{} vs {share}",
            down.len()
        );
        for &s in &down {
            assert_ne!(
                ids10[t10[s as usize] as usize],
                ids9[t9[s as usize] as usize]
            );
        }
        assert!(down.windows(2).all(|w| w[0] < w[1]), "slot order");
        // Every slot outside the list keeps its backend.
        let moved: std::collections::BTreeSet<u32> = down.iter().copied().collect();
        for s in (0..65_537u32).filter(|s| !moved.contains(s)) {
            assert_eq!(
                ids10[t10[s as usize] as usize],
                ids9[t9[s as usize] as usize]
            );
        }
        // Coming back changes the same slots.
        assert_eq!(changed_slots(&t9, &ids9, &t10, &ids10).unwrap(), down);
        assert_eq!(
            changed_slots(&t10, &ids10, &t10, &ids10).unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(changed_slots(&t10, &ids10, &[], &ids9), None);
        assert_eq!(changed_slots(&t10, &ids10, &build(&all, 251), &ids10), None);
    }

    #[test]
    fn prime_check() {
        assert!(is_prime(65_537) && is_prime(251) && !is_prime(65_536) && !is_prime(1));
    }
}
