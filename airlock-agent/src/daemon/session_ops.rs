//! What a governed process may ask the daemon about its own session, over
//! the launch socket: the session is the kernel's tag of the calling process
//! (SO_PEERCRED), never something the caller names, so a process learns
//! about its own session and no other. Nothing here approves, lifts,
//! reloads or revokes.

use airlock_api::decision::DENY;
use airlock_api::v1 as pb;
use airlock_policy::matcher::{Decision as Match, DenyReason, ExecInput, MatchVia, TableMatcher};
use anyhow::{bail, Context, Result};

use super::agent::{lock, Agent, Peer};
use crate::approvals::binding::{find_program, grant_binding};
use crate::approvals::{HeldExec, Opened, PENDING};
use crate::protocol::{CommandCheck, Explanation, Request, Response, SessionSelf};
use crate::sessions::{format_session_id, SessionInfo};

/// Bounds on what a caller may send (the socket is open to every user).
const MAX_WORDS: usize = 256;
const MAX_ARGV_BYTES: usize = 64 * 1024;
const MAX_JUSTIFICATION: usize = 4096;
/// How long an explanation waits for the store to have a decision already
/// made. Short: the control socket serves one request at a time, launches too.
const STORE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

const EXEC_TIME_NOTE: &str = "This is the verdict of the compiled policy on the command's name and arguments. \
     Checks the kernel makes only at exec time can still differ: a file whose content is a protected program \
     under another name, a fileless or loader exec, and an argv longer than the kernel inspects.";

impl Agent {
    pub(super) fn session_request(&self, peer: &Peer, request: Request) -> Result<Response> {
        let Some(tag) = self.kernel.maps().tag_of(peer.pid) else {
            bail!("process {} is not in a governed session: these questions are about the caller's own session", peer.pid);
        };
        let session = lock(&self.sessions).get(tag.session_id).cloned().context("the caller's session is not known to this daemon")?;
        match request {
            Request::SessionSelf => Ok(Response::SessionSelf(Box::new(self.session_self(tag.session_id, session)))),
            Request::ExplainDecision { decision_id } => Ok(Response::Explained(Box::new(self.explain(&session, decision_id)?))),
            Request::EffectivePolicySelf => {
                let store = lock(&self.policy);
                let current = store.current().context("no policy is in force")?;
                let policy = crate::policy::effective::effective_policy(current, store.generation(), &session.role, &store.host_status())?;
                Ok(Response::EffectivePolicy(Box::new(policy)))
            }
            Request::CheckCommand { argv, cwd, path } => {
                check_argv(&argv)?;
                Ok(Response::Checked(Box::new(self.check_command(peer.pid, &session, tag.session_id, &argv, &cwd, &path))))
            }
            Request::RequestApproval { argv, cwd, path, justification } => {
                check_argv(&argv)?;
                if justification.len() > MAX_JUSTIFICATION {
                    bail!("justification: {} bytes, at most {MAX_JUSTIFICATION}", justification.len());
                }
                let request = self.request_approval(peer.pid, &session, tag.session_id, &argv, &cwd, &path, &justification)?;
                Ok(Response::Approval(Box::new(request)))
            }
            Request::ApprovalStatus { id } => {
                let request = self.approval(&id).filter(|r| r.session_id == session.id);
                // Another session's request is not found, whether or not it exists.
                let request = request.with_context(|| format!("no approval request {id} in session {}", session.id))?;
                Ok(Response::Approval(Box::new(request)))
            }
            _ => bail!("not a question about the caller's own session"),
        }
    }

    fn session_self(&self, numeric: u64, session: SessionInfo) -> SessionSelf {
        let pending = lock(&self.approvals).list(PENDING, &format_session_id(numeric), 1000).into_iter().map(|r| r.id).collect();
        let gateway = self.gateway.as_ref().map(|g| g.state.status(&g.spool.stats(), 0));
        SessionSelf {
            session,
            backend: self.kernel.backend().to_string(),
            host: crate::events::enrich::host_name(),
            policy_version: lock(&self.policy).current().map(|c| c.version.clone()).unwrap_or_default(),
            gateway: gateway.as_ref().map(|g| g.url.clone()).unwrap_or_default(),
            gateway_connected: gateway.is_some_and(|g| g.connected),
            pending_approvals: pending,
        }
    }

    fn explain(&self, session: &SessionInfo, decision_id: Option<u64>) -> Result<Explanation> {
        let filter = pb::DecisionFilter {
            session_id: session.id.clone(),
            decision: if decision_id.is_none() { pb::Verdict::Deny as i32 } else { 0 },
            ..Default::default()
        };
        // The denial a session just got is asked about at once, often before
        // the store has it. Taken out of the lock before any store query: the
        // event thread takes it after every denial.
        let last = lock(&self.last_denials).get(&session.id).cloned();
        let decision = match (decision_id, last) {
            (None, Some(d)) => d,
            (Some(id), Some(d)) if d.id == id => d,
            (Some(id), _) => {
                if id < lock(&self.pipeline).next_id() {
                    self.store.wait_written(id, STORE_CATCH_UP);
                }
                let (page, _) = self.store.query(&filter, id.saturating_add(1), 1)?;
                page.into_iter().find(|d| d.id == id).with_context(|| format!("no decision {id} in session {}", session.id))?
            }
            (None, None) => self.store.query(&filter, 0, 1)?.0.into_iter().next().with_context(|| format!("session {} has no denial", session.id))?,
        };
        let approval = match &decision.detail {
            Some(pb::decision::Detail::Exec(e)) => e.approval_request.as_deref().and_then(|id| self.approval(id)),
            _ => None,
        };
        let (summary, next_step) = explain_text(&decision, approval.as_ref());
        Ok(Explanation { decision, summary, next_step, approval })
    }

    fn check_command(&self, pid: u32, session: &SessionInfo, numeric: u64, argv: &[String], cwd: &str, path: &str) -> CommandCheck {
        let program = find_program(pid, &argv[0], cwd, path);
        let (verdict, rule_id, via) = self.judge(session, program.as_ref().map(|p| p.filename.as_str()), argv);
        let (rule, policy) = self.rule_text(rule_id);
        let approval_request = match (&program, verdict) {
            (Some(p), "needs_approval") => {
                let (argv_hash, exe_identity) = grant_binding(argv, p);
                lock(&self.approvals).pending_for(numeric, argv_hash, exe_identity)
            }
            _ => None,
        };
        CommandCheck {
            verdict: verdict.to_string(),
            rule,
            policy,
            matched_by: via.map(|v| via_name(v).to_string()),
            program: program.map(|p| p.filename).unwrap_or_default(),
            approval_request,
            note: EXEC_TIME_NOTE.to_string(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_approval(&self, pid: u32, session: &SessionInfo, numeric: u64, argv: &[String], cwd: &str, path: &str, justification: &str) -> Result<pb::ApprovalRequest> {
        let program = find_program(pid, &argv[0], cwd, path).with_context(|| format!("{:?} is not a program this session can run (PATH and cwd searched)", argv[0]))?;
        let (verdict, rule_id, _) = self.judge(session, Some(&program.filename), argv);
        let (rule, policy) = self.rule_text(rule_id);
        match verdict {
            "needs_approval" => {}
            "blocked" => bail!("{} is blocked by rule {:?}: no approval can let it run", self.masking.mask_text(&argv.join(" ")), rule.unwrap_or_default()),
            _ => bail!("{} needs no approval: the policy allows it", self.masking.mask_text(&argv.join(" "))),
        }
        let (argv_hash, exe_identity) = grant_binding(argv, &program);
        let mut argv_shown = argv.to_vec();
        self.masking.mask_argv(&mut argv_shown);
        let carrier = pb::Decision {
            host: crate::events::enrich::host_name(),
            session_id: session.id.clone(),
            role: session.role.clone(),
            agent: session.agent(),
            uid: session.uid,
            user: session.user.clone(),
            argv: argv_shown,
            cwd: cwd.to_string(),
            executable: program.filename.clone(),
            policy,
            rule,
            ..Default::default()
        };
        let held = HeldExec { decision: &carrier, session: numeric, rule_id, argv_hash, exe_identity };
        let opened = lock(&self.approvals).open(held, crate::clock::now_unix_nanos());
        match opened {
            Opened::New(r) => {
                let request = lock(&self.approvals).set_justification(&r.id, justification).unwrap_or(r);
                self.approval_opened(&Opened::New(request.clone()), &carrier);
                Ok(request)
            }
            Opened::Reused(r) => Ok(r),
            Opened::Flood { pending } => {
                self.approval_opened(&opened, &carrier);
                bail!("this session already has {pending} approval requests pending: wait until they are decided")
            }
        }
    }

    /// The compiled policy's verdict on a command: ("allowed" | "blocked" | "needs_approval", rule id, how it matched).
    fn judge(&self, session: &SessionInfo, filename: Option<&str>, argv: &[String]) -> (&'static str, u32, Option<MatchVia>) {
        let store = lock(&self.policy);
        let Some(current) = store.current() else {
            return ("blocked", 0, None);
        };
        let Some(role) = current.role(&session.role) else {
            return ("blocked", 0, None);
        };
        let name = filename.unwrap_or(&argv[0]);
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let input = ExecInput::new(name.rsplit('/').next().unwrap_or(name), &words);
        let matcher = TableMatcher::new(current);
        let judged = |set_id: u32| {
            if set_id == 0 {
                Match::Allow
            } else {
                matcher.match_exec(set_id, &input)
            }
        };
        if let Match::Deny { rule_id, via, .. } = judged(role.set_id) {
            return ("blocked", rule_id, Some(via));
        }
        match judged(role.approval_set_id) {
            Match::Deny { rule_id, reason: DenyReason::Rule, via } => ("needs_approval", rule_id, Some(via)),
            Match::Deny { via, .. } => ("blocked", 0, Some(via)),
            Match::Allow => ("allowed", 0, None),
        }
    }

    fn rule_text(&self, rule_id: u32) -> (Option<String>, Option<String>) {
        if rule_id == 0 {
            return (None, None);
        }
        let store = lock(&self.policy);
        match store.current().and_then(|c| c.rule(rule_id)) {
            Some(r) => (Some(r.kind.text().to_string()), Some(r.policy_id.clone())),
            None => (None, None),
        }
    }
}

fn check_argv(argv: &[String]) -> Result<()> {
    if argv.is_empty() || argv[0].is_empty() {
        bail!("argv: empty; give the command as its words, program first");
    }
    if argv.len() > MAX_WORDS {
        bail!("argv: {} words, at most {MAX_WORDS}", argv.len());
    }
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    if bytes > MAX_ARGV_BYTES {
        bail!("argv: {bytes} bytes, at most {MAX_ARGV_BYTES}");
    }
    Ok(())
}

fn via_name(via: MatchVia) -> &'static str {
    match via {
        MatchVia::Executable => "executable",
        MatchVia::Argv0 => "argv0",
        MatchVia::Script => "script",
    }
}

/// One sentence of what happened, and what the agent may do next.
fn explain_text(d: &pb::Decision, approval: Option<&pb::ApprovalRequest>) -> (String, String) {
    let what = if d.argv.is_empty() { d.executable.clone() } else { d.argv.join(" ") };
    let rule = d.rule.clone().unwrap_or_default();
    let policy = d.policy.clone().unwrap_or_default();
    match (d.reason.as_str(), approval) {
        ("approval_required", Some(r)) => {
            let summary = format!("`{what}` is held by approval rule {rule:?} of policy {policy}; request {} is {}.", r.id, r.state);
            let next = match r.state.as_str() {
                PENDING => format!("Wait for a person's decision (approval_status with id {}), then run exactly the same command again, unchanged.", r.id),
                "approved" => "It is approved: run exactly the same command again, unchanged.".to_string(),
                _ => "It was not approved: do not run it, and do not try another way. Tell the user.".to_string(),
            };
            (summary, next)
        }
        ("approval_required", None) => (
            format!("`{what}` is held by approval rule {rule:?} of policy {policy}; no request was opened (too many are pending)."),
            "Wait until the session's pending requests are decided; then run the command again to open a request, or use request_approval.".to_string(),
        ),
        ("rate_limited", _) => (
            format!("`{what}` was refused: the session reached its rate limit {rule:?} of policy {policy}."),
            "Do not retry in a loop or look for another way: tell the user. The limit refills with time; run it again later only if the task still needs it.".to_string(),
        ),
        ("outside_time_window", _) => (
            format!("`{what}` was refused: it may run only inside the time window {rule:?} of policy {policy}, which is closed now."),
            "Do not retry or look for another way: tell the user that the command is allowed only inside its time window.".to_string(),
        ),
        _ if d.decision == DENY => (
            format!("`{what}` was denied ({}){}.", d.reason, if rule.is_empty() { String::new() } else { format!(" by rule {rule:?} of policy {policy}") }),
            "Do not retry it or look for another way to do it: the policy forbids it. Tell the user; only a change of policy can allow it.".to_string(),
        ),
        _ => (format!("`{what}` was {} ({}).", d.decision, d.reason), "Nothing: it was not denied.".to_string()),
    }
}
