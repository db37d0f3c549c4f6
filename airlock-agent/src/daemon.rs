//! `airlock-agent run`: loads the enforcement, installs the policy, follows
//! the kernel's events into the audit trail, and answers on the Unix socket.
//!
//! Threads: the event thread (ring buffer -> enrichment -> audit), the control
//! thread (socket requests), the watch thread (policy directory, session
//! ends), and the main thread, which waits for signals.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use airlock_common::abi::ProcTag;
use anyhow::{bail, Context, Result};
use libbpf_rs::{MapHandle, RingBufferBuilder};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::audit::AuditLog;
use crate::events::{decode, Enricher};
use crate::kernel::{Backend, BackendChoice, Kernel, KernelOptions, MapSizes, Startup};
use crate::policy_store::{PolicyOrigin, PolicyStore};
use crate::protocol::{LifecycleStatus, PolicyStatus, Request, Response, StatusReport};
use crate::sessions::{format_session_id, new_session_id, SessionInfo, SessionState, Sessions};

pub struct DaemonOptions {
    pub policy: PolicyOrigin,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub backend: BackendChoice,
    pub sizes: MapSizes,
    /// Mask credentials in command lines before they are stored (default on).
    pub mask_secrets: bool,
    /// Where the programs, links and maps are pinned in bpffs.
    pub pin_dir: PathBuf,
    /// On stop, detach and unpin (by default the enforcement stays pinned).
    pub release_on_exit: bool,
}

/// Everything the threads share. Each lock guards one concept.
struct Shared {
    kernel: Kernel,
    policy: Mutex<PolicyStore>,
    sessions: Mutex<Sessions>,
    audit: Mutex<AuditLog>,
    state_dir: PathBuf,
    mask_secrets: bool,
    shutdown: AtomicBool,
    events_received: AtomicU64,
    backlog_audited: AtomicU64,
    release_on_exit: bool,
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

    // Refuse a broken policy before touching the kernel.
    if let Err(errors) = opts.policy.load() {
        bail!("policy from {} is invalid:\n{errors}", opts.policy.describe());
    }

    // Before the kernel: a second daemon on the same socket must not load anything.
    if UnixStream::connect(&opts.socket).is_ok() {
        bail!("another Airlock daemon is already answering on {}", opts.socket.display());
    }
    let kernel = Kernel::start(&KernelOptions { backend: opts.backend, sizes: opts.sizes, pin_dir: opts.pin_dir.clone() })?;
    tracing::info!(backend = %kernel.backend(), hooks = kernel.hooks().len(), set = %kernel.pinned_set().display(), "enforcement in force");

    // The sessions and role slots of a previous daemon, reconciled with the
    // tags that are live in the kernel now.
    let (sessions, restored) = Sessions::restore(opts.state_dir.join(SESSIONS_FILE), |pid| kernel.tag_of(pid).map(|t| t.session_id))?;
    let mut store = PolicyStore::persistent(opts.policy, opts.state_dir.join(POLICY_STATE_FILE));
    if *kernel.startup() != Startup::Fresh {
        store.restore(&kernel)?;
        tracing::info!(running = restored.running, ended_while_down = restored.ended_while_down, "sessions re-adopted");
    }
    // Taken before anything changes the old set, while it still exists.
    let retiring_events = kernel.retiring_events();

    let shared = Arc::new(Shared {
        kernel,
        policy: Mutex::new(store),
        sessions: Mutex::new(sessions),
        audit: Mutex::new(audit),
        state_dir: opts.state_dir,
        mask_secrets: opts.mask_secrets,
        shutdown: AtomicBool::new(false),
        events_received: AtomicU64::new(0),
        backlog_audited: AtomicU64::new(0),
        release_on_exit: opts.release_on_exit,
    });

    // First of all, the decisions the kernel made while no daemon ran: they
    // reach the audit trail before the policy or anything else changes.
    let mut enricher = Enricher::new(shared.mask_secrets);
    let mut backlog = 0;
    if matches!(shared.kernel.startup(), Startup::Adopted { .. }) {
        backlog += drain(&shared, &mut enricher, shared.kernel.events_handle()?)?;
    }
    for events in &retiring_events {
        backlog += drain(&shared, &mut enricher, MapHandle::try_from(events)?)?;
    }
    lock(&shared.audit).flush()?;
    tracing::info!(decisions = backlog, "audited the decisions made while no daemon was running");

    let version = lock(&shared.policy).reload(&shared.kernel)?;
    tracing::info!(%version, source = %lock(&shared.policy).origin().describe(), "policy in force");
    // Sets this daemon replaces (or found beside the one it adopted) go now,
    // with the policy in force in the set that stays.
    shared.kernel.retire_replaced();
    if !retiring_events.is_empty() {
        // What the old programs decided until they were detached.
        let mut last = 0;
        for events in retiring_events {
            last += drain(&shared, &mut enricher, events)?;
        }
        lock(&shared.audit).flush()?;
        tracing::info!(decisions = last, "audited the decisions the replaced programs made until they were detached");
        backlog += last;
    }
    shared.backlog_audited.store(backlog, Ordering::Relaxed);

    let listener = bind_socket(&opts.socket)?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).context("install signal handlers")?;
    let events = spawn("airlock-events", {
        let shared = shared.clone();
        move || event_loop(&shared, enricher)
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
    crate::systemd::notify(&format!("READY=1\nSTATUS=enforcing ({}), {} session(s) re-adopted", shared.kernel.backend(), restored.running));

    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(&shared, "SIGHUP"),
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    shared.shutdown.store(true, Ordering::SeqCst);
    // Wake the control thread out of accept().
    let _ = UnixStream::connect(&opts.socket);
    for handle in [events, control, watch] {
        if handle.join().is_err() {
            tracing::error!("a daemon thread panicked");
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    if let Err(e) = lock(&shared.audit).flush() {
        tracing::error!("{e:#}");
    }
    let Ok(shared) = Arc::try_unwrap(shared) else {
        bail!("a daemon thread still holds the shared state; the enforcement stays pinned");
    };
    if shared.release_on_exit {
        let dir = shared.kernel.pin_dir().display().to_string();
        shared.kernel.release()?;
        tracing::info!(pin_dir = %dir, "stopped; enforcement detached and unpinned (--release-on-exit)");
    } else {
        tracing::info!(set = %shared.kernel.pinned_set().display(), "stopped; the enforcement stays pinned and in force: governed sessions stay governed, and the next start re-adopts them");
        drop(shared);
    }
    Ok(())
}

const SESSIONS_FILE: &str = "sessions.json";
const POLICY_STATE_FILE: &str = "policy-state.json";

/// Reads everything waiting in an events ring buffer into the audit trail.
fn drain(shared: &Shared, enricher: &mut Enricher, events: MapHandle) -> Result<u64> {
    let count = AtomicU64::new(0);
    let mut builder = RingBufferBuilder::new();
    builder.add(&events, |bytes: &[u8]| {
        count.fetch_add(1, Ordering::Relaxed);
        handle_event(shared, enricher, bytes, false);
        0
    })?;
    let ring = builder.build()?;
    ring.consume().context("read the events ring buffer")?;
    drop(ring);
    Ok(count.into_inner())
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

fn event_loop(shared: &Shared, mut enricher: Enricher) -> Result<()> {
    let events_map = shared.kernel.events_handle()?;
    let mut builder = RingBufferBuilder::new();
    builder.add(&events_map, |bytes: &[u8]| {
        handle_event(shared, &mut enricher, bytes, true);
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
        if let Ok(c) = shared.kernel.counters() {
            if c.ringbuf_drops > last_drops {
                tracing::warn!(dropped = c.ringbuf_drops - last_drops, total = c.ringbuf_drops, "ring buffer full: events lost (decisions were still enforced)");
                last_drops = c.ringbuf_drops;
            }
        }
    }
    // Whatever the kernel queued before the stop still reaches the trail.
    let _ = ring.consume();
    lock(&shared.audit).flush()
}

/// One kernel event: decode, enrich, block message, audit. `live` is false for
/// the backlog read at start: those decisions are old, and a block message
/// about them would reach the agent long after the fact.
fn handle_event(shared: &Shared, enricher: &mut Enricher, bytes: &[u8], live: bool) {
    shared.events_received.fetch_add(1, Ordering::Relaxed);
    let Some(event) = decode(bytes) else {
        tracing::warn!(len = bytes.len(), "undecodable kernel event");
        return;
    };
    let record = {
        let sessions = lock(&shared.sessions);
        let policy = lock(&shared.policy);
        enricher.enrich(&event, &sessions, &policy)
    };
    if live && record.kind == "exec" && record.decision == "deny" {
        // The refused process itself (LSM: execve failed) or, when it was killed, its parent.
        let session = event.header().session_id;
        let message = crate::notify::block_message(&record);
        let told = crate::notify::tell(&[record.pid, record.ppid], |pid| shared.kernel.tag_of(pid).map(|t| t.session_id), session, &message);
        tracing::debug!(pid = record.pid, told = ?told, "block message");
    }
    if let Err(e) = lock(&shared.audit).write(&record) {
        tracing::error!("{e:#}");
    }
}

fn watch_loop(shared: &Shared) -> Result<()> {
    let watchdog = crate::systemd::watchdog_interval();
    let mut last_ping = std::time::Instant::now();
    while !shared.shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        let changed = lock(&shared.policy).changed_on_disk();
        if changed {
            reload(shared, "policy directory changed");
        }
        for id in lock(&shared.sessions).reap() {
            tracing::info!(session = %id, "session root exited");
        }
        if let Some(interval) = watchdog {
            // Pinged from the loop that also reaps: a wedged daemon misses it and systemd restarts it.
            if last_ping.elapsed() >= interval / 2 {
                crate::systemd::notify("WATCHDOG=1");
                last_ping = std::time::Instant::now();
            }
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
        state: SessionState::Running,
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
        lifecycle: Some(LifecycleStatus {
            pin_dir: shared.kernel.pin_dir().display().to_string(),
            pinned_set: shared.kernel.pinned_set().display().to_string(),
            startup: shared.kernel.startup().clone(),
            backlog_audited: shared.backlog_audited.load(Ordering::Relaxed),
            on_stop: if shared.release_on_exit { "release".into() } else { "enforcement stays pinned".into() },
        }),
    })
}

fn guarantees(backend: Backend) -> Vec<String> {
    let mut g = vec![
        "session membership follows every fork before the child runs".to_string(),
        "exec decided from the new image's own argv (no argument-rewrite race)".to_string(),
        "enforcement pinned in bpffs: it stays in force while the daemon is stopped or dead; a restart re-adopts the sessions and audits what was decided meanwhile".to_string(),
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
