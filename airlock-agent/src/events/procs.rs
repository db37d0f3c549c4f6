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

/// Bounded: the oldest process is forgotten first.
#[derive(Default)]
pub struct ProcCache {
    images: HashMap<u32, ProcImage>,
    order: VecDeque<u32>,
}

impl ProcCache {
    /// Recent processes, not all of them: a process that connects long after
    /// its exec is still in /proc. (Each entry holds an argv: 16,384 of them
    /// were 5 MB of the daemon's memory in an exec storm.)
    const CAPACITY: usize = 4_096;

    pub fn remember(&mut self, tgid: u32, image: ProcImage) {
        if self.images.insert(tgid, image).is_none() {
            self.order.push_back(tgid);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.images.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, tgid: u32) -> Option<&ProcImage> {
        self.images.get(&tgid)
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
        let image = ProcImage { executable: String::new(), argv: Vec::new(), cwd: String::new(), ppid: 1 };
        for pid in 0..=ProcCache::CAPACITY as u32 {
            cache.remember(pid, image.clone());
        }
        assert!(cache.get(0).is_none());
        assert!(cache.get(1).is_some());
    }
}
