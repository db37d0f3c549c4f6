//! Approval requests as the gateway holds them: the agent's latest record of
//! each (merged from the shipped approval decisions, in any order, any number
//! of times), the verdict given here and how far it got to the host, and
//! every attempt to decide one here.
//!
//! The host is the truth about a request's state. Its records arrive at least
//! once and possibly out of order, so the merge is order-tolerant: a final
//! state (anything but pending) is never undone and the first final one
//! stays; among pending records the newest wins. A verdict given here is one
//! conditional update, so of two approvers racing only one wins.

use airlock_api::v1::ApprovalRequest;
use prost::Message;

use crate::db::{Dialect, Row, Stmt, Value};
use crate::error::StoreError;
use crate::filter::Query;
use crate::store::GatewayStore;

pub const APPROVAL_PENDING: &str = "pending";
/// Every state a request can be in, pending first.
pub const APPROVAL_STATES: [&str; 5] = [APPROVAL_PENDING, "approved", "rejected", "expired", "cancelled"];

/// `delivery` of a verdict given here, before the host confirmed it.
pub const DELIVERY_DELIVERING: &str = "delivering";
pub const DELIVERY_DELIVERED: &str = "delivered";
/// `delivery` of a verdict the host refused or never got: this, then why.
pub const DELIVERY_FAILED_PREFIX: &str = "failed: ";

pub const VERDICT_APPROVE: &str = "approve";
pub const VERDICT_REJECT: &str = "reject";

/// Marks the row a decide transaction has just claimed, until the same
/// transaction links it to its command (never seen committed).
const CLAIMED: i64 = -1;
/// Rows a list returns at most.
pub const MAX_APPROVALS_PAGE: u32 = 1000;
const DEFAULT_APPROVALS_PAGE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Approval {
    pub org_id: i64,
    pub request_id: String,
    pub host_id: String,
    pub session_id: String,
    /// One of [`APPROVAL_STATES`] (as the host last reported it).
    pub state: String,
    /// The host's latest record of the request.
    pub request: ApprovalRequest,
    pub created_ns: i64,
    /// The time of the host's record the row holds.
    pub updated_ns: i64,
    pub expires_ns: i64,
    /// The verdict given here: "" (none), [`VERDICT_APPROVE`] or [`VERDICT_REJECT`].
    pub gateway_verdict: String,
    pub gateway_reason: String,
    pub grant_seconds: i64,
    pub decided_by: String,
    pub decided_ns: i64,
    /// "", [`DELIVERY_DELIVERING`], [`DELIVERY_DELIVERED`] or [`DELIVERY_FAILED_PREFIX`] and why.
    pub delivery: String,
    /// The command that carries the verdict to the host (0: none).
    pub command_id: i64,
}

/// A verdict given at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayVerdict {
    pub approve: bool,
    pub reason: String,
    /// Approve only; 0: once.
    pub grant_seconds: i64,
    pub decided_by: String,
    pub decided_ns: i64,
}

/// The command that takes a verdict to the host, queued in the same
/// transaction as the verdict (so a verdict is never left without one).
#[derive(Debug, Clone, Copy)]
pub struct VerdictCommand<'a> {
    pub kind: &'a str,
    /// Names the request, so it is unique to it.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalQuery {
    /// "": every state.
    pub state: String,
    /// "": every host.
    pub host: String,
    /// "": every session.
    pub session_id: String,
    /// 0: 100; at most [`MAX_APPROVALS_PAGE`].
    pub limit: u32,
}

/// A row the ingest of a batch changed, and the event whose record changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalChange {
    pub event: String,
    pub approval: Approval,
}

/// A request after its host answered the command that carried a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct AnsweredApproval {
    pub approval: Approval,
    /// The host's record in the answer changed the row (it is the first news
    /// of the request's new state).
    pub merged: bool,
}

/// One DecideApproval call on a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalAttempt {
    pub org_id: i64,
    pub request_id: String,
    pub caller: String,
    pub action: String,
    pub reason: String,
    /// "decided", or "refused: WHY".
    pub outcome: String,
    pub at_ns: i64,
}

const COLUMNS: &str = "org_id, request_id, host_id, session_id, state, body, created_ns, updated_ns, expires_ns, \
                       gateway_verdict, gateway_reason, grant_seconds, decided_by, decided_ns, delivery, command_id";

fn approval(mut r: Row) -> Result<Approval, StoreError> {
    let request_id = r.text(1)?;
    let body = r.bytes(5)?;
    let request = ApprovalRequest::decode(body.as_slice())
        .map_err(|e| StoreError::other(format!("approval request {request_id}: the stored record does not decode: {e}")))?;
    Ok(Approval {
        org_id: r.int(0)?,
        request_id,
        host_id: r.text(2)?,
        session_id: r.text(3)?,
        state: r.text(4)?,
        request,
        created_ns: r.int(6)?,
        updated_ns: r.int(7)?,
        expires_ns: r.int(8)?,
        gateway_verdict: r.text(9)?,
        gateway_reason: r.text(10)?,
        grant_seconds: r.int(11)?,
        decided_by: r.text(12)?,
        decided_ns: r.int(13)?,
        delivery: r.text(14)?,
        command_id: r.int(15)?,
    })
}

/// "apr-" and 16 lowercase hex digits, as agents make them.
pub fn is_request_id(id: &str) -> bool {
    id.strip_prefix("apr-").is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The merge of one host record into the request's row (see the module
/// doc), as a statement that returns the row only if it changed it. A record
/// about a request another host opened is ignored: a host speaks for its
/// own requests only. When a final state arrives for a verdict given here
/// and still on its way, the record also settles the verdict's delivery:
/// the host applied it, or decided otherwise first.
pub(crate) fn merge_stmt(dialect: Dialect, org_id: i64, host_id: &str, request: &ApprovalRequest, time_ns: i64) -> Stmt {
    let mut request = request.clone();
    // The host is the one the stream authenticated, whatever the record says.
    request.host = host_id.to_string();
    let decided_by = request.verdict.as_ref().map(|v| v.decided_by.clone()).unwrap_or_default();
    let applied_ours = dialect.contains("$10", "approvals.decided_by");
    let sql = format!(
        "INSERT INTO approvals(org_id, request_id, host_id, session_id, state, body, created_ns, updated_ns, expires_ns)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (org_id, request_id) DO UPDATE SET
            session_id = excluded.session_id, state = excluded.state, body = excluded.body,
            updated_ns = excluded.updated_ns, expires_ns = excluded.expires_ns,
            delivery = CASE
                WHEN approvals.delivery <> '{DELIVERY_DELIVERING}' OR excluded.state = '{APPROVAL_PENDING}' THEN approvals.delivery
                WHEN ((approvals.gateway_verdict = '{VERDICT_APPROVE}' AND excluded.state = 'approved')
                      OR (approvals.gateway_verdict = '{VERDICT_REJECT}' AND excluded.state = 'rejected'))
                     AND {applied_ours} THEN '{DELIVERY_DELIVERED}'
                ELSE '{DELIVERY_FAILED_PREFIX}the host decided first: ' || excluded.state END
         WHERE approvals.host_id = excluded.host_id AND approvals.state = '{APPROVAL_PENDING}'
           AND (excluded.state <> '{APPROVAL_PENDING}' OR excluded.updated_ns > approvals.updated_ns)
         RETURNING {COLUMNS}"
    );
    let params = vec![
        org_id.into(),
        request.id.as_str().into(),
        host_id.into(),
        request.session_id.as_str().into(),
        request.state.as_str().into(),
        Value::Bytes(request.encode_to_vec()),
        request.created_unix_nanos.into(),
        time_ns.into(),
        request.expires_unix_nanos.into(),
        decided_by.into(),
    ];
    Stmt::new(sql, params)
}

/// Why a host record cannot be merged at all (`None`: it can).
pub(crate) fn unmergeable(request: &ApprovalRequest) -> Option<String> {
    if !is_request_id(&request.id) {
        return Some(format!("request id {:?} is not apr- and 16 hex digits", request.id));
    }
    if request.state.is_empty() {
        return Some(format!("request {} has no state", request.id));
    }
    None
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// Why a request cannot be decided (the loser of a race, or a late caller).
fn refusal(a: &Approval, now_ns: i64) -> String {
    let id = &a.request_id;
    if a.state != APPROVAL_PENDING {
        let verdict = a.request.verdict.clone().unwrap_or_default();
        let at = if verdict.decided_unix_nanos > 0 { format!(" at {}", rfc3339(verdict.decided_unix_nanos)) } else { String::new() };
        return match a.state.as_str() {
            "approved" | "rejected" => format!("request {id} was already decided: {} by {}{at}", a.state, verdict.decided_by),
            state => {
                let why = if verdict.reason.is_empty() { String::new() } else { format!(" ({})", verdict.reason) };
                format!("request {id} is {state}{at}{why}")
            }
        };
    }
    if !a.gateway_verdict.is_empty() {
        let done = if a.gateway_verdict == VERDICT_APPROVE { "approved" } else { "rejected" };
        return format!(
            "request {id} was already decided: {done} by {} at {} (delivery: {})",
            a.decided_by,
            rfc3339(a.decided_ns),
            if a.delivery.is_empty() { "-" } else { &a.delivery }
        );
    }
    if a.expires_ns > 0 && a.expires_ns <= now_ns {
        return format!("request {id} is expired (at {})", rfc3339(a.expires_ns));
    }
    format!("request {id} changed while it was being decided; try again")
}

impl GatewayStore {
    /// One request of the org.
    pub async fn approval(&self, org_id: i64, request_id: &str) -> Result<Option<Approval>, StoreError> {
        self.db
            .query_opt(&format!("SELECT {COLUMNS} FROM approvals WHERE org_id = $1 AND request_id = $2"), vec![org_id.into(), request_id.into()])
            .await?
            .map(approval)
            .transpose()
    }

    /// The org's requests that pass the query, newest first.
    pub async fn list_approvals(&self, org_id: i64, q: &ApprovalQuery) -> Result<Vec<Approval>, StoreError> {
        let mut sql = Query::new(&format!("SELECT {COLUMNS} FROM approvals WHERE "));
        let org = sql.param(org_id);
        sql.push(&format!("org_id = {org}"));
        for (column, value) in [("state", &q.state), ("host_id", &q.host), ("session_id", &q.session_id)] {
            if !value.is_empty() {
                sql.and_eq(column, value.as_str());
            }
        }
        let limit = match q.limit {
            0 => DEFAULT_APPROVALS_PAGE,
            n => n.min(MAX_APPROVALS_PAGE),
        };
        let p = sql.param(i64::from(limit));
        sql.push(&format!(" ORDER BY created_ns DESC, request_id DESC LIMIT {p}"));
        self.db.query(&sql.sql, sql.params).await?.into_iter().map(approval).collect()
    }

    /// Merges a host's record of one of its requests (outside a batch: a
    /// command's answer). Returns the row if the record changed it.
    pub async fn merge_approval(&self, org_id: i64, host_id: &str, request: &ApprovalRequest, time_ns: i64) -> Result<Option<Approval>, StoreError> {
        if let Some(why) = unmergeable(request) {
            return Err(StoreError::other(format!("host {host_id}: {why}")));
        }
        let stmt = merge_stmt(self.db.dialect(), org_id, host_id, request, time_ns);
        self.db.query_opt(&stmt.sql, stmt.params).await?.map(approval).transpose()
    }

    /// Gives a verdict on a pending request here and queues `command` to its
    /// host, in one transaction. Of concurrent callers exactly one wins; the
    /// others, and any caller once the request is decided (here or on its
    /// host) or expired, get `Refused` saying by whom and when. A verdict
    /// whose delivery failed while the request stayed pending may be given
    /// again. `NotFound` if the org has no such request.
    pub async fn decide_approval_at_gateway(
        &self,
        org_id: i64,
        request_id: &str,
        verdict: &GatewayVerdict,
        command: VerdictCommand<'_>,
    ) -> Result<Approval, StoreError> {
        let name = if verdict.approve { VERDICT_APPROVE } else { VERDICT_REJECT };
        let key = || -> Vec<Value> { vec![org_id.into(), request_id.into()] };
        // The claim: only a pending, unexpired row without a verdict here
        // (or with one that never took effect on the host: it may be given
        // again); the affected count (here: whether the last statement
        // returns the row) says who won.
        let claim = Stmt::new(
            format!(
                "UPDATE approvals SET gateway_verdict = $3, gateway_reason = $4, grant_seconds = $5, decided_by = $6, decided_ns = $7,
                    delivery = '{DELIVERY_DELIVERING}', command_id = {CLAIMED}
                 WHERE org_id = $1 AND request_id = $2 AND state = '{APPROVAL_PENDING}'
                   AND (gateway_verdict = '' OR delivery LIKE '{DELIVERY_FAILED_PREFIX}%')
                   AND (expires_ns = 0 OR expires_ns > $7)"
            ),
            [key(), vec![name.into(), verdict.reason.as_str().into(), verdict.grant_seconds.into(), verdict.decided_by.as_str().into(), verdict.decided_ns.into()]]
                .concat(),
        );
        let queue = Stmt::new(
            format!(
                "INSERT INTO commands(org_id, host_id, kind, payload, state, result, error, created_ns, updated_ns)
                 SELECT org_id, host_id, $3, $4, '{}', $5, '', $6, $6 FROM approvals WHERE org_id = $1 AND request_id = $2 AND command_id = {CLAIMED}",
                crate::COMMAND_PENDING
            ),
            [key(), vec![command.kind.into(), command.payload.into(), Value::Bytes(Vec::new()), verdict.decided_ns.into()]].concat(),
        );
        let link = Stmt::new(
            format!(
                "UPDATE approvals SET command_id =
                    (SELECT MAX(id) FROM commands WHERE org_id = $1 AND host_id = approvals.host_id AND kind = $3 AND payload = $4)
                 WHERE org_id = $1 AND request_id = $2 AND command_id = {CLAIMED}
                 RETURNING {COLUMNS}"
            ),
            [key(), vec![command.kind.into(), command.payload.into()]].concat(),
        );
        let mut outcomes = self.db.transaction(vec![claim, queue, link]).await?;
        if let Some(row) = outcomes.pop().and_then(|o| o.rows.into_iter().next()) {
            return approval(row);
        }
        match self.approval(org_id, request_id).await? {
            Some(a) => Err(StoreError::Refused(refusal(&a, verdict.decided_ns))),
            None => {
                let org = self.org_by_id(org_id).await?.map(|o| o.name).unwrap_or_else(|| org_id.to_string());
                Err(StoreError::NotFound(format!("no approval request {request_id} in org {org}")))
            }
        }
    }

    /// The host's answer to the command that carried a verdict: `Ok` with the
    /// request as the host now holds it (merged, and the verdict delivered),
    /// or `Err` with why it failed (or never got there). `None` if the
    /// command carried no verdict to this host.
    pub async fn approval_command_answered(
        &self,
        org_id: i64,
        host_id: &str,
        command_id: i64,
        answer: Result<&ApprovalRequest, &str>,
        now_ns: i64,
    ) -> Result<Option<AnsweredApproval>, StoreError> {
        let mut stmts = Vec::new();
        let delivery = match answer {
            Ok(request) => {
                if let Some(why) = unmergeable(request) {
                    return Err(StoreError::other(format!("host {host_id}, command {command_id}: {why}")));
                }
                stmts.push(merge_stmt(self.db.dialect(), org_id, host_id, request, now_ns));
                DELIVERY_DELIVERED.to_string()
            }
            Err(error) => format!("{DELIVERY_FAILED_PREFIX}{error}"),
        };
        stmts.push(Stmt::new(
            format!("UPDATE approvals SET delivery = $4 WHERE org_id = $1 AND host_id = $2 AND command_id = $3 RETURNING {COLUMNS}"),
            vec![org_id.into(), host_id.into(), command_id.into(), delivery.into()],
        ));
        let mut outcomes = self.db.transaction(stmts).await?;
        let Some(row) = outcomes.pop().and_then(|o| o.rows.into_iter().next()) else {
            return Ok(None);
        };
        let merged = outcomes.first().is_some_and(|o| !o.rows.is_empty());
        Ok(Some(AnsweredApproval { approval: approval(row)?, merged }))
    }

    pub async fn record_approval_attempt(&self, a: &ApprovalAttempt) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO approval_attempts(org_id, request_id, caller, action, reason, outcome, at_ns) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    a.org_id.into(),
                    a.request_id.as_str().into(),
                    a.caller.as_str().into(),
                    a.action.as_str().into(),
                    a.reason.as_str().into(),
                    a.outcome.as_str().into(),
                    a.at_ns.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every attempt to decide the request here, oldest first.
    pub async fn approval_attempts(&self, org_id: i64, request_id: &str) -> Result<Vec<ApprovalAttempt>, StoreError> {
        self.db
            .query(
                "SELECT org_id, request_id, caller, action, reason, outcome, at_ns FROM approval_attempts WHERE org_id = $1 AND request_id = $2 ORDER BY id",
                vec![org_id.into(), request_id.into()],
            )
            .await?
            .into_iter()
            .map(|mut r| {
                Ok(ApprovalAttempt {
                    org_id: r.int(0)?,
                    request_id: r.text(1)?,
                    caller: r.text(2)?,
                    action: r.text(3)?,
                    reason: r.text(4)?,
                    outcome: r.text(5)?,
                    at_ns: r.int(6)?,
                })
            })
            .collect()
    }
}

/// The rows of a merge statement's outcome, as an ingest's changes.
pub(crate) fn changes(event: &str, rows: Vec<Row>) -> Result<Vec<ApprovalChange>, StoreError> {
    rows.into_iter().map(|r| Ok(ApprovalChange { event: event.to_string(), approval: approval(r)? })).collect()
}
