//! The last good policy bundle from the gateway, kept in the state directory:
//! the daemon enforces it while the gateway is unreachable and across its own
//! restarts. It is replaced atomically, and only by a bundle that loaded.

use std::path::Path;

use airlock_policy::{LoadedPolicies, PolicyErrors};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleFile {
    pub org: String,
    pub version: u64,
    pub content_hash: String,
    /// (path, content): `policies/NAME` or `roles/NAME`.
    pub files: Vec<(String, String)>,
}

impl BundleFile {
    /// The bundle in `path`; None when there is none yet.
    pub fn read(path: &Path) -> Result<Option<BundleFile>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{} is not a policy bundle", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub fn load(&self) -> Result<LoadedPolicies, PolicyErrors> {
        let sources = airlock_policy::sources_from_bundle(self.files.iter().map(|(p, c)| (p.as_str(), c.as_str())))?;
        airlock_policy::load_sources(sources)
    }

    /// Writes the bundle to `path` atomically (a new file renamed over the old).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::state_file::write_atomically(path, self)
    }
}
