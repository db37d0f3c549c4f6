//! `cargo xtask bench gateway [--quick]`: the fleet gateway under a thousand
//! simulated agents, on SQLite and on PostgreSQL, in one run. xtask builds
//! `airlock-gateway` and `gateway-bench` in release, starts the gateway,
//! runs gateway-bench against it (the agents, the policy push, the filled
//! store's queries), samples the gateway from /proc at the client's marks,
//! stops it, and writes its section of docs/benchmarks.md. The figures are
//! reported, never asserted.

mod process;
mod render;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{target_dir, workspace_root, WorkDir};
use crate::cargo;
use process::{Gateway, Sample};

pub const USAGE: &str = "cargo xtask bench gateway [--quick]";

/// How much each part does; `--quick` is shorter and uses a smaller store.
pub struct Plan {
    pub mode: &'static str,
    pub agents: u64,
    pub rate: u64,
    pub seconds: u64,
    pub idle_seconds: u64,
    pub batch_ms: u64,
    pub rows: u64,
    pub runs: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan { mode: "full", agents: 1_000, rate: 20_000, seconds: 30, idle_seconds: 15, batch_ms: 200, rows: 10_000_000, runs: 20 }
    }

    fn quick() -> Plan {
        Plan {
            mode: "quick (--quick: 10 s of load, 1,000,000 stored decisions instead of 10,000,000)",
            agents: 1_000,
            rate: 20_000,
            seconds: 10,
            idle_seconds: 10,
            batch_ms: 200,
            rows: 1_000_000,
            runs: 20,
        }
    }
}

pub struct BackendResult {
    pub store: &'static str,
    pub fleet: Value,
    pub marks: HashMap<String, Sample>,
    pub fill: Value,
    pub query: Value,
    /// How the gateway ended, if not as asked.
    pub notes: Vec<String>,
}

struct Tools {
    gateway: PathBuf,
    bench: PathBuf,
    policies: PathBuf,
}

pub fn run(args: &[String]) -> Result<()> {
    let plan = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Plan::full(),
        ["--quick"] => Plan::quick(),
        other => bail!("usage: {USAGE} (got {other:?})"),
    };
    let root = workspace_root()?;
    crate::run("build airlock-gateway (release)", cargo().args(["build", "--release", "-p", "airlock-gateway"]).current_dir(&root))?;
    crate::run("build gateway-bench (release)", cargo().args(["build", "--release", "-p", "xtask", "--bin", "gateway-bench"]).current_dir(&root))?;
    let release = target_dir(&root).join("release");
    let tools = Tools { gateway: release.join("airlock-gateway"), bench: release.join("gateway-bench"), policies: root.join("policies") };
    // The gateway inherits the limit: a thousand agents' sockets plus its own.
    raise_nofile();

    let started = Instant::now();
    let work = WorkDir::create()?;
    let cluster = airlock_gateway_store::testing::PgCluster::launch().map_err(|e| anyhow::anyhow!("PostgreSQL for the bench: {e}"))?;
    let mut results = Vec::new();
    for store in ["SQLite", "PostgreSQL"] {
        let pg = (store == "PostgreSQL").then_some(&cluster);
        results.push(one_store(&tools, &work.0, &plan, store, pg)?);
    }
    drop(cluster);
    let elapsed = started.elapsed();
    let machine = super::sys::Machine::describe();
    let report = render::Report { machine: &machine, plan: &plan, results: &results, elapsed };
    println!("{}", report.text());
    let doc = root.join("docs/benchmarks.md");
    render::write_section(&doc, &report.markdown())?;
    eprintln!("==> wrote the gateway section of {} ({:.0} s in all)", doc.display(), elapsed.as_secs_f64());
    Ok(())
}

fn one_store(tools: &Tools, work: &Path, plan: &Plan, store: &'static str, pg: Option<&airlock_gateway_store::testing::PgCluster>) -> Result<BackendResult> {
    let tag = store.to_ascii_lowercase();
    let database = |what: &str| -> Result<Option<String>> {
        pg.map(|c| c.fresh_database().map_err(|e| anyhow::anyhow!("a PostgreSQL database for the {what}: {e}"))).transpose()
    };
    let pg_port = pg.map(|c| c.port());

    eprintln!("==> {store}: {} agents, {} decisions/s for {} s", plan.agents, plan.rate, plan.seconds);
    let dir = work.join(format!("{tag}-fleet"));
    let url = database("fleet run")?;
    let mut gateway = Gateway::start(&tools.gateway, &dir, url.as_deref(), false, &work.join(format!("{tag}-fleet.log")))?;
    let mut args = client_args("fleet", &gateway)?;
    args.extend(
        [
            ("agents", plan.agents.to_string()),
            ("rate", plan.rate.to_string()),
            ("seconds", plan.seconds.to_string()),
            ("idle-seconds", plan.idle_seconds.to_string()),
            ("batch-ms", plan.batch_ms.to_string()),
            ("policies", tools.policies.display().to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [format!("--{k}"), v]),
    );
    let outcome = process::run_bench(&tools.bench, &args, Some(&mut gateway), pg_port);
    let stopped = gateway.stop()?;
    let run = outcome?;
    let mut notes: Vec<String> = [run.gateway_exit.clone(), stopped].into_iter().flatten().map(|n| format!("{store}, fleet run: {n}")).collect();
    let (fleet, marks) = (run.result, run.marks);
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!("==> {store}: {} decisions into a fresh store, then QueryDecisions and the Control Room's pages", plan.rows);
    let dir = work.join(format!("{tag}-query"));
    let url = database("query run")?;
    let mut fill_args = vec!["fill".to_string(), "--rows".into(), plan.rows.to_string(), "--data-dir".into(), dir.display().to_string()];
    if let Some(url) = &url {
        fill_args.extend(["--database-url".to_string(), url.clone()]);
    }
    let fill = process::run_bench(&tools.bench, &fill_args, None, None)?.result;
    let mut gateway = Gateway::start(&tools.gateway, &dir, url.as_deref(), true, &work.join(format!("{tag}-query.log")))?;
    let mut args = client_args("query", &gateway)?;
    let number = |key: &str| fill[key].as_i64().map(|v| v.to_string()).with_context(|| format!("the fill's report has no {key}"));
    args.extend(["--runs".to_string(), plan.runs.to_string(), "--t0-ns".into(), number("t0_ns")?, "--end-ns".into(), number("end_ns")?]);
    args.extend(["--ui-url".to_string(), gateway.ui_url()?]);
    let outcome = process::run_bench(&tools.bench, &args, Some(&mut gateway), None);
    let stopped = gateway.stop()?;
    let run = outcome?;
    notes.extend([run.gateway_exit, stopped].into_iter().flatten().map(|n| format!("{store}, query run: {n}")));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(BackendResult { store, fleet, marks, fill, query: run.result, notes })
}

/// The flags every client run needs: the gateway's URL, CA and admin token.
fn client_args(command: &str, gateway: &Gateway) -> Result<Vec<String>> {
    Ok(vec![
        command.to_string(),
        "--url".into(),
        gateway.url()?,
        "--ca".into(),
        gateway.dir.join("ca.pem").display().to_string(),
        "--token-file".into(),
        gateway.dir.join("admin.token").display().to_string(),
    ])
}

fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
