//! Security: findings with their values against the thresholds, and blocks
//! (active, acknowledged, lifted, expired); acknowledge (approver) and lift
//! (admin), enforced by the facade whatever the page shows.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use airlock_api::gateway::v1::{FleetBlockActionRequest, ListFleetBlocksRequest, ListFleetFindingsRequest};
use airlock_api::v1::{Measure, SecurityBlock, SecurityFinding};

use crate::fleet::security;
use crate::tokens::Role;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::SignedIn;
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

const BLOCK_STATUSES: [&str; 5] = ["in force", "active", "acknowledged", "lifted", "expired"];

pub struct MeasureRow {
    pub name: String,
    pub observed: u64,
    pub threshold: u64,
    pub over: bool,
}

fn measures(values: &[Measure]) -> Vec<MeasureRow> {
    values.iter().map(|m| MeasureRow { name: m.name.clone(), observed: m.observed, threshold: m.threshold, over: m.observed >= m.threshold }).collect()
}

pub struct FindingRow {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub subject: String,
    pub window_start: When,
    pub window_end: When,
    pub values: Vec<MeasureRow>,
    pub summary: String,
    pub block_id: String,
    pub evidence: usize,
    pub created: When,
}

fn finding_row(f: SecurityFinding) -> FindingRow {
    FindingRow {
        values: measures(&f.values),
        id: f.id,
        rule: f.rule,
        severity: f.severity,
        subject: format!("{} {}", f.subject_kind, f.subject),
        window_start: When(f.window_start_unix_nanos),
        window_end: When(f.window_end_unix_nanos),
        summary: f.summary,
        block_id: f.block_id,
        evidence: f.evidence.len(),
        created: When(f.created_unix_nanos),
    }
}

pub struct BlockRow {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub rule: String,
    pub severity: String,
    pub values: Vec<MeasureRow>,
    pub summary: String,
    pub status: String,
    pub created: When,
    pub expires: When,
    pub acknowledged_by: String,
    pub acknowledged_at: When,
    pub lifted_by: String,
    pub lifted_at: When,
    pub in_force: bool,
}

fn block_row(b: SecurityBlock) -> BlockRow {
    BlockRow {
        in_force: b.status == "active" || b.status == "acknowledged",
        values: measures(&b.values),
        acknowledged_at: When(b.acknowledged_unix_nanos),
        lifted_at: When(b.lifted_unix_nanos),
        acknowledged_by: b.acknowledged_by,
        lifted_by: b.lifted_by,
        id: b.id,
        kind: b.kind,
        subject: format!("{} {}", b.subject_kind, b.subject),
        rule: b.rule,
        severity: b.severity,
        summary: b.summary,
        status: b.status,
        created: When(b.created_unix_nanos),
        expires: When(b.expires_unix_nanos),
    }
}

#[derive(Deserialize, Default)]
pub struct SecurityQuery {
    #[serde(default)]
    status: String,
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    chrome: Chrome,
    status: String,
    statuses: [&'static str; 5],
    blocks: Vec<BlockRow>,
    findings: Vec<FindingRow>,
    can_ack: bool,
    can_lift: bool,
}

pub async fn page(State(state): State<AppState>, signed: SignedIn, Query(q): Query<SecurityQuery>) -> UiResult<Response> {
    let status = if q.status.is_empty() { "in force".to_string() } else { q.status.clone() };
    if !BLOCK_STATUSES.contains(&status.as_str()) && status != "any" {
        return Err(UiError::bad_request(format!("status: {status:?} is not one of {}, any", BLOCK_STATUSES.join(", "))));
    }
    let asked = match status.as_str() {
        "in force" | "any" => String::new(),
        s => s.to_string(),
    };
    let blocks = security::list_blocks(&state.hub, &signed.caller, ListFleetBlocksRequest { status: asked, limit: 200, ..Default::default() }).await?;
    let blocks = blocks.blocks.into_iter().map(block_row).filter(|b| status != "in force" || b.in_force).collect();
    let findings = security::list_findings(&state.hub, &signed.caller, ListFleetFindingsRequest { limit: 100, ..Default::default() }).await?;
    render(SecurityPage {
        can_ack: signed.can(Role::Approver),
        can_lift: signed.can(Role::Admin),
        chrome: Chrome::new(&signed, "security"),
        status,
        statuses: BLOCK_STATUSES,
        blocks,
        findings: findings.findings.into_iter().map(finding_row).collect(),
    })
}

#[derive(Deserialize)]
pub struct BlockForm {
    #[serde(default)]
    reason: String,
}

pub async fn acknowledge(State(state): State<AppState>, signed: SignedIn, Path(id): Path<String>, Form(f): Form<BlockForm>) -> UiResult<Response> {
    security::acknowledge(&state.hub, &signed.caller, FleetBlockActionRequest { id, reason: f.reason.trim().to_string(), ..Default::default() }).await?;
    Ok(Redirect::to("/security").into_response())
}

pub async fn lift(State(state): State<AppState>, signed: SignedIn, Path(id): Path<String>, Form(f): Form<BlockForm>) -> UiResult<Response> {
    security::lift(&state.hub, &signed.caller, FleetBlockActionRequest { id, reason: f.reason.trim().to_string(), ..Default::default() }).await?;
    Ok(Redirect::to("/security?status=any").into_response())
}
