//! The exec and connect storms: per round, A B A B ... with A = no daemon
//! loaded and B = one daemon configuration (its untagged and governed runs).
//! Each B is compared with the mean of the A just before and just after it,
//! which cancels slow drift of a shared machine.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::daemon::{run_worker, worker_command, Daemon, Tagging, Tools};
use super::policy;
use super::sys::{self, BpfSnapshot, Memory};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storm {
    Exec,
    Connect,
}

impl Storm {
    pub fn noun(self) -> &'static str {
        match self {
            Storm::Exec => "exec",
            Storm::Connect => "connect",
        }
    }

    fn rules_noun(self) -> &'static str {
        match self {
            Storm::Exec => "blocked-command rules",
            Storm::Connect => "egress CIDRs",
        }
    }
}

/// One daemon configuration: a policy directory with `rules` rules of the storm's kind.
pub struct Config {
    pub rules: usize,
    pub policy_dir: PathBuf,
}

impl Config {
    pub fn write(storm: Storm, rules: usize, dir: &Path) -> Result<Config> {
        let (commands, cidrs) = match storm {
            Storm::Exec => (policy::commands(rules), Vec::new()),
            Storm::Connect => (Vec::new(), policy::cidrs(rules)),
        };
        let policy_dir = policy::write_dir(&dir.join(format!("{}-{rules}", storm.noun())), &commands, &cidrs)?;
        Ok(Config { rules, policy_dir })
    }

    pub fn label(&self, storm: Storm) -> String {
        format!("{} {}", thousands(self.rules as u64), storm.rules_noun())
    }
}

/// What one daemon cost, gathered over every round it ran.
#[derive(Default)]
pub struct DaemonUsage {
    pub start_cpu_ns: Vec<f64>,
    pub idle: Option<Idle>,
    /// Daemon CPU time per governed operation, one sample per round.
    pub storm_cpu_ns_per_op: Vec<f64>,
    pub peak: Memory,
    pub ringbuf_drops: u64,
    pub decisions: u64,
    pub audit_lines: u64,
}

/// The daemon sitting idle after start-up.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub memory: Memory,
    pub cpu_ms_per_s: f64,
}

/// Samples of one configuration, per round.
pub struct ConfigResult {
    pub label: String,
    pub rules: usize,
    pub untagged_ns: Vec<f64>,
    pub governed_ns: Vec<f64>,
    pub untagged_ratio: Vec<f64>,
    pub governed_ratio: Vec<f64>,
    /// Untagged while a governed session lives elsewhere on the host (the
    /// on-demand syscall tracepoints attached): `untagged` has none.
    pub beside_ns: Vec<f64>,
    pub beside_ratio: Vec<f64>,
    /// Summed over rounds, with the operations they cover.
    pub bpf_untagged: BpfSnapshot,
    pub bpf_governed: BpfSnapshot,
    pub ops_untagged: u64,
    pub ops_governed: u64,
    /// One governed run (first round) while the daemon is stopped (SIGSTOP): the
    /// events wait in the ring buffer, so nothing wakes the daemon's event thread
    /// and the daemon takes no CPU. Separates the programs' own work from the
    /// wake-up of the consumer and from the daemon's audit work.
    pub paused: Option<Paused>,
    pub usage: DaemonUsage,
}

pub struct Paused {
    pub ns_per_op: f64,
    /// Against the mean of the no-daemon runs just before and after this daemon.
    pub ratio: f64,
    pub bpf: BpfSnapshot,
    pub ops: u64,
}

pub struct StormResult {
    pub storm: Storm,
    pub ops_per_run: u64,
    pub baseline_ns: Vec<f64>,
    pub configs: Vec<ConfigResult>,
}

/// Knobs of one storm.
pub struct Plan {
    pub ops: u64,
    pub rounds: usize,
    pub idle: Duration,
}

/// The loopback listener the connect storm targets: accepts and drops.
pub struct Listener {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub fn start() -> Result<Listener> {
        let listener = TcpListener::bind("127.0.0.1:0").context("listen on 127.0.0.1")?;
        // A deep accept queue: a SYN dropped on a full queue would add a 1 s retransmit to one connect.
        // SAFETY: listen() on a valid listening socket only changes its backlog.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        let addr = listener.local_addr().context("listener address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-listener".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    drop(conn);
                }
            })
            .context("start the listener thread")?;
        Ok(Listener { addr, stop, thread: Some(thread) })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake accept() so the thread sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Storms<'a> {
    pub tools: &'a Tools,
    pub work: &'a Path,
    pub listener: &'a Listener,
}

impl Storms<'_> {
    fn worker_args(&self, storm: Storm, ops: u64) -> Vec<String> {
        match storm {
            Storm::Exec => vec!["exec".into(), ops.to_string()],
            Storm::Connect => vec!["connect".into(), self.listener.addr.to_string(), ops.to_string()],
        }
    }

    /// Nanoseconds per operation of one worker run.
    fn measure(&self, storm: Storm, ops: u64, tagging: Tagging<'_>) -> Result<f64> {
        let args = self.worker_args(storm, ops);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ns = run_worker(self.tools, tagging, &args)?;
        Ok(ns as f64 / ops as f64)
    }

    /// The no-daemon measurement, refused if any Airlock program is loaded.
    fn baseline(&self, storm: Storm, ops: u64) -> Result<f64> {
        wait_no_airlock_programs()?;
        self.measure(storm, ops, Tagging::Untagged)
    }

    pub fn run(&self, storm: Storm, configs: &[Config], plan: &Plan) -> Result<StormResult> {
        let mut result = StormResult {
            storm,
            ops_per_run: plan.ops,
            baseline_ns: Vec::new(),
            configs: configs.iter().map(|c| ConfigResult::new(c.label(storm), c.rules)).collect(),
        };
        // One discarded run: page cache, CPU frequency and the allocator settle.
        self.baseline(storm, plan.ops / 4 + 1)?;
        for round in 0..plan.rounds {
            eprintln!("==> {} storm, round {}/{}", storm.noun(), round + 1, plan.rounds);
            let mut baselines = vec![self.baseline(storm, plan.ops)?];
            let mut measured = Vec::new();
            for (i, config) in configs.iter().enumerate() {
                let idle = (round == 0).then_some(plan.idle);
                let pair = self.with_daemon(storm, config, plan.ops, round, idle, &mut result.configs[i])?;
                measured.push(pair);
                baselines.push(self.baseline(storm, plan.ops)?);
            }
            for (i, runs) in measured.into_iter().enumerate() {
                let base = (baselines[i] + baselines[i + 1]) / 2.0;
                let r = &mut result.configs[i];
                r.untagged_ns.push(runs.untagged);
                r.governed_ns.push(runs.governed);
                r.beside_ns.push(runs.beside);
                r.untagged_ratio.push(runs.untagged / base);
                r.governed_ratio.push(runs.governed / base);
                r.beside_ratio.push(runs.beside / base);
                if let Some(p) = r.paused.as_mut().filter(|_| round == 0) {
                    p.ratio = p.ns_per_op / base;
                }
            }
            result.baseline_ns.extend(baselines);
        }
        Ok(result)
    }

    /// Starts the configuration's daemon, measures untagged (no session on the
    /// host), governed, and untagged beside a live session (in an order that
    /// reverses by round), records what the daemon spent, stops it.
    fn with_daemon(
        &self,
        storm: Storm,
        config: &Config,
        ops: u64,
        round: usize,
        idle: Option<Duration>,
        out: &mut ConfigResult,
    ) -> Result<Runs> {
        let dir = self.work.join(format!("daemon-{}-{}-r{round}", storm.noun(), config.rules));
        let daemon = Daemon::start(self.tools, &config.policy_dir, &dir)?;
        out.usage.start_cpu_ns.push(sys::cpu_ns(daemon.pid)? as f64);
        if let Some(idle) = idle {
            out.usage.idle = Some(measure_idle(&daemon, idle)?);
        }
        let mut runs = Runs { untagged: 0.0, governed: 0.0, beside: 0.0 };
        let mut order = [Run::Untagged, Run::Governed, Run::Beside];
        if !round.is_multiple_of(2) {
            order.reverse();
        }
        for run in order {
            // The session that ended last (governed, or the one kept beside) leaves no hook attached.
            let live = match run {
                Run::Beside => Some(daemon.live_session()?),
                Run::Untagged => {
                    daemon.wait_on_demand(false)?;
                    None
                }
                Run::Governed => None,
            };
            let tagging = if run == Run::Governed { Tagging::Governed(&daemon) } else { Tagging::Untagged };
            let bpf_before = BpfSnapshot::take()?;
            let cpu_before = sys::cpu_ns(daemon.pid)?;
            let ns = self.measure(storm, ops, tagging)?;
            // The daemon's share includes writing the audit lines of this run.
            wait_drained(&daemon)?;
            let cpu = sys::cpu_ns(daemon.pid)?.saturating_sub(cpu_before);
            let bpf = BpfSnapshot::take()?.since(&bpf_before);
            drop(live);
            match run {
                Run::Governed => {
                    runs.governed = ns;
                    out.bpf_governed.add(&bpf);
                    out.ops_governed += ops;
                    out.usage.storm_cpu_ns_per_op.push(cpu as f64 / ops as f64);
                }
                Run::Untagged => {
                    runs.untagged = ns;
                    out.bpf_untagged.add(&bpf);
                    out.ops_untagged += ops;
                }
                Run::Beside => runs.beside = ns,
            }
        }
        if round == 0 {
            out.paused = Some(self.measure_paused(storm, ops, &daemon)?);
            wait_drained(&daemon)?;
        }
        let memory = sys::memory(daemon.pid)?;
        out.usage.peak.rss_kb = out.usage.peak.rss_kb.max(memory.rss_kb);
        out.usage.peak.bpf_map_kb = out.usage.peak.bpf_map_kb.max(memory.bpf_map_kb);
        let counters = daemon.counters()?;
        out.usage.ringbuf_drops += counters.ringbuf_drops;
        out.usage.decisions += counters.decisions;
        out.usage.audit_lines += counters.audit_lines;
        daemon.stop()?;
        Ok(runs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// A worker of no session, with no session on the host.
    Untagged,
    Governed,
    /// A worker of no session, while a governed session lives.
    Beside,
}

/// Nanoseconds per operation of one round's runs against one daemon.
struct Runs {
    untagged: f64,
    governed: f64,
    beside: f64,
}

impl Storms<'_> {
    /// A governed run with the daemon stopped: the worker is started and
    /// tagged first, waits at its gate while the daemon is stopped, then runs.
    fn measure_paused(&self, storm: Storm, ops: u64, daemon: &Daemon) -> Result<Paused> {
        use std::io::{BufRead, BufReader, Write};
        let mut args = self.worker_args(storm, ops);
        args.push("gate".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = worker_command(self.tools, Tagging::Governed(daemon), &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the gated worker")?;
        let mut stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("read the worker's ready line")?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the gated worker said {line:?} instead of ready");
        }
        let stopped = Stopped::new(daemon.pid)?;
        let bpf_before = BpfSnapshot::take()?;
        child.stdin.take().context("worker stdin")?.write_all(b"go\n").context("open the worker's gate")?;
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).context("read the worker's result")?;
        let status = child.wait().context("wait for the gated worker")?;
        let bpf = BpfSnapshot::take()?.since(&bpf_before);
        drop(stopped);
        if !status.success() {
            bail!("the gated worker failed ({status})");
        }
        let ns: u64 = rest.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().parse().context("the gated worker's result")?;
        Ok(Paused { ns_per_op: ns as f64 / ops as f64, ratio: f64::NAN, bpf, ops })
    }
}

/// A daemon stopped with SIGSTOP, continued when dropped (also on errors).
struct Stopped(libc::pid_t);

impl Stopped {
    fn new(pid: u32) -> Result<Stopped> {
        let pid = pid as libc::pid_t;
        // SAFETY: signals a daemon this bench started and has not reaped.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            bail!("SIGSTOP the daemon: {}", std::io::Error::last_os_error());
        }
        Ok(Stopped(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

impl ConfigResult {
    fn new(label: String, rules: usize) -> ConfigResult {
        ConfigResult {
            label,
            rules,
            untagged_ns: Vec::new(),
            governed_ns: Vec::new(),
            untagged_ratio: Vec::new(),
            governed_ratio: Vec::new(),
            beside_ns: Vec::new(),
            beside_ratio: Vec::new(),
            bpf_untagged: BpfSnapshot::default(),
            bpf_governed: BpfSnapshot::default(),
            ops_untagged: 0,
            ops_governed: 0,
            paused: None,
            usage: DaemonUsage::default(),
        }
    }
}

/// CPU per second and memory of a daemon doing nothing.
pub fn measure_idle(daemon: &Daemon, duration: Duration) -> Result<Idle> {
    let before = sys::cpu_ns(daemon.pid)?;
    let start = Instant::now();
    std::thread::sleep(duration);
    let cpu = sys::cpu_ns(daemon.pid)?.saturating_sub(before);
    let secs = start.elapsed().as_secs_f64();
    Ok(Idle { memory: sys::memory(daemon.pid)?, cpu_ms_per_s: cpu as f64 / 1e6 / secs })
}

/// Waits (bounded) until every decision so far is in the audit trail or counted as dropped.
pub fn wait_drained(daemon: &Daemon) -> Result<super::daemon::Counters> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = daemon.counters()?;
        if c.audit_lines + c.ringbuf_drops >= c.decisions {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("the daemon did not drain its ring buffer within 60 s ({c:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Program teardown is asynchronous after a daemon exits: allow it a moment.
pub fn wait_no_airlock_programs() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = sys::airlock_programs_loaded()?;
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} airlock_* BPF programs are loaded (another Airlock daemon?); a no-daemon baseline is impossible");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 10000 -> "10,000".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
