//! The event path: the kernel's ring buffer, decoded and enriched, into the
//! pipeline's sinks. Data flows one way: kernel event -> enrichment -> sinks.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_api::decision::{ALLOW, DENY, EVENTS_LOST, EXEC};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, EventsLost};
use anyhow::{Context, Result};
use libbpf_rs::{MapHandle, RingBufferBuilder};

use super::agent::{lock, Agent};
use super::learn_ops::{content_already_known, learn_job};
use crate::events::decode::Decoder;
use crate::events::enrich::{host_name, Enricher};

/// Sessions whose latest denial is kept in memory.
const MAX_REMEMBERED_DENIALS: usize = 4096;

/// How often the ring buffer is drained when the kernel does not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(200);

impl Agent {
    /// Reads everything waiting in an events ring buffer into the sinks. These
    /// decisions are old: no block message is sent for them.
    pub fn drain(&self, enricher: &mut Enricher, events: MapHandle) -> Result<u64> {
        let count = AtomicU64::new(0);
        let enricher = RefCell::new(enricher);
        let decoder = RefCell::new(Decoder::default());
        let mut builder = RingBufferBuilder::new();
        builder.add(&events, |bytes: &[u8]| {
            count.fetch_add(1, Ordering::Relaxed);
            self.handle_event(&mut enricher.borrow_mut(), &mut decoder.borrow_mut(), bytes, false);
            0
        })?;
        let ring = builder.build()?;
        ring.consume().context("read the events ring buffer")?;
        drop(ring);
        lock(&self.pipeline).flush();
        Ok(count.into_inner())
    }

    /// The event thread: drains the ring every 200 ms (the kernel wakes it
    /// sooner when the ring fills), then flushes the sinks.
    pub fn event_loop(&self, enricher: Enricher) -> Result<()> {
        let events_map = self.kernel.maps().events_handle()?;
        let enricher = RefCell::new(enricher);
        let decoder = RefCell::new(Decoder::default());
        let mut builder = RingBufferBuilder::new();
        builder.add(&events_map, |bytes: &[u8]| {
            self.handle_event(&mut enricher.borrow_mut(), &mut decoder.borrow_mut(), bytes, true);
            0
        })?;
        let ring = builder.build()?;
        let mut last_drops = 0;
        while !self.shutdown.load(Ordering::SeqCst) {
            // The timeout is the drain interval; consume() reads what arrived without a wakeup.
            if let Err(e) = ring.poll(DRAIN_EVERY) {
                tracing::warn!("ring buffer poll: {e}");
            }
            if let Err(e) = ring.consume() {
                tracing::warn!("ring buffer consume: {e}");
            }
            self.report_drops(&mut last_drops);
            lock(&self.pipeline).flush();
        }
        // Whatever the kernel queued before the stop still reaches the sinks.
        let _ = ring.consume();
        self.report_drops(&mut last_drops);
        lock(&self.pipeline).flush();
        Ok(())
    }

    /// One kernel event: decode, enrich, block message, sinks. `live` is false
    /// for the backlog read at start: those decisions are old, and a block
    /// message about them would reach the agent long after the fact.
    fn handle_event(&self, enricher: &mut Enricher, decoder: &mut Decoder, bytes: &[u8], live: bool) {
        self.events_received.fetch_add(1, Ordering::Relaxed);
        let Some(event) = decoder.decode(bytes) else {
            tracing::warn!(len = bytes.len(), "undecodable kernel event");
            return;
        };
        let session = event.header().session_id;
        let (mut decision, learn) = {
            let mut sessions = lock(&self.sessions);
            let policy = lock(&self.policy);
            let decision = enricher.enrich(&event, &sessions, &policy);
            let learn = learn_job(&policy, &decision);
            if decision.kind == EXEC && decision.decision == ALLOW {
                // The agent's own exec (launch's) has happened: ready -> running.
                // Also from the backlog: a daemon killed before it drained that
                // exec must not bring the session back as never started.
                sessions.mark_running(session);
            }
            (decision, learn)
        };
        if let Some(job) = learn {
            if content_already_known(event.header().flags) {
                self.learner.already_known.fetch_add(1, Ordering::Relaxed);
            } else {
                self.learner.offer(job);
            }
        }
        let held = self.approval_step(&event, &mut decision);
        if decision.reason == "security_block" {
            self.name_security_block(&mut decision);
        }
        if live && decision.kind == EXEC && decision.decision == DENY {
            // The refused process itself (LSM: execve failed) or, when it was killed, its parent.
            let message = match &held {
                Some(opened) => crate::notify::approval_message(&decision, opened),
                None => crate::notify::block_message(&decision),
            };
            let maps = self.kernel.maps();
            let told = crate::notify::tell(&[decision.pid, decision.ppid], |pid| maps.tag_of(pid).map(|t| t.session_id), session, &message);
            tracing::debug!(pid = decision.pid, told = ?told, "block message");
        }
        let record = lock(&self.pipeline).emit(decision);
        if record.decision.decision == DENY && !record.decision.session_id.is_empty() {
            let mut last = lock(&self.last_denials);
            if last.len() >= MAX_REMEMBERED_DENIALS {
                // Sessions come and go; forgetting costs only a store query.
                last.clear();
            }
            last.insert(record.decision.session_id.clone(), record.decision.clone());
        }
        if let Some(opened) = &held {
            self.approval_opened(opened, &record.decision);
        }
    }

    /// A decision the daemon itself makes (a revocation): to every sink now.
    pub fn record(&self, decision: Decision) {
        let mut pipeline = lock(&self.pipeline);
        pipeline.emit(decision);
        pipeline.flush();
    }

    /// Events the ring buffer could not hold: logged, and recorded as an
    /// `events_lost` decision carrying the kernel's own count, so the audit
    /// trail, the store and every follower learn how much is missing (the
    /// decisions were enforced anyway).
    fn report_drops(&self, last_drops: &mut u64) {
        let Ok(c) = self.kernel.maps().counters() else {
            return;
        };
        if c.ringbuf_drops <= *last_drops {
            return;
        }
        let lost = c.ringbuf_drops - *last_drops;
        tracing::warn!(dropped = lost, total = c.ringbuf_drops, "ring buffer full: events lost (decisions were still enforced)");
        *last_drops = c.ringbuf_drops;
        let now = crate::clock::now_unix_nanos();
        lock(&self.pipeline).emit(Decision {
            time: crate::clock::rfc3339_from_unix_nanos(now.into()),
            time_unix_nanos: now,
            host: host_name(),
            kind: EVENTS_LOST.to_string(),
            // Not a verdict: the kernel enforced each lost decision, which this record only counts.
            decision: String::new(),
            reason: "ringbuf_full".to_string(),
            backend: self.kernel.backend().to_string(),
            detail: Some(Detail::EventsLost(EventsLost { count: lost, total: c.ringbuf_drops, decisions: c.decisions })),
            ..Default::default()
        });
    }
}
