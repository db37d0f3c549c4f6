//! Security monitoring's findings and the blocks they placed.
//!
//! A finding is written once and never changes but for the block it placed.
//! A block is active, then perhaps acknowledged (still in force), and ends
//! lifted (by a person) or expired: expiry is read off `expires_ns` when a
//! block is read, so the stored status never has to be swept. Lifting is one
//! conditional update, so of two callers lifting one block exactly one wins.

use airlock_api::v1::{SecurityBlock, SecurityFinding};
use prost::Message;

use crate::db::{Row, Stmt, Value};
use crate::error::StoreError;
use crate::filter::Query;
use crate::store::GatewayStore;

pub const BLOCK_ACTIVE: &str = "active";
pub const BLOCK_ACKNOWLEDGED: &str = "acknowledged";
pub const BLOCK_LIFTED: &str = "lifted";
pub const BLOCK_EXPIRED: &str = "expired";
/// Every status a block can be in.
pub const BLOCK_STATUSES: [&str; 4] = [BLOCK_ACTIVE, BLOCK_ACKNOWLEDGED, BLOCK_LIFTED, BLOCK_EXPIRED];
/// Rows a list returns at most.
pub const MAX_SECURITY_PAGE: u32 = 1000;
const DEFAULT_SECURITY_PAGE: u32 = 100;

const BLOCK_COLUMNS: &str = "org_id, block_id, status, expires_ns, acknowledged_by, acknowledged_ns, lifted_by, lifted_ns, body";
const FINDING_COLUMNS: &str = "org_id, finding_id, block_id, body";

/// A finding to store, and the block it places, if any.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewFinding {
    /// Everything but `id`, `block_id` and `created_unix_nanos`, which the store fills in.
    pub finding: SecurityFinding,
    /// "hard" or "soft": place a block on the finding's subject lasting `block_secs`.
    pub block_kind: Option<String>,
    pub block_secs: u64,
}

/// "fnd-" or "blk-" and 16 random lowercase hex digits.
fn random_id(prefix: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::other(format!("the system's random source: {e}")))?;
    Ok(format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// "blk-" and 16 lowercase hex digits.
pub fn is_block_id(id: &str) -> bool {
    is_id(id, "blk-")
}

/// "fnd-" and 16 lowercase hex digits.
pub fn is_finding_id(id: &str) -> bool {
    is_id(id, "fnd-")
}

/// The status a block shows at `now_ns`: a stored active or acknowledged
/// block past its expiry is expired.
pub fn effective_status(stored: &str, expires_ns: i64, now_ns: i64) -> &str {
    if (stored == BLOCK_ACTIVE || stored == BLOCK_ACKNOWLEDGED) && expires_ns <= now_ns {
        BLOCK_EXPIRED
    } else {
        stored
    }
}

/// Whether a block (as read at some instant) is in force.
pub fn in_force(block: &SecurityBlock) -> bool {
    block.status == BLOCK_ACTIVE || block.status == BLOCK_ACKNOWLEDGED
}

fn block(mut r: Row, now_ns: i64) -> Result<(i64, SecurityBlock), StoreError> {
    let org_id = r.int(0)?;
    let id = r.text(1)?;
    let stored = r.text(2)?;
    let expires_ns = r.int(3)?;
    let body = r.bytes(8)?;
    let mut b = SecurityBlock::decode(body.as_slice()).map_err(|e| StoreError::other(format!("block {id}: the stored record does not decode: {e}")))?;
    b.status = effective_status(&stored, expires_ns, now_ns).to_string();
    b.id = id;
    b.expires_unix_nanos = expires_ns;
    b.acknowledged_by = r.text(4)?;
    b.acknowledged_unix_nanos = r.int(5)?;
    b.lifted_by = r.text(6)?;
    b.lifted_unix_nanos = r.int(7)?;
    Ok((org_id, b))
}

fn finding(mut r: Row) -> Result<SecurityFinding, StoreError> {
    let id = r.text(1)?;
    let body = r.bytes(3)?;
    let mut f = SecurityFinding::decode(body.as_slice()).map_err(|e| StoreError::other(format!("finding {id}: the stored record does not decode: {e}")))?;
    f.id = id;
    f.block_id = r.text(2)?;
    Ok(f)
}

fn page(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_SECURITY_PAGE,
        n => n.min(MAX_SECURITY_PAGE),
    })
}

/// A finding and the block it places, with their ids and times: what the
/// store writes, known before it is written.
#[derive(Debug, Clone)]
pub struct PreparedFinding {
    pub finding: SecurityFinding,
    pub block: Option<SecurityBlock>,
}

impl NewFinding {
    /// Gives the finding (and its block, when it places one) ids and times.
    pub fn prepare(&self, now_ns: i64) -> Result<PreparedFinding, StoreError> {
        let mut f = self.finding.clone();
        f.id = random_id("fnd-")?;
        f.created_unix_nanos = now_ns;
        let block = match &self.block_kind {
            None => None,
            Some(kind) => {
                let secs = i64::try_from(self.block_secs).unwrap_or(i64::MAX);
                let b = SecurityBlock {
                    id: random_id("blk-")?,
                    kind: kind.clone(),
                    subject_kind: f.subject_kind.clone(),
                    subject: f.subject.clone(),
                    rule: f.rule.clone(),
                    severity: f.severity.clone(),
                    values: f.values.clone(),
                    finding_id: f.id.clone(),
                    summary: f.summary.clone(),
                    created_unix_nanos: now_ns,
                    expires_unix_nanos: now_ns.saturating_add(secs.saturating_mul(1_000_000_000)),
                    status: BLOCK_ACTIVE.into(),
                    origin: "gateway".into(),
                    ..Default::default()
                };
                f.block_id = b.id.clone();
                Some(b)
            }
        };
        Ok(PreparedFinding { finding: f, block })
    }
}

impl PreparedFinding {
    fn statements(&self, org_id: i64) -> Vec<Stmt> {
        let f = &self.finding;
        let mut stmts = vec![Stmt::new(
            "INSERT INTO security_findings(org_id, finding_id, rule, severity, subject_kind, subject, created_ns, block_id, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                org_id.into(),
                f.id.as_str().into(),
                f.rule.as_str().into(),
                f.severity.as_str().into(),
                f.subject_kind.as_str().into(),
                f.subject.as_str().into(),
                f.created_unix_nanos.into(),
                f.block_id.as_str().into(),
                Value::Bytes(f.encode_to_vec()),
            ],
        )];
        if let Some(b) = &self.block {
            stmts.push(Stmt::new(
                "INSERT INTO security_blocks(org_id, block_id, kind, subject_kind, subject, rule, finding_id, created_ns, expires_ns, status, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                vec![
                    org_id.into(),
                    b.id.as_str().into(),
                    b.kind.as_str().into(),
                    b.subject_kind.as_str().into(),
                    b.subject.as_str().into(),
                    b.rule.as_str().into(),
                    b.finding_id.as_str().into(),
                    b.created_unix_nanos.into(),
                    b.expires_unix_nanos.into(),
                    BLOCK_ACTIVE.into(),
                    Value::Bytes(b.encode_to_vec()),
                ],
            ));
        }
        stmts
    }
}

impl GatewayStore {
    /// Stores a finding and the block it places (in one transaction);
    /// returns both as stored.
    pub async fn insert_finding(&self, org_id: i64, new: &NewFinding, now_ns: i64) -> Result<(SecurityFinding, Option<SecurityBlock>), StoreError> {
        let prepared = new.prepare(now_ns)?;
        self.insert_findings(org_id, std::slice::from_ref(&prepared)).await?;
        Ok((prepared.finding, prepared.block))
    }

    /// Stores the findings of one detection pass and the blocks they place in
    /// one transaction: a pass that blocks a user and a session together is
    /// seen by every reader (an agent's stream, a listing) whole or not at all.
    pub async fn insert_findings(&self, org_id: i64, findings: &[PreparedFinding]) -> Result<(), StoreError> {
        let stmts: Vec<Stmt> = findings.iter().flat_map(|f| f.statements(org_id)).collect();
        if stmts.is_empty() {
            return Ok(());
        }
        self.db.transaction(stmts).await.map(|_| ())
    }

    /// The org's findings, newest first.
    pub async fn list_findings(&self, org_id: i64, limit: u32) -> Result<Vec<SecurityFinding>, StoreError> {
        self.db
            .query(
                &format!("SELECT {FINDING_COLUMNS} FROM security_findings WHERE org_id = $1 ORDER BY created_ns DESC, finding_id DESC LIMIT $2"),
                vec![org_id.into(), page(limit).into()],
            )
            .await?
            .into_iter()
            .map(finding)
            .collect()
    }

    /// The org's findings made at or after `since_ns`, oldest first (a
    /// detection pass's look back over one rule window: few rows).
    pub async fn findings_since(&self, org_id: i64, since_ns: i64) -> Result<Vec<SecurityFinding>, StoreError> {
        self.db
            .query(
                &format!("SELECT {FINDING_COLUMNS} FROM security_findings WHERE org_id = $1 AND created_ns >= $2 ORDER BY created_ns, finding_id"),
                vec![org_id.into(), since_ns.into()],
            )
            .await?
            .into_iter()
            .map(finding)
            .collect()
    }

    /// The org's blocks as they stand at `now_ns`, newest first; `status`
    /// empty: every status, else one of [`BLOCK_STATUSES`].
    pub async fn list_blocks(&self, org_id: i64, status: &str, limit: u32, now_ns: i64) -> Result<Vec<SecurityBlock>, StoreError> {
        let mut sql = Query::new(&format!("SELECT {BLOCK_COLUMNS} FROM security_blocks WHERE "));
        let org = sql.param(org_id);
        sql.push(&format!("org_id = {org}"));
        match status {
            "" => {}
            BLOCK_LIFTED => sql.and_eq("status", BLOCK_LIFTED),
            BLOCK_EXPIRED => {
                let now = sql.param(now_ns);
                sql.push(&format!(" AND status IN ('{BLOCK_ACTIVE}', '{BLOCK_ACKNOWLEDGED}') AND expires_ns <= {now}"));
            }
            BLOCK_ACTIVE | BLOCK_ACKNOWLEDGED => {
                sql.and_eq("status", status);
                let now = sql.param(now_ns);
                sql.push(&format!(" AND expires_ns > {now}"));
            }
            other => return Err(StoreError::Refused(format!("status {other:?} is not one of {}", BLOCK_STATUSES.join(", ")))),
        }
        let p = sql.param(page(limit));
        sql.push(&format!(" ORDER BY created_ns DESC, block_id DESC LIMIT {p}"));
        self.db.query(&sql.sql, sql.params).await?.into_iter().map(|r| block(r, now_ns).map(|(_, b)| b)).collect()
    }

    pub async fn security_block(&self, org_id: i64, block_id: &str, now_ns: i64) -> Result<Option<SecurityBlock>, StoreError> {
        self.db
            .query_opt(&format!("SELECT {BLOCK_COLUMNS} FROM security_blocks WHERE org_id = $1 AND block_id = $2"), vec![org_id.into(), block_id.into()])
            .await?
            .map(|r| block(r, now_ns).map(|(_, b)| b))
            .transpose()
    }

    /// The org's blocks in force at `now_ns` (active or acknowledged, not
    /// expired), oldest first: the set every agent of the org enforces.
    pub async fn blocks_in_force(&self, org_id: i64, now_ns: i64) -> Result<Vec<SecurityBlock>, StoreError> {
        self.db
            .query(
                &format!(
                    "SELECT {BLOCK_COLUMNS} FROM security_blocks WHERE org_id = $1 AND status IN ('{BLOCK_ACTIVE}', '{BLOCK_ACKNOWLEDGED}') AND expires_ns > $2
                     ORDER BY created_ns, block_id"
                ),
                vec![org_id.into(), now_ns.into()],
            )
            .await?
            .into_iter()
            .map(|r| block(r, now_ns).map(|(_, b)| b))
            .collect()
    }

    /// Every org's blocks in force, as (org, block), by org then oldest first.
    pub async fn all_blocks_in_force(&self, now_ns: i64) -> Result<Vec<(i64, SecurityBlock)>, StoreError> {
        self.db
            .query(
                &format!(
                    "SELECT {BLOCK_COLUMNS} FROM security_blocks WHERE status IN ('{BLOCK_ACTIVE}', '{BLOCK_ACKNOWLEDGED}') AND expires_ns > $1
                     ORDER BY org_id, created_ns, block_id"
                ),
                vec![now_ns.into()],
            )
            .await?
            .into_iter()
            .map(|r| block(r, now_ns))
            .collect()
    }

    /// Records who reviewed an active block; it stays in force. `Refused`
    /// if it is not active (acknowledged already, lifted, expired).
    pub async fn acknowledge_block(&self, org_id: i64, block_id: &str, by: &str, reason: &str, now_ns: i64) -> Result<SecurityBlock, StoreError> {
        let changed = self
            .db
            .execute(
                &format!(
                    "UPDATE security_blocks SET status = '{BLOCK_ACKNOWLEDGED}', acknowledged_by = $3, acknowledged_ns = $4, acknowledge_reason = $5
                     WHERE org_id = $1 AND block_id = $2 AND status = '{BLOCK_ACTIVE}' AND expires_ns > $4"
                ),
                vec![org_id.into(), block_id.into(), by.into(), now_ns.into(), reason.into()],
            )
            .await?;
        self.after_change(org_id, block_id, changed, "acknowledged", now_ns).await
    }

    /// Ends a block in force at once. Of concurrent callers exactly one
    /// wins; the others, and any caller once it is lifted or expired, get
    /// `Refused` saying so.
    pub async fn lift_block(&self, org_id: i64, block_id: &str, by: &str, reason: &str, now_ns: i64) -> Result<SecurityBlock, StoreError> {
        let changed = self
            .db
            .execute(
                &format!(
                    "UPDATE security_blocks SET status = '{BLOCK_LIFTED}', lifted_by = $3, lifted_ns = $4, lift_reason = $5
                     WHERE org_id = $1 AND block_id = $2 AND status IN ('{BLOCK_ACTIVE}', '{BLOCK_ACKNOWLEDGED}') AND expires_ns > $4"
                ),
                vec![org_id.into(), block_id.into(), by.into(), now_ns.into(), reason.into()],
            )
            .await?;
        self.after_change(org_id, block_id, changed, "lifted", now_ns).await
    }

    /// The block after a conditional update, or why the update did not apply.
    async fn after_change(&self, org_id: i64, block_id: &str, changed: u64, verb: &str, now_ns: i64) -> Result<SecurityBlock, StoreError> {
        let current = self.security_block(org_id, block_id, now_ns).await?;
        let Some(b) = current else {
            let org = self.org_by_id(org_id).await?.map(|o| o.name).unwrap_or_else(|| org_id.to_string());
            return Err(StoreError::NotFound(format!("no block {block_id} in org {org}")));
        };
        if changed > 0 {
            return Ok(b);
        }
        let detail = match b.status.as_str() {
            BLOCK_LIFTED => format!(" by {}", b.lifted_by),
            BLOCK_ACKNOWLEDGED => format!(" by {}", b.acknowledged_by),
            _ => String::new(),
        };
        Err(StoreError::Refused(format!("block {block_id} cannot be {verb}: it is {}{detail}", b.status)))
    }
}
