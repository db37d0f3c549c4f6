//! What a one-shot grant is bound to, computed in user space exactly as the
//! exec hooks compute it (exec.bpf.h, `grant_binding` and `args_hash`), so a
//! request opened before the command runs is the one its exec finds. And the
//! program a command line would run, found as the caller's shell finds it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_common::abi::{word_hash, FNV_OFFSET, FNV_PRIME};

/// The program a command would run, as seen from the caller's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The path execve would be given (PATH searched like a shell does).
    pub filename: String,
    /// A `#!` script: the kernel runs its interpreter.
    pub script: bool,
    /// FNV-1a of the device (kernel encoding), inode number and size, interleaved byte by byte.
    pub file_identity: u64,
}

/// Finds `argv0` like a shell: a name with a '/' is a path (relative to
/// `cwd`); else the first executable regular file among `path`'s directories.
/// Files are looked at through `/proc/PID/root`, the caller's own root.
pub fn find_program(pid: u32, argv0: &str, cwd: &str, path: &str) -> Option<Program> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let in_caller = |p: &Path| -> PathBuf {
        let absolute = if p.is_absolute() { p.to_path_buf() } else { Path::new(cwd).join(p) };
        root.join(absolute.strip_prefix("/").unwrap_or(&absolute))
    };
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![argv0.to_string()]
    } else {
        path.split(':').map(|dir| if dir.is_empty() { format!("./{argv0}") } else { format!("{}/{argv0}", dir.trim_end_matches('/')) }).collect()
    };
    for filename in candidates {
        let seen = in_caller(Path::new(&filename));
        let Ok(meta) = std::fs::metadata(&seen) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let mut head = [0u8; 2];
        let script = std::fs::File::open(&seen).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == *b"#!";
        let key = crate::protected::kernel_identity(meta.dev(), meta.ino());
        return Some(Program { filename, script, file_identity: file_identity(u64::from(key.dev), meta.ino(), meta.size()) });
    }
    None
}

/// The grant binding of `argv` run as `program`: (argv hash, exe identity).
/// A program run directly binds all of argv and the file; a script binds its
/// arguments after argv[0] and its path as execve was given it.
pub fn grant_binding(argv: &[String], program: &Program) -> (u64, u64) {
    if program.script {
        (args_hash(argv, 1), word_hash(program.filename.as_bytes()))
    } else {
        (args_hash(argv, 0), program.file_identity)
    }
}

/// The kernel's `args_hash`: the words' FNV-1a hashes from `start` on, folded in order, then their count.
pub fn args_hash(argv: &[String], start: usize) -> u64 {
    let mut h = FNV_OFFSET;
    for word in argv.iter().skip(start) {
        h = (h ^ word_hash(word.as_bytes())).wrapping_mul(FNV_PRIME);
    }
    (h ^ argv.len().saturating_sub(start) as u64).wrapping_mul(FNV_PRIME)
}

/// The kernel's file identity: FNV-1a over device, inode and size, a byte of each in turn.
pub fn file_identity(dev: u64, ino: u64, size: u64) -> u64 {
    let mut h = FNV_OFFSET;
    for i in 0..8 {
        for v in [dev, ino, size] {
            h = (h ^ ((v >> (8 * i)) & 0xff)).wrapping_mul(FNV_PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_finds_programs_in_path_order_and_scripts_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("airlock-binding-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "not executable").unwrap();
        std::fs::write(b.join("tool"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        let p = find_program(std::process::id(), "tool", "/", &path).expect("found in b");
        assert_eq!(p.filename, format!("{}/tool", b.display()));
        assert!(p.script);
        let argv = vec!["tool".to_string(), "up".to_string()];
        let (args, identity) = grant_binding(&argv, &p);
        assert_eq!(identity, word_hash(p.filename.as_bytes()));
        assert_eq!(args, args_hash(&["other-name".to_string(), "up".to_string()], 1), "a script's argv[0] is not bound");
        assert_ne!(args_hash(&argv, 0), args_hash(&["tool".to_string(), "up".to_string(), "x".to_string()], 0));
        assert!(find_program(std::process::id(), "missing-tool", "/", &path).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
