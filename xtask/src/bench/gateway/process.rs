//! The gateway process the bench starts and stops, the bench client it runs
//! against it, and what is read from /proc about both (and about the
//! PostgreSQL server, whose work the gateway's own CPU time does not show).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::sys;

pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub dir: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Gateway {
    /// `airlock-gateway run` on a free loopback port; returns once it serves.
    /// With `ui`, the Control Room too, on a port of its own choosing (its
    /// URL in `ui-url`).
    pub fn start(bin: &Path, dir: &Path, database_url: Option<&str>, ui: bool, log: &Path) -> Result<Gateway> {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("find a free loopback port")?.port();
        let log_file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--data-dir").arg(dir).args(["--listen", &format!("127.0.0.1:{port}")]);
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        if ui {
            cmd.args(["--ui-listen", "127.0.0.1:0"]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file).spawn().with_context(|| format!("start {}", bin.display()))?;
        let mut gateway = Gateway { pid: child.id(), child, dir: dir.to_path_buf(), log: log.to_path_buf(), stopped: false };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = gateway.child.try_wait().context("wait for the gateway")? {
                bail!("the gateway exited at start ({status}): {}", gateway.log_tail());
            }
            let ready = dir.join("url").exists() && dir.join("admin.token").exists() && (!ui || dir.join("ui-url").exists());
            if ready && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(gateway);
            }
            if Instant::now() > until {
                bail!("the gateway did not start serving within 120 s: {}", gateway.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> Result<String> {
        self.read_url("url")
    }

    /// The Control Room's URL (started with `ui`).
    pub fn ui_url(&self) -> Result<String> {
        self.read_url("ui-url")
    }

    fn read_url(&self, file: &str) -> Result<String> {
        let path = self.dir.join(file);
        Ok(std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?.trim().to_string())
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 30 s. Says so if
    /// the gateway had already exited on its own.
    pub fn stop(&mut self) -> Result<Option<String>> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(None);
        }
        if let Some(status) = self.child.try_wait().context("wait for the gateway")? {
            return Ok(Some(format!("the gateway had exited on its own before it was stopped ({status}); log: {}", self.log_tail())));
        }
        // SAFETY: kill has no memory preconditions; the pid is our own child's, not yet reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if self.child.try_wait().context("wait for the gateway")?.is_some() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill().context("kill the gateway")?;
        self.child.wait().context("reap the gateway")?;
        Ok(Some("the gateway ignored SIGTERM for 30 s and was killed".into()))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The gateway (and PostgreSQL server) at one of the bench client's marks.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu_ns: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub pg_cpu_ns: Option<u64>,
}

impl Sample {
    pub fn take(pid: u32, pg_port: Option<u16>) -> Result<Sample> {
        let at = Instant::now();
        let cpu_ns = sys::cpu_ns(pid)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Sample { at, cpu_ns, rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")?, pg_cpu_ns: pg_port.and_then(postgres_cpu_ns) })
    }

    /// Cores used between two samples: CPU seconds per wall second.
    pub fn cores_since(&self, before: &Sample) -> f64 {
        self.cpu_ns.saturating_sub(before.cpu_ns) as f64 / (self.at - before.at).as_nanos().max(1) as f64
    }

    pub fn pg_cores_since(&self, before: &Sample) -> Option<f64> {
        Some(self.pg_cpu_ns?.saturating_sub(before.pg_cpu_ns?) as f64 / (self.at - before.at).as_nanos().max(1) as f64)
    }
}

/// The PostgreSQL server listening on `port` (its postmaster, found by the
/// `-p PORT` it was started with, and the postmaster's children): CPU time.
fn postgres_cpu_ns(port: u16) -> Option<u64> {
    let port = port.to_string();
    let mut postmaster = None;
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        parents.push((pid, ppid));
        if postmaster.is_none() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_postgres = args.first().is_some_and(|a| a.ends_with(b"postgres"));
            if is_postgres && args.windows(2).any(|w| w[0] == b"-p" && w[1] == port.as_bytes()) {
                postmaster = Some(pid);
            }
        }
    }
    let postmaster = postmaster?;
    let total = parents.iter().filter(|(pid, ppid)| *pid == postmaster || *ppid == postmaster).filter_map(|(pid, _)| sys::cpu_ns(*pid).ok()).sum();
    Some(total)
}

/// What a run of gateway-bench gave: its result, the gateway sampled at
/// each mark, and anything odd about how the gateway ended.
pub struct BenchRun {
    pub result: Value,
    pub marks: HashMap<String, Sample>,
    pub gateway_exit: Option<String>,
}

/// Runs gateway-bench; samples the gateway at each `mark NAME` line it
/// prints; once its `result` line is in, stops the gateway (while the
/// client still holds its connections), then lets the client go.
pub fn run_bench(bench: &Path, args: &[String], mut gateway: Option<&mut Gateway>, pg_port: Option<u16>) -> Result<BenchRun> {
    eprintln!("==> gateway-bench {}", args.join(" "));
    let mut child = Command::new(bench)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", bench.display()))?;
    let stdout = child.stdout.take().context("gateway-bench's stdout")?;
    let mut stdin = child.stdin.take();
    let mut marks = HashMap::new();
    let mut result = None;
    let mut gateway_exit = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read gateway-bench's output")?;
        if let Some(name) = line.strip_prefix("mark ") {
            if let Some(g) = gateway.as_deref() {
                marks.insert(name.to_string(), Sample::take(g.pid, pg_port).with_context(|| format!("sample the gateway at {name}"))?);
            }
        } else if let Some(json) = line.strip_prefix("result ") {
            result = Some(serde_json::from_str::<Value>(json).context("gateway-bench's result is not JSON")?);
            if let Some(g) = gateway.as_deref_mut() {
                gateway_exit = g.stop()?;
            }
            stdin = None;
        } else {
            eprintln!("gateway-bench: {line}");
        }
    }
    drop(stdin);
    let status = child.wait().context("wait for gateway-bench")?;
    if !status.success() {
        bail!("gateway-bench {} failed ({status})", args.first().map(String::as_str).unwrap_or(""));
    }
    Ok(BenchRun { result: result.context("gateway-bench printed no result")?, marks, gateway_exit })
}
