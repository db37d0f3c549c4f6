//! For tests (this crate's and the gateway's): a temporary PostgreSQL cluster
//! from the server binaries installed on the machine, and a way to say
//! "skipped" when there are none (unless `AIRLOCK_REQUIRE_POSTGRES=1`, where
//! that is a failure: CI must not pass by skipping).
//!
//! One shared cluster per test process ([`shared`]) serves every test a fresh
//! database ([`postgres_database`]); a test that stops the server launches its
//! own ([`PgCluster::launch`]). A watchdog process stops each cluster and
//! removes its directory when the test process is gone, however it ended.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::StoreError;
use crate::store::GatewayStore;

/// Set to 1: a test that needs PostgreSQL fails rather than skips without it.
pub const REQUIRE_POSTGRES: &str = "AIRLOCK_REQUIRE_POSTGRES";

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL's programs run as the `postgres` user.
    as_postgres: bool,
}

/// The newest installed server's bin directory.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("AIRLOCK_PG_BINDIR") {
        let bin = PathBuf::from(dir);
        if !bin.join("initdb").exists() {
            return Err(format!("AIRLOCK_PG_BINDIR={} has no initdb", bin.display()));
        }
        return Ok(bin);
    }
    let base = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(base).map_err(|e| format!("no PostgreSQL server installed ({}: {e})", base.display()))?;
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries.flatten() {
        let Some(version) = entry.file_name().to_str().and_then(|n| n.split('.').next()?.parse::<u32>().ok()) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("initdb").exists() && bin.join("pg_ctl").exists() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| format!("no PostgreSQL server binaries (initdb, pg_ctl) under {}", base.display()))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn output(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
    }
}

impl PgCluster {
    /// Makes and starts a new cluster with a database `airlock`; `Err` says
    /// why PostgreSQL is not available here.
    pub fn launch() -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let as_postgres = is_root();
        if as_postgres {
            output(
                {
                    let mut c = Command::new("id");
                    c.args(["-u", "postgres"]);
                    c
                },
                "find the postgres user (initdb refuses to run as root)",
            )?;
        }
        let base = if as_postgres { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        let nanos = crate::db::now_ns();
        let root = base.join(format!("airlock-pg-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).map_err(|e| format!("create {}: {e}", socket_dir.display()))?;
        let cluster = PgCluster { bin, data: root.join("data"), root, socket_dir, port: free_port()?, as_postgres };
        cluster.watchdog();
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(&cluster.root);
            output(chown, "chown the cluster directory to postgres")?;
        }
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.data).args(["-A", "trust", "-U", "airlock", "-E", "UTF8", "--locale=C", "-N"]);
        output(initdb, "initdb")?;
        cluster.start()?;
        cluster.create_database("airlock")?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Stops the cluster and removes its directory once this process is gone.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let runner = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runner}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data.display(),
            root = self.root.display(),
        );
        let _ = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// postgresql://airlock@127.0.0.1:PORT/airlock
    pub fn url(&self) -> String {
        self.url_for("airlock")
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgresql://airlock@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again, after [`stop`](Self::stop)) on the same port.
    pub fn start(&self) -> Result<(), String> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                self.port,
                self.socket_dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        output(pg_ctl, "pg_ctl start")
    }

    /// Stops the server; its sessions are closed.
    pub fn stop(&self) -> Result<(), String> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]);
        output(pg_ctl, "pg_ctl stop")
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "airlock", name]);
        output(createdb, &format!("createdb {name}"))?;
        Ok(self.url_for(name))
    }

    /// A database no other test of this process uses.
    pub fn fresh_database(&self) -> Result<String, String> {
        self.create_database(&format!("t_{}", COUNTER.fetch_add(1, Ordering::Relaxed)))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = pg_ctl.status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The process's cluster, launched on first use.
pub fn shared() -> Result<&'static PgCluster, String> {
    static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    SHARED.get_or_init(PgCluster::launch).as_ref().map_err(Clone::clone)
}

/// Is PostgreSQL required (a missing one fails the test)?
pub fn postgres_required() -> bool {
    std::env::var(REQUIRE_POSTGRES).is_ok_and(|v| v.trim() == "1")
}

/// Reports a test skipped for want of PostgreSQL; panics instead when it is required.
pub fn skip(test: &str, reason: &str) {
    if postgres_required() {
        panic!("{test}: PostgreSQL is unavailable and {REQUIRE_POSTGRES}=1: {reason}");
    }
    eprintln!("skipped: {test} ({reason})");
}

/// A fresh database on the shared cluster, or `None` after reporting the
/// test skipped (see [`skip`]).
pub fn postgres_database(test: &str) -> Option<String> {
    match shared().and_then(PgCluster::fresh_database) {
        Ok(url) => Some(url),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// Runs raw SQL on the store's database (to set up what the API cannot make,
/// such as a schema from a newer version).
pub async fn execute_sql(store: &GatewayStore, sql: &str) -> Result<u64, StoreError> {
    store.db.execute(sql, Vec::new()).await
}

/// The first column of the first row of raw SQL, as an integer.
pub async fn query_int(store: &GatewayStore, sql: &str) -> Result<i64, StoreError> {
    let row = store.db.query_opt(sql, Vec::new()).await?;
    row.ok_or_else(|| StoreError::other(format!("no row from {sql}")))?.int(0)
}
