//! Security monitoring at the gateway. In process: a hub over a store on
//! SQLite and PostgreSQL, decisions stored as an agent's batch would store
//! them, one detection pass at a time (`run_detection_once`), and the sets
//! of blocks in force as a connected agent's stream receives them. Through
//! a real gateway process: the `--detect-interval 1` loop, a simulated agent
//! that ships denials and receives the `security_blocks` command, and the
//! `security` CLI with its roles.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_api::gateway::v1::{command, gateway_message, GatewayMessage};
use airlock_api::v1::{Decision, SecurityBlock};
use airlock_gateway::detection::run_detection_once;
use airlock_gateway::hub::Hub;
use airlock_gateway_store::{GatewayStore, IncomingDecision};
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

use support::agent::SimAgent;
use support::{Gateway, Scratch};

const HOST: &str = "build-7";
const SEC: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// `n` denied execs of one session and user, the last at `end`.
fn denials(session: &str, user: &str, n: u64, end: i64) -> Vec<Decision> {
    (0..n)
        .map(|i| Decision {
            id: 100 + i,
            time_unix_nanos: end - (n - i) as i64 * 1_000_000,
            kind: "exec".into(),
            decision: "deny".into(),
            reason: "rule".into(),
            session_id: session.into(),
            user: user.into(),
            uid: 1000,
            role: "agent".into(),
            argv: vec!["curl".into(), "evil.example".into()],
            executable: "/usr/bin/curl".into(),
            ..Default::default()
        })
        .collect()
}

fn tamper(session: &str, user: &str, at: i64) -> Decision {
    Decision { id: 900, time_unix_nanos: at, kind: "tamper".into(), decision: "deny".into(), session_id: session.into(), user: user.into(), uid: 1001, ..Default::default() }
}

fn incoming(decisions: &[Decision], first_seq: i64) -> Vec<IncomingDecision> {
    decisions.iter().enumerate().map(|(i, d)| IncomingDecision { seq: first_seq + i as i64, decision: d.clone(), body: d.encode_to_vec() }).collect()
}

fn blocks_of(message: GatewayMessage) -> Option<Vec<SecurityBlock>> {
    match message.body {
        Some(gateway_message::Body::Command(c)) => match c.body {
            Some(command::Body::SecurityBlocks(set)) => Some(set.blocks),
            _ => None,
        },
        _ => None,
    }
}

/// The next set of blocks pushed on the fake agent stream that passes `want`.
async fn next_set(rx: &mut mpsc::Receiver<Result<GatewayMessage, tonic::Status>>, want: impl Fn(&[SecurityBlock]) -> bool) -> Vec<SecurityBlock> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv()).await.expect("a security_blocks push within 30 s").expect("the stream is open");
        if let Some(set) = blocks_of(message.expect("not an error")) {
            if want(&set) {
                return set;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_pass_finds_blocks_and_pushes_on_sqlite() {
    let scratch = Scratch::new("security-pass-sqlite");
    detection_pass(&scratch, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_pass_finds_blocks_and_pushes_on_postgres() {
    let Some(url) = airlock_gateway_store::testing::postgres_database("security::pass_on_postgres") else {
        return;
    };
    let scratch = Scratch::new("security-pass-postgres");
    detection_pass(&scratch, Some(&url)).await;
}

async fn detection_pass(scratch: &Scratch, url: Option<&str>) {
    let store = GatewayStore::open(url, &scratch.0).await.expect("the store");
    let authority = airlock_gateway::pki::Authority::load_or_create(&scratch.0).expect("a CA");
    let notifiers = airlock_gateway::approvals::Notifiers::start(&BTreeMap::new()).expect("no notifiers");
    let hub = Hub::new(store.clone(), authority, "test".into(), notifiers);
    tokio::spawn(airlock_gateway::security::watch_blocks(hub.clone()));
    let org = store.ensure_org("default").await.expect("the org");
    let (tx, mut rx) = mpsc::channel(64);
    hub.connect((org.id, HOST.into()), tx);

    // 25 denials in a session: repeated_denials (high) on the session and the user: soft blocks.
    let now = now_ns();
    store.insert_decisions(org.id, HOST, &incoming(&denials("s1", "alice", 25, now), 1)).await.expect("ingest");
    let report = run_detection_once(&hub, now).await.expect("a pass").remove(0);
    assert!(report.enabled && report.decisions == 25 && !report.capped, "{report:?}");
    let session = report.findings.iter().find(|f| f.rule == "repeated_denials" && f.subject_kind == "session").expect("a session finding");
    assert_eq!((session.severity.as_str(), session.subject.as_str()), ("high", "s1"));
    assert_eq!(session.values.iter().map(|m| (m.name.as_str(), m.observed, m.threshold)).collect::<Vec<_>>(), [("denies", 25, 20)]);
    assert_eq!(session.evidence.len(), 25);
    assert_eq!(session.evidence[0], 100, "the decision's own id, not the store's cursor");
    assert!(session.evidence_hosts.iter().all(|h| h == HOST) && session.evidence_hosts.len() == 25);
    let soft = report.blocks.iter().find(|b| b.subject_kind == "session").expect("a block on the session");
    assert_eq!((soft.kind.as_str(), soft.status.as_str(), soft.finding_id.as_str()), ("soft", "active", session.id.as_str()));
    assert_eq!(soft.expires_unix_nanos, now + 14_400 * SEC, "the default soft block lasts 4 hours");
    assert!(report.blocks.iter().any(|b| b.subject_kind == "user" && b.subject == "alice"));
    let pushed = next_set(&mut rx, |set| set.iter().any(|b| b.id == soft.id)).await;
    assert_eq!(pushed.len(), 2, "{pushed:?}");

    // The same evidence again: no new finding, no new block.
    let again = run_detection_once(&hub, now + SEC).await.expect("a pass").remove(0);
    assert!(again.findings.is_empty() && again.blocks.is_empty(), "{again:?}");

    // A tamper decision: escalation_probing, critical: a hard block.
    store.insert_decisions(org.id, HOST, &incoming(&[tamper("s2", "bob", now + SEC)], 100)).await.expect("ingest");
    let report = run_detection_once(&hub, now + 2 * SEC).await.expect("a pass").remove(0);
    let critical = report.findings.iter().find(|f| f.subject_kind == "session" && f.subject == "s2").expect("a finding on s2");
    assert_eq!((critical.rule.as_str(), critical.severity.as_str()), ("escalation_probing", "critical"));
    let hard = report.blocks.iter().find(|b| b.subject == "s2").expect("a block on s2");
    assert_eq!(hard.kind, "hard");
    assert_eq!(hard.expires_unix_nanos, now + 2 * SEC + 86_400 * SEC, "a day");

    // Lifted: the pushed set no longer has it.
    let lifted = store.lift_block(org.id, &soft.id, "admin", "reviewed", now_ns()).await.expect("lift");
    assert_eq!(lifted.status, "lifted");
    hub.security_blocks_changed();
    let set = next_set(&mut rx, |set| !set.iter().any(|b| b.id == soft.id)).await;
    assert!(set.iter().any(|b| b.id == hard.id), "{set:?}");

    // Detection disabled: nothing found, however much is denied.
    store.insert_security_settings(org.id, "{\"enabled\": false}", "admin", "off", now).await.expect("settings");
    store.insert_decisions(org.id, HOST, &incoming(&denials("s3", "carol", 40, now + 3 * SEC), 200)).await.expect("ingest");
    let off = run_detection_once(&hub, now + 3 * SEC).await.expect("a pass").remove(0);
    assert!(!off.enabled && off.findings.is_empty(), "{off:?}");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn the_detection_loop_blocks_and_the_cli_manages_blocks_on_sqlite() {
    let scratch = Scratch::new("security-loop-sqlite");
    through_the_gateway(&Gateway::start_with_args(&scratch.0, None, &["--detect-interval", "1"]), &scratch);
}

#[test]
fn the_detection_loop_blocks_and_the_cli_manages_blocks_on_postgres() {
    let Some(url) = airlock_gateway_store::testing::postgres_database("security::loop_on_postgres") else {
        return;
    };
    let scratch = Scratch::new("security-loop-postgres");
    through_the_gateway(&Gateway::start_with_args(&scratch.0, Some(&url), &["--detect-interval", "1"]), &scratch);
}

/// The next security_blocks command the simulated agent receives that passes `want`.
fn agent_set(agent: &SimAgent, want: impl Fn(&[SecurityBlock]) -> bool) -> Vec<SecurityBlock> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(std::time::Instant::now() < deadline, "no matching security_blocks command within 60 s");
        let set = agent.next_blocks();
        if want(&set) {
            return set;
        }
    }
}

fn through_the_gateway(gw: &Gateway, scratch: &Scratch) {
    let join = gw.ok(&["token", "create", "--join", "--uses", "1"]).trim().to_string();
    let viewer = gw.api_token("viewer", "viewer-1");
    let approver = gw.api_token("approver", "ops-approver");
    let mut agent = SimAgent::enroll(&gw.url(), &gw.ca_pem(), &join, HOST);
    // On connect the agent gets the set in force: none yet.
    assert!(agent_set(&agent, |_| true).is_empty());

    agent.ship(&denials("sess-1", "alice", 25, now_ns()));
    let set = agent_set(&agent, |set| set.iter().any(|b| b.subject == "sess-1"));
    let block = set.iter().find(|b| b.subject == "sess-1").expect("the session's block").clone();
    assert_eq!((block.kind.as_str(), block.rule.as_str(), block.origin.as_str()), ("soft", "repeated_denials", "gateway"));

    let listed = json(&gw.ok(&["security", "blocks", "--status", "active", "--json"]));
    assert!(listed["blocks"].as_array().is_some_and(|b| b.iter().any(|b| b["id"] == block.id.as_str())), "{listed}");
    let table = gw.ok_as(&viewer, &["security", "blocks"]);
    assert!(table.contains(&block.id) && table.contains("denies 25 >= 20") && table.contains("active") && table.contains("expires"), "{table}");
    let findings = json(&gw.ok_as(&viewer, &["security", "findings", "--json"]));
    let finding = findings["findings"].as_array().and_then(|f| f.iter().find(|f| f["subject"] == "sess-1").cloned()).expect("the finding");
    assert_eq!(finding["block_id"], block.id.as_str());
    assert_eq!(finding["evidence_hosts"][0], HOST);
    assert!(gw.err(&["security", "blocks", "--status", "maybe"]).contains("status: \"maybe\""));

    // Roles: a viewer may not lift; an approver acknowledges; an admin lifts.
    let refused = gw.err_as(&viewer, &["security", "lift", &block.id]);
    assert!(refused.contains("PermissionDenied") && refused.contains("needs the admin role"), "{refused}");
    let refused = gw.err_as(&approver, &["security", "lift", &block.id]);
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let acked = json(&gw.ok_as(&approver, &["security", "ack", &block.id, "--reason", "looking", "--json"]));
    assert_eq!((acked["status"].as_str(), acked["acknowledged_by"].as_str()), (Some("acknowledged"), Some("ops-approver")));
    let lifted = gw.ok(&["security", "lift", &block.id, "--reason", "false positive"]);
    assert!(lifted.contains("lifted by first admin"), "{lifted}");
    let set = agent_set(&agent, |set| !set.iter().any(|b| b.id == block.id));
    assert!(set.iter().all(|b| b.id != block.id));
    let again = gw.err(&["security", "lift", &block.id]);
    assert!(again.contains("FailedPrecondition") && again.contains("it is lifted"), "{again}");

    // Settings: a refused document names the field and keeps the version in force.
    let good = scratch.0.join("good.toml");
    std::fs::write(&good, "[rules.repeated_denials]\nthreshold = 50\n").unwrap();
    let set_out = gw.ok(&["security", "settings", "set", good.to_str().unwrap(), "--comment", "quieter"]);
    assert!(set_out.contains("version 1"), "{set_out}");
    let bad = scratch.0.join("bad.toml");
    std::fs::write(&bad, "[rules.repeated_denials]\nthreshold = 0\n").unwrap();
    let refused = gw.err(&["security", "settings", "set", bad.to_str().unwrap()]);
    assert!(refused.contains("InvalidArgument") && refused.contains("rules.repeated_denials.threshold"), "{refused}");
    std::fs::write(&bad, "[rules.repeated_denials]\nthresold = 5\n").unwrap();
    let refused = gw.err(&["security", "settings", "set", bad.to_str().unwrap()]);
    assert!(refused.contains("InvalidArgument") && refused.contains("thresold"), "{refused}");
    let refused = gw.err_as(&approver, &["security", "settings", "set", good.to_str().unwrap()]);
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let shown = json(&gw.ok_as(&viewer, &["security", "settings", "show", "--json"]));
    assert_eq!(shown["version"], 1, "{shown}");
    let document = json(shown["document"].as_str().expect("the document"));
    assert_eq!(document["rules"]["repeated_denials"]["threshold"], 50);
    let history = json(&gw.ok(&["security", "settings", "history", "--json"]));
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(1), "{history}");

    // The CLI's own token uses were recorded (from loopback): nothing of them in findings.
    assert!(!gw.log().contains("alk_api_"), "a secret in the log");
}
