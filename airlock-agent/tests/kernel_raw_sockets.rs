//! Kernel tests for raw and packet sockets (`egress.raw_sockets`): a governed
//! process, root included, cannot create a SOCK_RAW or AF_PACKET socket unless
//! every policy of its role allows them; ICMP datagram ("ping") sockets follow
//! the egress rules. A real daemon on this kernel, real governed sessions.
//! Each test asserts what docs/security.md says for the backend in use, gaps
//! included.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "test-net", "name": "Test egress", "status": "active",
  "egress": { "deny": ["127.0.0.9/32", "fd00::9/128"] } }"#;
const RAW_OK: &str = r#"{ "id": "raw-ok", "name": "Raw sockets allowed", "egress": { "raw_sockets": "allow" } }"#;
const AGENT: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-net"] }"#;
/// Raw sockets allowed, and the same addresses denied.
const RAW_NET: &str = r#"{
  "id": "raw-net", "name": "Raw sockets, denied addresses", "status": "active",
  "egress": { "raw_sockets": "allow", "deny": ["127.0.0.9/32", "fd00::9/128"] } }"#;
const RAWNET: &str = r#"{ "id": "rawnet", "name": "Raw sockets, egress rules", "policies": ["raw-net"] }"#;
const NETTOOLS: &str = r#"{ "id": "nettools", "name": "Network tools", "policies": ["raw-ok"] }"#;
/// One policy allows raw sockets, the other does not: the role does not.
const MIXED: &str = r#"{ "id": "mixed", "name": "Mixed", "policies": ["raw-ok", "test-net"] }"#;

fn daemon(tag: &str) -> Daemon {
    let d = Daemon::start(
        tag,
        &[("test-net.json", POLICY), ("raw-ok.json", RAW_OK), ("raw-net.json", RAW_NET)],
        &[("agent.json", AGENT), ("nettools.json", NETTOOLS), ("mixed.json", MIXED), ("rawnet.json", RAWNET)],
    );
    write_file(&d.work_dir.join("mksock.py"), MKSOCK, 0o644);
    d
}

/// socket(2) arguments (numbers: the test does not depend on python's names) and what the audit shows.
struct Case {
    name: &'static str,
    family: u32,
    sock_type: u32,
    protocol: u32,
    audit_family: &'static str,
    audit_type: &'static str,
    audit_protocol: &'static str,
    packet: bool,
}

const CASES: &[Case] = &[
    Case { name: "AF_INET SOCK_RAW ICMP", family: 2, sock_type: 3, protocol: 1, audit_family: "inet", audit_type: "raw", audit_protocol: "icmp", packet: false },
    Case { name: "AF_INET SOCK_RAW UDP", family: 2, sock_type: 3, protocol: 17, audit_family: "inet", audit_type: "raw", audit_protocol: "udp", packet: false },
    Case { name: "AF_INET6 SOCK_RAW ICMPv6", family: 10, sock_type: 3, protocol: 58, audit_family: "inet6", audit_type: "raw", audit_protocol: "icmpv6", packet: false },
    // ETH_P_ALL in network order.
    Case { name: "AF_PACKET SOCK_RAW", family: 17, sock_type: 3, protocol: 0x0300, audit_family: "packet", audit_type: "raw", audit_protocol: "768", packet: true },
    Case { name: "AF_PACKET SOCK_DGRAM", family: 17, sock_type: 2, protocol: 0x0300, audit_family: "packet", audit_type: "dgram", audit_protocol: "768", packet: true },
];

impl Case {
    /// How mksock.py names it: `family:type:protocol`.
    fn spec(&self) -> String {
        format!("{}:{}:{}", self.family, self.sock_type, self.protocol)
    }

    fn audited_as(&self, v: &Value) -> bool {
        v["kind"] == "raw_socket"
            && v["raw_socket"]["family"] == self.audit_family
            && v["raw_socket"]["socket_type"] == self.audit_type
            && v["raw_socket"]["protocol"] == self.audit_protocol
    }
}

/// Creates each socket named `family:type:protocol` on its command line, in
/// order, and prints what became of it: CREATED, REFUSED (EPERM) or the errno.
/// One interpreter for all of them: under TCG, starting python3 is the
/// slowest part of a case.
const MKSOCK: &str = r#"
import socket, sys
for spec in sys.argv[1:]:
    family, kind, protocol = (int(n) for n in spec.split(":"))
    try:
        socket.socket(family, kind, protocol)
        print("CASE", spec, "CREATED", flush=True)
    except PermissionError:
        print("CASE", spec, "REFUSED", flush=True)
    except OSError as e:
        print("CASE", spec, "ERRNO", e.errno, flush=True)
"#;

/// One line (live sessions run line by line), run in the daemon's work
/// directory; bash then prints the exit status.
fn create_script(cases: &[&Case]) -> String {
    let specs: Vec<String> = cases.iter().map(|c| c.spec()).collect();
    format!("python3 mksock.py {}; echo \"rc=$?\"", specs.join(" "))
}

/// The lines of a script's output that start with `tag` (`CASE`, `STEP`), as
/// what each names and what became of it: "2:3:1" → "REFUSED", "sendto4" → "EPERM".
fn outcomes(out: &str, tag: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, what)| (name.to_string(), what.to_string()))
        .collect()
}

fn raw_deny(v: &Value, session: &str, c: &Case) -> bool {
    v["session_id"] == session && v["decision"] == "deny" && v["reason"] == "raw_socket" && c.audited_as(v)
}

/// The cases this host can create at all (an ungoverned root process): a
/// kernel without IPv6 or packet sockets cannot tell us anything about them.
fn creatable(d: &Daemon) -> Vec<&'static Case> {
    let o = d.ungoverned(&create_script(&CASES.iter().collect::<Vec<_>>()));
    let made = outcomes(&String::from_utf8_lossy(&o.stdout), "CASE");
    let mut out = Vec::new();
    for c in CASES {
        match made.get(&c.spec()).map(String::as_str) {
            Some("CREATED") => out.push(c),
            other => harness::skip_part(format!(
                "{}: an ungoverned root process cannot create it here either: {}{}",
                c.name,
                other.unwrap_or("no outcome printed; "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }
    if out.is_empty() {
        harness::skip("this host creates no raw or packet socket for root");
    }
    out
}

/// Governed root: every raw and packet socket refused (LSM: EPERM; compat:
/// inet EPERM, packet sockets killed), and each refusal in the audit trail.
fn governed_root_cannot_create_raw_or_packet_sockets() {
    let d = daemon("raw-deny");
    let lsm = d.backend() == "lsm";
    let cases = creatable(&d);
    // Compat cannot refuse an AF_PACKET socket: the process dies on its way
    // back, so each of those gets a session of its own.
    let (killed, refused): (Vec<&Case>, Vec<&Case>) = cases.iter().partition(|c| c.packet && !lsm);
    let sessions = std::iter::once(refused).chain(killed.into_iter().map(|c| vec![c])).filter(|group| !group.is_empty());
    for group in sessions {
        let s = d.governed(Some("agent"), &create_script(&group));
        let out = s.all_output();
        assert!(!s.session_id.is_empty(), "the session did not start: {out}");
        let made = outcomes(&out, "CASE");
        let id = s.session_id.clone();
        for c in group {
            let outcome = made.get(&c.spec()).map(String::as_str);
            let want = if c.packet && !lsm {
                // SIGKILL: 128 + 9, before it could print anything.
                assert!(outcome.is_none() && out.contains("rc=137"), "{}: not killed on compat:\n{out}", c.name);
                "killed"
            } else {
                assert_eq!(outcome, Some("REFUSED"), "{}: not refused with EPERM:\n{out}", c.name);
                "refused"
            };
            let lines = d.wait_audit(&format!("{}: a raw_socket deny in session {id}", c.name), |v| raw_deny(v, &id, c));
            assert_eq!(lines[0]["raw_socket"]["enforcement"], want, "{}: {:#}", c.name, lines[0]);
        }
    }
    // A role that has one policy saying "allow" and another that does not: denied.
    let inet = &CASES[0];
    let s = d.governed(Some("mixed"), &create_script(&[inet]));
    assert!(!s.all_output().contains("CREATED"), "a role whose policies disagree allowed raw sockets:\n{}", s.all_output());
    // Ordinary sockets and netlink (SOCK_RAW is its only type) are not raw sockets here.
    let s = d.governed(
        Some("agent"),
        "python3 -c 'import socket; socket.socket(2, 2, 0); socket.socket(2, 1, 0); socket.socket(16, 3, 0); print(\"CREATED\")'; echo \"rc=$?\"",
    );
    assert!(s.all_output().contains("CREATED") && s.all_output().contains("rc=0"), "ordinary or netlink sockets refused:\n{}", s.all_output());
}

/// Untagged processes are not judged, and a role whose every policy says
/// `"raw_sockets": "allow"` creates them; the creation is audited as allowed.
fn ungoverned_and_allowed_roles_create_raw_sockets() {
    let d = daemon("raw-allow");
    let cases = creatable(&d);
    // Root can always open an IPv4 raw socket: an untagged one must not be refused while the daemon runs.
    assert!(cases.iter().any(|c| c.family == 2), "an ungoverned root process could not create an AF_INET raw socket");
    let s = d.governed(Some("nettools"), &create_script(&cases));
    let out = s.all_output();
    assert!(!s.session_id.is_empty() && out.contains("rc=0"), "the session did not start or did not finish: {out}");
    let made = outcomes(&out, "CASE");
    let id = s.session_id.clone();
    for c in &cases {
        assert_eq!(made.get(&c.spec()).map(String::as_str), Some("CREATED"), "{}: refused in a role that allows it:\n{out}", c.name);
        d.wait_audit(&format!("{}: a raw_socket allow in session {id}", c.name), |v| {
            v["session_id"] == id.as_str() && v["decision"] == "allow" && c.audited_as(v)
        });
    }
    // The role summary says so.
    let shown = |role: &str| {
        let out = d.cli(&["policy", "show", "--role", role]);
        assert!(out.status.success(), "policy show --role {role} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = shown("nettools");
    assert!(text.contains("raw IP and packet sockets: allowed"), "{text}");
    let text = shown("agent");
    assert!(text.contains("raw IP and packet sockets: denied"), "{text}");
}

/// Runs the Python steps of `py` in a network namespace of their own (set up
/// by `setup`), first untagged and then governed by `role`; each top-level
/// `step(` or `sent(` line of `py` is one step. Untagged, every step must succeed, or this host cannot tell us anything and the test is
/// skipped. Returns the governed session and what each of its steps printed.
fn steps_in_own_network(d: &Daemon, role: &str, what: &str, setup: &str, py: &str) -> (Session, BTreeMap<String, String>) {
    write_file(&d.work_dir.join("steps.py"), py, 0o644);
    let script = format!("unshare -n bash -c \"{setup} && python3 steps.py\"; echo \"rc=$?\"");
    let expected = py.lines().filter(|l| l.starts_with("step(") || l.starts_with("sent(")).count();
    let o = d.ungoverned(&script);
    let plain = outcomes(&String::from_utf8_lossy(&o.stdout), "STEP");
    if plain.len() != expected || plain.values().any(|v| v != "OK") {
        harness::skip(format!(
            "{what} in a new network namespace do not work here: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let s = d.governed(Some(role), &script);
    let steps = outcomes(&s.all_output(), "STEP");
    assert_eq!(steps.len(), expected, "the {what} steps did not all run:\n{}", s.all_output());
    (s, steps)
}

/// ICMP datagram ("ping") sockets to an address the policy denies, inside a
/// network namespace of the session's own (ping sockets need
/// net.ipv4.ping_group_range, which is per namespace; the egress hooks are
/// not). LSM judges connect and sendto like UDP; compat judges connect like
/// UDP, and the packets of a sendto in cgroup_skb/egress (cgroup/sendmsg4 runs
/// for UDP only).
fn ping_sockets_follow_the_egress_rules() {
    let d = daemon("raw-ping");
    let lsm = d.backend() == "lsm";
    let py = r#"
import socket, sys
def step(name, f):
    try:
        f(); print("STEP", name, "OK")
    except PermissionError:
        print("STEP", name, "EPERM")
    except OSError as e:
        print("STEP", name, "ERRNO", e.errno)
# An echo request that went out is answered by this namespace's own kernel.
def echo(sock, request, address):
    sock.settimeout(1)
    sock.sendto(request, address)
    try:
        sock.recv(64)
    except socket.timeout:
        print("STEP", name_of[id(sock)], "DROPPED")
        raise SystemExit
def sent(name, sock, request, address):
    name_of[id(sock)] = name
    try:
        step(name, lambda: echo(sock, request, address))
    except SystemExit:
        pass
name_of = {}
echo4 = b"\x08\x00\x00\x00\x00\x01\x00\x01"
echo6 = b"\x80\x00\x00\x00\x00\x01\x00\x01"
sent("sendto4", socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), echo4, ("127.0.0.9", 0))
sent("sendto4-allowed", socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), echo4, ("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
step("connect4", lambda: b.connect(("127.0.0.9", 0)))
sent("sendto6", socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6), echo6, ("fd00::9", 0))
e = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
step("connect6", lambda: e.connect(("fd00::9", 0)))
"#;
    let setup = "ip link set lo up && sysctl -qw net.ipv4.ping_group_range='0 2147483647' && ip -6 addr add fd00::9/128 dev lo nodad";
    let (s, steps) = steps_in_own_network(&d, "agent", "ping sockets", setup, py);
    let step = |k: &str| steps.get(k).map(String::as_str).unwrap_or_default();
    assert_eq!(step("sendto4-allowed"), "OK", "an allowed address was refused:\n{}", s.all_output());
    assert_eq!(step("connect4"), "EPERM", "{}", s.all_output());
    assert_eq!(step("connect6"), "EPERM", "{}", s.all_output());
    let id = s.session_id.clone();
    d.wait_audit("the ping connect deny", |v| {
        v["session_id"] == id.as_str() && v["kind"] == "connect" && v["decision"] == "deny" && v["destination"]["address"] == "127.0.0.9" && v["destination"]["protocol"] == "icmp"
    });
    // LSM: socket_sendmsg refuses it. Compat: cgroup_skb/egress drops the echo
    // request, and IPv4 reports the drop to the caller; IPv6's ping sendmsg
    // ignores its transmit's error, so the call succeeds and no reply comes.
    assert_eq!(step("sendto4"), "EPERM", "{}", s.all_output());
    assert_eq!(step("sendto6"), if lsm { "EPERM" } else { "DROPPED" }, "{}", s.all_output());
    for address in ["127.0.0.9", "fd00::9"] {
        d.wait_audit(&format!("the ping sendto deny to {address}"), |v| {
            v["session_id"] == id.as_str()
                && v["kind"] == "sendmsg"
                && v["decision"] == "deny"
                && v["destination"]["address"] == address
                && v["destination"]["protocol"].as_str().is_some_and(|p| p.starts_with("icmp"))
        });
    }
}

/// A role that allows raw sockets still may not reach a denied address
/// through one: every packet of a raw socket a governed process created is
/// judged by the address in its own IP header (cgroup_skb/egress), whatever
/// address sendto named, and a connected raw socket too. A denied packet is
/// dropped (EPERM) and audited; an allowed one goes out.
fn raw_sockets_of_an_allowing_role_cannot_reach_denied_addresses() {
    let d = daemon("raw-egress");
    let py = r#"
import socket, struct
def step(name, f):
    try:
        f(); print("STEP", name, "OK")
    except PermissionError:
        print("STEP", name, "EPERM")
    except OSError as e:
        print("STEP", name, "ERRNO", e.errno)
echo4 = b"\x08\x00\xf7\xfe\x00\x01\x00\x00"
def ipv4_udp(dst, port):
    payload = b"airlock"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                       socket.inet_aton("127.0.0.1"), socket.inet_aton(dst)) + udp
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
step("icmp-denied", lambda: icmp.sendto(echo4, ("127.0.0.9", 0)))
step("icmp-allowed", lambda: icmp.sendto(echo4, ("127.0.0.1", 0)))
hdrincl = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
step("header-says-denied", lambda: hdrincl.sendto(ipv4_udp("127.0.0.9", 5353), ("127.0.0.1", 0)))
step("header-says-allowed", lambda: hdrincl.sendto(ipv4_udp("127.0.0.1", 5353), ("127.0.0.1", 0)))
connected = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
connected.connect(("127.0.0.1", 0))
step("connected-header-says-denied", lambda: connected.send(ipv4_udp("127.0.0.9", 5353)))
icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
step("icmp6-denied", lambda: icmp6.sendto(b"\x80\x00\x00\x00\x00\x01\x00\x01", ("fd00::9", 0)))
"#;
    let setup = "ip link set lo up && ip -6 addr add fd00::9/128 dev lo nodad";
    let (s, steps) = steps_in_own_network(&d, "rawnet", "raw socket sends", setup, py);
    let step = |k: &str| steps.get(k).map(String::as_str).unwrap_or_default();
    for allowed in ["icmp-allowed", "header-says-allowed"] {
        assert_eq!(step(allowed), "OK", "{allowed}: an allowed packet was dropped:\n{}", s.all_output());
    }
    for denied in ["icmp-denied", "header-says-denied", "connected-header-says-denied", "icmp6-denied"] {
        assert_eq!(step(denied), "EPERM", "{denied}: a packet to a denied address went out:\n{}", s.all_output());
    }
    let id = s.session_id.clone();
    let udp_drops = d.wait_audit("the drops of the raw UDP packets to 127.0.0.9", |v| {
        v["session_id"] == id.as_str()
            && v["kind"] == "sendmsg"
            && v["decision"] == "deny"
            && v["reason"] == "rule"
            && v["destination"]["address"] == "127.0.0.9"
            && v["destination"]["protocol"] == "udp"
    });
    assert_eq!(udp_drops[0]["destination"]["port"], 5353, "the port comes from the packet: {:#}", udp_drops[0]);
    d.wait_audit("the drop of the raw ICMPv6 packet", |v| {
        v["session_id"] == id.as_str() && v["kind"] == "sendmsg" && v["decision"] == "deny" && v["destination"]["address"] == "fd00::9"
    });
}

/// The hooks are pinned like every other: a killed daemon leaves them
/// enforcing, and its successor adopts them.
fn raw_socket_refusal_holds_across_a_restart() {
    let mut d = daemon("raw-restart");
    let inet = &CASES[0];
    let mut s = d.live_session("agent");
    d.kill_hard();
    let (out, _) = s.run(&create_script(&[inet]));
    assert!(out.contains("REFUSED"), "created while the daemon was down:\n{out}");
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "adopted", "log:\n{}", d.current_log());
    let hooks = d.status_json()["hooks"].to_string();
    let expected: &[&str] = if d.backend() == "lsm" {
        &["airlock_socket_create", "airlock_sock_tag", "airlock_packet_egress"]
    } else {
        &["airlock_sock_create", "airlock_compat_socket", "airlock_packet_egress"]
    };
    for hook in expected {
        assert!(hooks.contains(hook), "{hook} not among the adopted hooks: {hooks}");
    }
    let (out, _) = s.run(&create_script(&[inet]));
    assert!(out.contains("REFUSED"), "created after the restart:\n{out}");
    d.wait_audit("a raw_socket deny after the restart", |v| v["kind"] == "raw_socket" && v["decision"] == "deny" && v["reason"] == "raw_socket");
    s.quit();
}

kernel_tests!(
    governed_root_cannot_create_raw_or_packet_sockets,
    raw_socket_refusal_holds_across_a_restart,
    ungoverned_and_allowed_roles_create_raw_sockets,
    ping_sockets_follow_the_egress_rules,
    raw_sockets_of_an_allowing_role_cannot_reach_denied_addresses,
);
