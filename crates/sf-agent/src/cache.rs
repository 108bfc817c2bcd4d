//! The last desired state received, persisted on local disk (written to a temporary file and
//! renamed, so a crash never leaves a torn file). On start the agent enforces it before the
//! coordinator answers, so a restart while the coordinator is down changes nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sf_core::desired::NodeDesired;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cached {
    pub desired: NodeDesired,
    /// Revision and digest last applied without error (sent in Hello).
    pub applied_revision: u64,
    pub applied_digest: String,
}

pub struct Cache {
    path: PathBuf,
}

impl Cache {
    pub fn new(state_dir: &Path) -> Self {
        Cache {
            path: state_dir.join("desired.json"),
        }
    }

    pub fn load(&self) -> Option<Cached> {
        let bytes = std::fs::read(&self.path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable cache");
                None
            }
        }
    }

    pub fn store(&self, c: &Cached) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(c).expect("cache serializes"))?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        assert!(cache.load().is_none());
        let c = Cached {
            desired: NodeDesired {
                node: "hv1".into(),
                revision: 7,
                ..Default::default()
            },
            applied_revision: 7,
            applied_digest: "abc".into(),
        };
        cache.store(&c).unwrap();
        let back = cache.load().unwrap();
        assert_eq!(back.desired, c.desired);
        assert_eq!(back.applied_digest, "abc");
    }
}
