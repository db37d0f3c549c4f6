//! The notification of an approval request's step, the same from an agent
//! with no gateway and from the gateway, so receivers see one shape.

use airlock_api::v1::ApprovalRequest;

use crate::Notification;

pub const REQUESTED: &str = "approval.requested";
pub const DECIDED: &str = "approval.decided";

/// `event` is [`REQUESTED`] or [`DECIDED`]; `org` is the gateway's org, empty on a lone agent.
pub fn approval_notification(event: &str, request: &ApprovalRequest, org: &str) -> Notification {
    let command = request.argv.join(" ");
    let subject = match event {
        REQUESTED => format!("Airlock: approval needed for `{command}` on {} ({})", request.host, request.id),
        _ => format!("Airlock: `{command}` on {} was {} ({})", request.host, request.state, request.id),
    };
    let mut text = format!(
        "Approval request {id}: {state}\n\n\
         command:  {command}\n\
         rule:     {rule} (policy {policy})\n\
         host:     {host}{org}\n\
         session:  {session} (role {role}, user {user}, agent {agent})\n\
         cwd:      {cwd}\n",
        id = request.id,
        state = request.state,
        rule = request.rule,
        policy = request.policy,
        host = request.host,
        org = if org.is_empty() { String::new() } else { format!(" (org {org})") },
        session = request.session_id,
        role = request.role,
        user = request.user,
        agent = request.agent,
        cwd = request.cwd,
    );
    match &request.verdict {
        Some(v) => {
            text.push_str(&format!("decided:  by {}{}\n", v.decided_by, if v.reason.is_empty() { String::new() } else { format!(": {}", v.reason) }));
            if !v.grant.is_empty() {
                text.push_str(&format!("grant:    {} ({} s)\n", v.grant, v.grant_seconds));
            }
        }
        None => {
            let cli = if org.is_empty() { "airlock-agent" } else { "airlock-gateway" };
            text.push_str(&format!("\nTo decide: {cli} approvals approve {id} [--for 30m] | {cli} approvals reject {id} --reason TEXT\n", id = request.id));
        }
    }
    let payload = serde_json::json!({
        "org": org,
        "request": serde_json::to_value(request).unwrap_or(serde_json::Value::Null),
    });
    Notification { event: event.to_string(), id: format!("{}:{}:{}", request.id, event, request.state), subject, text, payload }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_decision_read_as_such() {
        let mut r = ApprovalRequest { id: "apr-00000000000000aa".into(), state: "pending".into(), host: "ci-7".into(), argv: vec!["terraform".into(), "apply".into()], ..Default::default() };
        let n = approval_notification(REQUESTED, &r, "");
        assert!(n.subject.contains("terraform apply") && n.subject.contains("ci-7") && n.text.contains("airlock-agent approvals approve apr-00000000000000aa"), "{n:?}");
        assert_eq!(n.payload["request"]["id"], "apr-00000000000000aa");
        r.state = "approved".into();
        r.verdict = Some(airlock_api::v1::ApprovalVerdict { decided_by: "alice".into(), grant: "once".into(), ..Default::default() });
        let d = approval_notification(DECIDED, &r, "acme");
        assert!(d.subject.contains("was approved") && d.text.contains("by alice") && d.text.contains("org acme"), "{d:?}");
        assert_ne!(n.id, d.id);
    }
}
