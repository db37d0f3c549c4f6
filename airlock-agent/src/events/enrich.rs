//! Kernel events to decisions: enriches a decoded event with the session,
//! role, user and rule it concerns, into the one decision record every sink
//! receives ([`Decision`]). Sinks never see raw events.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_api::decision::{ALLOW, DENY};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, DetectedProgram, Destination, ExecDetail, GuardDetail, RawSocket, UnixSocket};
use airlock_common::abi::{self, GuardEvent, NetEvent, RawSocketEvent, UnixEvent};

use super::decode::{c_string, path_from_components, split_argv, KernelEvent};
use super::names::{kind_name, op_name, reason_name, via_name};
use super::procs::{ProcCache, ProcImage};
use crate::kernel::Backend;
use crate::masking::Masking;
use crate::policy::learned::under_root;
use crate::policy::PolicyStore;
use crate::sessions::{format_session_id, Sessions};

/// Turns kernel events into decision records. Holds the caches enrichment needs.
pub struct Enricher {
    host: String,
    /// Boot-clock nanoseconds to wall-clock nanoseconds.
    boot_to_wall_ns: i128,
    users: HashMap<u32, String>,
    procs: ProcCache,
    masking: Arc<Masking>,
}

impl Enricher {
    /// `masking`: credentials and personal data in argv are masked before any sink sees them.
    pub fn new(masking: Arc<Masking>) -> Self {
        Enricher { host: host_name(), boot_to_wall_ns: boot_to_wall_offset(), users: HashMap::new(), procs: ProcCache::default(), masking }
    }

    /// The record of one kernel event; its id is given when it is emitted.
    pub fn enrich(&mut self, event: &KernelEvent, sessions: &Sessions, policy: &PolicyStore) -> Decision {
        let hdr = *event.header();
        let session = sessions.get(hdr.session_id);
        let role = session
            .map(|s| s.role.clone())
            .or_else(|| policy.role_name(hdr.role_slot).map(str::to_string))
            .unwrap_or_else(|| if hdr.reason == abi::REASON_QUARANTINE { "quarantine".into() } else { "unknown".into() });
        let rule = (hdr.rule_id != 0).then(|| policy.rule(hdr.rule_id)).flatten();
        let wall_ns = hdr.ktime_ns as i128 + self.boot_to_wall_ns;

        let mut d = Decision {
            id: 0,
            time: crate::clock::rfc3339_from_unix_nanos(wall_ns),
            time_unix_nanos: wall_ns.clamp(0, i64::MAX as i128) as i64,
            host: self.host.clone(),
            kind: kind_name(hdr.kind).to_string(),
            decision: if hdr.decision == abi::DENY { DENY } else { ALLOW }.to_string(),
            reason: reason_name(hdr.reason).to_string(),
            security_block: String::new(),
            session_id: format_session_id(hdr.session_id),
            role,
            agent: session.map(|s| s.agent()).unwrap_or_default(),
            uid: hdr.uid,
            user: self.user_name(hdr.uid),
            pid: hdr.tgid,
            ppid: hdr.ppid,
            comm: c_string(&hdr.comm),
            executable: String::new(),
            argv: Vec::new(),
            argv_truncated: hdr.flags & abi::FLAG_ARGV_TRUNCATED != 0,
            cwd: String::new(),
            policy: rule.as_ref().map(|r| r.policy.clone()),
            rule: rule.map(|r| r.rule),
            backend: Backend::from_abi(hdr.backend).map(|b| b.to_string()).unwrap_or_default(),
            policy_generation: hdr.policy_generation,
            detail: None,
        };
        match event {
            KernelEvent::Exec(e) => {
                d.executable = path_from_components(&e.exe[..(e.exe_len as usize).min(e.exe.len())]);
                d.cwd = path_from_components(&e.cwd[..(e.cwd_len as usize).min(e.cwd.len())]);
                d.argv = split_argv(&e.argv[..(e.argv_len as usize).min(e.argv.len())]);
                self.masking.mask_argv(&mut d.argv);
                let mut exec = ExecDetail {
                    filename: c_string(&e.filename),
                    matched_by: (hdr.decision == abi::DENY && e.match_via != 0).then(|| via_name(e.match_via).to_string()),
                    stage: if hdr.flags & abi::FLAG_EARLY_CHECK != 0 { "early" } else { "new_image" }.to_string(),
                    file_identity: file_identity(hdr.flags).into_iter().map(str::to_string).collect(),
                    detected_program: None,
                    approval_request: None,
                };
                if hdr.decision == abi::ALLOW && hdr.flags & abi::FLAG_EARLY_CHECK == 0 {
                    // What the kernel could not see: the #! script (compat), the file an interpreter runs.
                    let ran = if hdr.flags & abi::FLAG_SCRIPT != 0 {
                        Some(exec.filename.as_str()).filter(|f| !f.is_empty())
                    } else if hdr.flags & abi::FLAG_INTERPRETER != 0 {
                        interpreter_operand(&d.argv)
                    } else {
                        None
                    };
                    exec.detected_program = ran.and_then(|f| detect_program(hdr.tgid, &d.cwd, f, policy));
                }
                if hdr.decision == abi::ALLOW {
                    self.procs.remember(hdr.tgid, &d.executable, &d.argv, &d.cwd, hdr.ppid);
                }
                if hdr.decision == abi::ALLOW && hdr.flags & abi::FLAG_GRANTED != 0 {
                    // An approval rule named it; a person's grant let it run.
                    d.reason = "approval_granted".to_string();
                    exec.matched_by = (e.match_via != 0).then(|| via_name(e.match_via).to_string());
                }
                d.detail = Some(Detail::Exec(exec));
            }
            KernelEvent::Guard(g) => {
                if hdr.kind == abi::EVENT_FILE_OPEN {
                    // The opener's program as the kernel judged it.
                    d.comm = c_string(&g.name);
                }
                d.detail = Some(Detail::Guard(guard_detail(g)));
                // The rest from its last exec.
                if let Some(image) = self.procs.get(hdr.tgid) {
                    d.executable = image.executable;
                    d.argv = image.argv;
                    d.cwd = image.cwd;
                }
            }
            KernelEvent::Net(_) | KernelEvent::Unix(_) | KernelEvent::RawSocket(_) => {
                d.detail = match event {
                    KernelEvent::Net(n) if hdr.kind != abi::EVENT_TAG_FAILURE => Some(Detail::Destination(destination(n))),
                    KernelEvent::Unix(u) => Some(Detail::UnixSocket(unix_socket(u))),
                    KernelEvent::RawSocket(r) => Some(Detail::RawSocket(raw_socket(r))),
                    _ => None,
                };
                // What the socket hook cannot carry: from the process's last exec, else /proc.
                let image = match self.procs.get(hdr.tgid) {
                    Some(image) => Some(image),
                    None => ProcImage::read(hdr.tgid).map(|mut image| {
                        self.masking.mask_argv(&mut image.argv);
                        image
                    }),
                };
                if let Some(image) = image {
                    d.executable = image.executable;
                    d.argv = image.argv;
                    d.cwd = image.cwd;
                    d.ppid = image.ppid;
                }
            }
        }
        d
    }

    fn user_name(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }
}

/// This machine's name, as records carry it.
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

fn boot_to_wall_offset() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec for the kernel to fill.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME)
}

fn guard_detail(g: &GuardEvent) -> GuardDetail {
    let path = &g.path[..(g.path_len as usize).min(g.path.len())];
    let file = if !path.is_empty() {
        Some(path_from_components(path))
    } else if g.op == abi::OP_MODULE_REQUEST {
        Some(c_string(&g.name))
    } else {
        None
    };
    let enforcement = (g.hdr.decision == abi::DENY).then(|| if g.hdr.flags & abi::FLAG_KILLED_AFTER != 0 { "killed" } else { "refused" }.to_string());
    GuardDetail { operation: op_name(g.op).to_string(), target_pid: (g.target != 0).then_some(g.target), argument: g.arg, file, enforcement }
}

/// Exec identity gaps, detected after the fact. The kernel judges a `#!`
/// script on compat, and the file an interpreter is handed, by the name it was
/// called by: it cannot open them. The daemon resolves that file as the process
/// saw it and reports it when it is a protected program, by its real name or
/// its content. It cannot stop it any more: the record says what ran.
fn detect_program(tgid: u32, cwd: &str, file: &str, policy: &PolicyStore) -> Option<DetectedProgram> {
    let seen = if file.starts_with('/') { PathBuf::from(file) } else { Path::new(cwd).join(file) };
    // Through the process's own root while it lives (chroot, container), else as recorded.
    let via_root = procfs::process::Process::new(tgid as i32)
        .and_then(|p| p.root())
        .ok()
        .map(|root| under_root(&root, &seen));
    let identities = policy.identities().installed();
    let (program, by) = via_root.and_then(|p| identities.program_of_file(&p)).or_else(|| identities.program_of_file(&seen))?;
    Some(DetectedProgram { program, by: by.to_string() })
}

/// The operand an interpreter runs, chosen as the kernel chooses it: the first
/// word after argv[0] that is not an option, unless it is the code of a `-c`.
fn interpreter_operand(argv: &[String]) -> Option<&str> {
    let mut prev: Option<&str> = None;
    for word in argv.iter().skip(1).take(abi::OPERAND_WORDS) {
        if word.starts_with('-') {
            prev = Some(word);
            continue;
        }
        let code = prev.is_some_and(|p| (2..=5).contains(&p.len()) && !p.starts_with("--") && p.ends_with('c'));
        return (!code).then_some(word.as_str());
    }
    None
}

/// Exec identity flags of an exec event, by name.
fn file_identity(flags: u32) -> Vec<&'static str> {
    [
        (abi::FLAG_FILELESS, "fileless"),
        (abi::FLAG_LOADER, "loader"),
        (abi::FLAG_INTERPRETER, "interpreter"),
        (abi::FLAG_IDENTITY, "protected_content"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

fn destination(n: &NetEvent) -> Destination {
    let address = if n.family as i32 == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(n.addr[0], n.addr[1], n.addr[2], n.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(n.addr))
    };
    let protocol = match n.protocol as i32 {
        libc::IPPROTO_TCP => "tcp".to_string(),
        libc::IPPROTO_UDP => "udp".to_string(),
        // Ping sockets (SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6).
        libc::IPPROTO_ICMP => "icmp".to_string(),
        libc::IPPROTO_ICMPV6 => "icmpv6".to_string(),
        other => other.to_string(),
    };
    Destination { address: address.to_string(), port: n.port.into(), protocol }
}

fn unix_socket(u: &UnixEvent) -> UnixSocket {
    let abstract_name = u.hdr.flags & abi::FLAG_UNIX_ABSTRACT != 0;
    let bytes = if u.path_len > 0 {
        &u.path[..(u.path_len as usize).min(u.path.len())]
    } else {
        let end = u.path.iter().position(|&b| b == 0).unwrap_or(u.path.len());
        &u.path[..end]
    };
    // Abstract names may hold any byte: NULs and other controls are escaped.
    let path = if abstract_name { bytes.escape_ascii().to_string() } else { String::from_utf8_lossy(bytes).into_owned() };
    let socket_type = match u.sock_type as i32 {
        libc::SOCK_STREAM => "stream".to_string(),
        libc::SOCK_DGRAM => "dgram".to_string(),
        libc::SOCK_SEQPACKET => "seqpacket".to_string(),
        other => other.to_string(),
    };
    UnixSocket { path, socket_type, resolved: u.hdr.flags & abi::FLAG_UNIX_RESOLVED != 0, abstract_name }
}

/// The socket(2) arguments of a raw or packet socket, by name where they have a common one.
fn raw_socket(r: &RawSocketEvent) -> RawSocket {
    let family = match r.family as i32 {
        libc::AF_INET => "inet".to_string(),
        libc::AF_INET6 => "inet6".to_string(),
        libc::AF_PACKET => "packet".to_string(),
        other => other.to_string(),
    };
    let socket_type = match r.sock_type as i32 {
        libc::SOCK_RAW => "raw".to_string(),
        libc::SOCK_DGRAM => "dgram".to_string(),
        other => other.to_string(),
    };
    let inet = matches!(r.family as i32, libc::AF_INET | libc::AF_INET6);
    let protocol = match r.protocol as i32 {
        libc::IPPROTO_ICMP if inet => "icmp".to_string(),
        libc::IPPROTO_TCP if inet => "tcp".to_string(),
        libc::IPPROTO_UDP if inet => "udp".to_string(),
        libc::IPPROTO_ICMPV6 if inet => "icmpv6".to_string(),
        libc::IPPROTO_RAW if inet => "raw".to_string(),
        other => other.to_string(),
    };
    let enforcement = (r.hdr.decision == abi::DENY).then(|| if r.hdr.flags & abi::FLAG_KILLED_AFTER != 0 { "killed" } else { "refused" }.to_string());
    RawSocket { family, socket_type, protocol, enforcement }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_sockets_are_named() {
        let mut r = RawSocketEvent { family: libc::AF_INET as u32, sock_type: libc::SOCK_RAW as u32, protocol: 1, ..Default::default() };
        r.hdr.decision = abi::DENY;
        let want = RawSocket { family: "inet".into(), socket_type: "raw".into(), protocol: "icmp".into(), enforcement: Some("refused".into()) };
        assert_eq!(raw_socket(&r), want);
        r.family = libc::AF_PACKET as u32;
        r.protocol = 0x0300;
        r.hdr.flags = abi::FLAG_KILLED_AFTER;
        let want = RawSocket { family: "packet".into(), socket_type: "raw".into(), protocol: "768".into(), enforcement: Some("killed".into()) };
        assert_eq!(raw_socket(&r), want);
    }

    #[test]
    fn interpreter_operand_is_chosen_like_the_kernel_does() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(interpreter_operand(&argv(&["python3", "-u", "./aws", "iam"])), Some("./aws"));
        assert_eq!(interpreter_operand(&argv(&["bash", "-c", "ls /x/aws"])), None);
        assert_eq!(interpreter_operand(&argv(&["sh", "-ec", "ls /x/aws"])), None);
        assert_eq!(interpreter_operand(&argv(&["perl", "--", "x.pl"])), Some("x.pl"));
        assert_eq!(interpreter_operand(&argv(&["python3"])), None);
    }

    #[test]
    fn destinations_read_both_families() {
        let mut n = NetEvent { hdr: Default::default(), family: libc::AF_INET as u16, port: 443, protocol: 6, addr: [0; 16] };
        n.addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(destination(&n), Destination { address: "10.0.0.1".into(), port: 443, protocol: "tcp".into() });
        n.family = libc::AF_INET6 as u16;
        n.protocol = 17;
        n.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(destination(&n), Destination { address: "::1".into(), port: 443, protocol: "udp".into() });
    }
}
