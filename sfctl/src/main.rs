//! `sfctl` entry point: parses the command line, runs the command on a tokio runtime, and maps
//! failures to the documented exit codes ([`cli::EXIT_CODES`]): 1 refused by the coordinator,
//! 2 no coordinator usable or bad local configuration, 3 not found, 4 `--wait` timed out,
//! 64 usage.
mod cli;
mod client;
mod commands;
mod config;
mod local;
mod output;
mod wait;

use std::process::ExitCode;

use clap::Parser;

/// The exit codes (see `cli::EXIT_CODES`).
mod exit {
    pub const REFUSED: u8 = 1;
    pub const UNAVAILABLE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const WAIT_TIMEOUT: u8 = 4;
    /// sysexits' EX_USAGE.
    pub const USAGE: u8 = 64;
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are "errors" that print to stdout and succeed.
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(exit::UNAVAILABLE);
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

/// A context named on the command line or in the file that the file lacks.
fn is_missing_context(err: &anyhow::Error) -> bool {
    let inner = err
        .downcast_ref::<client::SetupError>()
        .map(|s| &s.0)
        .unwrap_or(err);
    matches!(
        inner.downcast_ref::<config::ConfigError>(),
        Some(config::ConfigError::NoContext { .. })
    )
}

/// Chooses the message and exit code for a failed run.
fn describe(err: &anyhow::Error) -> (String, u8) {
    if is_missing_context(err) {
        return (format!("{err:#}"), exit::NOT_FOUND);
    }
    if let Some(setup) = err.downcast_ref::<client::SetupError>() {
        return (setup.to_string(), exit::UNAVAILABLE);
    }
    if err.downcast_ref::<config::ConfigError>().is_some() {
        return (format!("{err:#}"), exit::UNAVAILABLE);
    }
    if err.downcast_ref::<wait::WaitTimeout>().is_some() {
        return (err.to_string(), exit::WAIT_TIMEOUT);
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        let msg = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_string()
        };
        let code = match status.code() {
            tonic::Code::NotFound => exit::NOT_FOUND,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => exit::UNAVAILABLE,
            _ => exit::REFUSED,
        };
        return (msg, code);
    }
    (format!("{err:#}"), exit::REFUSED)
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

    #[test]
    fn documented_codes_for_not_found_unavailable_wait_and_context() {
        let code = |e: anyhow::Error| describe(&e).1;
        assert_eq!(code(tonic::Status::not_found("no such vpc").into()), 3);
        assert_eq!(code(tonic::Status::unavailable("not serving").into()), 2);
        assert_eq!(code(tonic::Status::already_exists("exists").into()), 1);
        assert_eq!(
            code(
                wait::WaitTimeout {
                    waited_s: 1,
                    pending: vec!["hv1".into()]
                }
                .into()
            ),
            4
        );
        let missing = config::ConfigError::NoContext {
            name: "x".into(),
            path: "/c".into(),
        };
        assert_eq!(code(client::SetupError(missing.into()).into()), 3);
        assert!(cli::EXIT_CODES.contains("64  usage error"));
    }
}
