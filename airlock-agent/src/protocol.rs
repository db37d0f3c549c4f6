//! The daemon's control protocol on its Unix socket: one JSON request per
//! line, one JSON response per line. The CLI and `launch` speak it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kernel::{CounterTotals, Hook, Startup};
use crate::sessions::SessionInfo;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Makes the calling process the root of a new governed session.
    /// `path` is the caller's PATH (relative entries are `cwd`'s): the
    /// protected programs it finds are learned by content (exec identity).
    Launch {
        role: Option<String>,
        command: Vec<String>,
        cwd: String,
        tty: Option<String>,
        #[serde(default)]
        path: Option<String>,
    },
    Status,
    Sessions,
    SetDefaultRole { role: String },
    DefaultRole,
    Reload,
    // What a governed process may ask about its own session (the session is
    // the kernel's tag of the calling process, never a parameter).
    /// The caller's session, role, backend, host and gateway link.
    SessionSelf,
    /// The session's last denial, or one of its decisions by id.
    ExplainDecision { decision_id: Option<u64> },
    /// What the session may not run or reach, as the kernel enforces it now.
    EffectivePolicySelf,
    /// Would this command run? `path` and `cwd` are the caller's, to find the program as its shell would.
    CheckCommand { argv: Vec<String>, cwd: String, path: String },
    /// Opens (or returns the pending) approval request for a command before it is run.
    RequestApproval { argv: Vec<String>, cwd: String, path: String, justification: String },
    /// One of the session's requests, now (a client that waits asks again:
    /// the socket serves one connection at a time).
    ApprovalStatus { id: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Launched { session_id: String, role: String },
    Status(Box<StatusReport>),
    Sessions { sessions: Vec<SessionInfo> },
    DefaultRole { role: String },
    Reloaded { version: String },
    SessionSelf(Box<SessionSelf>),
    Explained(Box<Explanation>),
    EffectivePolicy(Box<airlock_api::v1::EffectivePolicy>),
    Checked(Box<CommandCheck>),
    Approval(Box<airlock_api::v1::ApprovalRequest>),
    Error { message: String },
}

/// A governed process's own session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSelf {
    pub session: SessionInfo,
    pub backend: String,
    pub host: String,
    pub policy_version: String,
    /// "" without a gateway; else the gateway's URL and whether the link is up.
    pub gateway: String,
    pub gateway_connected: bool,
    /// The session's approval requests that are pending now.
    pub pending_approvals: Vec<String>,
}

/// Why the kernel decided what it did, and what the agent may do next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub decision: airlock_api::v1::Decision,
    /// One sentence: what happened and why.
    pub summary: String,
    /// What the agent may do next (wait for an approval, ask for one, or stop).
    pub next_step: String,
    /// The approval request the decision belongs to, as it stands now.
    pub approval: Option<airlock_api::v1::ApprovalRequest>,
}

/// What the kernel would decide for a command, judged by the compiled tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandCheck {
    /// "allowed", "blocked" or "needs_approval".
    pub verdict: String,
    pub rule: Option<String>,
    pub policy: Option<String>,
    /// How the rule found the program: "executable", "argv0", "script".
    pub matched_by: Option<String>,
    /// The file the command would run, found as the caller's shell would ("" if not found).
    pub program: String,
    /// needs_approval: a pending request for exactly this command, if there is one.
    pub approval_request: Option<String>,
    /// What the check cannot see (checks made only at exec time).
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub backend: String,
    pub hooks: Vec<Hook>,
    /// Whether the on-demand hooks are attached now (while a governed process lives).
    #[serde(default)]
    pub on_demand_attached: bool,
    /// What this backend guarantees and what it cannot.
    pub guarantees: Vec<String>,
    pub policy: PolicyStatus,
    pub default_role: String,
    pub sessions: Vec<SessionInfo>,
    pub tagged_processes: usize,
    pub counters: CounterTotals,
    pub events_received: u64,
    pub audit_lines: u64,
    pub audit_path: String,
    /// Files protected now (resolved in the session users' homes).
    #[serde(default)]
    pub protected_files: usize,
    /// Restart and pinning: how this daemon came by its enforcement.
    #[serde(default)]
    pub lifecycle: Option<LifecycleStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleStatus {
    pub pin_dir: String,
    pub pinned_set: String,
    pub startup: Startup,
    /// Decisions read from the ring buffer at start: made while no daemon ran.
    pub backlog_audited: u64,
    /// What stopping the daemon does: "enforcement stays pinned" or "release".
    pub on_stop: String,
    /// systemd's file descriptor store: what was handed back at start and what is stored.
    #[serde(default)]
    pub fd_store: FdStoreStatus,
}

/// The daemon and systemd's file descriptor store (all zero outside systemd).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FdStoreStatus {
    /// A service manager listens (NOTIFY_SOCKET): the set in force is stored there.
    pub active: bool,
    /// Descriptors systemd handed back at start (LISTEN_FDS).
    pub received: u32,
    /// Of those, the ones that proved to be what their names say and were used.
    pub taken_back: u32,
    /// The ones not used, each with why.
    pub ignored: Vec<String>,
    /// Pins made again from a handed-back descriptor (they had been removed).
    pub repinned: Vec<String>,
    /// Descriptors of the set in force that the store holds.
    pub stored: u32,
    /// Names removed from the store (a replaced set's, ignored ones).
    pub withdrawn: u32,
    /// What the store refused, if anything.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub version: String,
    pub source: String,
    pub generation: u32,
    pub roles: Vec<String>,
    pub rules: usize,
    pub loaded_at: String,
    pub last_reload_error: Option<String>,
    /// Hostname rules' current answers.
    #[serde(default)]
    pub hostnames: Vec<crate::policy::hostnames::HostStatus>,
    /// Fingerprints of protected programs found on this host.
    #[serde(default)]
    pub protected_contents: usize,
    /// Contents learned from sessions, evicted to keep the bound, and execs not learned (queue full).
    #[serde(default)]
    pub learned_identities: usize,
    #[serde(default)]
    pub learned_evicted: u64,
    #[serde(default)]
    pub learn_dropped: u64,
    /// Execs of a protected name whose content the kernel already knew as that name: not read again.
    #[serde(default)]
    pub learn_already_known: u64,
}

/// Sends one request and reads its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("the Airlock daemon is not answering on {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).context("send the request to the daemon")?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).context("read the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the connection without answering");
    }
    let response: Response = serde_json::from_str(&answer).context("the daemon's answer is not valid")?;
    if let Response::Error { message } = response {
        bail!("{message}");
    }
    Ok(response)
}
