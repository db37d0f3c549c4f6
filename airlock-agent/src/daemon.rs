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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use airlock_common::api::v1 as pb;

use airlock_common::abi::ProcTag;
use anyhow::{bail, Context, Result};
use libbpf_rs::{MapHandle, RingBufferBuilder};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;

use crate::api::{self, ApiOptions};
use crate::audit::AuditLog;
use crate::events::{decode, DecisionRecord, Enricher, UserRef};
use crate::kernel::{Backend, BackendChoice, Kernel, KernelOptions, MapSizes, Startup};
use crate::policy_store::{PolicyOrigin, PolicyStore};
use crate::protected::{session_homes, ProtectedFiles};
use crate::protocol::{LifecycleStatus, PolicyStatus, Request, Response, StatusReport};
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
    /// exec identity: extra directories where protected programs are looked for.
    pub program_paths: Vec<PathBuf>,
    /// net: the DNS server hostname rules are resolved with.
    /// The resolver hostname egress rules are resolved with.
    pub dns: crate::dns::DnsClient,
    /// Where the programs, links and maps are pinned in bpffs.
    pub pin_dir: PathBuf,
    /// On stop, detach and unpin (by default the enforcement stays pinned).
    pub release_on_exit: bool,
}

/// Decisions the live stream holds for a slow follower before it is cut off
/// (bounded: the daemon's memory budget is ~30 MB).
const LIVE_CAPACITY: usize = 4096;
/// How often the watcher returns the allocator's free memory to the kernel.
const HEAP_TRIM_EVERY: Duration = Duration::from_secs(10);

/// Everything the threads share. Each lock guards one concept.
pub(crate) struct Shared {
    kernel: Kernel,
    policy: Mutex<PolicyStore>,
    /// Held for a whole reload (the policy store only for parts of it).
    reloading: Mutex<()>,
    /// A reload asked for by SIGHUP or a changed policy directory, and why; the
    /// reload thread runs it, so neither signals nor the watchdog wait on DNS.
    reload_request: Mutex<Option<&'static str>>,
    reload_wakeup: Condvar,
    sessions: Mutex<Sessions>,
    audit: Mutex<AuditLog>,
    state_dir: PathBuf,
    mask_secrets: bool,
    shutdown: AtomicBool,
    events_received: AtomicU64,
    /// api (issue 4): the indexed decision store and the live decision stream.
    pub(crate) store: Store,
    pub(crate) live: tokio::sync::broadcast::Sender<Arc<pb::Decision>>,
    /// guard: protected files resolved in the session users' homes.
    protected: Mutex<ProtectedFiles>,
    /// Restart: decisions read from the ring buffer at start (made while no daemon ran).
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
    raise_descriptor_limit();
    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("create the state dir {}", opts.state_dir.display()))?;
    let audit = AuditLog::open(&opts.state_dir.join("audit.jsonl"))?;
    opts.api.validate()?;
    let decisions = Store::open(&opts.state_dir, opts.retention)?;

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
    let restart_dir = opts.state_dir.join(RESTART_DIR);
    std::fs::create_dir_all(&restart_dir).with_context(|| format!("create {}", restart_dir.display()))?;
    let (sessions, restored) = Sessions::restore(opts.state_dir.join(SESSIONS_FILE), |pid| kernel.tag_of(pid).map(|t| t.session_id))?;
    tracing::info!(dns_server = %opts.dns.server(), "hostname rules are resolved with this DNS server");
    let mut store = PolicyStore::persistent(opts.policy, opts.dns, opts.state_dir.join(POLICY_STATE_FILE));
    store.set_program_paths(opts.program_paths);
    if *kernel.startup() != Startup::Fresh {
        store.restore(&kernel)?;
        tracing::info!(running = restored.running, ended_while_down = restored.ended_while_down, "sessions re-adopted");
    }
    // Taken before anything changes the old set, while it still exists.
    let retiring_events = kernel.retiring_events();

    let shared = Arc::new(Shared {
        kernel,
        policy: Mutex::new(store),
        reloading: Mutex::new(()),
        reload_request: Mutex::new(None),
        reload_wakeup: Condvar::new(),
        sessions: Mutex::new(sessions),
        audit: Mutex::new(audit),
        state_dir: opts.state_dir,
        mask_secrets: opts.mask_secrets,
        shutdown: AtomicBool::new(false),
        events_received: AtomicU64::new(0),
        store: decisions,
        live: tokio::sync::broadcast::channel(LIVE_CAPACITY).0,
        protected: Mutex::new(ProtectedFiles::default()),
        backlog_audited: AtomicU64::new(0),
        release_on_exit: opts.release_on_exit,
    });

    // First of all, the decisions the kernel made while no daemon ran: they
    // reach the audit trail (and the store) before the policy or anything else changes.
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

    let (version, _) = install_policy(&shared)?;
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
    let api_server = api::start(shared.clone(), &opts.api)?;

    // With the sender's pid: a stop request from a governed process is refused (guard).
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGTERM, SIGINT, SIGHUP]).context("install signal handlers")?;
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
    let dns = spawn("airlock-dns", {
        let shared = shared.clone();
        move || dns_loop(&shared)
    })?;
    let reloader = spawn("airlock-reload", {
        let shared = shared.clone();
        move || reload_loop(&shared)
    })?;
    // guard: Airlock's own files (policy, state, executable) are guarded from now on.
    lock(&shared.protected).set_own(own_paths(&shared));
    if let Err(e) = refresh_protected(&shared) {
        tracing::error!("{e:#}");
    }
    // guard: every thread now exists; signals and ptrace aimed at any of them are tamper.
    match shared.kernel.guard_threads() {
        Ok(n) => tracing::debug!(threads = n, "daemon threads guarded"),
        Err(e) => tracing::error!("guard the daemon's threads: {e:#}"),
    }
    // Loading parsed the kernel's BTF (megabytes, freed since): give the pages back.
    release_free_heap();
    tracing::info!(socket = %opts.socket.display(), "ready");
    crate::systemd::notify(&format!("READY=1\nSTATUS=enforcing ({}), {} session(s) re-adopted", shared.kernel.backend(), restored.running));

    for origin in signals.forever() {
        let signal = origin.signal;
        if let Some(sender) = origin.process.map(|p| p.pid as u32) {
            if governed_sender(&shared, sender) {
                // Compat only: the LSM backend refuses the signal before it is sent.
                tracing::warn!(signal, sender, "signal from a governed process ignored (tamper attempt; the sender was killed)");
                continue;
            }
        }
        match signal {
            SIGHUP => request_reload(&shared, "SIGHUP"),
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    shared.shutdown.store(true, Ordering::SeqCst);
    // Wake the control thread out of accept(), the reload thread out of its wait.
    let _ = UnixStream::connect(&opts.socket);
    // Under its lock: a reload thread between its shutdown check and its wait still gets the wakeup.
    drop(lock(&shared.reload_request));
    shared.reload_wakeup.notify_all();
    for handle in [events, control, watch, dns, reloader] {
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

/// Restart state lives in its own subdirectory of the state dir. Its files are
/// rewritten atomically (a new inode each time), so the guard protects the
/// directory as well as each file: nothing may be created, renamed or removed
/// in it by a governed process.
const RESTART_DIR: &str = "restart";
const SESSIONS_FILE: &str = "restart/sessions.json";
const POLICY_STATE_FILE: &str = "restart/policy-state.json";

/// Reads everything waiting in an events ring buffer into the audit trail and
/// the store. These decisions are old: no block message is sent for them.
fn drain(shared: &Shared, enricher: &mut Enricher, events: MapHandle) -> Result<u64> {
    let count = AtomicU64::new(0);
    let batch = RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder.add(&events, |bytes: &[u8]| {
        count.fetch_add(1, Ordering::Relaxed);
        handle_event(shared, enricher, bytes, false, &mut batch.borrow_mut());
        0
    })?;
    let ring = builder.build()?;
    ring.consume().context("read the events ring buffer")?;
    drop(ring);
    shared.store.submit(batch.into_inner());
    Ok(count.into_inner())
}

/// guard: whether a signal's sender belongs to a governed session. The compat
/// hook records the sender before the signal is sent and kills it, so the map
/// still knows it after its tag left with it.
fn governed_sender(shared: &Shared, pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let recorded = shared.kernel.take_tamper_sender(pid);
    recorded || shared.kernel.tag_of(pid).is_some()
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

/// Asks the reload thread for a reload. Requests made while one runs
/// collapse into one more reload after it.
fn request_reload(shared: &Shared, why: &'static str) {
    *lock(&shared.reload_request) = Some(why);
    shared.reload_wakeup.notify_one();
}

/// Runs the reloads SIGHUP and the policy directory's watcher ask for.
fn reload_loop(shared: &Shared) -> Result<()> {
    loop {
        let mut request = lock(&shared.reload_request);
        while request.is_none() && !shared.shutdown.load(Ordering::SeqCst) {
            request = shared.reload_wakeup.wait(request).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        let why = request.take().unwrap_or("reload");
        drop(request);
        match reload_now(shared) {
            Ok((version, generation)) => tracing::info!(%version, generation, why, "policy reloaded"),
            Err(e) => tracing::error!(why, "{e:#}"),
        }
    }
}

/// guard: Airlock's own directories and files: the policy directory and its
/// two subdirectories, the state directory (audit trail, default role), the
/// daemon's executable.
fn own_paths(shared: &Shared) -> Vec<PathBuf> {
    let mut paths = vec![shared.state_dir.clone()];
    if let PolicyOrigin::Dir(dir) = lock(&shared.policy).origin() {
        paths.push(dir.clone());
        paths.push(dir.join("policies"));
        paths.push(dir.join("roles"));
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        paths.push(exe);
    }
    paths
}

/// guard: resolves the policy's protected files in every known home and
/// brings the kernel's map up to date.
/// guard: every protected inode is held open (protected.rs), up to 16384 of
/// them, so the soft descriptor limit (1024 by default) goes up to the hard one.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: both calls get a valid pointer to a local rlimit.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised {
        tracing::warn!("could not raise the descriptor limit: {}", std::io::Error::last_os_error());
    }
}

/// Returns the allocator's free memory to the kernel. glibc keeps freed
/// blocks for reuse; after the large, short-lived allocations of loading (the
/// kernel's BTF) and of a policy compile, that is megabytes of resident memory
/// nothing will use again.
fn release_free_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

fn refresh_protected(shared: &Shared) -> Result<usize> {
    let patterns = lock(&shared.policy).current().map(|c| c.protected.clone()).unwrap_or_default();
    lock(&shared.protected).refresh(&shared.kernel, &patterns).context("update the protected files")
}

fn event_loop(shared: &Shared, mut enricher: Enricher) -> Result<()> {
    let events_map = shared.kernel.events_handle()?;
    // What one drain produced: the store takes it as one transaction.
    let batch = RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder.add(&events_map, |bytes: &[u8]| {
        handle_event(shared, &mut enricher, bytes, true, &mut batch.borrow_mut());
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
        report_drops(shared, &mut last_drops);
    }
    // Whatever the kernel queued before the stop still reaches the trail.
    let _ = ring.consume();
    shared.store.submit(std::mem::take(&mut *batch.borrow_mut()));
    report_drops(shared, &mut last_drops);
    lock(&shared.audit).flush()
}

/// One kernel event: decode, enrich, block message, sinks. `live` is false for
/// the backlog read at start: those decisions are old, and a block message
/// about them would reach the agent long after the fact.
fn handle_event(shared: &Shared, enricher: &mut Enricher, bytes: &[u8], live: bool, batch: &mut Vec<crate::store::Row>) {
    shared.events_received.fetch_add(1, Ordering::Relaxed);
    let Some(event) = decode(bytes) else {
        tracing::warn!(len = bytes.len(), "undecodable kernel event");
        return;
    };
    let record = {
        let mut sessions = lock(&shared.sessions);
        let policy = lock(&shared.policy);
        let record = enricher.enrich(&event, &sessions, &policy);
        if record.kind == "exec" && record.decision == "allow" {
            // The agent's own exec (launch's) has happened: ready -> running.
            // Also from the backlog: a daemon killed before it drained that
            // exec must not bring the session back as never started.
            sessions.mark_running(event.header().session_id);
        }
        record
    };
    if live && record.kind == "exec" && record.decision == "deny" {
        // The refused process itself (LSM: execve failed) or, when it was killed, its parent.
        let session = event.header().session_id;
        let message = crate::notify::block_message(&record);
        let told = crate::notify::tell(&[record.pid, record.ppid], |pid| shared.kernel.tag_of(pid).map(|t| t.session_id), session, &message);
        tracing::debug!(pid = record.pid, told = ?told, "block message");
    }
    emit(shared, &record, batch);
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

/// Events the ring buffer could not hold: logged and written to the audit
/// trail as an `events_lost` line carrying the kernel's own count, so the
/// trail says how much of it is missing (the decisions were enforced anyway).
fn report_drops(shared: &Shared, last_drops: &mut u64) {
    let Ok(c) = shared.kernel.counters() else { return };
    if c.ringbuf_drops <= *last_drops {
        return;
    }
    let lost = c.ringbuf_drops - *last_drops;
    tracing::warn!(dropped = lost, total = c.ringbuf_drops, "ring buffer full: events lost (decisions were still enforced)");
    *last_drops = c.ringbuf_drops;
    let line = serde_json::json!({
        "time": now_rfc3339(),
        "host": nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
        "kind": "events_lost",
        "count": lost,
        "total": c.ringbuf_drops,
        "decisions": c.decisions,
        "backend": shared.kernel.backend().to_string(),
    });
    let mut audit = lock(&shared.audit);
    if let Err(e) = audit.write(&line).and_then(|_| audit.flush()) {
        tracing::error!("{e:#}");
    }
}

fn watch_loop(shared: &Shared) -> Result<()> {
    let watchdog = crate::systemd::watchdog_interval();
    let mut last_ping = std::time::Instant::now();
    let mut last_trim = std::time::Instant::now();
    while !shared.shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        if last_trim.elapsed() >= HEAP_TRIM_EVERY {
            // After a burst of decisions the allocator holds what the burst needed.
            release_free_heap();
            last_trim = std::time::Instant::now();
        }
        let changed = lock(&shared.policy).changed_on_disk();
        if changed {
            request_reload(shared, "policy directory changed");
        }
        for id in lock(&shared.sessions).reap() {
            tracing::info!(session = %id, "session root exited");
        }
        // guard: files created (or replaced) since the last tick become protected.
        if let Err(e) = refresh_protected(shared) {
            tracing::warn!("{e:#}");
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

/// net: re-resolves hostname rules whose answer expired. Lookups run without
/// the policy lock; the answers are applied under it.
fn dns_loop(shared: &Shared) -> Result<()> {
    while !shared.shutdown.load(Ordering::SeqCst) {
        let (due, client, next) = lock(&shared.policy).hosts_due();
        if due.is_empty() {
            let nap = next.unwrap_or(Duration::from_millis(500)).min(Duration::from_millis(500));
            std::thread::sleep(nap.max(Duration::from_millis(50)));
            continue;
        }
        let answers = crate::hostnames::resolve_all(&client, &due);
        if let Err(e) = lock(&shared.policy).refresh_hosts(&shared.kernel, answers) {
            tracing::error!("hostname rules: {e:#}");
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
            let (version, _) = reload_now(shared)?;
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
    // guard: the session's credential files are protected before its first instruction.
    {
        let mut protected = lock(&shared.protected);
        for home in session_homes(peer.uid, peer.pid) {
            protected.add_home(&home);
        }
    }
    refresh_protected(shared).context("could not protect the session's credential files; refusing to start it")?;
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
        protected_contents: store.identities().installed().protected_contents(),
        hostnames: store.host_status(),
    };
    drop(store);
    let audit = lock(&shared.audit);
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        backend: shared.kernel.backend().to_string(),
        hooks: shared.kernel.hooks().to_vec(),
        guarantees: {
            let mut g = guarantees(shared.kernel.backend());
            g.extend(shared.kernel.gaps().iter().map(|gap| format!("not guaranteed: {gap}")));
            g
        },
        policy,
        default_role: default_role(&shared.state_dir),
        sessions: visible_to(peer, lock(&shared.sessions).running()),
        tagged_processes: shared.kernel.tagged().len(),
        counters: shared.kernel.counters()?,
        events_received: shared.events_received.load(Ordering::Relaxed),
        audit_lines: audit.lines(),
        audit_path: audit.path().display().to_string(),
        protected_files: lock(&shared.protected).count(),
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
        "programs recognised by content too (hard links, copies); fileless exec and the loader run directly denied by default".to_string(),
        "enforcement pinned in bpffs: it stays in force while the daemon is stopped or dead; a restart re-adopts the sessions and audits what was decided meanwhile".to_string(),
    ];
    match backend {
        Backend::Lsm => {
            g.push("blocked exec refused with EPERM before it starts".into());
            g.push("egress refused with EPERM at socket_connect / socket_sendmsg".into());
            g.push("Unix socket rules judged on the socket the kernel resolved (unix_stream_connect / unix_may_send): symlinks and bind mounts do not hide a denied socket".into());
            // guard
            g.push("tamper: governed processes (root included) are refused bpf(), signals and ptrace to the daemon (also /proc/PID/mem, pidfd_getfd, process_vm_*), module loading and kexec, bpffs access, unlink/rename/umount in bpffs, cgroupfs writes, and any change to Airlock's policy, state and executable files".into());
            g.push("protected files: opened only by the programs the policy allows (EPERM otherwise)".into());
            g.push("not guaranteed: what root does outside the session's processes (item 17), raw block-device reads of protected files".into());
        }
        Backend::Compat => {
            g.push("blocked exec killed (SIGKILL) before its first instruction; the caller sees a kill, not EPERM".into());
            g.push("egress refused with EPERM by cgroup connect/sendmsg hooks on the cgroup2 root".into());
            g.push("Unix socket rules judged on the path as the caller wrote it (cgroup/connect_unix, kernels >= 6.7): a symlink or bind mount to a denied socket is not seen".into());
            // guard
            g.push("tamper DETECTED, not prevented: bpf(), signals/ptrace/process_vm_*/pidfd_getfd aimed at the daemon, module loading, kexec, opens in bpffs, opens for writing in cgroupfs, the daemon's /proc files and Airlock's policy and state files: the call runs, then the offender is killed and audited".into());
            g.push("SIGTERM/SIGINT/SIGHUP from a governed process are ignored by the daemon; SIGKILL/SIGSTOP from governed root still stop it (needs the LSM backend)".into());
            g.push("protected files: an open by a program the policy does not allow kills the opener before it returns to user space (a sibling thread can race a read; io_uring opens are not seen)".into());
            g.push("not guaranteed: unlink/rename/umount in bpffs, and rename/unlink/truncate of Airlock's policy and state files, by governed root (not seen)".into());
            g.push("not guaranteed: a #! script run under another name is judged by that name (detected afterwards in the audit trail)".into());
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
        file_identity: Vec::new(),
        detected_program: None,
        unix_socket: None,
        operation: None,
        target_pid: None,
        argument: None,
        file: None,
        enforcement: None,
    };
    let mut batch = Vec::with_capacity(1);
    emit(shared, &record, &mut batch);
    if let Err(e) = lock(&shared.audit).flush() {
        tracing::error!("{e:#}");
    }
    shared.store.submit(batch);
}

/// Reloads the policy (SIGHUP, a changed directory, the control socket, the
/// API) and protects the files the new policy names.
pub(crate) fn reload_now(shared: &Shared) -> Result<(String, u32)> {
    let reloaded = install_policy(shared)?;
    refresh_protected(shared)?;
    Ok(reloaded)
}

/// Loads, compiles and installs the policy. The store is held to compile and
/// to install, not while the new hostnames are resolved: the event thread looks
/// rules up in it for every decision. Reloads take turns, so an older policy
/// read from disk can never be installed over a newer one.
fn install_policy(shared: &Shared) -> Result<(String, u32)> {
    let _one_reload_at_a_time = lock(&shared.reloading);
    let pending = lock(&shared.policy).begin_reload()?;
    let answers = crate::hostnames::resolve_all(&pending.client, &pending.unresolved);
    let mut store = lock(&shared.policy);
    let version = store.finish_reload(&shared.kernel, pending, answers)?;
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
