//! The fleet, end to end on this kernel: a real gateway (SQLite, and
//! PostgreSQL with two replicas), real agents each with its own daemon,
//! pin directory, socket and state, enrolling with join tokens, enforcing
//! the policy versions the gateway sends and shipping every decision to it.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::Gateway;
use support::*;

const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["infra"] }"#;
const V1: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform apply"] }"#;
const V2: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform apply", "kubectl delete"] }"#;

/// A policy directory to push, in a fresh temp dir.
fn policy_dir(tag: &str, policy: &str) -> TempDir {
    let dir = TempDir::new(tag);
    write_policy_dir(&dir.0, &[("infra.json", policy)], &[("agent.json", ROLE)]);
    dir
}

fn push(gw: &Gateway, dir: &TempDir, comment: &str) -> Value {
    let path = dir.0.join("policy");
    gw.json(&["policy", "push", path.to_str().expect("utf-8 path"), "--comment", comment])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for `pred` to hold, or fails with `what`.
fn wait_for(what: &str, limit: u64, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + seconds(limit);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `airlock-agent run` that must fail before it loads anything (enrollment).
fn failed_enrollment(gw: &Gateway, token: &str, host: &str) -> String {
    let dir = TempDir::new("enroll-fail");
    let out = Command::new(AGENT)
        .arg("run")
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .arg("--socket")
        .arg(dir.0.join("agent.sock"))
        .arg("--pin-dir")
        .arg(unique_pin_dir("enroll-fail"))
        .args(gw.agent_args(token, host))
        .output()
        .expect("run airlock-agent");
    assert!(!out.status.success(), "enrollment with {token:?} succeeded");
    stderr(&out)
}

fn two_agents_enroll_enforce_pushed_versions_and_follow_a_rollback() {
    let gw = Gateway::start("fleet");
    let join = gw.token(&["--join", "--uses", "2"]);
    let a = Daemon::start_without_policy_dir("fleet-a", &gw.agent_args(&join, "host-a"));
    let b = Daemon::start_without_policy_dir("fleet-b", &gw.agent_args(&join, "host-b"));
    let err = failed_enrollment(&gw, &join, "host-c");
    assert!(err.contains("used up"), "a third enrollment with a two-use token: {err}");

    let v1 = policy_dir("v1", V1);
    assert_eq!(push(&gw, &v1, "block terraform apply")["version"], 1);
    for host in ["host-a", "host-b"] {
        let h = gw.wait_enforced(host, 1);
        assert_eq!(h["connected"], true, "{h}");
        assert!(!h["backend"].as_str().unwrap_or("").is_empty() && !h["kernel"].as_str().unwrap_or("").is_empty(), "{h}");
    }
    // A live tail across hosts, started before the session.
    let mut follow = Command::new(support::gateway::gateway_binary())
        .args(["decisions", "--follow", "--json", "--limit", "0", "--decision", "deny", "--data-dir"])
        .arg(&gw.data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start decisions --follow");
    let tail = follow.stdout.take().expect("the tail's stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(tail).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let denied = a.governed(Some("agent"), "terraform apply");
    assert!(!denied.tool_ran(), "v1 did not block terraform apply on host-a: {}", denied.all_output());
    let followed = loop {
        let line = lines.recv_timeout(seconds(30)).expect("the live tail showed no deny");
        let d: Value = serde_json::from_str(&line).expect("a JSON decision");
        if d["decision"]["session_id"] == denied.session_id.as_str() {
            break d;
        }
    };
    assert_eq!((followed["host"].as_str(), followed["decision"]["rule"].as_str()), (Some("host-a"), Some("terraform apply")), "{followed}");
    let _ = follow.kill();
    let _ = follow.wait();
    let allowed = b.governed(Some("agent"), "kubectl delete pod x");
    assert!(allowed.tool_ran(), "v1 blocked kubectl delete on host-b: {}", allowed.all_output());
    wait_for("host-a's deny at the gateway", 30, || {
        gw.decisions(Some("host-a"), &["--decision", "deny", "--kind", "exec"])
            .iter()
            .any(|d| d["decision"]["session_id"] == denied.session_id.as_str() && d["host"] == "host-a")
    });

    let v2 = policy_dir("v2", V2);
    let pushed = push(&gw, &v2, "and kubectl delete");
    assert_eq!(pushed["version"], 2);
    assert!(pushed["diff"].as_str().unwrap_or("").contains("+"), "no diff: {pushed}");
    gw.wait_enforced("host-a", 2);
    gw.wait_enforced("host-b", 2);
    let blocked = b.governed(Some("agent"), "kubectl delete pod x");
    assert!(!blocked.tool_ran(), "v2 did not block kubectl delete on host-b: {}", blocked.all_output());

    let back = gw.json(&["policy", "rollback", "1"]);
    assert_eq!((back["version"].as_u64(), back["rollback_of"].as_u64()), (Some(3), Some(1)), "{back}");
    gw.wait_enforced("host-a", 3);
    gw.wait_enforced("host-b", 3);
    let again = b.governed(Some("agent"), "kubectl delete pod x");
    assert!(again.tool_ran(), "after the rollback kubectl delete is still blocked: {}", again.all_output());
    let history = gw.json(&["policy", "history"]);
    let versions: Vec<u64> = history["versions"].as_array().expect("versions").iter().filter_map(|v| v["version"].as_u64()).collect();
    assert_eq!(versions, vec![3, 2, 1], "{history}");
    // The agents' own status says which bundle they enforce.
    let status = a.status_json();
    assert_eq!(status["gateway"]["policy_version"], 3, "{status}");
    assert_eq!(status["gateway"]["connected"], true, "{status}");
}

fn a_gateway_killed_in_a_flood_of_decisions_loses_and_duplicates_nothing() {
    let mut gw = Gateway::start("flood");
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("flood-a", &gw.agent_args(&join, "flood-a"));
    push(&gw, &policy_dir("flood-policy", V1), "flood");
    gw.wait_enforced("flood-a", 1);

    let socket = a.socket.clone();
    let path = a.path_env();
    let work = a.work_dir.clone();
    let flood = std::thread::spawn(move || {
        Command::new(AGENT)
            .args(["launch", "--socket"])
            .arg(&socket)
            .args(["--role", "agent", "--", "bash", "-c", "for i in $(seq 3000); do terraform plan >/dev/null; done"])
            .current_dir(work)
            .env("PATH", path)
            .output()
            .expect("run the flood")
    });
    wait_for("the flood to reach the gateway", 60, || gw.decisions(Some("flood-a"), &[]).len() > 200);
    gw.kill_hard();
    std::thread::sleep(seconds(2));
    gw.restart();
    let out = flood.join().expect("the flood thread");
    assert!(out.status.success(), "the flood failed: {}", stderr(&out));

    // The host's own record: every decision its store holds, once its writer caught up.
    let local_ids = || -> BTreeSet<u64> {
        let local = a.cli(&["decisions", "--limit", "1000000", "--json"]);
        assert!(local.status.success(), "local decisions: {}", stderr(&local));
        String::from_utf8_lossy(&local.stdout).lines().map(|l| serde_json::from_str::<Value>(l).expect("JSON")["id"].as_u64().expect("an id")).collect()
    };
    let mut local = BTreeSet::new();
    wait_for("the host's store to hold the whole flood", 60, || {
        let now = local_ids();
        let settled = now.len() > 3000 && now == local;
        local = now;
        settled
    });
    let local_ids = local;
    assert_eq!(a.status_json()["store"]["dropped"], 0, "the host's own store dropped decisions: the comparison would be unfair");
    let mut shipped = Vec::new();
    wait_for("the gateway to hold every decision of the host", 120, || {
        shipped = gw.decisions(Some("flood-a"), &[]);
        shipped.len() >= local_ids.len()
    });
    let mut seqs = BTreeMap::new();
    for d in &shipped {
        *seqs.entry(d["seq"].as_u64().expect("seq")).or_insert(0) += 1;
    }
    let duplicated: Vec<_> = seqs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "seqs stored twice: {duplicated:?}");
    let gateway_ids: BTreeSet<u64> = shipped.iter().filter_map(|d| d["decision"]["id"].as_u64()).collect();
    assert_eq!(shipped.len(), gateway_ids.len(), "the same decision stored under two seqs");
    let missing: Vec<_> = local_ids.difference(&gateway_ids).take(10).collect();
    assert!(missing.is_empty(), "decisions the gateway never got (first 10): {missing:?}");
    assert_eq!(gateway_ids, local_ids, "the gateway's decisions of the host differ from the host's own");
    let host = gw.host("flood-a").expect("the host");
    assert_eq!(host["lost"].as_u64().unwrap_or(0), 0, "{host}");
}

fn an_agent_restarted_while_the_gateway_is_down_enforces_the_last_good_bundle() {
    let mut gw = Gateway::start("down");
    let join = gw.token(&["--join"]);
    let mut a = Daemon::start_without_policy_dir("down-a", &gw.agent_args(&join, "down-a"));
    push(&gw, &policy_dir("down-policy", V1), "v1");
    gw.wait_enforced("down-a", 1);
    gw.stop();
    a.stop();
    a.restart();
    let status = a.wait_status("the gateway bundle in force while the gateway is down", |s| s["gateway"]["policy_version"] == 1);
    assert_eq!(status["gateway"]["connected"], false, "{status}");
    let denied = a.governed(Some("agent"), "terraform apply");
    assert!(!denied.tool_ran(), "the last good bundle is not enforced after a restart without the gateway: {}", denied.all_output());
    // The decisions made meanwhile reach the gateway once it is back.
    gw.restart();
    wait_for("the deny made while the gateway was down", 60, || {
        gw.decisions(Some("down-a"), &["--decision", "deny"]).iter().any(|d| d["decision"]["session_id"] == denied.session_id.as_str())
    });
    a.wait_status("the link back up", |s| s["gateway"]["connected"] == true);
}

fn orgs_are_isolated_and_bad_input_gets_a_clear_error() {
    let gw = Gateway::start("orgs");
    let ok = |args: &[&str]| {
        let out = gw.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    ok(&["org", "create", "payments"]);
    let again = gw.cli(&["org", "create", "payments"]);
    assert!(!again.status.success() && stderr(&again).contains("payments"), "a second org payments: {}", stderr(&again));
    let pay_admin = gw.token(&["--org", "payments", "--role", "admin"]);
    let viewer = gw.token(&["--role", "viewer"]);

    // Another org is "not found", never shown.
    let out = gw.cli_as(&pay_admin, &["hosts", "--org", "default"]);
    assert!(!out.status.success() && stderr(&out).contains("org \"default\" not found"), "{}", stderr(&out));
    let pushed = gw.cli_as(&pay_admin, &["policy", "push", policy_dir("pay", V1).0.join("policy").to_str().unwrap(), "--json"]);
    assert!(pushed.status.success(), "payments' admin pushes its own policy: {}", stderr(&pushed));
    let default_policy = gw.cli(&["policy", "show"]);
    assert!(!default_policy.status.success() && stderr(&default_policy).contains("no policy yet"), "the default org sees payments' policy: {}", stderr(&default_policy));

    // Roles.
    let out = gw.cli_as(&viewer, &["policy", "push", policy_dir("viewer", V1).0.join("policy").to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("needs the admin role"), "a viewer pushed: {}", stderr(&out));
    let out = gw.cli_as("alk_api_0000", &["hosts"]);
    assert!(!out.status.success() && stderr(&out).contains("unknown or revoked API token"), "{}", stderr(&out));

    // An invalid policy is refused with its file and field; the version in force stays.
    let bad = policy_dir("bad", r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": "terraform apply" }"#);
    let out = gw.cli(&["policy", "push", bad.0.join("policy").to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("infra.json") && err.contains("blocked_commands"), "an invalid push: {err}");
    let out = gw.cli(&["policy", "show"]);
    assert!(!out.status.success(), "the default org got a version from an invalid push");

    // Join tokens: unknown, expired, and an API token in its place.
    assert!(failed_enrollment(&gw, "alk_join_00", "h1").contains("unknown join token"));
    let short = gw.token(&["--join", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(failed_enrollment(&gw, &short, "h2").contains("expired"));
    assert!(failed_enrollment(&gw, &viewer, "h3").contains("not a join token"));
    assert!(failed_enrollment(&gw, &gw.token(&["--join"]), "bad/host").contains("host id"));

    // An agent told both where to get its policy refuses to start.
    let both = Command::new(AGENT).args(["run", "--policy-dir", "/etc", "--gateway", &gw.url()]).output().expect("run airlock-agent");
    assert!(!both.status.success() && stderr(&both).contains("--gateway and --policy-dir"), "{}", stderr(&both));

    // A message over the limit is refused, and the gateway stays up.
    let huge = TempDir::new("huge");
    let dir = write_policy_dir(&huge.0, &[("infra.json", &format!("{{ \"id\": \"infra\", \"name\": \"{}\" }}", "x".repeat(9 << 20)))], &[("agent.json", ROLE)]);
    let out = gw.cli(&["policy", "push", dir.to_str().unwrap()]);
    assert!(!out.status.success(), "a 9 MB push was taken");
    ok(&["hosts"]);
}

fn sessions_are_listed_and_revoked_through_the_gateway_and_a_revoked_host_is_refused() {
    let gw = Gateway::start("revoke");
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("revoke-a", &gw.agent_args(&join, "revoke-a"));
    push(&gw, &policy_dir("revoke-policy", V1), "v1");
    gw.wait_enforced("revoke-a", 1);
    let mut live = a.live_session("agent");
    let sid = live.session_id.clone();
    wait_for("the session at the gateway", 30, || {
        gw.json(&["sessions", "--host", "revoke-a"])["sessions"].as_array().is_some_and(|l| l.iter().any(|s| s["session"]["id"] == sid.as_str()))
    });
    let out = gw.cli(&["sessions", "revoke", "revoke-a", &sid, "--reason", "incident 7"]);
    assert!(out.status.success(), "revoke through the gateway: {}\ngateway log:\n{}", stderr(&out), gw.log());
    wait_for("the revoked session to end", 30, || matches!(live.child.try_wait(), Ok(Some(_))));
    wait_for("the revocation in the host's audit trail", 30, || {
        a.audit().iter().any(|l| l["kind"] == "revoke" && l["session_id"] == sid.as_str() && l["reason"].is_string())
    });
    wait_for("the revoked state at the gateway", 30, || {
        gw.json(&["sessions", "--host", "revoke-a", "--state", "revoked"])["sessions"].as_array().is_some_and(|l| l.iter().any(|s| s["session"]["id"] == sid.as_str()))
    });
    let out = gw.cli(&["sessions", "revoke", "revoke-a", "0123456789abcdef"]);
    assert!(!out.status.success() && stderr(&out).contains("no session"), "{}", stderr(&out));

    let out = gw.cli(&["hosts", "revoke", "revoke-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The agent's stream is refused from its next connection on.
    let refused = |s: &Value| s["gateway"]["connected"] == false && s["gateway"]["last_error"].as_str().is_some_and(|e| e.contains("certificate refused"));
    let deadline = Instant::now() + seconds(30);
    while !refused(&a.status_json()) {
        assert!(Instant::now() < deadline, "the agent's link was not refused after the host's revocation: {}\ngateway log:\n{}", a.status_json()["gateway"], gw.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn two_replicas_on_postgresql_share_the_fleet() {
    use airlock_gateway_store::testing::{postgres_required, PgCluster};
    let pg = match PgCluster::launch() {
        Ok(pg) => pg,
        Err(reason) if postgres_required() => {
            panic!("PostgreSQL is required here (AIRLOCK_REQUIRE_POSTGRES=1): {reason}")
        }
        Err(reason) => harness::skip(format!("no PostgreSQL server: {reason}")),
    };
    let url = pg.fresh_database().expect("a fresh PostgreSQL database");
    let gw1 = Gateway::start_on("pg1", Some(&url));
    let gw2 = gw1.replica("pg2");
    let join = gw1.token(&["--join", "--uses", "2"]);
    let _a = Daemon::start_without_policy_dir("pg-a", &gw1.agent_args(&join, "pg-a"));
    let b = Daemon::start_without_policy_dir("pg-b", &gw2.agent_args(&join, "pg-b"));

    // Pushed through one replica, enforced by the agent connected to the other.
    push(&gw1, &policy_dir("pg-v1", V1), "v1");
    gw2.wait_enforced("pg-a", 1);
    gw1.wait_enforced("pg-b", 1);
    let denied = b.governed(Some("agent"), "terraform apply");
    assert!(!denied.tool_ran(), "pg-b does not enforce v1: {}", denied.all_output());
    wait_for("pg-b's deny through replica 1", 30, || {
        gw1.decisions(Some("pg-b"), &["--decision", "deny"]).iter().any(|d| d["decision"]["session_id"] == denied.session_id.as_str())
    });
    // A rollback through the second replica reaches both.
    push(&gw2, &policy_dir("pg-v2", V2), "v2");
    gw1.wait_enforced("pg-a", 2);
    gw1.wait_enforced("pg-b", 2);
    // A revocation asked of replica 1 for a session on the host connected to replica 2.
    let mut live = b.live_session("agent");
    let sid = live.session_id.clone();
    wait_for("pg-b's session at the gateway", 30, || {
        gw1.json(&["sessions", "--host", "pg-b"])["sessions"].as_array().is_some_and(|l| l.iter().any(|s| s["session"]["id"] == sid.as_str()))
    });
    let out = gw1.cli(&["sessions", "revoke", "pg-b", &sid]);
    assert!(out.status.success(), "revoke across replicas: {}\nreplica 1:\n{}\nreplica 2:\n{}", stderr(&out), gw1.log(), gw2.log());
    wait_for("the revoked session to end", 30, || matches!(live.child.try_wait(), Ok(Some(_))));

    // The database goes away: every request that needs it says so, the
    // agents keep enforcing and spooling, and nothing is lost once it is back.
    pg.stop().expect("stop PostgreSQL");
    let out = gw1.cli(&["hosts"]);
    assert!(!out.status.success() && stderr(&out).contains("database is unavailable"), "hosts with the database down: {}", stderr(&out));
    let meanwhile = b.governed(Some("agent"), "terraform apply");
    assert!(!meanwhile.tool_ran(), "pg-b stopped enforcing while the database was down: {}", meanwhile.all_output());
    pg.start().expect("start PostgreSQL again");
    wait_for("the deny made while the database was down", 90, || {
        let out = gw2.cli(&["decisions", "--host", "pg-b", "--session", &meanwhile.session_id, "--json"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"deny\"")
    });
}

fn a_full_spool_counts_what_it_drops_and_nothing_else_is_lost() {
    let mut gw = Gateway::start("spool");
    let join = gw.token(&["--join"]);
    let mut args = gw.agent_args(&join, "spool-a");
    args.extend(["--spool-max-mb".to_string(), "1".to_string()]);
    let a = Daemon::start_without_policy_dir("spool-a", &args);
    push(&gw, &policy_dir("spool-policy", V1), "v1");
    gw.wait_enforced("spool-a", 1);
    gw.stop();
    // About 3 MB of decisions into a 1 MB spool while the gateway is down.
    let flood = a.governed(Some("agent"), "for i in $(seq 8000); do terraform plan >/dev/null; done");
    assert!(flood.output.status.success(), "the flood failed: {}", flood.all_output());
    let status = a.wait_status("the spool's losses in status", |s| s["gateway"]["lost"].as_u64().unwrap_or(0) > 0);
    let lost = status["gateway"]["lost"].as_u64().unwrap_or(0);
    a.wait_audit("a shipping_lost record in the audit trail", |l| l["kind"] == "shipping_lost");

    gw.restart();
    let local_count = || -> usize {
        let out = a.cli(&["decisions", "--limit", "1000000", "--json"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // Every decision the host made is either at the gateway or counted in a
    // loss marker there (markers the gateway stores carry no agent id).
    let mut account = (0u64, 0u64, 0usize);
    wait_for("the gateway to account for every decision of the host", 90, || {
        let shipped = gw.decisions(Some("spool-a"), &[]);
        let records = shipped.iter().filter(|d| d["decision"]["id"].as_u64().unwrap_or(0) > 0).count() as u64;
        let dropped: u64 = shipped
            .iter()
            .filter(|d| d["decision"]["id"].as_u64().unwrap_or(0) == 0 && d["decision"]["kind"] == "shipping_lost")
            .map(|d| d["decision"]["events_lost"]["count"].as_u64().unwrap_or(0))
            .sum();
        account = (records, dropped, local_count());
        account.0 + account.1 == account.2 as u64 && account.1 > 0
    });
    let (records, dropped, local) = account;
    assert!(dropped >= lost, "the gateway counts {dropped} dropped, the agent said {lost}");
    assert!(records > 1000, "only {records} decisions were shipped of {local}");
    let host = gw.host("spool-a").expect("the host");
    assert_eq!(host["lost"].as_u64(), Some(dropped), "{host}");
    assert_eq!(a.status_json()["store"]["dropped"], 0, "the host's own store dropped decisions: the accounting would be unfair");
}

fn a_policy_dry_run_shows_what_would_newly_be_denied_or_allowed() {
    let gw = Gateway::start("simulate");
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("simulate-a", &gw.agent_args(&join, "simulate-a"));
    push(&gw, &policy_dir("simulate-v1", V1), "v1");
    gw.wait_enforced("simulate-a", 1);
    let s = a.governed(Some("agent"), "terraform apply; for i in 1 2 3; do kubectl delete pod x; done");
    assert_eq!(s.all_output().matches(RAN).count(), 3, "v1: kubectl delete runs, terraform apply does not: {}", s.all_output());
    wait_for("the session's execs at the gateway", 30, || {
        gw.decisions(Some("simulate-a"), &["--session", &s.session_id, "--kind", "exec"]).len() >= 5
    });
    // A candidate that blocks kubectl delete and no longer blocks terraform apply.
    let candidate = policy_dir("simulate-v2", r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["kubectl delete"] }"#);
    let r = gw.json(&["policy", "simulate", candidate.0.join("policy").to_str().unwrap(), "--since", "1h"]);
    assert_eq!(r["newly_denied"], 3, "{r:#}");
    assert_eq!(r["newly_allowed"], 1, "{r:#}");
    let changes = r["changes"].as_array().expect("changes");
    let denied = changes.iter().find(|c| c["change"] == "newly_denied").expect("a newly_denied group");
    assert_eq!((denied["rule"].as_str(), denied["host"].as_str(), denied["count"].as_u64()), (Some("kubectl delete"), Some("simulate-a"), Some(3)), "{r:#}");
    let allowed = changes.iter().find(|c| c["change"] == "newly_allowed").expect("a newly_allowed group");
    assert_eq!(allowed["rule"], "terraform apply", "{r:#}");
    // The policy in force did not change.
    assert_eq!(gw.json(&["policy", "show"])["version"], 1);
}

fn a_python_grpcio_client_queries_the_fleet_and_malformed_calls_are_refused() {
    let python = python().unwrap_or_else(|why| {
        panic!("no Python with grpcio ({why}): run scripts/setup.sh (it makes target/pyvenv with grpcio and grpcio-tools from PyPI)")
    });
    let gw = Gateway::start("python");
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("python-a", &gw.agent_args(&join, "python-a"));
    push(&gw, &policy_dir("python-policy", V1), "v1");
    gw.wait_enforced("python-a", 1);
    let s = a.governed(Some("agent"), "terraform apply");
    wait_for("the deny at the gateway", 30, || !gw.decisions(Some("python-a"), &["--session", &s.session_id, "--decision", "deny"]).is_empty());

    // Stubs generated from the .protos by grpcio-tools, as a platform team would.
    let stubs = TempDir::new("py-gw-stubs");
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../airlock-api/proto");
    let gen = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_root)
        .arg(format!("--python_out={}", stubs.0.display()))
        .arg(format!("--grpc_python_out={}", stubs.0.display()))
        .args(["airlock/v1/airlock.proto", "airlock/gateway/v1/gateway.proto"])
        .output()
        .expect("run grpc_tools.protoc");
    assert!(gen.status.success(), "protoc: {}", stderr(&gen));
    let token = std::fs::read_to_string(gw.data_dir.join("admin.token")).expect("the admin token");
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fleet_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .args(["--stubs", stubs.0.to_str().unwrap(), "--server", &format!("localhost:{}", gw.port), "--ca", gw.ca().to_str().unwrap()])
        .args(["--token", token.trim(), "--host", "python-a", "--session", &s.session_id, "--timeout", &seconds(20).as_secs().to_string()])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{}\ngateway log:\n{}", stderr(&out), gw.log());
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the client's JSON report");
    for check in ["whoami", "no_token_refused", "wrong_token_refused", "hosts", "query_deny", "malformed_refused", "agent_stream_needs_a_certificate", "bad_enrollment_refused", "still_answering"] {
        assert_eq!(report["checks"][check], true, "check {check} failed: {report:#}");
    }
}

const APPROVALS: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "approval_commands": ["terraform apply"] }"#;

/// A command held on one host is approved by an approver at the gateway (not
/// on the host), the verdict reaches the host as a command, and the retry runs once.
fn an_approver_at_the_gateway_lets_a_held_command_run_once() {
    let (hook, posts) = webhook_receiver();
    let gw = Gateway::start_with_config("approvals", &format!("[[notify.default.webhooks]]\nurl = \"{hook}\"\nsecret = \"gw-secret\"\ninitial_backoff_ms = 50\n"));
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("fleet-apr", &gw.agent_args(&join, "host-a"));
    let dir = policy_dir("approvals", APPROVALS);
    push(&gw, &dir, "terraform apply needs a person");
    gw.wait_enforced("host-a", 1);

    let mut live = a.live_session("agent");
    let (out, _) = live.run("terraform apply");
    assert!(!out.contains(RAN), "a held command ran: {out}");
    let mut id = String::new();
    wait_for("the request at the gateway", 30, || {
        let list = gw.json(&["approvals", "list", "--state", "pending"]);
        let found = list["approvals"].as_array().into_iter().flatten().find(|a| a["request"]["session_id"] == live.session_id.as_str());
        if let Some(a) = found {
            id = a["request"]["id"].as_str().unwrap_or_default().to_string();
        }
        !id.is_empty()
    });
    let next = |what: &str| -> Value {
        let (_, body) = posts.recv_timeout(seconds(20)).unwrap_or_else(|_| panic!("no webhook from the gateway for {what}; log:\n{}", gw.log()));
        serde_json::from_str(&body).expect("a JSON webhook body")
    };
    let opened = next("the new request");
    assert_eq!((opened["event"].as_str(), opened["data"]["org"].as_str(), opened["data"]["request"]["id"].as_str()), (Some("approval.requested"), Some("default"), Some(id.as_str())));

    let viewer = gw.token(&["--role", "viewer"]);
    let refused = gw.cli_as(&viewer, &["approvals", "approve", &id]);
    assert!(!refused.status.success() && stderr(&refused).contains("approver"), "a viewer approved: {}", stderr(&refused));
    let approver = gw.token(&["--role", "approver", "--label", "oncall"]);
    let given = gw.cli_as(&approver, &["approvals", "approve", &id, "--reason", "change 42"]);
    assert!(given.status.success(), "the approver's approve failed: {}\n{}", stderr(&given), gw.log());
    let second = gw.cli_as(&approver, &["approvals", "reject", &id]);
    assert!(!second.status.success() && stderr(&second).contains("already decided"), "a second verdict: {}", stderr(&second));
    let waited = gw.cli(&["approvals", "wait", &id, "--timeout", "60s", "--json"]);
    assert_eq!(waited.status.code(), Some(0), "gateway wait: {}{}", String::from_utf8_lossy(&waited.stdout), stderr(&waited));

    // The host holds the same verdict, given by the gateway's approver.
    let local: Value = serde_json::from_slice(&a.cli(&["approvals", "show", &id, "--json"]).stdout).expect("the host's record");
    assert_eq!(local["state"], "approved");
    assert!(local["verdict"]["decided_by"].as_str().unwrap_or("").contains("oncall"), "{local}");

    let (out, _) = live.run("terraform apply");
    assert!(out.contains(RAN), "the command approved at the gateway did not run: {out}\nagent log:\n{}", a.log());
    let (out, _) = live.run("terraform apply");
    assert!(!out.contains(RAN), "the one-shot grant served twice: {out}");
    let closed = next("the decision");
    assert_eq!((closed["event"].as_str(), closed["data"]["request"]["state"].as_str()), (Some("approval.decided"), Some("approved")));
    // The fleet's trail holds every step.
    wait_for("the grant's use at the gateway", 30, || gw.decisions(Some("host-a"), &[]).iter().any(|d| d["decision"]["approval"]["event"] == "grant_used"));
}

const GUARDED: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform destroy"] }"#;

/// Blocks in force at the gateway, as `security blocks --json` lists them.
fn gateway_blocks(gw: &Gateway) -> Vec<Value> {
    gw.json(&["security", "blocks", "--status", "active"])["blocks"].as_array().cloned().unwrap_or_default()
}

/// The gateway's detectors find one host's denials; the hard block they place
/// on the user reaches a second host over its stream and its kernel refuses
/// the user's session there, until an admin lifts it at the gateway.
fn a_block_made_from_one_hosts_decisions_is_enforced_on_another() {
    let gw = Gateway::start_with_config("security", "detect_interval = 1\n");
    let settings = TempDir::new("gw-security-settings");
    let file = settings.0.join("settings.toml");
    std::fs::write(&file, "masking = \"type_only\"\n[rules.repeated_denials]\nthreshold = 5\nseverity = \"critical\"\n[rules.escalation_probing]\nenabled = false\n").expect("write settings");
    let set = gw.cli(&["security", "settings", "set", &file.display().to_string(), "--comment", "five denials are critical"]);
    assert!(set.status.success(), "settings set: {}", stderr(&set));
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("sec-a", &gw.agent_args(&join, "sec-a"));
    let b = Daemon::start_without_policy_dir("sec-b", &gw.agent_args(&join, "sec-b"));
    let dir = policy_dir("security", GUARDED);
    push(&gw, &dir, "terraform destroy is blocked");
    gw.wait_enforced("sec-a", 1);
    gw.wait_enforced("sec-b", 1);

    let mut on_b = b.live_session("agent");
    let (out, _) = on_b.run("terraform plan");
    assert!(out.contains(RAN), "{out}");
    // The org's masking strategy (type_only) is in force on the hosts, not their own (full).
    let (out, _) = on_b.run("terraform plan --password=hunter2hunter2");
    assert!(out.contains(RAN), "{out}");
    let masked = b.wait_audit("the masked command line", |v| v["session_id"] == on_b.session_id.as_str() && v["argv"].to_string().contains("--password="));
    let argv = masked[0]["argv"].to_string();
    assert!(!argv.contains("hunter2") && argv.contains("--password=[") && !argv.contains("****"), "the org's type_only masking is not in force: {argv}");
    let mut on_a = a.live_session("agent");
    for _ in 0..5 {
        let (out, _) = on_a.run("terraform destroy");
        assert!(!out.contains(RAN), "{out}");
    }
    let mut blocks = Vec::new();
    // One detector pass places a block per subject (the user and host a's
    // session) and stores them one after the other: wait for both, so that
    // the lifts below cover every block in force.
    wait_for("the gateway's hard blocks on the user and the session", 60, || {
        blocks = gateway_blocks(&gw);
        blocks.iter().any(|b| b["subject_kind"] == "user" && b["subject"] == "root" && b["kind"] == "hard") && blocks.iter().any(|b| b["subject_kind"] == "session")
    });
    let user_block = blocks.iter().find(|b| b["subject_kind"] == "user").cloned().expect("the user's block");
    let id = user_block["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(user_block["rule"], "repeated_denials");

    // Host b made none of those denials; its kernel refuses the user's session all the same.
    wait_for("the block in force on host b", 30, || {
        let (out, _) = on_b.run("terraform plan");
        !out.contains(RAN)
    });
    b.wait_audit("host b's refusal", |v| v["session_id"] == on_b.session_id.as_str() && v["reason"] == "security_block" && v["security_block"] == id.as_str());
    let refused = b.governed(Some("agent"), "terraform plan");
    assert!(!refused.tool_ran() && refused.all_output().contains(&id), "a new session started on host b: {}", refused.all_output());
    let local = b.cli(&["security", "lift", &id]);
    assert!(!local.status.success() && stderr(&local).contains("lift it there"), "a host lifted the gateway's block: {}", stderr(&local));

    for block in &blocks {
        let out = gw.cli(&["security", "lift", block["id"].as_str().unwrap_or_default(), "--reason", "reviewed"]);
        assert!(out.status.success(), "lift at the gateway: {}", stderr(&out));
    }
    wait_for("the lift on host b", 30, || {
        let (out, _) = on_b.run("terraform plan");
        out.contains(RAN)
    });
    assert!(b.governed(Some("agent"), "terraform plan").tool_ran(), "host b still refuses the user's new sessions");
    // Each host hears of the lifts over its own stream.
    wait_for("no block in force on host a", 30, || {
        let out = a.cli(&["security", "blocks", "--status", "active", "--json"]);
        out.status.success() && serde_json::from_slice::<Vec<Value>>(&out.stdout).is_ok_and(|active| active.is_empty())
    });
    let (out, _) = on_a.run("terraform plan");
    assert!(out.contains(RAN), "host a still enforces a lifted block: {out}");
    on_a.quit();
    on_b.quit();
}

kernel_tests!(
    two_agents_enroll_enforce_pushed_versions_and_follow_a_rollback,
    a_gateway_killed_in_a_flood_of_decisions_loses_and_duplicates_nothing,
    an_agent_restarted_while_the_gateway_is_down_enforces_the_last_good_bundle,
    orgs_are_isolated_and_bad_input_gets_a_clear_error,
    sessions_are_listed_and_revoked_through_the_gateway_and_a_revoked_host_is_refused,
    two_replicas_on_postgresql_share_the_fleet,
    a_full_spool_counts_what_it_drops_and_nothing_else_is_lost,
    a_policy_dry_run_shows_what_would_newly_be_denied_or_allowed,
    a_python_grpcio_client_queries_the_fleet_and_malformed_calls_are_refused,
    an_approver_at_the_gateway_lets_a_held_command_run_once,
    a_block_made_from_one_hosts_decisions_is_enforced_on_another,
);
