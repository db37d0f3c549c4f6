//! The decision store: an embedded SQLite database, `<state-dir>/decisions.db`,
//! that the API queries (issue 4). One sink among three: the audit trail
//! (`audit.jsonl`, the export sink) gets every record first; this store is the
//! indexed copy for `QueryDecisions`, bounded by a retention limit on age and
//! size.
//!
//! Writing: one writer thread owns the write connection and takes whole
//! batches (everything one ring-buffer drain produced) as one transaction, so
//! the event thread never waits on the disk. If the writer falls far behind,
//! batches are dropped and counted (`dropped`), never queued without bound:
//! enforcement and the audit trail do not depend on the store.
//!
//! Reading: WAL mode, so queries run on their own connection while the writer
//! commits. The `decisions` table is kept narrow (the columns the filters use,
//! and the searchable text lowercased) so that a text search that must scan
//! reads as little as possible; the whole decision, as its protobuf encoding,
//! is in `bodies` under the same id and is read only for the rows returned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_common::api::v1::{Decision, DecisionFilter, DecisionKind, Verdict};
use anyhow::{Context, Result};
use prost::Message;
use rusqlite::{params_from_iter, Connection, OpenFlags};

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

/// Decisions waiting for the writer, at most (a few MB);
/// beyond that, batches are dropped and counted. Bounds the daemon's memory.
pub const MAX_PENDING: usize = 4_096;
/// The event thread hands a batch over at the latest when it holds this many.
pub const MAX_BATCH: usize = 1_024;
const QUEUE_BATCHES: usize = 1024;
/// How often the writer applies the retention limit.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// At most this many rows are deleted per retention transaction, so a large
/// backlog never holds the write lock for long.
const RETENTION_CHUNK: i64 = 50_000;
/// Page size of QueryDecisions when the caller names none, and the most it may ask.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    decision TEXT NOT NULL,
    subject TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time_ns);
CREATE INDEX IF NOT EXISTS decisions_session ON decisions(session_id, id);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions(user, id);
CREATE INDEX IF NOT EXISTS decisions_role ON decisions(role, id);
CREATE INDEX IF NOT EXISTS decisions_verdict ON decisions(decision, id);
CREATE INDEX IF NOT EXISTS decisions_kind ON decisions(kind, decision, id);
";

/// What a text filter is searched in: the command line, or the destination;
/// lowercased (ASCII), as the search is case-insensitive.
pub fn subject_of(d: &Decision) -> String {
    let mut s = match &d.destination {
        Some(dest) => format!("{}:{} {}", dest.address, dest.port, dest.protocol),
        None if !d.argv.is_empty() => d.argv.join(" "),
        None => d.executable.clone(),
    };
    s.make_ascii_lowercase();
    s
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags).with_context(|| format!("open the decision store {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A small page cache: the daemon's memory budget is ~30 MB in all.
    conn.pragma_update(None, "cache_size", -2048)?;
    Ok(conn)
}

/// The store: a writer thread fed through a bounded queue, and a read connection.
pub struct Store {
    path: PathBuf,
    retention: Retention,
    queue: SyncSender<Batch>,
    reader: Mutex<Connection>,
    dropped: Arc<AtomicU64>,
    /// Batches submitted and not yet written, and the decisions in them.
    pending: Arc<AtomicUsize>,
    pending_rows: Arc<AtomicUsize>,
    /// The second of the last "store behind" warning.
    last_warning: AtomicU64,
    next_id: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Batch {
    Decisions(Vec<Row>),
    Stop,
}

/// A decision as the writer stores it: the filter columns and the encoded
/// body. Made in the event thread; two-thirds the memory of a [`Decision`]
/// in far fewer allocations, so a queue of them stays small.
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
    body: Vec<u8>,
}

impl Row {
    pub fn of(d: &Decision) -> Row {
        // The id is the row's key; the body need not repeat it.
        let body = Decision { id: 0, ..d.clone() }.encode_to_vec();
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
}

impl Store {
    /// Opens (creating) `<state_dir>/decisions.db` and starts its writer thread.
    pub fn open(state_dir: &Path, retention: Retention) -> Result<Store> {
        let path = state_dir.join("decisions.db");
        let writer = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // Set before the first table: space freed by retention goes back to the file system bit by bit,
        // and 16 KiB pages make a scan (a text search) read fewer, larger pages.
        writer.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        writer.pragma_update(None, "page_size", 16384)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a crash can lose the last commits, never corrupt; the audit trail has them.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        // Statement journals and sorter spills in memory, never in temporary files.
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        writer.execute_batch(SCHEMA).context("create the decision store's tables")?;
        // Row counts per index value let the planner choose between an index and the newest-first scan.
        writer.execute_batch("PRAGMA optimize=0x10002").context("analyze the decision store")?;
        let last: i64 = writer.query_row("SELECT COALESCE(MAX(id), 0) FROM decisions", [], |r| r.get(0))?;
        let reader = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;

        let (queue, batches) = mpsc::sync_channel(QUEUE_BATCHES);
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicUsize::new(0));
        let pending_rows = Arc::new(AtomicUsize::new(0));
        let handle = std::thread::Builder::new()
            .name("airlock-store".into())
            .spawn({
                let dropped = dropped.clone();
                let pending = pending.clone();
                let pending_rows = pending_rows.clone();
                move || {
                    yield_to_the_audit_trail();
                    writer_loop(writer, batches, retention, &dropped, &pending, &pending_rows)
                }
            })
            .context("start the store writer thread")?;
        Ok(Store {
            path,
            retention,
            queue,
            reader: Mutex::new(reader),
            dropped,
            pending,
            pending_rows,
            last_warning: AtomicU64::new(0),
            next_id: AtomicU64::new(last as u64 + 1),
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

    /// Batches, and decisions, waiting for the writer.
    pub fn queued(&self) -> (usize, usize) {
        (self.pending.load(Ordering::Relaxed), self.pending_rows.load(Ordering::Relaxed))
    }

    /// Hands one batch to the writer; never blocks.
    pub fn submit(&self, batch: Vec<Row>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let full = self.pending_rows.load(Ordering::Relaxed) + n > MAX_PENDING;
        // Counted before the send: the writer may finish the batch before try_send returns.
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.pending_rows.fetch_add(n, Ordering::Relaxed);
        let sent = !full && self.queue.try_send(Batch::Decisions(batch)).is_ok();
        if !sent {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.pending_rows.fetch_sub(n, Ordering::Relaxed);
            let total = self.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            // At most one warning a second: a store that cannot keep up must not flood the log too.
            let now = now_ns() / 1_000_000_000;
            if self.last_warning.swap(now as u64, Ordering::Relaxed) != now as u64 {
                tracing::warn!(dropped = n, total, "decision store behind: decisions dropped from the store (the audit trail has them)");
            }
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
        let (mut sql, mut args) = where_clause(filter);
        if before > 0 {
            sql.push_str(" AND d.id < ?");
            args.push(rusqlite::types::Value::Integer(before as i64));
        }
        let sql = format!(
            "SELECT d.id, b.body FROM decisions AS d JOIN bodies AS b ON b.id = d.id WHERE {sql} ORDER BY d.id DESC LIMIT {}",
            page + 1
        );
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&sql).context("prepare the decision query")?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        let mut out = Vec::with_capacity(page);
        let mut more = false;
        while let Some(row) = rows.next()? {
            if out.len() == page {
                more = true;
                break;
            }
            let id: i64 = row.get(0)?;
            let body: Vec<u8> = row.get(1)?;
            let mut d = Decision::decode(body.as_slice()).with_context(|| format!("decision {id} in the store is not readable"))?;
            d.id = id as u64;
            out.push(d);
        }
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

/// SQL and arguments for a filter; every filter the API has, as bound parameters.
pub fn where_clause(f: &DecisionFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = String::from("1");
    let mut args = Vec::new();
    let eq = |column: &str, value: &str, sql: &mut String, args: &mut Vec<Value>| {
        if !value.is_empty() {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(value.to_string()));
        }
    };
    eq("session_id", f.session_id.trim(), &mut sql, &mut args);
    eq("role", f.role.trim(), &mut sql, &mut args);
    let user = f.user.trim();
    if !user.is_empty() {
        match user.parse::<u32>() {
            Ok(uid) => {
                sql.push_str(" AND (user = ? OR uid = ?)");
                args.push(Value::Text(user.to_string()));
                args.push(Value::Integer(uid.into()));
            }
            Err(_) => eq("user", user, &mut sql, &mut args),
        }
    }
    match DecisionKind::try_from(f.kind).unwrap_or(DecisionKind::Unspecified) {
        DecisionKind::Unspecified => {}
        DecisionKind::Exec => sql.push_str(" AND kind = 'exec'"),
        DecisionKind::Connect => sql.push_str(" AND kind IN ('connect', 'sendmsg')"),
        DecisionKind::Other => sql.push_str(" AND kind NOT IN ('exec', 'connect', 'sendmsg')"),
    }
    match Verdict::try_from(f.decision).unwrap_or(Verdict::Unspecified) {
        Verdict::Unspecified => {}
        Verdict::Allow => sql.push_str(" AND decision = 'allow'"),
        Verdict::Deny => sql.push_str(" AND decision = 'deny'"),
    }
    if f.since_unix_nanos > 0 {
        sql.push_str(" AND time_ns >= ?");
        args.push(Value::Integer(f.since_unix_nanos));
    }
    if f.until_unix_nanos > 0 {
        sql.push_str(" AND time_ns < ?");
        args.push(Value::Integer(f.until_unix_nanos));
    }
    let text = f.text.trim();
    if !text.is_empty() {
        // The subject is stored lowercased: a plain substring test, no pattern characters.
        sql.push_str(" AND instr(subject, ?) > 0");
        args.push(Value::Text(text.to_ascii_lowercase()));
    }
    (sql, args)
}

/// Does a decision pass a filter? The live stream's twin of [`where_clause`].
pub fn matches(f: &DecisionFilter, d: &Decision) -> bool {
    let nonempty_ne = |want: &str, have: &str| !want.trim().is_empty() && want.trim() != have;
    if nonempty_ne(&f.session_id, &d.session_id) || nonempty_ne(&f.role, &d.role) {
        return false;
    }
    let user = f.user.trim();
    if !user.is_empty() && user != d.user && user.parse::<u32>().ok() != Some(d.uid) {
        return false;
    }
    let kind_ok = match DecisionKind::try_from(f.kind).unwrap_or(DecisionKind::Unspecified) {
        DecisionKind::Unspecified => true,
        DecisionKind::Exec => d.kind == "exec",
        DecisionKind::Connect => d.kind == "connect" || d.kind == "sendmsg",
        DecisionKind::Other => !matches!(d.kind.as_str(), "exec" | "connect" | "sendmsg"),
    };
    let verdict_ok = match Verdict::try_from(f.decision).unwrap_or(Verdict::Unspecified) {
        Verdict::Unspecified => true,
        Verdict::Allow => d.decision == "allow",
        Verdict::Deny => d.decision == "deny",
    };
    if !kind_ok || !verdict_ok {
        return false;
    }
    if f.since_unix_nanos > 0 && d.time_unix_nanos < f.since_unix_nanos {
        return false;
    }
    if f.until_unix_nanos > 0 && d.time_unix_nanos >= f.until_unix_nanos {
        return false;
    }
    let text = f.text.trim();
    text.is_empty() || subject_of(d).contains(&text.to_ascii_lowercase())
}

/// The writer runs at a lower priority (nice 10) than the rest of the daemon:
/// when a flood of decisions leaves too little CPU for both, the events thread
/// that drains the kernel's ring buffer into the audit trail goes first, and
/// the store (best effort, its drops counted) takes what is left.
fn yield_to_the_audit_trail() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id.
    let tid = unsafe { libc::gettid() };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) } != 0 {
        tracing::warn!("could not lower the store writer's priority: {}", std::io::Error::last_os_error());
    }
}

fn writer_loop(
    mut conn: Connection,
    batches: Receiver<Batch>,
    retention: Retention,
    dropped: &AtomicU64,
    pending: &AtomicUsize,
    pending_rows: &AtomicUsize,
) {
    let mut last_retention = Instant::now() - RETENTION_EVERY;
    loop {
        if last_retention.elapsed() >= RETENTION_EVERY {
            if let Err(e) = apply_retention(&mut conn, retention, now_ns()) {
                tracing::error!("decision store retention: {e:#}");
            }
            last_retention = Instant::now();
        }
        match batches.recv_timeout(Duration::from_secs(5)) {
            Ok(Batch::Decisions(batch)) => {
                let n = batch.len() as u64;
                if let Err(e) = insert(&mut conn, &batch) {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(decisions = n, "decision store write failed (the audit trail has them): {e:#}");
                }
                pending.fetch_sub(1, Ordering::Relaxed);
                pending_rows.fetch_sub(batch.len(), Ordering::Relaxed);
            }
            Ok(Batch::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Everything submitted before the stop is written.
    while let Ok(Batch::Decisions(batch)) = batches.try_recv() {
        if insert(&mut conn, &batch).is_err() {
            dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        pending.fetch_sub(1, Ordering::Relaxed);
        pending_rows.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}

/// One transaction per batch. `OR IGNORE`, not `OR REPLACE`: ids only grow,
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
        for r in batch {
            stmt.execute(rusqlite::params![r.id, r.time_ns, r.session_id, r.user, r.uid, r.role, r.kind, r.decision, r.subject])?;
            bodies.execute(rusqlite::params![r.id, r.body])?;
        }
    }
    tx.commit().context("commit a batch of decisions")
}

fn used_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Deletes what is older than the age limit, then the oldest while over the
/// size limit; gives freed pages back to the file system.
pub fn apply_retention(conn: &mut Connection, retention: Retention, now_ns: i64) -> Result<u64> {
    let mut deleted = 0u64;
    let cutoff = now_ns.saturating_sub(retention.max_age.as_nanos().min(i64::MAX as u128) as i64);
    loop {
        let n = delete_where(conn, "time_ns < ?1 LIMIT ?2", rusqlite::params![cutoff, RETENTION_CHUNK])?;
        deleted += n as u64;
        if (n as i64) < RETENTION_CHUNK {
            break;
        }
    }
    // Over the size limit: delete the oldest share that brings it to 90% of it.
    for _ in 0..64 {
        let used = used_bytes(conn)?;
        if used <= retention.max_bytes {
            break;
        }
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))?;
        if count == 0 {
            break;
        }
        let target = retention.max_bytes as f64 * 0.9;
        let share = 1.0 - target / used as f64;
        let n = ((count as f64 * share).ceil() as i64).clamp(1, RETENTION_CHUNK);
        let removed = delete_where(conn, "1 ORDER BY id LIMIT ?2", rusqlite::params![0, n])?;
        deleted += removed as u64;
        // Freed pages go to the freelist; give them back so "used" falls.
        conn.execute_batch("PRAGMA incremental_vacuum")?;
    }
    if deleted > 0 {
        conn.execute_batch("PRAGMA incremental_vacuum")?;
        tracing::info!(deleted, "decision store retention applied");
    }
    // Keeps the planner's row counts current as the data grows and shrinks (cheap when nothing changed).
    conn.execute_batch("PRAGMA optimize")?;
    Ok(deleted)
}

/// Deletes the decisions (and their bodies) that `condition` selects, in one
/// transaction; `?1` and `?2` of the condition are bound to `params`.
fn delete_where(conn: &mut Connection, condition: &str, params: impl rusqlite::Params + Clone) -> Result<usize> {
    let tx = conn.transaction()?;
    tx.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)", [])?;
    tx.execute("DELETE FROM doomed", [])?;
    tx.execute(&format!("INSERT INTO doomed SELECT id FROM decisions WHERE {condition}"), params)?;
    let n = tx.execute("DELETE FROM decisions WHERE id IN (SELECT id FROM doomed)", [])?;
    tx.execute("DELETE FROM bodies WHERE id IN (SELECT id FROM doomed)", [])?;
    tx.commit()?;
    Ok(n)
}

pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_common::api::v1::Destination;

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
            destination: (kind == "connect").then(|| Destination { address: "127.0.0.1".into(), port: 443, protocol: "tcp".into() }),
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
        conn.execute_batch(SCHEMA).unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
