//! The detection loop (`airlock-gateway run --detect-interval SECONDS`):
//! every interval, for each org whose detector settings are enabled, the
//! decisions of the longest enabled rule window (at most
//! [`MAX_DECISIONS_PER_RUN`], the newest), the org's API token uses and its
//! request-rate baseline go through `airlock_detect::detect`; findings are
//! stored, the high and critical ones about a user or a session place a
//! block, and the org's agents get the new set of blocks in force.
//!
//! Repeats are not stored: a finding for a (rule, subject) is dropped while
//! an earlier one for it, of the same or a higher severity, is younger than
//! the rule's window (the same evidence would be reported again), or while a
//! block that an earlier finding for it placed, of the same or a harder
//! kind, is in force. A block is not placed when one in force already
//! covers the subject with the same or a harder kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_api::v1::{Decision, DecisionFilter, SecurityBlock, SecurityFinding};
use airlock_detect::{BlockKind, Baseline, Input, RuleName, Settings, Subject, TokenUse};
use airlock_gateway_store::{FleetQuery, NewFinding, Org, PreparedFinding, StoreError};

use crate::hub::Hub;
use crate::security::{finding_message, stored_settings};

/// Decisions one org's pass reads at most (the newest): a bound on the
/// memory and time of a pass over an org that made millions in a window.
pub const MAX_DECISIONS_PER_RUN: usize = 200_000;
/// Decisions per store query while a pass reads its window.
const PAGE: u32 = 1000;
pub const DEFAULT_DETECT_INTERVAL_SECS: u64 = 60;

/// What one pass over one org did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgReport {
    pub org: String,
    /// False: detection is disabled in the org's settings.
    pub enabled: bool,
    pub decisions: usize,
    /// The decisions were cut at [`MAX_DECISIONS_PER_RUN`].
    pub capped: bool,
    pub findings: Vec<SecurityFinding>,
    pub blocks: Vec<SecurityBlock>,
}

/// Runs the detection loop forever, one pass every `interval`. A pass of an
/// org is claimed in the store first, so replicas sharing a database do not
/// each run it.
pub async fn run_loop(hub: Arc<Hub>, interval: Duration) {
    let gap_ns = i64::try_from(interval.as_nanos() / 2).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = crate::now_ns();
        let orgs = match hub.store.list_orgs().await {
            Ok(orgs) => orgs,
            Err(e) => {
                tracing::warn!("detection: list the orgs: {e}");
                continue;
            }
        };
        for org in orgs {
            match hub.store.claim_detection_run(org.id, &hub.replica, now, gap_ns).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(org = %org.name, "detection: claim the pass: {e}");
                    continue;
                }
            }
            if let Err(e) = run_org(&hub, &org, now).await {
                tracing::warn!(org = %org.name, "detection pass failed: {e:#}");
            }
        }
    }
}

/// One detection pass over every org at `now_ns`, without the claim the
/// loop takes (for tests, and for a caller that wants a pass now).
pub async fn run_detection_once(hub: &Hub, now_ns: i64) -> anyhow::Result<Vec<OrgReport>> {
    let mut reports = Vec::new();
    for org in hub.store.list_orgs().await? {
        reports.push(run_org(hub, &org, now_ns).await?);
    }
    Ok(reports)
}

/// One org's pass.
pub async fn run_org(hub: &Hub, org: &Org, now_ns: i64) -> anyhow::Result<OrgReport> {
    let mut report = OrgReport { org: org.name.clone(), ..Default::default() };
    let settings = match hub.store.security_settings(org.id, None).await? {
        None => Settings::default(),
        Some(stored) => stored_settings(&stored).map_err(anyhow::Error::msg)?.detect,
    };
    if !settings.enabled {
        return Ok(report);
    }
    report.enabled = true;
    let enabled: Vec<RuleName> = RuleName::ALL.into_iter().filter(|r| settings.rule(*r).enabled).collect();
    let longest_ns = enabled.iter().map(|r| settings.rule(*r).window_ns()).max().unwrap_or(0);
    let since = now_ns.saturating_sub(longest_ns);

    let (decisions, evidence, capped) = window_decisions(hub, org.id, since, now_ns).await?;
    report.decisions = decisions.len();
    report.capped = capped;
    if capped {
        tracing::warn!(org = %org.name, cap = MAX_DECISIONS_PER_RUN, "detection read only the newest {MAX_DECISIONS_PER_RUN} decisions of the window: older ones were left out of this pass");
    }
    let token_window = settings.rule(RuleName::TokenMultiAddress).window_ns();
    let token_uses: Vec<TokenUse> = hub
        .store
        .token_uses(org.id, now_ns.saturating_sub(token_window))
        .await?
        .into_iter()
        .map(|u| TokenUse { token: u.token, address: u.address, time_unix_nanos: u.last_ns })
        .collect();
    let mut baseline = match hub.store.security_baseline(org.id).await? {
        None => Baseline::new(),
        Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::warn!(org = %org.name, "the stored request-rate baseline does not read ({e}); starting a new one");
            Baseline::new()
        }),
    };
    let findings = airlock_detect::detect(&settings, &Input { decisions: &decisions, token_uses: &token_uses, baseline: &baseline, now_ns })?;

    let mut in_force = hub.store.blocks_in_force(org.id, now_ns).await?;
    let recent = hub.store.findings_since(org.id, since).await?;
    let mut pass = Vec::new();
    for f in findings {
        let wanted = wanted_block(&f.subject, f.severity.block_kind());
        let message = finding_message(&f, &evidence);
        let window_start = now_ns.saturating_sub(settings.rule(f.rule).window_ns());
        if is_repeat(&message, wanted, window_start, &recent, &in_force) {
            continue;
        }
        let covered = wanted.is_some_and(|kind| in_force.iter().any(|b| same_subject(b, &message) && kind_of(&b.kind) >= Some(kind)));
        let block_kind = wanted.filter(|_| !covered);
        let new = NewFinding {
            finding: message,
            block_kind: block_kind.map(|k| kind_name(k).to_string()),
            block_secs: block_kind.map(|k| settings.block_secs(k)).unwrap_or(0),
        };
        let prepared = new.prepare(now_ns)?;
        if let Some(b) = &prepared.block {
            // A later finding of this pass on the same subject is covered by it.
            in_force.push(b.clone());
        }
        pass.push(prepared);
    }
    hub.store.insert_findings(org.id, &pass).await?;
    for PreparedFinding { finding: stored, block: placed } in pass {
        tracing::info!(org = %org.name, finding = %stored.id, rule = %stored.rule, severity = %stored.severity, subject = %format!("{} {}", stored.subject_kind, stored.subject), "security finding: {}", stored.summary);
        if let Some(b) = placed {
            tracing::warn!(org = %org.name, block = %b.id, kind = %b.kind, subject = %format!("{} {}", b.subject_kind, b.subject), expires = %crate::rfc3339(b.expires_unix_nanos), "security block placed");
            report.blocks.push(b);
        }
        report.findings.push(stored);
    }
    baseline.record(&settings, &decisions, now_ns);
    match serde_json::to_string(&baseline) {
        Ok(json) => hub.store.save_security_baseline(org.id, &json, now_ns).await?,
        Err(e) => tracing::warn!(org = %org.name, "encode the request-rate baseline: {e}"),
    }
    if !report.blocks.is_empty() {
        hub.security_blocks_changed();
    }
    Ok(report)
}

/// The decisions with a time in `(since, now]`, newest first, at most
/// [`MAX_DECISIONS_PER_RUN`]. Each decision's id becomes its store cursor
/// (ids are per host, cursors are unique); the map gives back each cursor's
/// own id and host for the evidence.
async fn window_decisions(hub: &Hub, org_id: i64, since: i64, now_ns: i64) -> Result<(Vec<Decision>, HashMap<u64, (u64, String)>, bool), StoreError> {
    let filter = DecisionFilter { since_unix_nanos: since.saturating_add(1), until_unix_nanos: now_ns.saturating_add(1), ..Default::default() };
    let mut q = FleetQuery { filter, limit: PAGE, ..Default::default() };
    let mut decisions = Vec::new();
    let mut evidence = HashMap::new();
    loop {
        let page = hub.store.query_decisions(org_id, &q).await?;
        let Some(last) = page.last() else { break };
        q.before_cursor = last.cursor;
        let full = page.len() == PAGE as usize;
        for row in page {
            if decisions.len() == MAX_DECISIONS_PER_RUN {
                return Ok((decisions, evidence, true));
            }
            let mut d = row.decision()?;
            let cursor = row.cursor as u64;
            evidence.insert(cursor, (d.id, row.host_id));
            d.id = cursor;
            decisions.push(d);
        }
        if !full {
            break;
        }
    }
    Ok((decisions, evidence, false))
}

/// The block a finding calls for: only users and sessions are blocked
/// (an agent cannot stop an API token; the token's admin revokes it).
fn wanted_block(subject: &Subject, kind: Option<BlockKind>) -> Option<BlockKind> {
    match subject {
        Subject::User(_) | Subject::Session(_) => kind,
        Subject::Token(_) => None,
    }
}

fn kind_name(kind: BlockKind) -> &'static str {
    match kind {
        BlockKind::Soft => "soft",
        BlockKind::Hard => "hard",
    }
}

fn kind_of(name: &str) -> Option<BlockKind> {
    match name {
        "soft" => Some(BlockKind::Soft),
        "hard" => Some(BlockKind::Hard),
        _ => None,
    }
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "low" => 0,
        "medium" => 1,
        "high" => 2,
        _ => 3,
    }
}

fn same_subject(b: &SecurityBlock, f: &SecurityFinding) -> bool {
    b.subject_kind == f.subject_kind && b.subject == f.subject
}

/// Whether the finding repeats one already stored (see the module doc).
fn is_repeat(f: &SecurityFinding, wanted: Option<BlockKind>, window_start: i64, recent: &[SecurityFinding], in_force: &[SecurityBlock]) -> bool {
    let young_twin = recent.iter().any(|r| {
        r.rule == f.rule && r.subject_kind == f.subject_kind && r.subject == f.subject && r.created_unix_nanos > window_start && severity_rank(&r.severity) >= severity_rank(&f.severity)
    });
    let blocked = in_force.iter().any(|b| b.rule == f.rule && same_subject(b, f) && kind_of(&b.kind) >= wanted);
    young_twin || blocked
}
