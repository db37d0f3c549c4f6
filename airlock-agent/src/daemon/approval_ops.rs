//! The daemon's side of approvals: held execs become requests, verdicts
//! become kernel grants, and every step is a decision in the audit trail (and
//! so in the store and at the gateway).

use airlock_api::decision::{ALLOW, APPROVAL, DENY};
use airlock_api::v1 as pb;
use airlock_api::v1::decision::Detail;
use airlock_common::abi;

use super::agent::{lock, Agent};
use crate::approvals::{format_request_id, ApprovalError, Clocks, Decider, HeldExec, Opened, Verdict};
use crate::events::decode::KernelEvent;

impl Agent {
    /// An exec event the approvals care about: held for approval (opens or
    /// reuses a request, and names it in the decision) or let through by a
    /// grant. Returns the request for the block message.
    pub(super) fn approval_step(&self, event: &KernelEvent, decision: &mut pb::Decision) -> Option<Opened> {
        let KernelEvent::Exec(e) = event else {
            return None;
        };
        let hdr = e.hdr;
        if hdr.decision == abi::DENY && hdr.reason == abi::REASON_APPROVAL_REQUIRED {
            let held = HeldExec { decision, session: hdr.session_id, rule_id: hdr.rule_id, argv_hash: e.argv_hash, exe_identity: e.exe_identity };
            let opened = lock(&self.approvals).open(held, crate::clock::now_unix_nanos());
            if let Opened::New(r) | Opened::Reused(r) = &opened {
                set_request(decision, &r.id);
            }
            return Some(opened);
        }
        if hdr.decision == abi::ALLOW && hdr.flags & abi::FLAG_GRANTED != 0 && e.grant_request != 0 {
            set_request(decision, &format_request_id(e.grant_request));
            if let Some(request) = lock(&self.approvals).grant_used(e.grant_request) {
                self.record_approval("grant_used", &request, "");
            }
        }
        None
    }

    /// After the held exec's decision is recorded: the request's own record.
    pub(super) fn approval_opened(&self, opened: &Opened, decision: &pb::Decision) {
        match opened {
            Opened::New(request) => {
                let request = lock(&self.approvals).link_decision(&request.id, decision.id).unwrap_or_else(|| request.clone());
                tracing::info!(request = %request.id, session = %request.session_id, command = %request.argv.join(" "), "approval requested");
                self.record_approval("requested", &request, "");
                self.notify_approval(airlock_notify::approval::REQUESTED, &request);
            }
            Opened::Reused(_) => {}
            Opened::Flood { pending } => {
                tracing::warn!(session = %decision.session_id, pending, "approval request refused: the session has too many pending");
                let request = pb::ApprovalRequest {
                    session_id: decision.session_id.clone(),
                    host: decision.host.clone(),
                    uid: decision.uid,
                    user: decision.user.clone(),
                    role: decision.role.clone(),
                    argv: decision.argv.clone(),
                    cwd: decision.cwd.clone(),
                    executable: decision.executable.clone(),
                    policy: decision.policy.clone().unwrap_or_default(),
                    rule: decision.rule.clone().unwrap_or_default(),
                    decision_id: decision.id,
                    ..Default::default()
                };
                self.record_approval("refused_flood", &request, "");
            }
        }
    }

    /// Approves or rejects a pending request. A process inside any governed
    /// session is refused (and the attempt audited): a session never approves
    /// its own request, nor does its user from another session.
    pub fn decide_approval(&self, id: &str, verdict: Verdict, decider: Decider) -> Result<pb::ApprovalRequest, ApprovalError> {
        if let Decider::Process { pid, label } = &decider {
            if let Some(tag) = self.kernel.maps().tag_of(*pid) {
                let session = crate::sessions::format_session_id(tag.session_id);
                let why = format!("{label} runs inside governed session {session}: a governed process cannot decide approval requests");
                let request = lock(&self.approvals).get(id).unwrap_or_else(|| pb::ApprovalRequest { id: id.to_string(), ..Default::default() });
                tracing::warn!(request = %id, caller = %label, "approval decision refused: {why}");
                self.record_approval("refused_caller", &request, label);
                return Err(ApprovalError::Refused(why));
            }
        }
        // Expiry and ended sessions first, so that they are recorded as such.
        self.approvals_tick();
        let verdict = Verdict { decided_by: decider.label().to_string(), ..verdict };
        let session = lock(&self.approvals).session_of(id);
        let active = session.is_some_and(|s| lock(&self.sessions).get(s).is_some_and(|info| info.state.is_active()));
        let request = lock(&self.approvals).decide(id, &verdict, active, Clocks::now(), self.kernel.maps())?;
        let event = if verdict.approve { "approved" } else { "rejected" };
        tracing::info!(request = %id, by = %verdict.decided_by, event, "approval decided");
        self.record_approval(event, &request, "");
        self.notify_approval(airlock_notify::approval::DECIDED, &request);
        Ok(request)
    }

    /// The watcher's tick: expiry, ended sessions, lapsed grants.
    pub(super) fn approvals_tick(&self) {
        let active: std::collections::HashSet<u64> = {
            let sessions = lock(&self.sessions);
            sessions.list().iter().filter(|s| s.state.is_active()).filter_map(|s| u64::from_str_radix(&s.id, 16).ok()).collect()
        };
        let changed = lock(&self.approvals).tick(Clocks::now(), |s| active.contains(&s), self.kernel.maps());
        for (event, request) in changed {
            tracing::info!(request = %request.id, event, "approval request ended");
            self.record_approval(event, &request, "");
            self.notify_approval(airlock_notify::approval::DECIDED, &request);
        }
    }

    /// After a reload: grants for a while follow their rule's new id.
    pub(super) fn approvals_follow_policy(&self) {
        let ids: std::collections::HashMap<(String, String), u32> = {
            let policy = lock(&self.policy);
            let Some(current) = policy.current() else {
                return;
            };
            current.roles.iter().flat_map(|(role, r)| r.approvals.iter().map(move |a| ((role.clone(), a.text.clone()), a.rule_id))).collect()
        };
        lock(&self.approvals).rekey(|role, text| ids.get(&(role.to_string(), text.to_string())).copied(), self.kernel.maps());
    }

    pub fn approvals_list(&self, state: &str, session: &str, limit: usize) -> Vec<pb::ApprovalRequest> {
        lock(&self.approvals).list(state, session, limit)
    }

    pub fn approval(&self, id: &str) -> Option<pb::ApprovalRequest> {
        lock(&self.approvals).get(id)
    }

    /// One approval step as a decision of kind `approval`.
    fn record_approval(&self, event: &str, request: &pb::ApprovalRequest, caller: &str) {
        let now = crate::clock::now_unix_nanos();
        let verdict = match event {
            "approved" | "grant_used" => ALLOW,
            "requested" => "",
            _ => DENY,
        };
        self.record(pb::Decision {
            time: crate::clock::rfc3339_from_unix_nanos(now.into()),
            time_unix_nanos: now,
            host: crate::events::enrich::host_name(),
            kind: APPROVAL.to_string(),
            decision: verdict.to_string(),
            reason: event.to_string(),
            session_id: request.session_id.clone(),
            role: request.role.clone(),
            agent: request.agent.clone(),
            uid: request.uid,
            user: request.user.clone(),
            executable: request.executable.clone(),
            argv: request.argv.clone(),
            cwd: request.cwd.clone(),
            policy: Some(request.policy.clone()).filter(|p| !p.is_empty()),
            rule: Some(request.rule.clone()).filter(|r| !r.is_empty()),
            backend: self.kernel.backend().to_string(),
            policy_generation: lock(&self.policy).generation(),
            detail: Some(Detail::Approval(pb::ApprovalEvent {
                event: event.to_string(),
                request_id: request.id.clone(),
                request: Some(request.clone()),
                caller: caller.to_string(),
            })),
            ..Default::default()
        });
    }

    /// Never waits: the notifier queues, delivers off this thread, and counts failures.
    fn notify_approval(&self, event: &str, request: &pb::ApprovalRequest) {
        if self.notifier.is_enabled() {
            self.notifier.send(airlock_notify::approval::approval_notification(event, request, ""));
        }
    }
}

fn set_request(decision: &mut pb::Decision, id: &str) {
    if let Some(Detail::Exec(exec)) = decision.detail.as_mut() {
        exec.approval_request = Some(id.to_string());
    }
}
