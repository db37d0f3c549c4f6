//! Policy reloads: the policy store compiles under its lock, resolves new
//! hostnames without it, and installs under it again; reloads take turns.
//! Every reload also brings the protected files up to date.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::agent::{lock, Agent};

impl Agent {
    /// Reloads the policy (SIGHUP, a changed directory, the control socket, the
    /// API) and protects the files the new policy names. Returns the version
    /// and generation in force.
    pub fn reload_now(&self) -> Result<(String, u32)> {
        let reloaded = self.install_policy()?;
        self.refresh_protected()?;
        Ok(reloaded)
    }

    /// Loads, compiles and installs the policy. The store is held to compile and
    /// to install, not while the new hostnames are resolved: the event thread looks
    /// rules up in it for every decision. Reloads take turns, so an older policy
    /// read from disk can never be installed over a newer one.
    pub fn install_policy(&self) -> Result<(String, u32)> {
        let _one_reload_at_a_time = lock(&self.reloading);
        let pending = lock(&self.policy).begin_reload()?;
        let answers = pending.client.resolve_all(&pending.unresolved);
        let (version, generation) = {
            let mut store = lock(&self.policy);
            let version = store.finish_reload(&self.kernel, pending, answers)?;
            (version, store.generation())
        };
        self.approvals_follow_policy();
        Ok((version, generation))
    }

    /// Resolves the policy's protected files in every known home and brings
    /// the kernel's map up to date.
    pub fn refresh_protected(&self) -> Result<usize> {
        let patterns = lock(&self.policy).current().map(|c| c.protected.clone()).unwrap_or_default();
        lock(&self.protected).refresh(&self.kernel, &patterns).context("update the protected files")
    }

    /// Airlock's own directories and files, guarded from governed processes:
    /// the policy directory and its two subdirectories, the state directory
    /// (audit trail, default role), the daemon's executable.
    pub fn own_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.state_dir.clone()];
        paths.extend(lock(&self.policy).origin().own_dirs());
        if let Ok(exe) = procfs::process::Process::myself().and_then(|p| p.exe()) {
            paths.push(exe);
        }
        paths
    }

    /// Asks the reload thread for a reload. Requests made while one runs
    /// collapse into one more reload after it.
    pub fn request_reload(&self, why: &'static str) {
        *lock(&self.reload_request) = Some(why);
        self.reload_wakeup.notify_one();
    }
}
