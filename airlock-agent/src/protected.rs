//! Protected (credential) files. The policy names them relative to a
//! home directory (`~/.aws/credentials`, `~/.ssh/id_*`); the kernel matches
//! opens by file identity. This module resolves each pattern in the homes of
//! the session users to (device, inode) and keeps the kernel's
//! `protected_inodes` map equal to that set: at every launch (before the
//! session's first instruction), after every reload, and every watch tick (so
//! a key created during a session is protected from the next tick on). A file
//! once protected stays protected while it exists (moving it away must not
//! release it) unless its pattern leaves the policy.
//!
//! Identity, not path: a hard link, a rename, a bind mount or a
//! /proc/self/root alias of a protected file is the same inode.
//!
//! An inode number is only an identity while the inode lives: once a file is
//! freed, the filesystem gives its number to the next file created. So every
//! protected inode is held open (`O_PATH`) by the daemon: it cannot be freed,
//! and its number cannot go to another file, while the map names it. A file
//! deleted everywhere (no links left) is released from the map first and
//! closed after, so no other file ever inherits its protection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use airlock_common::abi::{InodeKey, CLASS_SELF};
use airlock_policy::HomePattern;
use anyhow::{Context, Result};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode};

use crate::kernel::types::PROTECTED_INODES_CAPACITY;
use crate::kernel::Kernel;

/// One inode in the kernel map, and the handle that keeps it alive.
struct Installed {
    class: u64,
    /// `O_PATH` descriptor of the inode itself. `None` only when it could not
    /// be opened (descriptor limit): that entry is then released as soon as
    /// its path no longer leads to it, as no handle proves the inode lives.
    pin: Option<OwnedFd>,
}

#[derive(Default)]
pub struct ProtectedFiles {
    homes: BTreeSet<PathBuf>,
    installed: HashMap<InodeKey, Installed>,
    /// Airlock's own directories and files (policy, state, executable): never
    /// written, created in, renamed or removed by a governed process.
    own: Vec<PathBuf>,
}

impl ProtectedFiles {
    /// Adds a home directory to resolve patterns in; true when it is new.
    pub fn add_home(&mut self, home: &Path) -> bool {
        home.is_absolute() && self.homes.insert(home.to_path_buf())
    }

    /// Airlock's own directories; they and every file directly inside them are guarded.
    pub fn set_own(&mut self, dirs_and_files: Vec<PathBuf>) {
        self.own = dirs_and_files;
    }

    /// How many files are protected now.
    pub fn count(&self) -> usize {
        self.installed.len()
    }

    /// Resolves every pattern in every home and brings the kernel map up to date.
    pub fn refresh(&mut self, kernel: &Kernel, patterns: &BTreeMap<u64, HomePattern>) -> Result<usize> {
        let mut wanted: HashMap<InodeKey, (u64, PathBuf)> = HashMap::new();
        for home in &self.homes {
            for (class, pattern) in patterns {
                for file in resolve(home, pattern) {
                    if let Some(key) = identity(&file) {
                        wanted.entry(key).or_insert((*class, file));
                    }
                }
            }
        }
        for path in &self.own {
            for file in own_entries(path) {
                if let Some(key) = identity_any(&file) {
                    wanted.insert(key, (CLASS_SELF, file));
                }
            }
        }
        if wanted.len() > PROTECTED_INODES_CAPACITY {
            tracing::error!(files = wanted.len(), capacity = PROTECTED_INODES_CAPACITY, "more protected files than the kernel map holds; the rest are not protected");
        }
        let maps = kernel.maps();
        for (key, (class, path)) in wanted.iter() {
            if self.installed.len() >= PROTECTED_INODES_CAPACITY && !self.installed.contains_key(key) {
                break;
            }
            if let Some(entry) = self.installed.get_mut(key) {
                if entry.class != *class {
                    maps.protect_inode(key, *class)?;
                    entry.class = *class;
                }
                continue;
            }
            // Held before the map names it; a path that led elsewhere by the
            // time it was opened is left for the next tick.
            let pin = match pin_inode(path, *class != CLASS_SELF) {
                Ok((pinned, fd)) if pinned == *key => Some(fd),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "protected without a handle on the inode: {e}");
                    None
                }
            };
            maps.protect_inode(key, *class)?;
            self.installed.insert(*key, Installed { class: *class, pin });
        }
        // Released: a class the policy dropped; Airlock's own entries no longer
        // where the daemon keeps them (it replaces some itself: the audit
        // trail's rotation, SQLite's files); and a protected file deleted
        // everywhere. A protected file moved or renamed stays protected: a
        // governed process may have moved it precisely to lose protection.
        let stale: Vec<InodeKey> = self
            .installed
            .iter()
            .filter(|(key, entry)| {
                if entry.class == CLASS_SELF {
                    !wanted.contains_key(key)
                } else {
                    !patterns.contains_key(&entry.class) || !still_linked(entry, wanted.contains_key(key))
                }
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            // The map entry goes first; the handle closes after (when the
            // entry is dropped), and only then may the inode be freed.
            maps.release_inode(&key);
            self.installed.remove(&key);
        }
        Ok(self.installed.len())
    }
}

/// Opens an inode itself (`O_PATH`: no read or write access) and returns its
/// identity as the kernel sees it. `follow` as the identity was taken: a
/// credential file's symlink leads to the protected file, Airlock's own
/// entries are themselves.
fn pin_inode(path: &Path, follow: bool) -> Result<(InodeKey, OwnedFd)> {
    let flags = if follow { OFlag::O_PATH | OFlag::O_CLOEXEC } else { OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW };
    let fd = open(path, flags, Mode::empty()).with_context(|| format!("open {}", path.display()))?;
    let st = fstat(fd.as_fd()).with_context(|| format!("fstat {}", path.display()))?;
    Ok((kernel_identity(st.st_dev, st.st_ino), fd))
}

/// Whether a protected inode still has a name somewhere. Without a handle,
/// only its path can say so.
fn still_linked(entry: &Installed, at_its_path: bool) -> bool {
    match &entry.pin {
        Some(fd) => fstat(fd.as_fd()).map(|st| st.st_nlink > 0).unwrap_or(false),
        None => at_its_path,
    }
}

/// The files a pattern names in one home (a prefix pattern may name several).
pub fn resolve(home: &Path, pattern: &HomePattern) -> Vec<PathBuf> {
    let Some((last, dirs)) = pattern.components.split_last() else {
        return Vec::new();
    };
    let dir = dirs.iter().fold(home.to_path_buf(), |p, c| p.join(c));
    if !pattern.prefix {
        let file = dir.join(last);
        return if file.exists() { vec![file] } else { Vec::new() };
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(last.as_str())))
        .map(|e| e.path())
        .collect()
}

/// A directory and what sits directly in it (one level: policies/ and roles/
/// are listed themselves), or a single file.
fn own_entries(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(path) {
        out.extend(entries.flatten().map(|e| e.path()));
    }
    out
}

/// Identity of a file or directory (Airlock's own entries).
fn identity_any(path: &Path) -> Option<InodeKey> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(kernel_identity(meta.dev(), meta.ino()))
}

/// A file's identity as the kernel sees it: the superblock's device number in
/// the kernel's encoding (major << 20 | minor) and the inode number. Symlinks
/// are followed: the protected thing is the file they lead to.
fn identity(file: &Path) -> Option<InodeKey> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    Some(kernel_identity(meta.dev(), meta.ino()))
}

/// (device, inode) in the kernel's encoding of the device: major << 20 | minor.
pub(crate) fn kernel_identity(dev: u64, ino: u64) -> InodeKey {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    InodeKey { dev: (major << 20) | (minor & 0xfffff), pad: 0, ino }
}

/// The home directories a session's files live in: the user's home from the
/// password database, and the HOME the launching process has (protection is
/// only ever added, so a caller naming another HOME gains nothing).
pub fn session_homes(uid: u32, pid: u32) -> Vec<PathBuf> {
    let mut homes = Vec::new();
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        homes.push(user.dir);
    }
    let environ = procfs::process::Process::new(pid as i32).and_then(|p| p.environ());
    if let Some(home) = environ.ok().and_then(|mut env| env.remove(std::ffi::OsStr::new("HOME"))) {
        homes.push(PathBuf::from(home));
    }
    homes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_resolve_in_a_home() {
        let home = std::env::temp_dir().join(format!("airlock-protected-{}", std::process::id()));
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        for f in [".ssh/id_rsa", ".ssh/id_ed25519", ".ssh/known_hosts", ".aws/credentials"] {
            std::fs::write(home.join(f), "x").unwrap();
        }
        let ssh: HomePattern = "~/.ssh/id_*".parse().unwrap();
        let mut found = resolve(&home, &ssh);
        found.sort();
        assert_eq!(found, vec![home.join(".ssh/id_ed25519"), home.join(".ssh/id_rsa")]);
        let aws: HomePattern = "~/.aws/credentials".parse().unwrap();
        assert_eq!(resolve(&home, &aws), vec![home.join(".aws/credentials")]);
        let missing: HomePattern = "~/.kube/config".parse().unwrap();
        assert!(resolve(&home, &missing).is_empty());
        let id = identity(&home.join(".aws/credentials")).unwrap();
        assert_eq!(id.ino, std::fs::metadata(home.join(".aws/credentials")).unwrap().ino());
        std::fs::remove_dir_all(&home).unwrap();
    }
}
