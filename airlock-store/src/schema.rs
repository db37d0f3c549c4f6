//! The store's tables and how its connections are opened.
//!
//! The `decisions` table is kept narrow (the columns the filters use, and the
//! searchable text lowercased) so that a text search that must scan reads as
//! little as possible; the whole decision, as its protobuf encoding, is in
//! `bodies` under the same id and is read only for the rows returned.

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
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time_ns);
CREATE INDEX IF NOT EXISTS decisions_session ON decisions(session_id, id);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions(user, id);
CREATE INDEX IF NOT EXISTS decisions_role ON decisions(role, id);
-- Denials are a few percent of the rows: allowed rows are not written into their index.
CREATE INDEX IF NOT EXISTS decisions_denied ON decisions(id) WHERE decision = 'deny';
DROP INDEX IF EXISTS decisions_verdict;
CREATE INDEX IF NOT EXISTS decisions_kind ON decisions(kind, decision, id);
";

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
    conn.execute_batch(SCHEMA).context("create the decision store's tables")?;
    // Row counts per index value let the planner choose between an index and the newest-first scan.
    conn.execute_batch("PRAGMA optimize=0x10002").context("analyze the decision store")?;
    Ok(conn)
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

    #[test]
    fn an_older_store_loses_its_verdict_index_and_denials_use_their_own() {
        let dir = std::env::temp_dir().join(format!("airlock-store-schema-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("decisions.db");
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
}
