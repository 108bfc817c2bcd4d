//! FRR's view of the node's underlay BGP sessions, for the agent's status: [`parse_summary`]
//! turns `show bgp summary json` (every address family of the default VRF) into one typed
//! [`BgpSession`] per neighbor, and [`read_sessions`] asks bgpd on its vty socket with a short
//! timeout. Reading
//! is the caller's business to schedule off the reconcile loop; [`stabilize`] keeps values
//! that FRR recomputes on every read (the established time) from looking like a change.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sf_core::status::{BgpSession, PrefixCounts};

use crate::DeviceError;

/// How long one `show bgp summary json` may take before the read counts as failed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

const CMD: &str = "show bgp summary json";

/// One address family's block of the summary.
#[derive(Deserialize)]
struct Family {
    #[serde(default)]
    peers: BTreeMap<String, Peer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peer {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    remote_as: u32,
    #[serde(default)]
    state: String,
    #[serde(default)]
    peer_uptime_established_epoch: u64,
    #[serde(default)]
    pfx_rcd: u64,
    #[serde(default)]
    pfx_snt: u64,
}

/// Parses `show bgp summary json`: a map of address family to its summary. A neighbor that
/// appears in several families is one session (its state is the session's, the same in
/// each); its prefix counts are kept per family. Sorted by peer.
pub fn parse_summary(json: &str) -> Result<Vec<BgpSession>, DeviceError> {
    let parse_err = |detail: String| DeviceError::Parse {
        cmd: CMD.into(),
        detail,
    };
    // vtysh prints `{}` when bgpd has no instance; a family block without peers is fine.
    let families: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| parse_err(e.to_string()))?;
    let mut sessions: BTreeMap<String, BgpSession> = BTreeMap::new();
    for (af, block) in families {
        // Only objects with a "peers" map are address families; skip anything else FRR adds.
        if !block.get("peers").is_some_and(|p| p.is_object()) {
            continue;
        }
        let fam: Family =
            serde_json::from_value(block).map_err(|e| parse_err(format!("{af}: {e}")))?;
        for (name, p) in fam.peers {
            let s = sessions.entry(name.clone()).or_insert_with(|| BgpSession {
                peer: name,
                hostname: p.hostname.clone(),
                remote_as: p.remote_as,
                state: p.state.clone(),
                ..Default::default()
            });
            if s.established() {
                s.established_epoch = s.established_epoch.max(p.peer_uptime_established_epoch);
            }
            s.prefixes.insert(
                af.clone(),
                PrefixCounts {
                    received: p.pfx_rcd,
                    sent: p.pfx_snt,
                },
            );
        }
    }
    Ok(sessions.into_values().collect())
}

/// Reads the sessions of the FRR instance whose vty sockets are in `dir`.
/// Asks bgpd on its vty socket ([`crate::vty`]), as `vtysh -c` would, without a process.
pub async fn read_sessions(dir: &Path) -> Result<Vec<BgpSession>, DeviceError> {
    let out = crate::vty::command(dir, "bgpd", CMD, READ_TIMEOUT).await?;
    parse_summary(&out)
}

/// Carries the established time over from the previous read while a session stays
/// Established: FRR computes it as "now - uptime" on every read, so it moves by a second now
/// and then, which would otherwise look like a change of status.
pub fn stabilize(new: &mut [BgpSession], old: &[BgpSession]) {
    for s in new.iter_mut().filter(|s| s.established()) {
        if let Some(o) = old.iter().find(|o| o.peer == s.peer && o.established()) {
            if o.established_epoch.abs_diff(s.established_epoch) <= 2 {
                s.established_epoch = o.established_epoch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured in the lab (`deploy/lab.sh up`): hv1 with both leaves up, then with its leaf1
    /// link down, and leaf1 with its seven neighbors.
    const HV1: &str = include_str!("testdata/bgp-summary-hv1.json");
    const HV1_DOWN: &str = include_str!("testdata/bgp-summary-hv1-leaf1-down.json");
    const LEAF1: &str = include_str!("testdata/bgp-summary-leaf1.json");

    #[test]
    fn one_session_per_neighbor_with_prefixes_per_family() {
        let s = parse_summary(HV1).unwrap();
        let peers: Vec<&str> = s.iter().map(|s| s.peer.as_str()).collect();
        assert_eq!(peers, ["leaf1", "leaf2"]);
        let l1 = &s[0];
        assert_eq!(l1.hostname, "leaf1");
        assert_eq!(l1.remote_as, 65101);
        assert_eq!(l1.state, "Established");
        assert_eq!(l1.established_epoch, 1796565734);
        assert_eq!(
            l1.prefixes["ipv4Unicast"],
            PrefixCounts {
                received: 10,
                sent: 11
            }
        );
        assert_eq!(
            l1.prefixes["l2VpnEvpn"],
            PrefixCounts {
                received: 8,
                sent: 12
            }
        );
    }

    #[test]
    fn a_link_down_shows_idle_without_an_established_time() {
        let s = parse_summary(HV1_DOWN).unwrap();
        assert_eq!(s[0].peer, "leaf1");
        assert_eq!(s[0].state, "Idle");
        assert!(!s[0].established());
        assert_eq!(s[0].established_epoch, 0);
        assert_eq!(s[0].prefixes["ipv4Unicast"].received, 0);
        assert_eq!(s[1].state, "Established");
    }

    #[test]
    fn a_leaf_reports_every_neighbor() {
        let s = parse_summary(LEAF1).unwrap();
        let peers: Vec<&str> = s.iter().map(|s| s.peer.as_str()).collect();
        assert!(peers.contains(&"spine1") && peers.contains(&"hv1") && peers.contains(&"gw1"));
        assert!(s.iter().all(|s| s.established()), "{s:?}");
    }

    #[test]
    fn no_bgp_instance_is_no_session_and_garbage_is_an_error() {
        assert!(parse_summary("{}").unwrap().is_empty());
        assert!(matches!(
            parse_summary("% Unknown command"),
            Err(DeviceError::Parse { .. })
        ));
    }

    #[test]
    fn the_established_time_does_not_wobble() {
        let old = parse_summary(HV1).unwrap();
        let mut new = old.clone();
        new[0].established_epoch += 1;
        stabilize(&mut new, &old);
        assert_eq!(new, old);
        // A reconnect (a real new time) is kept.
        new[0].established_epoch += 60;
        stabilize(&mut new, &old);
        assert_eq!(new[0].established_epoch, old[0].established_epoch + 60);
    }
}
