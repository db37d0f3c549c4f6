//! The fleet's decisions: shipped by hosts in batches (each decision with the
//! host's sequence number, so a batch sent twice is stored once), queried by
//! org with every filter the agent's own store has.

use airlock_api::decision::{subject_of, ALLOW, APPROVAL, DENY};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, DecisionFilter};
use prost::Message;

use crate::approvals::{changes, merge_stmt, unmergeable, ApprovalChange};
use crate::db::{Dialect, Stmt, Value};
use crate::error::StoreError;
use crate::filter::{push_filter, Query};
use crate::store::GatewayStore;

/// Rows per INSERT statement: few round trips, statements of a bounded size.
const ROWS_PER_INSERT: usize = 100;
/// The advisory lock ingest transactions take on PostgreSQL (any fixed number, the same on every replica).
const PG_INGEST_LOCK: i64 = 0x6169_726c_6f63_6b32;
const COLUMNS_PER_ROW: usize = 12;
const HOUR_NS: i64 = 3_600_000_000_000;
/// Hour buckets one count covers at most (a little over a year).
pub const MAX_HOUR_BUCKETS: i64 = 24 * 400;

/// An org's allowed and denied decisions in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourCount {
    /// The hour's first instant (a whole UTC hour).
    pub hour_start_ns: i64,
    pub allowed: i64,
    pub denied: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncomingDecision {
    /// The host's sequence number for it.
    pub seq: i64,
    pub decision: Decision,
    /// `decision`'s protobuf encoding, as received.
    pub body: Vec<u8>,
}

/// One host's entries in a group commit.
#[derive(Debug, Clone, Copy)]
pub struct HostBatch<'a> {
    pub org_id: i64,
    pub host_id: &'a str,
    pub rows: &'a [IncomingDecision],
    /// Decisions the host's spool dropped, counted by this batch's loss markers.
    pub lost: i64,
}

/// What a group commit stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ingested {
    /// Per batch, how many decisions were new.
    pub new: Vec<u64>,
    /// The approval requests the batches' approval decisions changed, in
    /// the order of the decisions (a redelivered record changes nothing).
    pub approvals: Vec<ApprovalChange>,
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

/// Allowed and denied decisions by hour: $1 org, $2 and $3 the verdicts,
/// $4 the first hour's start, $5 and $6 the range.
fn hour_counts_sql() -> String {
    format!(
        "SELECT decision, (time_ns - $4) / {HOUR_NS} AS bucket, COUNT(*) FROM decisions
         WHERE org_id = $1 AND decision IN ($2, $3) AND time_ns >= $5 AND time_ns < $6 GROUP BY decision, bucket"
    )
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
        let ingested = self.insert_decision_batches(&[HostBatch { org_id, host_id, rows: batch, lost: 0 }]).await?;
        Ok(ingested.new.first().copied().unwrap_or(0))
    }

    /// Stores several hosts' batches in one transaction (a group commit):
    /// per batch, how many decisions were new. A batch's `lost` is added to
    /// its host's loss count in the same transaction, and its approval
    /// decisions are merged into their requests' rows (see `approvals`).
    ///
    /// On PostgreSQL the transaction first takes an advisory lock, so ingest
    /// transactions (of every replica) commit one at a time: a decision's
    /// cursor then never becomes visible after a higher one, and a live tail
    /// that reads `cursor > last seen` misses nothing.
    pub async fn insert_decision_batches(&self, batches: &[HostBatch<'_>]) -> Result<Ingested, StoreError> {
        let mut stmts = Vec::new();
        if self.db.dialect() == Dialect::Postgres {
            stmts.push(Stmt::new("SELECT 1 FROM pg_advisory_xact_lock($1)", vec![Value::Int(PG_INGEST_LOCK)]));
        }
        // Per batch, the range of its INSERT statements in `stmts`.
        let mut inserts = Vec::with_capacity(batches.len());
        // The approval merges: their index in `stmts`, and their event.
        let mut merges = Vec::new();
        for b in batches {
            let first = stmts.len();
            for chunk in b.rows.chunks(ROWS_PER_INSERT) {
                let mut params = Vec::with_capacity(chunk.len() * COLUMNS_PER_ROW);
                for d in chunk {
                    let dec = &d.decision;
                    params.extend([
                        Value::Int(b.org_id),
                        Value::Text(b.host_id.to_string()),
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
            inserts.push(first..stmts.len());
            for d in b.rows.iter().filter(|d| d.decision.kind == APPROVAL) {
                let Some(Detail::Approval(event)) = &d.decision.detail else {
                    continue;
                };
                let Some(request) = &event.request else {
                    continue;
                };
                if let Some(why) = unmergeable(request) {
                    tracing::warn!(org_id = b.org_id, host = b.host_id, seq = d.seq, "an approval decision is stored but not merged into a request: {why}");
                    continue;
                }
                merges.push((stmts.len(), event.event.clone()));
                stmts.push(merge_stmt(self.db.dialect(), b.org_id, b.host_id, request, d.decision.time_unix_nanos));
            }
            if let Some(max_seq) = b.rows.iter().map(|d| d.seq).max() {
                stmts.push(Stmt::new(
                    "UPDATE hosts SET shipped_seq = CASE WHEN shipped_seq < $3 THEN $3 ELSE shipped_seq END WHERE org_id = $1 AND host_id = $2",
                    vec![b.org_id.into(), b.host_id.into(), max_seq.into()],
                ));
            }
            if b.lost > 0 {
                stmts.push(Stmt::new(
                    "UPDATE hosts SET lost_total = lost_total + $3 WHERE org_id = $1 AND host_id = $2",
                    vec![b.org_id.into(), b.host_id.into(), b.lost.into()],
                ));
            }
        }
        if inserts.iter().all(|r| r.is_empty()) && batches.iter().all(|b| b.lost == 0) {
            return Ok(Ingested { new: vec![0; batches.len()], approvals: Vec::new() });
        }
        let mut outcomes = self.db.transaction(stmts).await?;
        let new = inserts.into_iter().map(|r| outcomes[r].iter().map(|o| o.affected).sum()).collect();
        let mut approvals = Vec::new();
        for (index, event) in merges {
            approvals.extend(changes(&event, std::mem::take(&mut outcomes[index].rows))?);
        }
        Ok(Ingested { new, approvals })
    }

    /// An org's decisions that pass the query's filter, a page at a time.
    ///
    /// The page's cursors are chosen first, by a query an index can answer
    /// alone (a time range then sorts cursors, not whole rows), and only
    /// those rows are read.
    pub async fn query_decisions(&self, org_id: i64, q: &FleetQuery) -> Result<Vec<StoredDecision>, StoreError> {
        let mut sql = Query::new("SELECT cursor FROM decisions WHERE ");
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
        let order = if q.oldest_first { "ASC" } else { "DESC" };
        sql.push(&format!(" ORDER BY cursor {order} LIMIT {p}"));
        let page = format!("SELECT cursor, host_id, seq, body FROM decisions WHERE cursor IN ({}) ORDER BY cursor {order}", sql.sql);
        self.db
            .query(&page, sql.params)
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

    /// An org's allowed and denied decisions per hour, from `since_ns` to
    /// before `until_ns`: one entry per whole UTC hour that the range
    /// touches, zeros included, oldest first (the first and last hours
    /// count only their part inside the range). `Refused` past
    /// [`MAX_HOUR_BUCKETS`] hours.
    ///
    /// One grouped count over a range of `decisions_verdict_time`
    /// (org, verdict, time): the index alone answers it, however many
    /// decisions the org has outside the range; no row is read.
    pub async fn decision_counts_by_hour(&self, org_id: i64, since_ns: i64, until_ns: i64) -> Result<Vec<HourCount>, StoreError> {
        if until_ns <= since_ns {
            return Ok(Vec::new());
        }
        let first = since_ns.div_euclid(HOUR_NS) * HOUR_NS;
        let buckets = (until_ns - first).div_euclid(HOUR_NS) + i64::from((until_ns - first).rem_euclid(HOUR_NS) != 0);
        if buckets > MAX_HOUR_BUCKETS {
            return Err(StoreError::Refused(format!("{buckets} hours asked for; at most {MAX_HOUR_BUCKETS} at once")));
        }
        let mut counts: Vec<HourCount> = (0..buckets).map(|i| HourCount { hour_start_ns: first + i * HOUR_NS, ..Default::default() }).collect();
        let rows = self
            .db
            .query(
                &hour_counts_sql(),
                vec![org_id.into(), ALLOW.into(), DENY.into(), first.into(), since_ns.into(), until_ns.into()],
            )
            .await?;
        for mut r in rows {
            let (verdict, bucket, n) = (r.text(0)?, r.int(1)?, r.int(2)?);
            let Some(count) = usize::try_from(bucket).ok().and_then(|b| counts.get_mut(b)) else {
                return Err(StoreError::other(format!("an hourly count fell outside the range: bucket {bucket}")));
            };
            if verdict == ALLOW {
                count.allowed += n;
            } else {
                count.denied += n;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::migrations::{migrate, MIGRATIONS};

    /// The hourly counts read one index range and no table row, whatever
    /// the table holds: what keeps them fast with millions of decisions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hourly_counts_read_only_the_verdict_time_index() {
        let dir = std::env::temp_dir().join(format!("airlock-gw-hourplan-{}-{}", std::process::id(), crate::db::now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open_sqlite(&dir.join("gateway.db")).unwrap();
        migrate(&db, MIGRATIONS).await.unwrap();
        let plan = db
            .query(&format!("EXPLAIN QUERY PLAN {}", hour_counts_sql()), vec![1.into(), ALLOW.into(), DENY.into(), 0.into(), 0.into(), 1.into()])
            .await
            .unwrap();
        let text: Vec<String> = plan.into_iter().map(|mut r| r.text(3).unwrap()).collect();
        let text = text.join("; ");
        assert!(text.contains("COVERING INDEX decisions_verdict_time") && !text.contains("SCAN decisions"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
