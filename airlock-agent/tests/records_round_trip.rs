//! One decision record from the event thread to every sink: a decision of
//! every kind, with every field and its kind's detail set, goes through the
//! pipeline, and comes back whole from the audit line, the store and the live
//! stream. (The kernel suite's `every_decision_kind_reaches_the_audit_trail_the_store_and_the_api_whole`
//! does the same through the real daemon's gRPC API.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_agent::pipeline::audit::AuditSink;
use airlock_agent::pipeline::live::LiveSink;
use airlock_agent::pipeline::store::StoreSink;
use airlock_agent::pipeline::{Pipeline, Sink};
use airlock_api::decision as kind;
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{
    Decision, DecisionFilter, DetectedProgram, Destination, EventsLost, ExecDetail, GuardDetail, Revocation, UnixSocket,
};
use airlock_store::{Retention, Store};

/// Every top-level field set to something other than its default.
fn base(kind: &str, n: u32) -> Decision {
    Decision {
        id: 0,
        time_unix_nanos: 1_764_000_000_000_000_000 + i64::from(n),
        time: format!("2025-11-24T16:00:00.{n:09}Z"),
        host: "host-a".into(),
        kind: kind.into(),
        decision: "deny".into(),
        reason: "rule".into(),
        security_block: "blk-00000000000000aa".into(),
        session_id: "00000000000000aa".into(),
        role: "terraform-restricted-agent".into(),
        agent: "claude".into(),
        uid: 1000 + n,
        user: "alice".into(),
        pid: 4000 + n,
        ppid: 3000 + n,
        comm: "terraform".into(),
        executable: "/usr/local/bin/terraform".into(),
        argv: vec!["terraform".into(), "apply".into(), "-auto-approve".into(), String::new()],
        argv_truncated: true,
        cwd: "/home/alice/infra".into(),
        policy: Some("infra-mutation-block".into()),
        rule: Some("terraform apply".into()),
        backend: "lsm".into(),
        policy_generation: 7,
        detail: None,
    }
}

/// One decision of every kind the product records, each with its detail filled in.
fn every_kind() -> Vec<Decision> {
    let with = |kind: &str, n: u32, detail: Option<Detail>| Decision { detail, ..base(kind, n) };
    vec![
        with(
            kind::EXEC,
            1,
            Some(Detail::Exec(ExecDetail {
                filename: "./terraform".into(),
                matched_by: Some("identity".into()),
                stage: "early".into(),
                file_identity: vec!["protected_content".into(), "fileless".into()],
                detected_program: Some(DetectedProgram { program: "aws".into(), by: "content".into() }),
                approval_request: Some("apr-00112233aabbccdd".into()),
            })),
        ),
        with(kind::CONNECT, 2, Some(Detail::Destination(Destination { address: "10.1.2.3".into(), port: 443, protocol: "tcp".into() }))),
        with(kind::SENDMSG, 3, Some(Detail::Destination(Destination { address: "fd00::53".into(), port: 53, protocol: "udp".into() }))),
        with(
            kind::UNIX_CONNECT,
            4,
            Some(Detail::UnixSocket(UnixSocket { path: "/run/docker.sock".into(), socket_type: "stream".into(), resolved: true, abstract_name: false })),
        ),
        with(
            kind::UNIX_SENDMSG,
            5,
            Some(Detail::UnixSocket(UnixSocket { path: "@broker\\x00x".into(), socket_type: "dgram".into(), resolved: false, abstract_name: true })),
        ),
        with(
            kind::TAMPER,
            6,
            Some(Detail::Guard(GuardDetail {
                operation: "kill".into(),
                target_pid: Some(1234),
                argument: 15,
                file: Some("/sys/fs/bpf/airlock".into()),
                enforcement: Some("refused".into()),
            })),
        ),
        with(
            kind::FILE_OPEN,
            7,
            Some(Detail::Guard(GuardDetail {
                operation: "open".into(),
                target_pid: None,
                argument: 0o100000,
                file: Some("/home/alice/.aws/credentials".into()),
                enforcement: Some("killed".into()),
            })),
        ),
        with(kind::TAG_FAILURE, 8, None),
        with(kind::REVOKE, 9, Some(Detail::Revocation(Revocation { by: "root (uid 0, API socket)".into(), reason: "runaway agent".into(), killed: 12 }))),
        with(kind::EVENTS_LOST, 10, Some(Detail::EventsLost(EventsLost { count: 17, total: 40, decisions: 90_000 }))),
    ]
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-round-trip-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn every_decision_kind_comes_back_whole_from_every_sink() {
    let dir = scratch("sinks");
    let store = Arc::new(Store::open(&dir, Retention::default()).expect("open the store"));
    let audit = AuditSink::open(&dir.join("audit.jsonl")).expect("open the audit trail");
    let live = LiveSink::new();
    let mut follower = live.sender().subscribe();
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(audit), Box::new(StoreSink::new(store.clone())), Box::new(live)];
    let mut pipeline = Pipeline::new(sinks, 500);

    let sent: Vec<Decision> = every_kind().into_iter().map(|d| pipeline.emit(d).decision.clone()).collect();
    pipeline.flush();
    assert_eq!(sent.iter().map(|d| d.id).collect::<Vec<_>>(), (500..510).collect::<Vec<_>>());

    // The audit trail: one JSON line per decision, read back into the same record.
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("read the audit trail");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), sent.len());
    for (line, d) in lines.iter().zip(&sent) {
        let back: Decision = serde_json::from_str(line).unwrap_or_else(|e| panic!("{} line unreadable ({e}): {line}", d.kind));
        assert_eq!(&back, d, "the audit line of a {} decision lost something:\n{line}", d.kind);
    }

    // The live stream: the very records, in order.
    for d in &sent {
        let got = follower.try_recv().unwrap_or_else(|e| panic!("the stream has no {} decision: {e}", d.kind));
        assert_eq!(&got.decision, d);
    }

    // The store: every decision, newest first, equal field for field.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let (page, _) = store.query(&DecisionFilter::default(), 0, 100).expect("query the store");
        if page.len() == sent.len() || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stored = stored;
    stored.reverse();
    assert_eq!(stored, sent, "the store lost a field");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_kind_s_detail_is_written_under_its_own_key() {
    let keys = [
        (kind::EXEC, Some("exec")),
        (kind::CONNECT, Some("destination")),
        (kind::SENDMSG, Some("destination")),
        (kind::UNIX_CONNECT, Some("unix_socket")),
        (kind::UNIX_SENDMSG, Some("unix_socket")),
        (kind::TAMPER, Some("guard")),
        (kind::FILE_OPEN, Some("guard")),
        (kind::TAG_FAILURE, None),
        (kind::REVOKE, Some("revocation")),
        (kind::EVENTS_LOST, Some("events_lost")),
    ];
    let details = ["exec", "destination", "unix_socket", "guard", "revocation", "events_lost"];
    for (d, (kind, key)) in every_kind().iter().zip(keys) {
        assert_eq!(d.kind, kind);
        let json = serde_json::to_value(d).expect("serialize");
        for detail in details {
            assert_eq!(json.get(detail).is_some(), key == Some(detail), "{kind}: key {detail} in {json}");
        }
    }
}
