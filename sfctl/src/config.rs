//! The sfctl config file: named contexts (endpoint list, CA, server name, token file) and the
//! current one, merged under the command line and environment (a flag or `SF_*` variable
//! wins over the context; the context over the built-in defaults).
//!
//! ```toml
//! current-context = "prod"
//! [contexts.prod]
//! endpoints = ["https://10.0.0.1:7443", "https://10.0.0.2:7443"]
//! ca = "/etc/stackfabric/ca.pem"
//! token-file = "/home/op/.config/sfctl/prod.token"
//! server-name = "coordinator"
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::GlobalOpts;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no context {name:?} in {path}")]
    NoContext { name: String, path: PathBuf },
}

/// One context: where the coordinators are and how to trust and authenticate to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// `--config`, else `$XDG_CONFIG_HOME/sfctl/config.toml`, else `~/.config/sfctl/config.toml`.
pub fn path(opts: &GlobalOpts) -> Option<PathBuf> {
    if let Some(p) = &opts.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sfctl").join("config.toml"))
}

/// Reads the file; a missing file is an empty config unless it was named explicitly.
pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile::default())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.into(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Writes the file back (used by `config use-context`).
pub fn save(path: &Path, cfg: &ConfigFile) -> Result<(), ConfigError> {
    let text = toml::to_string(cfg).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|source| ConfigError::Write {
        path: path.into(),
        source,
    })
}

/// The name of the context in force: `--context`, else the file's current-context.
pub fn context_name(opts: &GlobalOpts, cfg: &ConfigFile) -> Option<String> {
    opts.context.clone().or_else(|| cfg.current_context.clone())
}

/// Fills what the command line and environment left open from the context in force. A
/// context named by `--context` (or current-context) that the file lacks is an error.
pub fn apply(opts: &mut GlobalOpts) -> Result<(), ConfigError> {
    let Some(path) = path(opts) else {
        return Ok(());
    };
    let cfg = load(&path, opts.config.is_some())?;
    let Some(name) = context_name(opts, &cfg) else {
        return Ok(());
    };
    let ctx = cfg
        .contexts
        .get(&name)
        .ok_or_else(|| ConfigError::NoContext {
            name: name.clone(),
            path: path.clone(),
        })?;
    merge(opts, ctx);
    Ok(())
}

/// The context's settings where `opts` has none.
fn merge(opts: &mut GlobalOpts, ctx: &Context) {
    if opts.endpoint.is_none() && !ctx.endpoints.is_empty() {
        opts.endpoint = Some(ctx.endpoints.join(","));
    }
    if opts.ca.is_none() {
        opts.ca.clone_from(&ctx.ca);
    }
    if opts.server_name.is_none() {
        opts.server_name.clone_from(&ctx.server_name);
    }
    // An explicit token beats the context's token file.
    if opts.token_file.is_none() && opts.token.is_none() {
        opts.token_file.clone_from(&ctx.token_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const FILE: &str = r#"
current-context = "lab"
[contexts.lab]
endpoints = ["https://a:7443", "https://b:7443"]
ca = "/lab/ca.pem"
token-file = "/lab/token"
[contexts.prod]
endpoints = ["https://p:7443"]
server-name = "coord.prod"
"#;

    fn opts(extra: &[&str], file: &Path) -> GlobalOpts {
        let mut args = vec!["sfctl", "--config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push("status");
        crate::cli::Cli::try_parse_from(args).unwrap().global
    }

    #[test]
    fn the_current_context_fills_what_flags_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, FILE).unwrap();
        let mut o = opts(&[], &file);
        apply(&mut o).unwrap();
        assert_eq!(o.endpoint(), "https://a:7443,https://b:7443");
        assert_eq!(o.ca.as_deref(), Some(Path::new("/lab/ca.pem")));
        assert_eq!(o.token_file.as_deref(), Some(Path::new("/lab/token")));
        assert_eq!(o.server_name(), "coordinator");

        let mut o = opts(&["--context", "prod", "--endpoint", "https://x:1"], &file);
        apply(&mut o).unwrap();
        assert_eq!(o.endpoint(), "https://x:1", "a flag wins over the context");
        assert_eq!(o.server_name(), "coord.prod");
        assert_eq!(o.ca, None);

        let mut o = opts(&["--context", "nope"], &file);
        let err = apply(&mut o).unwrap_err().to_string();
        assert!(err.contains("no context \"nope\""), "{err}");
    }

    #[test]
    fn use_context_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, FILE).unwrap();
        let mut cfg = load(&file, true).unwrap();
        cfg.current_context = Some("prod".into());
        save(&file, &cfg).unwrap();
        assert_eq!(load(&file, true).unwrap(), cfg);
        std::fs::write(&file, "contexts = 3").unwrap();
        assert!(matches!(load(&file, true), Err(ConfigError::Parse { .. })));
        let missing = dir.path().join("none.toml");
        assert_eq!(load(&missing, false).unwrap(), ConfigFile::default());
        assert!(load(&missing, true).is_err(), "a named file must exist");
    }
}
