//! The one reconcile loop of every agent, written once: **observe** the device, **plan**
//! (pure: desired + observed → ordered steps, plus the problems no step can fix), **execute**
//! (run the steps, count the changes, collect per-object errors). An agent's
//! `Dataplane::reconcile` is a short composition of [`Pass::converge`] calls over its own
//! observed and step types; the [`Pass`] it threads through becomes the
//! [`ReconcileReport`] at the end, where the typed [`ReconcileError`]s are rendered to the
//! strings the status carries.

use std::future::Future;

use sf_core::status::ReconcileReport;
use tracing::{info, warn};

use crate::DeviceError;

/// Where in a pass an error arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The desired state itself.
    Desired,
    /// Reading the device.
    Observe,
    /// Planning: a problem no step can fix (reported, not forced).
    Plan,
    /// Changing the device.
    Execute,
}

/// A per-object reconcile error. `object` names what could not be converged (a link set, a
/// VPC router, FRR, ...); the display is the text reported in the node's status.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The desired state has nothing this agent can act on.
    #[error("desired state has no underlay")]
    NoUnderlay,
    /// Reading `object` from the device failed: nothing was planned for it in this pass.
    #[error("observing {object}: {source}")]
    Observe {
        object: String,
        #[source]
        source: DeviceError,
    },
    /// A step on `object` failed (the failed command is in the source).
    #[error("{source}")]
    Step {
        object: String,
        /// The step, as [`Step::describe`] shows it.
        step: String,
        #[source]
        source: DeviceError,
    },
    /// `object` (FRR, the ACL table, ...) did not take its configuration as a whole.
    #[error("{object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: DeviceError,
    },
    /// A problem with `object` that arose at `stage` with only a text to show for it: the
    /// planners' "no step can fix this" findings, validation, helper subsystems.
    #[error("{detail}")]
    Problem {
        object: String,
        stage: Stage,
        detail: String,
    },
}

impl ReconcileError {
    /// A planner's or validator's finding about `object`.
    pub fn refused(object: impl Into<String>, detail: impl Into<String>) -> Self {
        ReconcileError::Problem {
            object: object.into(),
            stage: Stage::Plan,
            detail: detail.into(),
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            ReconcileError::NoUnderlay => Stage::Desired,
            ReconcileError::Observe { .. } => Stage::Observe,
            ReconcileError::Step { .. } | ReconcileError::Apply { .. } => Stage::Execute,
            ReconcileError::Problem { stage, .. } => *stage,
        }
    }

    pub fn object(&self) -> &str {
        match self {
            ReconcileError::NoUnderlay => "underlay",
            ReconcileError::Observe { object, .. }
            | ReconcileError::Step { object, .. }
            | ReconcileError::Apply { object, .. }
            | ReconcileError::Problem { object, .. } => object,
        }
    }
}

/// One planned change to the device.
pub trait Step: Sync {
    /// A one-line description for logs and errors (short even when the step carries a
    /// large payload, such as a whole nftables table).
    fn describe(&self) -> String;
    /// Makes the change.
    fn execute(&self) -> impl Future<Output = Result<(), DeviceError>> + Send;
}

/// What to do with the remaining steps of an object after one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Run them anyway: each step stands on its own (the L2 overlay, ports, routes).
    Continue,
    /// Skip them: later steps build on earlier ones (a VPC router).
    Stop,
}

/// A plan: the ordered steps and the problems no step can fix.
#[derive(Debug)]
pub struct Plan<S> {
    pub steps: Vec<S>,
    pub problems: Vec<String>,
}

impl<S> Plan<S> {
    pub fn new(steps: Vec<S>, problems: Vec<String>) -> Self {
        Plan { steps, problems }
    }
}

/// Outcome of converging one object.
#[derive(Debug)]
pub struct Converged<O> {
    /// What was observed (None when observation failed).
    pub observed: Option<O>,
    /// Observed, no planning problem and every step succeeded.
    pub clean: bool,
}

/// The changes and errors of one reconcile pass, accumulated stage by stage.
#[derive(Debug, Default)]
pub struct Pass {
    pub changes: usize,
    pub errors: Vec<ReconcileError>,
}

impl Pass {
    pub fn error(&mut self, e: ReconcileError) {
        self.errors.push(e);
    }

    /// Planner or validator findings about `object`.
    pub fn refused(&mut self, object: &str, problems: impl IntoIterator<Item = String>) {
        self.errors.extend(
            problems
                .into_iter()
                .map(|d| ReconcileError::refused(object, d)),
        );
    }

    /// Records the outcome of applying `object` as a whole: `Ok(true)` is one change.
    pub fn applied(&mut self, object: &str, r: Result<bool, DeviceError>) {
        match r {
            Ok(true) => self.changes += 1,
            Ok(false) => {}
            Err(source) => self.error(ReconcileError::Apply {
                object: object.into(),
                source,
            }),
        }
    }

    /// Observes `object`; a failure is recorded and yields None.
    pub async fn observe<O>(
        &mut self,
        object: &str,
        observe: impl Future<Output = Result<O, DeviceError>>,
    ) -> Option<O> {
        match observe.await {
            Ok(o) => Some(o),
            Err(source) => {
                self.error(ReconcileError::Observe {
                    object: object.into(),
                    source,
                });
                None
            }
        }
    }

    /// Runs `steps` in order, counting each success as a change; returns whether all ran.
    pub async fn execute<S: Step>(
        &mut self,
        object: &str,
        steps: &[S],
        on_failure: OnFailure,
    ) -> bool {
        let mut all = true;
        for step in steps {
            let ok = self.record(object, step, step.execute().await);
            all &= ok;
            if !ok && on_failure == OnFailure::Stop {
                break;
            }
        }
        all
    }

    /// Records the outcome of one step run elsewhere (e.g. in a batch): a success is one
    /// change, a failure a typed error. Returns whether it succeeded.
    pub fn record<S: Step>(
        &mut self,
        object: &str,
        step: &S,
        outcome: Result<(), DeviceError>,
    ) -> bool {
        self.record_described(object, step.describe(), outcome)
    }

    /// [`Pass::record`] for an action that is not a [`Step`] (one only a batch executor
    /// can run), given its description.
    pub fn record_described(
        &mut self,
        object: &str,
        step: String,
        outcome: Result<(), DeviceError>,
    ) -> bool {
        match outcome {
            Ok(()) => {
                info!(object, action = %step, "applied");
                self.changes += 1;
                true
            }
            Err(source) => {
                warn!(object, action = %step, error = %source, "action failed");
                self.error(ReconcileError::Step {
                    object: object.into(),
                    step,
                    source,
                });
                false
            }
        }
    }

    /// Observe → plan → execute for one object. The planner is pure; its problems are
    /// reported and its steps still run (they converge what can be converged).
    pub async fn converge<O, S: Step>(
        &mut self,
        object: &str,
        observe: impl Future<Output = Result<O, DeviceError>>,
        plan: impl FnOnce(&O) -> Plan<S>,
        on_failure: OnFailure,
    ) -> Converged<O> {
        let Some(observed) = self.observe(object, observe).await else {
            return Converged {
                observed: None,
                clean: false,
            };
        };
        let p = plan(&observed);
        let planned_ok = p.problems.is_empty();
        self.refused(object, p.problems);
        let ran = self.execute(object, &p.steps, on_failure).await;
        Converged {
            observed: Some(observed),
            clean: planned_ok && ran,
        }
    }

    /// The report for the runtime: errors rendered to the text the status carries.
    pub fn into_report(self) -> ReconcileReport {
        ReconcileReport {
            changes: self.changes,
            errors: self.errors.iter().map(|e| e.to_string()).collect(),
        }
    }
}

impl From<Pass> for ReconcileReport {
    fn from(p: Pass) -> Self {
        p.into_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug)]
    struct Fake(bool);
    impl Step for Fake {
        fn describe(&self) -> String {
            format!("{self:?}")
        }
        async fn execute(&self) -> Result<(), DeviceError> {
            RUNS.fetch_add(1, Ordering::SeqCst);
            if self.0 {
                Ok(())
            } else {
                Err(DeviceError::Command {
                    cmd: "ip link set dev x up".into(),
                    stderr: "boom".into(),
                })
            }
        }
    }

    fn failed() -> DeviceError {
        DeviceError::Command {
            cmd: "ip -j -d link show".into(),
            stderr: "nope".into(),
        }
    }

    #[tokio::test]
    async fn observe_plan_execute_counts_changes_and_types_errors() {
        RUNS.store(0, Ordering::SeqCst);
        let mut pass = Pass::default();
        let c = pass
            .converge(
                "links",
                async { Ok::<_, DeviceError>(3) },
                |n: &i32| {
                    Plan::new(
                        vec![Fake(true), Fake(false), Fake(true)],
                        vec![format!("{n} is odd")],
                    )
                },
                OnFailure::Continue,
            )
            .await;
        assert_eq!(c.observed, Some(3));
        assert!(!c.clean);
        assert_eq!(RUNS.load(Ordering::SeqCst), 3);
        assert_eq!(pass.changes, 2);
        assert_eq!(pass.errors.len(), 2);
        assert_eq!(pass.errors[0].stage(), Stage::Plan);
        assert_eq!(pass.errors[1].stage(), Stage::Execute);
        assert_eq!(pass.errors[1].object(), "links");
        // Stop: the steps after a failure do not run.
        let ran = pass
            .execute("vpc 7", &[Fake(false), Fake(true)], OnFailure::Stop)
            .await;
        assert!(!ran);
        assert_eq!(RUNS.load(Ordering::SeqCst), 4);
        // A failed observation plans nothing.
        let c = pass
            .converge(
                "blackhole routes",
                async { Err::<i32, _>(failed()) },
                |_| -> Plan<Fake> { unreachable!() },
                OnFailure::Continue,
            )
            .await;
        assert!(c.observed.is_none() && !c.clean);
        let report = pass.into_report();
        assert_eq!(report.changes, 2);
        assert_eq!(
            report.errors,
            vec![
                "3 is odd".to_string(),
                "`ip link set dev x up` failed: boom".into(),
                "`ip link set dev x up` failed: boom".into(),
                "observing blackhole routes: `ip -j -d link show` failed: nope".into(),
            ]
        );
    }

    #[test]
    fn applied_counts_one_change_or_one_error() {
        let mut pass = Pass::default();
        pass.applied("FRR", Ok(false));
        pass.applied("FRR", Ok(true));
        pass.applied("FRR", Err(DeviceError::Verify("missing line".into())));
        assert_eq!(pass.changes, 1);
        assert_eq!(
            pass.into_report().errors,
            vec!["FRR: FRR did not take the configuration: missing line".to_string()]
        );
    }
}
