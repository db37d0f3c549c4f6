//! The fleet's approval requests: listed and shown to viewers, decided by
//! approvers and admins (the verdict is queued to the request's host as a
//! command; the call returns once it is queued), waited on until the host
//! reports the request decided. The store is the truth, so every replica
//! answers alike, whichever replica the host is connected to.
//!
//! Every call of DecideApproval that names a well-formed request id is kept
//! in the request's audit trail, refused ones too (a viewer's attempt, a
//! request already decided), and shown by GetApproval.

use std::time::Duration;

use airlock_api::gateway::v1::{
    ApprovalCommand, DecideFleetApprovalRequest, FleetApproval, GetFleetApprovalRequest, ListFleetApprovalsRequest, ListFleetApprovalsResponse,
    WaitFleetApprovalRequest,
};
use airlock_api::v1::DecideApprovalRequest;
use airlock_gateway_store::{is_request_id, ApprovalAttempt, ApprovalQuery, GatewayVerdict, StoreError, VerdictCommand, APPROVAL_PENDING, APPROVAL_STATES};
use prost::Message;
use tonic::Status;

use crate::approvals::{announce, fleet_approval, ApprovalNews};
use crate::auth::{store_status, Caller, OrgScope};
use crate::hub::{Hub, DECIDE_APPROVAL};
use crate::tokens::Role;

/// How often WaitApproval looks at the store.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// The longest grant a verdict here may give.
pub const MAX_GRANT_SECONDS: u64 = 30 * 86_400;
const MAX_REASON_BYTES: usize = 1024;

pub async fn list(hub: &Hub, caller: &Caller, ask: ListFleetApprovalsRequest) -> Result<ListFleetApprovalsResponse, Status> {
    let _timer = hub.metrics.time_query("list_approvals");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let state = ask.state.trim();
    if !state.is_empty() && !APPROVAL_STATES.contains(&state) {
        return Err(Status::invalid_argument(format!("state: {state:?} is not one of {}", APPROVAL_STATES.join(", "))));
    }
    let q = ApprovalQuery { state: state.into(), host: ask.host.trim().into(), session_id: ask.session_id.trim().into(), limit: ask.limit };
    let rows = hub.store.list_approvals(org.id, &q).await.map_err(store_status)?;
    Ok(ListFleetApprovalsResponse { approvals: rows.into_iter().map(|a| fleet_approval(&org.name, a, Vec::new())).collect() })
}

pub async fn get(hub: &Hub, caller: &Caller, ask: GetFleetApprovalRequest) -> Result<FleetApproval, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let id = request_id(&ask.id)?;
    shown(hub, &org, id).await
}

/// Waits until the request's host reports it decided (or expired, or
/// cancelled), or the timeout passes: then it is returned still pending.
pub async fn wait(hub: &Hub, caller: &Caller, ask: WaitFleetApprovalRequest) -> Result<FleetApproval, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let id = request_id(&ask.id)?;
    // An instant too far to represent is no deadline at all.
    let deadline = (ask.timeout_seconds > 0).then(|| tokio::time::Instant::now().checked_add(Duration::from_secs(ask.timeout_seconds))).flatten();
    loop {
        let approval = hub.store.approval(org.id, id).await.map_err(store_status)?.ok_or_else(|| not_found(&org, id))?;
        let now = tokio::time::Instant::now();
        if approval.state != APPROVAL_PENDING || deadline.is_some_and(|d| now >= d) {
            return shown(hub, &org, id).await;
        }
        let pause = deadline.map_or(WAIT_POLL, |d| WAIT_POLL.min(d - now));
        tokio::time::sleep(pause).await;
    }
}

/// Gives a verdict: checked, recorded in the audit trail whatever its
/// outcome, and on success queued to the request's host.
pub async fn decide(hub: &Hub, caller: &Caller, ask: DecideFleetApprovalRequest) -> Result<FleetApproval, Status> {
    let org = caller.scope(&hub.store, &ask.org).await?;
    let id = request_id(&ask.id)?;
    if !ask.approve && ask.grant_seconds > 0 {
        return Err(Status::invalid_argument("grant_seconds: only an approval has a grant; this is a rejection"));
    }
    if ask.grant_seconds > MAX_GRANT_SECONDS {
        return Err(Status::invalid_argument(format!("grant_seconds: at most {MAX_GRANT_SECONDS} (30 days); got {}", ask.grant_seconds)));
    }
    let reason = ask.reason.trim().to_string();
    if reason.len() > MAX_REASON_BYTES {
        return Err(Status::invalid_argument(format!("reason: at most {MAX_REASON_BYTES} bytes; got {}", reason.len())));
    }
    let action = match (ask.approve, ask.grant_seconds) {
        (true, 0) => "approve once".to_string(),
        (true, n) => format!("approve for {n} s"),
        (false, _) => "reject".to_string(),
    };
    let audit = Audit { hub, org: &org, id, caller: format!("gateway {} {} ({})", caller.through, caller.label, caller.role), action: &action, reason: &reason };

    if let Err(refused) = caller.require(Role::Approver) {
        tracing::warn!(org = %org.name, request = %id, caller = %caller.label, role = %caller.role, %action, "approval decision refused: {}", refused.message());
        audit.record(&format!("refused: {}", refused.message())).await;
        return Err(refused);
    }
    let approval = hub.store.approval(org.id, id).await.map_err(store_status)?.ok_or_else(|| not_found(&org, id))?;
    let host = hub.store.host(org.id, &approval.host_id).await.map_err(store_status)?;
    let unreachable = match host {
        None => Some(format!("host {:?} of request {id} is not enrolled in org {}: the verdict cannot reach it", approval.host_id, org.name)),
        Some(h) if h.revoked => Some(format!("host {:?} of request {id} is revoked: the verdict cannot reach it", approval.host_id)),
        Some(_) => None,
    };
    if let Some(why) = unreachable {
        audit.record(&format!("refused: {why}")).await;
        return Err(Status::failed_precondition(why));
    }

    let decided_by = format!("gateway {} {}", caller.through, caller.label);
    let command = ApprovalCommand {
        decide: Some(DecideApprovalRequest { id: id.to_string(), approve: ask.approve, reason: reason.clone(), grant_seconds: ask.grant_seconds }),
        decided_by: decided_by.clone(),
    };
    let payload = command.encode_to_vec();
    let verdict = GatewayVerdict {
        approve: ask.approve,
        reason: reason.clone(),
        grant_seconds: ask.grant_seconds as i64,
        decided_by,
        decided_ns: crate::now_ns(),
    };
    match hub.store.decide_approval_at_gateway(org.id, id, &verdict, VerdictCommand { kind: DECIDE_APPROVAL, payload: &payload }).await {
        Ok(decided) => {
            hub.queued_command();
            audit.record("decided").await;
            tracing::info!(org = %org.name, request = %id, host = %decided.host_id, caller = %caller.label, %action, "approval request decided at the gateway; the verdict is queued to its host");
            let shown = shown(hub, &org, id).await?;
            announce(&hub.notifiers, ApprovalNews::DecidedAtGateway, &shown);
            Ok(shown)
        }
        Err(StoreError::Refused(why)) => {
            tracing::info!(org = %org.name, request = %id, caller = %caller.label, %action, "approval decision refused: {why}");
            audit.record(&format!("refused: {why}")).await;
            Err(Status::failed_precondition(why))
        }
        Err(e) => Err(store_status(e)),
    }
}

/// One DecideApproval call, for the request's audit trail.
struct Audit<'a> {
    hub: &'a Hub,
    org: &'a OrgScope,
    id: &'a str,
    caller: String,
    action: &'a str,
    reason: &'a str,
}

impl Audit<'_> {
    /// A failure to record is logged, never turned into the caller's answer:
    /// the call's own outcome stands either way.
    async fn record(&self, outcome: &str) {
        let attempt = ApprovalAttempt {
            org_id: self.org.id,
            request_id: self.id.to_string(),
            caller: self.caller.clone(),
            action: self.action.to_string(),
            reason: self.reason.to_string(),
            outcome: outcome.to_string(),
            at_ns: crate::now_ns(),
        };
        if let Err(e) = self.hub.store.record_approval_attempt(&attempt).await {
            tracing::error!(org = %self.org.name, request = %self.id, caller = %self.caller, %outcome, "the approval audit trail could not record a decision attempt: {e}");
        }
    }
}

/// The request with its audit trail.
async fn shown(hub: &Hub, org: &OrgScope, id: &str) -> Result<FleetApproval, Status> {
    let approval = hub.store.approval(org.id, id).await.map_err(store_status)?.ok_or_else(|| not_found(org, id))?;
    let audit = hub.store.approval_attempts(org.id, id).await.map_err(store_status)?;
    Ok(fleet_approval(&org.name, approval, audit))
}

fn request_id(id: &str) -> Result<&str, Status> {
    let id = id.trim();
    if is_request_id(id) {
        Ok(id)
    } else {
        Err(Status::invalid_argument(format!("id: {id:?} is not an approval request id (\"apr-\" and 16 hex digits)")))
    }
}

fn not_found(org: &OrgScope, id: &str) -> Status {
    Status::not_found(format!("no approval request {id} in org {}", org.name))
}
