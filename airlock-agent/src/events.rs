//! Kernel events to decisions: decodes ring-buffer records and enriches them
//! with the session, role, user and rule they concern. Sinks (the audit
//! trail) receive finished [`DecisionRecord`]s and never see raw events.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use airlock_common::abi::{self, from_bytes, from_prefix_bytes, EventHeader, ExecEvent, GuardEvent, NetEvent, UnixEvent};
use serde::Serialize;

use crate::kernel::Backend;
use crate::policy_store::PolicyStore;
use crate::sessions::{format_session_id, Sessions};

/// A raw event, decoded but not yet enriched.
#[derive(Debug, Clone)]
pub enum KernelEvent {
    Exec(Box<ExecEvent>),
    Net(NetEvent),
    /// net: a connect or datagram to a Unix socket.
    Unix(Box<UnixEvent>),
    /// guard: a tamper attempt or a protected-file open.
    Guard(Box<GuardEvent>),
}

impl KernelEvent {
    pub fn header(&self) -> &EventHeader {
        match self {
            KernelEvent::Exec(e) => &e.hdr,
            KernelEvent::Net(e) => &e.hdr,
            KernelEvent::Unix(e) => &e.hdr,
            KernelEvent::Guard(e) => &e.hdr,
        }
    }
}

/// Decodes one ring-buffer record; `None` for a record of unknown kind or size.
pub fn decode(bytes: &[u8]) -> Option<KernelEvent> {
    let hdr: EventHeader = from_bytes(bytes)?;
    match hdr.kind {
        abi::EVENT_EXEC => from_prefix_bytes::<ExecEvent>(bytes).map(KernelEvent::Exec),
        abi::EVENT_CONNECT | abi::EVENT_SENDMSG | abi::EVENT_TAG_FAILURE => from_bytes::<NetEvent>(bytes).map(KernelEvent::Net),
        abi::EVENT_UNIX_CONNECT | abi::EVENT_UNIX_SENDMSG => from_bytes::<UnixEvent>(bytes).map(|e| KernelEvent::Unix(Box::new(e))),
        abi::EVENT_TAMPER | abi::EVENT_FILE_OPEN => from_prefix_bytes::<GuardEvent>(bytes).map(KernelEvent::Guard),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserRef {
    pub uid: u32,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Destination {
    pub address: String,
    pub port: u16,
    pub protocol: String,
}

/// The Unix socket a connect or datagram went to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnixSocketRef {
    /// The canonical path, or `@` and the name of an abstract socket. When the
    /// kernel could not put the path in canonical form, what the caller wrote.
    pub path: String,
    /// "stream", "dgram", "seqpacket" or the number.
    pub socket_type: String,
    /// True when the path is the listening socket's own (LSM: symlinks resolved);
    /// false when it is the path as the caller wrote it (compat).
    pub resolved: bool,
    pub abstract_name: bool,
}

/// One decision about a governed process: a line of the audit trail.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionRecord {
    pub time: String,
    pub host: String,
    pub kind: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
    pub session_id: String,
    pub role: String,
    pub agent: String,
    pub user: UserRef,
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub executable: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// net: Unix socket decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<UnixSocketRef>,
    pub policy: Option<String>,
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<&'static str>,
    /// Exec decisions: "early" (LSM, before the exec commits: EPERM) or
    /// "new_image" (at sched_process_exec, from the new image's own argv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// Exec identity: what the kernel found the executed file to be besides its
    /// name ("fileless", "loader", "interpreter", "protected_content").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_identity: Vec<&'static str>,
    /// Compat backend, an allowed `#!` script the kernel could not see: the
    /// protected program the daemon found the script to be, after the fact
    /// (`{"program": "aws", "by": "name" | "content"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_program: Option<DetectedProgram>,
    pub backend: String,
    pub policy_generation: u32,
    /// api (issue 4): `time` as nanoseconds since the epoch, for the store's
    /// range queries (not a field of the audit line: `time` says it).
    #[serde(skip)]
    pub time_unix_nanos: i64,
    /// guard: tamper and file events. What was tried ("bpf", "kill", "ptrace", "open", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    /// guard: the pid a signal, ptrace or fd grab aimed at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// guard: the signal number, bpf command, ptrace request or open mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument: Option<u64>,
    /// guard: the file opened (file events, bpffs/cgroupfs tamper), or the module requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// guard: how a deny was enforced: "refused" (LSM: the call failed with EPERM)
    /// or "killed" (compat: the call ran, the process was killed on its way back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<&'static str>,
}

/// What the last exec of a governed process showed, for its later connects:
/// a short-lived process may be gone before /proc can be read.
#[derive(Debug, Clone)]
struct ProcImage {
    executable: String,
    argv: Vec<String>,
    cwd: String,
    ppid: u32,
}

/// Bounded: the oldest process is forgotten first.
#[derive(Default)]
struct ProcCache {
    images: HashMap<u32, ProcImage>,
    order: VecDeque<u32>,
}

impl ProcCache {
    /// Recent processes, not all of them: a process that connects long after
    /// its exec is still in /proc. (Each entry holds an argv: 16,384 of them
    /// were 5 MB of the daemon's memory in an exec storm.)
    const CAPACITY: usize = 4_096;

    fn remember(&mut self, tgid: u32, image: ProcImage) {
        if self.images.insert(tgid, image).is_none() {
            self.order.push_back(tgid);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.images.remove(&old);
                }
            }
        }
    }
}

/// Turns kernel events into decision records. Holds the caches enrichment needs.
pub struct Enricher {
    host: String,
    /// Boot-clock nanoseconds to wall-clock nanoseconds.
    boot_to_wall_ns: i128,
    users: HashMap<u32, String>,
    procs: ProcCache,
    mask_secrets: bool,
}

impl Enricher {
    /// `mask_secrets`: credentials in argv are masked before any sink sees them.
    pub fn new(mask_secrets: bool) -> Self {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        Enricher { host, boot_to_wall_ns: boot_to_wall_offset(), users: HashMap::new(), procs: ProcCache::default(), mask_secrets }
    }

    pub fn enrich(&mut self, event: &KernelEvent, sessions: &Sessions, policy: &PolicyStore) -> DecisionRecord {
        let hdr = *event.header();
        let session = sessions.get(hdr.session_id);
        let role = session
            .map(|s| s.role.clone())
            .or_else(|| policy.role_name(hdr.role_slot).map(str::to_string))
            .unwrap_or_else(|| if hdr.reason == abi::REASON_QUARANTINE { "quarantine".into() } else { "unknown".into() });
        let rule = (hdr.rule_id != 0).then(|| policy.rule(hdr.rule_id)).flatten();
        let user = UserRef { uid: hdr.uid, name: self.user_name(hdr.uid) };

        let mut record = DecisionRecord {
            time: self.wall_time(hdr.ktime_ns),
            time_unix_nanos: (hdr.ktime_ns as i128 + self.boot_to_wall_ns).clamp(0, i64::MAX as i128) as i64,
            host: self.host.clone(),
            kind: kind_name(hdr.kind),
            decision: if hdr.decision == abi::DENY { "deny" } else { "allow" },
            reason: reason_name(hdr.reason),
            session_id: format_session_id(hdr.session_id),
            role,
            agent: session.map(|s| s.agent()).unwrap_or_default(),
            user,
            pid: hdr.tgid,
            ppid: hdr.ppid,
            comm: c_string(&hdr.comm),
            executable: String::new(),
            filename: None,
            argv: Vec::new(),
            argv_truncated: hdr.flags & abi::FLAG_ARGV_TRUNCATED != 0,
            cwd: String::new(),
            destination: None,
            unix_socket: None,
            policy: rule.as_ref().map(|r| r.policy.clone()),
            rule: rule.map(|r| r.rule),
            matched_by: None,
            stage: None,
            file_identity: Vec::new(),
            detected_program: None,
            backend: Backend::from_abi(hdr.backend).map(|b| b.to_string()).unwrap_or_default(),
            policy_generation: hdr.policy_generation,
            operation: None,
            target_pid: None,
            argument: None,
            file: None,
            enforcement: None,
        };
        match event {
            KernelEvent::Exec(e) => {
                record.executable = path_from_components(&e.exe[..(e.exe_len as usize).min(e.exe.len())]);
                record.cwd = path_from_components(&e.cwd[..(e.cwd_len as usize).min(e.cwd.len())]);
                record.filename = Some(c_string(&e.filename));
                record.argv = split_argv(&e.argv[..(e.argv_len as usize).min(e.argv.len())]);
                if self.mask_secrets {
                    crate::secrets::mask_argv(&mut record.argv);
                }
                record.matched_by = (hdr.decision == abi::DENY && e.match_via != 0).then(|| via_name(e.match_via));
                record.stage = Some(if hdr.flags & abi::FLAG_EARLY_CHECK != 0 { "early" } else { "new_image" });
                record.file_identity = file_identity(hdr.flags);
                if hdr.decision == abi::ALLOW && hdr.flags & abi::FLAG_EARLY_CHECK == 0 {
                    // What the kernel could not see: the #! script (compat), the file an interpreter runs.
                    let ran = if hdr.flags & abi::FLAG_SCRIPT != 0 {
                        record.filename.as_deref().filter(|f| !f.is_empty())
                    } else if hdr.flags & abi::FLAG_INTERPRETER != 0 {
                        interpreter_operand(&record.argv)
                    } else {
                        None
                    };
                    record.detected_program = ran.and_then(|f| detect_program(hdr.tgid, &record.cwd, f, policy));
                }
                if hdr.decision == abi::ALLOW {
                    self.procs.remember(
                        hdr.tgid,
                        ProcImage { executable: record.executable.clone(), argv: record.argv.clone(), cwd: record.cwd.clone(), ppid: hdr.ppid },
                    );
                }
            }
            KernelEvent::Guard(g) => {
                record.operation = Some(op_name(g.op));
                record.target_pid = (g.target != 0).then_some(g.target);
                record.argument = Some(g.arg);
                let path = &g.path[..(g.path_len as usize).min(g.path.len())];
                if !path.is_empty() {
                    record.file = Some(path_from_components(path));
                } else if g.op == abi::OP_MODULE_REQUEST {
                    record.file = Some(c_string(&g.name));
                }
                if hdr.decision == abi::DENY {
                    record.enforcement = Some(if hdr.flags & abi::FLAG_KILLED_AFTER != 0 { "killed" } else { "refused" });
                }
                // The opener's program as the kernel judged it, and the rest from its last exec.
                if hdr.kind == abi::EVENT_FILE_OPEN {
                    record.comm = c_string(&g.name);
                }
                if let Some(image) = self.procs.images.get(&hdr.tgid) {
                    record.executable = image.executable.clone();
                    record.argv = image.argv.clone();
                    record.cwd = image.cwd.clone();
                }
            }
            KernelEvent::Net(_) | KernelEvent::Unix(_) => {
                match event {
                    KernelEvent::Net(n) if hdr.kind != abi::EVENT_TAG_FAILURE => record.destination = Some(destination(n)),
                    KernelEvent::Unix(u) => record.unix_socket = Some(unix_socket(u)),
                    _ => {}
                }
                // What the socket hook cannot carry: from the process's last exec, else /proc.
                if let Some(image) = self.procs.images.get(&hdr.tgid) {
                    record.executable = image.executable.clone();
                    record.argv = image.argv.clone();
                    record.cwd = image.cwd.clone();
                    record.ppid = image.ppid;
                } else {
                    let proc_dir = format!("/proc/{}", hdr.tgid);
                    record.executable = read_link(&format!("{proc_dir}/exe"));
                    record.cwd = read_link(&format!("{proc_dir}/cwd"));
                    record.argv = std::fs::read(format!("{proc_dir}/cmdline")).map(|b| split_argv(&b)).unwrap_or_default();
                    record.ppid = parent_of(hdr.tgid).unwrap_or(0);
                    if self.mask_secrets {
                        crate::secrets::mask_argv(&mut record.argv);
                    }
                }
            }
        }
        record
    }

    fn user_name(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }

    fn wall_time(&self, boot_ns: u64) -> String {
        let wall = boot_ns as i128 + self.boot_to_wall_ns;
        time::OffsetDateTime::from_unix_timestamp_nanos(wall)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }
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

fn kind_name(kind: u32) -> &'static str {
    match kind {
        abi::EVENT_EXEC => "exec",
        abi::EVENT_CONNECT => "connect",
        abi::EVENT_SENDMSG => "sendmsg",
        abi::EVENT_TAG_FAILURE => "tag_failure",
        abi::EVENT_UNIX_CONNECT => "unix_connect",
        abi::EVENT_UNIX_SENDMSG => "unix_sendmsg",
        abi::EVENT_TAMPER => "tamper",
        abi::EVENT_FILE_OPEN => "file_open",
        _ => "unknown",
    }
}

fn reason_name(reason: u32) -> &'static str {
    match reason {
        abi::REASON_NONE => "none",
        abi::REASON_RULE => "rule",
        abi::REASON_ARGV_TOO_LONG => "argv_too_long",
        abi::REASON_MATCH_OVERFLOW => "match_overflow",
        abi::REASON_QUARANTINE => "quarantine",
        abi::REASON_ROLE_GONE => "role_gone",
        abi::REASON_REVOKED => "revoked",
        abi::REASON_FILELESS => "fileless",
        abi::REASON_LOADER => "direct_loader",
        abi::REASON_UNIX_PATH_UNCLEAR => "unix_path_unclear",
        abi::REASON_EGRESS_DEFAULT => "egress_default",
        abi::REASON_TAMPER_BPF => "tamper_bpf",
        abi::REASON_TAMPER_SIGNAL => "tamper_signal",
        abi::REASON_TAMPER_PTRACE => "tamper_ptrace",
        abi::REASON_TAMPER_KERNEL_CODE => "tamper_kernel_code",
        abi::REASON_TAMPER_CONTROL_FS => "tamper_control_fs",
        abi::REASON_PROTECTED_FILE => "protected_file",
        abi::REASON_TAMPER_AIRLOCK_FILES => "tamper_airlock_files",
        _ => "unknown",
    }
}

/// guard: what a governed process tried.
fn op_name(op: u32) -> &'static str {
    match op {
        abi::OP_BPF => "bpf",
        abi::OP_KILL => "kill",
        abi::OP_TKILL => "tkill",
        abi::OP_TGKILL => "tgkill",
        abi::OP_SIGQUEUE => "sigqueue",
        abi::OP_PIDFD_SIGNAL => "pidfd_send_signal",
        abi::OP_SIGIO => "sigio",
        abi::OP_PTRACE => "ptrace",
        abi::OP_VM_WRITEV => "process_vm_writev",
        abi::OP_VM_READV => "process_vm_readv",
        abi::OP_PIDFD_GETFD => "pidfd_getfd",
        abi::OP_INIT_MODULE => "init_module",
        abi::OP_FINIT_MODULE => "finit_module",
        abi::OP_MODULE_REQUEST => "module_request",
        abi::OP_KEXEC => "kexec",
        abi::OP_KERNEL_READ_FILE => "kernel_read_file",
        abi::OP_OPEN => "open",
        abi::OP_UNLINK => "unlink",
        abi::OP_RENAME => "rename",
        abi::OP_RMDIR => "rmdir",
        abi::OP_UMOUNT => "umount",
        abi::OP_CREATE => "create",
        abi::OP_LINK => "link",
        abi::OP_TRUNCATE => "truncate",
        _ => "unknown",
    }
}

fn via_name(via: u32) -> &'static str {
    match via {
        abi::VIA_EXECUTABLE => "executable",
        abi::VIA_ARGV0 => "argv0",
        abi::VIA_SCRIPT => "script",
        abi::VIA_IDENTITY => "identity",
        abi::VIA_INTERPRETER => "interpreter",
        abi::VIA_LOADED => "loader",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectedProgram {
    pub program: String,
    pub by: &'static str,
}

/// Exec identity gaps, detected after the fact. The kernel judges a `#!`
/// script on compat, and the file an interpreter is handed, by the name it was
/// called by: it cannot open them. The daemon resolves that file as the process
/// saw it and reports it when it is a protected program, by its real name or
/// its content. It cannot stop it any more: the record says what ran.
fn detect_program(tgid: u32, cwd: &str, file: &str, policy: &PolicyStore) -> Option<DetectedProgram> {
    let seen = if file.starts_with('/') { PathBuf::from(file) } else { Path::new(cwd).join(file) };
    // Through the process's own root while it lives (chroot, container), else as recorded.
    let via_root = Path::new(&format!("/proc/{tgid}/root")).join(seen.strip_prefix("/").unwrap_or(&seen));
    let identities = policy.identities().installed();
    let (program, by) = identities.program_of_file(&via_root).or_else(|| identities.program_of_file(&seen))?;
    Some(DetectedProgram { program, by })
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
        other => other.to_string(),
    };
    Destination { address: address.to_string(), port: n.port, protocol }
}

fn unix_socket(u: &UnixEvent) -> UnixSocketRef {
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
    UnixSocketRef { path, socket_type, resolved: u.hdr.flags & abi::FLAG_UNIX_RESOLVED != 0, abstract_name }
}

/// The text of a NUL-terminated (or full) byte array.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// argv as the kernel stores it: words separated (and ended) by NUL.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect()
}

/// Rebuilds a path from components sent leaf first ("tool\0bin\0usr\0").
pub fn path_from_components(bytes: &[u8]) -> String {
    let parts: Vec<String> = split_argv(bytes);
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut path = String::new();
    for part in parts.iter().rev() {
        path.push('/');
        path.push_str(part);
    }
    path
}

fn read_link(path: &str) -> String {
    std::fs::read_link(path).map(|p| p.display().to_string()).unwrap_or_default()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn paths_are_rebuilt_root_first() {
        assert_eq!(path_from_components(b"terraform\0bin\0usr\0"), "/usr/bin/terraform");
        assert_eq!(path_from_components(b""), "/");
        assert_eq!(path_from_components(b"tmp\0"), "/tmp");
    }

    #[test]
    fn argv_splits_on_nul() {
        assert_eq!(split_argv(b"terraform\0apply\0"), vec!["terraform", "apply"]);
        assert_eq!(split_argv(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_argv(b"").is_empty());
        // A truncated block has no final NUL: the partial word is kept.
        assert_eq!(split_argv(b"ls\0-l"), vec!["ls", "-l"]);
    }

    #[test]
    fn parent_of_self_is_known() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn decode_rejects_short_and_unknown_records() {
        assert!(decode(&[0u8; 4]).is_none());
        let mut hdr = EventHeader { kind: 99, ..Default::default() };
        assert!(decode(abi::as_bytes(&hdr)).is_none());
        hdr.kind = abi::EVENT_CONNECT;
        let net = NetEvent { hdr, family: libc::AF_INET as u16, port: 443, protocol: 6, addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] };
        match decode(abi::as_bytes(&net)) {
            Some(KernelEvent::Net(n)) => assert_eq!(destination(&n), Destination { address: "10.0.0.1".into(), port: 443, protocol: "tcp".into() }),
            other => panic!("decoded {other:?}"),
        }
    }
}
