//! Harness for the kernel tests: a real daemon on the real kernel, real
//! governed sessions, fake tools that say when they ran. Everything a test
//! starts it ends by pid; every directory it makes is removed.

#![allow(dead_code)]

pub mod dns;
pub mod gateway;
pub mod harness;
pub mod pki;
pub mod service_manager;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libbpf_rs::MapCore;
use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_airlock-agent");
/// What the fake tools print when they run: a blocked command must never print it.
pub const RAN: &str = "FAKE-TOOL-RAN";

/// The policy many tests start from: `terraform apply` blocked.
pub const APPLY_BLOCKED: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply"] }"#;
/// Role `agent`, governed by [`APPLY_BLOCKED`].
pub const AGENT_ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

/// Waits are this many times longer in slow guests (vm-tests under TCG set it).
pub fn time_scale() -> u32 {
    std::env::var("AIRLOCK_TEST_TIME_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

pub fn seconds(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(time_scale()))
}

/// The pause between two polls that each start a process (the CLI): 0.1 s,
/// times the time scale. In a slow guest a process start costs its only CPU,
/// which the daemon needs to get to what the test waits for; polls that read
/// a file or connect in process keep their short pauses.
pub fn cli_poll_pause() -> Duration {
    Duration::from_millis(100) * time_scale()
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kernel tests load eBPF programs and must run as root (scripts/test.sh)"
    );
}

/// A C program that prints RAN and its arguments.
fn fake_tool_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cached_c_binary(
            "fake-tool",
            "fake_tool",
            "#include <stdio.h>\nint main(int argc, char **argv) {\n  printf(\"FAKE-TOOL-RAN\");\n  for (int i = 0; i < argc; i++) printf(\" %s\", argv[i]);\n  printf(\"\\n\");\n  return 0;\n}\n",
            &["-O2"],
        )
    })
}

/// A helper program compiled from `source` into `target/tmp/DIR/NAME` (cargo
/// owns it, so nothing is left in /tmp), and compiled again only when its
/// source changed: the suites of one run (one guest) share it, and a compile
/// is seconds of a slow guest's only CPU. Written under a temporary name and
/// renamed, so a reader never sees half a binary.
pub fn cached_c_binary(dir: &str, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    if bin.exists() && std::fs::read_to_string(&src).is_ok_and(|old| old == source) {
        return bin;
    }
    let tag = format!("{}-{}", std::process::id(), unique());
    let tmp_src = dir.join(format!("{name}.{tag}.c"));
    let tmp_bin = dir.join(format!("{name}.{tag}"));
    std::fs::write(&tmp_src, source).unwrap_or_else(|e| panic!("write {}: {e}", tmp_src.display()));
    let out = Command::new("cc").args(flags).arg("-o").arg(&tmp_bin).arg(&tmp_src).output().expect("run cc");
    assert!(out.status.success(), "cc failed on {name}.c: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp_bin, &bin).unwrap_or_else(|e| panic!("rename to {}: {e}", bin.display()));
    std::fs::rename(&tmp_src, &src).unwrap_or_else(|e| panic!("rename to {}: {e}", src.display()));
    bin
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("airlock-test-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A policy directory written by the test.
pub fn write_policy_dir(root: &Path, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("policy");
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir policies");
    std::fs::create_dir_all(dir.join("roles")).expect("mkdir roles");
    for (name, body) in policies {
        std::fs::write(dir.join("policies").join(name), body).expect("write policy");
    }
    for (name, body) in roles {
        std::fs::write(dir.join("roles").join(name), body).expect("write role");
    }
    dir
}

/// A running daemon, stopped (by pid) when dropped. It pins its enforcement
/// in a bpffs directory of its own and runs with --release-on-exit; if it
/// died without releasing, the drop unloads what it left pinned.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub _root: TempDir,
    /// Unique per daemon (under /sys/fs/bpf): test daemons run side by side.
    pub pin_dir: PathBuf,
    /// The arguments of `airlock-agent run`, for restarts on the same directories.
    pub run_args: Vec<std::ffi::OsString>,
    /// How many daemon processes this test started on these directories.
    pub starts: u32,
    /// The test's stand-in for systemd, when the daemon runs as a unit's main process.
    pub manager: Option<service_manager::ServiceManager>,
    /// The audit lines read so far (the trail only grows): a poll parses
    /// only what was appended since.
    audit_read: std::sync::Mutex<AuditRead>,
}

#[derive(Default)]
struct AuditRead {
    /// Bytes of complete lines parsed, and the last of them (to notice a trail that was replaced).
    consumed: usize,
    tail: Vec<u8>,
    lines: Vec<Value>,
}

/// The one pinned set in `pin_dir`.
pub fn pinned_set(pin_dir: &Path) -> PathBuf {
    let sets: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .expect("read the pin dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("set-")))
        .collect();
    assert_eq!(sets.len(), 1, "expected one pinned set in {}: {sets:?}", pin_dir.display());
    sets.into_iter().next().unwrap()
}

/// A bpffs directory name no other test daemon uses.
pub fn unique_pin_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/airlock-test-{tag}-{}-{}", std::process::id(), unique()))
}

impl Daemon {
    /// Starts a daemon on `policy_dir` (inside a fresh temp dir) and waits until it answers.
    pub fn start(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Daemon {
        Self::start_inner::<&str>(tag, Some((policies, roles)), &[], false, false)
    }

    /// Like [`Daemon::start`], as the main process of a unit whose service
    /// manager the test plays ([`service_manager::ServiceManager`]), and
    /// without --release-on-exit, as the shipped unit runs it.
    pub fn start_under_service_manager(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Daemon {
        Self::start_inner::<&str>(tag, Some((policies, roles)), &[], false, true)
    }

    /// A daemon with no policy directory (its policy comes from a gateway:
    /// `extra` says which), with `--program-path <bin dir>`.
    pub fn start_without_policy_dir<S: AsRef<std::ffi::OsStr>>(tag: &str, extra: &[S]) -> Daemon {
        Self::start_inner(tag, None, extra, true, false)
    }

    /// The same, with extra arguments to `airlock-agent run` (e.g. `--ringbuf-kib 16`).
    pub fn start_with_args<S: AsRef<std::ffi::OsStr>>(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)], extra: &[S]) -> Daemon {
        Self::start_inner(tag, Some((policies, roles)), extra, false, false)
    }

    /// Like [`Daemon::start`], with `--program-path <bin dir>` (so the fake tools
    /// are fingerprinted as the protected programs, exec identity) and `extra` arguments.
    pub fn start_with(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)], extra: &[&str]) -> Daemon {
        Self::start_inner(tag, Some((policies, roles)), extra, true, false)
    }

    #[allow(clippy::type_complexity)]
    fn start_inner<S: AsRef<std::ffi::OsStr>>(
        tag: &str,
        policy: Option<(&[(&str, &str)], &[(&str, &str)])>,
        extra: &[S],
        program_path: bool,
        managed: bool,
    ) -> Daemon {
        require_root();
        let root = TempDir::new(tag);
        let state_dir = root.0.join("state");
        let socket = root.0.join("agent.sock");
        let bin_dir = root.0.join("bin");
        let work_dir = root.0.join("work");
        std::fs::create_dir_all(&bin_dir).expect("mkdir bin");
        std::fs::create_dir_all(&work_dir).expect("mkdir work");
        // Only files nobody else can replace are fingerprinted, whatever the umask.
        std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod bin");
        for tool in ["terraform", "kubectl", "aws"] {
            let dest = bin_dir.join(tool);
            std::fs::copy(fake_tool_binary(), &dest).expect("install fake tool");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod fake tool");
        }
        let pin_dir = unique_pin_dir(tag);
        let mut run_args: Vec<std::ffi::OsString> = vec!["run".into()];
        if let Some((policies, roles)) = policy {
            run_args.push("--policy-dir".into());
            run_args.push(write_policy_dir(&root.0, policies, roles).into());
        }
        run_args.extend::<[std::ffi::OsString; 7]>([
            "--state-dir".into(),
            state_dir.clone().into(),
            "--socket".into(),
            socket.clone().into(),
            "--pin-dir".into(),
            pin_dir.clone().into(),
            "--release-on-exit".into(),
        ]);
        if managed {
            run_args.retain(|a| a != "--release-on-exit");
        }
        if program_path {
            run_args.push("--program-path".into());
            run_args.push(bin_dir.clone().into());
        }
        run_args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
        let manager = managed.then(|| service_manager::ServiceManager::new(&root.0));
        let child = spawn_daemon(&root.0, &run_args, 1, manager.as_ref());
        let mut daemon =
            Daemon { child, socket, state_dir, bin_dir, work_dir, _root: root, pin_dir, run_args, starts: 1, manager, audit_read: Default::default() };
        daemon.wait_ready();
        daemon
    }

    /// The daemon's pid (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, by pid: the daemon gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the daemon");
        let status = self.child.wait().expect("wait for the killed daemon");
        assert_eq!(status.signal(), Some(9), "the daemon did not die of SIGKILL: {status}");
    }

    /// SIGTERM, by pid, and wait: a clean stop (with --release-on-exit the
    /// enforcement is detached, so the next start loads it afresh).
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the daemon");
        let status = self.child.wait().expect("wait for the daemon");
        assert!(status.success(), "the daemon did not stop cleanly ({status}); its log:\n{}", self.log());
    }

    /// Starts a new daemon process on the same state, socket, policy and pin
    /// directories (the previous one must have exited) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(matches!(self.child.try_wait(), Ok(Some(_))), "restart: the previous daemon still runs");
        self.starts += 1;
        self.child = spawn_daemon(&self._root.0, &self.run_args, self.starts, self.manager.as_ref());
        self.wait_ready();
    }

    pub fn policy_dir(&self) -> PathBuf {
        self._root.0.join("policy")
    }

    /// The log of every daemon process of this test, in order.
    pub fn log(&self) -> String {
        (1..=self.starts.max(1)).map(|n| daemon_log(&self._root.0, n)).collect::<Vec<_>>().join("")
    }

    /// The log of the current daemon process only.
    pub fn current_log(&self) -> String {
        daemon_log(&self._root.0, self.starts.max(1))
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let deadline = started + seconds(60);
        let mut polls = 0;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}) before answering; its log:\n{}", self.log());
            }
            // `status` is a process start (about a second of a slow guest's
            // only CPU, which the loading daemon needs), and for root it asks
            // the API socket: it cannot succeed before that socket accepts a
            // connect, which is tried in process first.
            if std::os::unix::net::UnixStream::connect(self.api_socket()).is_err() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            polls += 1;
            let out = Command::new(AGENT).arg("status").arg("--socket").arg(&self.socket).output().expect("run status");
            if out.status.success() {
                let line = format!("daemon-ready: {} start {} {:.1} s ({polls} status polls)\n", self.pin_dir.display(), self.starts, started.elapsed().as_secs_f64());
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon did not answer in time; its log:\n{}", self.log());
    }

    pub fn path_env(&self) -> String {
        format!("{}:{}", self.bin_dir.display(), std::env::var("PATH").unwrap_or_default())
    }

    /// Runs `bash -c script` as a governed session; the script's first line prints the session id.
    pub fn governed(&self, role: Option<&str>, script: &str) -> Session {
        self.governed_env(role, script, &[])
    }

    /// The same script, not governed: for "untagged processes are unaffected".
    pub fn ungoverned(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(&self.work_dir)
            .env("PATH", self.path_env())
            .env("BIN", &self.bin_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run bash")
    }

    /// The complete lines of the audit trail. The daemon appends while we read,
    /// so a last line without its newline is still being written: left for later.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state_dir.join("audit.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or(0, |end| end + 1);
        let mut read = self.audit_read.lock().unwrap_or_else(|p| p.into_inner());
        let tail_start = read.consumed - read.tail.len();
        if complete < read.consumed || text.as_bytes()[tail_start..read.consumed] != read.tail[..] {
            *read = AuditRead::default();
        }
        let new = &text[read.consumed..complete];
        for l in new.lines() {
            let line = serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"));
            read.lines.push(line);
        }
        if !new.is_empty() {
            let keep = new.len().min(64);
            read.tail = new.as_bytes()[new.len() - keep..].to_vec();
            read.consumed = complete;
        }
        read.lines.clone()
    }

    /// Waits (bounded) for audit lines matching `pred`; returns them.
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + seconds(15);
        loop {
            let found: Vec<Value> = self.audit().into_iter().filter(|v| pred(v)).collect();
            if !found.is_empty() {
                return found;
            }
            if Instant::now() > deadline {
                panic!("no audit line for {what} in time; daemon log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One of this daemon's BPF maps by its kernel name (at most 15 bytes),
    /// found among the daemon's own descriptors, so another daemon's map is
    /// never touched.
    pub fn bpf_map(&self, name: &str) -> libbpf_rs::MapHandle {
        let fdinfo = PathBuf::from(format!("/proc/{}/fdinfo", self.child.id()));
        for entry in std::fs::read_dir(&fdinfo).expect("read the daemon's fdinfo") {
            let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
                continue;
            };
            let Some(id) = text.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(map) = libbpf_rs::MapHandle::from_map_id(id) {
                if map.name() == name {
                    return map;
                }
            }
        }
        panic!("the daemon holds no {name} map");
    }

    pub fn status_json(&self) -> Value {
        let out = Command::new(AGENT).args(["status", "--json", "--socket"]).arg(&self.socket).output().expect("run status");
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// The backend the daemon chose. Where the run expects one (vm-tests set
    /// AIRLOCK_EXPECT_BACKEND), anything else is a failure.
    pub fn backend(&self) -> String {
        let backend = self.status_json()["backend"].as_str().unwrap_or_default().to_string();
        if let Ok(expected) = std::env::var("AIRLOCK_EXPECT_BACKEND") {
            assert_eq!(backend, expected, "the daemon chose the wrong backend; log:\n{}", self.log());
        }
        assert!(backend == "lsm" || backend == "compat", "unknown backend {backend:?}");
        backend
    }

    pub fn status_text(&self) -> String {
        let out = Command::new(AGENT).args(["status", "--socket"]).arg(&self.socket).output().expect("run status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until `pred` holds for status --json.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + seconds(15);
        loop {
            let status = self.status_json();
            if pred(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!("status never showed {what}; last status: {status:#}\nlog:\n{}", self.log());
            }
            std::thread::sleep(cli_poll_pause());
        }
    }
}

fn daemon_log(root: &Path, n: u32) -> String {
    let name = if n <= 1 { "daemon.log".to_string() } else { format!("daemon.{n}.log") };
    std::fs::read_to_string(root.join(name)).unwrap_or_default()
}

fn spawn_daemon(root: &Path, args: &[std::ffi::OsString], n: u32, manager: Option<&service_manager::ServiceManager>) -> Child {
    let name = if n <= 1 { "daemon.log".to_string() } else { format!("daemon.{n}.log") };
    let log = std::fs::File::create(root.join(name)).expect("create daemon log");
    if let Some(manager) = manager {
        return manager.spawn(AGENT, args, &[("AIRLOCK_LOG", "info")], log);
    }
    Command::new(AGENT)
        .args(args)
        .env("AIRLOCK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the daemon")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let stopping = Instant::now();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + seconds(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // The unit is stopped: systemd (before 254) empties its descriptor store.
        drop(self.manager.take());
        // --release-on-exit removed the pins; a daemon that was killed (or
        // failed) left them, and with them its programs: unload those.
        if self.pin_dir.exists() {
            match Command::new(AGENT).arg("unload").arg("--pin-dir").arg(&self.pin_dir).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("unload {} failed: {}", self.pin_dir.display(), String::from_utf8_lossy(&out.stderr)),
                Err(e) => eprintln!("unload {}: {e}", self.pin_dir.display()),
            }
        }
        let line = format!("daemon-stop: {} {:.1} s\n", self.pin_dir.display(), stopping.elapsed().as_secs_f64());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
}

pub struct Session {
    pub output: Output,
    pub stdout: String,
    pub session_id: String,
}

impl Session {
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, String::from_utf8_lossy(&self.output.stderr))
    }

    pub fn tool_ran(&self) -> bool {
        self.all_output().contains(RAN)
    }

    pub fn killed(&self) -> bool {
        self.output.status.signal() == Some(9)
    }
}

/// Writes `text` to a new file (for scripts the tests run).
pub fn write_file(path: &Path, text: &str, mode: u32) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A governed bash that stays alive and runs the commands the test sends it,
/// one at a time, through a FIFO: a session that outlives a daemon restart.
pub struct LiveSession {
    pub child: Child,
    pub session_id: String,
    fifo: PathBuf,
    out: PathBuf,
    sent: u32,
}

impl Daemon {
    /// Launches a long-lived governed session with `role`.
    pub fn live_session(&self, role: &str) -> LiveSession {
        let n = unique();
        let fifo = self.work_dir.join(format!("live-{n}.fifo"));
        let out = self.work_dir.join(format!("live-{n}.out"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        // Opened read-write: the loop never sees EOF between commands.
        let script = format!(
            "exec 3<>'{fifo}' 2>>'{out}'\necho \"session=$AIRLOCK_SESSION_ID\" >> '{out}'\nwhile IFS= read -r line <&3; do\n  [ \"$line\" = quit ] && exit 0\n  eval \"$line\" >> '{out}' 2>&1\ndone\n",
            fifo = fifo.display(),
            out = out.display()
        );
        let child = Command::new(AGENT)
            .args(["launch", "--socket"])
            .arg(&self.socket)
            .args(["--role", role, "--", "bash", "-c", &script])
            .current_dir(&self.work_dir)
            .env("PATH", self.path_env())
            .env("BIN", &self.bin_dir)
            .env("WORK", &self.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("launch the live session");
        let mut live = LiveSession { child, session_id: String::new(), fifo, out, sent: 0 };
        let deadline = Instant::now() + seconds(15);
        while live.session_id.is_empty() {
            let text = std::fs::read_to_string(&live.out).unwrap_or_default();
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("session=")) {
                live.session_id = id.to_string();
            } else if Instant::now() > deadline {
                panic!("the live session did not start: {text}\ndaemon log:\n{}", self.log());
            } else if let Ok(Some(status)) = live.child.try_wait() {
                panic!("the live session exited ({status}) before starting: {text}");
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(!live.session_id.is_empty(), "the live session has no session id");
        live
    }
}

impl LiveSession {
    /// The pid of the session's root (`launch` execs bash in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs one shell command line in the session; returns its output and exit status.
    pub fn run(&mut self, command: &str) -> (String, i32) {
        self.sent += 1;
        let marker = format!("@@done-{}", self.sent);
        let before = std::fs::read_to_string(&self.out).unwrap_or_default().len();
        let line = format!("{command}; echo \"{marker} rc=$?\"\n");
        assert!(!command.contains('\n'), "one line per command");
        std::fs::OpenOptions::new().write(true).open(&self.fifo).and_then(|mut f| f.write_all(line.as_bytes())).expect("write to the session's FIFO");
        let deadline = Instant::now() + seconds(30);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(at) = text[before.min(text.len())..].find(&marker) {
                let start = before.min(text.len());
                let output = text[start..start + at].to_string();
                let rest = &text[start + at + marker.len()..];
                let rc = rest.trim_start().strip_prefix("rc=").and_then(|r| r.lines().next()).and_then(|r| r.trim().parse().ok()).unwrap_or(-1);
                return (output, rc);
            }
            if Instant::now() > deadline {
                panic!("the live session did not finish {command:?}; output so far:\n{text}");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the live session exited ({status}) during {command:?}: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until the session's whole output so far satisfies
    /// `pred` (block messages reach the shell's stderr a moment after the
    /// refused command returns); returns that output.
    pub fn wait_output(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + seconds(15);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if pred(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("the live session's output never showed {what}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the session (it exits normally) and waits for it.
    pub fn quit(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.fifo) {
                let _ = f.write_all(b"quit\n");
            }
            let deadline = Instant::now() + seconds(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.quit();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Runs `bash -c script` as a governed session with extra environment (e.g. HOME);
    /// the script's first line prints the session id.
    pub fn governed_env(&self, role: Option<&str>, script: &str, env: &[(&str, &str)]) -> Session {
        let mut cmd = Command::new(AGENT);
        cmd.arg("launch").arg("--socket").arg(&self.socket);
        if let Some(role) = role {
            cmd.arg("--role").arg(role);
        }
        let full = format!("echo \"AIRLOCK_SESSION=$AIRLOCK_SESSION_ID\"\n{script}");
        cmd.arg("--")
            .arg("bash")
            .arg("-c")
            .arg(&full)
            .current_dir(&self.work_dir)
            .env("PATH", self.path_env())
            .env("BIN", &self.bin_dir)
            .env("WORK", &self.work_dir)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("run airlock-agent launch");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let session_id = stdout.lines().find_map(|l| l.strip_prefix("AIRLOCK_SESSION=")).unwrap_or_default().to_string();
        Session { output, stdout, session_id }
    }

    /// Whether the daemon process is still running (not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Compiles a C source (test helpers) into `dir`; returns the binary.
pub fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write C source");
    let bin = dir.join(name);
    let status = Command::new("cc").args(["-O2", "-o"]).arg(&bin).arg(&src).status().expect("run cc");
    assert!(status.success(), "cc failed on {name}.c");
    bin
}

// ---- api -------------------------------------------------------------

impl Daemon {
    /// The gRPC API's socket: `api.sock` beside the control socket.
    pub fn api_socket(&self) -> PathBuf {
        self.socket.with_file_name("api.sock")
    }

    /// The test's own scratch directory (removed with the daemon).
    pub fn root_dir(&self) -> &Path {
        &self._root.0
    }

    /// Runs the CLI against this daemon's sockets.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(AGENT).args(args).arg("--socket").arg(&self.socket).output().expect("run airlock-agent")
    }
}

/// The Python with grpcio and grpcio-tools that scripts/setup.sh makes, or why there is none.
pub fn python() -> Result<PathBuf, String> {
    venv_python("import grpc, grpc_tools")
}

/// The venv's Python with the official MCP SDK (`mcp`) that scripts/setup.sh installs.
pub fn python_mcp() -> PathBuf {
    venv_python_or_skip("import mcp", "AIRLOCK_REQUIRE_PYTHON_MCP", "the MCP SDK (mcp)")
}

/// The venv's Python with what the export tests use (`ocsf-json-schema`,
/// `jsonschema`, `opentelemetry-proto` on grpcio), installed by scripts/setup.sh.
pub fn python_export() -> PathBuf {
    venv_python_or_skip(
        "import grpc, jsonschema, ocsf_json_schema, opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc",
        "AIRLOCK_REQUIRE_PYTHON_EXPORT",
        "ocsf-json-schema and opentelemetry-proto",
    )
}

/// The venv's Python with the official Prometheus client (`prometheus_client`,
/// its parsers) that scripts/setup.sh installs.
pub fn python_prometheus() -> PathBuf {
    venv_python_or_skip("import prometheus_client.parser, prometheus_client.openmetrics.parser", "AIRLOCK_REQUIRE_PYTHON_METRICS", "prometheus_client")
}

/// The venv's Python that can run `imports`. Without it the test prints
/// `skipped: ...` and is reported skipped, unless `require_var`=1
/// (scripts/test.sh sets it): then it fails.
fn venv_python_or_skip(imports: &str, require_var: &str, what: &str) -> PathBuf {
    match venv_python(imports) {
        Ok(python) => python,
        Err(why) if std::env::var(require_var).as_deref() == Ok("1") => {
            panic!("{require_var}=1 but there is no Python with {what} ({why}): run scripts/setup.sh (it installs it from PyPI into target/pyvenv)")
        }
        Err(why) => {
            println!("skipped: no Python with {what} ({why}); scripts/setup.sh installs it");
            harness::skip(format!("no Python with {what}: {why}"))
        }
    }
}

/// Debian's chromium, which the Control Room's browser test drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The venv's Python with Playwright, and Debian's chromium beside it, both
/// installed by scripts/setup.sh. Without them the test prints `skipped:
/// ...` and is reported skipped, unless AIRLOCK_REQUIRE_BROWSER=1
/// (scripts/test.sh): then it fails.
pub fn python_playwright() -> PathBuf {
    let found = venv_python("import playwright.sync_api").and_then(|python| {
        if Path::new(CHROMIUM).exists() {
            Ok(python)
        } else {
            Err(format!("{CHROMIUM} is missing"))
        }
    });
    match found {
        Ok(python) => python,
        Err(why) if std::env::var("AIRLOCK_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("AIRLOCK_REQUIRE_BROWSER=1 but there is no browser to drive ({why}): run scripts/setup.sh (it installs chromium from apt and playwright from PyPI into target/pyvenv)")
        }
        Err(why) => {
            println!("skipped: no browser to drive ({why}); scripts/setup.sh installs chromium and Playwright");
            harness::skip(format!("no browser to drive: {why}"))
        }
    }
}

/// AIRLOCK_TEST_PYTHON, else target/pyvenv's Python, if `imports` succeeds in it.
fn venv_python(imports: &str) -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("AIRLOCK_TEST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    let out = Command::new(&venv).args(["-c", imports]).output().map_err(|e| format!("{}: {e}", venv.display()))?;
    if out.status.success() {
        Ok(venv)
    } else {
        Err(format!("{}: {}", venv.display(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A webhook receiver on loopback: records each POST's headers and body, answers 200.
pub fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("receiver address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (url, rx)
}

