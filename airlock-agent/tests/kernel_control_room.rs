//! The Control Room, end to end in a real browser: Debian's chromium driven
//! by Playwright (tests/python/control_room.py) against a real gateway
//! serving the UI over HTTPS, with a real agent on this kernel enforcing
//! what the gateway pushes and shipping the decisions of governed sessions.
//! The driver only drives; every check is here.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::Gateway;
use support::*;

const HOST: &str = "ui-host";
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["infra"] }"#;
const V1: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform apply"], "approval_commands": ["kubectl delete"] }"#;
/// What the editor pushes: `aws s3 rm` blocked too.
const V2: &str = r#"{
  "id": "infra",
  "name": "Infra",
  "status": "active",
  "blocked_commands": ["terraform apply", "aws s3 rm"],
  "approval_commands": ["kubectl delete"]
}
"#;
/// The same with a field of the wrong type on line 5, which the loader refuses.
const BROKEN: &str = r#"{
  "id": "infra",
  "name": "Infra",
  "status": "active",
  "blocked_commands": "terraform apply",
  "approval_commands": ["kubectl delete"]
}
"#;
const GUARDED: &str = r#"{ "id": "infra", "name": "Infra", "status": "active", "blocked_commands": ["terraform destroy"] }"#;
const SESSION_COOKIE: &str = "__Host-airlock-session";

fn password(user: &str) -> String {
    format!("{user}-correct-horse-battery")
}

/// The Control Room's users, one per role.
fn make_users(gw: &Gateway) {
    for (name, role) in [("ada", "admin"), ("abe", "approver"), ("val", "viewer")] {
        gw.create_user(name, role, &password(name));
    }
}

fn policy_dir(tag: &str, policy: &str) -> TempDir {
    let dir = TempDir::new(tag);
    write_policy_dir(&dir.0, &[("infra.json", policy)], &[("agent.json", ROLE)]);
    dir
}

fn push(gw: &Gateway, dir: &TempDir, comment: &str) -> Value {
    gw.json(&["policy", "push", dir.0.join("policy").to_str().expect("utf-8 path"), "--comment", comment])
}

fn wait_for(what: &str, limit: u64, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + seconds(limit);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The request id a held command's block message names.
fn approval_id(output: &str) -> String {
    output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("airlock: approval_request="))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no approval_request line in:\n{output}"))
}

/// Runs a command an approval rule holds; waits for the block message (it
/// reaches the shell's stderr just after the command returns) and returns
/// the session's output from the command's start.
fn held(live: &mut LiveSession, command: &str) -> String {
    let messages = |t: &str| t.matches("airlock: ai_instruction=").count();
    let before = live.wait_output("anything", |_| true);
    let (out, _) = live.run(command);
    assert!(!out.contains(RAN), "{command:?} ran though an approval rule holds it:\n{out}");
    let after = live.wait_output(&format!("the block message of {command:?}"), |t| messages(t) > messages(&before));
    let shown = after[before.len().min(after.len())..].to_string();
    assert!(shown.contains("APPROVAL REQUIRED"), "{command:?} was not held for an approval:\n{shown}");
    shown
}

fn pending_at_gateway(gw: &Gateway) -> Vec<String> {
    gw.json(&["approvals", "list", "--state", "pending"])["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["request"]["id"].as_str().map(String::from))
        .collect()
}

/// The browser, driven one JSON line at a time; closed and waited for (by
/// pid) when dropped.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
    _dir: TempDir,
}

impl Browser {
    /// The driver on `python` (from [`python_playwright`], asked first so
    /// a test without a browser skips before it starts anything).
    fn start(python: &Path, gw: &Gateway) -> Browser {
        let dir = TempDir::new("browser");
        let log = dir.0.join("control_room.log");
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/control_room.py");
        let mut child = Command::new(python)
            .arg(driver)
            .args(["--base", &gw.ui_url(), "--chromium", CHROMIUM, "--ca"])
            .arg(gw.ca())
            // Playwright keeps its driver's files here; nothing is downloaded.
            .env("HOME", &dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the browser log"))
            .spawn()
            .expect("start the browser driver");
        let stdout = child.stdout.take().expect("the driver's stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut b = Browser { child, stdin, lines, log, _dir: dir };
        let ready = b.read("start");
        assert_eq!(ready["ready"], true, "{ready}");
        b
    }

    fn read(&mut self, what: &str) -> Value {
        match self.lines.recv_timeout(seconds(90)) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver's answer to {what} is not JSON ({e}): {line}")),
            Err(_) => panic!("the browser driver gave no answer to {what}; its log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default()),
        }
    }

    /// One operation; its answer, or a panic with the driver's error.
    fn call(&mut self, op: &str, args: Value) -> Value {
        let mut cmd = args;
        cmd["op"] = json!(op);
        let line = format!("{cmd}\n");
        self.stdin.as_mut().expect("the driver's stdin").write_all(line.as_bytes()).expect("write to the driver");
        let answer = self.read(&line);
        if let Some(e) = answer.get("error") {
            panic!("browser: {} failed: {e}\ndriver log:\n{}", line.trim(), std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        answer
    }

    fn goto(&mut self, path: &str) -> Value {
        let page = self.call("goto", json!({ "path": path }));
        assert_eq!(page["status"], 200, "GET {path}: {page:#}");
        page
    }

    /// A new browser context (no cookies) signed in as `user`.
    fn signed_in_as(&mut self, user: &str) -> Value {
        self.call("new_context", json!({}));
        let page = self.call("signin", json!({ "username": user, "password": password(user) }));
        assert_eq!((page["status"].as_u64(), page["path"].as_str()), (Some(200), Some("/")), "{user} did not reach the overview: {page:#}");
        assert!(cookies(&page).contains(&SESSION_COOKIE.to_string()), "no session cookie after {user} signed in: {page:#}");
        page
    }

    fn click(&mut self, selector: &str) -> Value {
        self.call("click", json!({ "selector": selector }))
    }

    fn fill(&mut self, selector: &str, value: &str) {
        self.call("fill", json!({ "selector": selector, "value": value }));
    }

    fn count(&mut self, selector: &str) -> u64 {
        self.call("count", json!({ "selector": selector }))["count"].as_u64().expect("a count")
    }

    fn text(&mut self, selector: &str) -> String {
        self.call("text", json!({ "selector": selector }))["text"].as_str().unwrap_or_default().to_string()
    }

    /// A full-page screenshot into docs/control-room/NAME.png, only when
    /// AIRLOCK_SCREENSHOTS=1 (so a normal run rewrites nothing in the tree).
    fn screenshot(&mut self, name: &str) {
        if std::env::var("AIRLOCK_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/control-room");
        std::fs::create_dir_all(&dir).expect("mkdir docs/control-room");
        let path = dir.join(format!("{name}.png"));
        self.call("screenshot", json!({ "path": path, "full_page": true }));
    }

    /// Console errors and CSP violations so far, but for the documents the
    /// test was refused on purpose (`(status, path)`: a wrong password, a
    /// broken policy), which chromium logs as failed loads.
    fn console_errors(&mut self, expected_refusals: &[(u16, &str)]) -> Vec<Value> {
        let all = self.call("console_errors", json!({}))["errors"].as_array().cloned().unwrap_or_default();
        all.into_iter()
            .filter(|e| {
                let text = e["text"].as_str().unwrap_or_default();
                let source = e["source"].as_str().unwrap_or_default();
                !expected_refusals.iter().any(|(code, path)| {
                    text.starts_with(&format!("Failed to load resource: the server responded with a status of {code} ")) && source.ends_with(path)
                })
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"{\"op\": \"close\"}\n");
        }
        let deadline = Instant::now() + seconds(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn cookies(page: &Value) -> Vec<String> {
    page["cookies"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect()
}

fn text(page: &Value) -> &str {
    page["text"].as_str().unwrap_or_default()
}

/// RFC 4180 records (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The hour a shown time names, on a 24-hour clock ("01/15/2026, 12:30:00 PM EST" is 12).
fn shown_hour(shown: &str) -> Option<u32> {
    let mut words = shown.split_whitespace().skip(1);
    let clock = words.next()?;
    let half = words.next()?;
    let hour: u32 = clock.split(':').next()?.parse().ok()?;
    match half {
        "AM" => Some(hour % 12),
        "PM" => Some(hour % 12 + 12),
        _ => None,
    }
}

/// Every `<time>` on the page is shown in the browser's zone (New York),
/// at the hour its UTC instant is there, never as UTC.
fn check_times_are_local(b: &mut Browser, page: &str) {
    let times = b.call("all", json!({ "selector": "time[datetime]", "attrs": ["datetime", "title"] }))["items"].as_array().cloned().unwrap_or_default();
    assert!(!times.is_empty(), "{page} shows no times");
    for t in &times {
        let shown = t["text"].as_str().unwrap_or_default();
        let utc = t["datetime"].as_str().unwrap_or_default();
        assert!(!shown.contains("UTC"), "{page}: a time is still shown in UTC: {t}");
        let offset = if shown.ends_with(" EST") {
            5
        } else if shown.ends_with(" EDT") {
            4
        } else {
            panic!("{page}: a time is not shown in the browser's zone (New York): {t}")
        };
        let utc_hour: u32 = utc.get(11..13).and_then(|h| h.parse().ok()).unwrap_or_else(|| panic!("{page}: datetime {utc:?} is not RFC 3339"));
        assert_eq!(shown_hour(shown), Some((utc_hour + 24 - offset) % 24), "{page}: {shown:?} is not {utc} in New York");
    }
}

/// A governed session on one host, seen in the browser from the overview
/// to the session's process tree, the decisions (filtered, exported, tailed
/// live), an approval given in the page that lets the held command run
/// exactly once, a viewer refused, and a policy edited in the page: a broken
/// edit changes nothing, a good one reaches the host and is enforced.
fn the_control_room_shows_a_governed_session_and_acts_on_the_fleet() {
    let python = python_playwright();
    let gw = Gateway::start_with("ui", None, &["--ui-listen", "127.0.0.1:0"]);
    make_users(&gw);
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("ui-a", &gw.agent_args(&join, HOST));
    push(&gw, &policy_dir("ui-v1", V1), "terraform apply is blocked, kubectl delete needs a person");
    gw.wait_enforced(HOST, 1);

    let mut live = a.live_session("agent");
    let sid = live.session_id.clone();
    let (out, _) = live.run("terraform plan");
    assert!(out.contains(RAN), "v1 blocked terraform plan: {out}");
    let (out, _) = live.run("terraform apply");
    assert!(!out.contains(RAN), "v1 did not block terraform apply: {out}");
    // Allowed under v1: the edit below blocks it.
    let (out, _) = live.run("aws s3 rm s3://bucket/key");
    assert!(out.contains(RAN), "v1 blocked aws s3 rm: {out}");
    wait_for("the session's deny at the gateway", 30, || !gw.decisions(Some(HOST), &["--session", &sid, "--decision", "deny"]).is_empty());
    wait_for("the session at the gateway", 30, || {
        gw.json(&["sessions", "--host", HOST])["sessions"].as_array().is_some_and(|l| l.iter().any(|s| s["session"]["id"] == sid.as_str()))
    });

    let mut b = Browser::start(&python, &gw);
    // The browser is told to ignore the certificate; the chain is checked here.
    let tls = b.call("verify_tls", json!({}));
    assert_eq!(tls["verified"], true, "{tls}");
    assert!(tls["subject_alt_names"].as_array().is_some_and(|n| n.iter().any(|n| n == "127.0.0.1")), "the UI's certificate does not name 127.0.0.1: {tls}");

    // Signing in: a wrong password is refused and starts no session.
    let form = b.goto("/signin");
    assert!(text(&form).contains("Username"), "{form:#}");
    b.screenshot("signin");
    let refused = b.call("signin", json!({ "username": "ada", "password": "not-the-password-at-all" }));
    assert_eq!((refused["status"].as_u64(), refused["path"].as_str()), (Some(401), Some("/signin")), "{refused:#}");
    assert!(text(&refused).contains("Wrong username or password"), "the page does not say why: {refused:#}");
    assert!(!cookies(&refused).contains(&SESSION_COOKIE.to_string()), "a wrong password got a session cookie: {refused:#}");
    let unknown = b.call("signin", json!({ "username": "nobody", "password": "not-the-password-at-all" }));
    assert_eq!((unknown["status"].as_u64(), text(&unknown).contains("Wrong username or password")), (Some(401), true), "an unknown user is answered differently: {unknown:#}");
    let kept_out = b.call("goto", json!({ "path": "/decisions" }));
    assert_eq!(kept_out["path"], "/signin", "a page without signing in: {kept_out:#}");

    // Overview: the host, the version it enforces, the denies per hour.
    let overview = b.signed_in_as("ada");
    let shown = text(&overview);
    assert!(shown.contains(HOST) && shown.contains("connected") && shown.contains("v1"), "the overview does not show {HOST} enforcing v1:\n{shown}");
    assert!(shown.contains("Denies per hour") && !shown.contains("No denies in the last 24 hours"), "no deny chart:\n{shown}");
    assert!(b.count("svg.chart rect.bar") > 0, "the chart draws no bars");
    assert!(b.text("table.compact").contains("Hour starting"), "no table of the hours with denies");
    b.screenshot("overview");

    // Sessions, and the session's detail: its process tree with the deny.
    let sessions = b.goto("/sessions");
    assert!(text(&sessions).contains(&sid), "the session list lacks {sid}:\n{}", text(&sessions));
    b.screenshot("sessions");
    let detail = b.click(&format!("a[href='/sessions/{HOST}/{sid}']"));
    assert_eq!(detail["status"], 200, "{detail:#}");
    let tree = b.text("pre.tree");
    assert!(tree.contains("terraform plan") && tree.contains("terraform apply  [denied]"), "the process tree does not show the denied terraform apply:\n{tree}");
    assert!(b.count("pre.tree span.denied") >= 1, "the denied process is not marked");
    assert!(text(&detail).contains("agent") && text(&detail).contains("live"), "{}", text(&detail));
    check_times_are_local(&mut b, "the session's page");
    b.screenshot("session");

    // Decisions filtered to denies, in the browser's time zone.
    b.goto("/decisions");
    b.call("select", json!({ "selector": "select[name=decision]", "value": "deny" }));
    let denies = b.click("form.filters button[type=submit]");
    assert!(denies["url"].as_str().unwrap_or_default().contains("decision=deny"), "{denies:#}");
    let rows = b.call("all", json!({ "selector": "#rows tr" }))["items"].as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty(), "no denies listed:\n{}", text(&denies));
    for row in &rows {
        assert!(row["text"].as_str().unwrap_or_default().contains("deny"), "an allow among the denies: {row}");
    }
    assert!(rows.iter().any(|r| r["text"].as_str().is_some_and(|t| t.contains("terraform apply") && t.contains(&sid))), "the session's deny is not listed: {rows:?}");
    check_times_are_local(&mut b, "the decisions page");
    b.screenshot("decisions");

    // The exports, fetched with the browser's cookies, hold the deny.
    let csv = b.call("get", json!({ "path": "/decisions/export.csv?decision=deny" }));
    assert_eq!(csv["status"], 200, "{csv:#}");
    assert!(csv["headers"]["content-type"].as_str().unwrap_or_default().starts_with("text/csv"), "{csv:#}");
    let records = parse_csv(csv["body"].as_str().unwrap_or_default());
    let header = records.first().cloned().unwrap_or_default();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("the CSV has no {name} column: {header:?}"));
    let (decision, session, argv, rule) = (col("decision"), col("session"), col("argv"), col("rule"));
    assert!(records.len() > 1 && records[1..].iter().all(|r| r.len() == header.len() && r[decision] == "deny"), "the CSV export is not only denies: {records:?}");
    assert!(records[1..].iter().any(|r| r[session] == sid && r[argv] == "terraform apply" && r[rule] == "terraform apply"), "the CSV export lacks the deny: {records:?}");
    let exported = b.call("get", json!({ "path": "/decisions/export.json?decision=deny" }));
    assert_eq!(exported["status"], 200, "{exported:#}");
    let list: Vec<Value> = serde_json::from_str(exported["body"].as_str().unwrap_or_default()).unwrap_or_else(|e| panic!("the JSON export is not a JSON array ({e}): {exported:#}"));
    assert!(
        list.iter().any(|d| d["host"] == HOST && d["decision"]["session_id"] == sid.as_str() && d["decision"]["decision"] == "deny" && d["decision"]["argv"] == json!(["terraform", "apply"])),
        "the JSON export lacks the deny: {list:#?}"
    );

    // The live tail shows a deny made after the page opened.
    let tail = b.goto("/decisions?decision=deny&live=1");
    assert!(b.count("#tail") == 1, "no live tail: {}", text(&tail));
    let (out, _) = live.run("terraform apply -target=made-after-the-page-opened");
    assert!(!out.contains(RAN), "{out}");
    let seen = b.call("wait_text", json!({ "selector": "#rows", "contains": "made-after-the-page-opened", "timeout_s": seconds(60).as_secs() }));
    assert!(seen["text"].as_str().unwrap_or_default().contains("deny"), "{seen}");
    check_times_are_local(&mut b, "the live tail");

    // A command that needs a person, held on the host.
    let id = approval_id(&held(&mut live, "kubectl delete pod web-1"));
    wait_for("the request at the gateway", 30, || pending_at_gateway(&gw).contains(&id));
    let decide = format!("/approvals/{id}/decide");

    // A viewer sees it but cannot decide it, whatever it posts.
    b.signed_in_as("val");
    let queue = b.goto("/approvals");
    assert!(text(&queue).contains(&id) && text(&queue).contains("can see requests but not decide"), "{}", text(&queue));
    assert_eq!(b.count("button[value=approve]"), 0, "the viewer is shown an approve button");
    b.goto(&format!("/approvals/{id}"));
    assert_eq!(b.count("button[value=approve]"), 0, "the viewer is shown an approve button on the request's page");
    let csrf = b.call("csrf", json!({}))["csrf"].as_str().unwrap_or_default().to_string();
    assert!(!csrf.is_empty(), "the viewer's page carries no CSRF token");
    let posted = b.call("post", json!({ "path": decide, "fields": { "csrf": csrf, "verdict": "approve", "grant_seconds": "0", "reason": "a viewer tries", "back": "queue" } }));
    assert_eq!(posted["status"], 403, "a viewer's approval was not refused: {posted:#}");
    assert!(posted["body"].as_str().unwrap_or_default().contains("approver"), "the refusal does not say what role it takes: {posted:#}");
    let forged = b.call("post", json!({ "path": decide, "fields": { "verdict": "approve", "grant_seconds": "0" } }));
    assert_eq!(forged["status"], 403, "a decision without the CSRF token was not refused: {forged:#}");
    assert!(pending_at_gateway(&gw).contains(&id), "the request is no longer pending after the viewer's posts");

    // An approver approves it once, in the page.
    b.signed_in_as("abe");
    let queue = b.goto("/approvals");
    assert!(text(&queue).contains("kubectl delete pod web-1"), "{}", text(&queue));
    let form = format!("form[action='{decide}']");
    assert_eq!(b.count(&format!("{form} button[value=approve]")), 1, "the approver sees no approve button");
    b.call("select", json!({ "selector": format!("{form} select[name=grant_seconds]"), "value": "0" }));
    b.fill(&format!("{form} input[name=reason]"), "rolling web-1");
    b.screenshot("approvals");
    let after = b.click(&format!("{form} button[value=approve]"));
    assert_eq!((after["status"].as_u64(), after["path"].as_str()), (Some(200), Some("/approvals")), "{after:#}");
    assert_eq!(b.count(&format!("{form} button[value=approve]")), 0, "the request decided a moment ago is still offered for a decision:\n{}", text(&after));
    let waited = gw.cli(&["approvals", "wait", &id, "--timeout", "60s", "--json"]);
    assert_eq!(waited.status.code(), Some(0), "approvals wait: {}{}", String::from_utf8_lossy(&waited.stdout), stderr(&waited));
    let approved = b.goto("/approvals?state=approved");
    assert!(text(&approved).contains(&id) && text(&approved).contains("abe (Control Room) (once): rolling web-1"), "{}", text(&approved));
    wait_for("the verdict on the host", 30, || {
        let out = a.cli(&["approvals", "show", &id, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|r| r["state"] == "approved" && r["verdict"]["decided_by"].as_str().is_some_and(|by| by.contains("abe")))
    });
    let (out, _) = live.run("kubectl delete pod web-1");
    assert!(out.contains(RAN), "the command approved in the page did not run: {out}\nagent log:\n{}", a.log());
    let again = held(&mut live, "kubectl delete pod web-1");
    assert_ne!(approval_id(&again), id, "the retry after the grant's use must open a new request, not use the grant again");

    // Policies: a broken edit names the file and line and changes nothing.
    b.signed_in_as("ada");
    b.goto("/policies");
    b.screenshot("policies");
    let editor = b.click("a[href='/policies/edit']");
    assert!(text(&editor).contains("from version 1"), "{}", text(&editor));
    let content = "textarea[aria-label='Content of policies/infra.json']";
    assert_eq!(b.count(content), 1, "the editor has no policies/infra.json:\n{}", text(&editor));
    b.fill(content, BROKEN);
    b.fill("input[name=comment]", "a broken edit");
    let broken = b.click("button[value=push]");
    assert_eq!(broken["status"], 422, "{broken:#}");
    let error = b.text("#policy-error");
    assert!(error.contains("policies/infra.json:5:") && error.contains("blocked_commands"), "the error does not name the file, field and line:\n{error}");
    assert!(text(&broken).contains("Nothing was pushed: version 1 stays in force"), "{}", text(&broken));
    b.screenshot("policy-edit-error");
    let history = gw.json(&["policy", "history"]);
    let versions: Vec<u64> = history["versions"].as_array().into_iter().flatten().filter_map(|v| v["version"].as_u64()).collect();
    assert_eq!(versions, vec![1], "a refused edit wrote a version: {history:#}");
    assert_eq!(gw.host(HOST).expect("the host")["enforced_version"], 1);

    // A good edit is pushed, reaches the host, and is enforced there.
    b.fill(content, V2);
    b.fill("input[name=comment]", "aws s3 rm is blocked too");
    let pushed = b.click("button[value=push]");
    assert_eq!((pushed["status"].as_u64(), pushed["path"].as_str()), (Some(200), Some("/policies/2")), "{pushed:#}");
    assert!(text(&pushed).contains("aws s3 rm"), "the new version's page does not show the change:\n{}", text(&pushed));
    gw.wait_enforced(HOST, 2);
    let history = gw.json(&["policy", "history"]);
    assert_eq!(history["versions"][0]["comment"], "aws s3 rm is blocked too", "{history:#}");
    let overview = b.goto("/");
    assert!(text(&overview).contains("v2"), "the overview does not show the host enforcing v2:\n{}", text(&overview));
    let (out, _) = live.run("aws s3 rm s3://bucket/key");
    assert!(!out.contains(RAN), "version 2 pushed from the page is not enforced: {out}");

    let settings = b.goto("/settings");
    for user in ["ada", "abe", "val"] {
        assert!(text(&settings).contains(user), "the settings page does not list {user}:\n{}", text(&settings));
    }
    b.screenshot("settings");

    let errors = b.console_errors(&[(401, "/signin"), (422, "/policies/edit")]);
    assert!(errors.is_empty(), "the pages logged console errors or CSP violations: {errors:#?}");
    live.quit();
}

/// The gateway's detectors block the session's user; an admin lifts the
/// block in the page (a viewer cannot) and the user's sessions start again.
fn a_block_lifted_in_the_control_room_lets_the_user_launch_again() {
    let python = python_playwright();
    let gw = Gateway::start_with("ui-sec", Some("detect_interval = 1\n\n[ui]\nlisten = \"127.0.0.1:0\"\n"), &[]);
    make_users(&gw);
    let settings = TempDir::new("ui-security-settings");
    let file = settings.0.join("settings.toml");
    std::fs::write(&file, "[rules.repeated_denials]\nthreshold = 5\nseverity = \"critical\"\n[rules.escalation_probing]\nenabled = false\n").expect("write settings");
    let set = gw.cli(&["security", "settings", "set", &file.display().to_string(), "--comment", "five denials are critical"]);
    assert!(set.status.success(), "settings set: {}", stderr(&set));
    let join = gw.token(&["--join"]);
    let a = Daemon::start_without_policy_dir("ui-sec-a", &gw.agent_args(&join, "ui-sec-host"));
    push(&gw, &policy_dir("ui-security", GUARDED), "terraform destroy is blocked");
    gw.wait_enforced("ui-sec-host", 1);

    let mut live = a.live_session("agent");
    for _ in 0..5 {
        let (out, _) = live.run("terraform destroy");
        assert!(!out.contains(RAN), "{out}");
    }
    let mut blocks = Vec::new();
    // The rule places one block per subject (the user and the session), and
    // a detection pass stores them one after the other: wait for both, so
    // that the lifts below cover every block in force.
    wait_for("the gateway's hard blocks on the user and the session", 60, || {
        blocks = gw.json(&["security", "blocks", "--status", "active"])["blocks"].as_array().cloned().unwrap_or_default();
        blocks.iter().any(|b| b["subject_kind"] == "user" && b["subject"] == "root" && b["kind"] == "hard") && blocks.iter().any(|b| b["subject_kind"] == "session")
    });
    let user_block = blocks.iter().find(|b| b["subject_kind"] == "user").and_then(|b| b["id"].as_str()).expect("the user's block").to_string();
    wait_for("the block in force on the host", 30, || !a.governed(Some("agent"), "terraform plan").tool_ran());
    let refused = a.governed(Some("agent"), "terraform plan");
    assert!(!refused.tool_ran() && refused.all_output().contains(&user_block), "a new session started while the user is blocked: {}", refused.all_output());
    live.quit();

    let mut b = Browser::start(&python, &gw);
    // A viewer sees the block but is offered no lift, and a posted one is refused.
    b.signed_in_as("val");
    let page = b.goto("/security");
    assert!(text(&page).contains(&user_block) && text(&page).contains("repeated_denials"), "{}", text(&page));
    assert_eq!(b.count("form[action$='/lift']"), 0, "the viewer is offered a lift");
    let csrf = b.call("csrf", json!({}))["csrf"].as_str().unwrap_or_default().to_string();
    let posted = b.call("post", json!({ "path": format!("/security/blocks/{user_block}/lift"), "fields": { "csrf": csrf, "reason": "a viewer tries" } }));
    assert_eq!(posted["status"], 403, "a viewer's lift was not refused: {posted:#}");

    // The admin lifts every block in force, in the page.
    b.signed_in_as("ada");
    b.goto("/security");
    check_times_are_local(&mut b, "the security page");
    b.screenshot("security");
    for block in &blocks {
        let id = block["id"].as_str().unwrap_or_default();
        let form = format!("form[action='/security/blocks/{id}/lift']");
        assert_eq!(b.count(&form), 1, "no lift form for {id}");
        b.fill(&format!("{form} input[name=reason]"), "reviewed: the denials were a test");
        let after = b.click(&format!("{form} button[type=submit]"));
        assert_eq!(after["status"], 200, "{after:#}");
        assert!(text(&after).contains(id) && text(&after).contains("lifted by ada"), "{}", text(&after));
    }
    let active = gw.json(&["security", "blocks", "--status", "active"]);
    assert!(active["blocks"].as_array().is_none_or(|l| l.is_empty()), "blocks still active after the lifts: {active:#}");
    wait_for("the lift on the host", 30, || a.governed(Some("agent"), "terraform plan").tool_ran());

    let errors = b.console_errors(&[]);
    assert!(errors.is_empty(), "the pages logged console errors or CSP violations: {errors:#?}");
}

kernel_tests!(the_control_room_shows_a_governed_session_and_acts_on_the_fleet, a_block_lifted_in_the_control_room_lets_the_user_launch_again);
