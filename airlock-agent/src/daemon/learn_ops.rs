//! Learning exec identities ([`crate::policy::learned`]) from the sessions:
//! at launch, the protected programs on the session's PATH; afterwards, every
//! exec whose file carries a protected program's name, fingerprinted by a
//! background thread so the event path never waits on a file.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use airlock_api::decision::EXEC;
use airlock_api::v1::Decision;
use airlock_common::abi::word_hash;
use anyhow::{Context, Result};

use super::agent::{lock, Agent};
use super::learn_queue::LearnJob;
use crate::policy::learned::{candidate_file, on_session_path, FileStamp, LearnedEntry};
use crate::policy::PolicyStore;

/// Files the learning thread remembers as read; past this it starts again.
const MAX_KNOWN_FILES: usize = 4096;

/// What an exec decision can teach: its file, when the file's own name is a
/// protected program's (rule matching finds it by that name).
pub fn learn_job(policy: &PolicyStore, d: &Decision) -> Option<LearnJob> {
    if d.kind != EXEC || d.executable.is_empty() || d.session_id.is_empty() {
        return None;
    }
    let name = d.executable.rsplit('/').next()?;
    let program = policy.identities().installed().programs.get(&word_hash(name.as_bytes()))?;
    Some(LearnJob { program: program.clone(), executable: d.executable.clone(), pid: d.pid })
}

fn process_root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

impl Agent {
    /// The learning thread: fingerprints queued execs and installs what is
    /// new. A file already read for a program, and unchanged since (its
    /// [`FileStamp`]), costs one `stat` and is not read again: a session
    /// runs the same few tools again and again.
    pub fn learn_loop(&self, rx: Receiver<LearnJob>) -> Result<()> {
        let mut known: HashSet<(String, FileStamp)> = HashSet::new();
        while !self.shutdown.load(Ordering::SeqCst) {
            let job = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // As the process saw it while it lives (chroot, its own mount
            // namespace), else where the daemon sees that path.
            let exe = PathBuf::from(&job.executable);
            let Some(file) = candidate_file(&job.program, &process_root(job.pid), &exe).or_else(|| candidate_file(&job.program, Path::new("/"), &exe)) else {
                continue;
            };
            if known.contains(&(job.program.clone(), file.stamp)) {
                continue;
            }
            let Some((found, read_stamp)) = file.read(&job.program, &exe, "exec") else { continue };
            let program = found.program.clone();
            match lock(&self.policy).learn_identities(&self.kernel, vec![found]) {
                Ok(_) => {
                    if known.len() >= MAX_KNOWN_FILES {
                        known.clear();
                    }
                    known.insert((program, read_stamp));
                }
                Err(e) => tracing::error!("install a learned exec identity: {e:#}"),
            }
        }
        Ok(())
    }

    /// The protected programs on a launching session's PATH, learned before
    /// its first instruction. Files are read without the policy lock.
    pub(super) fn learn_session_path(&self, pid: u32, path: &str, cwd: &str) -> Result<()> {
        let programs: BTreeSet<String> = lock(&self.policy).identities().installed().programs.values().cloned().collect();
        if programs.is_empty() || path.is_empty() {
            return Ok(());
        }
        let found: Vec<LearnedEntry> = on_session_path(&process_root(pid), path, cwd, &programs);
        if found.is_empty() {
            return Ok(());
        }
        let added = lock(&self.policy).learn_identities(&self.kernel, found).context("install the exec identities found on the session's PATH")?;
        if added > 0 {
            tracing::info!(added, "exec identities learned from the session's PATH");
        }
        Ok(())
    }
}
