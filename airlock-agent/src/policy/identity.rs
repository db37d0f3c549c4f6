//! Exec identity, the daemon's side: finds the protected programs, the
//! interpreters and the dynamic loaders on this host, fingerprints their
//! content the way the kernel does, and keeps the kernel's `exec_identity`
//! map in step with the policy.
//!
//! The kernel then knows a file by what it is: a hard link or a copy of a
//! protected program under any name is that program; a copy of python3 is an
//! interpreter; a copy of ld.so is the loader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_common::abi::{self, word_hash, IdentityKey, IdentityValue};
use airlock_common::identity::fingerprint_file;
use airlock_policy::CompiledPolicy;


/// Where protected programs are looked for, besides the daemon's PATH and `--program-path`.
const STANDARD_BIN_DIRS: &[&str] =
    &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/snap/bin", "/opt/homebrew/bin"];

/// Where dynamic loaders live.
const LOADER_DIRS: &[&str] = &[
    "/lib64",
    "/lib",
    "/lib32",
    "/libx32",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Loader names known whether or not they are installed here.
const LOADER_NAMES: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
    "ld-linux-x32.so.2",
    "ld64.so.1",
    "ld64.so.2",
    "ld.so.1",
    "ld-musl-x86_64.so.1",
    "ld-musl-aarch64.so.1",
];

/// Programs that run the program (script) their first operand names. A name
/// is one of these, or one of these followed by a version (`python3.11`,
/// `perl5.36.0`). busybox and toybox dispatch on their first operand too.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "ash", "yash", "fish", "csh", "tcsh", "python", "python2",
    "python3", "pypy", "pypy3", "perl", "ruby", "node", "nodejs", "deno", "bun", "php", "lua", "luajit", "tclsh",
    "Rscript", "pwsh", "busybox", "toybox",
];

/// Binaries that are many programs at once, chosen by argv[0].
const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// More names than this in the search directories for one file: a multi-call
/// binary, whose content must not stand for any one of its applets.
const MULTI_CALL_NAMES: usize = 4;

/// Is `name` an interpreter's name (`python3`, `python3.11`, `perl5.36-x86_64-linux-gnu`)?
pub fn is_interpreter_name(name: &str) -> bool {
    INTERPRETERS.iter().any(|base| {
        name == *base
            || (name.strip_prefix(base).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && !name.contains("-config"))
    })
}

/// Is `name` a multi-call binary's (busybox, toybox)?
pub(crate) fn is_multi_call_name(name: &str) -> bool {
    MULTI_CALL.contains(&name)
}

fn is_loader_name(name: &str) -> bool {
    (name.starts_with("ld-") || name.starts_with("ld64.so") || name.starts_with("ld.so")) && name.contains(".so")
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// Why a file found by the scan must not speak for a protected program: the
/// identity map is shared by every session, so a file another user can
/// replace could make any content "terraform" in everyone's sessions.
/// Files in the operator's `--program-path` directories may have any owner.
fn untrusted(real: &Path, any_owner: bool) -> Option<&'static str> {
    let Ok(meta) = std::fs::metadata(real) else {
        return Some("cannot be read");
    };
    if meta.mode() & 0o022 != 0 {
        return Some("is writable by group or others");
    }
    let dir_writable = real.parent().and_then(|d| std::fs::metadata(d).ok()).is_none_or(|d| d.mode() & 0o022 != 0);
    if dir_writable {
        return Some("is in a directory writable by group or others");
    }
    if !any_owner && meta.uid() != 0 {
        return Some("is not owned by root (list its directory with --program-path to trust it)");
    }
    None
}

/// The directories searched for protected programs and interpreters, in order, without duplicates.
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut seen = BTreeSet::new();
    extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path_var))
        .chain(STANDARD_BIN_DIRS.iter().map(PathBuf::from))
        .filter(|d| d.is_absolute() && d.is_dir())
        .filter(|d| seen.insert(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())))
        .collect()
}

/// The identity table for one policy: what the kernel gets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdentityTable {
    pub entries: BTreeMap<IdentityKey, IdentityValue>,
    /// Human-readable notes on what was found and what was left out (logged).
    pub notes: Vec<String>,
    /// The protected program names, by their hash.
    pub programs: BTreeMap<u64, String>,
}

impl IdentityTable {
    fn mark_name(&mut self, name: &str, flags: u32) {
        let key = IdentityKey { kind: abi::IDKEY_NAME, pad: 0, hash: word_hash(name.as_bytes()) };
        self.entries.entry(key).or_default().flags |= flags;
    }

    fn mark_content(&mut self, path: &Path, flags: u32, program: Option<&str>) {
        let (hash, size) = match fingerprint_file(path) {
            Ok(found) => found,
            Err(e) => {
                self.notes.push(format!("{}: not fingerprinted ({e})", path.display()));
                return;
            }
        };
        self.add_content(hash, size, flags, program, path);
    }

    /// Marks the content `hash` of a file of `size` bytes (found at `path`, for the notes).
    pub(crate) fn add_content(&mut self, hash: u64, size: u64, flags: u32, program: Option<&str>, path: &Path) {
        // The kernel hashes a file's head only when its size is one of these.
        self.entries.entry(IdentityKey { kind: abi::IDKEY_SIZE, pad: 0, hash: size }).or_default();
        let value = self.entries.entry(IdentityKey { kind: abi::IDKEY_CONTENT, pad: 0, hash }).or_default();
        value.flags |= flags;
        if let Some(name) = program {
            let h = word_hash(name.as_bytes());
            let used = value.nnames as usize;
            if value.names[..used].contains(&h) {
                return;
            }
            if used == abi::IDENTITY_NAMES {
                self.notes.push(format!(
                    "{}: the same content already carries {} protected names; {name:?} is known by name only",
                    path.display(),
                    abi::IDENTITY_NAMES
                ));
                return;
            }
            value.names[used] = h;
            value.nnames += 1;
            value.flags |= abi::ID_PROGRAM;
        }
    }

    /// Contents that stand for protected programs.
    pub fn protected_contents(&self) -> usize {
        self.entries.iter().filter(|(k, v)| k.kind == abi::IDKEY_CONTENT && v.flags & abi::ID_PROGRAM != 0).count()
    }

    /// Which protected program a file is, by its resolved name or its content,
    /// and how that was found ("name" or "content").
    pub fn program_of_file(&self, path: &Path) -> Option<(String, &'static str)> {
        let real = std::fs::canonicalize(path).ok()?;
        let name = real.file_name()?.to_string_lossy().into_owned();
        if let Some(p) = self.programs.get(&word_hash(name.as_bytes())) {
            return Some((p.clone(), "name"));
        }
        let (hash, _) = fingerprint_regular_file(&real)?;
        let value = self.entries.get(&IdentityKey { kind: abi::IDKEY_CONTENT, pad: 0, hash })?;
        let first = value.names[..value.nnames as usize].iter().find_map(|h| self.programs.get(h))?;
        Some((first.clone(), "content"))
    }

    pub fn count(&self, kind: u32) -> usize {
        self.entries.keys().filter(|k| k.kind == kind).count()
    }

    /// The protected names the content `hash` carries.
    pub(crate) fn content_names(&self, hash: u64) -> Vec<u64> {
        self.entries.get(&IdentityKey { kind: abi::IDKEY_CONTENT, pad: 0, hash }).map_or(Vec::new(), |v| v.names[..v.nnames as usize].to_vec())
    }

    /// What the kernel knows the content `hash` as (0: nothing).
    pub(crate) fn content_flags(&self, hash: u64) -> u32 {
        self.entries.get(&IdentityKey { kind: abi::IDKEY_CONTENT, pad: 0, hash }).map_or(0, |v| v.flags)
    }
}

/// The fingerprint of a regular file and the file's metadata, opened without blocking:
/// the path comes from a governed session and could name a FIFO or a device.
pub(crate) fn fingerprint_regular_file(path: &Path) -> Option<(u64, std::fs::Metadata)> {
    fingerprint_open_file(&mut open_without_blocking(path)?)
}

/// `path` opened for reading, its last component not followed, without
/// waiting on a FIFO or a device's open.
pub(crate) fn open_without_blocking(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path).ok()
}

/// The fingerprint of an open regular file (its head, from the start) and its
/// metadata as they are now.
pub(crate) fn fingerprint_open_file(file: &mut std::fs::File) -> Option<(u64, std::fs::Metadata)> {
    use std::io::{Read, Seek};
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    file.rewind().ok()?;
    let mut head = [0u8; abi::HEAD_LEN];
    let mut filled = 0;
    while filled < abi::HEAD_LEN {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    Some((airlock_common::identity::fingerprint(&head, meta.len()), meta))
}

/// How many names in `dirs` lead (through symlinks or hard links) to each file.
fn names_per_file(dirs: &[PathBuf]) -> HashMap<(u64, u64), usize> {
    let mut counts = HashMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                if meta.is_file() {
                    *counts.entry((meta.dev(), meta.ino())).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

/// Builds the table: interpreters and loaders always, and the protected
/// programs `policy` names as found in `dirs`.
pub fn build(policy: &CompiledPolicy, dirs: &[PathBuf], explicit: &[PathBuf]) -> IdentityTable {
    let mut table = IdentityTable::default();

    // Names first: they hold even for programs installed after this scan.
    for name in INTERPRETERS {
        table.mark_name(name, abi::ID_INTERPRETER);
    }
    for name in LOADER_NAMES {
        table.mark_name(name, abi::ID_LOADER);
    }
    for dir in LOADER_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !is_loader_name(&name) || !is_elf(&path) {
                continue;
            }
            table.mark_name(&name, abi::ID_LOADER);
            if let Ok(real) = std::fs::canonicalize(&path) {
                if let Some(why) = untrusted(&real, false) {
                    table.notes.push(format!("{}: not used, it {why}", real.display()));
                    continue;
                }
                if let Some(real_name) = real.file_name() {
                    table.mark_name(&real_name.to_string_lossy(), abi::ID_LOADER);
                }
                table.mark_content(&real, abi::ID_LOADER, None);
            }
        }
    }

    let programs: BTreeSet<&str> =
        policy.roles.values().flat_map(|r| r.commands.iter().map(|c| c.program.as_str())).collect();
    table.programs = programs.iter().map(|p| (word_hash(p.as_bytes()), (*p).to_string())).collect();
    let links = names_per_file(dirs);
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let interpreter = is_interpreter_name(&name);
            let protected = programs.contains(name.as_str());
            if !interpreter && !protected {
                continue;
            }
            let path = entry.path();
            if !is_executable_file(&path) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if let Some(why) = untrusted(&real, explicit.contains(dir)) {
                table.notes.push(format!("{} ({}): not fingerprinted, it {why}", path.display(), real.display()));
                continue;
            }
            let real_name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if interpreter {
                table.mark_name(&name, abi::ID_INTERPRETER);
                table.mark_name(&real_name, abi::ID_INTERPRETER);
                table.mark_content(&real, abi::ID_INTERPRETER, None);
            }
            if protected {
                let names = std::fs::metadata(&real).map(|m| links.get(&(m.dev(), m.ino())).copied().unwrap_or(1)).unwrap_or(1);
                if MULTI_CALL.contains(&real_name.as_str()) || names > MULTI_CALL_NAMES {
                    table.notes.push(format!(
                        "{} is a multi-call binary ({} names lead to {}): {name:?} is recognised by name and argv[0], not by content",
                        path.display(),
                        names,
                        real.display()
                    ));
                    continue;
                }
                table.mark_content(&real, 0, Some(&name));
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_names_include_versions_but_not_tools() {
        for yes in ["python3", "python3.11", "perl5.36.0", "perl5.36-x86_64-linux-gnu", "sh", "bash", "node", "busybox"] {
            assert!(is_interpreter_name(yes), "{yes}");
        }
        for no in ["python3-config", "python3.11-config", "perldoc", "shred", "bashbug", "terraform", "nodeenv"] {
            assert!(!is_interpreter_name(no), "{no}");
        }
    }

    #[test]
    fn files_others_can_replace_are_not_trusted() {
        let dir = std::env::temp_dir().join(format!("airlock-identity-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let file = dir.join("terraform");
        std::fs::write(&file, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // The unit tests run as root or not; ownership is judged against root.
        let root = nix_is_root();
        assert_eq!(untrusted(&file, true), None);
        assert_eq!(untrusted(&file, false).is_none(), root);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(untrusted(&file, true), Some("is writable by group or others"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        assert_eq!(untrusted(&file, true), Some("is in a directory writable by group or others"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn nix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn loader_names() {
        for yes in ["ld-linux-x86-64.so.2", "ld-2.31.so", "ld-musl-x86_64.so.1", "ld64.so.2"] {
            assert!(is_loader_name(yes), "{yes}");
        }
        for no in ["ldd", "ld", "ld.bfd", "libc.so.6"] {
            assert!(!is_loader_name(no), "{no}");
        }
    }
}
