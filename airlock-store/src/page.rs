//! Which decisions a page of a query holds: their ids, newest first.
//!
//! Rows have no index by user or role (see [`crate::schema`]). A filter on
//! either, without a session, is answered from the sessions that the
//! `session_owners` table lists for it: each session's newest ids come from
//! the session index, with no sort, and the page is the newest of them all.
//! A user or role with more sessions than [`MOST_SESSIONS_MERGED`] is read
//! newest-first in one pass instead, which stops at the page's end: such a
//! user or role has most of the rows, so the pass is short.

use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use airlock_api::v1::DecisionFilter;

use crate::filter::{owner_clause, where_clause};
use crate::schema::{bucket_of, highest_id_through, lowest_id_from};

/// Sessions whose newest ids are read one by one and merged.
pub const MOST_SESSIONS_MERGED: usize = 64;

/// The ids of at most `limit` decisions matching `filter`, older than the
/// cursor `before` (0: from the newest), newest first.
pub fn newest_ids(conn: &Connection, filter: &DecisionFilter, before: u64, limit: usize) -> Result<Vec<i64>> {
    let (sql, args) = conditions(conn, filter, before)?;
    let sessions = match sessions_of_owner(conn, filter)? {
        Some(sessions) if sessions.len() <= MOST_SESSIONS_MERGED => sessions,
        _ => return select_ids(conn, &sql, args, limit),
    };
    // Through the session index, whatever else the filter has: a time bound
    // is an id range within it, and a plan that reads a whole time range
    // once per session would read it for sessions that have no row in it.
    let per_session = format!("{sql} AND session_id = ?");
    let mut ids = Vec::new();
    for session in sessions {
        let mut args = args.clone();
        args.push(Value::Text(session));
        ids.extend(select_ids_from(conn, "decisions INDEXED BY decisions_session", &per_session, args, limit)?);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(limit);
    Ok(ids)
}

/// The filter's conditions on `decisions`, with the cursor, and with the id
/// bounds of its time range: read once per query from the time buckets, so
/// that a time range reads only its own stretch of ids.
pub fn conditions(conn: &Connection, filter: &DecisionFilter, before: u64) -> Result<(String, Vec<Value>)> {
    let (mut sql, mut args) = where_clause(filter);
    if before > 0 {
        sql.push_str(" AND decisions.id < ?");
        args.push(Value::Integer(before as i64));
    }
    if filter.since_unix_nanos > 0 {
        let lowest = lowest_id_from(conn, bucket_of(filter.since_unix_nanos))?;
        sql.push_str(" AND decisions.id >= ?");
        args.push(Value::Integer(lowest.unwrap_or(i64::MAX)));
    }
    if filter.until_unix_nanos > 0 {
        let highest = highest_id_through(conn, bucket_of(filter.until_unix_nanos - 1))?;
        sql.push_str(" AND decisions.id <= ?");
        args.push(Value::Integer(highest.unwrap_or(0)));
    }
    Ok((sql, args))
}

fn select_ids(conn: &Connection, sql: &str, args: Vec<Value>, limit: usize) -> Result<Vec<i64>> {
    select_ids_from(conn, "decisions", sql, args, limit)
}

fn select_ids_from(conn: &Connection, table: &str, sql: &str, args: Vec<Value>, limit: usize) -> Result<Vec<i64>> {
    let sql = format!("SELECT decisions.id FROM {table} WHERE {sql} ORDER BY decisions.id DESC LIMIT {limit}");
    let mut stmt = conn.prepare_cached(&sql).context("prepare the decision query")?;
    let ids = stmt.query_map(params_from_iter(args), |row| row.get(0))?.collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// The sessions that decisions of the filter's user or role belong to; None
/// when the filter names a session, or neither a user nor a role.
fn sessions_of_owner(conn: &Connection, filter: &DecisionFilter) -> Result<Option<Vec<String>>> {
    if !filter.session_id.trim().is_empty() || (filter.user.trim().is_empty() && filter.role.trim().is_empty()) {
        return Ok(None);
    }
    let (sql, args) = owner_clause(filter);
    let mut stmt = conn.prepare_cached(&format!("SELECT DISTINCT session_id FROM session_owners WHERE {sql}")).context("prepare the session query")?;
    let sessions = stmt.query_map(params_from_iter(args), |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
    Ok(Some(sessions))
}
