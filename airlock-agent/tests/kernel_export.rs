//! The SIEM export, end to end: a daemon run with `--export ocsf:FILE` and
//! `--export otlp:URL` governs a session that runs a blocked command, an
//! allowed one (with a password on its command line) and a connect to a
//! denied loopback address. The OCSF lines are validated in Python against
//! the OCSF 1.4.0 schema (ocsf-json-schema + jsonschema); the OTLP records
//! arrive at a real LogsService receiver (opentelemetry-proto on grpcio) on
//! loopback. A collector that is down at first gets the records once it
//! starts, within the exporter's bounded retry. A gateway run with
//! `--export` exports an enrolled host's decisions with the host as device.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::gateway::Gateway;
use support::*;

const POLICY: &str = r#"{ "id": "siem", "name": "SIEM test", "status": "active",
  "blocked_commands": ["terraform apply"],
  "egress": { "deny": ["127.0.0.2/32"] } }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["siem"] }"#;
/// The session: a blocked exec, an allowed one whose password is masked, a refused connect.
const SCRIPT: &str = "terraform apply\nterraform plan --password=hunter2hunter2\n(exec 3<>/dev/tcp/127.0.0.2/9) 2>/dev/null; echo connect=$?\n";

fn python_helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
}

/// The Python OTLP receiver, ended by pid when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(python: &Path, port: u16, out: &Path) -> Receiver {
        let mut child = Command::new(python)
            .arg(python_helper("otlp_receiver.py"))
            .arg(port.to_string())
            .arg(out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start otlp_receiver.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("the receiver's stdout")).read_line(&mut line).expect("read the receiver's first line");
        let Some(bound) = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the OTLP receiver did not start: {line:?}");
        };
        Receiver { child, port: bound, out: out.to_path_buf() }
    }

    /// Every LogRecord received so far, with its request's resource attributes.
    fn records(&self) -> Vec<(Value, Value)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut all = Vec::new();
        for line in text.lines().filter(|l| l.ends_with('}')) {
            let request: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("receiver line is not JSON ({e}): {line}"));
            for rl in request["resource_logs"].as_array().into_iter().flatten() {
                for sl in rl["scope_logs"].as_array().into_iter().flatten() {
                    for r in sl["log_records"].as_array().into_iter().flatten() {
                        all.push((r.clone(), rl["resource"].clone()));
                    }
                }
            }
        }
        all
    }

    /// Waits (bounded) until records with each of `ids` arrived.
    fn wait_for(&self, ids: &[u64], within: std::time::Duration, daemon: &Daemon) -> Vec<(Value, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let records = self.records();
            let got: Vec<(Value, Value)> = ids.iter().filter_map(|id| records.iter().find(|(r, _)| attribute(r, "airlock.decision_id") == Some(id.to_string())).cloned()).collect();
            if got.len() == ids.len() {
                return got;
            }
            assert!(Instant::now() < deadline, "the receiver got {} of the records {ids:?}: {records:#?}\ndaemon log:\n{}", got.len(), daemon.log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// An attribute's value as text (protobuf's JSON mapping writes int64 as a string).
fn attribute(record: &Value, key: &str) -> Option<String> {
    let kv = record["attributes"].as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v["string_value"].as_str().or_else(|| v["int_value"].as_str()).map(str::to_string)
}

fn resource_attribute(resource: &Value, key: &str) -> Option<String> {
    attribute(resource, key)
}

/// The OCSF lines of the file, by `metadata.uid`.
fn ocsf_lines(file: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("OCSF line is not JSON ({e}): {l}"));
            (l.trim_end().to_string(), v)
        })
        .collect()
}

fn wait_ocsf(file: &Path, ids: &[u64], daemon: &Daemon) -> Vec<(String, Value)> {
    let deadline = Instant::now() + seconds(15);
    loop {
        let lines = ocsf_lines(file);
        let got: Vec<(String, Value)> = ids.iter().filter_map(|id| lines.iter().find(|(_, v)| v["metadata"]["uid"].as_str() == Some(id.to_string().as_str())).cloned()).collect();
        if got.len() == ids.len() {
            return got;
        }
        assert!(Instant::now() < deadline, "{} has {} of the decisions {ids:?}:\n{lines:#?}\ndaemon log:\n{}", file.display(), got.len(), daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs the OCSF validator over `file`; panics with its report unless every line is valid.
fn validate_ocsf(python: &Path, file: &Path) -> String {
    let out = Command::new(python).arg(python_helper("ocsf_validate.py")).arg(file).output().expect("run ocsf_validate.py");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.contains("VALID: 0 invalid"), "OCSF validation failed for {}:\n{report}\n{}", file.display(), std::fs::read_to_string(file).unwrap_or_default());
    report
}

/// The session's three decisions, from the audit trail: (denied exec, allowed exec, denied connect).
fn session_decisions(d: &Daemon, session: &str) -> (Value, Value, Value) {
    let ours = |v: &Value| v["session_id"] == session;
    let deny = d.wait_audit("the blocked terraform apply", |v| ours(v) && v["kind"] == "exec" && v["decision"] == "deny" && v["rule"] == "terraform apply");
    let allow = d.wait_audit("the allowed terraform plan", |v| ours(v) && v["kind"] == "exec" && v["decision"] == "allow" && v["argv"][1] == "plan");
    let connect = d.wait_audit("the refused connect", |v| ours(v) && v["kind"] == "connect" && v["decision"] == "deny");
    (deny[0].clone(), allow[0].clone(), connect[0].clone())
}

fn id(v: &Value) -> u64 {
    v["id"].as_u64().expect("a decision id")
}

fn decisions_go_to_an_ocsf_file_and_an_otlp_collector() {
    let python = python_export();
    let out = TempDir::new("export-out");
    let receiver = Receiver::start(&python, 0, &out.0.join("otlp.jsonl"));
    let file = out.0.join("ocsf.jsonl");
    let d = Daemon::start_with_args(
        "export",
        &[("siem.json", POLICY)],
        &[("agent.json", ROLE)],
        &["--export".to_string(), format!("ocsf:{}", file.display()), "--export".to_string(), format!("otlp:http://127.0.0.1:{}", receiver.port)],
    );
    let s = d.governed(Some("agent"), SCRIPT);
    assert!(s.all_output().contains("connect=1"), "the connect to 127.0.0.2 was not refused:\n{}", s.all_output());
    let (deny, allow, connect) = session_decisions(&d, &s.session_id);
    let ids = [id(&deny), id(&allow), id(&connect)];

    // The file: one valid OCSF event per decision, mode 0640, masked.
    let lines = wait_ocsf(&file, &ids, &d);
    let report = validate_ocsf(&python, &file);
    println!("{report}\nthe denied exec's line (docs/export.md shows one): {}", lines[0].0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("the OCSF file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the OCSF file's mode");
    let (e_deny, e_allow, e_connect) = (&lines[0].1, &lines[1].1, &lines[2].1);
    assert_eq!((e_deny["class_uid"].as_u64(), e_deny["activity_id"].as_u64(), e_deny["action"].as_str()), (Some(1007), Some(1), Some("Denied")), "{e_deny:#}");
    assert_eq!(e_deny["process"]["cmd_line"], "terraform apply");
    assert!(e_deny["process"]["file"]["path"].as_str().is_some_and(|p| p.ends_with("/terraform")), "{e_deny:#}");
    assert_eq!(e_deny["unmapped"]["session_id"], s.session_id.as_str());
    assert_eq!(e_deny["unmapped"]["rule"], "terraform apply");
    assert_eq!(e_deny["unmapped"]["role"], "agent");
    assert_eq!(e_deny["device"]["hostname"], deny["host"]);
    assert_eq!(e_deny["time"].as_i64(), deny["time_unix_nanos"].as_i64().map(|ns| ns / 1_000_000));
    assert_eq!((e_allow["class_uid"].as_u64(), e_allow["action"].as_str(), e_allow["disposition"].as_str()), (Some(1007), Some("Allowed"), Some("Allowed")));
    let cmd_line = e_allow["process"]["cmd_line"].as_str().unwrap_or_default();
    assert!(cmd_line.starts_with("terraform plan --password=") && !cmd_line.contains("hunter2"), "the export saw an unmasked command line: {cmd_line}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("hunter2"), "the secret reached the OCSF file");
    assert!(e_allow["severity_id"].as_u64() < e_deny["severity_id"].as_u64(), "a deny is more severe than an allow");
    assert_eq!((e_connect["class_uid"].as_u64(), e_connect["category_uid"].as_u64(), e_connect["activity_name"].as_str()), (Some(4001), Some(4), Some("Refuse")), "{e_connect:#}");
    assert_eq!(e_connect["action"], "Denied");
    assert_eq!(e_connect["dst_endpoint"]["ip"], "127.0.0.2");
    assert_eq!(e_connect["dst_endpoint"]["port"], 9);
    assert_eq!(e_connect["connection_info"]["protocol_name"], "tcp");

    // The collector: the same events as the records' bodies, with severity, time and the resource.
    let records = receiver.wait_for(&ids, seconds(30), &d);
    let bodies = out.0.join("bodies.jsonl");
    let mut text = String::new();
    for ((record, resource), (line, _)) in records.iter().zip(&lines) {
        let body = record["body"]["string_value"].as_str().expect("the body is the OCSF event's text");
        assert_eq!(body, line, "the record's body is the file's line, byte for byte");
        text.push_str(body);
        text.push('\n');
        assert_eq!(resource_attribute(resource, "service.name").as_deref(), Some("airlock-agent"));
        assert_eq!(resource_attribute(resource, "host.name"), deny["host"].as_str().map(str::to_string));
    }
    std::fs::write(&bodies, text).expect("write the bodies");
    validate_ocsf(&python, &bodies);
    let (r_deny, r_allow) = (&records[0].0, &records[1].0);
    assert_eq!(r_deny["severity_text"], "WARN");
    assert_eq!(r_deny["severity_number"], "SEVERITY_NUMBER_WARN");
    assert_eq!(r_allow["severity_text"], "INFO");
    assert_eq!(r_deny["time_unix_nano"].as_str().map(str::to_string), deny["time_unix_nanos"].as_i64().map(|t| t.to_string()));
    assert_eq!(attribute(r_deny, "ocsf.class_uid").as_deref(), Some("1007"));
    assert_eq!(attribute(&records[2].0, "ocsf.class_uid").as_deref(), Some("4001"));
    assert_eq!(attribute(r_deny, "airlock.session_id").as_deref(), Some(s.session_id.as_str()));
    drop(d);
    drop(receiver);
}

fn a_collector_that_is_down_at_first_gets_the_records_once_it_starts() {
    let python = python_export();
    let out = TempDir::new("export-late");
    // A loopback port nothing listens on until the receiver takes it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port();
    let d = Daemon::start_with_args("export-late", &[("siem.json", POLICY)], &[("agent.json", ROLE)], &["--export".to_string(), format!("otlp:http://127.0.0.1:{port}")]);
    let s = d.governed(Some("agent"), "terraform apply\n");
    let deny = d.wait_audit("the blocked terraform apply", |v| v["session_id"] == s.session_id.as_str() && v["decision"] == "deny");
    // The exporter tried and is retrying: the collector is down.
    wait_for_log(&d, "OTLP export failed", seconds(15), "the exporter never tried the collector that is down");
    let receiver = Receiver::start(&python, port, &out.0.join("otlp.jsonl"));
    // Within the exporter's retry window (60 s), from the first attempt.
    let records = receiver.wait_for(&[id(&deny[0])], seconds(90), &d);
    let body: Value = serde_json::from_str(records[0].0["body"]["string_value"].as_str().expect("a string body")).expect("the body is JSON");
    assert_eq!((body["class_uid"].as_u64(), body["action"].as_str()), (Some(1007), Some("Denied")));
    // The receiver writes the records before it answers, and the exporter logs once the answer arrives.
    wait_for_log(&d, "OTLP export delivered after retries", seconds(30), "the exporter received the collector's answer but never said it delivered after retries");
    drop(d);
    drop(receiver);
}

/// Waits (bounded) until the daemon's log says `needle`.
fn wait_for_log(d: &Daemon, needle: &str, within: std::time::Duration, failure: &str) {
    let deadline = Instant::now() + within;
    while !d.log().contains(needle) {
        assert!(Instant::now() < deadline, "{failure}; log:\n{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn the_gateway_exports_every_hosts_decisions_as_it_stores_them() {
    let python = python_export();
    let out = TempDir::new("export-gw");
    let file = out.0.join("fleet-ocsf.jsonl");
    let target = format!("ocsf:{}", file.display());
    let gw = Gateway::start_with("export", None, &["--export", &target]);
    let join = gw.token(&["--join"]);
    let host = Daemon::start_without_policy_dir("export-host", &gw.agent_args(&join, "export-host"));
    let policy = TempDir::new("export-gw-policy");
    write_policy_dir(&policy.0, &[("siem.json", POLICY)], &[("agent.json", ROLE)]);
    let pushed = gw.json(&["policy", "push", policy.0.join("policy").to_str().expect("utf-8 path"), "--comment", "siem"]);
    gw.wait_enforced("export-host", pushed["version"].as_u64().expect("the pushed version"));
    let s = host.governed(Some("agent"), "terraform apply\n");
    let deny = host.wait_audit("the blocked terraform apply", |v| v["session_id"] == s.session_id.as_str() && v["decision"] == "deny" && v["kind"] == "exec");
    let deadline = Instant::now() + seconds(30);
    let event = loop {
        let found = ocsf_lines(&file).into_iter().map(|(_, v)| v).find(|v| v["unmapped"]["session_id"] == s.session_id.as_str() && v["action"] == "Denied");
        if let Some(event) = found {
            break event;
        }
        assert!(Instant::now() < deadline, "the gateway did not export the host's denied exec; gateway log:\n{}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(event["device"]["hostname"], "export-host", "the host that decided, not the gateway: {event:#}");
    assert_eq!(event["metadata"]["uid"], id(&deny[0]).to_string());
    assert_eq!((event["class_uid"].as_u64(), event["process"]["cmd_line"].as_str()), (Some(1007), Some("terraform apply")));
    validate_ocsf(&python, &file);
    // Exported once: the host's resends after reconnects are not exported again.
    let copies = ocsf_lines(&file).iter().filter(|(_, v)| v["metadata"]["uid"] == event["metadata"]["uid"] && v["device"]["hostname"] == "export-host").count();
    assert_eq!(copies, 1, "{}", std::fs::read_to_string(&file).unwrap_or_default());
    drop(host);
    drop(gw);
}

kernel_tests!(
    decisions_go_to_an_ocsf_file_and_an_otlp_collector,
    a_collector_that_is_down_at_first_gets_the_records_once_it_starts,
    the_gateway_exports_every_hosts_decisions_as_it_stores_them
);
