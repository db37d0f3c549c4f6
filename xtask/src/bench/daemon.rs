//! One Airlock daemon per configuration, started on a generated policy
//! directory and stopped by pid; and the way workers are started next to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::policy::ROLE;

/// The two executables a run needs.
pub struct Tools {
    pub agent: PathBuf,
    /// This very program: `xtask bench worker ...` is the load generator.
    pub xtask: PathBuf,
}

/// A running `airlock-agent run`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub socket: PathBuf,
    log: PathBuf,
    agent: PathBuf,
}

/// The counters of `status --json` that the bench follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub decisions: u64,
    pub ringbuf_drops: u64,
    pub audit_lines: u64,
    /// Decisions in the decision store, and those it dropped.
    pub store_decisions: u64,
    pub store_dropped: u64,
}

impl Daemon {
    /// Starts a daemon with its own state dir and socket under `dir` and waits until it answers.
    pub fn start(tools: &Tools, policy_dir: &Path, dir: &Path) -> Result<Daemon> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let socket = dir.join("agent.sock");
        let log = dir.join("daemon.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(&tools.agent)
            .arg("run")
            .arg("--policy-dir")
            .arg(policy_dir)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            // Its own pins, removed when it stops: the bench leaves the kernel as it found it.
            .arg("--pin-dir")
            .arg(format!("/sys/fs/bpf/airlock-bench-{}-{}", std::process::id(), dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()))
            .arg("--release-on-exit")
            .env("AIRLOCK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", tools.agent.display()))?;
        let pid = child.id();
        let mut daemon = Daemon { child: Some(child), pid, socket, log, agent: tools.agent.clone() };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("wait for the daemon")? {
                    self.child = None;
                    bail!("the daemon exited during start-up ({status}); its log:\n{}", self.log_tail());
                }
            }
            if self.status().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the daemon did not answer within 60 s; its log:\n{}", self.log_tail())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `airlock-agent status --json`.
    pub fn status(&self) -> Result<Value> {
        let out = Command::new(&self.agent)
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .context("run airlock-agent status")?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_slice(&out.stdout).context("status --json is not JSON")
    }

    pub fn counters(&self) -> Result<Counters> {
        let status = self.status()?;
        let get = |path: &[&str]| -> Result<u64> {
            let mut v = &status;
            for key in path {
                v = v.get(key).with_context(|| format!("status --json has no {}", path.join(".")))?;
            }
            v.as_u64().with_context(|| format!("status --json: {} is not a number", path.join(".")))
        };
        Ok(Counters {
            decisions: get(&["counters", "decisions"])?,
            ringbuf_drops: get(&["counters", "ringbuf_drops"])?,
            audit_lines: get(&["audit_lines"])?,
            store_decisions: get(&["store", "decisions"]).unwrap_or(0),
            store_dropped: get(&["store", "dropped"]).unwrap_or(0),
        })
    }

    /// Waits until every on-demand hook (the syscall tracepoints) of the
    /// daemon is attached, or every one is detached.
    pub fn wait_on_demand(&self, attached: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status()?;
            let hooks: Vec<&Value> = status["hooks"].as_array().into_iter().flatten().filter(|h| h["on_demand"] == true).collect();
            if hooks.is_empty() {
                bail!("status --json lists no on-demand hook");
            }
            if hooks.iter().all(|h| h["attached"] == attached) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the daemon's on-demand hooks were not {} within 30 s", if attached { "attached" } else { "detached" });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A governed `sleep` that keeps a session live until dropped.
    pub fn live_session(&self) -> Result<LiveSession> {
        let child = Command::new(&self.agent)
            .arg("launch")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--role", ROLE, "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("launch a governed sleep")?;
        let session = LiveSession(Some(child));
        self.wait_on_demand(true)?;
        Ok(session)
    }

    /// Stops the daemon and reports how it ended.
    pub fn stop(mut self) -> Result<()> {
        stop_child(self.child.take())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = stop_child(self.child.take()) {
            eprintln!("xtask bench: {e:#}");
        }
    }
}

/// A governed process kept alive; killed by pid when dropped.
pub struct LiveSession(Option<Child>);

impl Drop for LiveSession {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM by pid, then SIGKILL if it has not exited after 20 s.
fn stop_child(child: Option<Child>) -> Result<()> {
    let Some(mut child) = child else { return Ok(()) };
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill with a pid we started and have not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().context("wait for the daemon")? {
            if !status.success() {
                bail!("the daemon (pid {pid}) exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the daemon (pid {pid}) ignored SIGTERM for 20 s and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a worker is started: on its own, or as a governed session of a daemon.
#[derive(Clone, Copy)]
pub enum Tagging<'a> {
    Untagged,
    Governed(&'a Daemon),
}

/// The command that runs `xtask bench worker ARGS...`, governed or not.
pub fn worker_command(tools: &Tools, tagging: Tagging<'_>, args: &[&str]) -> Command {
    let mut cmd = match tagging {
        Tagging::Untagged => Command::new(&tools.xtask),
        Tagging::Governed(daemon) => {
            let mut c = Command::new(&daemon.agent);
            c.arg("launch").arg("--socket").arg(&daemon.socket).args(["--role", ROLE, "--"]).arg(&tools.xtask);
            c
        }
    };
    cmd.args(["bench", "worker"]).args(args).stdin(Stdio::null());
    cmd
}

/// Runs a worker to the end and returns the number it printed last.
pub fn run_worker(tools: &Tools, tagging: Tagging<'_>, args: &[&str]) -> Result<u64> {
    let out = worker_command(tools, tagging, args).output().with_context(|| format!("start worker {args:?}"))?;
    finish_worker(args, out)
}

pub fn finish_worker(args: &[&str], out: std::process::Output) -> Result<u64> {
    if !out.status.success() {
        bail!("worker {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).context("the worker printed nothing")?;
    last.trim().parse().with_context(|| format!("worker {args:?} printed {last:?}, not a number"))
}
