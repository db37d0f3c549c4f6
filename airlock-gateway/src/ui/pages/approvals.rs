//! Approvals: the pending queue first, then the rest by state; one
//! request's detail with its audit trail; approve (once, or for a while) or
//! reject, with a reason. The facade records a refused attempt too, so a
//! viewer who posts the form is refused and the refusal is in the audit.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use airlock_api::gateway::v1::{ApprovalAttempt, DecideFleetApprovalRequest, FleetApproval, GetFleetApprovalRequest, ListFleetApprovalsRequest};

use crate::fleet::approvals;
use crate::tokens::Role;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::{urlencode, SignedIn};
use crate::ui::view::{duration_text, render, Chrome, When};
use crate::ui::AppState;

const STATES: [&str; 6] = ["pending", "approved", "rejected", "expired", "cancelled", "any"];
/// The grant lengths the form offers, in seconds (0: once).
const GRANTS: [(u64, &str); 5] = [(0, "once"), (900, "15 minutes"), (3600, "1 hour"), (14_400, "4 hours"), (86_400, "1 day")];

pub struct ApprovalRow {
    pub id: String,
    pub state: String,
    pub host: String,
    pub session: String,
    pub user: String,
    pub role: String,
    pub command: String,
    pub rule: String,
    pub created: When,
    pub expires: When,
    pub attempts: u32,
    pub justification: String,
    pub verdict: String,
    pub delivery: String,
    /// Pending, and no verdict given here yet: a request decided at the
    /// gateway stays pending until its host confirms the verdict, and a
    /// second decision would only be refused.
    pub open: bool,
}

fn row(a: FleetApproval) -> Option<ApprovalRow> {
    let r = a.request?;
    let verdict = r.verdict.as_ref().map(|v| {
        let grant = match v.grant.as_str() {
            "once" => " (once)".to_string(),
            "for" => format!(" (for {})", duration_text(v.grant_seconds)),
            _ => String::new(),
        };
        format!("{} by {}{grant}{}", r.state, v.decided_by, if v.reason.is_empty() { String::new() } else { format!(": {}", v.reason) })
    });
    let open = r.state == "pending" && a.delivery.is_empty();
    Some(ApprovalRow {
        id: r.id,
        state: r.state,
        host: r.host,
        session: r.session_id,
        user: r.user,
        role: r.role,
        command: r.argv.join(" "),
        rule: format!("{}/{}", r.policy, r.rule),
        created: When(r.created_unix_nanos),
        expires: When(r.expires_unix_nanos),
        attempts: r.attempts,
        justification: r.justification,
        verdict: verdict.unwrap_or_else(|| if a.delivery.is_empty() { String::new() } else { "decided at the gateway".to_string() }),
        open,
        delivery: a.delivery,
    })
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    host: String,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    state: String,
    host: String,
    states: [&'static str; 6],
    rows: Vec<ApprovalRow>,
    grants: [(u64, &'static str); 5],
    can_decide: bool,
}

pub async fn list(State(state): State<AppState>, signed: SignedIn, Query(q): Query<ListQuery>) -> UiResult<Response> {
    let wanted = if q.state.is_empty() { "pending".to_string() } else { q.state.clone() };
    if !STATES.contains(&wanted.as_str()) {
        return Err(UiError::bad_request(format!("state: {wanted:?} is not one of {}", STATES.join(", "))));
    }
    let ask = ListFleetApprovalsRequest { state: if wanted == "any" { String::new() } else { wanted.clone() }, host: q.host.trim().to_string(), limit: 200, ..Default::default() };
    let listed = approvals::list(&state.hub, &signed.caller, ask).await?;
    render(ApprovalsPage {
        can_decide: signed.can(Role::Approver),
        chrome: Chrome::new(&signed, "approvals"),
        rows: listed.approvals.into_iter().filter_map(row).collect(),
        state: wanted,
        host: q.host,
        states: STATES,
        grants: GRANTS,
    })
}

pub struct AttemptRow {
    pub at: When,
    pub caller: String,
    pub action: String,
    pub outcome: String,
    pub reason: String,
}

fn attempt_row(a: ApprovalAttempt) -> AttemptRow {
    AttemptRow { at: When(a.at_unix_nanos), caller: a.caller, action: a.action, outcome: a.outcome, reason: a.reason }
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalPage {
    chrome: Chrome,
    a: ApprovalRow,
    cwd: String,
    audit: Vec<AttemptRow>,
    grants: [(u64, &'static str); 5],
    can_decide: bool,
}

pub async fn detail(State(state): State<AppState>, signed: SignedIn, Path(id): Path<String>) -> UiResult<Response> {
    let got = approvals::get(&state.hub, &signed.caller, GetFleetApprovalRequest { id: id.clone(), ..Default::default() }).await?;
    let cwd = got.request.as_ref().map(|r| r.cwd.clone()).unwrap_or_default();
    let audit = got.audit.clone().into_iter().map(attempt_row).collect();
    let a = row(got).ok_or_else(|| UiError::not_found(format!("approval request {id:?} has no request")))?;
    render(ApprovalPage { can_decide: signed.can(Role::Approver), chrome: Chrome::new(&signed, "approvals"), a, cwd, audit, grants: GRANTS })
}

#[derive(Deserialize)]
pub struct DecideForm {
    verdict: String,
    #[serde(default)]
    grant_seconds: u64,
    #[serde(default)]
    reason: String,
    /// Where to go afterwards: the queue or the request's page.
    #[serde(default)]
    back: String,
}

pub async fn decide(State(state): State<AppState>, signed: SignedIn, Path(id): Path<String>, Form(f): Form<DecideForm>) -> UiResult<Response> {
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(UiError::bad_request(format!("verdict: {other:?} is not approve or reject"))),
    };
    if !approve && f.grant_seconds > 0 {
        return Err(UiError::bad_request("grant_seconds: only an approval has a duration"));
    }
    let ask = DecideFleetApprovalRequest { id: id.clone(), approve, reason: f.reason.trim().to_string(), grant_seconds: f.grant_seconds, ..Default::default() };
    approvals::decide(&state.hub, &signed.caller, ask).await?;
    let back = if f.back == "queue" { "/approvals".to_string() } else { format!("/approvals/{}", urlencode(&id)) };
    Ok(Redirect::to(&back).into_response())
}
