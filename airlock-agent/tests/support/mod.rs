//! Harness for the kernel tests: a real daemon on the real kernel, real
//! governed sessions, fake tools that say when they ran. Everything a test
//! starts it ends by pid; every directory it makes is removed.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_airlock-agent");
/// What the fake tools print when they run: a blocked command must never print it.
pub const RAN: &str = "FAKE-TOOL-RAN";

/// Waits are this many times longer in slow guests (vm-tests under TCG set it).
pub fn time_scale() -> u32 {
    std::env::var("AIRLOCK_TEST_TIME_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

pub fn seconds(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(time_scale()))
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kernel tests load eBPF programs and must run as root (scripts/test.sh)"
    );
}

/// A C program that prints RAN and its arguments, compiled once per test run.
fn fake_tool_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Inside target/: cargo owns it, so nothing is left in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-tool");
        std::fs::create_dir_all(&dir).expect("create the fake tool dir");
        let src = dir.join("fake_tool.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\nint main(int argc, char **argv) {\n  printf(\"FAKE-TOOL-RAN\");\n  for (int i = 0; i < argc; i++) printf(\" %s\", argv[i]);\n  printf(\"\\n\");\n  return 0;\n}\n",
        )
        .expect("write fake_tool.c");
        let bin = dir.join("fake_tool");
        let status = Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src).status().expect("run cc");
        assert!(status.success(), "cc failed to build the fake tool");
        bin
    })
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

/// A running daemon, stopped (by pid) when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub _root: TempDir,
}

impl Daemon {
    /// Starts a daemon on `policy_dir` (inside a fresh temp dir) and waits until it answers.
    pub fn start(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Daemon {
        require_root();
        let root = TempDir::new(tag);
        let policy_dir = write_policy_dir(&root.0, policies, roles);
        let state_dir = root.0.join("state");
        let socket = root.0.join("agent.sock");
        let bin_dir = root.0.join("bin");
        let work_dir = root.0.join("work");
        std::fs::create_dir_all(&bin_dir).expect("mkdir bin");
        std::fs::create_dir_all(&work_dir).expect("mkdir work");
        for tool in ["terraform", "kubectl", "aws"] {
            let dest = bin_dir.join(tool);
            std::fs::copy(fake_tool_binary(), &dest).expect("install fake tool");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod fake tool");
        }
        let log = std::fs::File::create(root.0.join("daemon.log")).expect("create daemon log");
        let child = Command::new(AGENT)
            .arg("run")
            .arg("--policy-dir")
            .arg(&policy_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--socket")
            .arg(&socket)
            .env("AIRLOCK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let mut daemon = Daemon { child, socket, state_dir, bin_dir, work_dir, _root: root };
        daemon.wait_ready();
        daemon
    }

    pub fn policy_dir(&self) -> PathBuf {
        self._root.0.join("policy")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._root.0.join("daemon.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + seconds(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}) before answering; its log:\n{}", self.log());
            }
            let out = Command::new(AGENT).arg("status").arg("--socket").arg(&self.socket).output().expect("run status");
            if out.status.success() {
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
        let mut cmd = Command::new(AGENT);
        cmd.arg("launch").arg("--socket").arg(&self.socket);
        if let Some(role) = role {
            cmd.arg("--role").arg(role);
        }
        let full = format!("echo \"AIRLOCK_SESSION=$AIRLOCK_SESSION_ID\"\n{script}");
        let output = cmd
            .arg("--")
            .arg("bash")
            .arg("-c")
            .arg(&full)
            .current_dir(&self.work_dir)
            .env("PATH", self.path_env())
            .env("BIN", &self.bin_dir)
            .env("WORK", &self.work_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run airlock-agent launch");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let session_id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("AIRLOCK_SESSION="))
            .unwrap_or_default()
            .to_string();
        Session { output, stdout, session_id }
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
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
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
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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

impl Daemon {
    /// Like [`Daemon::start`], with `--program-path <bin dir>` (so the fake tools
    /// are fingerprinted as the protected programs, exec identity) and `extra` arguments.
    pub fn start_with(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)], extra: &[&str]) -> Daemon {
        require_root();
        let root = TempDir::new(tag);
        let policy_dir = write_policy_dir(&root.0, policies, roles);
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
        let log = std::fs::File::create(root.0.join("daemon.log")).expect("create daemon log");
        let child = Command::new(AGENT)
            .arg("run")
            .arg("--policy-dir")
            .arg(&policy_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--program-path")
            .arg(&bin_dir)
            .args(extra)
            .env("AIRLOCK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let mut daemon = Daemon { child, socket, state_dir, bin_dir, work_dir, _root: root };
        daemon.wait_ready();
        daemon
    }
}
