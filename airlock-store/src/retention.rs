//! Retention: decisions older than the age limit go, then the oldest while
//! the data is over the size limit; freed pages go back to the file system.

use anyhow::Result;
use rusqlite::Connection;

use crate::schema::{bucket_of, highest_id_through};
use crate::Retention;

/// At most this many rows are deleted per retention transaction, so a large
/// backlog never holds the write lock for long.
const RETENTION_CHUNK: i64 = 50_000;

pub fn used_bytes(conn: &Connection) -> Result<u64> {
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
    // Every decision older than the cutoff is at or below the highest id of the cutoff's minute.
    let highest = highest_id_through(conn, bucket_of(cutoff))?.unwrap_or(0);
    loop {
        let n = delete_where(conn, "id <= ?3 AND time_ns < ?1 LIMIT ?2", rusqlite::params![cutoff, RETENTION_CHUNK, highest])?;
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
/// transaction, with the time buckets and the sessions that no longer hold
/// any decision; the condition's parameters are bound to `params`.
fn delete_where(conn: &mut Connection, condition: &str, params: impl rusqlite::Params + Clone) -> Result<usize> {
    let tx = conn.transaction()?;
    tx.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)", [])?;
    tx.execute("DELETE FROM doomed", [])?;
    tx.execute(&format!("INSERT INTO doomed SELECT id FROM decisions WHERE {condition}"), params)?;
    let n = tx.execute("DELETE FROM decisions WHERE id IN (SELECT id FROM doomed)", [])?;
    tx.execute("DELETE FROM bodies WHERE id IN (SELECT id FROM doomed)", [])?;
    if n > 0 {
        tx.execute("DELETE FROM time_buckets WHERE last_id < (SELECT COALESCE(MIN(id), 9223372036854775807) FROM decisions)", [])?;
        tx.execute("DELETE FROM session_owners WHERE NOT EXISTS (SELECT 1 FROM decisions WHERE decisions.session_id = session_owners.session_id)", [])?;
    }
    tx.commit()?;
    Ok(n)
}
