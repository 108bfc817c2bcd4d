//! Intent-to-ack latency over time, per node role, for the console's chart: each time a
//! node's agent acks a newer revision without error, the time from the coordinator's stamp
//! of that revision to the ack is one sample (the figure `sf_coordinator_intent_to_ack_seconds`
//! counts in buckets; here it is kept as samples so p50/p99 are exact per window).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::fabric::Fabric;

/// Width of one point of the chart.
pub const WINDOW_MS: u64 = 10_000;
/// How far back the chart goes.
pub const SPAN_MS: u64 = 10 * 60 * 1000;
/// Samples kept at most.
const MAX_SAMPLES: usize = 20_000;
/// How often acks are looked at.
const POLL: Duration = Duration::from_millis(250);

/// One sample: when the ack came (ms since the epoch), the node's role, and the latency (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub role: String,
    pub ms: f64,
}

/// One point of a role's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Start of the window (ms since the epoch).
    pub t: u64,
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

pub struct Latency {
    fabric: Arc<Fabric>,
    inner: Mutex<(HashMap<String, u64>, VecDeque<Sample>)>,
}

impl Latency {
    pub fn new(fabric: Arc<Fabric>) -> Self {
        Latency {
            fabric,
            inner: Mutex::new(Default::default()),
        }
    }

    /// Samples acks until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            self.poll();
        }
    }

    fn poll(&self) {
        let nodes: Vec<(String, String)> = self.fabric.with_view(|v, _| {
            v.intent
                .nodes
                .values()
                .map(|n| (n.name.clone(), n.role.as_str().to_string()))
                .collect()
        });
        let mut inner = self.inner.lock().unwrap();
        let (last, samples) = &mut *inner;
        for (name, role) in nodes {
            let Some(a) = self.fabric.ack_of(&name) else {
                continue;
            };
            let seen = last.insert(name, a.applied_revision);
            // The first ack seen is not timed: it may be long past.
            if seen.is_none_or(|s| s >= a.applied_revision) || a.acked_at_ms == 0 {
                continue;
            }
            let stamp = self.fabric.stamp_of(a.applied_revision);
            if stamp == 0 || a.acked_at_ms < stamp {
                continue;
            }
            samples.push_back(Sample {
                at_ms: a.acked_at_ms,
                role,
                ms: (a.acked_at_ms - stamp) as f64,
            });
            if samples.len() > MAX_SAMPLES {
                samples.pop_front();
            }
        }
    }

    /// p50/p99 per role and window over the last [`SPAN_MS`].
    pub fn series(&self, now_ms: u64) -> BTreeMap<String, Vec<Point>> {
        let inner = self.inner.lock().unwrap();
        series(inner.1.iter(), now_ms)
    }
}

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Groups samples into [`WINDOW_MS`] windows of the last [`SPAN_MS`] before `now_ms`.
pub fn series<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    now_ms: u64,
) -> BTreeMap<String, Vec<Point>> {
    let from = now_ms.saturating_sub(SPAN_MS);
    let mut windows: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
    for s in samples.filter(|s| s.at_ms >= from) {
        let t = s.at_ms - s.at_ms % WINDOW_MS;
        windows.entry((s.role.clone(), t)).or_default().push(s.ms);
    }
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for ((role, t), mut v) in windows {
        v.sort_by(f64::total_cmp);
        out.entry(role).or_default().push(Point {
            t,
            p50: quantile(&v, 0.5),
            p99: quantile(&v, 0.99),
            n: v.len(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: u64, role: &str, ms: f64) -> Sample {
        Sample {
            at_ms,
            role: role.into(),
            ms,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn samples_group_by_role_and_window_within_the_span() {
        let now = 1_000_000_000;
        let old = now - SPAN_MS - 1;
        let samples = [
            s(old, "hypervisor", 999.0),
            s(now - 5, "hypervisor", 10.0),
            s(now - 4, "hypervisor", 30.0),
            s(now - 3, "gateway", 20.0),
        ];
        let out = series(samples.iter(), now);
        let hv = &out["hypervisor"];
        assert_eq!(hv.len(), 1, "the sample older than the span is left out");
        assert_eq!((hv[0].p50, hv[0].p99, hv[0].n), (10.0, 30.0, 2));
        assert_eq!(hv[0].t % WINDOW_MS, 0);
        assert_eq!(out["gateway"][0].n, 1);
    }
}
