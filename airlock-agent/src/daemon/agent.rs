//! The agent facade: everything the daemon's threads share, one lock per
//! concept. The control socket, the API and the daemon's own threads act
//! through it (its operations live beside this file, one concept each); it
//! acts on the kernel, the policy store and the sessions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use airlock_store::Store;
use tokio::sync::broadcast;

use crate::approvals::Approvals;
use crate::gateway::LinkState;
use crate::kernel::Kernel;
use crate::masking::{Masker, Masking};
use crate::pipeline::audit::AuditStats;
use crate::pipeline::{Pipeline, Record};
use crate::policy::PolicyStore;
use crate::protected::ProtectedFiles;
use crate::sessions::{SessionInfo, Sessions};

/// Restart state lives in its own subdirectory of the state dir. Its files are
/// rewritten atomically (a new inode each time), so the guard protects the
/// directory as well as each file: nothing may be created, renamed or removed
/// in it by a governed process.
pub const RESTART_DIR: &str = "restart";
pub const SESSIONS_FILE: &str = "restart/sessions.json";
pub const POLICY_STATE_FILE: &str = "restart/policy-state.json";
pub const APPROVALS_FILE: &str = "restart/approvals.json";
pub const SECURITY_FILE: &str = "restart/security.json";
pub const LEARNED_FILE: &str = "restart/learned-identities.json";
pub const AUDIT_FILE: &str = "audit.jsonl";
const DEFAULT_ROLE_FILE: &str = "default-role";
const FALLBACK_ROLE: &str = "default";

pub struct Agent {
    pub kernel: Kernel,
    pub policy: Mutex<PolicyStore>,
    /// Held for a whole reload (the policy store only for parts of it).
    pub reloading: Mutex<()>,
    /// A reload asked for by SIGHUP or a changed policy directory, and why; the
    /// reload thread runs it, so neither signals nor the watchdog wait on DNS.
    pub reload_request: Mutex<Option<&'static str>>,
    pub reload_wakeup: Condvar,
    pub sessions: Mutex<Sessions>,
    /// Decisions to the sinks: the audit trail, the store, the live stream.
    pub pipeline: Mutex<Pipeline>,
    pub audit: Arc<AuditStats>,
    pub store: Arc<Store>,
    pub live: broadcast::Sender<Arc<Record>>,
    pub state_dir: PathBuf,
    /// Masks command lines before any sink or message sees them; replaceable
    /// while running ([`Agent::set_masker`]).
    pub masking: Arc<Masking>,
    pub shutdown: AtomicBool,
    pub events_received: AtomicU64,
    /// Protected files resolved in the session users' homes.
    pub protected: Mutex<ProtectedFiles>,
    /// Decisions read from the ring buffer at start (made while no daemon ran).
    pub backlog_audited: AtomicU64,
    pub release_on_exit: bool,
    /// systemd's file descriptor store, as published at start.
    pub fd_store: Mutex<crate::protocol::FdStoreStatus>,
    /// The gateway link's state and spool, when the daemon has a gateway.
    pub gateway: Option<GatewayHandle>,
    /// Approval requests and the grants their verdicts wrote.
    pub approvals: Mutex<Approvals>,
    /// Webhooks and email for approvers (disabled when none is configured).
    pub notifier: airlock_notify::Notifier,
    /// Each session's latest denial, for a governed process asking why (the
    /// store writes in batches; this answers at once).
    pub last_denials: Mutex<std::collections::HashMap<String, airlock_api::v1::Decision>>,
    /// Security findings and the blocks in force (this host's or the gateway's).
    pub security: Mutex<crate::security::Security>,
    /// Execs of protected programs' files, waiting to be learned (exec identity).
    pub learner: super::learn_queue::LearnQueue,
}

/// What `status` shows of the gateway link.
pub struct GatewayHandle {
    pub state: Arc<LinkState>,
    pub spool: airlock_spool::Spool,
}

/// Who is asking, as the kernel says (SO_PEERCRED), not as the client claims.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

impl Peer {
    /// The API is privileged (its socket is root's and the airlock group's, or
    /// mutual TLS): it sees what root sees.
    pub const API: Peer = Peer { pid: 0, uid: 0 };

    /// Command lines are other users' business: non-root callers see only their own sessions.
    pub fn visible(&self, sessions: Vec<SessionInfo>) -> Vec<SessionInfo> {
        if self.uid == 0 {
            return sessions;
        }
        sessions.into_iter().filter(|s| s.uid == self.uid).collect()
    }
}

/// A panicked holder leaves plain data behind; enforcement must go on.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Agent {
    /// The role `launch` uses when it names none.
    pub fn default_role(&self) -> String {
        default_role(&self.state_dir)
    }

    pub fn default_role_file(&self) -> PathBuf {
        self.state_dir.join(DEFAULT_ROLE_FILE)
    }

    /// Puts `masker` in force for every record from now on (`None`: command
    /// lines verbatim). Records already made keep the masking they had.
    pub fn set_masker(&self, masker: Option<Masker>) {
        self.masking.set(masker);
    }
}

pub fn default_role(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join(DEFAULT_ROLE_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| FALLBACK_ROLE.to_string())
}
