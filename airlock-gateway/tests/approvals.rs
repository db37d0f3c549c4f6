//! Approval requests through a real gateway process: a simulated agent
//! enrolls and ships the approval decisions an agent records; operators
//! list, show, approve, reject and wait with the CLI; the agent receives the
//! verdicts as commands and answers them.

mod support;

use airlock_api::decision::APPROVAL;
use airlock_api::gateway::v1::{command, Command, CommandResult, DecideFleetApprovalRequest, ListFleetApprovalsRequest, WaitFleetApprovalRequest};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{ApprovalEvent, ApprovalRequest, ApprovalVerdict, Decision};
use serde_json::Value;

use support::agent::SimAgent;
use support::{FleetApi, Gateway, Scratch};

const HOST: &str = "build-7";

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn id(n: u64) -> String {
    format!("apr-{:016x}", 0xa11c_e000_0000_0000u64 + n)
}

fn opened(n: u64) -> ApprovalRequest {
    let now = now_ns();
    ApprovalRequest {
        id: id(n),
        state: "pending".into(),
        session_id: format!("sess-{n}"),
        host: HOST.into(),
        uid: 1000,
        user: "alice".into(),
        role: "terraform-agent".into(),
        agent: "claude-code".into(),
        argv: vec!["terraform".into(), "apply".into()],
        cwd: "/src/infra".into(),
        executable: "/usr/bin/terraform".into(),
        policy: "terraform".into(),
        rule: "terraform apply needs a person".into(),
        created_unix_nanos: now,
        expires_unix_nanos: now + 600_000_000_000,
        attempts: 1,
        decision_id: n,
        verdict: None,
        justification: String::new(),
    }
}

/// The request after a verdict, as the agent holds it.
fn decided(r: &ApprovalRequest, state: &str, by: &str, grant_seconds: i64, reason: &str) -> ApprovalRequest {
    let now = now_ns();
    let grant = match (state, grant_seconds) {
        ("approved", 0) => "once",
        ("approved", _) => "for",
        _ => "",
    };
    ApprovalRequest {
        state: state.into(),
        verdict: Some(ApprovalVerdict {
            decided_by: by.into(),
            reason: reason.into(),
            grant: grant.into(),
            grant_seconds,
            decided_unix_nanos: now,
            grant_expires_unix_nanos: if grant_seconds > 0 { now + grant_seconds * 1_000_000_000 } else { 0 },
        }),
        ..r.clone()
    }
}

/// The decision an agent records for a step of a request.
fn step(event: &str, r: &ApprovalRequest) -> Decision {
    let now = now_ns();
    Decision {
        time_unix_nanos: now,
        kind: APPROVAL.into(),
        decision: "allow".into(),
        reason: format!("approval {event}"),
        session_id: r.session_id.clone(),
        user: r.user.clone(),
        uid: r.uid,
        role: r.role.clone(),
        argv: r.argv.clone(),
        detail: Some(Detail::Approval(ApprovalEvent { event: event.into(), request_id: r.id.clone(), request: Some(r.clone()), caller: String::new() })),
        ..Default::default()
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The verdict the gateway sent, with its command id.
fn verdict_of(c: Command) -> (i64, airlock_api::gateway::v1::ApprovalCommand) {
    match c.body {
        Some(command::Body::DecideApproval(a)) => (c.id, a),
        other => panic!("expected a decide_approval command, got {other:?}"),
    }
}

fn exit_code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn an_approver_decides_an_agents_requests_through_the_gateway_on_sqlite() {
    let scratch = Scratch::new("approvals-sqlite");
    approvals_through_the_gateway(&Gateway::start(&scratch.0));
}

#[test]
fn an_approver_decides_an_agents_requests_through_the_gateway_on_postgres() {
    let Some(url) = airlock_gateway_store::testing::postgres_database("approvals::on_postgres") else {
        return;
    };
    let scratch = Scratch::new("approvals-postgres");
    approvals_through_the_gateway(&Gateway::start_with(&scratch.0, Some(&url)));
}

fn approvals_through_the_gateway(gw: &Gateway) {
    let join = gw.ok(&["token", "create", "--join", "--uses", "1"]).trim().to_string();
    let viewer = gw.api_token("viewer", "viewer-1");
    let approver = gw.api_token("approver", "ops-approver");
    let mut agent = SimAgent::enroll(&gw.url(), &gw.ca_pem(), &join, HOST);

    // The agent opens a request: the gateway lists it pending.
    let first = opened(1);
    agent.ship(&[step("requested", &first)]);
    let list = json(&gw.ok(&["approvals", "list", "--json"]));
    let rows = list["approvals"].as_array().expect("approvals");
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!((rows[0]["request"]["id"].as_str(), rows[0]["request"]["state"].as_str()), (Some(id(1).as_str()), Some("pending")));
    assert_eq!(rows[0]["request"]["host"].as_str(), Some(HOST));
    let table = gw.ok(&["approvals", "list", "--state", "pending", "--host", HOST]);
    assert!(table.contains(&id(1)) && table.contains("terraform apply"), "{table}");
    assert!(!gw.ok(&["approvals", "list", "--session", "sess-9"]).contains(&id(1)));
    assert!(gw.err(&["approvals", "list", "--state", "maybe"]).contains("state: \"maybe\""));

    // A viewer may look, not decide: refused by role, and the refusal is kept.
    let refused = gw.err_as(&viewer, &["approvals", "approve", &id(1), "--for", "30m"]);
    assert!(refused.contains("needs the approver role") && refused.contains("PermissionDenied"), "{refused}");
    let shown = json(&gw.ok_as(&viewer, &["approvals", "show", &id(1), "--json"]));
    let audit = shown["audit"].as_array().expect("audit");
    assert_eq!(audit.len(), 1, "{shown}");
    assert_eq!(audit[0]["caller"].as_str(), Some("gateway token viewer-1 (viewer)"));
    assert_eq!(audit[0]["action"].as_str(), Some("approve for 1800 s"));
    assert!(audit[0]["outcome"].as_str().is_some_and(|o| o.starts_with("refused: ") && o.contains("approver")), "{shown}");
    assert_eq!(shown["delivery"].as_str(), Some(""), "a refused attempt sends nothing");

    // The approver approves for 30 minutes; the agent receives the verdict.
    let said = gw.ok_as(&approver, &["approvals", "approve", &id(1), "--for", "30m", "--reason", "release window"]);
    assert!(said.contains("approve for 1800 s") && said.contains("delivering"), "{said}");
    let (command_id, verdict) = verdict_of(agent.next_command());
    let decide = verdict.decide.clone().expect("the DecideApprovalRequest");
    assert_eq!((decide.id.as_str(), decide.approve, decide.grant_seconds, decide.reason.as_str()), (id(1).as_str(), true, 1800, "release window"));
    assert_eq!(verdict.decided_by, "gateway token ops-approver");

    // A second verdict is refused while the first is on its way, and after.
    let again = gw.err(&["approvals", "reject", &id(1)]);
    assert!(again.contains(&format!("request {} was already decided: approved by gateway token ops-approver", id(1))), "{again}");
    assert!(again.contains("FailedPrecondition"), "{again}");

    // The agent applies it and answers with the request as it now holds it.
    let approved = decided(&first, "approved", &verdict.decided_by, 1800, "release window");
    agent.answer(CommandResult { id: command_id, error: String::new(), revoke_session: None, approval: Some(approved.clone()) });
    let waited = gw.cli(&["approvals", "wait", &id(1), "--timeout", "60s"]);
    let printed = String::from_utf8_lossy(&waited.stdout);
    assert_eq!(exit_code(&waited), 0, "wait on an approved request: {printed} {}", String::from_utf8_lossy(&waited.stderr));
    assert!(printed.contains("approved by gateway token ops-approver") && printed.contains("for 30m"), "{printed}");
    // Its own record of the step arrives later through the spool: nothing changes.
    agent.ship(&[step("approved", &approved)]);
    let shown = json(&gw.ok(&["approvals", "show", &id(1), "--json"]));
    assert_eq!((shown["request"]["state"].as_str(), shown["delivery"].as_str()), (Some("approved"), Some("delivered")), "{shown}");
    let outcomes: Vec<&str> = shown["audit"].as_array().expect("audit").iter().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes.len(), 3, "{shown}");
    assert!(outcomes[0].starts_with("refused") && outcomes[1] == "decided" && outcomes[2].contains("already decided"), "{outcomes:?}");
    let human = gw.ok(&["approvals", "show", &id(1)]);
    assert!(human.contains("gateway token viewer-1 (viewer)") && human.contains("delivery:  delivered"), "{human}");

    // A rejection: the agent applies it and ships the step; wait says 1.
    let second = opened(2);
    agent.ship(&[step("requested", &second)]);
    gw.ok_as(&approver, &["approvals", "reject", &id(2), "--reason", "not on a Friday"]);
    let (command_id, verdict) = verdict_of(agent.next_command());
    let decide = verdict.decide.clone().expect("the DecideApprovalRequest");
    assert_eq!((decide.approve, decide.grant_seconds, decide.reason.as_str()), (false, 0, "not on a Friday"));
    let rejected = decided(&second, "rejected", &verdict.decided_by, 0, "not on a Friday");
    agent.ship(&[step("rejected", &rejected)]);
    agent.answer(CommandResult { id: command_id, approval: Some(rejected), ..Default::default() });
    let waited = gw.cli(&["approvals", "wait", &id(2)]);
    assert_eq!(exit_code(&waited), 1, "wait on a rejected request: {}", String::from_utf8_lossy(&waited.stdout));
    assert!(String::from_utf8_lossy(&waited.stdout).contains("rejected"));

    // Still pending when the wait times out: 2, with the state printed.
    let third = opened(3);
    agent.ship(&[step("requested", &third)]);
    let waited = gw.cli(&["approvals", "wait", &id(3), "--timeout", "1s"]);
    assert_eq!(exit_code(&waited), 2, "{}", String::from_utf8_lossy(&waited.stderr));
    assert!(String::from_utf8_lossy(&waited.stdout).contains(&format!("request {} on {HOST}: pending", id(3))));

    // The host refuses a verdict (the request expired there first): the delivery says why.
    gw.ok_as(&approver, &["approvals", "approve", &id(3)]);
    let (command_id, verdict) = verdict_of(agent.next_command());
    assert_eq!(verdict.decide.as_ref().map(|d| d.grant_seconds), Some(0), "no --for: once");
    let refusal = format!("request {} is not pending: expired", id(3));
    agent.answer(CommandResult { id: command_id, error: refusal.clone(), ..Default::default() });
    agent.ship(&[step("expired", &decided(&third, "expired", "expiry", 0, ""))]);
    let waited = gw.cli(&["approvals", "wait", &id(3), "--json"]);
    assert_eq!(exit_code(&waited), 1);
    let shown = json(&String::from_utf8_lossy(&waited.stdout));
    assert_eq!(shown["request"]["state"].as_str(), Some("expired"));
    assert_eq!(shown["delivery"].as_str(), Some(format!("failed: {refusal}").as_str()));

    // Bad input is refused by name, before anything is asked of the gateway.
    let bad = gw.err(&["approvals", "approve", &id(4), "--for", "3x"]);
    assert!(bad.contains("--for: \"3x\" is not a duration"), "{bad}");
    let bad = gw.err(&["approvals", "wait", &id(4), "--timeout", "soon"]);
    assert!(bad.contains("--timeout: \"soon\" is not a duration"), "{bad}");
    let unknown = gw.err(&["approvals", "show", &id(4)]);
    assert!(unknown.contains(&format!("no approval request {} in org default", id(4))) && unknown.contains("NotFound"), "{unknown}");
    let unknown = gw.err_as(&approver, &["approvals", "approve", &id(4)]);
    assert!(unknown.contains(&format!("no approval request {} in org default", id(4))), "{unknown}");
    let malformed = gw.err(&["approvals", "approve", "apr-nope"]);
    assert!(malformed.contains("id: \"apr-nope\" is not an approval request id") && malformed.contains("InvalidArgument"), "{malformed}");

    // What the CLI never sends, the API refuses by field.
    let api = FleetApi::connect(gw, &approver);
    let ask = |approve: bool, grant_seconds: u64| DecideFleetApprovalRequest { org: String::new(), id: id(5), approve, reason: String::new(), grant_seconds };
    let status = api.run(api.client().decide_approval(ask(false, 60))).expect_err("a rejection with a grant");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("grant_seconds: "), "{}", status.message());
    let status = api.run(api.client().decide_approval(ask(true, 31 * 86_400))).expect_err("a grant of 31 days");
    assert!(status.code() == tonic::Code::InvalidArgument && status.message().starts_with("grant_seconds: at most"), "{status:?}");
    let status = api.run(api.client().list_approvals(ListFleetApprovalsRequest { state: "Pending!".into(), ..Default::default() })).expect_err("a bad state");
    assert!(status.code() == tonic::Code::InvalidArgument && status.message().starts_with("state: "), "{status:?}");
    let waited = api.run(api.client().wait_approval(WaitFleetApprovalRequest { id: id(1), ..Default::default() })).expect("wait on a decided request");
    assert_eq!(waited.into_inner().request.map(|r| r.state), Some("approved".to_string()), "returns at once");

    // Another org does not see this org's requests.
    gw.ok(&["org", "create", "acme"]);
    let outsider = gw.ok(&["token", "create", "--role", "admin", "--org", "acme", "--label", "acme-admin"]).trim().to_string();
    let hidden = gw.err_as(&outsider, &["approvals", "approve", &id(1)]);
    assert!(hidden.contains(&format!("no approval request {} in org acme", id(1))), "{hidden}");
    assert_eq!(json(&gw.ok_as(&outsider, &["approvals", "list", "--json"]))["approvals"].as_array().map(Vec::len), Some(0));

    // A revoked host cannot receive a verdict.
    agent.ship(&[step("requested", &opened(5))]);
    gw.ok(&["hosts", "revoke", HOST]);
    let revoked = gw.err_as(&approver, &["approvals", "approve", &id(5)]);
    assert!(revoked.contains("revoked") && revoked.contains("FailedPrecondition"), "{revoked}");
}
