//! The fleet's decisions: shipped by hosts in batches (each decision with the
//! host's sequence number, so a batch sent twice is stored once), queried by
//! org with every filter the agent's own store has.

use airlock_api::decision::subject_of;
use airlock_api::v1::{Decision, DecisionFilter};
use prost::Message;

use crate::db::{Stmt, Value};
use crate::error::StoreError;
use crate::filter::{push_filter, Query};
use crate::store::GatewayStore;

/// Rows per INSERT statement: few round trips, statements of a bounded size.
const ROWS_PER_INSERT: usize = 100;
const COLUMNS_PER_ROW: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub struct IncomingDecision {
    /// The host's sequence number for it.
    pub seq: i64,
    pub decision: Decision,
    /// `decision`'s protobuf encoding, as received.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetQuery {
    pub filter: DecisionFilter,
    /// "": every host.
    pub host: String,
    /// Only cursors below this (0: from the newest).
    pub before_cursor: i64,
    /// Only cursors above this (0: no bound).
    pub after_cursor: i64,
    /// 0: 100.
    pub limit: u32,
    pub oldest_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDecision {
    /// The store's own order over the whole fleet; the pagination cursor.
    pub cursor: i64,
    pub host_id: String,
    pub seq: i64,
    pub body: Vec<u8>,
}

impl StoredDecision {
    pub fn decision(&self) -> Result<Decision, StoreError> {
        Decision::decode(self.body.as_slice()).map_err(|e| StoreError::other(format!("decision {} does not decode: {e}", self.cursor)))
    }
}

/// The multi-row INSERT for `rows` decisions.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO decisions(org_id, host_id, seq, time_ns, session_id, user_name, uid, role, kind, decision, subject, body) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..COLUMNS_PER_ROW {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * COLUMNS_PER_ROW + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (org_id, host_id, seq) DO NOTHING");
    sql
}

impl GatewayStore {
    /// Stores a host's batch in one transaction; decisions already stored
    /// (same org, host and sequence number) are skipped. Returns how many
    /// were new. The host's `shipped_seq` becomes the batch's highest seq if
    /// that is higher.
    pub async fn insert_decisions(&self, org_id: i64, host_id: &str, batch: &[IncomingDecision]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut stmts = Vec::with_capacity(batch.len().div_ceil(ROWS_PER_INSERT) + 1);
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            let mut params = Vec::with_capacity(chunk.len() * COLUMNS_PER_ROW);
            for d in chunk {
                let dec = &d.decision;
                params.extend([
                    Value::Int(org_id),
                    Value::Text(host_id.to_string()),
                    Value::Int(d.seq),
                    Value::Int(dec.time_unix_nanos),
                    Value::Text(dec.session_id.clone()),
                    Value::Text(dec.user.clone()),
                    Value::Int(dec.uid.into()),
                    Value::Text(dec.role.clone()),
                    Value::Text(dec.kind.clone()),
                    Value::Text(dec.decision.clone()),
                    // subject_of lowercases already; the filter relies on it.
                    Value::Text(subject_of(dec)),
                    Value::Bytes(d.body.clone()),
                ]);
            }
            stmts.push(Stmt::new(insert_sql(chunk.len()), params));
        }
        let max_seq = batch.iter().map(|d| d.seq).max().unwrap_or(0);
        stmts.push(Stmt::new(
            "UPDATE hosts SET shipped_seq = CASE WHEN shipped_seq < $3 THEN $3 ELSE shipped_seq END WHERE org_id = $1 AND host_id = $2",
            vec![org_id.into(), host_id.into(), max_seq.into()],
        ));
        let outcomes = self.db.transaction(stmts).await?;
        Ok(outcomes[..outcomes.len() - 1].iter().map(|o| o.affected).sum())
    }

    /// An org's decisions that pass the query's filter, a page at a time.
    pub async fn query_decisions(&self, org_id: i64, q: &FleetQuery) -> Result<Vec<StoredDecision>, StoreError> {
        let mut sql = Query::new("SELECT cursor, host_id, seq, body FROM decisions WHERE ");
        let org = sql.param(org_id);
        sql.push(&format!("org_id = {org}"));
        if !q.host.is_empty() {
            sql.and_eq("host_id", q.host.as_str());
        }
        if q.before_cursor > 0 {
            let p = sql.param(q.before_cursor);
            sql.push(&format!(" AND cursor < {p}"));
        }
        if q.after_cursor > 0 {
            let p = sql.param(q.after_cursor);
            sql.push(&format!(" AND cursor > {p}"));
        }
        push_filter(&mut sql, &q.filter, self.db.dialect());
        let limit = if q.limit == 0 { 100 } else { i64::from(q.limit) };
        let p = sql.param(limit);
        sql.push(&format!(" ORDER BY cursor {} LIMIT {p}", if q.oldest_first { "ASC" } else { "DESC" }));
        self.db
            .query(&sql.sql, sql.params)
            .await?
            .into_iter()
            .map(|mut r| Ok(StoredDecision { cursor: r.int(0)?, host_id: r.text(1)?, seq: r.int(2)?, body: r.bytes(3)? }))
            .collect()
    }

    /// An org's decisions, or one host's.
    pub async fn count_decisions(&self, org_id: i64, host_id: Option<&str>) -> Result<i64, StoreError> {
        let row = match host_id {
            Some(host) => {
                self.db.query_opt("SELECT COUNT(*) FROM decisions WHERE org_id = $1 AND host_id = $2", vec![org_id.into(), host.into()]).await?
            }
            None => self.db.query_opt("SELECT COUNT(*) FROM decisions WHERE org_id = $1", vec![org_id.into()]).await?,
        };
        row.ok_or_else(|| StoreError::other("COUNT returned no row"))?.int(0)
    }

    /// The newest cursor over every org (0: none stored).
    pub async fn max_cursor(&self) -> Result<i64, StoreError> {
        let row = self.db.query_opt("SELECT COALESCE(MAX(cursor), 0) FROM decisions", vec![]).await?;
        row.ok_or_else(|| StoreError::other("MAX returned no row"))?.int(0)
    }
}
