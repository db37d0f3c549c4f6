use super::*;
use airlock_api::v1::{ExecDetail, RawSocket, Revocation};

fn producer() -> Producer {
    Producer { version: "0.1.0".into(), hostname: "exporter-host".into() }
}

fn base(kind: &str, decision: &str) -> Decision {
    Decision {
        id: 42,
        time_unix_nanos: 1_700_000_000_987_654_321,
        time: "2023-11-14T22:13:20.987654321Z".into(),
        host: "build-7".into(),
        kind: kind.into(),
        decision: decision.into(),
        session_id: "548c53878c1379b5".into(),
        role: "terraform-restricted-agent".into(),
        agent: "claude".into(),
        uid: 1000,
        user: "alice".into(),
        pid: 4321,
        ppid: 4300,
        comm: "terraform".into(),
        executable: "/usr/local/bin/terraform".into(),
        argv: vec!["terraform".into(), "apply".into(), "-var=password=[MASKED]".into()],
        cwd: "/work".into(),
        backend: "lsm".into(),
        policy_generation: 3,
        ..Default::default()
    }
}

#[test]
fn a_denied_exec_is_a_process_launch_denied() {
    let mut d = base(kinds::EXEC, kinds::DENY);
    d.reason = "rule".into();
    d.policy = Some("infra-mutation-block".into());
    d.rule = Some("terraform apply".into());
    d.detail = Some(Detail::Exec(ExecDetail {
        filename: "/usr/local/bin/terraform".into(),
        matched_by: Some("executable".into()),
        stage: "early".into(),
        ..Default::default()
    }));
    let e = event(&d, &producer()).expect("exported");
    assert_eq!(
        (e["class_uid"].as_u64(), e["category_uid"].as_u64(), e["activity_id"].as_u64(), e["type_uid"].as_u64()),
        (Some(1007), Some(1), Some(1), Some(100701))
    );
    assert_eq!(e["class_name"], "Process Activity");
    assert_eq!(e["activity_name"], "Launch");
    assert_eq!((e["action_id"].as_u64(), e["action"].as_str()), (Some(2), Some("Denied")));
    assert_eq!((e["disposition_id"].as_u64(), e["disposition"].as_str()), (Some(2), Some("Blocked")));
    assert_eq!((e["status_id"].as_u64(), e["status_detail"].as_str()), (Some(2), Some("rule")));
    assert_eq!(e["severity_id"], 3);
    assert_eq!(e["time"], 1_700_000_000_987u64, "milliseconds");
    assert_eq!(e["metadata"]["version"], OCSF_VERSION);
    assert_eq!(e["metadata"]["uid"], "42");
    assert_eq!(e["metadata"]["product"]["name"], "Airlock");
    assert_eq!(e["metadata"]["product"]["vendor_name"], "Airlock");
    assert_eq!(e["metadata"]["correlation_uid"], "548c53878c1379b5");
    assert_eq!(e["device"]["hostname"], "build-7", "the decision's host, not the exporter's");
    assert_eq!(e["process"]["pid"], 4321);
    assert_eq!(e["process"]["name"], "terraform");
    assert_eq!(e["process"]["cmd_line"], "terraform apply -var=password=[MASKED]");
    assert_eq!(e["process"]["file"]["path"], "/usr/local/bin/terraform");
    assert_eq!(e["process"]["file"]["name"], "terraform");
    assert_eq!(e["process"]["parent_process"]["pid"], 4300);
    assert_eq!(e["actor"]["process"]["pid"], 4300, "the parent launched it");
    assert_eq!(e["actor"]["user"]["name"], "alice");
    assert_eq!(e["actor"]["user"]["uid"], "1000");
    assert_eq!(e["policy"]["uid"], "infra-mutation-block");
    let u = &e["unmapped"];
    assert_eq!(u["session_id"], "548c53878c1379b5");
    assert_eq!(u["role"], "terraform-restricted-agent");
    assert_eq!(u["rule"], "terraform apply");
    assert_eq!(u["reason"], "rule");
    assert_eq!(u["policy_generation"], 3);
    assert_eq!(u["backend"], "lsm");
    assert_eq!(u["matched_by"], "executable");
    assert!(u.get("approval_request").is_none(), "empty fields are left out: {u}");
}

#[test]
fn an_allowed_exec_is_low_severity_and_an_approval_hold_is_delayed() {
    let mut d = base(kinds::EXEC, kinds::ALLOW);
    d.detail = Some(Detail::Exec(ExecDetail::default()));
    let e = event(&d, &producer()).unwrap();
    assert_eq!(
        (e["action_id"].as_u64(), e["disposition_id"].as_u64(), e["status_id"].as_u64(), e["severity_id"].as_u64()),
        (Some(1), Some(1), Some(1), Some(1))
    );
    assert!(e.get("status_detail").is_none());
    d.decision = kinds::DENY.into();
    d.reason = "approval_required".into();
    d.detail = Some(Detail::Exec(ExecDetail { approval_request: Some("apr-3f9c0d12a4b6e871".into()), ..Default::default() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!((e["disposition_id"].as_u64(), e["disposition"].as_str()), (Some(14), Some("Delayed")));
    assert_eq!(e["unmapped"]["approval_request"], "apr-3f9c0d12a4b6e871");
    d.decision = kinds::ALLOW.into();
    d.reason = "approval_granted".into();
    assert_eq!(event(&d, &producer()).unwrap()["disposition"], "Approved");
    d.decision = kinds::DENY.into();
    d.reason = "security_block".into();
    assert!(event(&d, &producer()).unwrap()["severity_id"].as_u64() > Some(3), "a security block's refusal is high");
}

#[test]
fn connects_are_network_activity_refused_or_opened() {
    let mut d = base(kinds::CONNECT, kinds::DENY);
    d.reason = "rule".into();
    d.detail = Some(Detail::Destination(Destination { address: "127.0.0.9".into(), port: 8443, protocol: "tcp".into() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!(
        (e["class_uid"].as_u64(), e["category_uid"].as_u64(), e["activity_id"].as_u64(), e["type_uid"].as_u64()),
        (Some(4001), Some(4), Some(5), Some(400105))
    );
    assert_eq!(e["activity_name"], "Refuse");
    assert_eq!(e["category_name"], "Network Activity");
    assert_eq!(e["dst_endpoint"], json!({ "ip": "127.0.0.9", "port": 8443 }));
    assert_eq!(e["connection_info"]["protocol_name"], "tcp");
    assert_eq!(e["connection_info"]["protocol_num"], 6);
    assert_eq!(e["connection_info"]["direction_id"], 2);
    assert_eq!(e["actor"]["process"]["cmd_line"], "terraform apply -var=password=[MASKED]");
    assert!(e.get("process").is_none(), "Network Activity has no top-level process");
    d.decision = kinds::ALLOW.into();
    assert_eq!(event(&d, &producer()).unwrap()["activity_name"], "Open");
    d.kind = kinds::SENDMSG.into();
    d.detail = Some(Detail::Destination(Destination { address: "::1".into(), port: 53, protocol: "udp".into() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!((e["activity_name"].as_str(), e["dst_endpoint"]["ip"].as_str()), (Some("Traffic"), Some("::1")));
    d.kind = kinds::UNIX_CONNECT.into();
    d.detail =
        Some(Detail::UnixSocket(UnixSocket { path: "/run/docker.sock".into(), socket_type: "stream".into(), resolved: true, abstract_name: false }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!(
        (e["class_uid"].as_u64(), e["connection_info"]["protocol_name"].as_str(), e["dst_endpoint"]["name"].as_str()),
        (Some(4001), Some("unix"), Some("/run/docker.sock"))
    );
    assert_eq!(e["unmapped"]["socket_path"], "/run/docker.sock");
}

#[test]
fn raw_and_packet_sockets_are_network_activity_without_a_destination() {
    let mut d = base(kinds::RAW_SOCKET, kinds::DENY);
    d.reason = "raw_socket".into();
    d.detail = Some(Detail::RawSocket(RawSocket {
        family: "inet".into(),
        socket_type: "raw".into(),
        protocol: "icmp".into(),
        enforcement: Some("refused".into()),
    }));
    let e = event(&d, &producer()).expect("a raw socket is exported");
    assert_eq!((e["class_uid"].as_u64(), e["activity_name"].as_str(), e["action"].as_str()), (Some(4001), Some("Refuse"), Some("Denied")));
    assert_eq!(e["connection_info"]["protocol_name"], "icmp");
    assert_eq!(e["connection_info"]["protocol_num"], 1);
    assert!(e.get("dst_endpoint").is_none(), "a socket being made has no destination: {e:#}");
    assert_eq!(e["src_endpoint"], json!({ "hostname": "build-7" }));
    assert_eq!(e["actor"]["process"]["pid"], 4321);
    assert_eq!((e["unmapped"]["socket_family"].as_str(), e["unmapped"]["enforcement"].as_str()), (Some("inet"), Some("refused")));

    d.decision = kinds::ALLOW.into();
    d.detail = Some(Detail::RawSocket(RawSocket { family: "packet".into(), socket_type: "raw".into(), protocol: "768".into(), enforcement: None }));
    let e = event(&d, &producer()).expect("a packet socket is exported");
    assert_eq!((e["activity_name"].as_str(), e["action"].as_str()), (Some("Open"), Some("Allowed")));
    assert_eq!(e["connection_info"]["protocol_name"], "packet");
    assert!(e["connection_info"].get("protocol_num").is_none(), "an ethertype is no IP protocol number: {e:#}");
    assert_eq!(e["unmapped"]["socket_protocol"], "768");
}

#[test]
fn guard_decisions_are_file_or_process_activity_at_high_severity() {
    let mut d = base(kinds::FILE_OPEN, kinds::DENY);
    d.reason = "protected_file".into();
    d.detail = Some(Detail::Guard(GuardDetail { operation: "open".into(), file: Some("/home/alice/.aws/credentials".into()), ..Default::default() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!((e["class_uid"].as_u64(), e["activity_id"].as_u64(), e["type_uid"].as_u64()), (Some(1001), Some(14), Some(100114)));
    assert_eq!(e["file"]["path"], "/home/alice/.aws/credentials");
    assert_eq!(e["file"]["name"], "credentials");
    d.kind = kinds::TAMPER.into();
    d.reason = "tamper_signal".into();
    d.detail = Some(Detail::Guard(GuardDetail { operation: "kill".into(), target_pid: Some(77), argument: 15, ..Default::default() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!((e["class_uid"].as_u64(), e["activity_name"].as_str(), e["process"]["pid"].as_u64()), (Some(1007), Some("Terminate"), Some(77)));
    assert_eq!(e["severity_id"], 4);
    assert_eq!(e["actor"]["process"]["pid"], 4321, "the governed caller");
    d.detail = Some(Detail::Guard(GuardDetail { operation: "bpf".into(), ..Default::default() }));
    let e = event(&d, &producer()).unwrap();
    assert_eq!((e["activity_id"].as_u64(), e["process"]["pid"].as_u64()), (Some(99), Some(4321)));
}

#[test]
fn workflow_and_health_records_are_skipped_with_a_reason() {
    for kind in [kinds::APPROVAL, kinds::REVOKE, kinds::TAG_FAILURE, kinds::EVENTS_LOST, kinds::SHIPPING_LOST] {
        let mut d = base(kind, kinds::ALLOW);
        d.detail = Some(Detail::Revocation(Revocation::default()));
        assert!(event(&d, &producer()).is_none(), "{kind}");
        assert!(skip_reason(kind).is_some_and(|r| !r.is_empty()), "{kind}");
    }
    for kind in [kinds::EXEC, kinds::CONNECT, kinds::SENDMSG, kinds::UNIX_CONNECT, kinds::UNIX_SENDMSG, kinds::TAMPER, kinds::FILE_OPEN] {
        assert!(skip_reason(kind).is_none(), "{kind}");
    }
    // A connect without its destination is not invented.
    assert!(event(&base(kinds::CONNECT, kinds::DENY), &producer()).is_none());
}

#[test]
fn a_decision_without_a_host_names_the_exporters() {
    let mut d = base(kinds::EXEC, kinds::ALLOW);
    d.host.clear();
    assert_eq!(event(&d, &producer()).unwrap()["device"]["hostname"], "exporter-host");
}
