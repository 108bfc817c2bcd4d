//! `sfctl` entry point: parses the command line, runs the command on a tokio runtime, and maps
//! failures to exit codes (1: the coordinator rejected the request, 2: could not connect or
//! bad local configuration).
mod cli;
mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (msg, code) = describe(&err);
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Chooses the message and exit code for a failed run.
fn describe(err: &anyhow::Error) -> (String, u8) {
    if let Some(setup) = err.downcast_ref::<client::SetupError>() {
        return (setup.to_string(), 2);
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        let msg = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_string()
        };
        return (msg, 1);
    }
    (format!("{err:#}"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_maps_to_exit_1_with_message() {
        let err = anyhow::Error::from(tonic::Status::invalid_argument(
            "invalid network.cidr: not inside vpc cidr",
        ));
        assert_eq!(
            describe(&err),
            ("invalid network.cidr: not inside vpc cidr".to_string(), 1)
        );
    }

    #[test]
    fn setup_error_maps_to_exit_2() {
        let err = anyhow::Error::from(client::SetupError(
            anyhow::anyhow!("connection refused").context("cannot reach coordinator at https://x"),
        ));
        assert_eq!(
            describe(&err),
            (
                "cannot reach coordinator at https://x: connection refused".to_string(),
                2
            )
        );
    }
}
