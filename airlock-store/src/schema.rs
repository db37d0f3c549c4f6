//! The store's tables and how its connections are opened.
//!
//! The `decisions` table is kept narrow (the columns the filters use, and the
//! searchable text lowercased) so that a text search that must scan reads as
//! little as possible; the whole decision, as its protobuf encoding, is in
//! `bodies` under the same id and is read only for the rows returned.
//!
//! Every index costs each insert a B-tree descent, and the insert is most of
//! the daemon's CPU per decision. So rows are indexed by session, by kind and
//! verdict, and (denials only) by id; time and user or role filters go
//! through small tables that an insert touches once per batch
//! ([`TIME_BUCKETS`], [`SESSION_OWNERS`]).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

pub const SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS decisions_session ON decisions(session_id, id);
-- Denials are a few percent of the rows: allowed rows are not written into their index.
CREATE INDEX IF NOT EXISTS decisions_denied ON decisions(id) WHERE decision = 'deny';
DROP INDEX IF EXISTS decisions_verdict;
CREATE INDEX IF NOT EXISTS decisions_kind ON decisions(kind, decision, id);
";

/// The ids each minute of decision time spans. It replaces an index on
/// `time_ns`, which cost every insert a B-tree descent: a time bound becomes
/// an id bound, read from a row per minute that an insert updates once per
/// batch. Kernel times are not strictly in id order, so a minute keeps both
/// its lowest and its highest id.
pub const TIME_BUCKETS: &str = "
CREATE TABLE time_buckets (
    minute INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL
);
INSERT INTO time_buckets SELECT time_ns / 60000000000, MIN(id), MAX(id) FROM decisions GROUP BY 1;
";

/// The user, uid and role each session's decisions carry. It replaces an
/// index on `user` and one on `role`, which cost every insert two B-tree
/// descents: a user or role filter becomes a list of sessions, read through
/// the session index (see [`crate::page`]). An insert adds a row only for a
/// session (or a user of it) not seen before, once per batch.
pub const SESSION_OWNERS: &str = "
CREATE TABLE session_owners (
    session_id TEXT NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (session_id, user, uid, role)
) WITHOUT ROWID;
INSERT INTO session_owners SELECT DISTINCT session_id, user, uid, role FROM decisions;
";

/// Tables that replace indexes: each made (and filled from the decisions
/// already stored) when a store does not have it yet, and made again when one
/// of the indexes it replaces is back, which means that an agent from before
/// the table wrote to the store meanwhile (a downgrade and an upgrade) and
/// left the table behind.
const INDEX_TABLES: [(&str, &str, &[&str]); 2] = [
    ("time_buckets", TIME_BUCKETS, &["decisions_time"]),
    ("session_owners", SESSION_OWNERS, &["decisions_user", "decisions_role"]),
];

/// Nanoseconds per bucket of [`TIME_BUCKETS`].
pub const BUCKET_NS: i64 = 60_000_000_000;

/// The bucket of a time, as the SQL above computes it (division truncates in
/// both; all that matters is that later times never get earlier buckets).
pub fn bucket_of(time_ns: i64) -> i64 {
    time_ns / BUCKET_NS
}

/// The lowest id of the decisions at or after `minute`: a lower bound for
/// every decision whose time is in that minute or later.
pub fn lowest_id_from(conn: &Connection, minute: i64) -> Result<Option<i64>> {
    conn.query_row("SELECT MIN(first_id) FROM time_buckets WHERE minute >= ?1", [minute], |r| r.get(0)).context("read the time buckets")
}

/// The highest id of the decisions up to `minute`: an upper bound for every
/// decision whose time is in that minute or earlier.
pub fn highest_id_through(conn: &Connection, minute: i64) -> Result<Option<i64>> {
    conn.query_row("SELECT MAX(last_id) FROM time_buckets WHERE minute <= ?1", [minute], |r| r.get(0)).context("read the time buckets")
}

pub fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags).with_context(|| format!("open the decision store {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A small page cache: the daemon's memory budget is ~30 MB in all.
    conn.pragma_update(None, "cache_size", -2048)?;
    Ok(conn)
}

/// The write connection, with the tables made if they are missing.
pub fn open_for_writing(path: &Path) -> Result<Connection> {
    let conn = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // Set before the first table: space freed by retention goes back to the file system bit by bit,
    // and 16 KiB pages make a scan (a text search) read fewer, larger pages.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "page_size", 16384)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a crash can lose the last commits, never corrupt; the audit trail has them.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Statement journals and sorter spills in memory, never in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    create_tables(&conn)?;
    // Row counts per index value let the planner choose between an index and the newest-first scan.
    conn.execute_batch("PRAGMA optimize=0x10002").context("analyze the decision store")?;
    Ok(conn)
}

/// The tables and indexes, made where missing; the index tables of a store
/// that predates them are filled from its decisions.
pub fn create_tables(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA).context("create the decision store's tables")?;
    let exists = |kind: &str, name: &str| -> Result<bool> {
        Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = ?1 AND name = ?2)", [kind, name], |r| r.get(0))?)
    };
    for (table, sql, replaced) in INDEX_TABLES {
        let mut stale = false;
        for index in replaced {
            stale |= exists("index", index)?;
        }
        if stale || !exists("table", table)? {
            // One scan fills it, in one transaction with the removal of the indexes it replaces.
            let tx = conn.unchecked_transaction()?;
            let drops: String = replaced.iter().map(|index| format!("DROP INDEX IF EXISTS {index}; ")).collect();
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}; {sql} {drops}")).with_context(|| format!("make the decision store's {table} table"))?;
            tx.commit().with_context(|| format!("make the decision store's {table} table"))?;
        }
    }
    Ok(())
}

pub fn open_for_reading(path: &Path) -> Result<Connection> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};

    fn index_names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// An empty directory of its own, and the store's path in it.
    fn scratch_store(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("airlock-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("decisions.db");
        (dir, path)
    }

    #[test]
    fn an_older_store_loses_its_verdict_index_and_denials_use_their_own() {
        let (dir, path) = scratch_store("schema");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(&SCHEMA.replace("DROP INDEX IF EXISTS decisions_verdict;", "")).unwrap();
            old.execute_batch("CREATE INDEX decisions_verdict ON decisions(decision, id)").unwrap();
            assert!(index_names(&old).contains(&"decisions_verdict".to_string()));
        }
        let conn = open_for_writing(&path).unwrap();
        let names = index_names(&conn);
        assert!(!names.contains(&"decisions_verdict".to_string()), "{names:?}");
        assert!(names.contains(&"decisions_denied".to_string()), "{names:?}");

        // Allowed rows are most rows: they are kept out of the index the denial queries read.
        let (sql, args) = crate::filter::where_clause(&DecisionFilter { decision: Verdict::Deny as i32, ..Default::default() });
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN SELECT id FROM decisions WHERE {sql} ORDER BY id DESC LIMIT 100")).unwrap();
        let plan: Vec<String> = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(plan.iter().any(|step| step.contains("decisions_denied")), "{plan:?}");

        // Denied connections (a list of kinds) are read from the same index, newest first, with no sort.
        let filter = DecisionFilter { decision: Verdict::Deny as i32, kind: DecisionKind::Connect as i32, ..Default::default() };
        let (sql, args) = crate::filter::where_clause(&filter);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN SELECT id FROM decisions WHERE {sql} ORDER BY id DESC LIMIT 100")).unwrap();
        let plan: Vec<String> = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(plan.iter().any(|step| step.contains("decisions_denied")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_older_store_gets_time_buckets_for_its_index_on_time_and_again_after_a_downgrade() {
        let (dir, path) = scratch_store("buckets");
        let minute = BUCKET_NS;
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            old.execute_batch("CREATE INDEX decisions_time ON decisions(time_ns)").unwrap();
            // Ids 1-3 in minute 10, 4 back in minute 9 (out of order), 5-6 in minute 11.
            for (id, t) in [(1, 10 * minute), (2, 10 * minute + 5), (3, 11 * minute - 1), (4, 10 * minute - 1), (5, 11 * minute), (6, 11 * minute + 7)] {
                old.execute(
                    "INSERT INTO decisions (id, time_ns, session_id, user, uid, role, kind, decision, subject) VALUES (?1, ?2, 's', 'u', 0, 'r', 'exec', 'allow', '')",
                    rusqlite::params![id, t],
                )
                .unwrap();
            }
        }
        let conn = open_for_writing(&path).unwrap();
        assert!(!index_names(&conn).contains(&"decisions_time".to_string()));
        let mut stmt = conn.prepare("SELECT minute, first_id, last_id FROM time_buckets ORDER BY minute").unwrap();
        let buckets: Vec<(i64, i64, i64)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(buckets, vec![(9, 4, 4), (10, 1, 3), (11, 5, 6)]);
        drop(stmt);
        drop(conn);

        // An older agent writes meanwhile (its schema brings the index back), then this one starts again.
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch("CREATE INDEX decisions_time ON decisions(time_ns)").unwrap();
            old.execute(
                "INSERT INTO decisions (id, time_ns, session_id, user, uid, role, kind, decision, subject) VALUES (7, ?1, 's', 'u', 0, 'r', 'exec', 'allow', '')",
                [12 * minute],
            )
            .unwrap();
        }
        let conn = open_for_writing(&path).unwrap();
        assert!(!index_names(&conn).contains(&"decisions_time".to_string()));
        let mut stmt = conn.prepare("SELECT minute, first_id, last_id FROM time_buckets ORDER BY minute").unwrap();
        let buckets: Vec<(i64, i64, i64)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(buckets, vec![(9, 4, 4), (10, 1, 3), (11, 5, 6), (12, 7, 7)]);

        let ids = |f: &DecisionFilter| -> Vec<i64> {
            let mut ids = crate::page::newest_ids(&conn, f, 0, 100).unwrap();
            ids.sort_unstable();
            ids
        };
        let since = |t: i64| DecisionFilter { since_unix_nanos: t, ..Default::default() };
        let until = |t: i64| DecisionFilter { until_unix_nanos: t, ..Default::default() };
        assert_eq!(ids(&since(10 * minute)), vec![1, 2, 3, 5, 6, 7]);
        assert_eq!(ids(&since(10 * minute + 1)), vec![2, 3, 5, 6, 7]);
        assert_eq!(ids(&since(11 * minute)), vec![5, 6, 7]);
        assert_eq!(ids(&since(12 * minute)), vec![7]);
        assert_eq!(ids(&since(13 * minute)), Vec::<i64>::new());
        assert_eq!(ids(&until(10 * minute)), vec![4]);
        assert_eq!(ids(&until(11 * minute)), vec![1, 2, 3, 4]);
        assert_eq!(ids(&until(9 * minute)), Vec::<i64>::new());

        // A time range reads a stretch of ids, newest first, with no sort and no scan of the rest.
        let (sql, args) = crate::page::conditions(&conn, &DecisionFilter { since_unix_nanos: 11 * minute, ..Default::default() }, 0).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN SELECT id FROM decisions WHERE {sql} ORDER BY id DESC LIMIT 100")).unwrap();
        let plan: Vec<String> = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(plan.iter().any(|step| step.contains("SEARCH decisions USING INTEGER PRIMARY KEY (rowid>?)")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
