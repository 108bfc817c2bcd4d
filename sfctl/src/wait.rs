//! Commands that keep talking after their first answer: `--wait` polls fleet status until
//! every live node has applied a write, and `status --watch` prints the fleet status again
//! whenever it changes.
use std::time::{Duration, Instant};

use sf_proto::v1::{Empty, FleetStatus};

use crate::client::Client;
use crate::output::{self, Fmt};

/// `--wait` gave up: the nodes named had not applied the write in time (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("--wait: after {waited_s} s not applied by {}: {}", pending.len(), pending.join(", "))]
pub struct WaitTimeout {
    pub waited_s: u64,
    pub pending: Vec<String>,
}

/// How often fleet status is polled while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Which live nodes have not yet applied revision `rev`: all of them while the answering
/// replica's index is older than `rev` (its desired states may predate the write); otherwise
/// each live node that is not in sync. A node is in sync when its applied digest is its
/// desired state's, which at or past `rev` includes the write, or was not changed by it.
/// Nodes whose lease is down are not waited for (`down`).
pub fn pending(s: &FleetStatus, rev: u64) -> (Vec<String>, Vec<String>) {
    let (live, down): (Vec<_>, Vec<_>) = s.nodes.iter().partition(|n| n.lease == "up");
    let behind = s.intent_revision < rev;
    let waiting = live
        .iter()
        .filter(|n| behind || !n.in_sync)
        .map(|n| n.name.clone())
        .collect();
    (waiting, down.iter().map(|n| n.name.clone()).collect())
}

/// Polls fleet status until every live node applied `rev`, at most `limit`.
pub async fn until_applied(c: &mut Client, rev: u64, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let s = c.get_fleet_status(Empty {}).await?.into_inner();
        let (waiting, down) = pending(&s, rev);
        if waiting.is_empty() {
            let live = s.nodes.len() - down.len();
            eprintln!(
                "applied by all {live} live nodes (revision {rev}, {:.1} s)",
                start.elapsed().as_secs_f64()
            );
            if !down.is_empty() {
                eprintln!("not waited for (lease down): {}", down.join(", "));
            }
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(WaitTimeout {
                waited_s: limit.as_secs(),
                pending: waiting,
            }
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the fleet status again (after a blank line) each time it renders differently;
/// runs until interrupted or the coordinator fails.
pub async fn watch_status(
    c: &mut Client,
    fmt: Fmt,
    every: Duration,
    first: String,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut last = first;
    loop {
        tokio::time::sleep(every).await;
        let s = c.get_fleet_status(Empty {}).await?.into_inner();
        let text = output::fleet(fmt, &s);
        if text != last {
            print!("\n{text}");
            std::io::stdout().flush()?;
            last = text;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_proto::v1::NodeStatus;

    fn node(name: &str, lease: &str, in_sync: bool) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            lease: lease.into(),
            in_sync,
            ..Default::default()
        }
    }

    #[test]
    fn waits_for_live_nodes_out_of_sync_and_for_a_replica_behind() {
        let mut s = FleetStatus {
            intent_revision: 50,
            nodes: vec![
                node("hv1", "up", true),
                node("hv2", "up", false),
                node("gw9", "down", false),
            ],
            ..Default::default()
        };
        assert_eq!(pending(&s, 50), (vec!["hv2".into()], vec!["gw9".into()]));
        s.nodes[1].in_sync = true;
        assert_eq!(pending(&s, 50), (vec![], vec!["gw9".into()]));
        // A replica whose index has not reached the write knows nothing of it yet.
        assert_eq!(pending(&s, 51).0, vec!["hv1", "hv2"]);
    }

    #[test]
    fn the_timeout_names_the_nodes() {
        let e = WaitTimeout {
            waited_s: 5,
            pending: vec!["hv1".into(), "hv2".into()],
        };
        assert_eq!(
            e.to_string(),
            "--wait: after 5 s not applied by 2: hv1, hv2"
        );
    }
}
