//! The MCP bridge end to end on this kernel's backend: an AI agent's MCP
//! client (the official Python SDK, tests/python/mcp_client.py) runs inside
//! a governed session of an unprivileged user, starts `airlock-agent mcp`
//! over stdio and asks about its own session; what the bridge predicts is
//! compared with what the kernel then does to the same commands.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{json, Value};
use support::*;

const POLICY: &str = r#"{ "id": "infra", "name": "Infra", "status": "active",
  "blocked_commands": ["terraform destroy"],
  "approval_commands": ["terraform apply", "kubectl delete"] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["infra"] }"#;
const NOBODY: &str = "65534";
const TOOLS: [&str; 6] = ["airlock_status", "explain_decision", "effective_policy", "check_command", "request_approval", "approval_status"];
/// JSON-RPC's invalid params.
const INVALID_PARAMS: i64 = -32602;

kernel_tests!(
    a_governed_agent_asks_checks_and_requests_through_the_bridge,
    outside_a_session_or_without_a_daemon_the_bridge_says_so_and_stays_up,
);

/// The client script, copied into a 0755 directory of its own: nobody must
/// read it, whatever the permissions of the checkout.
struct Client {
    python: PathBuf,
    script: PathBuf,
    dir: TempDir,
}

fn client() -> Client {
    let python = python_mcp();
    let dir = TempDir::new("mcp-client");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod the client dir");
    let script = dir.0.join("mcp_client.py");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py"), &script).expect("copy mcp_client.py");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod mcp_client.py");
    Client { python, script, dir }
}

fn as_nobody() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"]);
    cmd
}

impl Client {
    /// The client's arguments to Python; `mode` is "session" or "outside".
    fn args(&self, socket: &Path, mode: &str) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![self.script.clone().into()];
        args.extend(["--agent", AGENT, "--mode", mode, "--socket"].map(Into::into));
        args.push(socket.into());
        args
    }

    /// The venv must be usable by the unprivileged user inside a session, as
    /// the client will run (a pyenv interpreter under /root is not).
    fn require_nobody_can_run_it(&self, d: &Daemon) {
        let out = as_nobody()
            .arg(AGENT)
            .args(["launch", "--socket"])
            .arg(&d.socket)
            .args(["--role", "agent", "--"])
            .arg(&self.python)
            .args(["-c", "import mcp"])
            .current_dir(&self.dir.0)
            .output()
            .expect("run setpriv");
        assert!(
            out.status.success(),
            "uid {NOBODY} cannot run {} with the MCP SDK in a session: {}\nthe venv's interpreter and every directory above them must be o+rx \
             (scripts/setup.sh makes the venv on Debian's python3 and chmods it)",
            self.python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The client's report: the last line of its stdout.
fn report(stdout: &str, stderr: &str) -> Value {
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("the MCP client printed no report\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {line}"))
}

/// Reads a child's stdout whole and its stderr line by line, on threads.
fn drain(child: &mut Child) -> (std::thread::JoinHandle<String>, mpsc::Receiver<String>) {
    let mut stdout = child.stdout.take().expect("the client's stdout");
    let stderr = child.stderr.take().expect("the client's stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (out, rx)
}

fn structured<'a>(answer: &'a Value, what: &str) -> &'a Value {
    assert_eq!(answer["is_error"], false, "{what} answered with an error: {answer:#}");
    &answer["structured"]
}

fn text(answer: &Value) -> &str {
    answer["text"].as_str().unwrap_or_default()
}

fn assert_schemas(r: &Value) {
    let tools = r["tools"].as_object().expect("the tool list");
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "the bridge's tools (none may approve, reject, lift, reload or revoke)");
    let schema = |tool: &str| &tools[tool];
    for tool in TOOLS {
        assert_eq!(schema(tool)["type"], "object", "{tool}'s input schema");
    }
    for tool in ["airlock_status", "effective_policy"] {
        assert!(schema(tool)["required"].as_array().is_none_or(|r| r.is_empty()), "{tool} takes no arguments: {}", schema(tool));
    }
    for (tool, required) in [("check_command", json!(["argv"])), ("request_approval", json!(["argv", "justification"])), ("approval_status", json!(["id"]))] {
        assert_eq!(schema(tool)["required"], required, "{tool}'s required fields");
    }
    assert!(schema("explain_decision")["required"].as_array().is_none_or(|r| r.is_empty()));
    for tool in ["check_command", "request_approval"] {
        let argv = &schema(tool)["properties"]["argv"];
        assert_eq!((argv["type"].as_str(), argv["items"]["type"].as_str()), (Some("array"), Some("string")), "{tool}.argv: {argv}");
        assert_eq!((argv["minItems"].as_u64(), argv["maxItems"].as_u64()), (Some(1), Some(256)), "{tool}.argv: {argv}");
    }
    assert_eq!(schema("request_approval")["properties"]["justification"]["type"], "string");
    assert_eq!(schema("approval_status")["properties"]["id"]["type"], "string");
    let is_integer = |v: &Value| v["type"] == "integer" || v["type"].as_array().is_some_and(|t| t.contains(&json!("integer")));
    let wait = &schema("approval_status")["properties"]["wait_seconds"];
    assert!(is_integer(wait) && wait["maximum"] == 300, "approval_status.wait_seconds: {wait}");
    let decision = &schema("explain_decision")["properties"]["decision_id"];
    assert!(is_integer(decision), "explain_decision.decision_id: {decision}");
}

fn assert_bad_input_refused(r: &Value) {
    let cases = [
        ("unknown_tool_approve", "unknown tool `approve`"),
        ("unknown_tool_decide_approval", "unknown tool `decide_approval`"),
        ("argv_as_string", "`argv`"),
        ("argv_empty", "argv"),
        ("argv_missing", "`argv`"),
        ("argv_word_not_string", "argv[1]"),
        ("argv_too_many_words", "argv"),
        ("argv_too_many_bytes", "argv"),
        ("justification_too_long", "justification"),
        ("justification_missing", "`justification`"),
        ("wait_seconds_too_long", "wait_seconds"),
        ("id_malformed", "id"),
        ("decision_id_as_string", "`decision_id`"),
    ];
    for (case, names) in cases {
        let e = &r["bad_input"][case];
        assert_eq!(e["protocol_error"], true, "{case} was not refused with an MCP error: {e:#}");
        assert_eq!(e["code"], INVALID_PARAMS, "{case}: {e:#}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains(names)), "{case}'s error does not name {names:?}: {e:#}");
    }
    assert!(r["status_after_bad_input"]["is_error"].is_boolean(), "the server did not answer after the bad input: {:#}", r["status_after_bad_input"]);
}

fn a_governed_agent_asks_checks_and_requests_through_the_bridge() {
    let c = client();
    let d = Daemon::start_with("mcp", &[("infra.json", POLICY)], &[("agent.json", ROLE)], &[]);
    let backend = d.backend();
    c.require_nobody_can_run_it(&d);

    let mut child = as_nobody()
        .arg(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--"])
        .arg(&c.python)
        .args(c.args(&d.socket, "session"))
        .current_dir(&c.dir.0)
        .env("PATH", d.path_env())
        .env("HOME", &c.dir.0)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launch the MCP client as nobody");
    let (stdout, lines) = drain(&mut child);

    // The client asks for an approval, fails to grant it itself, then waits:
    // a person (root, through the API socket) approves it.
    let mut stderr = String::new();
    let mut request = None;
    let deadline = Instant::now() + seconds(120);
    while request.is_none() && Instant::now() < deadline {
        match lines.recv_timeout(seconds(1)) {
            Ok(line) => {
                request = line.strip_prefix("approval-request=").map(str::to_string);
                stderr.push_str(&line);
                stderr.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(id) = &request {
        let out = d.cli(&["approvals", "approve", id, "--reason", "the MCP test approves"]);
        assert!(out.status.success(), "approve {id}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deadline = Instant::now() + seconds(180);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the MCP client");
    stderr.extend(lines.try_iter().map(|l| l + "\n"));
    let stdout = stdout.join().expect("the client's stdout");
    assert!(status.success(), "the MCP client failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}\ndaemon log:\n{}", d.log());
    let id = request.unwrap_or_else(|| panic!("the client never asked for an approval\nstderr:\n{stderr}"));
    let r = report(&stdout, &stderr);
    let context = format!("stderr:\n{stderr}");

    assert_eq!(r["uid"], 65534, "the client must run as nobody");
    assert_eq!(r["server"]["name"], "airlock");
    assert_schemas(&r);

    let s = structured(&r["status"], "airlock_status");
    assert_eq!((s["session"]["role"].as_str(), s["session"]["uid"].as_u64()), (Some("agent"), Some(65534)), "{s:#}");
    assert_eq!(s["backend"], backend.as_str());
    assert!(s["host"].as_str().is_some_and(|h| !h.is_empty()) && text(&r["status"]).contains(s["session"]["id"].as_str().unwrap_or("?")), "{:#}", r["status"]);

    let p = structured(&r["policy"], "effective_policy");
    let commands = |key: &str| p[key].as_array().map(|l| l.iter().map(|r| r["command"].clone()).collect::<Vec<_>>()).unwrap_or_default();
    assert!(commands("blocked_commands").contains(&json!(["terraform", "destroy"])), "{p:#}");
    assert!(commands("approval_commands").contains(&json!(["terraform", "apply"])) && commands("approval_commands").contains(&json!(["kubectl", "delete"])), "{p:#}");
    assert!(text(&r["policy"]).contains("terraform destroy"));

    // Each prediction agrees with what the kernel did to the same command in the same session.
    for (command, verdict, rule, exit) in [
        ("terraform destroy", "blocked", Some("terraform destroy"), 1),
        ("terraform apply -auto-approve", "needs_approval", Some("terraform apply"), 2),
        ("terraform plan", "allowed", None, 0),
    ] {
        let answer = &r["checks"][command];
        let check = structured(answer, command);
        assert_eq!(check["verdict"], verdict, "check_command {command}: {answer:#}");
        if let Some(rule) = rule {
            assert_eq!(check["rule"], rule, "check_command {command}: {answer:#}");
        }
        let note = check["note"].as_str().unwrap_or_default();
        assert!(text(answer).contains("exec time") && text(answer).contains(note), "the check's text must say what only exec time decides: {answer:#}");
        assert_eq!(r["cli_checks"][command]["rc"], exit, "airlock-agent check -- {command}: {:#}", r["cli_checks"][command]);
        let run = &r["runs"][command];
        assert_eq!(run["ran"], verdict == "allowed", "the bridge said {verdict} but the kernel disagreed on {command}: {run:#}\n{context}");
    }

    let e = structured(&r["explain_last"], "explain_decision");
    assert_eq!(e["decision"]["rule"], "terraform destroy", "the last denial: {:#}", r["explain_last"]);
    assert!(text(&r["explain_last"]).contains("terraform destroy") && text(&r["explain_last"]).contains("next step"), "{:#}", r["explain_last"]);
    let by_id = structured(&r["explain_by_id"], "explain_decision by id");
    assert_eq!((&by_id["decision"]["id"], &by_id["decision"]["rule"]), (&e["decision"]["id"], &e["decision"]["rule"]));

    let q = structured(&r["request"], "request_approval");
    assert_eq!(q["request"]["id"], id.as_str());
    assert_eq!((q["request"]["state"].as_str(), &q["request"]["argv"]), (Some("pending"), &json!(["terraform", "apply"])), "{q:#}");
    assert!(text(&r["request"]).contains(&id) && text(&r["request"]).contains("approval_status"), "{:#}", r["request"]);

    // The session cannot decide its own request: the bridge has no such tool
    // (bad input below), and the operator CLI from inside is refused.
    assert_ne!(r["self_approve"]["rc"], 0, "the session approved its own request: {:#}", r["self_approve"]);
    assert_eq!(structured(&r["status_after_self_approve"], "approval_status")["request"]["state"], "pending");

    let fin = structured(&r["approval_final"], "approval_status with wait_seconds");
    assert_eq!(fin["request"]["state"], "approved", "{:#}", r["approval_final"]);
    assert_eq!(r["approved_run"]["ran"], true, "the approved command did not run: {:#}\n{context}", r["approved_run"]);
    assert_eq!(r["second_run"]["ran"], false, "the approval served a second run: {:#}", r["second_run"]);
    d.wait_audit("the grant's use", |v| v["kind"] == "approval" && v["approval"]["request_id"] == id.as_str() && v["approval"]["event"] == "grant_used");
    let pending = structured(&r["status_with_pending"], "airlock_status")["pending_approvals"].as_array().map(Vec::len).unwrap_or(0);
    assert!(pending >= 1, "the held second run's request is pending: {:#}", r["status_with_pending"]);

    assert_bad_input_refused(&r);

    // The same bridge outside any session: the daemon answers, but not for it.
    let out = Command::new(&c.python).args(c.args(&d.socket, "outside")).current_dir(&c.dir.0).env("PATH", d.path_env()).output().expect("run the MCP client");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the ungoverned MCP client failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let r = report(&stdout, &stderr);
    for tool in TOOLS {
        let a = &r["answers"][tool];
        assert!(a["is_error"] == true && text(a).contains("not governed"), "{tool} outside a session: {a:#}");
    }
    assert_eq!(r["cli_check"]["rc"], 3, "{:#}", r["cli_check"]);
}

fn outside_a_session_or_without_a_daemon_the_bridge_says_so_and_stays_up() {
    let c = client();
    let socket = c.dir.0.join("no-daemon.sock");
    let out = Command::new(&c.python).args(c.args(&socket, "outside")).current_dir(&c.dir.0).output().expect("run the MCP client");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the MCP client failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let r = report(&stdout, &stderr);
    assert_schemas(&r);
    for tool in TOOLS {
        let a = &r["answers"][tool];
        assert!(a["is_error"] == true && text(a).contains("unreachable"), "{tool} without a daemon: {a:#}");
        assert!(a["structured"]["error"].as_str().is_some_and(|e| e.contains(&socket.display().to_string())), "{tool}: {a:#}");
    }
    assert_eq!(r["cli_check"]["rc"], 3, "{:#}", r["cli_check"]);
    assert_bad_input_refused(&r);
}
