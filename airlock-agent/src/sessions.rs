//! Governed sessions: who started them, with which role, and whether their
//! root process still runs. The kernel tags processes; this is the registry
//! the audit trail and `status` read.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Running,
    Exited,
}

/// What the CLI and the audit trail know about a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub role: String,
    pub role_slot: u32,
    pub uid: u32,
    pub user: String,
    pub root_pid: u32,
    pub command: Vec<String>,
    pub cwd: String,
    pub tty: Option<String>,
    pub started_at: String,
    pub state: SessionState,
}

impl SessionInfo {
    /// The agent's name: the basename of the command it was launched with.
    pub fn agent(&self) -> String {
        self.command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
            .unwrap_or_default()
    }
}

struct Session {
    info: SessionInfo,
    /// Becomes readable when the root process exits; immune to pid reuse.
    pidfd: Option<OwnedFd>,
}

#[derive(Default)]
pub struct Sessions {
    by_id: BTreeMap<u64, Session>,
}

impl Sessions {
    pub fn insert(&mut self, id: u64, info: SessionInfo) {
        let pidfd = pidfd_open(info.root_pid);
        self.by_id.insert(id, Session { info, pidfd });
    }

    pub fn get(&self, id: u64) -> Option<&SessionInfo> {
        self.by_id.get(&id).map(|s| &s.info)
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        self.by_id.values().map(|s| s.info.clone()).collect()
    }

    pub fn running(&self) -> Vec<SessionInfo> {
        self.by_id.values().filter(|s| s.info.state == SessionState::Running).map(|s| s.info.clone()).collect()
    }

    /// Marks sessions whose root process has exited; returns their ids.
    pub fn reap(&mut self) -> Vec<String> {
        let mut ended = Vec::new();
        for session in self.by_id.values_mut() {
            if session.info.state != SessionState::Running {
                continue;
            }
            let exited = match &session.pidfd {
                Some(fd) => pidfd_exited(fd),
                None => !std::path::Path::new(&format!("/proc/{}", session.info.root_pid)).exists(),
            };
            if exited {
                session.info.state = SessionState::Exited;
                session.pidfd = None;
                ended.push(session.info.id.clone());
            }
        }
        ended
    }
}

/// A fresh, unguessable session id.
pub fn new_session_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom(&mut bytes) {
        let id = u64::from_ne_bytes(bytes);
        if id != 0 {
            return id;
        }
    }
    // The kernel's RNG is always there on supported kernels; this only keeps ids non-zero.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
    (t as u64) | 1
}

pub fn format_session_id(id: u64) -> String {
    format!("{id:016x}")
}

fn getrandom(buf: &mut [u8]) -> bool {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    n == buf.len() as isize
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && (pfd.revents & libc::POLLIN) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_differ() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(u64::from_str_radix(&format_session_id(a), 16).ok(), Some(a));
    }

    #[test]
    fn a_child_that_exits_ends_its_session() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().expect("spawn sleep");
        let mut sessions = Sessions::default();
        let info = SessionInfo {
            id: "s".into(),
            role: "default".into(),
            role_slot: 1,
            uid: 0,
            user: "root".into(),
            root_pid: child.id(),
            command: vec!["/usr/bin/sleep".into()],
            cwd: "/".into(),
            tty: None,
            started_at: String::new(),
            state: SessionState::Running,
        };
        assert_eq!(info.agent(), "sleep");
        sessions.insert(1, info);
        assert!(sessions.reap().is_empty());
        child.wait().expect("wait for sleep");
        assert_eq!(sessions.reap(), vec!["s".to_string()]);
        assert!(sessions.running().is_empty());
    }
}
