//! Learning exec identities ([`crate::policy::learned`]) from the sessions:
//! at launch, the protected programs on the session's PATH; afterwards, every
//! exec whose file carries a protected program's name, fingerprinted by a
//! background thread so the event path never waits on a file.

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// Whether the kernel found the exec's content already known as the program
/// its file is named after: the file would teach nothing, so it is not read.
/// Most execs of a session are of tools it ran before.
pub fn content_already_known(event_flags: u32) -> bool {
    event_flags & airlock_common::abi::FLAG_CONTENT_IS_NAME != 0
}

/// The files the learning thread has read, by stamp, with the programs each
/// was learned as (one file may carry several protected names).
#[derive(Default)]
struct KnownFiles {
    by_stamp: HashMap<FileStamp, Vec<String>>,
    count: usize,
}

impl KnownFiles {
    fn holds(&self, stamp: FileStamp, program: &str) -> bool {
        self.by_stamp.get(&stamp).is_some_and(|programs| programs.iter().any(|p| p == program))
    }

    /// Past [`MAX_KNOWN_FILES`] it starts again: a forgotten file costs one more read.
    fn add(&mut self, stamp: FileStamp, program: String) {
        if self.count >= MAX_KNOWN_FILES {
            self.by_stamp.clear();
            self.count = 0;
        }
        let programs = self.by_stamp.entry(stamp).or_default();
        if !programs.contains(&program) {
            programs.push(program);
            self.count += 1;
        }
    }
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
    /// in the same process view (root and mount namespace) is looked at once.
    pub fn learn_loop(&self, rx: Receiver<LearnJob>) -> Result<()> {
        let mut known = KnownFiles::default();
        while !self.shutdown.load(Ordering::SeqCst) {
            let first = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let burst: Vec<LearnJob> = std::iter::once(first).chain(rx.try_iter().take(LEARN_QUEUE)).collect();
            let mut looked_at = HashSet::new();
            for job in &burst {
                let key = (job.program.as_str(), job.executable.as_str(), process_view(job.pid));
                if looked_at.contains(&key) {
                    continue;
                }
                let seen_in_view = self.learn_exec(&mut known, job, &process_root(job.pid));
                // A process that exited before its lookup was looked up from `/`,
                // which says nothing of the file its view holds: a later job of that view looks again.
                if seen_in_view || key.2.is_none() {
                    looked_at.insert(key);
                }
            }
        }
        Ok(())
    }

    /// One exec's file: read and installed unless it is known and unchanged.
    /// Returns whether the file was found through the process's own root.
    fn learn_exec(&self, known: &mut KnownFiles, job: &LearnJob, root: &Path) -> bool {
        // As the process saw it while it lives (chroot, its own mount
        // namespace), else where the daemon sees that path.
        let exe = PathBuf::from(&job.executable);
        let in_view = candidate_file(&job.program, root, &exe);
        let seen_in_view = in_view.is_some();
        let Some(mut file) = in_view.or_else(|| candidate_file(&job.program, Path::new("/"), &exe)) else {
            return seen_in_view;
        };
        if known.holds(file.stamp, &job.program) {
            return seen_in_view;
        }
        let Some((found, read_stamp)) = file.read(&job.program, &exe, "exec") else { return seen_in_view };
        let program = found.program.clone();
        match lock(&self.policy).learn_identities(&self.kernel, vec![found]) {
            Ok(_) => known.add(read_stamp, program),
            Err(e) => tracing::error!("install a learned exec identity: {e:#}"),
        }
        seen_in_view
    }

    /// The protected programs on a launching session's PATH, learned before
    /// its first instruction. Files are read without the policy lock.
    pub(super) fn learn_session_path(&self, pid: u32, path: &str, cwd: &str) -> Result<()> {
        let programs: BTreeSet<String> = lock(&self.policy).identities().installed().programs.values().cloned().collect();
        if programs.is_empty() || path.is_empty() {
            return Ok(());
        }
        let found: Vec<LearnedEntry> = on_session_path(&mut lock(&self.learner.path_dirs), &process_root(pid), path, cwd, &programs);
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
    fn known_files_are_known_per_program_and_forgotten_together_past_the_bound() {
        let stamp = |path: &str| FileStamp::of(&std::fs::symlink_metadata(path).expect("stat"));
        let (a, b) = (stamp("/"), stamp("/proc"));
        let mut known = KnownFiles::default();
        known.add(a, "terraform".into());
        known.add(a, "tf".into());
        known.add(a, "tf".into());
        assert!(known.holds(a, "terraform") && known.holds(a, "tf"));
        assert!(!known.holds(a, "kubectl") && !known.holds(b, "terraform"));
        assert_eq!(known.count, 2, "a pair added twice counts once");
        for i in known.count..MAX_KNOWN_FILES {
            known.add(b, format!("p{i}"));
        }
        assert!(known.holds(a, "terraform"), "at the bound nothing is forgotten yet");
        known.add(b, "one more".into());
        assert!(!known.holds(a, "terraform") && known.holds(b, "one more"), "past it, all is forgotten at once");
        assert_eq!(known.count, 1);
    }

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
