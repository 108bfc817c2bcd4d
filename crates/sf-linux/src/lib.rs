//! Linux device drivers shared by the agents: [`links`] observes and changes network links
//! through iproute2 (its JSON output for observation), [`frr`] renders FRR configuration from
//! desired state and applies it as a delta with FRR's own `frr-reload.py`, then verifies it;
//! [`l2`] plans and executes the CloudStack-compatible VXLAN/bridge layout of a VTEP host.

pub mod acl;
pub mod blackhole;
pub mod frr;
pub mod l2;
pub mod links;
pub mod nft_counters;

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
}

/// Runs a command, returning stdout, or the failure with stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, DeviceError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|source| DeviceError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(DeviceError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
