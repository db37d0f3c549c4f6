//! What the daemon reports about itself: backend, hooks, guarantees, the
//! policy in force, sessions, counters, the pinned enforcement.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use airlock_api::v1 as pb;
use anyhow::Result;

use super::agent::{lock, Agent, Peer};
use crate::kernel::Backend;
use crate::protocol::{LifecycleStatus, PolicyStatus, StatusReport};
use crate::sessions::SessionInfo;

impl Agent {
    /// The status as `peer` may see it (other users' sessions hidden from non-root callers).
    pub fn status_report(&self, peer: &Peer) -> Result<StatusReport> {
        let store = lock(&self.policy);
        let current = store.current();
        let policy = PolicyStatus {
            version: current.map(|c| c.version.clone()).unwrap_or_default(),
            source: store.origin().describe(),
            generation: store.generation(),
            roles: current.map(|c| c.roles.keys().cloned().collect()).unwrap_or_default(),
            rules: current.map(|c| c.rules.len()).unwrap_or(0),
            loaded_at: store.loaded_at().map(crate::clock::rfc3339).unwrap_or_default(),
            last_reload_error: store.last_error().map(str::to_string),
            protected_contents: store.identities().installed().protected_contents(),
            learned_identities: store.identities().learned().len(),
            learned_evicted: store.identities().learned().evicted(),
            learn_dropped: self.learner.dropped.load(Ordering::Relaxed),
            learn_already_known: self.learner.already_known.load(Ordering::Relaxed),
            hostnames: store.host_status(),
        };
        drop(store);
        let maps = self.kernel.maps();
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            backend: self.kernel.backend().to_string(),
            hooks: self.kernel.hooks().to_vec(),
            on_demand_attached: self.kernel.on_demand_attached(),
            guarantees: {
                let mut g = guarantees(self.kernel.backend());
                g.extend(self.kernel.gaps().iter().map(|gap| format!("not guaranteed: {gap}")));
                g
            },
            policy,
            default_role: self.default_role(),
            sessions: peer.visible(lock(&self.sessions).running()),
            tagged_processes: maps.tagged().len(),
            counters: maps.counters()?,
            events_received: self.events_received.load(Ordering::Relaxed),
            audit_lines: self.audit.lines.load(Ordering::Relaxed),
            audit_path: self.audit.path.display().to_string(),
            protected_files: lock(&self.protected).count(),
            lifecycle: Some(LifecycleStatus {
                pin_dir: self.kernel.pin_dir().display().to_string(),
                pinned_set: self.kernel.pinned_set().display().to_string(),
                startup: self.kernel.startup().clone(),
                backlog_audited: self.backlog_audited.load(Ordering::Relaxed),
                on_stop: if self.release_on_exit { "release".into() } else { "enforcement stays pinned".into() },
                fd_store: lock(&self.fd_store).clone(),
            }),
        })
    }

    /// The status as the API reports it.
    pub fn api_status(&self) -> Result<pb::StatusResponse> {
        let report = self.status_report(&Peer::API)?;
        let counts = self.kernel.maps().processes_per_session();
        let sessions = lock(&self.sessions).running().iter().map(|s| api_session(s, &counts)).collect();
        let (decisions, bytes) = self.store.stats().unwrap_or_default();
        let retention = self.store.retention();
        let store = pb::StoreStatus {
            path: self.store.path().display().to_string(),
            decisions,
            bytes,
            dropped: self.store.dropped(),
            max_age_seconds: retention.max_age.as_secs(),
            max_bytes: retention.max_bytes,
        };
        let mut status = crate::api::convert::status_of(report, sessions, store);
        status.gateway = self.gateway.as_ref().map(|g| {
            let bundle = crate::policy::bundle_file::BundleFile::read(&crate::gateway::bundle_path(&self.state_dir)).ok().flatten();
            g.state.status(&g.spool.stats(), bundle.map(|b| b.version).unwrap_or(0))
        });
        Ok(status)
    }

    /// Every session, newest first.
    pub fn api_sessions(&self) -> Vec<pb::Session> {
        let counts = self.kernel.maps().processes_per_session();
        let mut list = lock(&self.sessions).list();
        list.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        list.iter().map(|s| api_session(s, &counts)).collect()
    }
}

fn api_session(s: &SessionInfo, counts: &HashMap<u64, u32>) -> pb::Session {
    let n = u64::from_str_radix(&s.id, 16).ok().and_then(|k| counts.get(&k).copied()).unwrap_or(0);
    crate::api::convert::session_of(s, n)
}

/// What a backend guarantees, and what it does not.
fn guarantees(backend: Backend) -> Vec<String> {
    let mut g = vec![
        "session membership follows every fork before the child runs".to_string(),
        "exec decided from the new image's own argv (no argument-rewrite race)".to_string(),
        "programs recognised by content too (hard links, copies); fileless exec and the loader run directly denied by default".to_string(),
        "enforcement pinned in bpffs: it stays in force while the daemon is stopped or dead; a restart re-adopts the sessions and audits what was decided meanwhile".to_string(),
    ];
    match backend {
        Backend::Lsm => {
            g.push("blocked exec refused with EPERM before it starts".into());
            g.push("egress refused with EPERM at socket_connect / socket_sendmsg".into());
            g.push("Unix socket rules judged on the socket the kernel resolved (unix_stream_connect / unix_may_send): symlinks and bind mounts do not hide a denied socket".into());
            g.push("tamper: governed processes (root included) are refused bpf(), signals and ptrace to the daemon (also /proc/PID/mem, pidfd_getfd, process_vm_*), module loading and kexec, bpffs access, unlink/rename/umount in bpffs, cgroupfs writes, and any change to Airlock's policy, state and executable files".into());
            g.push("protected files: opened only by the programs the policy allows (EPERM otherwise)".into());
            g.push("not guaranteed: what root does outside the session's processes (item 17), raw block-device reads of protected files".into());
        }
        Backend::Compat => {
            g.push("blocked exec killed (SIGKILL) before its first instruction; the caller sees a kill, not EPERM".into());
            g.push("egress refused with EPERM by cgroup connect/sendmsg hooks on the cgroup2 root".into());
            g.push("Unix socket rules judged on the path as the caller wrote it (cgroup/connect_unix, kernels >= 6.7): a symlink or bind mount to a denied socket is not seen".into());
            g.push("tamper DETECTED, not prevented: bpf(), signals/ptrace/process_vm_*/pidfd_getfd aimed at the daemon, module loading, kexec, opens in bpffs, opens for writing in cgroupfs, the daemon's /proc files and Airlock's policy and state files: the call runs, then the offender is killed and audited".into());
            g.push("SIGTERM/SIGINT/SIGHUP from a governed process are ignored by the daemon; SIGKILL/SIGSTOP from governed root still stop it (needs the LSM backend)".into());
            g.push("protected files: an open by a program the policy does not allow kills the opener before it returns to user space (a sibling thread can race a read; io_uring opens are not seen)".into());
            g.push("not guaranteed: unlink/rename/umount in bpffs, and rename/unlink/truncate of Airlock's policy and state files, by governed root (not seen)".into());
            g.push("not guaranteed: a #! script run under another name is judged by that name (detected afterwards in the audit trail)".into());
        }
    }
    g
}
