//! The writer thread: owns the write connection, takes whole batches (one
//! ring-buffer drain each), and whatever else is queued behind the first, as
//! one transaction, stores what was spilled once its queue is empty, and
//! applies retention.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::Connection;

use crate::retention::apply_retention;
use crate::schema::bucket_of;
use crate::spill::Spill;
use crate::{now_ns, Retention, Row, MAX_PENDING};

/// How often the writer applies the retention limit.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

pub enum Batch {
    Decisions(Vec<Row>),
    /// Something was spilled: a writer waiting on an empty queue looks.
    Spilled,
    Stop,
}

/// Batches in the queue and the decisions in them, shared with the submitters.
pub struct Backlog<'a> {
    pub dropped: &'a AtomicU64,
    /// The highest decision id the writer is done with (stored, or failed and counted).
    pub written: &'a AtomicU64,
    pub pending: &'a AtomicUsize,
    pub pending_rows: &'a AtomicUsize,
    pub spill: &'a Spill,
}

impl Backlog<'_> {
    fn done(&self, queued: &Queued) {
        self.pending.fetch_sub(queued.batches, Ordering::Relaxed);
        self.pending_rows.fetch_sub(queued.rows.len(), Ordering::Relaxed);
        // Last: whoever sees the mark move sees the queue without these rows.
        self.written_up_to(&queued.rows);
    }

    fn written_up_to(&self, rows: &[Row]) {
        if let Some(highest) = rows.iter().map(|r| r.id as u64).max() {
            self.written.fetch_max(highest, Ordering::Release);
        }
    }
}

/// Batches taken from the queue together, to be stored in one transaction.
struct Queued {
    rows: Vec<Row>,
    batches: usize,
    /// A stop was queued behind them.
    stop: bool,
}

/// `first` and the batches queued behind it, up to about [`MAX_PENDING`]
/// rows. A commit (its WAL write, its share of the checkpoints) costs about
/// as much for a few rows as for thousands, and a writer that fell behind
/// finds many small batches waiting (one per drain).
fn take_queued(first: Vec<Row>, batches: &Receiver<Batch>) -> Queued {
    let mut queued = Queued { rows: first, batches: 1, stop: false };
    while queued.rows.len() < MAX_PENDING {
        match batches.try_recv() {
            Ok(Batch::Decisions(more)) => {
                queued.rows.extend(more);
                queued.batches += 1;
            }
            // The loop looks at the spill at every turn.
            Ok(Batch::Spilled) => {}
            Ok(Batch::Stop) => {
                queued.stop = true;
                break;
            }
            Err(_) => break,
        }
    }
    queued
}

/// The writer runs at a lower priority (nice 10) than the rest of the daemon:
/// when a flood of decisions leaves too little CPU for both, the events thread
/// that drains the kernel's ring buffer into the audit trail goes first, and
/// the store (best effort, its drops counted) takes what is left.
pub fn yield_to_the_audit_trail() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id.
    let tid = unsafe { libc::gettid() };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) } != 0 {
        tracing::warn!("could not lower the store writer's priority: {}", std::io::Error::last_os_error());
    }
}

pub fn writer_loop(mut conn: Connection, batches: Receiver<Batch>, retention: Retention, backlog: Backlog<'_>) {
    let mut last_retention = Instant::now() - RETENTION_EVERY;
    loop {
        if last_retention.elapsed() >= RETENTION_EVERY {
            if let Err(e) = apply_retention(&mut conn, retention, now_ns()) {
                tracing::error!("decision store retention: {e:#}");
            }
            last_retention = Instant::now();
        }
        // The queue holds what came before the spill began: it goes first.
        let next = if backlog.spill.rows() > 0 {
            match batches.try_recv() {
                Ok(batch) => Ok(batch),
                Err(TryRecvError::Empty) => {
                    store_spilled(&mut conn, &backlog);
                    continue;
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        } else {
            batches.recv_timeout(Duration::from_secs(5))
        };
        match next {
            Ok(Batch::Decisions(batch)) => {
                let queued = take_queued(batch, &batches);
                store_queued(&mut conn, &queued, &backlog);
                if queued.stop {
                    break;
                }
            }
            Ok(Batch::Spilled) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Batch::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Everything queued before the stop is written; a spill stays on disk for the next start.
    while let Ok(next) = batches.try_recv() {
        if let Batch::Decisions(batch) = next {
            store_queued(&mut conn, &take_queued(batch, &batches), &backlog);
        }
    }
}

fn store_queued(conn: &mut Connection, queued: &Queued, backlog: &Backlog<'_>) {
    if let Err(e) = insert(conn, &queued.rows) {
        backlog.dropped.fetch_add(queued.rows.len() as u64, Ordering::Relaxed);
        tracing::error!(decisions = queued.rows.len(), "decision store write failed (the audit trail has them): {e:#}");
    }
    backlog.done(queued);
}

/// One chunk of the spill into the database.
fn store_spilled(conn: &mut Connection, backlog: &Backlog<'_>) {
    match backlog.spill.take() {
        Ok((rows, unreadable)) => {
            backlog.dropped.fetch_add(unreadable, Ordering::Relaxed);
            if rows.is_empty() {
                return;
            }
            if let Err(e) = insert(conn, &rows) {
                backlog.dropped.fetch_add(rows.len() as u64, Ordering::Relaxed);
                tracing::error!(decisions = rows.len(), "decision store write failed (the audit trail has them): {e:#}");
            }
            backlog.written_up_to(&rows);
        }
        Err(e) => {
            // A spill that cannot be read back would hold every later batch: it is given up, and counted.
            let lost = backlog.spill.discard();
            backlog.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(decisions = lost, "the decision store's spill could not be read; its decisions are dropped from the store (the audit trail has them): {e:#}");
        }
    }
}

/// One transaction. `OR IGNORE`, not `OR REPLACE`: ids only grow,
/// and a REPLACE may delete rows mid-statement, which makes SQLite keep a
/// statement journal: a temporary file written for every page the insert
/// touched, which was most of the writer's time.
pub fn insert(conn: &mut Connection, batch: &[Row]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO decisions (id, time_ns, session_id, user, uid, role, kind, decision, subject)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut bodies = tx.prepare_cached("INSERT OR IGNORE INTO bodies (id, body) VALUES (?1, ?2)")?;
        let mut buckets = tx.prepare_cached(
            "INSERT INTO time_buckets (minute, first_id, last_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (minute) DO UPDATE SET first_id = MIN(first_id, excluded.first_id), last_id = MAX(last_id, excluded.last_id)",
        )?;
        for r in batch {
            stmt.execute(rusqlite::params![r.id, r.time_ns, r.session_id, r.user, r.uid, r.role, r.kind, r.decision, r.subject])?;
            bodies.execute(rusqlite::params![r.id, r.body.as_ref()])?;
        }
        for (minute, first_id, last_id) in id_spans_by_minute(batch) {
            buckets.execute(rusqlite::params![minute, first_id, last_id])?;
        }
        let mut owners = tx.prepare_cached("INSERT OR IGNORE INTO session_owners (session_id, user, uid, role) VALUES (?1, ?2, ?3, ?4)")?;
        let mut seen: Vec<&Row> = Vec::with_capacity(2);
        for r in batch {
            let same = |o: &&Row| o.session_id == r.session_id && o.user == r.user && o.uid == r.uid && o.role == r.role;
            if !seen.iter().any(same) {
                owners.execute(rusqlite::params![r.session_id, r.user, r.uid, r.role])?;
                // Past a few owners a batch is unusual: the insert's own lookup does the rest.
                if seen.len() < 64 {
                    seen.push(r);
                }
            }
        }
    }
    tx.commit().context("commit a batch of decisions")
}

/// The lowest and highest id of each minute in a batch; a batch rarely spans
/// more than two minutes, so a short list beats a map.
fn id_spans_by_minute(batch: &[Row]) -> Vec<(i64, i64, i64)> {
    let mut spans: Vec<(i64, i64, i64)> = Vec::with_capacity(2);
    for r in batch {
        let minute = bucket_of(r.time_ns);
        match spans.iter_mut().find(|s| s.0 == minute) {
            Some(span) => {
                span.1 = span.1.min(r.id);
                span.2 = span.2.max(r.id);
            }
            None => spans.push((minute, r.id, r.id)),
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_api::v1::Decision;

    fn rows(ids: std::ops::RangeInclusive<u64>) -> Vec<Row> {
        ids.map(|id| Row::of(&Decision { id, ..Default::default() })).collect()
    }

    fn ids(queued: &Queued) -> Vec<i64> {
        queued.rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn the_batches_queued_behind_the_first_go_with_it_in_order_up_to_the_bound() {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        tx.send(Batch::Decisions(rows(3..=4))).unwrap();
        tx.send(Batch::Spilled).unwrap();
        tx.send(Batch::Decisions(rows(5..=5))).unwrap();
        let queued = take_queued(rows(1..=2), &rx);
        assert_eq!((ids(&queued), queued.batches, queued.stop), (vec![1, 2, 3, 4, 5], 3, false));

        // A stop behind them ends the taking, and says so.
        tx.send(Batch::Decisions(rows(7..=7))).unwrap();
        tx.send(Batch::Stop).unwrap();
        tx.send(Batch::Decisions(rows(8..=8))).unwrap();
        let queued = take_queued(rows(6..=6), &rx);
        assert_eq!((ids(&queued), queued.batches, queued.stop), (vec![6, 7], 2, true));
        assert!(matches!(rx.try_recv(), Ok(Batch::Decisions(_))), "what follows the stop stays queued");

        // Past the bound the rest waits for the next transaction.
        let full = MAX_PENDING as u64;
        tx.send(Batch::Decisions(rows(full + 1..=full + 1))).unwrap();
        let queued = take_queued(rows(1..=full), &rx);
        assert_eq!((queued.rows.len(), queued.batches), (MAX_PENDING, 1));
        assert!(matches!(rx.try_recv(), Ok(Batch::Decisions(b)) if b.len() == 1));
    }
}
