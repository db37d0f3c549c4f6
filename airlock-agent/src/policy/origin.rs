//! Where the daemon's policies come from: a directory, the copy of the
//! shipped `policies/` compiled into the binary, or the last good bundle the
//! gateway sent (the embedded default until the first one arrives).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use airlock_policy::{Diagnostic, LoadedPolicies, PolicyErrors};

use super::bundle_file::BundleFile;
use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub enum PolicyOrigin {
    Dir(PathBuf),
    Embedded,
    /// The bundle file in the state directory.
    Gateway(PathBuf),
}

/// Names, sizes and modification times of the policy files: it changes when they do.
pub type Fingerprint = Vec<(PathBuf, u64, SystemTime)>;

impl PolicyOrigin {
    pub fn describe(&self) -> String {
        match self {
            PolicyOrigin::Dir(dir) => dir.display().to_string(),
            PolicyOrigin::Embedded => "embedded default (policies/ shipped with the agent)".into(),
            PolicyOrigin::Gateway(file) => match BundleFile::read(file) {
                Ok(Some(b)) => format!("gateway bundle, org {} version {} ({})", b.org, b.version, file.display()),
                Ok(None) => "embedded default (no bundle from the gateway yet)".into(),
                Err(e) => format!("gateway bundle {}: {e:#}", file.display()),
            },
        }
    }

    pub fn load(&self) -> Result<LoadedPolicies, PolicyErrors> {
        match self {
            PolicyOrigin::Dir(dir) => airlock_policy::load_dir(dir),
            PolicyOrigin::Embedded => airlock_policy::load_sources(airlock_policy::default_sources()),
            PolicyOrigin::Gateway(file) => match BundleFile::read(file) {
                Ok(Some(bundle)) => bundle.load(),
                Ok(None) => airlock_policy::load_sources(airlock_policy::default_sources()),
                Err(e) => Err(PolicyErrors { errors: vec![Diagnostic::new(file, "", format!("{e:#}"))], warnings: Vec::new() }),
            },
        }
    }

    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let PolicyOrigin::Dir(dir) = self else {
            return None;
        };
        let mut files = Vec::new();
        for sub in ["policies", "roles"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    files.push((entry.path(), meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                }
            }
        }
        files.sort();
        Some(files)
    }

    /// The directories the guard protects as Airlock's own.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        match self {
            PolicyOrigin::Dir(dir) => vec![dir.clone(), dir.join("policies"), dir.join("roles")],
            // The bundle lives in the state directory, which is guarded whole.
            PolicyOrigin::Embedded | PolicyOrigin::Gateway(_) => Vec::new(),
        }
    }
}

/// The directory the daemon uses when none is given: the system install's, else
/// the checkout's `./policies`, else the embedded default.
pub fn default_origin(explicit: Option<&Path>) -> Result<PolicyOrigin> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            bail!("policy directory {} does not exist", dir.display());
        }
        return Ok(PolicyOrigin::Dir(dir.to_path_buf()));
    }
    for candidate in ["/etc/airlock/policies", "./policies"] {
        let dir = Path::new(candidate);
        if dir.join("roles").is_dir() && dir.join("policies").is_dir() {
            return Ok(PolicyOrigin::Dir(dir.to_path_buf()));
        }
    }
    Ok(PolicyOrigin::Embedded)
}
