//! Maglev figures for `deploy/bench.sh`: table build time for M = 65537 with N = 100 and
//! 1,000 backends, and the fraction of flows (slots) that move when 1 of N backends is removed,
//! each next to a baseline measured in the same run: a plain `hash mod N` table (what a naive
//! balancer does), and the ideal 1/N.

use std::time::Instant;

use sf_core::maglev;

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

fn main() {
    let m = maglev::DEFAULT_TABLE_SIZE;
    println!("figure,value,baseline,ratio");
    for n in [100usize, 1000] {
        let ns = names(n);
        let b: Vec<(&str, u32)> = ns.iter().map(|x| (x.as_str(), 1)).collect();
        let t = median_ms(|| drop(maglev::build(&b, m)), 9);
        let base = median_ms(|| drop(modulo_table(n, m)), 9);
        println!(
            "maglev_build_ms_M{m}_N{n},{t:.2},{base:.3} (mod-N table),{:.1}",
            t / base.max(1e-6)
        );
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
