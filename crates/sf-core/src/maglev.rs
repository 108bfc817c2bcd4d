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
pub fn build(backends: &[(&str, u32)], m: u32) -> Vec<u32> {
    assert!(is_prime(m), "Maglev table size must be prime, got {m}");
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
    if order.is_empty() {
        return Vec::new();
    }
    // Name order makes the result independent of the caller's order.
    order.sort_by(|&a, &b| backends[a].0.cmp(backends[b].0));
    let m64 = m as u64;
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let (h1, h2) = hashes(backends[i].0);
            (h1 % m64, h2 % (m64 - 1) + 1)
        })
        .collect();
    let max_w = order
        .iter()
        .map(|&i| backends[i].1)
        .max()
        .expect("non-empty") as u64;
    let mut next = vec![0u64; order.len()];
    let mut credit = vec![0u64; order.len()];
    const NONE: u32 = u32::MAX;
    let mut table = vec![NONE; m as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
            // Fractional turns: a backend takes a turn each time its credit reaches max_w.
            credit[k] += backends[i].1 as u64;
            if credit[k] < max_w {
                continue;
            }
            credit[k] -= max_w;
            let (offset, skip) = perm[k];
            loop {
                let slot = ((offset + next[k] * skip) % m64) as usize;
                next[k] += 1;
                if table[slot] == NONE {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m64 {
                break 'fill;
            }
        }
    }
    table
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

    #[test]
    fn prime_check() {
        assert!(is_prime(65_537) && is_prime(251) && !is_prime(65_536) && !is_prime(1));
    }
}
