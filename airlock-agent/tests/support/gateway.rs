//! A real gateway for the fleet tests: `airlock-gateway run` on a loopback
//! port, with its own data directory, stopped by pid when dropped; and its CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{seconds, TempDir, AGENT};

/// Built beside the agent by `cargo test --workspace`.
pub fn gateway_binary() -> PathBuf {
    let bin = Path::new(AGENT).with_file_name("airlock-gateway");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", bin.display());
    bin
}

/// The `--config` file, when a test gave one, in the gateway's temp dir.
const CONFIG_FILE: &str = "gateway.toml";

pub struct Gateway {
    pub child: Child,
    pub data_dir: PathBuf,
    pub port: u16,
    pub database_url: Option<String>,
    /// More arguments of `airlock-gateway run` (e.g. `--ui-listen`), kept for restarts.
    extra: Vec<String>,
    starts: u32,
    root: TempDir,
}

impl Gateway {
    /// A gateway on SQLite in a fresh data directory.
    pub fn start(tag: &str) -> Gateway {
        Self::start_on(tag, None)
    }

    /// A gateway on SQLite whose `--config` file says `config` (TOML).
    pub fn start_with_config(tag: &str, config: &str) -> Gateway {
        Self::start_with(tag, Some(config), &[])
    }

    /// A gateway on SQLite with an optional `--config` file and more
    /// arguments of `airlock-gateway run` (e.g. `--ui-listen 127.0.0.1:0`).
    pub fn start_with(tag: &str, config: Option<&str>, extra: &[&str]) -> Gateway {
        let root = TempDir::new(&format!("gw-{tag}"));
        if let Some(config) = config {
            std::fs::write(root.0.join(CONFIG_FILE), config).expect("write gateway.toml");
        }
        Self::start_in(root, None, extra.iter().map(|a| a.to_string()).collect())
    }

    /// A gateway on `database_url` (PostgreSQL), or SQLite when None.
    pub fn start_on(tag: &str, database_url: Option<&str>) -> Gateway {
        Self::start_in(TempDir::new(&format!("gw-{tag}")), database_url, Vec::new())
    }

    fn start_in(root: TempDir, database_url: Option<&str>, extra: Vec<String>) -> Gateway {
        let data_dir = root.0.join("data");
        let port = super::pki::free_port();
        let child = spawn(&root.0, &data_dir, port, database_url, &extra, 1);
        let mut gw = Gateway { child, data_dir, port, database_url: database_url.map(String::from), extra, starts: 1, root };
        gw.wait_ready();
        gw
    }

    /// A second replica: the same database and the same CA (copied, as an
    /// operator copies ca.pem and ca.key to each replica), its own data
    /// directory and port.
    pub fn replica(&self, tag: &str) -> Gateway {
        let url = self.database_url.as_deref().expect("replicas share a PostgreSQL database");
        let root = TempDir::new(&format!("gw-{tag}"));
        let data_dir = root.0.join("data");
        std::fs::create_dir_all(&data_dir).expect("mkdir replica data");
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(self.data_dir.join(f), data_dir.join(f)).expect("copy the CA to the replica");
        }
        let port = super::pki::free_port();
        let child = spawn(&root.0, &data_dir, port, Some(url), &[], 1);
        let mut gw = Gateway { child, data_dir, port, database_url: Some(url.into()), extra: Vec::new(), starts: 1, root };
        gw.wait_ready();
        gw
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    pub fn log(&self) -> String {
        (1..=self.starts).map(|n| std::fs::read_to_string(self.root.0.join(format!("gateway.{n}.log"))).unwrap_or_default()).collect()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + seconds(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the gateway exited ({status}) before answering; its log:\n{}", self.log());
            }
            if self.data_dir.join("url").exists() && self.cli(&["hosts"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the gateway did not answer in time; its log:\n{}", self.log());
    }

    /// `airlock-gateway ARGS --data-dir DIR` (the admin token of this data directory).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(gateway_binary()).args(args).arg("--data-dir").arg(&self.data_dir).output().expect("run airlock-gateway")
    }

    /// The CLI with a given token instead of the data directory's.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(gateway_binary())
            .args(args)
            .args(["--server", &self.url(), "--token", token, "--ca"])
            .arg(self.ca())
            .output()
            .expect("run airlock-gateway")
    }

    /// The CLI's JSON answer; panics with its stderr when it fails.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(out.status.success(), "airlock-gateway {args:?} failed: {}\ngateway log:\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("airlock-gateway {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Prints a token made with `token create ARGS`.
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(out.status.success(), "token create {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `airlock-agent run` arguments that enroll with this gateway.
    pub fn agent_args(&self, join_token: &str, host_id: &str) -> Vec<String> {
        vec![
            "--gateway".into(),
            self.url(),
            "--join-token".into(),
            join_token.into(),
            "--gateway-ca".into(),
            self.ca().display().to_string(),
            "--host-id".into(),
            host_id.into(),
        ]
    }

    /// The Control Room's URL (`DATA_DIR/ui-url`, written once it listens),
    /// without the trailing slash.
    pub fn ui_url(&self) -> String {
        let file = self.data_dir.join("ui-url");
        let deadline = Instant::now() + seconds(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if text.ends_with('\n') {
                    return text.trim().trim_end_matches('/').to_string();
                }
            }
            assert!(Instant::now() < deadline, "the gateway wrote no {}; its log:\n{}", file.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The metrics endpoint's URL (`DATA_DIR/metrics-url`, written once it
    /// listens; `--metrics-listen` must be among the run's arguments).
    pub fn metrics_url(&self) -> String {
        let file = self.data_dir.join("metrics-url");
        let deadline = Instant::now() + seconds(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if text.ends_with('\n') {
                    return text.trim().to_string();
                }
            }
            assert!(Instant::now() < deadline, "the gateway wrote no {}; its log:\n{}", file.display(), self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Control Room user made with `user create --password-stdin`.
    pub fn create_user(&self, username: &str, role: &str, password: &str) {
        use std::io::Write;
        let mut child = Command::new(gateway_binary())
            .args(["user", "create", "--username", username, "--role", role, "--password-stdin", "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run airlock-gateway user create");
        child.stdin.take().expect("its stdin").write_all(format!("{password}\n").as_bytes()).expect("write the password");
        let out = child.wait_with_output().expect("wait for user create");
        assert!(out.status.success(), "user create {username} ({role}): {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The host's row in `hosts --json`.
    pub fn host(&self, host_id: &str) -> Option<Value> {
        let hosts = self.json(&["hosts"]);
        hosts["hosts"].as_array()?.iter().find(|h| h["host_id"] == host_id).cloned()
    }

    /// Waits until `host_id` enforces policy `version`.
    pub fn wait_enforced(&self, host_id: &str, version: u64) -> Value {
        let deadline = Instant::now() + seconds(60);
        loop {
            let host = self.host(host_id);
            if let Some(h) = &host {
                if h["enforced_version"].as_u64() == Some(version) {
                    return h.clone();
                }
            }
            assert!(Instant::now() < deadline, "host {host_id} never enforced version {version}; last: {host:?}\ngateway log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every stored decision of `host_id` (or of every host), oldest first.
    pub fn decisions(&self, host: Option<&str>, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["decisions", "--limit", "1000000", "--json"];
        if let Some(h) = host {
            args.extend(["--host", h]);
        }
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(out.status.success(), "decisions: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON decision")).collect()
    }

    /// SIGKILL, by pid.
    pub fn kill_hard(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the gateway");
        let _ = self.child.wait();
    }

    /// SIGTERM, by pid, and wait.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + seconds(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the gateway again on the same data directory and port.
    pub fn restart(&mut self) {
        assert!(matches!(self.child.try_wait(), Ok(Some(_))), "restart: the gateway still runs");
        self.starts += 1;
        self.child = spawn(&self.root.0, &self.data_dir, self.port, self.database_url.as_deref(), &self.extra, self.starts);
        self.wait_ready();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(root: &Path, data_dir: &Path, port: u16, database_url: Option<&str>, extra: &[String], n: u32) -> Child {
    let log = std::fs::File::create(root.join(format!("gateway.{n}.log"))).expect("create the gateway log");
    let mut cmd = Command::new(gateway_binary());
    cmd.args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data_dir);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.args(extra);
    let config = std::fs::read_to_string(root.join(CONFIG_FILE)).ok();
    if config.is_some() {
        cmd.arg("--config").arg(root.join(CONFIG_FILE));
    }
    // The fleet's tests make denials and floods on purpose; the detectors
    // (and the blocks they place) run only where a test's config asks for them.
    if !config.is_some_and(|c| c.contains("detect_interval")) {
        cmd.args(["--detect-interval", "86400"]);
    }
    cmd.env("AIRLOCK_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().expect("start the gateway")
}
