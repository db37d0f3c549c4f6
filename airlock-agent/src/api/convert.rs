//! The daemon's session and status records as API messages. (Decisions need
//! no conversion: the record every sink gets is the API's own message.)

use airlock_api::v1 as pb;

use crate::kernel::Startup;
use crate::protocol::{LifecycleStatus, StatusReport};
use crate::sessions::{SessionInfo, SessionState};

pub fn state_of(s: SessionState) -> pb::SessionState {
    match s {
        SessionState::Ready => pb::SessionState::Ready,
        SessionState::Running => pb::SessionState::Running,
        SessionState::Exited => pb::SessionState::Exited,
        SessionState::Revoked => pb::SessionState::Revoked,
    }
}

pub fn session_of(s: &SessionInfo, processes: u32) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        state: state_of(s.state) as i32,
        role: s.role.clone(),
        uid: s.uid,
        user: s.user.clone(),
        root_pid: s.root_pid,
        command: s.command.clone(),
        agent: s.agent(),
        cwd: s.cwd.clone(),
        tty: s.tty.clone(),
        started_at: s.started_at.clone(),
        processes,
        ended_at: s.ended_at.clone(),
        revoked_by: s.revocation.as_ref().map(|r| r.by.clone()),
        revoke_reason: s.revocation.as_ref().map(|r| r.reason.clone()),
    }
}

pub fn status_of(r: StatusReport, sessions: Vec<pb::Session>, store: pb::StoreStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        version: r.version,
        pid: r.pid,
        backend: r.backend,
        hooks: r
            .hooks
            .into_iter()
            .map(|h| pb::Hook { attached: !h.on_demand || r.on_demand_attached, on_demand: h.on_demand, program: h.program, attach_point: h.attach_point })
            .collect(),
        guarantees: r.guarantees,
        policy: Some(pb::PolicyStatus {
            version: r.policy.version,
            source: r.policy.source,
            generation: r.policy.generation,
            roles: r.policy.roles,
            rules: r.policy.rules as u64,
            loaded_at: r.policy.loaded_at,
            last_reload_error: r.policy.last_reload_error,
            protected_contents: r.policy.protected_contents as u64,
            learned_identities: r.policy.learned_identities as u64,
            learned_evicted: r.policy.learned_evicted,
            learn_dropped: r.policy.learn_dropped,
            learn_already_known: r.policy.learn_already_known,
            hostnames: r
                .policy
                .hostnames
                .into_iter()
                .map(|h| pb::HostnameStatus { host: h.host, addresses: h.addresses, ttl: h.ttl, resolved_at: h.resolved_at, error: h.error })
                .collect(),
        }),
        default_role: r.default_role,
        sessions,
        tagged_processes: r.tagged_processes as u64,
        counters: Some(pb::Counters {
            decisions: r.counters.decisions,
            denies: r.counters.denies,
            ringbuf_drops: r.counters.ringbuf_drops,
            tag_failures: r.counters.tag_failures,
            tamper: r.counters.tamper,
        }),
        events_received: r.events_received,
        audit_lines: r.audit_lines,
        audit_path: r.audit_path,
        store: Some(store),
        protected_files: r.protected_files as u64,
        lifecycle: r.lifecycle.map(lifecycle),
        gateway: None,
    }
}

/// Restart and pinning status, as the API reports it.
fn lifecycle(l: LifecycleStatus) -> pb::Lifecycle {
    let startup = match l.startup {
        Startup::Fresh => pb::Startup { kind: "fresh".into(), ..Default::default() },
        Startup::Adopted { set, pinned_by_pid, pinned_by_version, pinned_at } => {
            pb::Startup { kind: "adopted".into(), set, pinned_by_pid, pinned_by_version, pinned_at, ..Default::default() }
        }
        Startup::Replaced { old_sets, reason, tags_copied } => {
            pb::Startup { kind: "replaced".into(), old_sets, reason, tags_copied: tags_copied as u64, ..Default::default() }
        }
    };
    let f = l.fd_store;
    let fd_store = pb::FdStore {
        active: f.active,
        received: f.received,
        taken_back: f.taken_back,
        ignored: f.ignored,
        repinned: f.repinned,
        stored: f.stored,
        withdrawn: f.withdrawn,
        error: f.error,
    };
    pb::Lifecycle {
        pin_dir: l.pin_dir,
        pinned_set: l.pinned_set,
        startup: Some(startup),
        backlog_audited: l.backlog_audited,
        on_stop: l.on_stop,
        fd_store: Some(fd_store),
    }
}
