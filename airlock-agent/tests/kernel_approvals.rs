//! Approvals, end to end on this kernel's backend: an `approval_commands` rule
//! holds the exec in the kernel, the daemon opens a request, a person decides
//! with the CLI, and the kernel lets exactly that command through once (or
//! the rule's commands for a while).

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::process::Output;
use std::time::Instant;

use libbpf_rs::MapCore;
use serde_json::Value;
use support::*;

const POLICY: &str = r#"{ "id": "infra", "name": "Infra", "status": "active",
  "blocked_commands": ["terraform destroy"],
  "approval_commands": ["terraform apply", "kubectl delete", "terraform destroy", "deploy-tool upgrade"] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["infra"] }"#;

fn start(tag: &str, extra: &[&str]) -> Daemon {
    Daemon::start_with(tag, &[("infra.json", POLICY)], &[("agent.json", ROLE)], extra)
}

/// The request id the block message names.
fn request_id(output: &str) -> String {
    output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("airlock: approval_request="))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no approval_request line in:\n{output}"))
}

/// Runs a command an approval rule holds; waits for the block message (it
/// reaches the shell's stderr just after the command returns) and returns the
/// message's text, from the command's start.
fn held(live: &mut LiveSession, command: &str) -> String {
    let messages = |t: &str| t.matches("airlock: ai_instruction=").count();
    let before = live.wait_output("anything", |_| true);
    let (out, _) = live.run(command);
    assert!(!out.contains(RAN), "{command:?} ran though an approval rule holds it:\n{out}");
    let after = live.wait_output(&format!("the block message of {command:?}"), |t| messages(t) > messages(&before));
    after[before.len().min(after.len())..].to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn approvals(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["approvals"];
    all.extend_from_slice(args);
    d.cli(&all)
}

fn request_json(d: &Daemon, id: &str) -> Value {
    let out = approvals(d, &["show", id, "--json"]);
    assert!(out.status.success(), "approvals show {id}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("show --json is JSON")
}

/// Runs a command in the live session and says whether the fake tool ran.
fn run(live: &mut LiveSession, command: &str) -> (bool, String) {
    let (out, _) = live.run(command);
    (out.contains(RAN), out)
}

/// The pending request of a session for an argv (the same argv reuses one request).
fn pending_for(d: &Daemon, session: &str, argv: &[&str]) -> String {
    let deadline = Instant::now() + seconds(15);
    loop {
        let out = approvals(d, &["list", "--state", "pending", "--session", session, "--json"]);
        let list: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        if let Some(r) = list.iter().find(|r| r["argv"] == serde_json::json!(argv)) {
            return r["id"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "no pending request for {argv:?} in session {session}: {}", stdout(&out));
        std::thread::sleep(cli_poll_pause());
    }
}

fn audit_events(d: &Daemon, id: &str) -> Vec<String> {
    d.audit()
        .into_iter()
        .filter(|v| v["kind"] == "approval" && v["approval"]["request_id"] == id)
        .map(|v| v["approval"]["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn approve_once_lets_exactly_that_command_run_once() {
    let d = start("apr-once", &[]);
    let mut live = d.live_session("agent");

    let out = held(&mut live, "terraform apply");
    for line in ["airlock: APPROVAL REQUIRED", "airlock: approval_request=apr-", "airlock: ai_instruction=", "run exactly the same command again, unchanged"] {
        assert!(out.contains(line), "the held command's output lacks {line:?}:\n{out}");
    }
    let id = request_id(&out);
    let r = request_json(&d, &id);
    assert_eq!(r["state"], "pending");
    assert_eq!(r["session_id"], live.session_id.as_str());
    assert_eq!(r["rule"], "terraform apply");
    assert_eq!(r["argv"], serde_json::json!(["terraform", "apply"]));
    assert!(stdout(&approvals(&d, &["list", "--state", "pending"])).contains(&id));

    // The same argv while pending reuses the request.
    let again = held(&mut live, "terraform apply");
    assert_eq!(request_id(&again), id, "the same command opened a second request");
    assert_eq!(request_json(&d, &id)["attempts"], 2);

    let ok = approvals(&d, &["approve", &id, "--reason", "planned change"]);
    assert!(ok.status.success(), "approve: {}", stderr(&ok));
    assert!(stdout(&ok).contains("approved"), "{}", stdout(&ok));
    let second = approvals(&d, &["reject", &id]);
    assert!(!second.status.success() && stderr(&second).contains("not pending"), "a second decision must be refused: {}", stderr(&second));

    // Another argv is not served by the grant, nor is another session.
    held(&mut live, "terraform apply -auto-approve");
    let other = d.governed(Some("agent"), "terraform apply");
    assert!(!other.tool_ran(), "another session used the grant:\n{}", other.all_output());

    let (ran, out) = run(&mut live, "terraform apply");
    assert!(ran, "the approved command did not run:\n{out}");
    let out = held(&mut live, "terraform apply");
    assert_ne!(request_id(&out), id, "the third run must open a new request");

    d.wait_audit("the grant's use", |v| v["kind"] == "approval" && v["approval"]["request_id"] == id.as_str() && v["approval"]["event"] == "grant_used");
    assert_eq!(audit_events(&d, &id), ["requested", "approved", "grant_used"]);
    let granted = d.wait_audit("the granted exec", |v| v["kind"] == "exec" && v["reason"] == "approval_granted");
    assert_eq!(granted[0]["exec"]["approval_request"], id.as_str());
    assert_eq!(granted[0]["decision"], "allow");
    let held = d.audit().into_iter().filter(|v| v["reason"] == "approval_required" && v["exec"]["approval_request"] == id.as_str()).count();
    assert!(held >= 2, "both held execs name the request in the audit trail");
}

/// A #! script: the kernel sees the caller's argv first (LSM) and the
/// interpreter's at the new image; the grant serves both, once.
fn an_approved_script_runs_once() {
    let d = start("apr-script", &[]);
    write_file(&d.work_dir.join("deploy-tool"), &format!("#!/bin/sh\necho {RAN} deploy-tool \"$@\"\n"), 0o755);
    let mut live = d.live_session("agent");
    let id = request_id(&held(&mut live, "$WORK/deploy-tool upgrade web"));
    assert!(approvals(&d, &["approve", &id]).status.success());
    held(&mut live, "$WORK/deploy-tool upgrade db");
    let (ran, out) = run(&mut live, "$WORK/deploy-tool upgrade web");
    assert!(ran, "the approved script did not run:\n{out}\ndaemon log:\n{}", d.log());
    held(&mut live, "$WORK/deploy-tool upgrade web");
}

fn reject_expiry_blocks_and_bad_input() {
    let d = start("apr-reject", &["--approval-ttl", "3s"]);
    let mut live = d.live_session("agent");

    let out = held(&mut live, "kubectl delete pod web");
    let id = request_id(&out);
    let rejected = approvals(&d, &["reject", &id, "--reason", "not today"]);
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    let wait = approvals(&d, &["wait", &id]);
    assert_eq!(wait.status.code(), Some(1), "wait on a rejected request: {}", stdout(&wait));
    held(&mut live, "kubectl delete pod web");

    // Expiry is a rejection: wait returns 1, and approving afterwards is refused.
    let out = held(&mut live, "terraform apply -target=x");
    let id = request_id(&out);
    // Exit 1 with "expired" (not 2, still pending at the timeout): expiry ended the wait.
    let wait = approvals(&d, &["wait", &id, "--timeout", "60s"]);
    assert_eq!(wait.status.code(), Some(1), "wait on an expiring request: {}{}", stdout(&wait), stderr(&wait));
    assert!(stdout(&wait).contains("expired"), "{}", stdout(&wait));
    let late = approvals(&d, &["approve", &id]);
    assert!(!late.status.success() && stderr(&late).contains("expired"), "approving an expired request: {}", stderr(&late));
    assert!(audit_events(&d, &id).contains(&"expired".to_string()));

    // A command a block rule names is blocked, whatever approval rule also names it.
    let before = live.wait_output("anything", |_| true).len();
    let (ran, _) = run(&mut live, "terraform destroy");
    let text = live.wait_output("the policy block", |t| t[before.min(t.len())..].contains("airlock: POLICY BLOCK"));
    assert!(!ran && !text[before..].contains("APPROVAL REQUIRED"), "{}", &text[before..]);

    // Bad input: a clear error that names the problem.
    let unknown = approvals(&d, &["show", "apr-00000000000000ab"]);
    assert!(!unknown.status.success() && stderr(&unknown).contains("no approval request apr-00000000000000ab"), "{}", stderr(&unknown));
    let malformed = approvals(&d, &["approve", "not-an-id"]);
    assert!(!malformed.status.success() && stderr(&malformed).contains("is not an approval request id"), "{}", stderr(&malformed));
    let duration = approvals(&d, &["approve", "apr-00000000000000ab", "--for", "3x"]);
    assert!(!duration.status.success() && stderr(&duration).contains("--for") && stderr(&duration).contains("is not a duration"), "{}", stderr(&duration));
    // Still pending at the timeout: exit 2.
    let out = held(&mut live, "kubectl delete ns a");
    let pending = approvals(&d, &["wait", &request_id(&out), "--timeout", "1s"]);
    assert_eq!(pending.status.code(), Some(2), "{}", stdout(&pending));
}

fn a_grant_for_a_while_serves_the_rule_and_ends_with_the_session() {
    let d = start("apr-timed", &[]);
    let mut live = d.live_session("agent");
    let out = held(&mut live, "terraform apply");
    let id = request_id(&out);
    let ok = approvals(&d, &["approve", &id, "--for", "30m"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("for 30m"), "{}", stdout(&ok));
    for command in ["terraform apply", "terraform apply -auto-approve", "terraform apply -target=module.web"] {
        let (ran, out) = run(&mut live, command);
        assert!(ran, "{command:?} under a 30m grant did not run:\n{out}");
    }
    let out = held(&mut live, "kubectl delete pod x");
    assert!(out.contains("APPROVAL REQUIRED"), "another rule's command was served:\n{out}");
    let other = d.governed(Some("agent"), "terraform apply");
    assert!(!other.tool_ran(), "another session used the grant");
    let grants = d.bpf_map("approval_grants");
    assert!(grants.keys().count() >= 1, "the grant is in the kernel");

    // The session ends: its pending request is cancelled and its grants are removed.
    let pending = request_id(&out);
    live.quit();
    let deadline = Instant::now() + seconds(15);
    while request_json(&d, &pending)["state"] != "cancelled" || grants.keys().count() != 0 {
        assert!(Instant::now() < deadline, "the ended session's request or grant lingers: {} / {} grants", request_json(&d, &pending)["state"], grants.keys().count());
        std::thread::sleep(cli_poll_pause());
    }
}

fn a_governed_process_cannot_approve_and_a_flood_is_capped() {
    let d = start("apr-self", &["--approval-max-pending", "2"]);
    let mut live = d.live_session("agent");
    let out = held(&mut live, "terraform apply");
    let id = request_id(&out);
    let socket = d.socket.display().to_string();
    let (out, rc) = live.run(&format!("{AGENT} approvals approve {id} --socket {socket}"));
    assert_ne!(rc, 0, "a governed process approved its own request: {out}");
    assert_eq!(request_json(&d, &id)["state"], "pending", "{out}");
    d.wait_audit("the refused self-approval", |v| v["kind"] == "approval" && v["approval"]["event"] == "refused_caller");

    held(&mut live, "terraform apply -x");
    let out = held(&mut live, "terraform apply -y");
    assert!(out.contains("no new request was opened"), "the third pending request was not refused:\n{out}");
    d.wait_audit("the refused flood", |v| v["kind"] == "approval" && v["approval"]["event"] == "refused_flood");
}

/// A helper that forks `n` children, lets them all reach execve at once (a
/// pipe closed as the barrier), and execs `path` with `argv` in each.
const RACER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    int fds[2];
    if (pipe(fds)) return 2;
    for (int i = 0; i < n; i++) {
        if (fork() == 0) {
            char c;
            close(fds[1]);
            read(fds[0], &c, 1);
            execv(argv[2], &argv[3]);
            _exit(127);
        }
    }
    close(fds[0]);
    usleep(200000);
    close(fds[1]);
    int ran = 0, refused = 0, st;
    while (wait(&st) > 0) {
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) ran++; else refused++;
    }
    printf("racers=%d exited_ok=%d refused=%d\n", n, ran, refused);
    return 0;
}
"#;

fn racing_execs_on_one_grant_run_exactly_once() {
    let d = start("apr-race", &[]);
    let racer = compile_c(&d.work_dir, "racer", RACER);
    let mut live = d.live_session("agent");
    let terraform = d.bin_dir.join("terraform").display().to_string();
    let racer = racer.display().to_string();
    const RACERS: usize = 8;
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        // Open the request with the racers' exact argv, then approve it once.
        live.run(&format!("{racer} 1 {terraform} terraform apply"));
        let id = pending_for(&d, &live.session_id, &["terraform", "apply"]);
        assert!(approvals(&d, &["approve", &id]).status.success());
        let (out, _) = live.run(&format!("{racer} {RACERS} {terraform} terraform apply"));
        let ran = out.matches(RAN).count();
        println!("round {round}: {RACERS} racing execs of one one-shot grant: {ran} ran; {}", out.lines().find(|l| l.starts_with("racers=")).unwrap_or(""));
        assert_eq!(ran, 1, "round {round}: {ran} of {RACERS} racing execs ran on one grant:\n{out}");
    }
}

fn requests_survive_a_daemon_restart() {
    let mut d = start("apr-restart", &[]);
    let mut live = d.live_session("agent");
    let out = held(&mut live, "terraform apply");
    let id = request_id(&out);
    // As a crash or an upgrade leaves it: the enforcement stays pinned, the next daemon adopts it.
    d.kill_hard();
    d.restart();
    assert_eq!(request_json(&d, &id)["state"], "pending");
    assert!(approvals(&d, &["approve", &id]).status.success());
    let (ran, out) = run(&mut live, "terraform apply");
    assert!(ran, "the request approved after a restart did not let the command run:\n{out}");
}

fn approvers_are_notified_by_a_signed_webhook() {
    let (url, posts) = webhook_receiver();
    let dir = TempDir::new("apr-notify-config");
    let config = dir.0.join("notify.toml");
    std::fs::write(&config, format!("[[webhooks]]\nurl = \"{url}\"\nsecret = \"s3cret\"\ninitial_backoff_ms = 50\n")).expect("write notify.toml");
    let config = config.display().to_string();
    let d = start("apr-notify", &["--notify-config", &config]);
    let mut live = d.live_session("agent");
    let id = request_id(&held(&mut live, "terraform apply"));
    let next = |what: &str| posts.recv_timeout(seconds(20)).unwrap_or_else(|_| panic!("no webhook POST for {what}"));
    let (head, body) = next("the new request");
    let v: Value = serde_json::from_str(&body).expect("the webhook body is JSON");
    assert_eq!(v["event"], "approval.requested");
    assert_eq!(v["data"]["request"]["id"], id.as_str());
    assert!(head.to_ascii_lowercase().contains("x-airlock-signature: t="), "unsigned webhook: {head}");
    assert!(approvals(&d, &["reject", &id, "--reason", "no"]).status.success());
    let (_, body) = next("the decision");
    let v: Value = serde_json::from_str(&body).expect("the webhook body is JSON");
    assert_eq!((v["event"].as_str(), v["data"]["request"]["state"].as_str()), (Some("approval.decided"), Some("rejected")));

    // A malformed notification config is refused at start, naming the file and the field.
    std::fs::write(dir.0.join("bad.toml"), "[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"s\"\n").expect("write bad.toml");
    let bad = std::process::Command::new(AGENT)
        .args(["run", "--notify-config"])
        .arg(dir.0.join("bad.toml"))
        .args(["--state-dir"])
        .arg(dir.0.join("state"))
        .output()
        .expect("run airlock-agent");
    let err = stderr(&bad);
    assert!(!bad.status.success() && err.contains("bad.toml") && err.contains("webhooks[0].url"), "{err}");
}

/// A governed process asks before it runs the command; the exec that follows
/// the approval finds the same request (the binding is computed alike in
/// user space and in the kernel), for a program and for a #! script.
fn an_approval_asked_for_before_the_command_serves_its_exec() {
    let d = start("apr-ask", &[]);
    write_file(&d.work_dir.join("deploy-tool"), &format!("#!/bin/sh\necho {RAN} deploy-tool \"$@\"\n"), 0o755);
    let mut live = d.live_session("agent");
    let socket = d.socket.display().to_string();
    for command in ["terraform apply -target=module.db", "$WORK/deploy-tool upgrade api"] {
        let (out, rc) = live.run(&format!("{AGENT} approvals request --socket {socket} --json --justification 'ticket 7' -- {command}"));
        assert_eq!(rc, 0, "approvals request {command}: {out}");
        let asked: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        let id = asked["id"].as_str().expect("an id").to_string();
        assert_eq!((asked["state"].as_str(), asked["justification"].as_str()), (Some("pending"), Some("ticket 7")));
        // Running it before the decision finds the same request.
        let out = held(&mut live, command);
        assert_eq!(request_id(&out), id, "the held exec of {command:?} opened another request");
        assert!(approvals(&d, &["approve", &id]).status.success());
        let (ran, out) = run(&mut live, command);
        assert!(ran, "{command:?} approved before it ran did not run:\n{out}");
    }
    // Only what an approval rule names can be asked for.
    let (out, rc) = live.run(&format!("{AGENT} approvals request --socket {socket} -- terraform plan"));
    assert!(rc != 0 && out.contains("needs no approval"), "{out}");
    let (out, rc) = live.run(&format!("{AGENT} approvals request --socket {socket} -- terraform destroy"));
    assert!(rc != 0 && out.contains("no approval can let it run"), "{out}");
    // Outside a session there is nothing to ask for.
    let outside = std::process::Command::new(AGENT).args(["approvals", "request", "--socket", &socket, "--", "terraform", "apply"]).output().expect("run");
    assert!(!outside.status.success() && stderr(&outside).contains("not in a governed session"), "{}", stderr(&outside));
}

kernel_tests!(
    approve_once_lets_exactly_that_command_run_once,
    an_approved_script_runs_once,
    reject_expiry_blocks_and_bad_input,
    a_grant_for_a_while_serves_the_rule_and_ends_with_the_session,
    a_governed_process_cannot_approve_and_a_flood_is_capped,
    racing_execs_on_one_grant_run_exactly_once,
    requests_survive_a_daemon_restart,
    approvers_are_notified_by_a_signed_webhook,
    an_approval_asked_for_before_the_command_serves_its_exec,
);
