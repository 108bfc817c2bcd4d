//! Wiring of an agent: the Sync client, the lease keeper and the level-triggered reconcile
//! loop, which runs on every desired-state change, on every resync tick, and immediately on
//! start from the on-disk cache (before the coordinator answers). It never flushes the
//! dataplane: it only converges it to the desired state it has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sf_core::desired::NodeDesired;
use sf_core::status::AgentStatus;
use sf_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

use crate::cache::{Cache, Cached};
use crate::config::AgentArgs;
use crate::sync::SyncShared;
use crate::{Dataplane, LeaseState, ReconcileContext};

/// How often the kernel's rule counters are read for /metrics.
const RULE_COUNTERS_EVERY: Duration = Duration::from_secs(10);

/// Monotonic counters reported in status.
#[derive(Default)]
pub struct Counters(Mutex<BTreeMap<String, u64>>);

impl Counters {
    pub fn incr(&self, name: &str) {
        *self.0.lock().unwrap().entry(name.to_string()).or_default() += 1;
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files (the gateway's fence.log) get text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run<D: Dataplane>(
    args: AgentArgs,
    role: &'static str,
    mut dataplane: D,
) -> anyhow::Result<()> {
    anyhow::ensure!(!args.coordinator.is_empty(), "--coordinator is required");
    if args.once {
        println!("{}", crate::sync::once(&args).await?);
        return Ok(());
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let cache = Cache::new(&args.state_dir);
    let cached = cache.load().unwrap_or_default();
    let initial = (!cached.desired.objects.is_empty() || cached.applied_revision > 0)
        .then(|| cached.desired.clone());
    if initial.is_some() {
        info!(
            revision = cached.desired.revision,
            "enforcing cached desired state until the coordinator answers"
        );
    }
    let (desired_tx, mut desired_rx) = watch::channel(initial);
    let (applied_tx, applied_rx) =
        watch::channel((cached.applied_revision, cached.applied_digest.clone()));
    let (ack_tx, ack_rx) = mpsc::channel::<pb::Ack>(64);
    let counters = Arc::new(Counters::default());
    let mut status = AgentStatus {
        node: args.node.clone(),
        role: role.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        applied_revision: cached.applied_revision,
        applied_digest: cached.applied_digest.clone(),
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());

    let mut registry = sf_metrics::MetricsRegistry::default();
    let metrics = sf_metrics::AgentMetrics::register(&mut registry);
    if let Some(addr) = args.metrics_listen {
        let m = metrics.clone();
        sf_metrics::serve(
            addr,
            Arc::new(registry),
            // Healthy while the node holds its lease: what placement and failover rely on.
            Arc::new(move || m.lease_up.get() == 1),
        )
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    }
    let shared_fresh = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resync_request = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(SyncShared {
        resync: resync_request.clone(),
        fresh: shared_fresh.clone(),
        node: args.node.clone(),
        desired_tx,
        applied_rx,
        acks: tokio::sync::Mutex::new(ack_rx),
        counters: counters.clone(),
        raw: Default::default(),
        stamp: Default::default(),
        metrics: metrics.clone(),
    });
    let stamps = shared.clone();
    let node_span = info_span!("agent", node = %args.node, role);
    tokio::spawn(crate::sync::run(args.clone(), shared).instrument(node_span.clone()));
    let health = Arc::new(Mutex::new(crate::lease::LeaseHealth {
        last_renewed: None,
        continuous: false,
        generation: 0,
    }));
    tokio::spawn(
        crate::lease::run(args.clone(), status_rx, counters.clone(), health.clone())
            .instrument(node_span.clone()),
    );
    let ttl = crate::lease::ttl_of(&args);
    // Generation of the lease session in which the coordinator last sent us state.
    let mut fresh_generation: Option<u64> = None;
    let mut last_lease = LeaseState::Unknown;
    let mut last_generation = 0u64;
    let mut last_measured = 0u64;
    let mut last_counters = std::time::Instant::now() - RULE_COUNTERS_EVERY;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_secs.max(1)));
    let mut observe = tokio::time::interval(Duration::from_secs(3));
    let mut applied: Cached = cached;
    desired_rx.mark_changed();
    let wake = dataplane.wakeup();
    loop {
        let mut pass = false;
        tokio::select! {
            changed = desired_rx.changed() => {
                if changed.is_err() { break; }
                pass = true;
            }
            _ = resync.tick() => { pass = true; }
            _ = observe.tick() => {}
            _ = async {
                match &wake {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => { pass = true; }
            _ = term.recv() => { info!("SIGTERM: stopping (dataplane left as is)"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping (dataplane left as is)"); break; }
        }
        // Whichever branch woke us, state the coordinator delivered since the last pass is
        // fresh for the current lease generation (select! picks among ready branches at
        // random, so this must not depend on the desired-change branch winning).
        if shared_fresh.swap(false, std::sync::atomic::Ordering::SeqCst) {
            fresh_generation = Some(health.lock().unwrap().generation);
            pass = true;
        }
        let (lease, generation) = {
            let h = health.lock().unwrap();
            (h.state(ttl), h.generation)
        };
        if generation != last_generation {
            last_generation = generation;
            if lease == (LeaseState::Held { continuous: false }) {
                // The coordinator may have moved our exclusive services while we had no
                // lease: only state it sends from now on may bring them back.
                resync_request.notify_one();
            }
        }
        metrics
            .lease_up
            .set(matches!(lease, LeaseState::Held { .. }) as i64);
        if lease != last_lease {
            info!(?lease, "lease state changed");
            // Standing down (or taking back up) must not wait for the next resync.
            pass = true;
            last_lease = lease;
        }
        let ctx = ReconcileContext {
            lease,
            fresh: matches!(lease, LeaseState::Held { continuous: true })
                || fresh_generation == Some(generation),
        };
        let observed: BTreeSet<u32> = dataplane.observed_vnis().await;
        // Rule counters for /metrics (only when served), at most every RULE_COUNTERS_EVERY:
        // reading them costs an nft process per VPC router on a gateway.
        if args.metrics_listen.is_some() && last_counters.elapsed() >= RULE_COUNTERS_EVERY {
            metrics.rules.replace(dataplane.rule_counters().await);
            last_counters = std::time::Instant::now();
        }
        let lbs = dataplane.lb_status().await;
        let dcs = dataplane.dc_status().await;
        let lbs_changed = lbs != status.load_balancers || dcs != status.direct_connects;
        status.load_balancers = lbs;
        status.direct_connects = dcs;
        let mut changed_status = observed != status.observed_vnis || lbs_changed;
        status.observed_vnis = observed;
        let desired: Option<NodeDesired> = desired_rx.borrow_and_update().clone();
        if let (true, Some(desired)) = (pass, desired) {
            let span = info_span!(parent: &node_span, "reconcile", revision = desired.revision);
            let report = dataplane.reconcile(&desired, &ctx).instrument(span).await;
            counters.incr("reconciles");
            metrics.reconciles.inc();
            metrics.desired_objects.set(desired.objects.len() as i64);
            let digest = desired.digest();
            if report.errors.is_empty() {
                // Intent-to-dataplane latency, once per revision, from the coordinator's stamp.
                let (rev, stamp) = *stamps.stamp.lock().expect("stamp lock");
                if rev == desired.revision && stamp > 0 && rev != last_measured {
                    metrics
                        .intent_to_dataplane
                        .observe(sf_metrics::seconds_since(stamp));
                    last_measured = rev;
                }
                metrics.applied_revision.set(desired.revision as i64);
                status.applied_revision = desired.revision;
                status.applied_digest = digest.clone();
                applied_tx.send_replace((desired.revision, digest.clone()));
                applied.applied_revision = desired.revision;
                applied.applied_digest = digest.clone();
            } else {
                metrics.reconcile_errors.inc();
                counters.incr("reconcile_errors");
                warn!(errors = ?report.errors, "reconcile finished with errors");
            }
            if report.changes > 0 {
                info!(
                    changes = report.changes,
                    revision = desired.revision,
                    "dataplane converged"
                );
            }
            applied.desired = desired.clone();
            if let Err(e) = cache.store(&applied) {
                warn!(error = %e, "cannot write the desired-state cache");
            }
            status.errors = report.errors.clone();
            let _ = ack_tx.try_send(pb::Ack {
                revision: desired.revision,
                digest,
                errors: report.errors,
            });
            changed_status = true;
        }
        let counts = counters.snapshot();
        if changed_status || counts != status.counters {
            status.counters = counts;
            status.reported_at_ms = now_ms();
            status_tx.send_replace(status.clone());
        }
    }
    Ok(())
}
