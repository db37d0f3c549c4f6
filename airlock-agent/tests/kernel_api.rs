//! Kernel tests of the gRPC API: a real daemon, real governed
//! sessions, and clients that are not our CLI: a Rust client generated from
//! the same .proto (tonic), and Python grpcio generated from it at test time.
//! Revocation is checked in two halves: the kernel's denial of a revoked
//! session, and the daemon's killing of a session's whole process tree.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};

use libbpf_rs::MapCore;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_api::v1 as pb;
use pb::airlock_client::AirlockClient;
use serde_json::Value;
use support::pki::{free_port, Pki};
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const POLICY: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply", "kubectl delete"],
  "egress": { "deny": ["10.0.0.0/8"] }, "rules": [] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

fn daemon(tag: &str) -> Daemon {
    Daemon::start(tag, &[("test-infra.json", POLICY)], &[("agent.json", ROLE)])
}

fn runtime() -> tokio::runtime::Runtime {
    // Two workers: a test may block one (block_in_place) while a stream is read.
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

async fn unix_client(socket: &Path) -> AirlockClient<Channel> {
    airlock_api::client::connect_unix(socket).await.expect("connect to the API socket")
}

/// Polls `f` until it returns Some, within the (scaled) deadline.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + seconds(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query(c: &mut AirlockClient<Channel>, filter: pb::DecisionFilter, page_size: u32) -> Vec<pb::Decision> {
    c.query_decisions(pb::QueryDecisionsRequest { filter: Some(filter), page_size, page_token: String::new() })
        .await
        .expect("QueryDecisions")
        .into_inner()
        .decisions
}

fn session_filter(session: &str) -> pb::DecisionFilter {
    pb::DecisionFilter { session_id: session.to_string(), ..Default::default() }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as i64
}

/// A governed session started in its own process group, so the test can end
/// whatever it leaves behind (by that group, which only it started).
struct Launched {
    child: Child,
}

impl Launched {
    fn start(d: &Daemon, script: &str, stdout: Stdio) -> Launched {
        let child = Command::new(AGENT)
            .args(["launch", "--socket"])
            .arg(&d.socket)
            .args(["--role", "agent", "--", "bash", "-c", script])
            .current_dir(&d.work_dir)
            .env("PATH", d.path_env())
            .env("WORK", &d.work_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("launch a session");
        Launched { child }
    }

    /// Waits (bounded) for the session's root to end.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + seconds(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the session's root process did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Everything the session started stays in its process group (orphans too).
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn the_api_reports_sessions_decisions_and_policy() {
    let d = daemon("api");
    let backend = d.backend();
    let mode = std::fs::metadata(d.api_socket()).expect("the API socket exists").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the API socket is for root and the airlock group only");
    let start = now_ns();
    let s1 = d.governed(Some("agent"), "terraform apply; terraform init; echo done");
    assert!(!s1.tool_ran() || s1.stdout.contains("init"), "{}", s1.all_output());
    let id = s1.session_id.clone();
    assert!(!id.is_empty(), "{}", s1.all_output());

    let rt = runtime();
    rt.block_on(async {
        let mut c = unix_client(&d.api_socket()).await;
        let status = c.status(pb::StatusRequest {}).await.expect("Status").into_inner();
        assert_eq!(status.backend, backend);
        assert!(status.hooks.iter().any(|h| h.program == "airlock_sched_exec"), "{:?}", status.hooks);
        assert!(status.store.as_ref().is_some_and(|s| s.path.ends_with("decisions.db")));

        // The deny, found by session + kind + verdict; the store is written in batches.
        let deny = pb::DecisionFilter { decision: pb::Verdict::Deny as i32, kind: pb::DecisionKind::Exec as i32, ..session_filter(&id) };
        let denies = eventually("the deny in the store", || {
            let mut c = c.clone();
            let deny = deny.clone();
            async move { Some(query(&mut c, deny, 100).await).filter(|v| !v.is_empty()) }
        })
        .await;
        assert_eq!(denies.len(), 1, "{denies:#?}");
        let dn = &denies[0];
        assert_eq!((dn.rule.as_deref(), dn.policy.as_deref(), dn.role.as_str()), (Some("terraform apply"), Some("test-infra"), "agent"));
        assert_eq!(dn.argv, vec!["terraform", "apply"]);
        assert!(dn.time_unix_nanos >= start && dn.time_unix_nanos <= now_ns());

        // The allowed `terraform init` (the shell's own exec names it in its -c script too).
        let allowed = pb::DecisionFilter { decision: pb::Verdict::Allow as i32, text: "terraform init".into(), ..session_filter(&id) };
        eventually("the allowed terraform init", || {
            let mut c = c.clone();
            let f = allowed.clone();
            async move { query(&mut c, f, 100).await.into_iter().find(|x| x.argv == ["terraform", "init"] && x.comm == "terraform") }
        })
        .await;
        // Every filter narrows as documented.
        let count = |f: pb::DecisionFilter| {
            let mut c = c.clone();
            async move { query(&mut c, f, 1000).await.len() }
        };
        let all = count(session_filter(&id)).await;
        assert!(all >= 3, "bash, terraform apply, terraform init at least: {all}");
        // The shell's -c script and the denied exec both hold the words.
        assert_eq!(count(pb::DecisionFilter { text: "TERRAFORM APPLY".into(), ..session_filter(&id) }).await, 2, "text is case-insensitive");
        assert_eq!(count(pb::DecisionFilter { text: "terraform apply".into(), ..deny.clone() }).await, 1);
        assert_eq!(count(pb::DecisionFilter { text: "terraform destroy".into(), ..session_filter(&id) }).await, 0);
        assert_eq!(count(pb::DecisionFilter { user: "root".into(), ..session_filter(&id) }).await, all);
        assert_eq!(count(pb::DecisionFilter { user: "0".into(), ..session_filter(&id) }).await, all);
        assert_eq!(count(pb::DecisionFilter { user: "no-such-user".into(), ..session_filter(&id) }).await, 0);
        assert_eq!(count(pb::DecisionFilter { role: "agent".into(), ..session_filter(&id) }).await, all);
        assert_eq!(count(pb::DecisionFilter { role: "other".into(), ..session_filter(&id) }).await, 0);
        assert_eq!(count(pb::DecisionFilter { kind: pb::DecisionKind::Connect as i32, ..session_filter(&id) }).await, 0);
        assert_eq!(count(pb::DecisionFilter { since_unix_nanos: start, until_unix_nanos: now_ns(), ..session_filter(&id) }).await, all);
        assert_eq!(count(pb::DecisionFilter { until_unix_nanos: start, ..session_filter(&id) }).await, 0);

        // Pages: newest first, no overlap, no gap.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let r = c
                .query_decisions(pb::QueryDecisionsRequest { filter: Some(session_filter(&id)), page_size: 1, page_token: token })
                .await
                .expect("a page")
                .into_inner();
            assert!(r.decisions.len() <= 1);
            seen.extend(r.decisions.iter().map(|x| x.id));
            token = r.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let full: Vec<u64> = query(&mut c, session_filter(&id), 1000).await.iter().map(|x| x.id).collect();
        assert_eq!(seen, full);
        assert!(full.windows(2).all(|w| w[0] > w[1]), "newest first: {full:?}");
        let bad = c.query_decisions(pb::QueryDecisionsRequest { filter: None, page_size: 5000, page_token: String::new() }).await;
        assert_eq!(bad.expect_err("page_size over the limit").code(), tonic::Code::InvalidArgument);

        // Sessions: the finished one is exited; a launch whose exec failed never ran.
        let session = eventually("the session's end", || {
            let mut c = c.clone();
            let id = id.clone();
            async move {
                let s = c.get_session(pb::GetSessionRequest { id }).await.ok()?.into_inner();
                (s.state == pb::SessionState::Exited as i32).then_some(s)
            }
        })
        .await;
        assert_eq!((session.role.as_str(), session.user.as_str(), session.agent.as_str()), ("agent", "root", "bash"));
        assert!(session.ended_at.is_some());
        let missing = c.get_session(pb::GetSessionRequest { id: "0123456789abcdef".into() }).await;
        assert_eq!(missing.expect_err("unknown session").code(), tonic::Code::NotFound);

        // Effective policy and reload.
        let p = c.get_effective_policy(pb::GetEffectivePolicyRequest { role: "agent".into() }).await.expect("policy").into_inner();
        assert_eq!(p.policies, vec!["test-infra"]);
        assert!(p.blocked_commands.iter().any(|r| r.command == ["terraform", "apply"] && r.policy == "test-infra"), "{p:#?}");
        assert!(p.denied_egress.iter().any(|r| r.destination == "10.0.0.0/8" && r.ports.is_empty()), "{p:#?}");
        let unknown = c.get_effective_policy(pb::GetEffectivePolicyRequest { role: "nope".into() }).await;
        assert_eq!(unknown.expect_err("unknown role").code(), tonic::Code::NotFound);
        let before = c.status(pb::StatusRequest {}).await.expect("Status").into_inner().policy.expect("policy").generation;
        let reloaded = c.reload_policy(pb::ReloadPolicyRequest {}).await.expect("ReloadPolicy").into_inner();
        assert_eq!(reloaded.generation, before + 1);

        // The live stream: a decision made after subscribing arrives, filtered.
        let mut stream = c
            .stream_decisions(pb::StreamDecisionsRequest {
                filter: Some(pb::DecisionFilter { text: "kubectl delete".into(), decision: pb::Verdict::Deny as i32, ..Default::default() }),
            })
            .await
            .expect("StreamDecisions")
            .into_inner();
        let s2 = tokio::task::block_in_place(|| d.governed(Some("agent"), "terraform init; kubectl delete pod x"));
        let next = tokio::time::timeout(seconds(20), stream.message()).await.expect("a streamed decision in time").expect("stream").expect("not ended");
        assert_eq!((next.session_id.as_str(), next.decision.as_str(), next.kind.as_str()), (s2.session_id.as_str(), "deny", "exec"));
        assert_eq!(next.rule.as_deref(), Some("kubectl delete"));
    });

    // The CLI speaks the same API.
    let out = d.cli(&["decisions", "--session", &id, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(lines.iter().any(|v| v["rule"] == "terraform apply" && v["decision"] == "deny"), "{lines:#?}");
    let table = String::from_utf8_lossy(&d.cli(&["decisions", "--decision", "deny", "--kind", "exec"]).stdout).into_owned();
    assert!(table.starts_with("TIME") && table.contains("terraform apply") && table.contains(&id), "{table}");
    let sessions = String::from_utf8_lossy(&d.cli(&["sessions", "list"]).stdout).into_owned();
    assert!(sessions.lines().any(|l| l.starts_with(&id) && l.contains("exited")), "{sessions}");
    let show = String::from_utf8_lossy(&d.cli(&["sessions", "show", &id]).stdout).into_owned();
    assert!(show.contains("state:      exited"), "{show}");
    let policy = String::from_utf8_lossy(&d.cli(&["policy", "show", "--role", "agent"]).stdout).into_owned();
    assert!(policy.contains("terraform apply") && policy.contains("10.0.0.0/8"), "{policy}");
}

fn a_launch_that_never_execs_stays_ready_until_it_ends() {
    let d = daemon("ready");
    let out = Command::new(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--", "/nonexistent/agent"])
        .output()
        .expect("launch");
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));
    let rt = runtime();
    rt.block_on(async {
        let mut c = unix_client(&d.api_socket()).await;
        let s = eventually("the session's end", || {
            let mut c = c.clone();
            async move {
                let list = c.list_sessions(pb::ListSessionsRequest { state: 0 }).await.ok()?.into_inner().sessions;
                list.into_iter().find(|s| s.command == ["/nonexistent/agent"] && s.state == pb::SessionState::Exited as i32)
            }
        })
        .await;
        // Never running: no exec of the agent happened. Exited only once the root ended.
        let running = c.list_sessions(pb::ListSessionsRequest { state: pb::SessionState::Running as i32 }).await.expect("list").into_inner();
        assert!(running.sessions.iter().all(|x| x.id != s.id));
        assert!(s.ended_at.is_some());
    });
    // A running session while it runs; the CLI names the states.
    let mut sleeper = Launched::start(&d, "sleep 30", Stdio::null());
    d.wait_status("the running sleep session", |s| {
        s["sessions"].as_array().is_some_and(|a| a.iter().any(|x| x["root_pid"] == sleeper.child.id() && x["state"] == "running"))
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper.child.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("end sleep");
    sleeper.wait();
}

/// One decision record from the kernel to every sink: every kind a session can
/// cause on this kernel (exec allowed and denied, connect, sendmsg, a Unix
/// socket, a protected file, a tamper attempt, the revocation) is in the audit
/// trail, and the same decision, field for field, comes back from the store
/// (QueryDecisions) and the live stream (StreamDecisions).
fn every_decision_kind_reaches_the_audit_trail_the_store_and_the_api_whole() {
    let root = TempDir::new("round-trip");
    let dir = root.0.canonicalize().expect("canonical temp dir");
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".aws")).expect("mkdir home");
    std::fs::write(home.join(".aws/credentials"), "[default]\n").expect("credentials");
    let broker = dir.join("broker.sock");
    let _broker = std::os::unix::net::UnixListener::bind(&broker).expect("broker socket");
    let (tcp, udp) = (TcpListener::bind("127.0.0.2:0").expect("tcp"), std::net::UdpSocket::bind("127.0.0.2:0").expect("udp"));
    let (tcp_port, udp_port) = (tcp.local_addr().expect("addr").port(), udp.local_addr().expect("addr").port());
    let policy = format!(
        r#"{{ "id": "all-kinds", "name": "All kinds", "blocked_commands": ["terraform apply"],
            "egress": {{ "deny": ["127.0.0.2/32"], "unix_deny": ["{}"] }},
            "protected_files": [{{ "path": "~/.aws/credentials", "allow": ["aws"] }}] }}"#,
        broker.display()
    );
    let d = Daemon::start("round-trip", &[("all.json", &policy)], &[("agent.json", r#"{ "id": "agent", "name": "Agent", "policies": ["all-kinds"] }"#)]);
    let unix_gap = d.status_text().contains("Unix socket rules (egress.unix_deny) are NOT enforced");
    let rt = runtime();
    let mut c = rt.block_on(unix_client(&d.api_socket()));
    let mut stream = rt.block_on(c.stream_decisions(pb::StreamDecisionsRequest { filter: None })).expect("StreamDecisions").into_inner();

    let probe = format!(
        r#"import socket
s = socket.socket(); s.settimeout(3)
try: s.connect(("127.0.0.2", {tcp_port})); print("connect ok")
except OSError as e: print("connect errno%d" % e.errno)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try: u.sendto(b"x", ("127.0.0.2", {udp_port})); print("sendto ok")
except OSError as e: print("sendto errno%d" % e.errno)
x = socket.socket(socket.AF_UNIX)
try: x.connect("{broker}"); print("unix ok")
except OSError as e: print("unix errno%d" % e.errno)
"#,
        broker = broker.display()
    );
    write_file(&d.work_dir.join("probe.py"), &probe, 0o644);
    let script = format!(
        "true\nterraform apply\npython3 probe.py\n(cat \"$HOME/.aws/credentials\")\n(kill -TERM {daemon})\necho done\n",
        daemon = d.child.id()
    );
    let s = d.governed_env(Some("agent"), &script, &[("HOME", &home.display().to_string())]);
    assert!(s.stdout.contains("connect errno1") && s.stdout.contains("sendto errno1"), "{}", s.all_output());
    let revoked = rt.block_on(c.revoke_session(pb::RevokeSessionRequest { id: s.session_id.clone(), reason: "round trip".into() }));
    revoked.expect("RevokeSession");

    // What the session was held to: every kind of rule, through the API and the CLI.
    let effective = rt.block_on(c.get_effective_policy(pb::GetEffectivePolicyRequest { role: "agent".into() })).expect("GetEffectivePolicy").into_inner();
    assert!(effective.unix_socket_rules.iter().any(|u| u.path == broker.display().to_string() && !u.prefix), "{effective:#?}");
    assert!(effective.protected_files.iter().any(|f| f.path == "~/.aws/credentials" && f.allowed_programs == ["aws"]), "{effective:#?}");
    assert_eq!(effective.egress_default, "allow");
    let shown = String::from_utf8_lossy(&d.cli(&["policy", "show", "--role", "agent"]).stdout).into_owned();
    for expected in ["terraform apply", "127.0.0.2/32", &broker.display().to_string(), "~/.aws/credentials", "opened only by aws"] {
        assert!(shown.contains(expected), "policy show lacks {expected:?}:\n{shown}");
    }

    let mut wanted = vec!["exec", "connect", "sendmsg", "file_open", "tamper", "revoke"];
    if !unix_gap {
        wanted.push("unix_connect");
    }
    let kinds = |lines: &[Value]| lines.iter().filter_map(|v| v["kind"].as_str().map(str::to_string)).collect::<std::collections::BTreeSet<_>>();
    let deadline = Instant::now() + seconds(20);
    let audit = loop {
        let lines: Vec<Value> = d.audit().into_iter().filter(|v| v["session_id"] == s.session_id.as_str()).collect();
        let have = kinds(&lines);
        if wanted.iter().all(|k| have.contains(*k)) {
            break lines;
        }
        assert!(Instant::now() < deadline, "not every kind reached the audit trail (want {wanted:?}, have {have:?}):\n{lines:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let exec_deny = audit.iter().find(|v| v["kind"] == "exec" && v["decision"] == "deny").expect("the denied exec");
    assert!(exec_deny["exec"]["stage"].as_str().is_some(), "{exec_deny:#}");
    assert!(audit.iter().any(|v| v["kind"] == "connect" && v["destination"]["port"] == tcp_port), "{audit:#?}");
    assert!(audit.iter().any(|v| v["kind"] == "file_open" && v["guard"]["file"] == home.join(".aws/credentials").display().to_string()), "{audit:#?}");
    assert!(audit.iter().any(|v| v["kind"] == "revoke" && v["revocation"]["reason"] == "round trip"), "{audit:#?}");
    if !unix_gap {
        assert!(audit.iter().any(|v| v["kind"] == "unix_connect" && v["unix_socket"]["path"] == broker.display().to_string()), "{audit:#?}");
    }

    rt.block_on(async {
        // The store: every audited decision, equal field for field.
        let stored = eventually("the store to hold every audited decision", || {
            let mut c = c.clone();
            let n = audit.len();
            let id = s.session_id.clone();
            async move {
                let all = query(&mut c, session_filter(&id), 1000).await;
                (all.len() >= n).then_some(all)
            }
        })
        .await;
        for line in &audit {
            let d = stored.iter().find(|d| line["id"].as_u64() == Some(d.id)).unwrap_or_else(|| panic!("decision {} is not in the store", line["id"]));
            assert_eq!(&serde_json::to_value(d).expect("json"), line, "the store's copy of a {} decision differs from its audit line", line["kind"]);
        }
        // The live stream: the same decisions, as they were made.
        let mut streamed = Vec::new();
        while streamed.len() < audit.len() {
            let next = tokio::time::timeout(seconds(20), stream.message()).await.expect("the stream went quiet").expect("stream error");
            let Some(d) = next else { break };
            if d.session_id == s.session_id {
                streamed.push(d);
            }
        }
        for line in &audit {
            let d = streamed.iter().find(|d| line["id"].as_u64() == Some(d.id)).unwrap_or_else(|| panic!("decision {} was not streamed", line["id"]));
            assert_eq!(&serde_json::to_value(d).expect("json"), line, "the streamed {} decision differs from its audit line", line["kind"]);
        }
    });
}

fn revoked_sessions_map(d: &Daemon) -> libbpf_rs::MapHandle {
    d.bpf_map("revoked_session")
}

fn the_kernel_denies_a_revoked_session_everything() {
    let d = daemon("revoked");
    let backend = d.backend();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let port = listener.local_addr().expect("addr").port();
    let probe = format!(
        "if echo -n 3<>/dev/tcp/127.0.0.1/{port}; then echo tcp=connected; else echo tcp=refused; fi\n\
         shopt -s execfail\nexec terraform init\necho exec=failed\n/bin/true\necho forked=survived\n"
    );
    // Control: the same probe in a session that is not revoked connects and runs the tool.
    let control = d.governed(Some("agent"), &probe.replace("exec terraform", "terraform"));
    assert!(control.stdout.contains("tcp=connected") && control.tool_ran(), "{}", control.all_output());

    let gate = d.work_dir.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // The session waits on the FIFO (no exec, no fork) until the revocation is in the kernel.
    let script = format!("echo \"AIRLOCK_SESSION=$AIRLOCK_SESSION_ID\"\nread -r line < \"$WORK/gate\"\n{probe}");
    let mut s = Launched::start(&d, &script, Stdio::piped());
    let mut stdout = BufReader::new(s.child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the session's first line");
    let id = first.trim().strip_prefix("AIRLOCK_SESSION=").expect("a session id").to_string();
    let key = u64::from_str_radix(&id, 16).expect("hex session id");

    // What RevokeSession does first, alone: the kernel marks the session revoked.
    revoked_sessions_map(&d).update(&key.to_ne_bytes(), &1u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY).expect("mark revoked");
    std::fs::OpenOptions::new().write(true).open(&gate).expect("open the gate").write_all(b"go\n").expect("open the gate");
    let status = s.wait();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("the session's output");
    assert!(rest.contains("tcp=refused"), "a revoked session connected:\n{rest}");
    assert!(!rest.contains(RAN), "a revoked session ran a tool:\n{rest}");
    assert!(!rest.contains("forked=survived"), "a revoked session's process survived a fork:\n{rest}");
    // compat: killed at the exec; LSM: the exec fails (EPERM), then the fork kills the shell.
    assert_eq!(status.signal(), Some(9), "{backend}: {status:?}\n{rest}");
    if backend == "lsm" {
        assert!(rest.contains("exec=failed"), "{rest}");
    }
    let lines = d.wait_audit("the revoked session's denies", |v| v["session_id"] == id.as_str() && v["reason"] == "revoked" && v["kind"] == "exec");
    assert!(lines.iter().any(|v| v["argv"] == serde_json::json!(["terraform", "init"]) && v["decision"] == "deny"), "{lines:#?}");
    d.wait_audit("the refused connect", |v| {
        v["session_id"] == id.as_str() && v["kind"] == "connect" && v["reason"] == "revoked" && v["destination"]["port"] == port
    });
    drop(listener);
}

fn revoke_kills_a_growing_process_tree_through_the_api() {
    let d = daemon("revoke");
    // Two spawners keep forking orphans (re-parented to init) while the shell waits.
    let script = "spawn() { while :; do ( sleep 300 & ) ; sleep 0.02; done; }\nspawn &\nspawn &\nsleep 300\n";
    let mut s = Launched::start(&d, script, Stdio::null());
    let rt = runtime();
    rt.block_on(async {
        let mut c = unix_client(&d.api_socket()).await;
        let session = eventually("a tree of at least 20 processes", || {
            let mut c = c.clone();
            let root = s.child.id();
            async move {
                let list = c.list_sessions(pb::ListSessionsRequest { state: pb::SessionState::Running as i32 }).await.ok()?.into_inner();
                list.sessions.into_iter().find(|x| x.root_pid == root && x.processes >= 20)
            }
        })
        .await;
        // The tree's count includes short-lived members (the `( … & )` subshells, `sleep 0.02`)
        // that may end on their own before the revocation reaches them. The `sleep 300`
        // orphans never do: only the revocation can end them, so they are the bound.
        let orphans = eventually("at least 16 long-lived orphans", || {
            let found = long_lived_members(&session.id);
            async move { (found.len() >= 16).then_some(found) }
        })
        .await;
        let r = c
            .revoke_session(pb::RevokeSessionRequest { id: session.id.clone(), reason: "test: runaway agent".into() })
            .await
            .expect("RevokeSession")
            .into_inner();
        assert!(r.killed as usize >= orphans.len(), "killed {} but the tree had {} long-lived orphans", r.killed, orphans.len());
        // The call returns once no process carries the session's tag; the exit hook
        // drops a tag at the start of the exit, so a killed orphan may still show as
        // running for a moment (long under TCG). It must be gone soon after.
        let deadline = Instant::now() + seconds(10);
        let survivors = loop {
            let survivors: Vec<u32> = orphans.iter().copied().filter(|&pid| process_runs(pid)).collect();
            if survivors.is_empty() || Instant::now() > deadline {
                break survivors;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(survivors.is_empty(), "orphans alive after the revocation: {survivors:?}");
        assert!(r.rounds >= 1);
        let after = r.session.expect("the session");
        assert_eq!(after.state, pb::SessionState::Revoked as i32);
        assert_eq!(after.processes, 0, "processes left after the revocation");
        assert_eq!(after.revoke_reason.as_deref(), Some("test: runaway agent"));
        assert!(after.revoked_by.as_deref().is_some_and(|b| b.contains("uid 0")), "{:?}", after.revoked_by);

        // Nothing comes back: no tagged process of the session a while later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = c.get_session(pb::GetSessionRequest { id: session.id.clone() }).await.expect("GetSession").into_inner();
        assert_eq!((later.state, later.processes), (pb::SessionState::Revoked as i32, 0));
        let revoked = c.list_sessions(pb::ListSessionsRequest { state: pb::SessionState::Revoked as i32 }).await.expect("list").into_inner();
        assert!(revoked.sessions.iter().any(|x| x.id == session.id));

        // The revocation is a record in the store and the audit trail.
        let f = pb::DecisionFilter { kind: pb::DecisionKind::Other as i32, ..session_filter(&session.id) };
        let rec = eventually("the revocation record", || {
            let mut c = c.clone();
            let f = f.clone();
            async move { query(&mut c, f, 10).await.into_iter().find(|x| x.kind == "revoke") }
        })
        .await;
        assert_eq!((rec.decision.as_str(), rec.reason.as_str()), ("deny", "revoked"));
        assert!(rec.rule.as_deref().is_some_and(|r| r.contains("test: runaway agent")), "{rec:?}");
        d.wait_audit("the revocation line", |v| v["session_id"] == session.id.as_str() && v["kind"] == "revoke");

        let again = c.revoke_session(pb::RevokeSessionRequest { id: "ffffffffffffffff".into(), reason: String::new() }).await;
        assert_eq!(again.expect_err("unknown session").code(), tonic::Code::NotFound);
    });
    assert_eq!(s.wait().signal(), Some(9), "the session's root was killed");
}

/// Pids of the session's `sleep 300` processes, found through /proc by the session
/// id every governed process inherits in its environment.
fn long_lived_members(session: &str) -> Vec<u32> {
    let marker = format!("AIRLOCK_SESSION_ID={session}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x00300\x00"))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
        })
        .collect()
}

/// Whether a pid is a running process (not gone, not a zombie awaiting its reaper).
fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')))
        .unwrap_or(false)
}

// ---- TCP: mutual TLS, and the explicit insecure mode -----------------------------

/// Status over TCP: with a client certificate through the library's mutual-TLS
/// client, without one through a plain TLS channel.
async fn tls_status(port: u16, pki: &Pki, identity: Option<(&str, &str)>) -> Result<pb::StatusResponse, String> {
    let url = format!("https://127.0.0.1:{port}");
    let mut c = match identity {
        Some((cert, key)) => {
            let files = airlock_api::client::TlsClientFiles { ca: pki.path("ca.pem"), cert: pki.path(cert), key: pki.path(key) };
            airlock_api::client::connect_tls(&url, &files).await.map_err(|e| format!("{e:#}"))?
        }
        None => {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem"))).domain_name("127.0.0.1");
            let endpoint = Endpoint::from_shared(url).map_err(|e| e.to_string())?.tls_config(tls).map_err(|e| e.to_string())?;
            AirlockClient::new(endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?)
        }
    };
    c.status(pb::StatusRequest {}).await.map(|r| r.into_inner()).map_err(|e| format!("{e:?}"))
}

fn tcp_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let port = free_port();
    let d = Daemon::start_with_args("tls", &[("test-infra.json", POLICY)], &[("agent.json", ROLE)], &pki.daemon_args(port));
    let rt = runtime();
    rt.block_on(async {
        let ok = tls_status(port, &pki, Some(("client.pem", "client.key"))).await;
        assert_eq!(ok.expect("a client with a certificate from the CA is served").backend, d.backend());
        let anonymous = tls_status(port, &pki, None).await;
        assert!(anonymous.is_err(), "a client without a certificate was served");
        let rogue = tls_status(port, &pki, Some(("rogue.pem", "rogue.key"))).await;
        assert!(rogue.is_err(), "a client with another CA's certificate was served");
        // Plain HTTP/2 to the TLS port gets nothing either.
        let plain = async {
            let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
            AirlockClient::new(ch).status(pb::StatusRequest {}).await.ok()
        };
        assert!(tokio::time::timeout(seconds(10), plain).await.ok().flatten().is_none(), "plain TCP was served on the TLS port");
    });
    // The operator CLI speaks mutual TLS too; a wrong client certificate is refused there as well.
    let url = format!("https://127.0.0.1:{port}");
    let cli = |cert: &str, key: &str| {
        let (ca, cert, key) = (pki.path("ca.pem"), pki.path(cert), pki.path(key));
        Command::new(AGENT)
            .args(["status", "--json", "--api-url", &url, "--tls-ca"])
            .arg(ca)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .expect("run airlock-agent status")
    };
    let ok = cli("client.pem", "client.key");
    assert!(ok.status.success(), "status over mutual TLS: {}", String::from_utf8_lossy(&ok.stderr));
    let status: Value = serde_json::from_slice(&ok.stdout).expect("status --json");
    assert_eq!(status["backend"], d.backend().as_str());
    let rogue = cli("rogue.pem", "rogue.key");
    assert!(!rogue.status.success(), "the CLI was served with another CA's certificate: {}", String::from_utf8_lossy(&rogue.stdout));
}

fn plain_tcp_needs_the_explicit_insecure_flag() {
    // Refused before anything is loaded: no TLS files and no --api-insecure.
    let dir = TempDir::new("insecure-refused");
    let out = Command::new(AGENT)
        .args(["run", "--embedded-policy", "--state-dir"])
        .arg(dir.0.join("state"))
        .arg("--socket")
        .arg(dir.0.join("agent.sock"))
        .args(["--api-listen", "127.0.0.1:1"])
        .output()
        .expect("run the daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--api-insecure") && err.contains("--tls-cert"), "{err}");

    let port = free_port();
    let args = vec!["--api-listen".to_string(), format!("127.0.0.1:{port}"), "--api-insecure".into()];
    let d = Daemon::start_with_args("insecure", &[("test-infra.json", POLICY)], &[("agent.json", ROLE)], &args);
    let rt = runtime();
    rt.block_on(async {
        let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint").connect().await.expect("connect");
        let status = AirlockClient::new(ch).status(pb::StatusRequest {}).await.expect("served in the clear").into_inner();
        assert_eq!(status.backend, d.backend());
    });
    assert!(d.log().contains("INSECURE plain TCP"), "the daemon says it serves in the clear:\n{}", d.log());
}

// ---- A platform team's client: Python grpcio generated from our .proto -----------

fn a_python_grpcio_client_uses_the_api() {
    let python = python().unwrap_or_else(|why| {
        panic!("no Python with grpcio ({why}): run scripts/setup.sh (it makes target/pyvenv with grpcio and grpcio-tools from PyPI)")
    });
    let pki = Pki::new();
    let port = free_port();
    let d = Daemon::start_with_args("python", &[("test-infra.json", POLICY)], &[("agent.json", ROLE)], &pki.daemon_args(port));
    let s = d.governed(Some("agent"), "terraform apply; echo done");
    assert!(!s.session_id.is_empty());

    // Stubs generated from the .proto by grpcio-tools, as a platform team would.
    let stubs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("py-stubs-{}", std::process::id()));
    std::fs::create_dir_all(&stubs).expect("stub dir");
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../airlock-api/proto");
    let gen = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_root)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("airlock/v1/airlock.proto")
        .output()
        .expect("run grpc_tools.protoc");
    assert!(gen.status.success(), "protoc: {}", String::from_utf8_lossy(&gen.stderr));

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/airlock_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .arg("--stubs")
        .arg(&stubs)
        .arg("--unix")
        .arg(d.api_socket())
        .arg("--tcp")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ca")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path("client.pem"))
        .arg("--key")
        .arg(pki.path("client.key"))
        .arg("--rogue-cert")
        .arg(pki.path("rogue.pem"))
        .arg("--rogue-key")
        .arg(pki.path("rogue.key"))
        .arg("--session")
        .arg(&s.session_id)
        .arg("--agent")
        .arg(AGENT)
        .arg("--control-socket")
        .arg(&d.socket)
        .arg("--path")
        .arg(d.path_env())
        .arg("--timeout")
        .arg(seconds(20).as_secs().to_string())
        .output()
        .expect("run the Python client");
    let _ = std::fs::remove_dir_all(&stubs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the client's JSON report");
    assert_eq!(report["backend"], d.backend());
    for check in ["status_unix", "status_tls", "no_cert_refused", "rogue_cert_refused", "query_deny", "pages", "get_session", "effective_policy", "stream"] {
        assert_eq!(report["checks"][check], true, "check {check} failed: {report:#}");
    }
}

/// A developer (not root, not in the airlock group) inside a governed session
/// asks `status`: the daemon answers over the launch socket, about the
/// caller's own sessions only.
fn a_developer_without_api_access_sees_only_their_own_sessions() {
    let d = daemon("own-status");
    let root_session = d.live_session("agent");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--", AGENT, "status", "--socket"])
        .arg(&d.socket)
        .current_dir("/")
        .output()
        .expect("launch status as nobody");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "status as nobody failed: {text}");
    assert!(text.contains("this process is governed: session") && text.contains("your sessions (1)"), "{text}");
    assert!(!text.contains(&root_session.session_id), "nobody saw root's session: {text}");
    assert!(!text.to_lowercase().contains("permission denied"), "{text}");
}

kernel_tests!(
    every_decision_kind_reaches_the_audit_trail_the_store_and_the_api_whole,
    the_api_reports_sessions_decisions_and_policy,
    a_launch_that_never_execs_stays_ready_until_it_ends,
    the_kernel_denies_a_revoked_session_everything,
    revoke_kills_a_growing_process_tree_through_the_api,
    tcp_requires_a_client_certificate_from_the_configured_ca,
    plain_tcp_needs_the_explicit_insecure_flag,
    a_python_grpcio_client_uses_the_api,
    a_developer_without_api_access_sees_only_their_own_sessions,
);
