//! What a metrics scrape reads of the daemon: the same counters `status`
//! reports, read the same way.

use std::sync::atomic::Ordering;

use super::agent::{lock, Agent};
use crate::metrics::agent::{
    KernelCounters, MetricsSource, PolicyFigures, Shipping, Snapshot, StoreFigures,
};

impl MetricsSource for Agent {
    fn snapshot(&self) -> Snapshot {
        let maps = self.kernel.maps();
        let kernel = match maps.counters() {
            Ok(c) => Some(KernelCounters {
                decisions: c.decisions,
                denies: c.denies,
                ringbuf_drops: c.ringbuf_drops,
                tag_failures: c.tag_failures,
                tamper: c.tamper,
            }),
            Err(e) => {
                tracing::warn!("metrics: {e:#}");
                None
            }
        };
        let policy = {
            let store = lock(&self.policy);
            PolicyFigures {
                generation: store.generation(),
                version: store
                    .current()
                    .map(|c| c.version.clone())
                    .unwrap_or_default(),
            }
        };
        let (pending_batches, pending_decisions) = self.store.queued();
        let shipping = self.gateway.as_ref().map(|g| {
            let spool = g.spool.stats();
            let bundle = crate::policy::bundle_file::BundleFile::read(
                &crate::gateway::bundle_path(&self.state_dir),
            )
            .ok()
            .flatten();
            Shipping {
                connected: g.state.connected(),
                spool_bytes: spool.bytes_on_disk,
                pending_entries: spool.pending_entries,
                unacked_age: spool.unacked_age,
                lost: spool.lost_total,
                loss_markers: spool.loss_markers,
                bundle_version: bundle.map(|b| b.version).unwrap_or(0),
            }
        });
        Snapshot {
            kernel,
            events_received: self.events_received.load(Ordering::Relaxed),
            audit_lines: self.audit.lines.load(Ordering::Relaxed),
            store: StoreFigures {
                dropped: self.store.dropped(),
                pending_decisions: pending_decisions as u64,
                pending_batches: pending_batches as u64,
            },
            shipping,
            policy,
            sessions_running: lock(&self.sessions).running().len() as u64,
            tagged_processes: maps.tagged().len() as u64,
            backend: self.kernel.backend().to_string(),
        }
    }
}
