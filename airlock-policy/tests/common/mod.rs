//! A scratch policy directory for the tests that load policies from disk.

use std::fs;
use std::path::PathBuf;

use airlock_policy::{compile, load_dir, CompiledPolicy, IdAllocator};

/// A policy directory under the temporary directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `suite` and `tag` name the directory, so tests running side by side never share one.
    pub fn new(suite: &str, tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("airlock-policy-{suite}-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("policies")).expect("mkdir policies");
        fs::create_dir_all(dir.join("roles")).expect("mkdir roles");
        for (name, text) in policies {
            fs::write(dir.join("policies").join(name), text).expect("write policy");
        }
        for (name, text) in roles {
            fs::write(dir.join("roles").join(name), text).expect("write role");
        }
        Scratch(dir)
    }

    pub fn compiled(&self) -> CompiledPolicy {
        let loaded = load_dir(&self.0).unwrap_or_else(|e| panic!("{e}"));
        compile(&loaded, &mut IdAllocator::new())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The kernel flags `role` compiled to.
pub fn role_flags(compiled: &CompiledPolicy, role: &str) -> u32 {
    compiled.role_sets.iter().find(|(name, _)| name == role).map(|(_, set)| set.flags).expect("role compiled")
}
