//! Learning exec identities ([`crate::policy::learned`]) from the sessions:
//! at launch, the protected programs on the session's PATH; afterwards, every
//! exec whose file carries a protected program's name, fingerprinted by a
//! background thread so the event path never waits on a file.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use airlock_api::decision::EXEC;
use airlock_api::v1::Decision;
use airlock_common::abi::word_hash;
use anyhow::{Context, Result};

use super::agent::{lock, Agent};
use super::learn_queue::{LearnJob, LEARN_QUEUE};
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

/// What decides the file a path names for a process: its root directory
/// (`chroot`) and its mount namespace (a bind mount over a path in
/// `unshare -m`), as (device, inode) of each. `None` once it has exited: its
/// path is then looked up from the daemon's own `/`, as for every other
/// exited process.
fn process_view(pid: u32) -> Option<[u64; 4]> {
    let root = std::fs::metadata(process_root(pid)).ok()?;
    let mounts = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some([root.dev(), root.ino(), mounts.dev(), mounts.ino()])
}

impl Agent {
    /// The learning thread: fingerprints queued execs and installs what is
    /// new. A file already read for a program, and unchanged since (its
    /// [`FileStamp`]), costs one `stat` and is not read again: a session
    /// runs the same few tools again and again. Jobs come in bursts (one per
    /// drain of the ring); within a burst, the same program at the same path
    /// under the same root is looked at once.
    pub fn learn_loop(&self, rx: Receiver<LearnJob>) -> Result<()> {
        let mut known: HashSet<(String, FileStamp)> = HashSet::new();
        while !self.shutdown.load(Ordering::SeqCst) {
            let first = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut looked_at = HashSet::new();
            for job in std::iter::once(first).chain(rx.try_iter().take(LEARN_QUEUE)) {
                if looked_at.insert((job.program.clone(), job.executable.clone(), process_view(job.pid))) {
                    self.learn_exec(&mut known, &job, &process_root(job.pid));
                }
            }
        }
        Ok(())
    }

    /// One exec's file: read and installed unless it is known and unchanged.
    fn learn_exec(&self, known: &mut HashSet<(String, FileStamp)>, job: &LearnJob, root: &Path) {
        // As the process saw it while it lives (chroot, its own mount
        // namespace), else where the daemon sees that path.
        let exe = PathBuf::from(&job.executable);
        let Some(file) = candidate_file(&job.program, root, &exe).or_else(|| candidate_file(&job.program, Path::new("/"), &exe)) else {
            return;
        };
        if known.contains(&(job.program.clone(), file.stamp)) {
            return;
        }
        let Some((found, read_stamp)) = file.read(&job.program, &exe, "exec") else { return };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_view_is_its_root_and_mount_namespace_and_none_once_it_exits() {
        let own = process_view(std::process::id()).expect("this process's view");
        let root = std::fs::metadata("/").expect("stat /");
        assert_eq!(own[..2], [root.dev(), root.ino()]);
        let mounts = std::fs::metadata("/proc/self/ns/mnt").expect("stat the mount namespace");
        assert_eq!(own[2..], [mounts.dev(), mounts.ino()]);

        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        assert_eq!(process_view(pid), None, "an exited (reaped) process has no view");
    }
}
