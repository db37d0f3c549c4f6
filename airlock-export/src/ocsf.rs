//! A decision as an OCSF event (schema 1.4.0, profiles `host` and
//! `security_control`). The table in docs/export.md is this module's
//! contract:
//!
//! - exec: Process Activity (1007), Launch; the launched process in
//!   `process`, its parent in `actor.process`.
//! - connect, sendmsg, unix_connect, unix_sendmsg: Network Activity (4001),
//!   outbound; allowed: Open (connect) or Traffic (sendmsg), denied: Refuse
//!   (the kernel refused the attempt before any packet left).
//! - raw_socket: Network Activity, outbound; denied: Refuse, allowed: Open.
//!   No destination is known when a socket is made: the endpoint is the
//!   source, this host.
//! - tamper and file_open on a file: File System Activity (1001), the
//!   activity by operation; tamper aimed at a process or the kernel: Process
//!   Activity with Terminate (signals), Open (ptrace, descriptor grabs),
//!   Inject (memory writes), else Other.
//! - approval, revoke, tag_failure, events_lost, shipping_lost: not
//!   exported (see [`skip_reason`]).
//!
//! Airlock's own fields (session, role, rule, reason, ...) go under
//! `unmapped`. Command lines are the decision's, which the daemon masked
//! before any sink saw them.

use airlock_api::decision as kinds;
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, Destination, GuardDetail, RawSocket, UnixSocket};
use serde_json::{json, Map, Value};

/// The OCSF schema version every event states (`metadata.version`).
pub const OCSF_VERSION: &str = "1.4.0";
/// The profiles every event uses (`metadata.profiles`).
pub const PROFILES: [&str; 2] = ["host", "security_control"];

pub const PROCESS_ACTIVITY: u32 = 1007;
pub const NETWORK_ACTIVITY: u32 = 4001;
pub const FILE_ACTIVITY: u32 = 1001;

/// Who is exporting: the product in `metadata.product`.
#[derive(Debug, Clone)]
pub struct Producer {
    /// `metadata.product.version`: the exporting binary's version.
    pub version: String,
    /// `device.hostname` when a decision names no host.
    pub hostname: String,
}

/// Why a kind of decision is not exported, or None when it is.
pub fn skip_reason(kind: &str) -> Option<&'static str> {
    match kind {
        kinds::APPROVAL => Some(
            "an approval step is a workflow record; the held exec and the exec a grant let run are exported as Process Activity with the request id",
        ),
        kinds::REVOKE => Some("an operator's action on a session; the denials that follow it are exported"),
        kinds::TAG_FAILURE => Some("the daemon could not tag a process: an agent health record, in the audit trail and status"),
        kinds::EVENTS_LOST | kinds::SHIPPING_LOST => Some("a count of records lost before the pipeline: agent health, in the audit trail and status"),
        _ => None,
    }
}

/// The OCSF event for `d`, or None for a kind that is not exported (or a
/// record whose kind does not match its detail).
pub fn event(d: &Decision, producer: &Producer) -> Option<Value> {
    if skip_reason(&d.kind).is_some() {
        return None;
    }
    let denied = d.decision == kinds::DENY;
    let mut e = match (d.kind.as_str(), &d.detail) {
        (kinds::EXEC, _) => process_launch(d),
        (kinds::CONNECT | kinds::SENDMSG, Some(Detail::Destination(dest))) => network(d, denied, Endpoint::Address(dest)),
        (kinds::UNIX_CONNECT | kinds::UNIX_SENDMSG, Some(Detail::UnixSocket(u))) => network(d, denied, Endpoint::Unix(u)),
        (kinds::RAW_SOCKET, Some(Detail::RawSocket(r))) => raw_socket(d, denied, r, host_name(d, producer)),
        (kinds::TAMPER | kinds::FILE_OPEN, Some(Detail::Guard(g))) => guard(d, g),
        _ => return None,
    };
    let (class_uid, activity_id) = (e.class_uid, e.activity_id);
    let fields = &mut e.fields;
    fields.insert("class_uid".into(), json!(class_uid));
    fields.insert("class_name".into(), json!(class_name(class_uid)));
    let category = class_uid / 1000;
    fields.insert("category_uid".into(), json!(category));
    fields.insert("category_name".into(), json!(if category == 4 { "Network Activity" } else { "System Activity" }));
    fields.insert("activity_id".into(), json!(activity_id));
    fields.insert("activity_name".into(), json!(e.activity_name));
    fields.insert("type_uid".into(), json!(u64::from(class_uid) * 100 + u64::from(activity_id)));
    fields.insert("type_name".into(), json!(format!("{}: {}", class_name(class_uid), e.activity_name)));
    fields.insert("time".into(), json!(d.time_unix_nanos.max(0) / 1_000_000));
    fields.insert("metadata".into(), metadata(d, producer));
    fields.insert("device".into(), device(d, producer));
    let (severity_id, severity) = severity(d);
    fields.insert("severity_id".into(), json!(severity_id));
    fields.insert("severity".into(), json!(severity));
    let (action_id, action, status_id, status) = if denied { (2, "Denied", 2, "Failure") } else { (1, "Allowed", 1, "Success") };
    fields.insert("action_id".into(), json!(action_id));
    fields.insert("action".into(), json!(action));
    fields.insert("status_id".into(), json!(status_id));
    fields.insert("status".into(), json!(status));
    if !d.reason.is_empty() && d.reason != "none" {
        fields.insert("status_detail".into(), json!(d.reason));
    }
    let (disposition_id, disposition) = disposition(d, denied);
    fields.insert("disposition_id".into(), json!(disposition_id));
    fields.insert("disposition".into(), json!(disposition));
    if let Some(policy) = d.policy.as_deref().filter(|p| !p.is_empty()) {
        fields.insert("policy".into(), json!({ "uid": policy, "name": policy }));
    }
    fields.insert("message".into(), json!(message(d, denied)));
    fields.insert("unmapped".into(), unmapped(d));
    Some(Value::Object(e.fields))
}

/// The event's class, activity and its class-specific fields.
struct Partial {
    class_uid: u32,
    activity_id: u32,
    activity_name: &'static str,
    fields: Map<String, Value>,
}

fn class_name(class_uid: u32) -> &'static str {
    match class_uid {
        PROCESS_ACTIVITY => "Process Activity",
        NETWORK_ACTIVITY => "Network Activity",
        FILE_ACTIVITY => "File System Activity",
        _ => "Unknown",
    }
}

fn process_launch(d: &Decision) -> Partial {
    let mut fields = Map::new();
    fields.insert("process".into(), process(d));
    fields.insert("actor".into(), actor(d, parent(d)));
    Partial { class_uid: PROCESS_ACTIVITY, activity_id: 1, activity_name: "Launch", fields }
}

enum Endpoint<'a> {
    Address(&'a Destination),
    Unix(&'a UnixSocket),
}

fn network(d: &Decision, denied: bool, to: Endpoint<'_>) -> Partial {
    let datagram = matches!(d.kind.as_str(), kinds::SENDMSG | kinds::UNIX_SENDMSG);
    let (activity_id, activity_name) = match (denied, datagram) {
        (true, _) => (5, "Refuse"),
        (false, false) => (1, "Open"),
        (false, true) => (6, "Traffic"),
    };
    let (endpoint, connection) = match to {
        Endpoint::Address(dest) => {
            let mut ep = Map::new();
            if dest.address.parse::<std::net::IpAddr>().is_ok() {
                ep.insert("ip".into(), json!(dest.address));
            } else {
                ep.insert("hostname".into(), json!(dest.address));
            }
            if dest.port > 0 {
                ep.insert("port".into(), json!(dest.port));
            }
            (Value::Object(ep), outbound_connection(&dest.protocol.to_ascii_lowercase()))
        }
        Endpoint::Unix(u) => (json!({ "name": u.path, "type": "Unix socket" }), outbound_connection("unix")),
    };
    let mut fields = Map::new();
    fields.insert("dst_endpoint".into(), endpoint);
    fields.insert("connection_info".into(), connection);
    fields.insert("actor".into(), actor(d, Some(process(d))));
    Partial { class_uid: NETWORK_ACTIVITY, activity_id, activity_name, fields }
}

/// An outbound connection's `connection_info`: the protocol by name, and by
/// number when it is an IP protocol.
fn outbound_connection(protocol: &str) -> Value {
    let mut connection = Map::new();
    connection.insert("direction_id".into(), json!(2));
    connection.insert("direction".into(), json!("Outbound"));
    if let Some(number) = protocol_number(protocol) {
        connection.insert("protocol_num".into(), json!(number));
    }
    if !protocol.is_empty() {
        connection.insert("protocol_name".into(), json!(protocol));
    }
    Value::Object(connection)
}

/// The IANA number of an IP protocol by the name Airlock records.
fn protocol_number(name: &str) -> Option<u32> {
    match name {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmpv6" => Some(58),
        "raw" => Some(255),
        _ => None,
    }
}

/// A raw IP or packet socket being made. It has no destination yet, so the
/// endpoint OCSF asks for is the source: this host. A packet socket's
/// protocol is an ethertype, not an IP protocol: its protocol name is `packet`.
fn raw_socket(d: &Decision, denied: bool, r: &RawSocket, host: &str) -> Partial {
    let (activity_id, activity_name) = if denied { (5, "Refuse") } else { (1, "Open") };
    let protocol = if r.family == "packet" { "packet" } else { r.protocol.as_str() };
    let mut fields = Map::new();
    fields.insert("src_endpoint".into(), json!({ "hostname": host }));
    fields.insert("connection_info".into(), outbound_connection(protocol));
    fields.insert("actor".into(), actor(d, Some(process(d))));
    Partial { class_uid: NETWORK_ACTIVITY, activity_id, activity_name, fields }
}

fn guard(d: &Decision, g: &GuardDetail) -> Partial {
    let mut fields = Map::new();
    if let Some(path) = g.file.as_deref().filter(|f| !f.is_empty()) {
        let (activity_id, activity_name) = match g.operation.as_str() {
            "create" => (1, "Create"),
            "truncate" => (3, "Update"),
            "unlink" | "rmdir" => (4, "Delete"),
            "rename" => (5, "Rename"),
            "open" | "kernel_read_file" => (14, "Open"),
            _ => (99, "Other"),
        };
        fields.insert("file".into(), file(path));
        fields.insert("actor".into(), actor(d, Some(process(d))));
        return Partial { class_uid: FILE_ACTIVITY, activity_id, activity_name, fields };
    }
    let (activity_id, activity_name) = match g.operation.as_str() {
        "kill" | "tkill" | "tgkill" | "sigqueue" | "pidfd_send_signal" | "sigio" => (2, "Terminate"),
        "ptrace" | "process_vm_readv" | "pidfd_getfd" => (3, "Open"),
        "process_vm_writev" => (4, "Inject"),
        _ => (99, "Other"),
    };
    // The process acted on; with no target (bpf, modules, kexec) the caller itself.
    let target = match g.target_pid {
        Some(pid) if pid > 0 => json!({ "pid": pid }),
        _ => process(d),
    };
    fields.insert("process".into(), target);
    fields.insert("actor".into(), actor(d, Some(process(d))));
    Partial { class_uid: PROCESS_ACTIVITY, activity_id, activity_name, fields }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

fn file(path: &str) -> Value {
    json!({ "name": basename(path), "path": path, "type_id": 1, "type": "Regular File" })
}

/// The process a decision is about: for an exec, the new image.
fn process(d: &Decision) -> Value {
    let mut p = Map::new();
    p.insert("pid".into(), json!(d.pid));
    let name = if d.comm.is_empty() { basename(&d.executable) } else { d.comm.as_str() };
    if !name.is_empty() {
        p.insert("name".into(), json!(name));
    }
    if !d.argv.is_empty() {
        p.insert("cmd_line".into(), json!(d.argv.join(" ")));
    }
    if !d.executable.is_empty() {
        p.insert("file".into(), file(&d.executable));
    }
    if !d.cwd.is_empty() {
        p.insert("working_directory".into(), json!(d.cwd));
    }
    if let Some(user) = user(d) {
        p.insert("user".into(), user);
    }
    if d.ppid > 0 {
        p.insert("parent_process".into(), json!({ "pid": d.ppid }));
    }
    Value::Object(p)
}

fn parent(d: &Decision) -> Option<Value> {
    (d.ppid > 0).then(|| json!({ "pid": d.ppid }))
}

fn user(d: &Decision) -> Option<Value> {
    // A record about no process (none is exported today) names no user.
    if d.user.is_empty() && d.pid == 0 {
        return None;
    }
    let mut u = Map::new();
    u.insert("uid".into(), json!(d.uid.to_string()));
    if !d.user.is_empty() {
        u.insert("name".into(), json!(d.user));
    }
    Some(Value::Object(u))
}

fn actor(d: &Decision, process: Option<Value>) -> Value {
    let mut a = Map::new();
    if let Some(user) = user(d) {
        a.insert("user".into(), user);
    }
    if let Some(p) = process {
        a.insert("process".into(), p);
    }
    if !d.agent.is_empty() {
        a.insert("app_name".into(), json!(d.agent));
    }
    if a.is_empty() {
        a.insert("app_name".into(), json!("airlock"));
    }
    Value::Object(a)
}

fn metadata(d: &Decision, producer: &Producer) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "profiles": PROFILES,
        "product": { "name": "Airlock", "vendor_name": "Airlock", "version": producer.version },
        "uid": d.id.to_string(),
        "log_name": "decisions",
    });
    if !d.session_id.is_empty() {
        m["correlation_uid"] = json!(d.session_id);
    }
    if !d.time.is_empty() {
        m["original_time"] = json!(d.time);
    }
    m
}

/// The host a decision was made on: its own, else the exporter's.
fn host_name<'a>(d: &'a Decision, producer: &'a Producer) -> &'a str {
    let host = if d.host.is_empty() { producer.hostname.as_str() } else { d.host.as_str() };
    if host.is_empty() { "unknown" } else { host }
}

fn device(d: &Decision, producer: &Producer) -> Value {
    let host = host_name(d, producer);
    json!({ "hostname": host, "name": host, "type_id": 0, "type": "Unknown" })
}

/// Allowed: Informational. Denied: Medium; a tamper attempt or a security
/// block's refusal: High.
fn severity(d: &Decision) -> (u32, &'static str) {
    if d.decision != kinds::DENY {
        return (1, "Informational");
    }
    if d.kind == kinds::TAMPER || d.reason == "security_block" || d.reason.starts_with("tamper") {
        (4, "High")
    } else {
        (3, "Medium")
    }
}

fn disposition(d: &Decision, denied: bool) -> (u32, &'static str) {
    match (denied, d.reason.as_str()) {
        (true, "approval_required") => (14, "Delayed"),
        (true, "revoked") => (24, "Access Revoked"),
        (true, _) => (2, "Blocked"),
        (false, "approval_granted") => (8, "Approved"),
        (false, _) => (1, "Allowed"),
    }
}

fn message(d: &Decision, denied: bool) -> String {
    let verb = if denied { "denied" } else { "allowed" };
    let what = airlock_api::decision::subject_of(d);
    let why = match (&d.rule, d.reason.as_str()) {
        (Some(rule), _) if !rule.is_empty() => format!(" (rule {rule:?})"),
        (_, "" | "none") => String::new(),
        (_, reason) => format!(" ({reason})"),
    };
    format!("{} {verb}: {what}{why}", d.kind)
}

/// Airlock's own fields, which OCSF has no place for.
fn unmapped(d: &Decision) -> Value {
    let mut u = Map::new();
    let mut put = |key: &str, value: Value| {
        let empty = match &value {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => false,
        };
        if !empty {
            u.insert(key.to_string(), value);
        }
    };
    put("kind", json!(d.kind));
    put("decision", json!(d.decision));
    put("reason", json!(d.reason));
    put("session_id", json!(d.session_id));
    put("role", json!(d.role));
    put("agent", json!(d.agent));
    put("rule", json!(d.rule.as_deref().unwrap_or_default()));
    put("policy", json!(d.policy.as_deref().unwrap_or_default()));
    put("policy_generation", json!(d.policy_generation));
    put("backend", json!(d.backend));
    put("security_block", json!(d.security_block));
    if d.argv_truncated {
        put("argv_truncated", json!(true));
    }
    match &d.detail {
        Some(Detail::Exec(x)) => {
            put("filename", json!(x.filename));
            put("stage", json!(x.stage));
            put("matched_by", json!(x.matched_by.as_deref().unwrap_or_default()));
            put("file_identity", json!(x.file_identity));
            put("approval_request", json!(x.approval_request.as_deref().unwrap_or_default()));
            if let Some(p) = &x.detected_program {
                put("detected_program", json!({ "program": p.program, "by": p.by }));
            }
        }
        Some(Detail::UnixSocket(s)) => {
            put("socket_path", json!(s.path));
            put("socket_type", json!(s.socket_type));
            put("socket_resolved", json!(s.resolved));
            put("abstract_name", json!(s.abstract_name));
        }
        Some(Detail::RawSocket(r)) => {
            put("socket_family", json!(r.family));
            put("socket_type", json!(r.socket_type));
            put("socket_protocol", json!(r.protocol));
            put("enforcement", json!(r.enforcement.as_deref().unwrap_or_default()));
        }
        Some(Detail::Guard(g)) => {
            put("operation", json!(g.operation));
            put("argument", json!(g.argument));
            if let Some(pid) = g.target_pid {
                put("target_pid", json!(pid));
            }
            put("enforcement", json!(g.enforcement.as_deref().unwrap_or_default()));
        }
        _ => {}
    }
    Value::Object(u)
}

#[cfg(test)]
#[path = "ocsf_tests.rs"]
mod tests;
