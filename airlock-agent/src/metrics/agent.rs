//! The daemon's own figures, read at each scrape through [`MetricsSource`]
//! (the daemon implements it; this module knows nothing of the daemon).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// What a scrape reads, all of it from counters the daemon keeps.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The kernel's per-CPU counters, summed (None when the map could not be read).
    pub kernel: Option<KernelCounters>,
    /// Ring-buffer records the events thread received.
    pub events_received: u64,
    pub audit_lines: u64,
    pub store: StoreFigures,
    /// With a gateway: the spool and the link.
    pub shipping: Option<Shipping>,
    pub policy: PolicyFigures,
    pub sessions_running: u64,
    pub tagged_processes: u64,
    pub backend: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct KernelCounters {
    pub decisions: u64,
    pub denies: u64,
    pub ringbuf_drops: u64,
    pub tag_failures: u64,
    pub tamper: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFigures {
    /// Decisions the store could not take (its queue was full, or a write failed).
    pub dropped: u64,
    /// Decisions, and batches, handed to the writer and not yet written.
    pub pending_decisions: u64,
    pub pending_batches: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Shipping {
    pub connected: bool,
    pub spool_bytes: u64,
    pub pending_entries: u64,
    pub unacked_age: Duration,
    pub lost: u64,
    pub loss_markers: u64,
    /// The gateway's policy version in force (0: none received yet).
    pub bundle_version: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyFigures {
    /// Bumped at every install; what `status` shows as the generation.
    pub generation: u32,
    /// The content fingerprint of the policy in force ("" before the first install).
    pub version: String,
}

/// What the metrics ask of the daemon.
pub trait MetricsSource: Send + Sync {
    fn snapshot(&self) -> Snapshot;
}

pub struct Collector(pub Arc<dyn MetricsSource>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("agent metrics collector")
    }
}

type Out = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Out {
    ConstCounter::new(value).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Out {
    ConstGauge::new(value).encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

fn info(e: &mut DescriptorEncoder, name: &str, help: &str, labels: &[(&str, &str)]) -> Out {
    e.encode_descriptor(name, help, None, MetricType::Info)?
        .encode_info(&labels)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Out {
        let s = self.0.snapshot();
        info(
            &mut e,
            "build",
            "The agent's version",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )?;
        info(
            &mut e,
            "backend",
            "The enforcement backend in use (lsm or compat)",
            &[("backend", s.backend.as_str())],
        )?;
        if let Some(k) = s.kernel {
            counter(
                &mut e,
                "kernel_decisions",
                "Decisions the eBPF programs made (kernel counter)",
                k.decisions,
            )?;
            counter(
                &mut e,
                "kernel_denies",
                "Denials the eBPF programs made (kernel counter)",
                k.denies,
            )?;
            counter(&mut e, "kernel_ringbuf_dropped_events", "Events the kernel could not queue because the ring buffer was full; the decisions were enforced", k.ringbuf_drops)?;
            counter(
                &mut e,
                "kernel_tag_failures",
                "Forks whose session tag could not be stored (the child was quarantined)",
                k.tag_failures,
            )?;
            counter(
                &mut e,
                "kernel_tamper_attempts",
                "Tamper attempts (refused on LSM, offender killed on compat)",
                k.tamper,
            )?;
        }
        counter(
            &mut e,
            "events_received",
            "Ring-buffer records the daemon read",
            s.events_received,
        )?;
        counter(
            &mut e,
            "audit_lines",
            "Lines written to the audit trail by this daemon",
            s.audit_lines,
        )?;
        counter(&mut e, "store_dropped_decisions", "Decisions the decision store could not take (spill full or write failed); the audit trail has them", s.store.dropped)?;
        gauge(
            &mut e,
            "store_pending_decisions",
            "Decisions handed to the store's writer and not yet written (the store's lag)",
            None,
            int(s.store.pending_decisions),
        )?;
        gauge(
            &mut e,
            "store_pending_batches",
            "Batches handed to the store's writer and not yet written",
            None,
            int(s.store.pending_batches),
        )?;
        if let Some(g) = s.shipping {
            gauge(
                &mut e,
                "gateway_connected",
                "1 while the stream to the gateway is up",
                None,
                i64::from(g.connected),
            )?;
            gauge(
                &mut e,
                "spool_size",
                "Size of the gateway spool's segment files",
                Some(&Unit::Bytes),
                int(g.spool_bytes),
            )?;
            gauge(
                &mut e,
                "spool_pending_entries",
                "Spool entries not yet acknowledged by the gateway",
                None,
                int(g.pending_entries),
            )?;
            let lag = g.unacked_age.as_secs_f64();
            ConstGauge::new(lag).encode(e.encode_descriptor(
                "ship_lag",
                "How long the oldest decision not yet acknowledged by the gateway has waited (to the second; 0 when all are acknowledged)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?)?;
            counter(&mut e, "spool_lost_decisions", "Decisions the full spool dropped since the daemon started (counted in loss markers)", g.lost)?;
            counter(
                &mut e,
                "spool_loss_markers",
                "Loss markers written to the spool since the daemon started",
                g.loss_markers,
            )?;
            gauge(
                &mut e,
                "policy_bundle_version",
                "The gateway's policy version in force (0: none yet)",
                None,
                int(g.bundle_version),
            )?;
        }
        gauge(
            &mut e,
            "policy_generation",
            "Policy installs since the pinned enforcement was loaded (status: policy generation)",
            None,
            i64::from(s.policy.generation),
        )?;
        info(
            &mut e,
            "policy",
            "The content fingerprint of the policy in force (status: policy version)",
            &[("version", s.policy.version.as_str())],
        )?;
        gauge(
            &mut e,
            "sessions_running",
            "Governed sessions live",
            None,
            int(s.sessions_running),
        )?;
        gauge(
            &mut e,
            "tagged_processes",
            "Processes the kernel holds a session tag for",
            None,
            int(s.tagged_processes),
        )?;
        Ok(())
    }
}
