//! Approval requests as the gateway follows them. The agent opens and
//! decides them on its host and ships every step as an `approval` decision
//! (merged into the store by the group commit); a verdict given here travels
//! to the host as a `decide_approval` command, whose answer (or failure) is
//! recorded here. [`announce`] is the one place that learns that a request
//! appeared, was decided, or that a verdict could not be delivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use airlock_notify::approval::{approval_notification, DECIDED, REQUESTED};
use airlock_notify::{Notifier, NotifyConfig};
use anyhow::Context;

use airlock_api::gateway::v1::{ApprovalAttempt as AttemptMessage, ApprovalCommand, CommandResult, FleetApproval};
use airlock_gateway_store::{Approval, ApprovalAttempt, ApprovalChange, GatewayStore, APPROVAL_PENDING, DELIVERY_FAILED_PREFIX};
use prost::Message;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalNews {
    /// A host opened it: someone may want to decide it.
    Opened,
    /// A verdict was given through the gateway and is on its way to the host.
    DecidedAtGateway,
    /// Its host reports it decided, expired or cancelled.
    Closed,
    /// A verdict given here did not reach the host, or the host refused it.
    DeliveryFailed,
}

/// Each org's notifier (webhooks, email), from `[notify.ORG]` in gateway.toml.
#[derive(Clone, Default)]
pub struct Notifiers(Arc<HashMap<String, Notifier>>);

impl Notifiers {
    pub fn start(configs: &BTreeMap<String, NotifyConfig>) -> anyhow::Result<Notifiers> {
        let mut map = HashMap::new();
        for (org, config) in configs {
            let notifier = Notifier::start(config.clone()).with_context(|| format!("start the approval notifications of org {org:?}"))?;
            map.insert(org.clone(), notifier);
        }
        Ok(Notifiers(Arc::new(map)))
    }

    fn send(&self, org: &str, event: &str, request: &airlock_api::v1::ApprovalRequest) {
        if let Some(notifier) = self.0.get(org) {
            notifier.send(approval_notification(event, request, org));
        }
    }
}

/// Tells of a change to a request: a log line, and the org's approvers are
/// notified of a request opened and of its end (a verdict given here is
/// announced once its host confirms it).
pub fn announce(notifiers: &Notifiers, news: ApprovalNews, approval: &FleetApproval) {
    let request = approval.request.clone().unwrap_or_default();
    let verdict = request.verdict.clone().unwrap_or_default();
    // Before the host confirms a verdict given here, only the audit trail names who gave it.
    let decided_by = match approval.audit.iter().rev().find(|a| a.outcome == "decided") {
        Some(given) if verdict.decided_by.is_empty() => {
            format!("{} ({})", given.caller, given.action)
        }
        _ => verdict.decided_by,
    };
    tracing::info!(
        ?news,
        org = %approval.org,
        request = %request.id,
        host = %request.host,
        session = %request.session_id,
        state = %request.state,
        %decided_by,
        delivery = %approval.delivery,
        command = %request.argv.join(" "),
        "approval request"
    );
    match news {
        ApprovalNews::Opened => notifiers.send(&approval.org, REQUESTED, &request),
        ApprovalNews::Closed => notifiers.send(&approval.org, DECIDED, &request),
        ApprovalNews::DecidedAtGateway | ApprovalNews::DeliveryFailed => {}
    }
}

/// A stored request as the fleet API shows it, with its audit trail.
pub fn fleet_approval(org: &str, a: Approval, audit: Vec<ApprovalAttempt>) -> FleetApproval {
    FleetApproval {
        org: org.to_string(),
        request: Some(a.request),
        delivery: a.delivery,
        audit: audit
            .into_iter()
            .map(|t| AttemptMessage { caller: t.caller, action: t.action, outcome: t.outcome, at_unix_nanos: t.at_ns, reason: t.reason })
            .collect(),
    }
}

/// The news in what a group commit merged: a request opened, or closed.
/// (A pending request's newer record, say one more blocked attempt, is no news.)
pub async fn ingested(store: GatewayStore, notifiers: Notifiers, changes: Vec<ApprovalChange>) {
    let mut orgs: HashMap<i64, String> = HashMap::new();
    for change in changes {
        let news = match (change.approval.state.as_str(), change.event.as_str()) {
            (APPROVAL_PENDING, "requested") => ApprovalNews::Opened,
            (APPROVAL_PENDING, _) => continue,
            _ => ApprovalNews::Closed,
        };
        let org_id = change.approval.org_id;
        let org = match orgs.get(&org_id) {
            Some(name) => name.clone(),
            None => {
                let name = org_name(&store, org_id).await;
                orgs.insert(org_id, name.clone());
                name
            }
        };
        announce(&notifiers, news, &fleet_approval(&org, change.approval, Vec::new()));
    }
}

/// A host's answer to a command: if the command carried a verdict, the
/// request as the host now holds it, or why the host refused the verdict.
pub async fn command_answered(store: &GatewayStore, notifiers: &Notifiers, org: (i64, &str), host_id: &str, result: &CommandResult, now: i64) {
    if result.revoke_session.is_some() {
        return;
    }
    let answer = match (&result.approval, result.error.as_str()) {
        (_, error) if !error.is_empty() => Err(error),
        (Some(request), _) => Ok(request),
        (None, _) => Err("the host answered without the request"),
    };
    match store.approval_command_answered(org.0, host_id, result.id, answer, now).await {
        Ok(Some(answered)) => {
            let failed = answered.approval.delivery.starts_with(DELIVERY_FAILED_PREFIX);
            let closed = answered.merged && answered.approval.state != APPROVAL_PENDING;
            let message = fleet_approval(org.1, answered.approval, Vec::new());
            if failed {
                tracing::warn!(org = %org.1, host = %host_id, command = result.id, "the host refused the verdict: {}", message.delivery);
                announce(notifiers, ApprovalNews::DeliveryFailed, &message);
            } else if closed {
                announce(notifiers, ApprovalNews::Closed, &message);
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(org = %org.1, host = %host_id, command = result.id, "record the host's answer to a verdict: {e}")
        }
    }
}

/// A verdict's command that could not be handed to its host.
pub async fn command_undelivered(store: &GatewayStore, notifiers: &Notifiers, command: &airlock_gateway_store::Command, error: &str, now: i64) {
    let request = ApprovalCommand::decode(command.payload.as_slice()).ok().and_then(|c| c.decide).map(|d| d.id).unwrap_or_default();
    tracing::warn!(org_id = command.org_id, host = %command.host_id, %request, "a verdict did not reach its host: {error}");
    match store.approval_command_answered(command.org_id, &command.host_id, command.id, Err(error), now).await {
        Ok(Some(answered)) => {
            let org = org_name(store, command.org_id).await;
            announce(notifiers, ApprovalNews::DeliveryFailed, &fleet_approval(&org, answered.approval, Vec::new()));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(org_id = command.org_id, host = %command.host_id, %request, "record the failed delivery: {e}")
        }
    }
}

/// The org's name for news about it (its id, if the name cannot be read).
async fn org_name(store: &GatewayStore, org_id: i64) -> String {
    match store.org_by_id(org_id).await {
        Ok(Some(org)) => org.name,
        Ok(None) => org_id.to_string(),
        Err(e) => {
            tracing::warn!(org_id, "approval news: the org's name: {e}");
            org_id.to_string()
        }
    }
}
