//! The text an AI agent reads for each answer: what holds, why, and what it
//! may do next. The same answers also go out as structured JSON, as the
//! daemon gave them.

use std::fmt::Write;

use airlock_api::v1 as pb;

use crate::approvals::{APPROVED, CANCELLED, EXPIRED, PENDING, REJECTED};
use crate::protocol::{CommandCheck, Explanation, SessionSelf};

/// Said with a verdict that comes without the daemon's own note: it is a prediction.
const PREDICTION: &str = "This is a prediction from the policy tables. The kernel decides again when the command is run, \
and its checks made only at exec time (the identity and content of the file that actually runs, a script's interpreter) can still decide otherwise.";

pub fn status_text(s: &SessionSelf) -> String {
    let i = &s.session;
    let mut t = String::new();
    let _ = writeln!(t, "Airlock governs this process: session {}, role {}.", i.id, i.role);
    let _ = writeln!(t, "user: {} (uid {}); agent: {}; started {}; state {}", i.user, i.uid, i.agent(), i.started_at, state_name(i.state));
    let _ = writeln!(t, "enforcement: the {} backend in the kernel of host {}; policy version {}", s.backend, s.host, s.policy_version);
    if s.gateway.is_empty() {
        let _ = writeln!(t, "gateway: none (this host decides alone)");
    } else {
        let _ = writeln!(t, "gateway: {} ({})", s.gateway, if s.gateway_connected { "connected" } else { "not connected now" });
    }
    if s.pending_approvals.is_empty() {
        let _ = write!(t, "pending approval requests: none");
    } else {
        let _ = write!(t, "pending approval requests: {} (approval_status follows one)", s.pending_approvals.join(", "));
    }
    t
}

fn state_name(state: crate::sessions::SessionState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{state:?}"))
}

pub fn explanation_text(e: &Explanation) -> String {
    let d = &e.decision;
    let mut t = String::new();
    let _ = writeln!(t, "{}", e.summary);
    let what = if d.argv.is_empty() { d.executable.clone() } else { d.argv.join(" ") };
    let _ = writeln!(t, "decision {}: {} {} ({}), at {}", d.id, d.kind, d.decision, d.reason, d.time);
    if !what.is_empty() {
        let _ = writeln!(t, "command: {what}");
    }
    let _ = writeln!(t, "rule: {}", d.rule.as_deref().unwrap_or("(none)"));
    let _ = writeln!(t, "policy: {}", d.policy.as_deref().unwrap_or("(none)"));
    if let Some(r) = &e.approval {
        let _ = writeln!(t, "approval request: {} ({})", r.id, r.state);
    }
    let _ = write!(t, "next step: {}", e.next_step);
    t
}

pub fn policy_text(p: &pb::EffectivePolicy) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "What this session may not run or reach, as the kernel enforces it now (role {}, policy version {}).", p.role, p.policy_version);
    let _ = writeln!(t, "policies: {}", if p.policies.is_empty() { "(none)".to_string() } else { p.policies.join(", ") });
    let rules = |t: &mut String, title: &str, list: &[pb::ExecRule]| {
        let _ = writeln!(t, "{title} ({}):", list.len());
        for r in list {
            let _ = writeln!(t, "  {} [{}]", r.command.join(" "), r.policy);
        }
    };
    rules(&mut t, "blocked commands, whatever arguments follow", &p.blocked_commands);
    rules(&mut t, "commands that need a person's approval (request_approval)", &p.approval_commands);
    let ports = |ports: &[u32]| if ports.is_empty() { "any port".to_string() } else { format!("port {}", ports.iter().map(u32::to_string).collect::<Vec<_>>().join(",")) };
    let denied_hosts: Vec<&pb::HostnameRule> = p.hostname_rules.iter().filter(|h| !h.allow).collect();
    let _ = writeln!(t, "denied egress ({}):", p.denied_egress.len() + denied_hosts.len());
    for r in &p.denied_egress {
        let _ = writeln!(t, "  {} {} [{}]", r.destination, ports(&r.ports), r.policy);
    }
    for h in &denied_hosts {
        let _ = writeln!(t, "  {} {} [{}]", h.host, ports(&h.ports), h.policy);
    }
    if p.egress_default == "deny" {
        let allowed: Vec<String> = p
            .allowed_egress
            .iter()
            .map(|r| format!("{} {}", r.destination, ports(&r.ports)))
            .chain(p.hostname_rules.iter().filter(|h| h.allow).map(|h| format!("{} {}", h.host, ports(&h.ports))))
            .collect();
        let _ = writeln!(t, "egress default: deny; only these are reachable: {}", if allowed.is_empty() { "(nothing)".to_string() } else { allowed.join(", ") });
    } else {
        let _ = writeln!(t, "egress default: allow (what no rule denies is reachable)");
    }
    let _ = writeln!(t, "Unix sockets refused ({}):", p.unix_socket_rules.len());
    for u in &p.unix_socket_rules {
        let _ = writeln!(t, "  {}{} [{}]", u.path, if u.prefix { "*" } else { "" }, u.policy);
    }
    let _ = writeln!(t, "protected files ({}):", p.protected_files.len());
    for f in &p.protected_files {
        let by = if f.allowed_programs.is_empty() { "no program".to_string() } else { f.allowed_programs.join(", ") };
        let _ = writeln!(t, "  {} (opened only by {by}) [{}]", f.path, f.policy);
    }
    let _ = writeln!(t, "fileless execution (memfd, deleted files): {}", if p.fileless_exec_allowed { "allowed" } else { "denied" });
    let _ = writeln!(t, "the dynamic loader run directly: {}", if p.direct_loader_allowed { "allowed" } else { "denied" });
    let _ = writeln!(t, "files the session wrote, executed: {}", if p.session_written_exec_denied { "denied" } else { "allowed" });
    let _ = write!(t, "raw IP and packet sockets: {}", if p.raw_sockets == "allow" { "allowed" } else { "denied" });
    t
}

pub fn check_text(argv: &[String], c: &CommandCheck) -> String {
    let command = argv.join(" ");
    let by = match (&c.rule, &c.policy) {
        (Some(rule), Some(policy)) => format!("rule \"{rule}\" of policy {policy}"),
        (Some(rule), None) => format!("rule \"{rule}\""),
        _ => "a rule".to_string(),
    };
    let mut t = String::new();
    let _ = match c.verdict.as_str() {
        "allowed" => writeln!(t, "allowed: `{command}` would run; no rule of this session's policy holds it."),
        "blocked" => writeln!(t, "blocked: `{command}` would be refused by {by}. Do not run it, and do not try another way to get its effect."),
        "needs_approval" => match &c.approval_request {
            Some(id) => writeln!(t, "needs_approval: {by} holds `{command}` until a person approves it. Request {id} is already pending: follow it with approval_status."),
            None => writeln!(t, "needs_approval: {by} holds `{command}` until a person approves it. Ask with request_approval (with a justification), wait with approval_status, then run exactly the same command."),
        },
        other => writeln!(t, "{other}: `{command}` ({by})"),
    };
    if let Some(how) = &c.matched_by {
        let _ = writeln!(t, "matched by: {how}");
    }
    let _ = writeln!(t, "program: {}", if c.program.is_empty() { "(not found in PATH)" } else { &c.program });
    // The daemon's note says what it could not judge; without one, say it anyway.
    let _ = write!(t, "note: {}", if c.note.is_empty() { PREDICTION } else { &c.note });
    t
}

/// An approval request as it stands; `opened` for the answer to request_approval.
pub fn approval_text(r: &pb::ApprovalRequest, opened: bool) -> String {
    let time = |ns: i64| crate::clock::rfc3339_from_unix_nanos(ns.into());
    let command = r.argv.join(" ");
    let mut t = String::new();
    let _ = writeln!(t, "approval request {}: {}", r.id, r.state);
    let _ = writeln!(t, "command: {command}");
    let _ = writeln!(t, "rule: {} [{}]", r.rule, r.policy);
    if let Some(v) = &r.verdict {
        let reason = if v.reason.is_empty() { String::new() } else { format!(": {}", v.reason) };
        let _ = writeln!(t, "decided by {} at {}{reason}", v.decided_by, time(v.decided_unix_nanos));
    }
    let _ = write!(t, "next step: {}", approval_next_step(r, opened));
    t
}

/// What the agent may do about an approval request now.
pub fn approval_next_step(r: &pb::ApprovalRequest, opened: bool) -> String {
    let time = |ns: i64| crate::clock::rfc3339_from_unix_nanos(ns.into());
    let command = r.argv.join(" ");
    match r.state.as_str() {
        PENDING if opened => format!(
            "A person must approve it; you cannot. Tell the user that approval request {} is waiting (expires {}). \
             Wait for the decision with approval_status (id {}, wait_seconds up to 300). Once it is approved, run exactly `{command}` again, unchanged, once.",
            r.id,
            time(r.expires_unix_nanos),
            r.id
        ),
        PENDING => format!("Still waiting for a person (expires {}). Ask again with approval_status; do not run the command yet.", time(r.expires_unix_nanos)),
        APPROVED => match r.verdict.as_ref().map(|v| v.grant.as_str()) {
            Some("for") => format!("Approved: commands of rule \"{}\" may run in this session until {}.", r.rule, r.verdict.as_ref().map(|v| time(v.grant_expires_unix_nanos)).unwrap_or_default()),
            _ => format!("Approved once: run exactly `{command}` now, unchanged. The grant serves one run; running it again needs a new approval."),
        },
        REJECTED => "Rejected: do not run this command, nor anything to the same effect.".to_string(),
        EXPIRED => "Expired without a decision (a rejection): do not run it. Ask again only if the user wants you to.".to_string(),
        CANCELLED => "Cancelled (the session that asked ended): do not run it.".to_string(),
        other => format!("State {other}: do not run the command unless it is approved."),
    }
}

/// Why a question could not be answered, said so the agent knows what it means.
pub fn unavailable(e: &anyhow::Error) -> String {
    let unreachable = e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::PermissionDenied)
    }));
    let text = format!("{e:#}");
    if unreachable {
        format!("unreachable: {text}. Airlock's answers are unavailable here; its enforcement, if it runs, still holds.")
    } else if text.contains("not in a governed session") {
        format!("this process is not governed by Airlock: {text}. Start the AI agent with `airlock-agent launch -- AGENT` so that the bridge runs inside its session.")
    } else {
        format!("the Airlock daemon could not answer: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(verdict: &str, note: &str) -> CommandCheck {
        CommandCheck {
            verdict: verdict.into(),
            rule: Some("terraform apply".into()),
            policy: Some("infra".into()),
            matched_by: Some("executable".into()),
            program: "/usr/bin/terraform".into(),
            approval_request: None,
            note: note.into(),
        }
    }

    #[test]
    fn every_verdict_says_it_is_a_prediction_and_what_to_do() {
        let argv = vec!["terraform".to_string(), "apply".to_string()];
        let t = check_text(&argv, &check("needs_approval", "exec identity is checked at exec"));
        assert!(t.starts_with("needs_approval: rule \"terraform apply\" of policy infra"), "{t}");
        assert!(t.contains("request_approval") && t.ends_with("note: exec identity is checked at exec"), "{t}");
        assert!(check_text(&argv, &check("blocked", "")).contains("Do not run it"));
        assert!(check_text(&argv, &check("allowed", "")).contains("only at exec time"));
    }

    #[test]
    fn an_unreachable_daemon_is_named() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound)).context("not answering on /x");
        assert!(unavailable(&e).starts_with("unreachable: not answering on /x"));
        let e = anyhow::anyhow!("process 7 is not in a governed session: these questions are about the caller's own session");
        assert!(unavailable(&e).contains("airlock-agent launch"));
    }
}
