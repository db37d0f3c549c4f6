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
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Running,
    Exited,
    /// Launch registered the session but has not exec'd yet.
    Ready,
    /// Revoked through the API.
    Revoked,
}

impl SessionState {
    /// Ready or running: the session can still act.
    pub fn is_active(self) -> bool {
        matches!(self, SessionState::Ready | SessionState::Running)
    }
}

/// Who revoked a session, when and why.
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
    /// When the root process exited or the session was revoked.
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
    /// `<state-dir>/sessions.json`, rewritten (atomically) on every change, so a
    /// restarted daemon knows the sessions its pinned tags belong to.
    file: Option<PathBuf>,
}

/// The persisted form: every session with its numeric id.
#[derive(Serialize, Deserialize)]
struct SavedSession {
    numeric_id: u64,
    #[serde(flatten)]
    info: SessionInfo,
}

/// What a restart made of the saved sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub running: usize,
    /// Sessions whose root process ended while no daemon ran.
    pub ended_while_down: usize,
}

impl Sessions {
    /// An empty registry that persists to `file`.
    pub fn persistent(file: PathBuf) -> Sessions {
        Sessions { by_id: BTreeMap::new(), file: Some(file) }
    }

    /// Reads the saved sessions and reconciles them with the kernel's tags:
    /// a session is still running only if its root process is alive and still
    /// carries the session's tag (a pid reused by another process does not).
    pub fn restore(file: PathBuf, tag_of: impl Fn(u32) -> Option<u64>) -> Result<(Sessions, Restored)> {
        let mut sessions = Sessions::persistent(file.clone());
        let mut restored = Restored::default();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((sessions, restored)),
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        let saved: Vec<SavedSession> = match serde_json::from_str(&text) {
            Ok(saved) => saved,
            Err(e) => {
                // Never a reason not to start: the tags in the kernel still govern
                // those sessions; only their names for the audit trail are lost.
                let aside = file.with_extension(format!("corrupt-{}", std::process::id()));
                let _ = std::fs::rename(&file, &aside);
                tracing::error!(file = %file.display(), moved_to = %aside.display(), "the saved sessions are unreadable ({e}); starting without them");
                return Ok((sessions, restored));
            }
        };
        for SavedSession { numeric_id, mut info } in saved {
            let mut pidfd = None;
            if info.state.is_active() {
                // pidfd first, then the tag: if the tag still matches, the pidfd is the root process.
                let fd = pidfd_open(info.root_pid);
                if fd.as_ref().is_some_and(|fd| !pidfd_exited(fd)) && tag_of(info.root_pid) == Some(numeric_id) {
                    pidfd = fd;
                    restored.running += 1;
                } else {
                    info.state = SessionState::Exited;
                    restored.ended_while_down += 1;
                }
            }
            sessions.by_id.insert(numeric_id, Session { info, pidfd });
        }
        sessions.save();
        Ok((sessions, restored))
    }

    pub fn insert(&mut self, id: u64, info: SessionInfo) {
        let pidfd = pidfd_open(info.root_pid);
        self.by_id.insert(id, Session { info, pidfd });
        self.save();
    }

    /// Writes the registry to its file (temp file, fsync, rename). A failure is
    /// logged: the sessions stay governed, only a restart would know less.
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let saved: Vec<SavedSession> = self.by_id.iter().map(|(id, s)| SavedSession { numeric_id: *id, info: s.info.clone() }).collect();
        if let Err(e) = crate::state_file::write_atomically(file, &saved) {
            tracing::error!("could not save the sessions: {e:#}");
        }
    }

    pub fn get(&self, id: u64) -> Option<&SessionInfo> {
        self.by_id.get(&id).map(|s| &s.info)
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        self.by_id.values().map(|s| s.info.clone()).collect()
    }

    /// Whether any session is ready or running.
    pub fn any_active(&self) -> bool {
        self.by_id.values().any(|s| s.info.state.is_active())
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
                self.save();
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
        let info = s.info.clone();
        self.save();
        Some(info)
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
                None => !procfs::process::Process::new(session.info.root_pid as i32).is_ok_and(|p| p.is_alive()),
            };
            if exited {
                session.info.state = SessionState::Exited;
                session.info.ended_at = Some(crate::clock::now_rfc3339());
                session.pidfd = None;
                ended.push(session.info.id.clone());
            }
        }
        if !ended.is_empty() {
            self.save();
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

    fn info(id: &str, pid: u32) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            role: "agent".into(),
            role_slot: 1,
            uid: 0,
            user: "root".into(),
            root_pid: pid,
            command: vec!["bash".into()],
            cwd: "/".into(),
            tty: None,
            started_at: String::new(),
            state: SessionState::Running,
            ended_at: None,
            revocation: None,
        }
    }

    #[test]
    fn a_restart_keeps_only_sessions_whose_root_still_carries_the_tag() {
        let dir = std::env::temp_dir().join(format!("airlock-sessions-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sessions.json");
        let mut alive = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let mut gone = std::process::Command::new("true").spawn().expect("spawn true");
        gone.wait().unwrap();
        {
            let mut s = Sessions::persistent(file.clone());
            s.insert(1, info("a", alive.id()));
            s.insert(2, info("b", gone.id()));
            s.insert(3, info("c", alive.id()));
        }
        // Session 1 owns the live pid's tag; 3 claims the same pid but the tag says otherwise.
        let (restored, counts) = Sessions::restore(file.clone(), |pid| (pid == alive.id()).then_some(1)).unwrap();
        assert_eq!(counts, Restored { running: 1, ended_while_down: 2 });
        assert_eq!(restored.running().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(restored.list().len(), 3);
        // The reconciled states were saved.
        let (again, _) = Sessions::restore(file.clone(), |_| None).unwrap();
        assert_eq!(again.get(3).map(|s| s.state), Some(SessionState::Exited));

        // An unreadable file is moved aside, never a reason not to start.
        std::fs::write(&file, "{ not json").unwrap();
        let (empty, _) = Sessions::restore(file.clone(), |_| None).unwrap();
        assert!(empty.list().is_empty());
        assert!(std::fs::read_dir(&dir).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains("corrupt")));

        alive.kill().unwrap();
        alive.wait().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
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
