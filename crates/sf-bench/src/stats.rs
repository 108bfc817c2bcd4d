//! Percentiles and the figure rows every benchmark prints (`figure,value,baseline,ratio`).

use std::time::Duration;

/// The q-quantile (0..=1) of `v` by nearest rank; 0 for an empty set.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One output row. `baseline` says what it is next to the number.
pub fn row(figure: &str, value: f64, baseline: f64, what: &str) {
    let ratio = if baseline > 0.0 {
        format!("{:.2}", value / baseline)
    } else {
        "n/a".into()
    };
    println!("{figure},{value:.1},{baseline:.1} ({what}),{ratio}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
