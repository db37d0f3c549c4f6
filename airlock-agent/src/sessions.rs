//! Governed sessions: who started them, with which role, and whether their
//! root process still runs. The kernel tags processes; this is the registry
//! the audit trail and `status` read.
//!
//! States: `ready` (registered and tagged, `launch` has not yet exec'd the
//! agent), `running` (the daemon saw the session's first allowed exec),
//! `exited` (its root process ended), `revoked` (revoked through the API: its
//! processes were killed and the kernel denies it everything).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Running,
    Exited,
    /// api (issue 4): launch registered the session but has not exec'd yet.
    Ready,
    /// api (issue 4): revoked through the API.
    Revoked,
}

impl SessionState {
    /// Ready or running: the session can still act.
    pub fn is_active(self) -> bool {
        matches!(self, SessionState::Ready | SessionState::Running)
    }
}

/// api (issue 4): who revoked a session, when and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    pub at: String,
    pub by: String,
    pub reason: String,
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
    /// api (issue 4): when the root process exited or the session was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
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

    /// Sessions that are ready or running.
    pub fn running(&self) -> Vec<SessionInfo> {
        self.by_id.values().filter(|s| s.info.state.is_active()).map(|s| s.info.clone()).collect()
    }

    /// A session by the id the CLI shows (16 hex digits).
    pub fn find(&self, id: &str) -> Option<(u64, &SessionInfo)> {
        let key = u64::from_str_radix(id.trim(), 16).ok()?;
        self.by_id.get(&key).map(|s| (key, &s.info))
    }

    /// The session's agent has started: ready -> running.
    pub fn mark_running(&mut self, id: u64) {
        if let Some(s) = self.by_id.get_mut(&id) {
            if s.info.state == SessionState::Ready {
                s.info.state = SessionState::Running;
            }
        }
    }

    /// Marks the session revoked (whatever its state: an exited session's
    /// orphans may still run). Returns the updated record.
    pub fn revoke(&mut self, id: u64, revocation: Revocation) -> Option<SessionInfo> {
        let s = self.by_id.get_mut(&id)?;
        if s.info.ended_at.is_none() {
            s.info.ended_at = Some(revocation.at.clone());
        }
        s.info.state = SessionState::Revoked;
        s.info.revocation = Some(revocation);
        s.pidfd = None;
        Some(s.info.clone())
    }

    /// Marks sessions whose root process has exited; returns their ids.
    pub fn reap(&mut self) -> Vec<String> {
        let mut ended = Vec::new();
        for session in self.by_id.values_mut() {
            if !session.info.state.is_active() {
                continue;
            }
            let exited = match &session.pidfd {
                Some(fd) => pidfd_exited(fd),
                None => !std::path::Path::new(&format!("/proc/{}", session.info.root_pid)).exists(),
            };
            if exited {
                session.info.state = SessionState::Exited;
                session.info.ended_at = Some(crate::daemon::now_rfc3339());
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
            state: SessionState::Ready,
            ended_at: None,
            revocation: None,
        };
        assert_eq!(info.agent(), "sleep");
        sessions.insert(1, info);
        assert!(sessions.reap().is_empty());
        sessions.mark_running(1);
        assert_eq!(sessions.get(1).map(|s| s.state), Some(SessionState::Running));
        child.wait().expect("wait for sleep");
        assert_eq!(sessions.reap(), vec!["s".to_string()]);
        assert!(sessions.running().is_empty());
    }

    #[test]
    fn a_revoked_session_stays_revoked() {
        let mut sessions = Sessions::default();
        let info = SessionInfo {
            id: format_session_id(0xabc),
            role: "default".into(),
            role_slot: 1,
            uid: 0,
            user: "root".into(),
            root_pid: std::process::id(),
            command: vec!["agent".into()],
            cwd: "/".into(),
            tty: None,
            started_at: String::new(),
            state: SessionState::Ready,
            ended_at: None,
            revocation: None,
        };
        sessions.insert(0xabc, info);
        assert_eq!(sessions.find("0000000000000abc").map(|(k, _)| k), Some(0xabc));
        let r = Revocation { at: "t".into(), by: "root".into(), reason: "test".into() };
        let revoked = sessions.revoke(0xabc, r.clone()).expect("known session");
        assert_eq!(revoked.state, SessionState::Revoked);
        assert_eq!(revoked.revocation, Some(r));
        // Revoked is final: an event from a late process does not revive it, reaping leaves it.
        sessions.mark_running(0xabc);
        assert!(sessions.reap().is_empty());
        assert_eq!(sessions.get(0xabc).map(|s| s.state), Some(SessionState::Revoked));
        assert!(sessions.running().is_empty());
    }
}
