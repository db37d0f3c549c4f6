//! Learned exec identity: contents of protected programs the daemon's own
//! scan at policy load cannot find (a `terraform` in `./bin`, `~/.local/bin`
//! or a virtualenv), learned from where sessions find them: the PATH a
//! session is launched with, and every exec whose file carries a protected
//! program's name. Once learned, a hard link, copy, rename or bind-mounted
//! alias of that file is the program, as for the scanned ones.
//!
//! Why files of any owner may be learned (the scan at load trusts only root's
//! files): a learned content only ever adds names to what a file is judged
//! as, and names only add deny, limit and approval matches. Nothing is allowed
//! because of it. What a user can do with it is make a content of their
//! choosing a protected program in every session, which denies others only
//! the rule's commands run from a byte-identical file; interpreters, loaders
//! and multi-call binaries are never learned, so `python3 x.py apply` cannot
//! be made "terraform apply" this way.
//!
//! Kept in `<state>/restart/learned-identities.json`, at most [`MAX_LEARNED`]
//! entries, the oldest learned evicted first. An entry whose program no
//! policy in force protects any more stays in the file and is not installed.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use airlock_common::abi::{self, word_hash};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use airlock_common::abi::{IdentityKey, IdentityValue};
use airlock_policy::CompiledPolicy;

use super::dir_names::DirNameCache;
use super::identity::{build, fingerprint_open_file, is_interpreter_name, is_multi_call_name, open_without_blocking, search_dirs, IdentityTable};
use crate::kernel::Kernel;

/// Learned contents kept at most; the oldest learned goes first.
pub const MAX_LEARNED: usize = 4096;
/// PATH entries of one launch that are searched (a longer PATH is cut here).
const MAX_PATH_DIRS: usize = 64;
const FILE_VERSION: u32 = 1;

/// One learned content: the file `path` was `program`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedEntry {
    pub program: String,
    pub hash: u64,
    pub size: u64,
    /// Where it was found, as the session saw it (for people reading the file).
    pub path: String,
    /// "launch" (the session's PATH) or "exec" (an exec that named it).
    pub source: String,
    pub learned_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LearnedFile {
    version: u32,
    evicted: u64,
    entries: Vec<LearnedEntry>,
}

/// The learned contents, oldest first, and the file they are kept in.
#[derive(Debug, Default)]
pub struct LearnedStore {
    file: Option<PathBuf>,
    max: usize,
    entries: VecDeque<LearnedEntry>,
    evicted: u64,
}

impl LearnedStore {
    /// Reads `file` (none yet: empty). A file that cannot be parsed is an
    /// error: the caller decides what to do with it.
    pub fn open(file: PathBuf, max: usize) -> Result<Self> {
        let mut store = LearnedStore { file: Some(file.clone()), max: max.max(1), ..Default::default() };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        let saved: LearnedFile =
            serde_json::from_str(&text).with_context(|| format!("{} is not a learned identity file", file.display()))?;
        if saved.version != FILE_VERSION {
            anyhow::bail!("{}: version {} (this daemon reads version {FILE_VERSION})", file.display(), saved.version);
        }
        store.evicted = saved.evicted;
        store.entries = saved.entries.into();
        while store.entries.len() > store.max {
            store.entries.pop_front();
            store.evicted += 1;
        }
        Ok(store)
    }

    /// [`LearnedStore::open`], and a file that cannot be read is moved aside
    /// (`.corrupt`), logged, and learning starts again empty: the daemon runs
    /// on with what its scan finds, as it would without learning.
    pub fn open_or_set_aside(file: PathBuf, max: usize) -> Self {
        match Self::open(file.clone(), max) {
            Ok(store) => store,
            Err(e) => {
                let aside = file.with_extension("json.corrupt");
                let moved = std::fs::rename(&file, &aside);
                tracing::error!(
                    moved_to = %aside.display(),
                    moved = moved.is_ok(),
                    "learned exec identities refused ({e:#}); learning starts again empty"
                );
                LearnedStore { file: Some(file), max: max.max(1), ..Default::default() }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Takes in `found`, judged against `base` (the scan's table for the
    /// policy in force): only protected names, never a content the kernel
    /// knows as an interpreter or loader, nothing already known. Returns how
    /// many entries are new; the file is rewritten when there are any.
    pub fn add(&mut self, found: Vec<LearnedEntry>, base: &IdentityTable) -> usize {
        let mut added = 0;
        for entry in found {
            let name = word_hash(entry.program.as_bytes());
            if !base.programs.contains_key(&name) || !learnable(base, entry.hash) {
                continue;
            }
            if base.content_names(entry.hash).contains(&name) {
                continue;
            }
            if self.entries.iter().any(|e| e.hash == entry.hash && e.program == entry.program) {
                continue;
            }
            while self.entries.len() >= self.max {
                self.entries.pop_front();
                self.evicted += 1;
            }
            tracing::info!(program = %entry.program, path = %entry.path, source = %entry.source, "exec identity learned");
            self.entries.push_back(entry);
            added += 1;
        }
        if added > 0 {
            self.save();
        }
        added
    }

    /// `base` with the learned contents of the programs it protects.
    pub fn merged(&self, base: &IdentityTable) -> IdentityTable {
        let mut table = base.clone();
        for e in &self.entries {
            if table.programs.contains_key(&word_hash(e.program.as_bytes())) && learnable(base, e.hash) {
                table.add_content(e.hash, e.size, 0, Some(&e.program), Path::new(&e.path));
            }
        }
        table
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let saved = LearnedFile { version: FILE_VERSION, evicted: self.evicted, entries: self.entries.iter().cloned().collect() };
        if let Err(e) = crate::state_file::write_atomically(file, &saved) {
            tracing::error!("could not save the learned exec identities (they hold until the daemon stops): {e:#}");
        }
    }
}

/// Interpreters' and loaders' contents are judged by what they run, never as a program.
fn learnable(base: &IdentityTable, hash: u64) -> bool {
    base.content_flags(hash) & (abi::ID_INTERPRETER | abi::ID_LOADER) == 0
}

/// Symlinks followed from a found name to its file.
const MAX_LINKS: usize = 8;

/// An absolute `path` as a process whose root directory is `root` sees it
/// (`/proc/PID/root`, or `/`).
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `path` (under `root`) with its last component's symlinks followed,
/// absolute targets under `root`. Directories on the way are resolved by the
/// kernel, an absolute symlink among them from the daemon's root: learning
/// then reads another file, which can only add a content, never take one away.
fn follow(root: &Path, path: PathBuf) -> PathBuf {
    let mut path = path;
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        path = if target.is_absolute() {
            under_root(root, &target)
        } else {
            path.parent().map(|p| p.join(&target)).unwrap_or(target)
        };
    }
    path
}

/// A file's identity and change stamp as `stat` gives them. Writing a file
/// sets its ctime and replacing it changes its inode, and no user can set a
/// ctime back: an unchanged stamp is an unchanged content, to the file
/// system's timestamp tick (a same-size rewrite within one tick keeps it).
/// That is no new gap: learning reads a file after its exec in any case, so
/// what it learns is the file as it is then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file `stat` or `fstat` described.
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        FileStamp { dev: meta.dev(), ino: meta.ino(), size: meta.size(), mtime_ns: ns(meta.mtime(), meta.mtime_nsec()), ctime_ns: ns(meta.ctime(), meta.ctime_nsec()) }
    }
}

/// The file a session sees at `path` (absolute) under `root`, found as a
/// [`candidate`] would read it, and its stamp; nothing of it is read yet.
/// It is held open: what is read later is the file that was found, even once
/// the process whose root led to it has exited (its `/proc/PID/root` with it).
pub struct CandidateFile {
    file: std::fs::File,
    pub stamp: FileStamp,
}

/// The file a session sees at `path` (absolute), looked up under `root` (its
/// root directory, `/proc/PID/root`, or `/`), if it can stand for `program`:
/// a regular, executable file under a name that is neither an interpreter's
/// nor a multi-call binary's.
pub fn candidate_file(program: &str, root: &Path, path: &Path) -> Option<CandidateFile> {
    use std::os::unix::fs::PermissionsExt;
    if is_interpreter_name(program) || is_multi_call_name(program) {
        return None;
    }
    let real = follow(root, under_root(root, path));
    if real.file_name().is_some_and(|n| is_multi_call_name(&n.to_string_lossy())) {
        return None;
    }
    // Only a regular file is opened at all (a FIFO's or a device's open can act).
    if !std::fs::symlink_metadata(&real).ok()?.is_file() {
        return None;
    }
    let file = open_without_blocking(&real)?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return None;
    }
    Some(CandidateFile { file, stamp: FileStamp::of(&meta) })
}

impl CandidateFile {
    /// Reads the file's fingerprint: the entry that learns it as `program`,
    /// and the stamp of the file as it was read (it may have been rewritten
    /// since it was found).
    pub fn read(&mut self, program: &str, path: &Path, source: &str) -> Option<(LearnedEntry, FileStamp)> {
        let (hash, meta) = fingerprint_open_file(&mut self.file)?;
        let entry = LearnedEntry {
            program: program.to_string(),
            hash,
            size: meta.len(),
            path: path.display().to_string(),
            source: source.to_string(),
            learned_at: crate::clock::now_rfc3339(),
        };
        Some((entry, FileStamp::of(&meta)))
    }
}

/// The file a session sees at `path` under `root` ([`candidate_file`]), read
/// and fingerprinted as `program`.
pub fn candidate(program: &str, root: &Path, path: &Path, source: &str) -> Option<LearnedEntry> {
    candidate_file(program, root, path)?.read(program, path, source).map(|(entry, _)| entry)
}

/// The protected programs found in the directories of a session's `PATH`
/// (relative entries, and empty ones, are the session's `cwd`), looked up
/// under `root`. Which names each directory holds comes from `listings` while
/// the directory is unchanged; each file found is looked at afresh.
pub fn on_session_path(
    listings: &mut DirNameCache,
    root: &Path,
    path_var: &str,
    cwd: &str,
    programs: &BTreeSet<String>,
) -> Vec<LearnedEntry> {
    listings.look_for(programs);
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for entry in path_var.split(':').take(MAX_PATH_DIRS) {
        let dir = if entry.starts_with('/') { PathBuf::from(entry) } else { Path::new(cwd).join(entry) };
        if !dir.is_absolute() || !seen.insert(dir.clone()) {
            continue;
        }
        for program in listings.names_in_dir(&under_root(root, &dir)) {
            if let Some(c) = candidate(&program, root, &dir.join(&program), "launch") {
                found.push(c);
            }
        }
    }
    found
}

/// The identity entries in the kernel: the scan's, replaced as a whole at
/// each policy load, and the learned ones ([`LearnedStore`]) added to them.
#[derive(Default)]
pub struct Identities {
    installed: IdentityTable,
    /// The scan of the last policy load, without what was learned.
    base: IdentityTable,
    program_paths: Vec<PathBuf>,
    learned: LearnedStore,
}

impl Identities {
    pub fn new(program_paths: Vec<PathBuf>, learned: LearnedStore) -> Self {
        Identities { program_paths, learned, ..Default::default() }
    }

    /// Rebuilds the table for `policy`, adds what was learned of the programs
    /// it protects, and installs it: new and changed entries first, then the
    /// ones no longer wanted are removed.
    pub fn refresh(&mut self, kernel: &Kernel, policy: &CompiledPolicy) -> Result<()> {
        let dirs = search_dirs(&self.program_paths);
        let base = build(policy, &dirs, &self.program_paths);
        for note in &base.notes {
            tracing::info!("exec identity: {note}");
        }
        let next = self.learned.merged(&base);
        self.install(kernel, next)?;
        self.base = base;
        tracing::info!(
            names = self.installed.count(abi::IDKEY_NAME),
            contents = self.installed.count(abi::IDKEY_CONTENT),
            learned = self.learned.len(),
            dirs = dirs.len(),
            "exec identities installed"
        );
        Ok(())
    }

    /// Where protected programs are looked for now.
    pub fn dirs(&self) -> Vec<PathBuf> {
        search_dirs(&self.program_paths)
    }

    /// Learns `found` and installs what is new. Returns how many were new.
    pub fn learn(&mut self, kernel: &Kernel, found: Vec<LearnedEntry>) -> Result<usize> {
        let added = self.learned.add(found, &self.base);
        if added > 0 {
            let next = self.learned.merged(&self.base);
            self.install(kernel, next)?;
        }
        Ok(added)
    }

    fn install(&mut self, kernel: &Kernel, next: IdentityTable) -> Result<()> {
        let entries: Vec<(IdentityKey, IdentityValue)> =
            next.entries.iter().filter(|(k, v)| self.installed.entries.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
        let stale: Vec<IdentityKey> = self.installed.entries.keys().filter(|k| !next.entries.contains_key(k)).copied().collect();
        kernel.maps().update_identities(&entries, &stale)?;
        self.installed = next;
        Ok(())
    }

    pub fn installed(&self) -> &IdentityTable {
        &self.installed
    }

    pub fn learned(&self) -> &LearnedStore {
        &self.learned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_key(hash: u64) -> IdentityKey {
        IdentityKey { kind: abi::IDKEY_CONTENT, pad: 0, hash }
    }

    fn base(programs: &[&str]) -> IdentityTable {
        IdentityTable { programs: programs.iter().map(|p| (word_hash(p.as_bytes()), p.to_string())).collect(), ..Default::default() }
    }

    fn entry(program: &str, hash: u64) -> LearnedEntry {
        LearnedEntry {
            program: program.into(),
            hash,
            size: 1000 + hash,
            path: format!("/x/{program}"),
            source: "exec".into(),
            learned_at: String::new(),
        }
    }

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-learned-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir.join("learned-identities.json")
    }

    #[test]
    fn bounded_oldest_learned_is_evicted_first() {
        let b = base(&["terraform"]);
        let mut s = LearnedStore { max: 3, ..Default::default() };
        assert_eq!(s.add((1..=3).map(|h| entry("terraform", h)).collect(), &b), 3);
        assert_eq!(s.add(vec![entry("terraform", 2)], &b), 0, "a known content is not learned twice");
        assert_eq!(s.add(vec![entry("terraform", 4), entry("terraform", 5)], &b), 2);
        let hashes: Vec<u64> = s.entries.iter().map(|e| e.hash).collect();
        assert_eq!(hashes, vec![3, 4, 5]);
        assert_eq!(s.evicted(), 2);
    }

    #[test]
    fn only_protected_names_and_never_interpreters_or_loaders() {
        let mut b = base(&["terraform"]);
        b.add_content(7, 700, abi::ID_INTERPRETER, None, Path::new("/usr/bin/python3"));
        b.add_content(8, 800, 0, Some("terraform"), Path::new("/usr/bin/terraform"));
        let mut s = LearnedStore { max: 10, ..Default::default() };
        assert_eq!(s.add(vec![entry("kubectl", 1), entry("terraform", 7), entry("terraform", 8)], &b), 0);
        assert_eq!(s.add(vec![entry("terraform", 9)], &b), 1);
        let merged = s.merged(&b);
        let v = merged.entries.get(&content_key(9)).expect("the learned content is installed");
        assert_eq!(v.names[0], word_hash(b"terraform"));
        assert_ne!(v.flags & abi::ID_PROGRAM, 0);
        assert!(merged.entries.contains_key(&IdentityKey { kind: abi::IDKEY_SIZE, pad: 0, hash: 1009 }));
        // A policy that no longer protects terraform installs none of it.
        assert!(!s.merged(&base(&["kubectl"])).entries.contains_key(&content_key(9)));
    }

    #[test]
    fn persistence_round_trip() {
        let file = temp_file("round");
        let b = base(&["terraform", "kubectl"]);
        let mut s = LearnedStore::open(file.clone(), 2).expect("no file yet is empty");
        assert!(s.is_empty());
        s.add(vec![entry("terraform", 1), entry("kubectl", 2), entry("terraform", 3)], &b);
        let back = LearnedStore::open(file.clone(), 2).expect("read back");
        assert_eq!(back.entries, s.entries);
        assert_eq!(back.evicted(), 1);
        // A smaller bound at the next start evicts the oldest.
        let smaller = LearnedStore::open(file.clone(), 1).expect("read back");
        assert_eq!(smaller.entries.iter().map(|e| e.hash).collect::<Vec<_>>(), vec![3]);
        assert_eq!(smaller.evicted(), 2);
        let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
    }

    #[test]
    fn a_corrupt_file_is_refused_and_set_aside() {
        let file = temp_file("corrupt");
        std::fs::write(&file, "{ not json").expect("write");
        let err = LearnedStore::open(file.clone(), 10).expect_err("a corrupt file is refused");
        assert!(format!("{err:#}").contains("is not a learned identity file"), "{err:#}");
        let s = LearnedStore::open_or_set_aside(file.clone(), 10);
        assert!(s.is_empty());
        assert!(!file.exists());
        assert!(file.with_extension("json.corrupt").exists(), "the corrupt file is kept aside");
        let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
    }

    #[test]
    fn session_path_finds_protected_programs_relative_to_cwd() {
        use std::os::unix::fs::PermissionsExt;
        let file = temp_file("path");
        let dir = file.parent().expect("dir").to_path_buf();
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        let tool = dir.join("bin/terraform");
        std::fs::write(&tool, b"\x7fELF not really").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("bin/python3"), b"x").expect("write");
        let programs: BTreeSet<String> = ["terraform", "python3", "kubectl"].into_iter().map(String::from).collect();
        let mut listings = DirNameCache::default();
        let found = on_session_path(&mut listings, Path::new("/"), "bin:/nonexistent", &dir.display().to_string(), &programs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].program, "terraform");
        assert_eq!(found[0].path, tool.display().to_string());
        // With the names of a thousand rules, each directory is listed instead.
        let many: BTreeSet<String> = programs.iter().cloned().chain((0..1000).map(|i| format!("tool{i}"))).collect();
        let listed = on_session_path(&mut listings, Path::new("/"), "bin:/nonexistent", &dir.display().to_string(), &many);
        assert_eq!(listed.iter().map(|c| (&c.program, &c.path)).collect::<Vec<_>>(), vec![(&found[0].program, &found[0].path)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rewritten_or_replaced_file_has_a_new_stamp() {
        use std::os::unix::fs::PermissionsExt;
        let file = temp_file("stamp");
        let dir = file.parent().expect("dir").to_path_buf();
        let tool = dir.join("terraform");
        let write = |content: &[u8]| {
            std::fs::write(&tool, content).expect("write");
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        write(b"#!/bin/sh\necho one\n");
        let mut first = candidate_file("terraform", Path::new("/"), &tool).expect("an executable file is a candidate");
        let again = candidate_file("terraform", Path::new("/"), &tool).expect("still a candidate");
        assert_eq!(first.stamp, again.stamp, "an untouched file keeps its stamp");
        let first_stamp = first.stamp;
        let (entry, read_stamp) = first.read("terraform", &tool, "exec").expect("readable");
        assert_eq!(read_stamp, first_stamp, "the file read is the file found");

        write(b"#!/bin/sh\necho three\n");
        let mut rewritten = candidate_file("terraform", Path::new("/"), &tool).expect("a candidate");
        assert_ne!(rewritten.stamp, first.stamp, "a rewrite in place kept the stamp");
        let (changed, _) = rewritten.read("terraform", &tool, "exec").expect("readable");
        assert_ne!(changed.hash, entry.hash);

        // A same-size rewrite within one timestamp tick is told by its times;
        // setting them moves the ctime as well.
        let handle = std::fs::File::options().write(true).open(&tool).expect("open");
        handle.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).expect("set mtime");
        drop(handle);
        let touched = candidate_file("terraform", Path::new("/"), &tool).expect("a candidate");
        assert_ne!(touched.stamp, rewritten.stamp, "new times kept the stamp");

        let other = dir.join("other");
        std::fs::write(&other, b"#!/bin/sh\necho three\n").expect("write");
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&other, &tool).expect("rename over");
        let replaced = candidate_file("terraform", Path::new("/"), &tool).expect("a candidate");
        assert_ne!(replaced.stamp, touched.stamp, "a file renamed over it kept the stamp");

        assert!(candidate_file("python3", Path::new("/"), &tool).is_none(), "an interpreter's name is never a candidate");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The learning thread finds an exec's file through `/proc/PID/root` while
    /// the process lives; a short-lived tool has often exited by the time the
    /// file is read, and what was found must still be read.
    #[test]
    fn a_file_found_through_a_process_root_is_read_after_the_process_exits() {
        use std::os::unix::fs::PermissionsExt;
        let file = temp_file("exited");
        let dir = file.parent().expect("dir").to_path_buf();
        let tool = dir.join("terraform");
        std::fs::write(&tool, b"#!/bin/sh\necho learned\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("spawn sleep");
        let root = PathBuf::from(format!("/proc/{}/root", child.id()));
        let mut found = candidate_file("terraform", &root, &tool).expect("found through the live process's root");
        child.kill().expect("kill our sleep");
        child.wait().expect("reap our sleep");
        assert!(std::fs::symlink_metadata(under_root(&root, &tool)).is_err(), "the exited process's root still leads to the file");
        let (entry, _) = found.read("terraform", &tool, "exec").expect("the file found is read after its process exited");
        let direct = candidate("terraform", Path::new("/"), &tool, "exec").expect("readable from /");
        assert_eq!((entry.hash, entry.size), (direct.hash, direct.size));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
