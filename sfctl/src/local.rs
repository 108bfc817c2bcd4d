//! Commands that need no coordinator: `completion` and `config`.
use clap::CommandFactory;

use crate::cli::{Cli, Command, ConfigCmd};
use crate::config::{self, ConfigError};
use crate::output;

/// Runs `cli` if it is a local command and returns its output; `None` for every other one.
pub fn run(cli: &Cli) -> anyhow::Result<Option<String>> {
    match &cli.command {
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "sfctl", &mut buf);
            Ok(Some(String::from_utf8(buf)?))
        }
        Command::Config(cmd) => config_cmd(cli, cmd).map(Some),
        _ => Ok(None),
    }
}

fn config_cmd(cli: &Cli, cmd: &ConfigCmd) -> anyhow::Result<String> {
    let path = config::path(&cli.global)
        .ok_or_else(|| anyhow::anyhow!("no config file: pass --config (HOME is not set)"))?;
    let mut cfg = config::load(&path, cli.global.config.is_some())?;
    let current = config::context_name(&cli.global, &cfg);
    Ok(match cmd {
        ConfigCmd::GetContexts => {
            let rows: Vec<Vec<String>> = cfg
                .contexts
                .iter()
                .map(|(name, c)| {
                    vec![
                        if current.as_deref() == Some(name) {
                            "*"
                        } else {
                            ""
                        }
                        .to_string(),
                        name.clone(),
                        c.endpoints.join(","),
                    ]
                })
                .collect();
            let t = output::table(&["CURRENT", "NAME", "ENDPOINTS"], &rows);
            if cli.global.no_headers {
                t.split_once('\n')
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default()
            } else {
                t
            }
        }
        ConfigCmd::CurrentContext => match current {
            Some(name) => format!("{name}\n"),
            None => String::new(),
        },
        ConfigCmd::UseContext { name } => {
            if !cfg.contexts.contains_key(name) {
                return Err(ConfigError::NoContext {
                    name: name.clone(),
                    path,
                }
                .into());
            }
            cfg.current_context = Some(name.clone());
            config::save(&path, &cfg)?;
            format!("switched to context {name}\n")
        }
    })
}
