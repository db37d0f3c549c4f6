//! `cargo xtask bench [--quick]`: what Airlock costs, measured side by side
//! with no agent loaded. Exec and connect storms, audit throughput,
//! daemon memory and CPU, and an agent-like workload; prints tables and writes
//! docs/benchmarks.md.
//!
//! `xtask bench worker ...` is the load generator the bench starts (see worker.rs).
//! `xtask bench gateway [--quick]` measures the fleet gateway instead (see gateway/).

mod daemon;
mod gateway;
mod policy;
mod report;
mod stats;
mod store;
mod storms;
mod sys;
mod throughput;
mod worker;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root};
use daemon::Tools;
use storms::{Config, Listener, Storm, Storms};

/// How much work each benchmark does; `--quick` trades stability for time.
struct Plan {
    mode: &'static str,
    exec: storms::Plan,
    connect: storms::Plan,
    throughput: throughput::Plan,
    workload: workload::Plan,
    /// Decisions in the store section's scratch store.
    store_rows: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            mode: "full",
            exec: storms::Plan { ops: 2_000, rounds: 7, idle: Duration::from_secs(3) },
            connect: storms::Plan { ops: 20_000, rounds: 7, idle: Duration::from_secs(3) },
            throughput: throughput::Plan {
                rates: vec![10_000, 25_000, 50_000, 0],
                duration: Duration::from_secs(5),
                idle: Duration::from_secs(3),
            },
            workload: workload::Plan { rounds: 5, git_iterations: 10 },
            store_rows: 1_000_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            mode: "quick (--quick: fewer operations and rounds, less stable)",
            exec: storms::Plan { ops: 300, rounds: 3, idle: Duration::from_secs(1) },
            connect: storms::Plan { ops: 3_000, rounds: 3, idle: Duration::from_secs(1) },
            throughput: throughput::Plan { rates: vec![50_000, 0], duration: Duration::from_secs(2), idle: Duration::from_secs(1) },
            workload: workload::Plan { rounds: 2, git_iterations: 4 },
            store_rows: 1_000_000,
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("worker") {
        return worker::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("gateway") {
        return gateway::run(&args[1..]);
    }
    let plan = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Plan::full(),
        ["--quick"] => Plan::quick(),
        ["store"] => return store_only(1_000_000),
        ["throughput"] => return throughput_only(),
        ["store", "--rows", n] => return store_only(n.parse().context("--rows N")?),
        other => bail!("usage: cargo xtask bench [--quick] | cargo xtask bench store [--rows N] | {} (got {other:?})", gateway::USAGE),
    };
    if !is_root() {
        bail!("the bench loads eBPF programs and starts Airlock daemons: run it as root");
    }
    let root = workspace_root()?;
    crate::run("build airlock-agent (release)", cargo().args(["build", "--release", "-p", "airlock-agent"]).current_dir(&root))?;
    let store_bench = build_store_bench(&root)?;
    let tools = Tools {
        agent: target_dir(&root).join("release/airlock-agent"),
        xtask: std::env::current_exe().context("find the xtask executable")?,
    };
    storms::wait_no_airlock_programs().context("before the bench")?;

    let started = Instant::now();
    let load_before = sys::load_average();
    let cpu_before = sys::ProcessCpu::take();
    let work = WorkDir::create()?;
    let stats = sys::BpfStatsGuard::enable()?;
    let measured = measure(&tools, &work.0, &plan);
    drop(stats);
    let (exec, connect, throughput, workload) = measured?;
    // The store section needs no kernel: it runs after the BPF measurements, on its own.
    let store = store::run(&store_bench, &work.0, plan.store_rows)?;
    storms::wait_no_airlock_programs().context("after the bench: an Airlock program is still loaded")?;

    let load_after = sys::load_average();
    // The numbers are only as clean as the machine was quiet: name whatever else ran.
    let other_load = sys::ProcessCpu::take().busy_since(&cpu_before, started.elapsed().as_nanos() as u64, 0.05);
    let machine = sys::Machine::describe();
    let report = report::Report {
        machine: &machine,
        backend: &throughput.backend,
        mode: plan.mode,
        load: (&load_before, &load_after),
        other_load: &other_load,
        exec: &exec,
        connect: &connect,
        throughput: &throughput,
        workload: &workload,
        store: &store,
    };
    println!("{}", report.text());
    let doc = root.join("docs/benchmarks.md");
    // The gateway's section (written by `bench gateway`) is kept as it is.
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    let markdown = report::keep_gateway_section(report.markdown(), &old);
    std::fs::write(&doc, markdown).with_context(|| format!("write {}", doc.display()))?;
    eprintln!("==> wrote {} ({:.0} s in all)", doc.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The store section's program, optimized (SQLite's C included) as the daemon is.
fn build_store_bench(root: &Path) -> Result<PathBuf> {
    crate::run("build store-bench (release)", cargo().args(["build", "--release", "-p", "xtask", "--bin", "store-bench"]).current_dir(root))?;
    Ok(target_dir(root).join("release/store-bench"))
}

/// `cargo xtask bench throughput`: the audit throughput section alone, quick
/// plan (50,000/s and full speed), with the decision store's figures.
fn throughput_only() -> Result<()> {
    if !is_root() {
        bail!("the bench loads eBPF programs and starts Airlock daemons: run it as root");
    }
    let root = workspace_root()?;
    crate::run("build airlock-agent (release)", cargo().args(["build", "--release", "-p", "airlock-agent"]).current_dir(&root))?;
    let tools = Tools {
        agent: target_dir(&root).join("release/airlock-agent"),
        xtask: std::env::current_exe().context("find the xtask executable")?,
    };
    let work = WorkDir::create()?;
    let result = throughput::run(&tools, &work.0, &Plan::quick().throughput)?;
    println!("{}", report::throughput_text(&result));
    Ok(())
}

/// `cargo xtask bench store`: the decision store's section alone (no kernel, no root needed).
fn store_only(rows: u64) -> Result<()> {
    let root = workspace_root()?;
    let store_bench = build_store_bench(&root)?;
    let work = WorkDir::create()?;
    let result = store::run(&store_bench, &work.0, rows)?;
    println!("{}", report::store_text(&result));
    Ok(())
}

type Measured = (storms::StormResult, storms::StormResult, throughput::Throughput, workload::WorkloadResult);

fn measure(tools: &Tools, work: &Path, plan: &Plan) -> Result<Measured> {
    let listener = Listener::start()?;
    let storms = Storms { tools, work, listener: &listener };
    let exec_configs = [10, 1_000, 10_000].map(|n| Config::write(Storm::Exec, n, work)).into_iter().collect::<Result<Vec<_>>>()?;
    let connect_configs = [10, 10_000].map(|n| Config::write(Storm::Connect, n, work)).into_iter().collect::<Result<Vec<_>>>()?;
    let exec = storms.run(Storm::Exec, &exec_configs, &plan.exec)?;
    let connect = storms.run(Storm::Connect, &connect_configs, &plan.connect)?;
    let throughput = throughput::run(tools, work, &plan.throughput)?;
    let workload = workload::run(tools, work, &plan.workload)?;
    Ok((exec, connect, throughput, workload))
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// The run's scratch directory (policies, daemon state, the workload project); removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("airlock-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("xtask bench: could not remove {}: {e}", self.0.display());
        }
    }
}
