//! What the last exec of a governed process showed, for its later connects
//! and file opens: a short-lived process may be gone before /proc can be read.

use std::collections::{HashMap, VecDeque};
use std::io::Read;

use super::decode::split_argv;

#[derive(Debug, Clone)]
pub struct ProcImage {
    pub executable: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub ppid: u32,
}

impl ProcImage {
    /// What /proc shows of a live process now (none when it is gone).
    pub fn read(tgid: u32) -> Option<ProcImage> {
        let process = procfs::process::Process::new(tgid as i32).ok()?;
        let text = |p: procfs::ProcResult<std::path::PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        // argv as the kernel stores it, bytes and empty words included (procfs's
        // cmdline() wants UTF-8 and drops empty words).
        let mut raw = Vec::new();
        let argv = match process.open_relative("cmdline").map(|mut f| f.read_to_end(&mut raw)) {
            Ok(Ok(_)) => split_argv(&raw),
            _ => Vec::new(),
        };
        Some(ProcImage {
            executable: text(process.exe()),
            argv,
            cwd: text(process.cwd()),
            ppid: process.stat().map(|s| s.ppid as u32).unwrap_or(0),
        })
    }
}

/// One remembered image in one allocation: an exec storm remembers a new
/// process at every exec and forgets the oldest, and seven allocations made
/// and freed each time were a measurable part of the event thread. Paths and
/// argv words hold no NUL (the kernel separates them with it), so NUL
/// separates them here: the executable, the cwd, then the `argc` words.
struct PackedImage {
    text: Box<str>,
    argc: usize,
    ppid: u32,
}

impl PackedImage {
    fn pack(executable: &str, argv: &[String], cwd: &str, ppid: u32) -> PackedImage {
        debug_assert!(!executable.contains('\0') && !cwd.contains('\0') && argv.iter().all(|w| !w.contains('\0')), "a NUL would shift the image's fields");
        let mut text = String::with_capacity(executable.len() + cwd.len() + 2 + argv.iter().map(|w| w.len() + 1).sum::<usize>());
        text.push_str(executable);
        text.push('\0');
        text.push_str(cwd);
        for word in argv {
            text.push('\0');
            text.push_str(word);
        }
        PackedImage { text: text.into_boxed_str(), argc: argv.len(), ppid }
    }

    fn unpack(&self) -> ProcImage {
        let mut parts = self.text.splitn(3, '\0');
        let executable = parts.next().unwrap_or_default().to_string();
        let cwd = parts.next().unwrap_or_default().to_string();
        let argv = match (self.argc, parts.next()) {
            (0, _) | (_, None) => Vec::new(),
            (argc, Some(words)) => words.splitn(argc, '\0').map(str::to_string).collect(),
        };
        ProcImage { executable, argv, cwd, ppid: self.ppid }
    }
}

/// Bounded: the oldest process is forgotten first.
#[derive(Default)]
pub struct ProcCache {
    images: HashMap<u32, PackedImage>,
    order: VecDeque<u32>,
}

impl ProcCache {
    /// Recent processes, not all of them: a process that connects long after
    /// its exec is still in /proc. (Each entry holds an argv: 16,384 of them
    /// were 5 MB of the daemon's memory in an exec storm.)
    const CAPACITY: usize = 4_096;

    pub fn remember(&mut self, tgid: u32, executable: &str, argv: &[String], cwd: &str, ppid: u32) {
        if self.images.insert(tgid, PackedImage::pack(executable, argv, cwd, ppid)).is_none() {
            self.order.push_back(tgid);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.images.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, tgid: u32) -> Option<ProcImage> {
        self.images.get(&tgid).map(PackedImage::unpack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_read_from_proc() {
        let me = ProcImage::read(std::process::id()).expect("this process is in /proc");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(!me.argv.is_empty());
        assert_eq!(me.executable, std::env::current_exe().expect("exe").display().to_string());
    }

    #[test]
    fn the_oldest_process_is_forgotten_first() {
        let mut cache = ProcCache::default();
        for pid in 0..=ProcCache::CAPACITY as u32 {
            cache.remember(pid, "", &[], "", 1);
        }
        assert!(cache.get(0).is_none());
        assert!(cache.get(1).is_some());
    }

    #[test]
    fn an_image_comes_back_as_it_was_remembered() {
        let mut cache = ProcCache::default();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            ("/usr/bin/terraform", words(&["terraform", "apply", "-auto-approve"]), "/home/a/infra"),
            ("/usr/bin/true", words(&[]), "/"),
            ("", words(&[""]), ""),
            ("/bin/sh", words(&["sh", "", "-c", "echo  a", ""]), "/tmp/a b"),
        ];
        for (pid, (exe, argv, cwd)) in cases.iter().enumerate() {
            cache.remember(pid as u32, exe, argv, cwd, 40 + pid as u32);
        }
        for (pid, (exe, argv, cwd)) in cases.iter().enumerate() {
            let image = cache.get(pid as u32).expect("remembered");
            assert_eq!((image.executable.as_str(), &image.argv, image.cwd.as_str(), image.ppid), (*exe, argv, *cwd, 40 + pid as u32));
        }
        cache.remember(1, "/usr/bin/kubectl", &words(&["kubectl", "get"]), "/srv", 9);
        let again = cache.get(1).expect("remembered again");
        assert_eq!((again.executable.as_str(), again.argv.len(), again.ppid), ("/usr/bin/kubectl", 2, 9), "a pid's new exec replaces its image");
    }
}
