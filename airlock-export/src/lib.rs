//! Airlock's decisions for SIEMs, used by the agent (`airlock-agent run
//! --export`) and the gateway (`airlock-gateway run --export`):
//!
//! - [`target`]: the `ocsf:FILE` and `otlp:URL` targets;
//! - [`ocsf`]: a decision as an OCSF event;
//! - [`jsonl`]: OCSF events as JSON lines in a file;
//! - [`otlp`]: OCSF events as OTLP logs to a collector.
//!
//! An [`Exporter`] runs one worker thread per target behind a bounded queue.
//! [`Exporter::offer`] never blocks: the caller (the daemon's event thread,
//! the gateway's ingest) hands over a shared reference to a decision that is
//! already masked; a full queue drops the record and counts it, and the
//! worker logs the count. Enforcement never waits for an export.

pub mod jsonl;
pub mod ocsf;
pub mod otlp;
pub mod target;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_api::v1::Decision;
use anyhow::{Context, Result};
use tokio::sync::mpsc;

pub use ocsf::Producer;
pub use otlp::ServiceResource;
pub use target::{OtlpEndpoint, Target, TargetError};

/// Records a target's queue holds while its worker is busy (a slow disk, a
/// collector being retried); past this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 8192;

/// A decision as the exporter receives it: shared, never copied.
pub trait Exportable: Send + Sync + 'static {
    fn decision(&self) -> &Decision;
}

impl Exportable for Decision {
    fn decision(&self) -> &Decision {
        self
    }
}

pub type Item = Arc<dyn Exportable>;

/// A target's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records written (file) or accepted by the collector.
    pub exported: AtomicU64,
    /// Decisions of a kind that is not exported (see [`ocsf::skip_reason`]).
    pub skipped: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped because the write failed or the collector did not take them in time.
    pub dropped_failed: AtomicU64,
    /// The exporter is stopping: retries are cut short.
    pub(crate) stopping: AtomicBool,
}

/// What the exporter says about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `service.name` of the OTLP resource: "airlock-agent", "airlock-gateway".
    pub service_name: String,
    pub version: String,
    /// This machine's host name (OTLP `host.name`; OCSF `device` of a
    /// decision that names no host).
    pub host_name: String,
}

struct Queue {
    target: Target,
    /// None once stopped. Uncontended but for the stop: taking it is what
    /// ends the worker (its queue closes).
    sender: Mutex<Option<mpsc::Sender<Item>>>,
    stats: Arc<Stats>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The export targets and their workers. [`Exporter::shutdown`] (or a
/// drop) stops the workers: what is queued is still written or sent (OTLP
/// retries cut to [`otlp::STOP_RETRY_WINDOW`]).
pub struct Exporter {
    queues: Vec<Queue>,
}

impl Exporter {
    /// Opens every target (a file that cannot be opened is an error now, not
    /// a silent gap later) and starts its worker.
    pub fn start(targets: &[Target], identity: &Identity) -> Result<Exporter> {
        let producer = Producer { version: identity.version.clone(), hostname: identity.host_name.clone() };
        let mut queues = Vec::with_capacity(targets.len());
        for (n, target) in targets.iter().enumerate() {
            let (sender, rx) = mpsc::channel(QUEUE_CAPACITY);
            let stats = Arc::new(Stats::default());
            let worker_stats = stats.clone();
            let producer = producer.clone();
            let name = format!("airlock-export-{n}");
            let worker = match target {
                Target::OcsfFile(path) => {
                    let writer = jsonl::JsonlWriter::open(path).with_context(|| format!("--export {target}"))?;
                    std::thread::Builder::new().name(name).spawn(move || write_file(writer, producer, rx, worker_stats))
                }
                Target::Otlp(endpoint) => {
                    let endpoint = endpoint.clone();
                    let resource = ServiceResource {
                        service_name: identity.service_name.clone(),
                        service_version: identity.version.clone(),
                        host_name: identity.host_name.clone(),
                    };
                    std::thread::Builder::new().name(name).spawn(move || {
                        let url = endpoint.url.clone();
                        if let Err(e) = otlp::run(endpoint, resource, producer, rx, worker_stats) {
                            tracing::error!(collector = %url, "the OTLP exporter stopped: {e:#}");
                        }
                    })
                }
            }
            .with_context(|| format!("start the exporter thread for {target}"))?;
            tracing::info!(%target, "exporting decisions");
            queues.push(Queue { target: target.clone(), sender: Mutex::new(Some(sender)), stats, worker: Mutex::new(Some(worker)) });
        }
        Ok(Exporter { queues })
    }

    /// Hands a decision to every target; never blocks.
    pub fn offer(&self, item: &Item) {
        for q in &self.queues {
            let sender = lock(&q.sender);
            let Some(sender) = sender.as_ref() else { continue };
            if sender.try_send(item.clone()).is_err() {
                // Full (or the worker died): counted; the worker logs the count.
                q.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Each target and its counters.
    pub fn stats(&self) -> Vec<(Target, Arc<Stats>)> {
        self.queues.iter().map(|q| (q.target.clone(), q.stats.clone())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Stops the workers once they have written or sent what is queued;
    /// later offers are ignored. Blocks (at most the stop retry window and
    /// one call per OTLP target).
    pub fn shutdown(&self) {
        for q in &self.queues {
            q.stats.stopping.store(true, Ordering::Relaxed);
            lock(&q.sender).take();
        }
        for q in &self.queues {
            let Some(worker) = lock(&q.worker).take() else { continue };
            if worker.join().is_err() {
                tracing::error!(target = %q.target, "the exporter thread panicked");
            }
            let s = &q.stats;
            tracing::info!(
                target = %q.target,
                exported = s.exported.load(Ordering::Relaxed),
                skipped = s.skipped.load(Ordering::Relaxed),
                dropped_queue_full = s.dropped_queue_full.load(Ordering::Relaxed),
                dropped_failed = s.dropped_failed.load(Ordering::Relaxed),
                "export stopped"
            );
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `ocsf:` worker: one line per decision, as it arrives.
fn write_file(mut writer: jsonl::JsonlWriter, producer: Producer, mut rx: mpsc::Receiver<Item>, stats: Arc<Stats>) {
    let mut drops = DropLog::default();
    let mut failing = false;
    while let Some(item) = rx.blocking_recv() {
        let Some(event) = ocsf::event(item.decision(), &producer) else {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match writer.append(&event) {
            Ok(()) => {
                stats.exported.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!(file = %writer.path().display(), "the OCSF export file is written again");
                    failing = false;
                }
            }
            Err(e) => {
                stats.dropped_failed.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    // Once per failure spell, not once per record.
                    tracing::error!("{e:#}; records are dropped (counted) until a write succeeds");
                    failing = true;
                }
            }
        }
        drops.report(&stats, &writer.path().display().to_string());
    }
    drops.report(&stats, &writer.path().display().to_string());
}

/// Logs the queue-full drops, at most every [`DropLog::EVERY`] and once more at the end.
#[derive(Default)]
pub(crate) struct DropLog {
    logged: u64,
    at: Option<Instant>,
}

impl DropLog {
    const EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn report(&mut self, stats: &Stats, target: &str) {
        let dropped = stats.dropped_queue_full.load(Ordering::Relaxed);
        let stopping = stats.stopping.load(Ordering::Relaxed);
        if dropped == self.logged || (!stopping && self.at.is_some_and(|at| at.elapsed() < Self::EVERY)) {
            return;
        }
        tracing::warn!(
            target,
            dropped = dropped - self.logged,
            total = dropped,
            "the export queue was full: decisions dropped from the export (enforcement and the audit trail are unaffected)"
        );
        self.logged = dropped;
        self.at = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: u64) -> Item {
        Arc::new(Decision { id, kind: "exec".into(), decision: "allow".into(), pid: 1, ..Default::default() })
    }

    #[test]
    fn the_file_target_gets_every_exported_decision_in_order() {
        let dir = std::env::temp_dir().join(format!("airlock-export-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&path);
        let identity = Identity { service_name: "test".into(), version: "0".into(), host_name: "h".into() };
        let exporter = Exporter::start(&[Target::OcsfFile(path.clone())], &identity).unwrap();
        for id in 1..=100 {
            exporter.offer(&exec(id));
        }
        exporter.offer(&(Arc::new(Decision { id: 101, kind: "approval".into(), ..Default::default() }) as Item));
        let stats = exporter.stats()[0].1.clone();
        drop(exporter);
        let text = std::fs::read_to_string(&path).unwrap();
        let uids: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["metadata"]["uid"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(uids, (1..=100).collect::<Vec<_>>());
        assert_eq!(stats.exported.load(Ordering::Relaxed), 100);
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        // No worker drains this queue: the sender alone, as when a worker is stuck.
        let (sender, _rx) = mpsc::channel(2);
        let stats = Arc::new(Stats::default());
        let exporter = Exporter {
            queues: vec![Queue {
                target: Target::OcsfFile("/dev/null".into()),
                sender: Mutex::new(Some(sender)),
                stats: stats.clone(),
                worker: Mutex::new(None),
            }],
        };
        for id in 0..5 {
            exporter.offer(&exec(id));
        }
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 3);
    }
}
