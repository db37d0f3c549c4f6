//! `airlock-agent run`: the daemon's startup, its threads, and its stop.
//!
//! Threads: the event thread (ring buffer -> enrichment -> sinks, [`events`]),
//! the control thread (launch socket, [`control`]), the API thread (gRPC,
//! `api/`), the store's writer, the watcher, the DNS refresher and the reload
//! thread ([`threads`]), and the main thread, which waits for signals. They
//! share the [`agent::Agent`] facade.

pub mod agent;
mod api_ops;
pub mod approval_ops;
mod control;
mod events;
mod fd_store;
mod gateway_ops;
mod learn_ops;
mod learn_queue;
mod metrics_ops;
mod reload;
mod revoke;
mod security_ops;
mod session_ops;
mod status;
mod threads;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use airlock_store::{Retention, Store};
use anyhow::{bail, Context, Result};
use libbpf_rs::MapHandle;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;

use crate::api::{self, ApiOptions};
use crate::approvals::{ApprovalSettings, Approvals};
use crate::events::enrich::Enricher;
use crate::gateway::enrollment;
use crate::gateway::link::Link;
use crate::gateway::spool_sink::SpoolSink;
use crate::gateway::{GatewayOptions, LinkState, SPOOL_DIR};
use crate::kernel::{BackendChoice, Kernel, KernelOptions, MapSizes, Startup};
use crate::masking::Masking;
use crate::metrics::decisions::{CountingSink, DecisionCounts};
use crate::pipeline::audit::AuditSink;
use crate::pipeline::live::LiveSink;
use crate::pipeline::store::StoreSink;
use crate::pipeline::{Pipeline, Sink};
use crate::policy::dns::DnsClient;
use crate::policy::origin::PolicyOrigin;
use crate::policy::PolicyStore;
use crate::protected::ProtectedFiles;
use crate::sessions::Sessions;
use agent::{lock, Agent, GatewayHandle, APPROVALS_FILE, AUDIT_FILE, LEARNED_FILE, POLICY_STATE_FILE, RESTART_DIR, SECURITY_FILE, SESSIONS_FILE};
use airlock_spool::{Spool, SpoolOptions};

pub struct DaemonOptions {
    pub policy: PolicyOrigin,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub backend: BackendChoice,
    pub sizes: MapSizes,
    /// How credentials and personal data in command lines are masked before
    /// any sink sees them (default: fully).
    pub masking: Masking,
    /// Where the gRPC API is served, and the store's retention.
    pub api: ApiOptions,
    pub retention: Retention,
    /// Extra directories where protected programs are looked for.
    pub program_paths: Vec<PathBuf>,
    /// The resolver hostname egress rules are resolved with.
    pub dns: DnsClient,
    /// Where the programs, links and maps are pinned in bpffs.
    pub pin_dir: PathBuf,
    /// On stop, detach and unpin (by default the enforcement stays pinned).
    pub release_on_exit: bool,
    /// Enroll with this gateway, take policy from it and ship every decision to it.
    pub gateway: Option<GatewayOptions>,
    /// How long approval requests wait, and how many a session may have.
    pub approvals: ApprovalSettings,
    /// Who is told of approval requests and decisions (webhooks, email).
    pub notify: Option<airlock_notify::NotifyConfig>,
    /// The detectors over this host's store (None: off). With a gateway they
    /// run at the gateway instead, over the whole org.
    pub detection: Option<crate::security::detection::DetectionConfig>,
    /// SIEM export targets (`--export ocsf:FILE`, `--export otlp:URL`).
    pub export: Vec<airlock_export::Target>,
    /// Serve Prometheus metrics over plain HTTP on this address (None: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub fn run(opts: DaemonOptions) -> Result<()> {
    // First, while this is the only thread: it clears LISTEN_* from the environment.
    let inherited = crate::systemd::take_listen_fds();
    threads::limit_heap_arenas();
    raise_descriptor_limit();
    std::fs::create_dir_all(&opts.state_dir).with_context(|| format!("create the state dir {}", opts.state_dir.display()))?;
    let audit = AuditSink::open(&opts.state_dir.join(AUDIT_FILE))?;
    let export = crate::pipeline::export::start(&opts.export)?;
    opts.api.validate()?;
    let metrics_listener = opts.metrics_listen.map(crate::metrics::http::bind).transpose()?;
    let store = Arc::new(Store::open(&opts.state_dir, opts.retention)?);
    // Enrolled (or enrolling, once) before the kernel is touched: a host that
    // cannot enroll refuses to start rather than run unmanaged.
    let gateway = match &opts.gateway {
        Some(g) => {
            let enrolled = enrollment::ensure(g, &opts.state_dir)?;
            let spool_dir = opts.state_dir.join(SPOOL_DIR);
            let spool = Spool::open(&spool_dir, SpoolOptions { max_bytes: g.spool_max_bytes, ..SpoolOptions::default() })
                .with_context(|| format!("open the gateway spool {}", spool_dir.display()))?;
            let state = LinkState::new(&enrolled.url, &enrolled.host_id, &enrolled.org);
            Some((enrolled, GatewayHandle { state, spool }))
        }
        None => None,
    };

    // Refuse a broken policy before touching the kernel.
    if let Err(errors) = opts.policy.load() {
        bail!("policy from {} is invalid:\n{errors}", opts.policy.describe());
    }

    // Before the kernel: a second daemon on the same socket must not load anything.
    if UnixStream::connect(&opts.socket).is_ok() {
        bail!("another Airlock daemon is already answering on {}", opts.socket.display());
    }
    let kernel = Kernel::start(&KernelOptions { backend: opts.backend, sizes: opts.sizes, pin_dir: opts.pin_dir.clone() }, inherited)?;
    tracing::info!(backend = %kernel.backend(), hooks = kernel.hooks().len(), set = %kernel.pinned_set().display(), "enforcement in force");
    // At once: from here PID 1 holds the set's links too, whatever happens to
    // the pins or this process. Replaced sets leave the store here, before
    // they are retired, so their programs can detach.
    let fd_store = fd_store::publish(&kernel);

    // The sessions and role slots of a previous daemon, reconciled with the
    // tags that are live in the kernel now.
    let restart_dir = opts.state_dir.join(RESTART_DIR);
    std::fs::create_dir_all(&restart_dir).with_context(|| format!("create {}", restart_dir.display()))?;
    let (sessions, restored) = Sessions::restore(opts.state_dir.join(SESSIONS_FILE), |pid| kernel.maps().tag_of(pid).map(|t| t.session_id))?;
    tracing::info!(dns = %opts.dns.describe(), "hostname rules are resolved with");
    let mut policy = PolicyStore::persistent(opts.policy, opts.dns, opts.state_dir.join(POLICY_STATE_FILE));
    let learned = crate::policy::learned::LearnedStore::open_or_set_aside(opts.state_dir.join(LEARNED_FILE), crate::policy::learned::MAX_LEARNED);
    policy.set_identity_sources(opts.program_paths, learned);
    if *kernel.startup() != Startup::Fresh {
        policy.restore(&kernel)?;
        tracing::info!(running = restored.running, ended_while_down = restored.ended_while_down, "sessions re-adopted");
    }
    // Taken before anything changes the old set, while it still exists.
    let retiring_events = kernel.retiring_events();

    let live = LiveSink::new();
    let live_sender = live.sender();
    let audit_stats = audit.stats();
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(audit), Box::new(StoreSink::new(store.clone())), Box::new(live)];
    if let Some((_, handle)) = &gateway {
        sinks.push(Box::new(SpoolSink::new(handle.spool.clone())));
    }
    if let Some(export) = export {
        sinks.push(Box::new(export));
    }
    let decision_counts = Arc::new(DecisionCounts::default());
    if metrics_listener.is_some() {
        sinks.push(Box::new(CountingSink(decision_counts.clone())));
    }
    let (enrolled, gateway) = match gateway {
        Some((enrolled, handle)) => (Some(enrolled), Some(handle)),
        None => (None, None),
    };
    let approvals_file = opts.state_dir.join(APPROVALS_FILE);
    let security_file = opts.state_dir.join(SECURITY_FILE);
    let notifier = match opts.notify {
        Some(config) => airlock_notify::Notifier::start(config).context("start the approval notifications")?,
        None => airlock_notify::Notifier::disabled(),
    };
    let (learner, learn_jobs) = learn_queue::LearnQueue::new();
    let agent = Arc::new(Agent {
        kernel,
        policy: Mutex::new(policy),
        reloading: Mutex::new(()),
        reload_request: Mutex::new(None),
        reload_wakeup: Condvar::new(),
        sessions: Mutex::new(sessions),
        pipeline: Mutex::new(Pipeline::new(sinks, store.next_id())),
        audit: audit_stats,
        store,
        live: live_sender,
        state_dir: opts.state_dir,
        masking: Arc::new(opts.masking),
        shutdown: AtomicBool::new(false),
        events_received: AtomicU64::new(0),
        protected: Mutex::new(ProtectedFiles::default()),
        backlog_audited: AtomicU64::new(0),
        release_on_exit: opts.release_on_exit,
        fd_store: fd_store.into(),
        gateway,
        approvals: Mutex::new(Approvals::persistent(opts.approvals, approvals_file)),
        notifier,
        last_denials: Mutex::new(Default::default()),
        security: Mutex::new(crate::security::Security::open(Some(security_file))),
        learner,
    });

    // First of all, the decisions the kernel made while no daemon ran: they
    // reach the sinks before the policy or anything else changes.
    let mut enricher = Enricher::new(agent.masking.clone());
    let mut backlog = 0;
    if matches!(agent.kernel.startup(), Startup::Adopted { .. }) {
        backlog += agent.drain(&mut enricher, agent.kernel.maps().events_handle()?)?;
    }
    for events in &retiring_events {
        backlog += agent.drain(&mut enricher, MapHandle::try_from(events)?)?;
    }
    tracing::info!(decisions = backlog, "audited the decisions made while no daemon was running");

    let (version, _) = agent.install_policy()?;
    tracing::info!(%version, source = %lock(&agent.policy).origin().describe(), "policy in force");
    // Sets this daemon replaces (or found beside the one it adopted) go now,
    // with the policy in force in the set that stays.
    agent.kernel.retire_replaced();
    if !retiring_events.is_empty() {
        // What the old programs decided until they were detached.
        let mut last = 0;
        for events in retiring_events {
            last += agent.drain(&mut enricher, events)?;
        }
        tracing::info!(decisions = last, "audited the decisions the replaced programs made until they were detached");
        backlog += last;
    }
    agent.backlog_audited.store(backlog, Ordering::Relaxed);

    let listener = control::bind_socket(&opts.socket)?;
    let api_server = api::start(agent.clone(), &opts.api)?;
    // Before the daemon's threads are guarded below: this one is guarded too.
    let metrics_server = match metrics_listener {
        Some(listener) => Some(crate::metrics::http::serve(listener, crate::metrics::registry(agent.clone(), decision_counts))?),
        None => None,
    };

    // With the sender's pid: a stop request from a governed process is refused (guard).
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGTERM, SIGINT, SIGHUP]).context("install signal handlers")?;
    let mut workers = vec![
        spawn("airlock-events", &agent, move |a| a.event_loop(enricher))?,
        spawn("airlock-control", &agent, move |a| a.control_loop(listener))?,
        spawn("airlock-watch", &agent, |a| a.watch_loop())?,
        spawn("airlock-dns", &agent, |a| a.dns_loop())?,
        spawn("airlock-reload", &agent, |a| a.reload_loop())?,
        spawn("airlock-learn", &agent, move |a| a.learn_loop(learn_jobs))?,
    ];
    match (opts.detection, agent.gateway.is_some()) {
        (Some(_), true) => tracing::info!("security detection runs at the gateway, over the whole org; this host applies the gateway's blocks"),
        (Some(config), false) => workers.push(spawn("airlock-detect", &agent, move |a| a.detect_loop(config))?),
        (None, _) => tracing::info!("security detection is off on this host"),
    }
    let link_stop = Arc::new(AtomicBool::new(false));
    let link = match (enrolled, &agent.gateway) {
        (Some(enrolled), Some(handle)) => Some(
            Link {
                enrolled,
                spool: handle.spool.clone(),
                state: handle.state.clone(),
                ops: agent.clone(),
                bundle_file: crate::gateway::bundle_path(&agent.state_dir),
                backend: agent.kernel.backend().to_string(),
                shutdown: link_stop.clone(),
            }
            .spawn()?,
        ),
        _ => None,
    };
    // Airlock's own files (policy, state, executable) are guarded from now on.
    lock(&agent.protected).set_own(agent.own_paths());
    if let Err(e) = agent.refresh_protected() {
        tracing::error!("{e:#}");
    }
    // Every thread now exists; signals and ptrace aimed at any of them are tamper.
    match agent.kernel.maps().guard_threads() {
        Ok(n) => tracing::debug!(threads = n, "daemon threads guarded"),
        Err(e) => tracing::error!("guard the daemon's threads: {e:#}"),
    }
    // Loading parsed the kernel's BTF (megabytes, freed since): give the pages back.
    threads::release_free_heap();
    tracing::info!(socket = %opts.socket.display(), "ready");
    let mut status = format!("enforcing ({}), {} session(s) re-adopted", agent.kernel.backend(), restored.running);
    let (received, taken_back) = {
        let fd_store = lock(&agent.fd_store);
        (fd_store.received, fd_store.taken_back)
    };
    if received > 0 {
        status += &format!(", {taken_back} descriptor(s) taken back from the fd store");
    }
    crate::systemd::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);

    for origin in signals.forever() {
        let signal = origin.signal;
        if let Some(sender) = origin.process.map(|p| p.pid as u32) {
            if governed_sender(&agent, sender) {
                // Compat only: the LSM backend refuses the signal before it is sent.
                tracing::warn!(signal, sender, "signal from a governed process ignored (tamper attempt; the sender was killed)");
                continue;
            }
        }
        match signal {
            SIGHUP => agent.request_reload("SIGHUP"),
            _ => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
    }
    crate::systemd::notify(&[NotifyState::Stopping]);
    agent.shutdown.store(true, Ordering::SeqCst);
    // Wake the control thread out of accept(), the reload thread out of its wait.
    let _ = UnixStream::connect(&opts.socket);
    // Under its lock: a reload thread between its shutdown check and its wait still gets the wakeup.
    drop(lock(&agent.reload_request));
    agent.reload_wakeup.notify_all();
    link_stop.store(true, Ordering::SeqCst);
    for handle in workers.into_iter().chain(link) {
        if handle.join().is_err() {
            tracing::error!("a daemon thread panicked");
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    api_server.stop();
    if let Some(server) = metrics_server {
        server.stop();
    }
    lock(&agent.pipeline).flush();
    agent.store.close();
    let Ok(agent) = Arc::try_unwrap(agent) else {
        bail!("a daemon thread still holds the shared state; the enforcement stays pinned");
    };
    if agent.release_on_exit {
        let dir = agent.kernel.pin_dir().display().to_string();
        fd_store::withdraw(&agent.kernel);
        agent.kernel.release()?;
        tracing::info!(pin_dir = %dir, "stopped; enforcement detached and unpinned (--release-on-exit)");
    } else {
        tracing::info!(set = %agent.kernel.pinned_set().display(), "stopped; the enforcement stays pinned and in force: governed sessions stay governed, and the next start re-adopts them");
        drop(agent);
    }
    Ok(())
}

/// Whether a signal's sender belongs to a governed session. The compat hook
/// records the sender before the signal is sent and kills it, so the map
/// still knows it after its tag left with it.
fn governed_sender(agent: &Agent, pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let maps = agent.kernel.maps();
    let recorded = maps.take_tamper_sender(pid);
    recorded || maps.tag_of(pid).is_some()
}

/// A daemon thread that logs the error it ends with.
fn spawn(name: &str, agent: &Arc<Agent>, f: impl FnOnce(&Agent) -> Result<()> + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    let thread_name = name.to_string();
    let agent = agent.clone();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            if let Err(e) = f(&agent) {
                tracing::error!(thread = %thread_name, "{e:#}");
            }
        })
        .with_context(|| format!("start the {name} thread"))
}

/// Every protected inode is held open (protected.rs), up to 16384 of them,
/// so the soft descriptor limit (1024 by default) goes up to the hard one.
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
