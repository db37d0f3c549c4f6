//! The decision store: an embedded SQLite database, `<dir>/decisions.db`,
//! that the API queries. The agent writes every decision here as one of its
//! sinks (the audit trail is another). The gateway has its own store
//! (`airlock-gateway-store`), for a fleet.
//!
//! Writing: one writer thread owns the write connection and takes whole
//! batches (everything one ring-buffer drain produced) as one transaction, so
//! the event thread never waits on the disk. A burst the writer cannot keep up
//! with goes to a file ([`spill`]) and is stored from there as soon as the
//! writer has caught up; memory stays bounded. Only when that file is full too
//! (or a write fails) are batches dropped and counted (`dropped`): enforcement
//! and the audit trail never depend on the store.
//!
//! Reading: WAL mode, so queries run on their own connection while the writer
//! commits. See [`schema`] for the tables.

mod filter;
mod legacy;
mod page;
mod retention;
pub mod schema;
pub mod spill;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_api::decision::subject_of;
use airlock_api::v1::{Decision, DecisionFilter};
use anyhow::{Context, Result};
use bytes::Bytes;
use prost::Message;
use rusqlite::{params_from_iter, Connection};

pub use filter::where_clause;
pub use retention::{apply_retention, used_bytes};
pub use writer::insert;
use spill::Spill;
use writer::{Backlog, Batch};

/// Retention: decisions older than `max_age` go, and the oldest go first
/// while the data exceeds `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age: Duration::from_secs(30 * 24 * 3600), max_bytes: 2 << 30 }
    }
}

/// Decisions waiting for the writer in memory, at most (a few MB); beyond
/// that, batches go to the spill file. Bounds the daemon's memory.
pub const MAX_PENDING: usize = 4_096;
/// The event thread hands a batch over at the latest when it holds this many.
pub const MAX_BATCH: usize = 1_024;
const QUEUE_BATCHES: usize = 1024;
/// Page size of QueryDecisions when the caller names none, and the most it may ask.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// The store's file in a directory.
pub const FILE_NAME: &str = "decisions.db";

/// A decision as the writer stores it: the filter columns and the encoded
/// body. Made in the event thread; a fraction of the memory of a
/// [`Decision`] in far fewer allocations, so a queue of them stays small.
pub struct Row {
    id: i64,
    time_ns: i64,
    uid: u32,
    session_id: String,
    user: String,
    role: String,
    kind: String,
    decision: String,
    subject: String,
    /// Shared with the other sinks that hold the same encoding.
    body: Bytes,
}

impl Row {
    /// A row for `d` whose protobuf encoding the caller already made.
    pub fn new(d: &Decision, body: Bytes) -> Row {
        Row {
            id: d.id as i64,
            time_ns: d.time_unix_nanos,
            uid: d.uid,
            session_id: d.session_id.clone(),
            user: d.user.clone(),
            role: d.role.clone(),
            kind: d.kind.clone(),
            decision: d.decision.clone(),
            subject: subject_of(d),
            body,
        }
    }

    /// A row for `d`, encoding it.
    pub fn of(d: &Decision) -> Row {
        Row::new(d, Bytes::from(d.encode_to_vec()))
    }
}

/// The store: a writer thread fed through a bounded queue, and a read connection.
pub struct Store {
    path: PathBuf,
    retention: Retention,
    queue: SyncSender<Batch>,
    reader: Mutex<Connection>,
    dropped: Arc<AtomicU64>,
    /// The highest decision id the writer is done with.
    written: Arc<AtomicU64>,
    /// Decisions that arrived while the writer was behind, on disk.
    spill: Arc<Spill>,
    /// Batches submitted and not yet written, and the decisions in them.
    pending: Arc<AtomicUsize>,
    pending_rows: Arc<AtomicUsize>,
    /// The second of the last "store behind" warning.
    last_warning: AtomicU64,
    next_id: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating) `<dir>/decisions.db` and starts its writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<Store> {
        let path = dir.join(FILE_NAME);
        let writer = schema::open_for_writing(&path)?;
        let last: i64 = writer.query_row("SELECT COALESCE(MAX(id), 0) FROM decisions", [], |r| r.get(0))?;
        let reader = schema::open_for_reading(&path)?;
        let (spill, recovered) = Spill::open(dir)?;
        if recovered.rows > 0 || recovered.torn_bytes > 0 {
            tracing::info!(decisions = recovered.rows, torn_bytes = recovered.torn_bytes, path = %spill.path().display(),
                "decisions spilled by the last run are stored now");
        }
        let spill = Arc::new(spill);
        let next_id = (last as u64).max(recovered.max_id) + 1;

        let (queue, batches) = mpsc::sync_channel(QUEUE_BATCHES);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(last as u64));
        let pending = Arc::new(AtomicUsize::new(0));
        let pending_rows = Arc::new(AtomicUsize::new(0));
        let handle = std::thread::Builder::new()
            .name("airlock-store".into())
            .spawn({
                let dropped = dropped.clone();
                let written = written.clone();
                let pending = pending.clone();
                let pending_rows = pending_rows.clone();
                let spill = spill.clone();
                move || {
                    writer::yield_to_the_audit_trail();
                    let backlog = Backlog { dropped: &dropped, written: &written, pending: &pending, pending_rows: &pending_rows, spill: &spill };
                    writer::writer_loop(writer, batches, retention, backlog)
                }
            })
            .context("start the store writer thread")?;
        Ok(Store {
            path,
            retention,
            queue,
            reader: Mutex::new(reader),
            dropped,
            written,
            spill,
            pending,
            pending_rows,
            last_warning: AtomicU64::new(0),
            next_id: AtomicU64::new(next_id),
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The id the next decision gets: ids only grow, across restarts too.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits, at most `bound`, until the writer is done with decision `id`
    /// (the store fills in id order): a decision is often asked for just
    /// after it was made, before the writer, behind the audit trail, got to
    /// it. False when the bound passed first, and at once when `id` is more
    /// than [`MAX_PENDING`] past what is written: the writer is far behind
    /// (spilling), and a caller would wait out every bound.
    pub fn wait_written(&self, id: u64, bound: Duration) -> bool {
        if !within_reach(self.written.load(Ordering::Acquire), id) {
            return false;
        }
        let deadline = Instant::now() + bound;
        loop {
            if self.written.load(Ordering::Acquire) >= id {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Batches in memory, and decisions in memory or spilled, waiting for the writer.
    pub fn queued(&self) -> (usize, usize) {
        (self.pending.load(Ordering::Relaxed), self.pending_rows.load(Ordering::Relaxed) + self.spill.rows() as usize)
    }

    /// Hands one batch to the writer; never blocks. While anything is
    /// spilled, later batches are spilled behind it, so the store fills in order.
    pub fn submit(&self, batch: Vec<Row>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let behind = self.spill.rows() > 0 || self.pending_rows.load(Ordering::Relaxed) + n > MAX_PENDING;
        let batch = if behind {
            batch
        } else {
            // Counted before the send: the writer may finish the batch before try_send returns.
            self.pending.fetch_add(1, Ordering::Relaxed);
            self.pending_rows.fetch_add(n, Ordering::Relaxed);
            match self.queue.try_send(Batch::Decisions(batch)) {
                Ok(()) => return,
                Err(e) => {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    self.pending_rows.fetch_sub(n, Ordering::Relaxed);
                    let (mpsc::TrySendError::Full(Batch::Decisions(batch)) | mpsc::TrySendError::Disconnected(Batch::Decisions(batch))) = e else {
                        return;
                    };
                    batch
                }
            }
        };
        if self.spill.append(&batch) {
            // Wakes a writer waiting on an empty queue; a full queue means it is busy anyway.
            let _ = self.queue.try_send(Batch::Spilled);
            self.warn_at_most_once_a_second(|| tracing::warn!(spilled = n, waiting = self.spill.rows(), "decision store behind: decisions spilled to disk until the writer catches up"));
            return;
        }
        let total = self.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        self.warn_at_most_once_a_second(|| tracing::warn!(dropped = n, total, "decision store behind and its spill full: decisions dropped from the store (the audit trail has them)"));
    }

    /// A store that cannot keep up must not flood the log too.
    fn warn_at_most_once_a_second(&self, warn: impl FnOnce()) {
        let now = (now_ns() / 1_000_000_000) as u64;
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            warn();
        }
    }

    /// Writes what is queued and stops the writer.
    pub fn close(&self) {
        let _ = self.queue.send(Batch::Stop);
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }

    /// Decisions matching `filter`, newest first, older than the cursor `before`
    /// (0: from the newest). Returns the page and the cursor of the next one.
    pub fn query(&self, filter: &DecisionFilter, before: u64, page: usize) -> Result<(Vec<Decision>, Option<u64>)> {
        let page = page.clamp(1, MAX_PAGE);
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        // A page takes several statements: one read transaction makes them see one
        // snapshot, so a commit of the writer (or its retention) between them never
        // shows one session's rows of a batch and not another's, or drops a body
        // whose id was already read.
        let snapshot = conn.unchecked_transaction().context("begin a read of the decision store")?;
        let mut ids = page::newest_ids(&snapshot, filter, before, page + 1)?;
        let more = ids.len() > page;
        ids.truncate(page);
        let out = read_bodies(&snapshot, &ids)?;
        snapshot.finish().context("end a read of the decision store")?;
        let next = if more { out.last().map(|d| d.id) } else { None };
        Ok((out, next))
    }

    /// Decisions stored, and the bytes the database uses.
    pub fn stats(&self) -> Result<(u64, u64)> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))?;
        Ok((count as u64, used_bytes(&conn)?))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The decisions with these ids, in this order.
fn read_bodies(conn: &Connection, ids: &[i64]) -> Result<Vec<Decision>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; ids.len()].join(", ");
    let mut stmt = conn.prepare_cached(&format!("SELECT id, body FROM bodies WHERE id IN ({placeholders})")).context("prepare the body query")?;
    let mut rows = stmt.query(params_from_iter(ids.iter()))?;
    let mut by_id = std::collections::HashMap::with_capacity(ids.len());
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let body: Vec<u8> = row.get(1)?;
        let mut d = Decision::decode(body.as_slice()).with_context(|| format!("decision {id} in the store is not readable"))?;
        legacy::upgrade(&mut d, &body);
        d.id = id as u64;
        by_id.insert(id, d);
    }
    ids.iter().map(|id| by_id.remove(id).with_context(|| format!("decision {id} has no body in the store"))).collect()
}

/// Whether a writer done with ids up to `written` is near enough to `id` to
/// be worth waiting for: no more than [`MAX_PENDING`] behind it.
fn within_reach(written: u64, id: u64) -> bool {
    id <= written.saturating_add(MAX_PENDING as u64)
}

pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_api::decision::matches;
    use airlock_api::v1::decision::Detail;
    use airlock_api::v1::{DecisionKind, Destination, Verdict};

    fn decision(id: u64, t: i64, session: &str, kind: &str, verdict: &str, argv: &[&str]) -> Decision {
        Decision {
            id,
            time_unix_nanos: t,
            kind: kind.into(),
            decision: verdict.into(),
            session_id: session.into(),
            role: "agent".into(),
            user: "alice".into(),
            uid: 1000,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            detail: (kind == "connect").then(|| Detail::Destination(Destination { address: "127.0.0.1".into(), port: 443, protocol: "tcp".into() })),
            ..Default::default()
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn wait_for(store: &Store, n: u64) {
        for _ in 0..200 {
            if store.stats().map(|s| s.0).unwrap_or(0) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the writer did not store {n} decisions");
    }

    /// What `wait_written` says is written can be read; an id not made yet
    /// is waited for only as long as the bound.
    #[test]
    fn a_decision_waited_for_is_readable_and_an_id_never_made_times_out() {
        let dir = temp_dir("written");
        let store = Store::open(&dir, Retention::default()).unwrap();
        let ids: Vec<u64> = (0..3).map(|_| store.next_id()).collect();
        store.submit(ids.iter().map(|&id| Row::of(&decision(id, 1_000, "s1", "exec", "deny", &["terraform", "apply"]))).collect());
        assert!(store.wait_written(ids[2], Duration::from_secs(30)), "the writer never got to the batch");
        let (found, _) = store.query(&DecisionFilter::default(), ids[2] + 1, 1).unwrap();
        assert_eq!(found.first().map(|d| d.id), Some(ids[2]), "written, and not readable");
        assert!(!store.wait_written(ids[2] + 1, Duration::from_millis(50)), "an id nobody made was written");
        // Far past what is written, nothing is waited for.
        assert!(within_reach(ids[2], ids[2] + MAX_PENDING as u64));
        assert!(!within_reach(ids[2], ids[2] + MAX_PENDING as u64 + 1), "a writer far behind is waited for");
        assert!(!store.wait_written(ids[2] + MAX_PENDING as u64 + 1, Duration::from_millis(50)), "an id nobody made was written");
        store.close();
        // After a reopen, what the database holds counts as written.
        let store = Store::open(&dir, Retention::default()).unwrap();
        assert!(store.wait_written(ids[2], Duration::ZERO));
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn filters_pages_and_ids_survive_a_reopen() {
        let dir = temp_dir("filters");
        {
            let store = Store::open(&dir, Retention::default()).unwrap();
            let mut batch = Vec::new();
            for i in 0..25u64 {
                let (kind, verdict, argv): (&str, &str, &[&str]) = match i % 3 {
                    0 => ("exec", "deny", &["terraform", "apply", "-auto-approve"]),
                    1 => ("exec", "allow", &["ls", "-l"]),
                    _ => ("connect", "allow", &[]),
                };
                batch.push(decision(store.next_id(), 1_000 + i as i64, if i < 10 { "s1" } else { "s2" }, kind, verdict, argv));
            }
            store.submit(batch.iter().map(Row::of).collect());
            wait_for(&store, 25);

            let all = DecisionFilter::default();
            let (page1, next) = store.query(&all, 0, 10).unwrap();
            assert_eq!(page1.iter().map(|d| d.id).collect::<Vec<_>>(), (16..=25).rev().collect::<Vec<_>>());
            let (page3, end) = store.query(&all, 6, 10).unwrap();
            assert_eq!(next, Some(16));
            assert_eq!(page3.len(), 5);
            assert_eq!(end, None);

            let denies = DecisionFilter { decision: Verdict::Deny as i32, session_id: "s1".into(), ..Default::default() };
            let (d, _) = store.query(&denies, 0, 100).unwrap();
            assert_eq!(d.len(), 4, "ids 1,4,7,10");
            assert!(d.iter().all(|x| x.decision == "deny" && x.session_id == "s1" && matches(&denies, x)));

            let text = DecisionFilter { text: "TERRAFORM APPLY".into(), ..Default::default() };
            assert_eq!(store.query(&text, 0, 100).unwrap().0.len(), 9);
            let addr = DecisionFilter { text: "127.0.0.1:443".into(), kind: DecisionKind::Connect as i32, ..Default::default() };
            assert_eq!(store.query(&addr, 0, 100).unwrap().0.len(), 8);
            let wildcard = DecisionFilter { text: "%".into(), ..Default::default() };
            assert!(store.query(&wildcard, 0, 100).unwrap().0.is_empty(), "% is a character, not a wildcard");
            let original = store.query(&text, 0, 1).unwrap().0;
            assert_eq!(original[0].argv, vec!["terraform", "apply", "-auto-approve"], "the record keeps its own case");
            let range = DecisionFilter { since_unix_nanos: 1_010, until_unix_nanos: 1_015, ..Default::default() };
            assert_eq!(store.query(&range, 0, 100).unwrap().0.len(), 5);
            let by_uid = DecisionFilter { user: "1000".into(), ..Default::default() };
            assert_eq!(store.query(&by_uid, 0, 100).unwrap().0.len(), 25);
            let nobody = DecisionFilter { user: "bob".into(), ..Default::default() };
            assert!(store.query(&nobody, 0, 100).unwrap().0.is_empty());
            store.close();
        }
        let store = Store::open(&dir, Retention::default()).unwrap();
        assert_eq!(store.next_id(), 26, "ids keep growing across restarts");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_drops_old_and_oversized_data() {
        let dir = temp_dir("retention");
        let path = dir.join("decisions.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").unwrap();
        schema::create_tables(&conn).unwrap();
        let long = "x".repeat(400);
        let batch: Vec<Row> = (1..=5_000u64).map(|i| Row::of(&decision(i, i as i64 * 1_000, "s", "exec", "allow", &["echo", &long]))).collect();
        insert(&mut conn, &batch).unwrap();

        // Age: everything before t=1_000_000 (ids below 1000) goes.
        let age = Retention { max_age: Duration::from_nanos(4_000_000), max_bytes: u64::MAX };
        assert_eq!(apply_retention(&mut conn, age, 5_000_000).unwrap(), 999);
        let oldest: i64 = conn.query_row("SELECT MIN(id) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(oldest, 1000);

        // Size: the oldest go until the data fits.
        let before = used_bytes(&conn).unwrap();
        let size = Retention { max_age: Duration::from_secs(3600), max_bytes: before / 2 };
        let removed = apply_retention(&mut conn, size, 5_000_000).unwrap();
        assert!(removed > 0);
        assert!(used_bytes(&conn).unwrap() <= before / 2);
        let newest: i64 = conn.query_row("SELECT MAX(id) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(newest, 5000, "the newest decisions are kept");
        // Buckets go with their last decision, and the rest still bound every decision's id.
        let oldest: i64 = conn.query_row("SELECT MIN(id) FROM decisions", [], |r| r.get(0)).unwrap();
        let stale: i64 = conn.query_row("SELECT COUNT(*) FROM time_buckets WHERE last_id < ?1", [oldest], |r| r.get(0)).unwrap();
        assert_eq!(stale, 0);
        let unbounded: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM decisions AS d WHERE NOT EXISTS (SELECT 1 FROM time_buckets AS b
                   WHERE b.minute = d.time_ns / 60000000000 AND d.id BETWEEN b.first_id AND b.last_id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unbounded, 0);
        // The session stays listed while it has decisions, and goes with its last one.
        let owners: i64 = conn.query_row("SELECT COUNT(*) FROM session_owners", [], |r| r.get(0)).unwrap();
        assert_eq!(owners, 1);
        let everything = Retention { max_age: Duration::from_nanos(1), max_bytes: u64::MAX };
        apply_retention(&mut conn, everything, 10_000_000).unwrap();
        for table in ["decisions", "bodies", "time_buckets", "session_owners"] {
            let left: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap();
            assert_eq!(left, 0, "{table}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The store's SQL and the live stream's `matches` must select the same
    /// decisions, for every filter: random decisions, random filters.
    #[test]
    fn the_sql_filter_and_the_stream_filter_agree() {
        use airlock_api::v1::{GuardDetail, UnixSocket};
        let dir = temp_dir("agree");
        let store = Store::open(&dir, Retention::default()).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let kinds = ["exec", "connect", "sendmsg", "unix_connect", "tamper", "file_open", "revoke", "events_lost"];
        let mut all = Vec::new();
        for i in 1..=1_000u64 {
            let kind = kinds[next(kinds.len() as u64) as usize];
            // Five seconds apart, up to 20 s out of order: minutes whose ids overlap.
            let t = 1_000 + (i as i64 * 5 + next(41) as i64 - 20) * 1_000_000_000;
            // Half the rows are carol's, in the role "bulk", in more sessions than
            // page::MOST_SESSIONS_MERGED; the rest are alice's and bob's in a few,
            // including the session "" (decisions of no session), where users mix.
            let bulk = next(2) == 0;
            let session = if bulk { format!("x{}", next(200)) } else { ["", "s1", "s2"][next(3) as usize].to_string() };
            let mut d = decision(i, t, &session, kind, ["allow", "deny", ""][next(3) as usize], &[]);
            d.user = if bulk { "carol".into() } else { ["alice", "bob"][next(2) as usize].into() };
            d.uid = match d.user.as_str() {
                "alice" => 1000,
                "bob" => 1001,
                _ => 1002,
            };
            d.role = if bulk { "bulk".into() } else { ["agent", "ci"][next(2) as usize].into() };
            d.argv = if next(4) == 0 { Vec::new() } else { vec!["Terraform".into(), ["apply", "plan"][next(2) as usize].into()] };
            d.executable = "/usr/bin/terraform".into();
            d.detail = match kind {
                "connect" | "sendmsg" => Some(Detail::Destination(Destination { address: format!("10.0.0.{}", next(3)), port: 443, protocol: "tcp".into() })),
                "unix_connect" => Some(Detail::UnixSocket(UnixSocket { path: "/run/Docker.sock".into(), ..Default::default() })),
                "tamper" | "file_open" => Some(Detail::Guard(GuardDetail { file: (next(2) == 0).then(|| "/home/a/.aws/credentials".to_string()), ..Default::default() })),
                _ => None,
            };
            all.push(d);
        }
        let carols: std::collections::HashSet<&str> = all.iter().filter(|d| d.user == "carol").map(|d| d.session_id.as_str()).collect();
        assert!(carols.len() > page::MOST_SESSIONS_MERGED, "{} sessions", carols.len());
        // In batches of 100, as drains hand them over.
        for chunk in all.chunks(100) {
            store.submit(chunk.iter().map(Row::of).collect());
        }
        wait_for(&store, all.len() as u64);
        let texts = ["", "terraform apply", "10.0.0.1", "docker.sock", ".aws", "TERRAFORM", "nothing"];
        for _ in 0..600 {
            let f = DecisionFilter {
                session_id: ["", "s1", "s2", "x7"][next(4) as usize].into(),
                user: ["", "alice", "1001", "carol", "1002", "dave"][next(6) as usize].into(),
                role: ["", "agent", "bulk"][next(3) as usize].into(),
                kind: next(4) as i32,
                decision: next(3) as i32,
                since_unix_nanos: [0, 600_000_000_000, 700_000_001_000][next(3) as usize],
                until_unix_nanos: [0, 1_200_000_000_000, 1_500_000_001_000][next(3) as usize],
                text: texts[next(texts.len() as u64) as usize].into(),
            };
            let (sql, _) = store.query(&f, 0, MAX_PAGE).unwrap();
            let mut sql: Vec<u64> = sql.iter().map(|d| d.id).collect();
            sql.sort_unstable();
            let stream: Vec<u64> = all.iter().filter(|d| matches(&f, d)).map(|d| d.id).collect();
            assert_eq!(sql, stream, "the store and the stream disagree on {f:?}");
        }
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
