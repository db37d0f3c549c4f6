//! Security monitoring on one host, end to end on this kernel's backend: a
//! governed session's repeated denials make a finding, the finding a block,
//! and the kernel enforces the block (hard: every exec and connect; soft:
//! egress beyond loopback) until a person lifts it. New sessions of the
//! blocked user are refused meanwhile.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const POLICY: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform destroy"],
  "rate_limits": { "kubectl *": "100/minute" } }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["infra"] }"#;
/// Five denials in five minutes make a finding of `severity`; the other
/// rules stay out of the way (an unshare would count as escalation probing).
fn settings(severity: &str, enabled: bool) -> String {
    format!(
        "enabled = {enabled}\n[rules.repeated_denials]\nthreshold = 5\nwindow_secs = 300\nseverity = \"{severity}\"\n\
         [rules.escalation_probing]\nenabled = false\n"
    )
}

struct Monitored {
    d: Daemon,
    _settings_dir: TempDir,
}

fn start(tag: &str, severity: &str, enabled: bool) -> Monitored {
    let dir = TempDir::new(&format!("{tag}-settings"));
    let file = dir.0.join("detect.toml");
    std::fs::write(&file, settings(severity, enabled)).expect("write the detection settings");
    let file = file.display().to_string();
    let d = Daemon::start_with(tag, &[("infra.json", POLICY)], &[("agent.json", ROLE)], &["--detect-interval", "1", "--detect-settings", &file]);
    Monitored { d, _settings_dir: dir }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_list(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let out = d.cli(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{args:?} --json is not JSON ({e}): {}", stdout(&out)))
}

/// Waits (bounded) for the blocks in force to satisfy `pred`.
fn wait_blocks(d: &Daemon, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + seconds(20);
    loop {
        let active = json_list(d, &["security", "blocks", "--status", "active", "--json"]);
        if pred(&active) {
            return active;
        }
        assert!(Instant::now() < deadline, "no {what} in time: {active:#?}\ndaemon log:\n{}", d.log());
        std::thread::sleep(cli_poll_pause().max(Duration::from_millis(200)));
    }
}

fn deny_five_times(live: &mut LiveSession) {
    for _ in 0..5 {
        let (out, _) = live.run("terraform destroy");
        assert!(!out.contains(RAN), "terraform destroy ran:\n{out}");
    }
}

/// Connects from the session; says whether the connection was made.
fn connect(live: &mut LiveSession, address: &str, port: u16) -> bool {
    let (out, _) = live.run(&format!("(exec 3<>/dev/tcp/{address}/{port}) 2>/dev/null && echo CONNECTED || echo NOT-CONNECTED"));
    out.contains("CONNECTED") && !out.contains("NOT-CONNECTED")
}

/// A connect from a network namespace of its own, where nothing but a
/// (down) loopback exists: the kernel decides it, and no packet can leave.
fn connect_from_empty_netns(live: &mut LiveSession, address: &str) {
    live.run(&format!("unshare -n bash -c 'exec 3<>/dev/tcp/{address}/80' 2>/dev/null; true"));
}

fn connect_decisions(d: &Daemon, session: &str, address: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|v| v["kind"] == "connect" && v["session_id"] == session && v["destination"]["address"] == address)
        .collect()
}

fn detection_runs(d: &Daemon) -> usize {
    d.log().matches("security detection run").count()
}

fn wait_detection_runs(d: &Daemon, more: usize) {
    let target = detection_runs(d) + more;
    let deadline = Instant::now() + seconds(20);
    while detection_runs(d) < target {
        assert!(Instant::now() < deadline, "the detectors did not run {more} more times; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lift_all(d: &Daemon, blocks: &[Value]) {
    for b in blocks {
        let id = b["id"].as_str().unwrap_or_default();
        let out = d.cli(&["security", "lift", id, "--reason", "reviewed: a test"]);
        assert!(out.status.success(), "lift {id}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout(&out).contains(&format!("security block {id}: lifted")), "{}", stdout(&out));
    }
}

fn a_critical_finding_hard_blocks_the_session_until_it_is_lifted() {
    let m = start("sec-hard", "critical", true);
    let d = &m.d;
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("address").port();
    let mut live = d.live_session("agent");
    assert!(connect(&mut live, "127.0.0.1", port), "loopback must connect before any block");

    deny_five_times(&mut live);
    let session = live.session_id.clone();
    let blocks = wait_blocks(d, "hard block of the session and its user", |b| {
        b.iter().any(|x| x["subject"] == session.as_str() && x["kind"] == "hard") && b.iter().any(|x| x["subject_kind"] == "user" && x["subject"] == "root")
    });
    let block = blocks.iter().find(|b| b["subject"] == session.as_str()).expect("the session's block");
    assert_eq!(block["rule"], "repeated_denials");
    assert_eq!(block["severity"], "critical");
    assert_eq!(block["origin"], "local");
    assert_eq!(block["values"][0]["threshold"], 5);
    assert!(block["values"][0]["observed"].as_u64().is_some_and(|n| n >= 5), "{block}");

    let findings = json_list(d, &["security", "findings", "--json"]);
    let finding = findings.iter().find(|f| f["block_id"] == block["id"]).expect("the finding behind the block");
    assert!(finding["evidence"].as_array().is_some_and(|e| e.len() >= 5), "{finding}");
    let table = stdout(&d.cli(&["security", "blocks"]));
    assert!(table.contains("denies") && table.contains(">= 5"), "the table shows values against thresholds:\n{table}");

    // Hard: nothing runs, nothing connects, not even loopback.
    let (out, _) = live.run("terraform plan");
    assert!(!out.contains(RAN), "terraform plan ran under a hard block:\n{out}");
    let message = live.wait_output("the security block's message", |t| t.contains("airlock: SECURITY BLOCK"));
    assert!(message.contains("airlock: block=blk-"), "{message}");
    let refused = d.wait_audit("the exec the block refused", |v| v["session_id"] == session.as_str() && v["kind"] == "exec" && v["reason"] == "security_block");
    let named = refused[0]["security_block"].as_str().unwrap_or_default().to_string();
    assert!(blocks.iter().any(|b| b["id"] == named.as_str()), "the decision names {named:?}, not one of the blocks");
    assert!(!connect(&mut live, "127.0.0.1", port), "a loopback connect was let through a hard block");
    d.wait_audit("the connect the block refused", |v| v["session_id"] == session.as_str() && v["kind"] == "connect" && v["reason"] == "security_block");
    let other = d.governed(Some("agent"), "terraform plan");
    assert!(!other.tool_ran(), "a new session of the blocked user started:\n{}", other.all_output());
    assert!(other.all_output().contains("security block blk-") && other.all_output().contains("new sessions are refused"), "{}", other.all_output());

    lift_all(d, &blocks);
    let (out, _) = live.run("terraform plan");
    assert!(out.contains(RAN), "terraform plan was refused after the lift:\n{out}");
    assert!(connect(&mut live, "127.0.0.1", port), "loopback did not connect after the lift");
    assert!(d.governed(Some("agent"), "terraform plan").tool_ran(), "the user could not launch after the lift");

    // The denials a person reviewed do not block again.
    wait_detection_runs(d, 2);
    assert!(json_list(d, &["security", "blocks", "--status", "active", "--json"]).is_empty(), "the reviewed evidence blocked again");
    let steps: Vec<String> = d.audit().into_iter().filter(|v| v["kind"] == "security").map(|v| v["reason"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(steps.iter().filter(|s| *s == "block_placed").count(), 2, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| *s == "block_lifted").count(), 2, "{steps:?}");
    live.quit();
}

fn a_high_finding_soft_blocks_egress_beyond_loopback_and_new_sessions() {
    let m = start("sec-soft", "high", true);
    let d = &m.d;
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("address").port();
    let mut live = d.live_session("agent");
    let session = live.session_id.clone();
    let away = "192.0.2.10";
    connect_from_empty_netns(&mut live, away);
    let before = d.wait_audit("the connect before any block", |v| v["session_id"] == session.as_str() && v["kind"] == "connect" && v["destination"]["address"] == away);
    assert_eq!(before[0]["decision"], "allow", "{}", before[0]);

    let (out, _) = live.run("kubectl get pods");
    assert!(out.contains(RAN), "{out}");

    deny_five_times(&mut live);
    let blocks = wait_blocks(d, "soft block", |b| b.iter().any(|x| x["subject"] == session.as_str() && x["kind"] == "soft"));

    // Soft: commands run, loopback connects, anything else is refused, and
    // what the policies name (kubectl's rate limit) needs a person's approval.
    let (out, _) = live.run("terraform plan");
    assert!(out.contains(RAN), "a soft block refused an exec:\n{out}");
    let (out, _) = live.run("kubectl get pods");
    assert!(!out.contains(RAN), "kubectl ran without approval under a soft block:\n{out}");
    live.wait_output("the approval request", |t| t.contains("airlock: APPROVAL REQUIRED"));
    d.wait_audit("the held kubectl", |v| v["session_id"] == session.as_str() && v["reason"] == "approval_required" && v["rule"] == "kubectl * 100/minute");
    assert!(connect(&mut live, "127.0.0.1", port), "a soft block refused loopback");
    let seen = connect_decisions(d, &session, away).len();
    connect_from_empty_netns(&mut live, away);
    let deadline = Instant::now() + seconds(15);
    let refused = loop {
        let all = connect_decisions(d, &session, away);
        if all.len() > seen {
            break all[seen].clone();
        }
        assert!(Instant::now() < deadline, "no decision for the connect under the soft block");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((refused["decision"].as_str(), refused["reason"].as_str()), (Some("deny"), Some("security_block")), "{refused}");
    let other = d.governed(Some("agent"), "terraform plan");
    assert!(!other.tool_ran() && other.all_output().contains("new sessions are refused"), "{}", other.all_output());

    lift_all(d, &blocks);
    let (out, _) = live.run("kubectl get pods");
    assert!(out.contains(RAN), "kubectl still needed approval after the lift:\n{out}");
    let seen = connect_decisions(d, &session, away).len();
    connect_from_empty_netns(&mut live, away);
    let deadline = Instant::now() + seconds(15);
    while connect_decisions(d, &session, away).len() <= seen {
        assert!(Instant::now() < deadline, "no decision for the connect after the lift");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(connect_decisions(d, &session, away)[seen]["decision"], "allow");
    live.quit();
}

fn with_detection_off_there_are_no_findings() {
    let m = start("sec-off", "critical", false);
    let d = &m.d;
    let mut live = d.live_session("agent");
    deny_five_times(&mut live);
    deny_five_times(&mut live);
    wait_detection_runs(d, 2);
    assert!(json_list(d, &["security", "findings", "--json"]).is_empty());
    assert!(json_list(d, &["security", "blocks", "--json"]).is_empty());
    let (out, _) = live.run("terraform plan");
    assert!(out.contains(RAN), "{out}");
    let bad = d.cli(&["security", "lift", "blk-xyz"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a security block id"), "{}", String::from_utf8_lossy(&bad.stderr));
    live.quit();
}

kernel_tests!(
    a_critical_finding_hard_blocks_the_session_until_it_is_lifted,
    a_high_finding_soft_blocks_egress_beyond_loopback_and_new_sessions,
    with_detection_off_there_are_no_findings,
);
