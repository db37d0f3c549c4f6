//! `airlock-agent run`: loads the enforcement, installs the policy, follows
//! the kernel's events into the audit trail, and answers on the Unix socket.
//!
//! Threads: the event thread (ring buffer -> enrichment -> sinks: the audit
//! trail, the live stream, the decision store's writer), the control thread
//! (launch socket requests), the API thread (gRPC, api/), the store writer
//! (store.rs), the watch thread (policy directory, session ends), and the main
//! thread, which waits for signals.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use airlock_common::api::v1 as pb;

use airlock_common::abi::ProcTag;
use anyhow::{bail, Context, Result};
use libbpf_rs::RingBufferBuilder;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::{self, ApiOptions};
use crate::audit::AuditLog;
use crate::events::{decode, DecisionRecord, Enricher, UserRef};
use crate::kernel::{Backend, BackendChoice, Kernel, MapSizes};
use crate::policy_store::{PolicyOrigin, PolicyStore};
use crate::protocol::{PolicyStatus, Request, Response, StatusReport};
use crate::sessions::{format_session_id, new_session_id, Revocation, SessionInfo, SessionState, Sessions};
use crate::store::{Retention, Store};

pub struct DaemonOptions {
    pub policy: PolicyOrigin,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub backend: BackendChoice,
    pub sizes: MapSizes,
    /// Mask credentials in command lines before they are stored (default on).
    pub mask_secrets: bool,
    /// api (issue 4): where the gRPC API is served, and the store's retention.
    pub api: ApiOptions,
    pub retention: Retention,
}

/// Decisions the live stream holds for a slow follower before it is cut off
/// (bounded: the daemon's memory budget is ~30 MB).
const LIVE_CAPACITY: usize = 4096;

/// Everything the threads share. Each lock guards one concept.
pub(crate) struct Shared {
    kernel: Kernel,
    policy: Mutex<PolicyStore>,
    sessions: Mutex<Sessions>,
    audit: Mutex<AuditLog>,
    state_dir: PathBuf,
    mask_secrets: bool,
    shutdown: AtomicBool,
    events_received: AtomicU64,
    /// api (issue 4): the indexed decision store and the live decision stream.
    pub(crate) store: Store,
    pub(crate) live: tokio::sync::broadcast::Sender<Arc<pb::Decision>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves plain data behind; enforcement must go on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const DEFAULT_ROLE_FILE: &str = "default-role";
const FALLBACK_ROLE: &str = "default";

pub fn run(opts: DaemonOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("create the state dir {}", opts.state_dir.display()))?;
    let audit = AuditLog::open(&opts.state_dir.join("audit.jsonl"))?;
    opts.api.validate()?;
    let decisions = Store::open(&opts.state_dir, opts.retention)?;

    // Refuse a broken policy before touching the kernel.
    if let Err(errors) = opts.policy.load() {
        bail!("policy from {} is invalid:\n{errors}", opts.policy.describe());
    }

    let kernel = Kernel::start(opts.backend, opts.sizes)?;
    tracing::info!(backend = %kernel.backend(), hooks = kernel.hooks().len(), "enforcement attached");

    let mut store = PolicyStore::new(opts.policy);
    let version = store.reload(&kernel)?;
    tracing::info!(%version, source = %store.origin().describe(), "policy in force");

    let listener = bind_socket(&opts.socket)?;
    let shared = Arc::new(Shared {
        kernel,
        policy: Mutex::new(store),
        sessions: Mutex::new(Sessions::default()),
        audit: Mutex::new(audit),
        state_dir: opts.state_dir,
        mask_secrets: opts.mask_secrets,
        shutdown: AtomicBool::new(false),
        events_received: AtomicU64::new(0),
        store: decisions,
        live: tokio::sync::broadcast::channel(LIVE_CAPACITY).0,
    });
    let api_server = api::start(shared.clone(), &opts.api)?;

    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).context("install signal handlers")?;
    let events = spawn("airlock-events", {
        let shared = shared.clone();
        move || event_loop(&shared)
    })?;
    let control = spawn("airlock-control", {
        let shared = shared.clone();
        move || control_loop(&shared, listener)
    })?;
    let watch = spawn("airlock-watch", {
        let shared = shared.clone();
        move || watch_loop(&shared)
    })?;
    tracing::info!(socket = %opts.socket.display(), "ready");

    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&shared, "SIGHUP"),
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    shared.shutdown.store(true, Ordering::SeqCst);
    // Wake the control thread out of accept().
    let _ = UnixStream::connect(&opts.socket);
    for handle in [events, control, watch] {
        if handle.join().is_err() {
            tracing::error!("a daemon thread panicked");
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    api_server.stop();
    shared.store.close();
    if let Err(e) = lock(&shared.audit).flush() {
        tracing::error!("{e:#}");
    }
    // Dropping the last reference detaches every program.
    drop(shared);
    tracing::info!("stopped; enforcement detached");
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            if let Err(e) = f() {
                tracing::error!(thread = %thread_name, "{e:#}");
            }
        })
        .with_context(|| format!("start the {name} thread"))
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if UnixStream::connect(path).is_ok() {
        bail!("another Airlock daemon is already answering on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    // Any user may govern their own processes; privileged requests check SO_PEERCRED.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("set the permissions of {}", path.display()))?;
    Ok(listener)
}

fn reload(shared: &Shared, why: &str) {
    let mut store = lock(&shared.policy);
    match store.reload(&shared.kernel) {
        Ok(version) => tracing::info!(%version, why, "policy reloaded"),
        Err(e) => tracing::error!(why, "{e:#}"),
    }
}

fn event_loop(shared: &Shared) -> Result<()> {
    let events_map = shared.kernel.events_handle()?;
    let mut enricher = Enricher::new(shared.mask_secrets);
    // What one drain produced: the store takes it as one transaction.
    let batch = RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder.add(&events_map, |bytes: &[u8]| {
        shared.events_received.fetch_add(1, Ordering::Relaxed);
        let Some(event) = decode(bytes) else {
            tracing::warn!(len = bytes.len(), "undecodable kernel event");
            return 0;
        };
        let record = {
            let mut sessions = lock(&shared.sessions);
            let policy = lock(&shared.policy);
            let record = enricher.enrich(&event, &sessions, &policy);
            if record.kind == "exec" && record.decision == "allow" {
                // The agent's own exec (launch's) has happened: ready -> running.
                sessions.mark_running(event.header().session_id);
            }
            record
        };
        if record.kind == "exec" && record.decision == "deny" {
            // The refused process itself (LSM: execve failed) or, when it was killed, its parent.
            let session = event.header().session_id;
            let message = crate::notify::block_message(&record);
            let told = crate::notify::tell(&[record.pid, record.ppid], |pid| shared.kernel.tag_of(pid).map(|t| t.session_id), session, &message);
            tracing::debug!(pid = record.pid, told = ?told, "block message");
        }
        emit(shared, &record, &mut batch.borrow_mut());
        0
    })?;
    let ring = builder.build()?;
    let mut last_drops = 0;
    while !shared.shutdown.load(Ordering::SeqCst) {
        // The kernel wakes us only when the ring fills up; otherwise the timeout
        // is the drain interval, and consume() reads what arrived without a wakeup.
        if let Err(e) = ring.poll(Duration::from_millis(200)) {
            tracing::warn!("ring buffer poll: {e}");
        }
        if let Err(e) = ring.consume() {
            tracing::warn!("ring buffer consume: {e}");
        }
        if let Err(e) = lock(&shared.audit).flush() {
            tracing::error!("{e:#}");
        }
        shared.store.submit(std::mem::take(&mut *batch.borrow_mut()));
        if let Ok(c) = shared.kernel.counters() {
            if c.ringbuf_drops > last_drops {
                tracing::warn!(dropped = c.ringbuf_drops - last_drops, total = c.ringbuf_drops, "ring buffer full: events lost (decisions were still enforced)");
                last_drops = c.ringbuf_drops;
            }
        }
    }
    // Whatever the kernel queued before the stop still reaches the trail.
    let _ = ring.consume();
    shared.store.submit(std::mem::take(&mut *batch.borrow_mut()));
    lock(&shared.audit).flush()
}

/// One finished record to every sink: the audit trail, the live stream, and
/// the store's batch (sent when the drain ends, or when it is full).
fn emit(shared: &Shared, record: &DecisionRecord, batch: &mut Vec<crate::store::Row>) {
    if let Err(e) = lock(&shared.audit).write(record) {
        tracing::error!("{e:#}");
    }
    let decision = api::decision_of(record, shared.store.next_id());
    batch.push(crate::store::Row::of(&decision));
    if shared.live.receiver_count() > 0 {
        // An error only means the last follower just left.
        let _ = shared.live.send(Arc::new(decision));
    }
    if batch.len() >= crate::store::MAX_BATCH {
        // A long drain must not hold all of it in memory.
        shared.store.submit(std::mem::take(batch));
    }
}

fn watch_loop(shared: &Shared) -> Result<()> {
    while !shared.shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        let changed = lock(&shared.policy).changed_on_disk();
        if changed {
            reload(shared, "policy directory changed");
        }
        for id in lock(&shared.sessions).reap() {
            tracing::info!(session = %id, "session root exited");
        }
    }
    Ok(())
}

fn control_loop(shared: &Shared, listener: UnixListener) -> Result<()> {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = serve(shared, stream) {
                    tracing::warn!("control request: {e:#}");
                }
            }
            Err(e) => tracing::warn!("accept: {e}"),
        }
    }
    Ok(())
}

/// Who is asking, as the kernel says (SO_PEERCRED), not as the client claims.
struct Peer {
    pid: u32,
    uid: u32,
}

fn serve(shared: &Shared, stream: UnixStream) -> Result<()> {
    let creds = getsockopt(&stream, PeerCredentials).context("read SO_PEERCRED")?;
    let peer = Peer { pid: creds.pid() as u32, uid: creds.uid() };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).context("read the request")?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(shared, &peer, request).unwrap_or_else(|e| Response::Error { message: format!("{e:#}") }),
        Err(e) => Response::Error { message: format!("malformed request: {e}") },
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    (&stream).write_all(out.as_bytes()).context("send the response")?;
    Ok(())
}

fn handle(shared: &Shared, peer: &Peer, request: Request) -> Result<Response> {
    match request {
        Request::Launch { role, command, cwd, tty } => launch(shared, peer, role, command, cwd, tty),
        Request::Status => Ok(Response::Status(Box::new(status(shared, peer)?))),
        Request::Sessions => Ok(Response::Sessions { sessions: visible_to(peer, lock(&shared.sessions).list()) }),
        Request::DefaultRole => Ok(Response::DefaultRole { role: default_role(&shared.state_dir) }),
        Request::SetDefaultRole { role } => {
            require_root(peer, "set the default role")?;
            if !lock(&shared.policy).has_role(&role) {
                bail!("unknown role {role:?}; `airlock-agent policy show` lists the roles in force");
            }
            let path = shared.state_dir.join(DEFAULT_ROLE_FILE);
            std::fs::write(&path, format!("{role}\n")).with_context(|| format!("write {}", path.display()))?;
            Ok(Response::DefaultRole { role })
        }
        Request::Reload => {
            require_root(peer, "reload the policy")?;
            let mut store = lock(&shared.policy);
            let version = store.reload(&shared.kernel)?;
            Ok(Response::Reloaded { version })
        }
    }
}

/// Command lines are other users' business: non-root callers see only their own sessions.
fn visible_to(peer: &Peer, sessions: Vec<SessionInfo>) -> Vec<SessionInfo> {
    if peer.uid == 0 {
        return sessions;
    }
    sessions.into_iter().filter(|s| s.uid == peer.uid).collect()
}

fn require_root(peer: &Peer, what: &str) -> Result<()> {
    if peer.uid != 0 {
        bail!("only root may {what} (you are uid {})", peer.uid);
    }
    Ok(())
}

pub fn default_role(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join(DEFAULT_ROLE_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| FALLBACK_ROLE.to_string())
}

fn launch(
    shared: &Shared,
    peer: &Peer,
    role: Option<String>,
    command: Vec<String>,
    cwd: String,
    tty: Option<String>,
) -> Result<Response> {
    if command.is_empty() {
        bail!("no command to launch");
    }
    // A governed process may not start a second session to trade its role for another.
    if let Some(tag) = shared.kernel.tag_of(peer.pid) {
        bail!("process {} is already governed by session {}; a session cannot start another", peer.pid, format_session_id(tag.session_id));
    }
    let role = role.unwrap_or_else(|| default_role(&shared.state_dir));
    let role_slot = {
        let store = lock(&shared.policy);
        if !store.has_role(&role) {
            bail!("unknown role {role:?}; refusing to start an ungoverned session");
        }
        store.role_slot(&role).context("the role has no kernel slot")?
    };
    let mut command = command;
    if shared.mask_secrets {
        crate::secrets::mask_argv(&mut command);
    }
    let id = new_session_id();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| peer.uid.to_string());
    let info = SessionInfo {
        id: format_session_id(id),
        role: role.clone(),
        role_slot,
        uid: peer.uid,
        user,
        root_pid: peer.pid,
        command,
        cwd,
        tty,
        started_at: now_rfc3339(),
        // Running once the daemon sees the agent's exec.
        state: SessionState::Ready,
        ended_at: None,
        revocation: None,
    };
    // Register before tagging, so the first event already finds its session.
    lock(&shared.sessions).insert(id, info.clone());
    shared
        .kernel
        .tag(peer.pid, &ProcTag { session_id: id, role_slot, flags: 0 })
        .context("could not tag the session's process; refusing to start it ungoverned")?;
    tracing::info!(session = %info.id, role = %role, pid = peer.pid, uid = peer.uid, command = ?info.command, "session started");
    Ok(Response::Launched { session_id: info.id, role })
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::from(SystemTime::now())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn status(shared: &Shared, peer: &Peer) -> Result<StatusReport> {
    let store = lock(&shared.policy);
    let current = store.current();
    let policy = PolicyStatus {
        version: current.map(|c| c.version.clone()).unwrap_or_default(),
        source: store.origin().describe(),
        generation: store.generation(),
        roles: current.map(|c| c.roles.keys().cloned().collect()).unwrap_or_default(),
        rules: current.map(|c| c.rules.len()).unwrap_or(0),
        loaded_at: store
            .loaded_at()
            .map(|t| time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default())
            .unwrap_or_default(),
        last_reload_error: store.last_error().map(str::to_string),
    };
    drop(store);
    let audit = lock(&shared.audit);
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        backend: shared.kernel.backend().to_string(),
        hooks: shared.kernel.hooks().to_vec(),
        guarantees: guarantees(shared.kernel.backend()),
        policy,
        default_role: default_role(&shared.state_dir),
        sessions: visible_to(peer, lock(&shared.sessions).running()),
        tagged_processes: shared.kernel.tagged().len(),
        counters: shared.kernel.counters()?,
        events_received: shared.events_received.load(Ordering::Relaxed),
        audit_lines: audit.lines(),
        audit_path: audit.path().display().to_string(),
    })
}

fn guarantees(backend: Backend) -> Vec<String> {
    let mut g = vec![
        "session membership follows every fork before the child runs".to_string(),
        "exec decided from the new image's own argv (no argument-rewrite race)".to_string(),
    ];
    match backend {
        Backend::Lsm => {
            g.push("blocked exec refused with EPERM before it starts".into());
            g.push("egress refused with EPERM at socket_connect / socket_sendmsg".into());
            g.push("not guaranteed yet: tamper protection of the daemon, its programs and maps".into());
        }
        Backend::Compat => {
            g.push("blocked exec killed (SIGKILL) before its first instruction; the caller sees a kill, not EPERM".into());
            g.push("egress refused with EPERM by cgroup connect/sendmsg hooks on the cgroup2 root".into());
            g.push("not guaranteed: tamper protection of the daemon, its programs and maps (root in a session can stop it; needs the LSM backend)".into());
        }
    }
    g
}

// ---- api (issue 4): the operations the gRPC API performs -------------------

/// The API is privileged (its socket is root's and the airlock group's, or
/// mutual TLS): it sees what root sees.
const API_PEER: Peer = Peer { pid: 0, uid: 0 };

pub(crate) fn api_status(shared: &Shared) -> Result<pb::StatusResponse> {
    let report = status(shared, &API_PEER)?;
    let counts = shared.kernel.processes_per_session();
    let sessions = lock(&shared.sessions)
        .running()
        .iter()
        .map(|s| api_session(s, &counts))
        .collect();
    let (decisions, bytes) = shared.store.stats().unwrap_or_default();
    let retention = shared.store.retention();
    let store = pb::StoreStatus {
        path: shared.store.path().display().to_string(),
        decisions,
        bytes,
        dropped: shared.store.dropped(),
        max_age_seconds: retention.max_age.as_secs(),
        max_bytes: retention.max_bytes,
    };
    Ok(api::convert_status(report, sessions, store))
}

fn api_session(s: &SessionInfo, counts: &std::collections::HashMap<u64, u32>) -> pb::Session {
    let n = u64::from_str_radix(&s.id, 16).ok().and_then(|k| counts.get(&k).copied()).unwrap_or(0);
    api::convert_session(s, n)
}

/// Every session, newest first.
pub(crate) fn api_sessions(shared: &Shared) -> Vec<pb::Session> {
    let counts = shared.kernel.processes_per_session();
    let mut list = lock(&shared.sessions).list();
    list.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    list.iter().map(|s| api_session(s, &counts)).collect()
}

pub(crate) enum RevokeError {
    NotFound,
    Failed(anyhow::Error),
}

pub(crate) struct RevokeOutcome {
    pub session: SessionInfo,
    /// Distinct processes sent SIGKILL.
    pub killed: u32,
    pub rounds: u32,
    /// Processes still tagged when the call returned (0 on success).
    pub remaining: u32,
}

/// How long revocation waits for the killed processes to be gone.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// Revokes a session: the kernel first (so nothing it does from now on is
/// allowed, and a process that forks dies), then SIGKILL to every process of
/// it, round after round until none is left (a fork that raced a round is
/// caught by the next), then the record in the audit trail and the store.
pub(crate) fn revoke(shared: &Shared, id: &str, by: &str, reason: &str) -> std::result::Result<RevokeOutcome, RevokeError> {
    let (key, _) = lock(&shared.sessions).find(id).map(|(k, s)| (k, s.clone())).ok_or(RevokeError::NotFound)?;
    shared.kernel.mark_revoked(key).map_err(RevokeError::Failed)?;
    let revocation = Revocation { at: now_rfc3339(), by: by.to_string(), reason: reason.to_string() };
    let session = lock(&shared.sessions).revoke(key, revocation).ok_or(RevokeError::NotFound)?;

    let mut signalled = std::collections::HashSet::new();
    let mut rounds = 0u32;
    let deadline = Instant::now() + REVOKE_WAIT;
    let remaining = loop {
        let pids = shared.kernel.session_processes(key);
        if pids.is_empty() {
            break 0;
        }
        if Instant::now() > deadline {
            break pids.len() as u32;
        }
        rounds += 1;
        for pid in pids {
            if kill_member(shared, pid, key) {
                signalled.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let killed = signalled.len() as u32;
    tracing::warn!(session = %session.id, by, reason, killed, rounds, remaining, "session revoked");
    record_revocation(shared, &session, by, reason, killed);
    if remaining > 0 {
        return Err(RevokeError::Failed(anyhow::anyhow!(
            "session {} is revoked (the kernel denies it everything), but {remaining} of its processes had not exited after {} s",
            session.id,
            REVOKE_WAIT.as_secs()
        )));
    }
    Ok(RevokeOutcome { session, killed, rounds, remaining })
}

/// SIGKILL to one member of a session, through a pidfd: the pid is checked to
/// still be the session's after the pidfd pins the process, so a recycled pid
/// is never hit.
fn kill_member(shared: &Shared, pid: u32, session: u64) -> bool {
    // SAFETY: plain syscalls; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    let fd = fd as libc::c_int;
    let tagged = shared.kernel.tag_of(pid).map(|t| t.session_id) == Some(session) || shared.kernel.session_processes(session).contains(&pid);
    let sent = tagged
        // SAFETY: fd is a pidfd we own; no siginfo.
        && unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) } == 0;
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    sent
}

fn record_revocation(shared: &Shared, s: &SessionInfo, by: &str, reason: &str, killed: u32) {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let record = DecisionRecord {
        time: now_rfc3339(),
        host,
        kind: "revoke",
        decision: "deny",
        reason: "revoked",
        session_id: s.id.clone(),
        role: s.role.clone(),
        agent: s.agent(),
        user: UserRef { uid: s.uid, name: s.user.clone() },
        pid: s.root_pid,
        ppid: 0,
        comm: String::new(),
        executable: String::new(),
        filename: None,
        argv: s.command.clone(),
        argv_truncated: false,
        cwd: s.cwd.clone(),
        destination: None,
        policy: None,
        rule: Some(format!("revoked by {by}: {reason} ({killed} processes killed)")),
        matched_by: None,
        stage: None,
        backend: shared.kernel.backend().to_string(),
        policy_generation: lock(&shared.policy).generation(),
        time_unix_nanos: crate::store::now_ns(),
    };
    let mut batch = Vec::with_capacity(1);
    emit(shared, &record, &mut batch);
    if let Err(e) = lock(&shared.audit).flush() {
        tracing::error!("{e:#}");
    }
    shared.store.submit(batch);
}

pub(crate) fn reload_now(shared: &Shared) -> Result<(String, u32)> {
    let mut store = lock(&shared.policy);
    let version = store.reload(&shared.kernel)?;
    Ok((version, store.generation()))
}

/// The rules a role is governed by, from the policy in force.
pub(crate) fn effective_policy(shared: &Shared, role: &str) -> Result<pb::EffectivePolicy> {
    let role = if role.trim().is_empty() { default_role(&shared.state_dir) } else { role.trim().to_string() };
    let store = lock(&shared.policy);
    let current = store.current().context("no policy is in force")?;
    let Some(compiled) = current.role(&role) else {
        bail!("unknown role {role:?}; roles in force: {}", current.roles.keys().cloned().collect::<Vec<_>>().join(", "));
    };
    Ok(pb::EffectivePolicy {
        role: role.clone(),
        policy_version: current.version.clone(),
        generation: store.generation(),
        policies: compiled.policies.clone(),
        blocked_commands: compiled
            .commands
            .iter()
            .map(|c| pb::ExecRule { policy: c.policy_id.clone(), rule: c.text.clone(), command: std::iter::once(c.program.clone()).chain(c.words.iter().cloned()).collect() })
            .collect(),
        denied_egress: compiled
            .egress
            .iter()
            .map(|e| pb::EgressRule {
                policy: e.policy_id.clone(),
                rule: e.text.clone(),
                destination: e.net.to_string(),
                ports: e.ports.iter().map(|&p| p.into()).collect(),
            })
            .collect(),
    })
}
