//! Wiring of an agent and its level-triggered reconcile loop. Three tasks talk over channels
//! only: the sync client (`crate::sync`) delivers desired states on a `watch` and takes acks
//! on an `mpsc`; the lease task (`crate::lease`) publishes the lease's health on a `watch` and
//! reports the status the loop publishes; the loop ([`Reconciler`]) runs a pass on every
//! delivered change, on every resync tick, on a dataplane wakeup and at once on start from the
//! on-disk cache (before the coordinator answers). It never flushes the dataplane: it only
//! converges it to the desired state it has.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sf_core::status::AgentStatus;
use sf_metrics::PassTrigger;
use sf_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{info, info_span, warn, Instrument, Span};

use crate::cache::{Cache, Cached};
use crate::config::AgentArgs;
use crate::lease::LeaseHealth;
use crate::sync::{Deliver, Delivered, Origin, SyncLink};
use crate::{Counters, Dataplane, LeaseState, ReconcileContext};

/// The kernel's rule counters are read when /metrics is scraped, at most this often (a
/// scrape within it gets the last reading): on a gateway a reading is a rule dump per VPC
/// router, so scrapers that poll fast, or several of them, cannot multiply that cost.
const RULE_COUNTERS_EVERY: Duration = Duration::from_secs(10);
/// How long a scrape waits for the reconcile loop to read the counters (it may be in a long
/// pass); after that the scrape is answered with the last reading.
const SCRAPE_WAIT: Duration = Duration::from_secs(2);

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
    dataplane: D,
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
    let (scrape_tx, scrapes) = mpsc::channel(4);
    let metrics = serve_metrics(&args, scrape_tx).await?;
    let counters = Arc::new(Counters::default());
    let node_span = info_span!("agent", node = %args.node, role);

    let initial = (!cached.desired.objects.is_empty() || cached.applied_revision > 0).then(|| {
        info!(
            revision = cached.desired.revision,
            "enforcing cached desired state until the coordinator answers"
        );
        Delivered {
            desired: cached.desired.clone(),
            origin: Origin::Cache,
            intent_time_ms: 0,
            seq: 0,
        }
    });
    let (deliveries_tx, deliveries) = watch::channel(initial);
    let (applied_tx, applied_rx) =
        watch::channel((cached.applied_revision, cached.applied_digest.clone()));
    let (ack_tx, acks) = mpsc::channel::<pb::Ack>(64);
    let resync = Arc::new(Notify::new());
    let link = SyncLink {
        deliver: Deliver {
            node: args.node.clone(),
            tx: deliveries_tx,
            counters: counters.clone(),
            metrics: metrics.clone(),
        },
        applied: applied_rx,
        acks,
        resync: resync.clone(),
    };
    tokio::spawn(crate::sync::run(args.clone(), link).instrument(node_span.clone()));

    let status = AgentStatus {
        node: args.node.clone(),
        role: role.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        applied_revision: cached.applied_revision,
        applied_digest: cached.applied_digest.clone(),
        ..Default::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (health_tx, health) = watch::channel(LeaseHealth::default());
    let bgp = crate::bgp::spawn(args.bgp_status_frr_dir.clone());
    tokio::spawn(
        crate::lease::run(args.clone(), status_rx, counters.clone(), health_tx)
            .instrument(node_span.clone()),
    );

    Reconciler {
        ttl: crate::lease::ttl_of(&args),
        args,
        dataplane,
        cache,
        applied: cached,
        deliveries,
        applied_tx,
        ack_tx,
        resync,
        health,
        bgp,
        status,
        status_tx,
        counters,
        metrics,
        span: node_span,
        handled: None,
        fresh_generation: None,
        last_lease: LeaseState::Unknown,
        last_generation: 0,
        last_measured: 0,
        last_rule_counters: Instant::now() - RULE_COUNTERS_EVERY,
        scrapes,
    }
    .run()
    .await
}

/// Serves /metrics when `--metrics-listen` is given; the metrics exist either way. Each
/// scrape first asks the reconcile loop, through `scrapes`, to refresh the rule counters.
async fn serve_metrics(
    args: &AgentArgs,
    scrapes: mpsc::Sender<oneshot::Sender<()>>,
) -> anyhow::Result<sf_metrics::AgentMetrics> {
    let mut registry = sf_metrics::MetricsRegistry::default();
    let metrics = sf_metrics::AgentMetrics::register(&mut registry);
    metrics.rules.set_detail(args.rule_metrics.clone());
    sf_metrics::set_cert_expiry(&metrics.cert_expiry, &args.tls_cert);
    if let Some(addr) = args.metrics_listen {
        let m = metrics.clone();
        sf_metrics::serve(
            addr,
            Arc::new(registry),
            // Healthy while the node holds its lease: what placement and failover rely on.
            Arc::new(move || m.lease_up.get() == 1),
            Some(scrape_refresh(scrapes)),
        )
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    }
    Ok(metrics)
}

/// The /metrics hook: asks the loop for fresh rule counters and waits at most SCRAPE_WAIT.
fn scrape_refresh(scrapes: mpsc::Sender<oneshot::Sender<()>>) -> sf_metrics::Refresh {
    Arc::new(move || {
        let scrapes = scrapes.clone();
        Box::pin(async move {
            let (done, read) = oneshot::channel();
            // Full: scrapes are already waiting for a reading; this one shares it.
            let _ = scrapes.try_send(done);
            let _ = tokio::time::timeout(SCRAPE_WAIT, read).await;
        })
    })
}

/// The reconcile loop and what it remembers between passes.
struct Reconciler<D> {
    args: AgentArgs,
    ttl: Duration,
    dataplane: D,
    cache: Cache,
    /// What the disk cache holds: the last desired state and the last clean apply.
    applied: Cached,
    deliveries: watch::Receiver<Option<Delivered>>,
    applied_tx: watch::Sender<(u64, String)>,
    ack_tx: mpsc::Sender<pb::Ack>,
    /// Asks the sync client for a fresh snapshot.
    resync: Arc<Notify>,
    health: watch::Receiver<LeaseHealth>,
    /// The latest read of the underlay BGP sessions (`crate::bgp`).
    bgp: watch::Receiver<crate::bgp::BgpRead>,
    status: AgentStatus,
    status_tx: watch::Sender<AgentStatus>,
    counters: Arc<Counters>,
    metrics: sf_metrics::AgentMetrics,
    span: Span,
    /// The delivery (its `seq`) the last pass took.
    handled: Option<u64>,
    /// Generation of the lease session in which the coordinator last delivered state.
    fresh_generation: Option<u64>,
    last_lease: LeaseState,
    last_generation: u64,
    /// The last revision whose intent-to-dataplane latency was measured.
    last_measured: u64,
    last_rule_counters: Instant,
    /// Scrapes of /metrics waiting for the rule counters.
    scrapes: mpsc::Receiver<oneshot::Sender<()>>,
}

/// A periodic tick that, after the loop was busy past one or more ticks (a long pass),
/// fires once and then keeps its period from there. Tokio's default fires every missed tick at
/// once: after a 10-minute first programming of 1,000 VPC routers a gateway then ran ~20 full
/// resync passes back to back, each as long as the last (a pass every ~6.5 s at idle, for
/// minutes), instead of one every 30 s.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits for `n`'s notification; forever without a notifier.
async fn notified(n: &Option<Arc<Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

impl<D: Dataplane> Reconciler<D> {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut resync = ticker(Duration::from_secs(self.args.resync_secs.max(1)));
        let mut observe = ticker(Duration::from_secs(3));
        let wake = self.dataplane.wakeup();
        let status_wake = self.dataplane.status_wakeup();
        let mut bgp_open = true;
        self.deliveries.mark_changed();
        loop {
            let mut pass = None;
            tokio::select! {
                changed = self.deliveries.changed() => {
                    if changed.is_err() { break; }
                    pass = Some(PassTrigger::Delivery);
                }
                _ = resync.tick() => { pass = Some(PassTrigger::Resync); }
                _ = observe.tick() => {}
                // A BGP session changed state: report it now, not at the next observe tick.
                changed = self.bgp.changed(), if bgp_open => {
                    bgp_open = changed.is_ok();
                }
                _ = notified(&wake) => { pass = Some(PassTrigger::Wakeup); }
                Some(done) = self.scrapes.recv() => {
                    self.read_rule_counters().await;
                    let _ = done.send(());
                    continue;
                }
                // Only the report changed: observe and publish, no pass.
                _ = notified(&status_wake) => {}
                _ = term.recv() => { info!("SIGTERM: stopping (dataplane left as is)"); break; }
                _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping (dataplane left as is)"); break; }
            }
            self.pass(pass).await;
        }
        Ok(())
    }

    /// One pass: take what was delivered, judge the lease, observe the device, reconcile when
    /// anything asked for it (`wanted`, a delivery or a lease change), publish the status.
    async fn pass(&mut self, wanted: Option<PassTrigger>) {
        // Whichever select! branch woke us (it picks among ready branches at random), a state
        // delivered since the last pass counts: from the coordinator, it is fresh for the
        // current lease generation. Told apart by number, not by the watch's "seen" mark,
        // which `changed()` already cleared when that branch woke us.
        let current = self.deliveries.borrow_and_update().clone();
        let seq = current.as_ref().map(|d| d.seq);
        let delivered = seq != self.handled;
        self.handled = seq;
        let from_coordinator = current
            .as_ref()
            .is_some_and(|d| d.origin == Origin::Coordinator);
        let (ctx, lease_moved) = self.lease_context(delivered && from_coordinator);
        let mut changed_status = self.observe().await;
        let trigger = match (wanted, delivered, lease_moved) {
            (Some(t), _, _) => Some(t),
            (None, true, _) => Some(PassTrigger::Delivery),
            (None, false, true) => Some(PassTrigger::Lease),
            (None, false, false) => None,
        };
        if let (Some(trigger), Some(d)) = (trigger, current) {
            self.metrics.count_pass(trigger);
            self.reconcile(&d, &ctx).await;
            changed_status = true;
        }
        self.publish_status(changed_status);
    }

    /// The lease as the dataplane must see it, and whether it changed since the last pass.
    fn lease_context(&mut self, fresh_delivery: bool) -> (ReconcileContext, bool) {
        let h = *self.health.borrow();
        let (lease, generation) = (h.state(self.ttl), h.generation);
        if fresh_delivery {
            self.fresh_generation = Some(generation);
        }
        if generation != self.last_generation {
            self.last_generation = generation;
            if lease == (LeaseState::Held { continuous: false }) {
                // The coordinator may have moved our exclusive services while we had no
                // lease: only state it sends from now on may bring them back.
                self.resync.notify_one();
            }
        }
        self.metrics
            .lease_up
            .set(matches!(lease, LeaseState::Held { .. }) as i64);
        let moved = lease != self.last_lease;
        if moved {
            // Standing down (or taking back up) must not wait for the next resync.
            info!(?lease, "lease state changed");
            self.last_lease = lease;
        }
        let ctx = ReconcileContext {
            lease,
            fresh: matches!(lease, LeaseState::Held { continuous: true })
                || self.fresh_generation == Some(generation),
        };
        (ctx, moved)
    }

    /// Reads what the device shows outside the desired state (foreign VNIs, LB and Direct
    /// Connect status, rule counters); true when the status changed.
    async fn observe(&mut self) -> bool {
        let observed: BTreeSet<u32> = self.dataplane.observed_vnis().await;
        let lbs = self.dataplane.lb_status().await;
        let dcs = self.dataplane.dc_status().await;
        let failover = self.dataplane.failover_status().await;
        let bgp = self.bgp.borrow_and_update().clone();
        let status = &mut self.status;
        let changed = observed != status.observed_vnis
            || lbs != status.load_balancers
            || dcs != status.direct_connects
            || failover != status.failover
            || bgp.sessions != status.bgp_sessions
            || bgp.error != status.bgp_error;
        if bgp.sessions != status.bgp_sessions {
            self.metrics
                .set_bgp_states(bgp.sessions.iter().map(|s| s.state.as_str()));
        }
        status.bgp_sessions = bgp.sessions;
        status.bgp_error = bgp.error;
        status.observed_vnis = observed;
        status.load_balancers = lbs;
        status.direct_connects = dcs;
        status.failover = failover;
        changed
    }

    /// Reads the kernel's rule counters for a scrape, unless the last reading is recent.
    async fn read_rule_counters(&mut self) {
        if self.last_rule_counters.elapsed() >= RULE_COUNTERS_EVERY {
            self.metrics
                .rules
                .replace(self.dataplane.rule_counters().await);
            self.last_rule_counters = Instant::now();
        }
    }

    /// Converges the device to `d`, then records, caches and acks the outcome.
    async fn reconcile(&mut self, d: &Delivered, ctx: &ReconcileContext) {
        let desired = &d.desired;
        self.metrics.desired_revision.set(desired.revision as i64);
        let span = info_span!(parent: &self.span, "reconcile", revision = desired.revision);
        let report = self
            .dataplane
            .reconcile(desired, ctx)
            .instrument(span)
            .await;
        self.counters.incr("reconciles");
        self.metrics.reconciles.inc();
        self.metrics
            .desired_objects
            .set(desired.objects.len() as i64);
        let digest = desired.digest();
        if report.errors.is_empty() {
            self.applied_cleanly(d, &digest);
        } else {
            self.metrics.reconcile_errors.inc();
            self.counters.incr("reconcile_errors");
            warn!(errors = ?report.errors, "reconcile finished with errors");
        }
        if report.changes > 0 {
            info!(
                changes = report.changes,
                revision = desired.revision,
                "dataplane converged"
            );
        }
        self.applied.desired = desired.clone();
        if let Err(e) = self.cache.store(&self.applied) {
            warn!(error = %e, "cannot write the desired-state cache");
        }
        self.status.errors = report.errors.clone();
        let _ = self.ack_tx.try_send(pb::Ack {
            revision: desired.revision,
            digest,
            errors: report.errors,
        });
    }

    /// Records a pass without errors: the applied revision and digest (the next hello's),
    /// and the intent-to-dataplane latency, once per revision, from the coordinator's stamp.
    fn applied_cleanly(&mut self, d: &Delivered, digest: &str) {
        let rev = d.desired.revision;
        if d.intent_time_ms > 0 && rev != self.last_measured {
            self.metrics
                .intent_to_dataplane
                .observe(sf_metrics::seconds_since(d.intent_time_ms));
            self.last_measured = rev;
        }
        self.metrics.applied_revision.set(rev as i64);
        self.status.applied_revision = rev;
        self.status.applied_digest = digest.to_string();
        self.applied_tx.send_replace((rev, digest.to_string()));
        self.applied.applied_revision = rev;
        self.applied.applied_digest = digest.to_string();
    }

    /// Hands the status to the lease task when it or the counters changed.
    fn publish_status(&mut self, changed: bool) {
        let counts = self.counters.snapshot();
        if changed || counts != self.status.counters {
            self.status.counters = counts;
            self.status.reported_at_ms = now_ms();
            self.status_tx.send_replace(self.status.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use sf_core::desired::NodeDesired;
    use sf_core::status::FailoverStatus;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A dataplane that counts its passes and reports the failover status a test sets.
    #[derive(Clone, Default)]
    struct Counting {
        passes: Arc<AtomicUsize>,
        failover: Arc<Mutex<FailoverStatus>>,
        wake: Arc<Notify>,
        status_wake: Arc<Notify>,
        counter_reads: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Dataplane for Counting {
        async fn reconcile(
            &mut self,
            _: &NodeDesired,
            _: &ReconcileContext,
        ) -> crate::ReconcileReport {
            self.passes.fetch_add(1, Ordering::SeqCst);
            crate::ReconcileReport::default()
        }
        async fn failover_status(&mut self) -> FailoverStatus {
            self.failover.lock().unwrap().clone()
        }
        fn wakeup(&self) -> Option<Arc<Notify>> {
            Some(self.wake.clone())
        }
        fn status_wakeup(&self) -> Option<Arc<Notify>> {
            Some(self.status_wake.clone())
        }
        async fn rule_counters(&mut self) -> Vec<sf_metrics::RuleSample> {
            self.counter_reads.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        }
    }

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        agent: AgentArgs,
    }

    /// A loop over `dp` with one desired state delivered and /metrics configured; returns its
    /// status receiver and its scrape hook.
    fn start(
        dp: Counting,
        dir: &std::path::Path,
    ) -> (watch::Receiver<AgentStatus>, sf_metrics::Refresh) {
        let args = Args::parse_from([
            "t",
            "--node=n1",
            "--metrics-listen=127.0.0.1:0",
            "--coordinator=https://127.0.0.1:1",
            "--tls-cert=c",
            "--tls-key=k",
            "--tls-ca=a",
            &format!("--state-dir={}", dir.display()),
        ])
        .agent;
        let delivered = Delivered {
            desired: NodeDesired::default(),
            origin: Origin::Coordinator,
            intent_time_ms: 0,
            seq: 1,
        };
        let (deliveries_tx, deliveries) = watch::channel(Some(delivered));
        let (applied_tx, _) = watch::channel((0, String::new()));
        let (ack_tx, _acks) = mpsc::channel(64);
        let (status_tx, status_rx) = watch::channel(AgentStatus::default());
        let (_health_tx, health) = watch::channel(LeaseHealth::default());
        let (_bgp_tx, bgp) = watch::channel(crate::bgp::BgpRead::default());
        let mut registry = sf_metrics::MetricsRegistry::default();
        let (scrape_tx, scrapes) = mpsc::channel(4);
        let r = Reconciler {
            ttl: Duration::from_secs(6),
            cache: Cache::new(dir),
            args,
            dataplane: dp,
            applied: Cached::default(),
            deliveries,
            applied_tx,
            ack_tx,
            resync: Arc::new(Notify::new()),
            health,
            bgp,
            status: AgentStatus::default(),
            status_tx,
            counters: Arc::new(Counters::default()),
            metrics: sf_metrics::AgentMetrics::register(&mut registry),
            span: Span::none(),
            handled: None,
            fresh_generation: None,
            last_lease: LeaseState::Unknown,
            last_generation: 0,
            last_measured: 0,
            last_rule_counters: Instant::now() - RULE_COUNTERS_EVERY,
            scrapes,
        };
        tokio::spawn(async move {
            // Keeps the senders alive as long as the loop.
            let _keep = (deliveries_tx, _health_tx, _bgp_tx, _acks);
            r.run().await
        });
        (status_rx, scrape_refresh(scrape_tx))
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// A status-only wakeup (a gateway seeing one more VPC served elsewhere) publishes the new
    /// status without a reconcile pass; the dataplane's pass wakeup still makes one.
    #[tokio::test]
    async fn a_status_only_wakeup_reports_without_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let dp = Counting::default();
        let (mut status, _) = start(dp.clone(), dir.path());
        settle().await;
        // The delivered state (and the resync ticker's first, immediate tick).
        let start = dp.passes.load(Ordering::SeqCst);
        assert!(start >= 1);

        dp.failover
            .lock()
            .unwrap()
            .seen_elsewhere
            .insert("t/v1".into());
        status.borrow_and_update();
        dp.status_wake.notify_one();
        settle().await;
        assert!(status.has_changed().unwrap(), "status published at once");
        assert!(status.borrow().failover.seen_elsewhere.contains("t/v1"));
        assert_eq!(
            dp.passes.load(Ordering::SeqCst),
            start,
            "no pass for a report"
        );

        dp.wake.notify_one();
        settle().await;
        assert_eq!(
            dp.passes.load(Ordering::SeqCst),
            start + 1,
            "a wakeup is a pass"
        );
    }

    /// The rule counters (a dump per VPC router on a gateway) are read when /metrics is
    /// scraped, at most once per RULE_COUNTERS_EVERY, and never by the loop on its own.
    #[tokio::test]
    async fn rule_counters_are_read_per_scrape_not_per_tick() {
        let dir = tempfile::tempdir().unwrap();
        let dp = Counting::default();
        let (_status, scrape) = start(dp.clone(), dir.path());
        settle().await;
        dp.wake.notify_one();
        settle().await;
        assert!(dp.passes.load(Ordering::SeqCst) >= 2);
        assert_eq!(dp.counter_reads.load(Ordering::SeqCst), 0, "nobody scraped");
        scrape().await;
        assert_eq!(
            dp.counter_reads.load(Ordering::SeqCst),
            1,
            "read for the scrape"
        );
        scrape().await;
        assert_eq!(
            dp.counter_reads.load(Ordering::SeqCst),
            1,
            "a second scrape within the period gets the last reading"
        );
    }

    /// Ticks ready at once after the loop was busy for `busy` (the first tick consumed).
    async fn ready_after_busy(busy: Duration) -> usize {
        let mut t = ticker(Duration::from_millis(40));
        t.tick().await;
        tokio::time::sleep(busy).await;
        let mut ready = 0;
        while tokio::time::timeout(Duration::from_millis(5), t.tick())
            .await
            .is_ok()
        {
            ready += 1;
            if ready > 10 {
                break;
            }
        }
        ready
    }

    #[tokio::test]
    async fn a_long_pass_is_followed_by_one_tick_not_a_burst() {
        // Busy for six periods: the default behaviour would fire ~6 ticks back to back.
        assert_eq!(ready_after_busy(Duration::from_millis(250)).await, 1);
    }
}
