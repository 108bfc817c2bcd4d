//! The node's underlay BGP sessions for its status, read from FRR every [`PERIOD`] by a task
//! of their own: a slow or hung vtysh never holds up a reconcile pass, and the loop only takes
//! the latest read from a `watch`, which changes only when a session's state (or the read's
//! error) does.

use std::path::PathBuf;
use std::time::Duration;

use sf_core::status::BgpSession;
use sf_linux::frr_status;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often FRR is asked: state changes reach the status within this (and the status
/// flush), and a fleet's worth of vtysh processes stays negligible.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The latest read: the sessions, or why they could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpRead {
    pub sessions: Vec<BgpSession>,
    pub error: String,
}

/// Starts the reader when the agent knows its FRR instance; the receiver stays at an empty
/// read otherwise.
pub fn spawn(frr_dir: Option<PathBuf>) -> watch::Receiver<BgpRead> {
    let (tx, rx) = watch::channel(BgpRead::default());
    match frr_dir {
        Some(dir) => tokio::spawn(run(dir, tx)),
        // Held open, so the loop's `changed()` waits instead of failing at once.
        None => tokio::spawn(async move { tx.closed().await }),
    };
    rx
}

async fn run(dir: PathBuf, tx: watch::Sender<BgpRead>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        tick.tick().await;
        let next = match frr_status::read_sessions(&dir).await {
            Ok(mut sessions) => {
                frr_status::stabilize(&mut sessions, &tx.borrow().sessions);
                BgpRead {
                    sessions,
                    error: String::new(),
                }
            }
            Err(e) => BgpRead {
                sessions: Vec::new(),
                error: e.to_string(),
            },
        };
        tx.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            log_change(cur, &next);
            *cur = next;
            true
        });
    }
}

/// Logs what an operator looks for: sessions changing state, and FRR becoming unreadable.
fn log_change(old: &BgpRead, new: &BgpRead) {
    if new.error != old.error && !new.error.is_empty() {
        warn!(error = %new.error, "cannot read the BGP sessions");
    }
    for s in &new.sessions {
        let before = old.sessions.iter().find(|o| o.peer == s.peer);
        if before.is_none_or(|o| o.state != s.state) {
            info!(peer = %s.peer, state = %s.state, "BGP session state");
        }
    }
}
