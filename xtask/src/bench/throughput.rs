//! Audit throughput: how many decisions per second go from the kernel through
//! the ring buffer into audit.jsonl, and how many are dropped at that rate.
//! The load is UDP connect() calls from a governed session (each is one
//! decision and one audit line, and costs the generator almost nothing),
//! paced at fixed rates and then unpaced.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::daemon::{finish_worker, worker_command, Daemon, Tagging, Tools};
use super::policy;
use super::storms::{measure_idle, wait_drained, Idle};
use super::sys::{self, Memory};

pub struct Plan {
    /// Decisions per second to generate; 0 = as fast as one generator can.
    pub rates: Vec<u64>,
    pub duration: Duration,
    pub idle: Duration,
}

pub struct Level {
    pub target_rate: u64,
    pub duration_s: f64,
    pub decisions: u64,
    pub audit_lines: u64,
    pub drops: u64,
    /// Decisions per second the session produced.
    pub generated_rate: f64,
    /// Audit lines per second, from the generator's start until the trail had caught up.
    pub stored_rate: f64,
    /// How long after the generator stopped the trail took to catch up.
    pub drain_lag_s: f64,
    pub daemon_cpu_ms: f64,
    pub peak: Memory,
    /// The level's decisions written to the decision store, and dropped by it.
    pub stored_in_db: u64,
    pub store_dropped: u64,
}

pub struct Throughput {
    /// The backend the daemon picked, from `status --json`.
    pub backend: String,
    pub idle: Idle,
    pub levels: Vec<Level>,
}

pub fn run(tools: &Tools, work: &Path, plan: &Plan) -> Result<Throughput> {
    let policy_dir = policy::write_dir(&work.join("audit-policy"), &policy::commands(10), &policy::cidrs(10))?;
    let daemon = Daemon::start(tools, &policy_dir, &work.join("daemon-audit"))?;
    let backend = daemon.status()?.get("backend").and_then(|b| b.as_str()).unwrap_or("unknown").to_string();
    let idle = measure_idle(&daemon, plan.idle)?;
    // Nothing listens: a UDP connect() only records the peer address.
    let target = UdpSocket::bind("127.0.0.1:0").context("bind the UDP target")?;
    let addr = target.local_addr().context("UDP target address")?;
    let mut levels = Vec::new();
    for &rate in &plan.rates {
        eprintln!("==> audit throughput at {}", if rate == 0 { "full speed".to_string() } else { format!("{rate} decisions/s") });
        levels.push(level(tools, &daemon, &addr.to_string(), rate, plan.duration)?);
    }
    daemon.stop()?;
    Ok(Throughput { backend, idle, levels })
}

fn level(tools: &Tools, daemon: &Daemon, addr: &str, rate: u64, duration: Duration) -> Result<Level> {
    let before = wait_drained(daemon)?;
    let cpu_before = sys::cpu_ns(daemon.pid)?;
    let sampler = RssSampler::start(daemon.pid);
    let millis = duration.as_millis().to_string();
    let rate_arg = rate.to_string();
    let args = ["udp", addr, rate_arg.as_str(), millis.as_str()];
    let out = worker_command(tools, Tagging::Governed(daemon), &args).output().context("run the UDP worker")?;
    let worker_end = Instant::now();
    let generated = finish_worker(&args, out)?;
    let after = wait_drained(daemon)?;
    let drain_lag_s = worker_end.elapsed().as_secs_f64();
    // The store's writer commits after the audit trail: give it a bounded while to catch up.
    let mut store = after;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.store_decisions + store.store_dropped < before.store_decisions + before.store_dropped + (after.audit_lines - before.audit_lines)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        store = daemon.counters()?;
    }
    let peak = sampler.stop();
    let cpu = sys::cpu_ns(daemon.pid)?.saturating_sub(cpu_before);
    let secs = duration.as_secs_f64();
    let audit_lines = after.audit_lines - before.audit_lines;
    Ok(Level {
        target_rate: rate,
        duration_s: secs,
        decisions: after.decisions - before.decisions,
        audit_lines,
        drops: after.ringbuf_drops - before.ringbuf_drops,
        generated_rate: generated as f64 / secs,
        stored_rate: audit_lines as f64 / (secs + drain_lag_s),
        drain_lag_s,
        daemon_cpu_ms: cpu as f64 / 1e6,
        peak,
        stored_in_db: store.store_decisions - before.store_decisions,
        store_dropped: store.store_dropped - before.store_dropped,
    })
}

/// Polls a process's memory every 50 ms and keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Memory>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Memory::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(m) = sys::memory(pid) {
                    peak.rss_kb = peak.rss_kb.max(m.rss_kb);
                    peak.bpf_map_kb = peak.bpf_map_kb.max(m.bpf_map_kb);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
