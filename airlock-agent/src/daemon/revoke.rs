//! Revocation: the kernel is marked first (so nothing the session does from
//! then on is allowed, and a process that forks dies), then every process of
//! the session gets SIGKILL, round after round until none is left (a fork that
//! raced a round is caught by the next), then the revocation is recorded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use airlock_api::decision::{DENY, REVOKE};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, Revocation as RevocationDetail};

use super::agent::{lock, Agent};
use crate::api::ops::{RevokeError, RevokeOutcome};
use crate::events::enrich::host_name;
use crate::sessions::{Revocation, SessionInfo};

/// How long revocation waits for the killed processes to be gone.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

impl Agent {
    pub fn revoke(&self, id: &str, by: &str, reason: &str) -> Result<RevokeOutcome, RevokeError> {
        let (key, _) = lock(&self.sessions).find(id).map(|(k, s)| (k, s.clone())).ok_or(RevokeError::NotFound)?;
        let maps = self.kernel.maps();
        maps.mark_revoked(key).map_err(RevokeError::Failed)?;
        let revocation = Revocation { at: crate::clock::now_rfc3339(), by: by.to_string(), reason: reason.to_string() };
        let session = lock(&self.sessions).revoke(key, revocation).ok_or(RevokeError::NotFound)?;

        let mut signalled = HashSet::new();
        let mut rounds = 0u32;
        let deadline = Instant::now() + REVOKE_WAIT;
        let remaining = loop {
            let pids = maps.session_processes(key);
            if pids.is_empty() {
                break 0;
            }
            if Instant::now() > deadline {
                break pids.len() as u32;
            }
            rounds += 1;
            for pid in pids {
                if self.kill_member(pid, key) {
                    signalled.insert(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let killed = signalled.len() as u32;
        tracing::warn!(session = %session.id, by, reason, killed, rounds, remaining, "session revoked");
        self.record(self.revocation_record(&session, by, reason, killed));
        if remaining > 0 {
            return Err(RevokeError::Failed(anyhow::anyhow!(
                "session {} is revoked (the kernel denies it everything), but {remaining} of its processes had not exited after {} s",
                session.id,
                REVOKE_WAIT.as_secs()
            )));
        }
        Ok(RevokeOutcome { session, killed, rounds, remaining })
    }

    /// SIGKILL to one member of a session, through a pidfd: the pid is checked
    /// to still be the session's after the pidfd pins the process, so a
    /// recycled pid is never hit.
    fn kill_member(&self, pid: u32, session: u64) -> bool {
        // SAFETY: plain syscall; the fd is closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return false;
        }
        let fd = fd as libc::c_int;
        let maps = self.kernel.maps();
        let member = maps.tag_of(pid).map(|t| t.session_id) == Some(session) || maps.session_processes(session).contains(&pid);
        let sent = member
            // SAFETY: fd is a pidfd we own; no siginfo.
            && unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) } == 0;
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        sent
    }

    fn revocation_record(&self, s: &SessionInfo, by: &str, reason: &str, killed: u32) -> Decision {
        let now = crate::clock::now_unix_nanos();
        Decision {
            time: crate::clock::rfc3339_from_unix_nanos(now.into()),
            time_unix_nanos: now,
            host: host_name(),
            kind: REVOKE.to_string(),
            decision: DENY.to_string(),
            reason: "revoked".to_string(),
            session_id: s.id.clone(),
            role: s.role.clone(),
            agent: s.agent(),
            uid: s.uid,
            user: s.user.clone(),
            pid: s.root_pid,
            argv: s.command.clone(),
            cwd: s.cwd.clone(),
            rule: Some(format!("revoked by {by}: {reason} ({killed} processes killed)")),
            backend: self.kernel.backend().to_string(),
            policy_generation: lock(&self.policy).generation(),
            detail: Some(Detail::Revocation(RevocationDetail { by: by.to_string(), reason: reason.to_string(), killed })),
            ..Default::default()
        }
    }
}
