//! Linux device drivers shared by the agents: [`links`] observes and changes network links
//! through iproute2 (its JSON output for observation), [`frr`] renders FRR configuration from
//! desired state and applies it as a delta with FRR's own `frr-reload.py`, then verifies it;
//! [`l2`] plans and executes the CloudStack-compatible VXLAN/bridge layout of a VTEP host;
//! [`converge`] is the observe → plan → execute loop every agent's reconcile is made of;
//! [`netlink`] observes and changes links through rtnetlink sockets instead (the hypervisor's
//! executor of the [`l2`] plans).

pub mod acl;
pub mod blackhole;
pub mod converge;
pub mod frr;
pub mod frr_status;
pub mod l2;
pub mod links;
pub mod netlink;
pub mod nft_counters;
pub mod vty;

/// A failed device operation, with the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("`{cmd}` could not run: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected output of `{cmd}`: {detail}")]
    Parse { cmd: String, detail: String },
    #[error("FRR did not take the configuration: {0}")]
    Verify(String),
    #[error("`{cmd}` did not finish within {secs} s and was killed")]
    Timeout { cmd: String, secs: f64 },
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: netlink::NetlinkError,
    },
}

/// How long any device command may take. A hung `ip`, `nft`, `vtysh` or `frr-reload.py`
/// would otherwise block the agent's reconcile loop for ever (and a gateway's stand-down with
/// it); generous, since a first FRR reload of a large configuration takes seconds.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a command, returning stdout, or the failure with stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, DeviceError> {
    run_with(program, args, None, COMMAND_TIMEOUT).await
}

/// Runs a command with `input` on stdin (e.g. `nft -f -`), returning stdout.
pub async fn run_stdin(program: &str, args: &[&str], input: &str) -> Result<String, DeviceError> {
    run_with(program, args, Some(input), COMMAND_TIMEOUT).await
}

/// Runs a command, killed (and reported) when it outlives `timeout`.
pub async fn run_with(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    timeout: std::time::Duration,
) -> Result<String, DeviceError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let cmd = format!("{program} {}", args.join(" "));
    let spawn_err = |source| DeviceError::Spawn {
        cmd: cmd.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on timeout: the child is killed, not left running.
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let writer = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let data = text.as_bytes().to_vec();
            // Written concurrently: a large script must not dead-lock against a full stdout.
            Some(tokio::spawn(async move {
                let _ = stdin.write_all(&data).await;
            }))
        }
        _ => None,
    };
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(spawn_err)?,
        Err(_) => {
            return Err(DeviceError::Timeout {
                cmd,
                secs: timeout.as_secs_f64(),
            })
        }
    };
    if let Some(w) = writer {
        let _ = w.await;
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // nft can print an error per rule: keep the message short.
        let stderr: String = stderr.trim().lines().take(6).collect::<Vec<_>>().join("\n");
        return Err(DeviceError::Command { cmd, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside named network namespace `ns` (see [`netlink::netns`]): forked from
/// a thread that entered the namespace, so the child starts there, without `ip netns exec`
/// (a process of its own that also unshares and remounts). Killed at [`COMMAND_TIMEOUT`].
pub async fn run_in_netns(ns: &str, program: &str, args: &[&str]) -> Result<String, DeviceError> {
    use std::process::Stdio;
    let cmd = format!("{program} {} (in {ns})", args.join(" "));
    let spawn_err = |source| DeviceError::Spawn {
        cmd: cmd.clone(),
        source,
    };
    let path = netlink::netns::path_of(ns);
    let (child, _) = netlink::netns::within(&path, || {
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    })
    .map_err(spawn_err)?;
    let child = child.map_err(spawn_err)?;
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.map_err(spawn_err)?,
        Err(_) => {
            return Err(DeviceError::Timeout {
                cmd,
                secs: COMMAND_TIMEOUT.as_secs_f64(),
            })
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.trim().lines().take(6).collect::<Vec<_>>().join("\n");
        return Err(DeviceError::Command { cmd, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let t0 = Instant::now();
        let r = run_with("sleep", &["30"], None, Duration::from_millis(300)).await;
        assert!(matches!(r, Err(DeviceError::Timeout { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stdin_stdout_and_failures() {
        let out = run_stdin("cat", &[], "hello").await.unwrap();
        assert_eq!(out, "hello");
        let err = run("sh", &["-c", "echo bad >&2; exit 3"])
            .await
            .unwrap_err();
        assert!(matches!(err, DeviceError::Command { ref stderr, .. } if stderr == "bad"));
    }
}
