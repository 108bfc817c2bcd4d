//! Maglev figures for `deploy/bench.sh`: table build time for M = 65537 with N = 100 and
//! 1,000 backends, and the fraction of flows (slots) that move when 1 of N backends is removed,
//! each next to a baseline measured in the same run: the first implementation of the build
//! (kept here only, as the baseline: one division per probe, the table itself as the taken
//! marker; it must give the identical table, checked below), a plain `hash mod N` table
//! (what a naive balancer does), and the ideal 1/N.
//!
//! `--smoke`: N = 3 and 100 only, few repetitions (seconds), for `deploy/test.sh`.

use std::time::Instant;

use sf_core::maglev;
use sha2::{Digest, Sha256};

/// The first implementation of `maglev::build` (2026-11), the baseline.
fn build_v1(backends: &[(&str, u32)], m: u32) -> Vec<u32> {
    let hashes = |name: &str| -> (u64, u64) {
        let d = Sha256::digest(name.as_bytes());
        let h1 = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
        let h2 = u64::from_be_bytes(d[8..16].try_into().expect("8 bytes"));
        (h1, h2)
    };
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
    if order.is_empty() {
        return Vec::new();
    }
    order.sort_by(|&a, &b| backends[a].0.cmp(backends[b].0));
    let m64 = m as u64;
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let (h1, h2) = hashes(backends[i].0);
            (h1 % m64, h2 % (m64 - 1) + 1)
        })
        .collect();
    let max_w = order.iter().map(|&i| backends[i].1).max().unwrap() as u64;
    let mut next = vec![0u64; order.len()];
    let mut credit = vec![0u64; order.len()];
    const NONE: u32 = u32::MAX;
    let mut table = vec![NONE; m as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
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

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Baseline table: slot s -> backend (s mod N) after sorting, i.e. hash-mod-N balancing.
fn modulo_table(n: usize, m: u32) -> Vec<u32> {
    (0..m).map(|s| (s as usize % n) as u32).collect()
}

/// Medians of `runs` timings of `a` and `b`, run alternately (a busy machine slows both alike).
fn paired_median_ms(mut a: impl FnMut(), mut b: impl FnMut(), runs: usize) -> (f64, f64) {
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        a();
        va.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        b();
        vb.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for v in [&mut va, &mut vb] {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
    }
    (va[runs / 2], vb[runs / 2])
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let m = maglev::DEFAULT_TABLE_SIZE;
    let runs = if smoke { 5 } else { 31 };
    println!("figure,value,baseline,ratio");
    let sizes: &[usize] = if smoke { &[3, 100] } else { &[100, 1000] };
    for &n in sizes {
        let ns = names(n);
        let b: Vec<(&str, u32)> = ns.iter().map(|x| (x.as_str(), 1)).collect();
        // Same table as the first implementation, slot for slot (weighted too).
        let wb: Vec<(&str, u32)> = ns
            .iter()
            .enumerate()
            .map(|(i, x)| (x.as_str(), (i % 3) as u32 + 1))
            .collect();
        if maglev::build(&b, m) != build_v1(&b, m) || maglev::build(&wb, m) != build_v1(&wb, m) {
            eprintln!("maglev::build differs from the first implementation at N = {n}");
            std::process::exit(1);
        }
        let (t, v1) = paired_median_ms(
            || drop(maglev::build(&b, m)),
            || drop(build_v1(&b, m)),
            runs,
        );
        let base = median_ms(|| drop(modulo_table(n, m)), runs);
        println!(
            "maglev_build_ms_M{m}_N{n},{t:.2},{v1:.2} (first implementation; identical table),{:.2}",
            t / v1.max(1e-6)
        );
        println!(
            "maglev_build_ms_M{m}_N{n}_vs_modN,{t:.2},{base:.3} (mod-N table),{:.1}",
            t / base.max(1e-6)
        );
        if n < 10 {
            continue;
        }
        // Remove backend n/2: how many slots change owner?
        let gone = &ns[n / 2];
        let fewer: Vec<(&str, u32)> = b.iter().filter(|x| x.0 != gone).cloned().collect();
        let a = maglev::build(&b, m);
        let c = maglev::build(&fewer, m);
        let moved = a
            .iter()
            .zip(&c)
            .filter(|(x, y)| b[**x as usize].0 != fewer[**y as usize].0)
            .count() as f64
            / m as f64;
        // mod-N: the same removal renumbers backends, moving almost every flow.
        let ma = modulo_table(n, m);
        let mc = modulo_table(n - 1, m);
        let fewer_names: Vec<&String> = ns.iter().filter(|x| *x != gone).collect();
        let mod_moved = ma
            .iter()
            .zip(&mc)
            .filter(|(x, y)| &ns[**x as usize] != fewer_names[**y as usize])
            .count() as f64
            / m as f64;
        let ideal = 1.0 / n as f64;
        println!(
            "maglev_moved_fraction_remove_1_of_{n},{moved:.5},{ideal:.5} (ideal 1/N),{:.2}",
            moved / ideal
        );
        println!(
            "modN_moved_fraction_remove_1_of_{n},{mod_moved:.5},{ideal:.5} (ideal 1/N),{:.2}",
            mod_moved / ideal
        );
    }
}
