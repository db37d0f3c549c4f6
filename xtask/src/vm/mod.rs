//! `cargo xtask vm-test`: boots Debian's own kernels in qemu and runs the
//! kernel test suites inside them, with the LSM backend (bpf in `lsm=`) and
//! the compat backend. `vm-tests/` holds the guests' init, the kernel matrix
//! and the suites each backend runs.
//!
//! The guest is a busybox initramfs that mounts this machine's root file
//! system read-only over 9p and chroots into it, with fresh tmpfs where tests
//! write. So the guest runs the very binaries `cargo test` built here (built
//! once, with the host run's flags), with the same interpreters the host
//! tests use, on a different kernel. Guests run side by side, one per core:
//! each is single-threaded TCG.
//!
//! Beside them, the systemd guests (`systemd.rs`): a Debian root of their
//! own with systemd as PID 1, where the .deb packages are installed, run as
//! services and purged.

mod guest;
mod kernel;
mod systemd;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{cargo, is_root, phase, run as run_step};
use guest::{GuestKind, GuestPlan, Outcome, RunResult};

/// vm-tests/matrix.toml.
#[derive(Deserialize)]
struct Matrix {
    kernel: Vec<KernelSpec>,
    backend: std::collections::BTreeMap<String, BackendSpec>,
    /// Suites no guest runs unless named with --suite.
    #[serde(default)]
    host_only: Vec<String>,
    /// The systemd guests (the packages under systemd as PID 1).
    systemd: Option<systemd::SystemdSpec>,
}

/// `--suite systemd` (or `--systemd`): only the systemd guests.
const SYSTEMD_SUITE: &str = "systemd";

#[derive(Deserialize, Clone)]
struct KernelSpec {
    name: String,
    /// The apt package the image is resolved from.
    package: String,
}

#[derive(Deserialize, Clone)]
struct BackendSpec {
    /// The kernel's `lsm=` list for this backend.
    lsm: String,
    suites: Suites,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Suites {
    /// "all": every kernel_* suite.
    All(String),
    Named(Vec<String>),
}

struct Options {
    kernels: Vec<String>,
    backends: Vec<String>,
    /// Passed to each test binary: only tests whose name contains it run.
    filter: Option<String>,
    /// Every suite on every backend, whatever the matrix says.
    all_suites: bool,
    /// Guests booted at once.
    jobs: usize,
    /// Only these suites (`--suite`, repeatable), whatever the matrix says.
    suites: Vec<String>,
    /// Only the systemd guests (`--systemd`, `--suite systemd`).
    systemd_only: bool,
}

impl Options {
    /// The kernel suite guests run unless only the systemd guests were asked for.
    fn kernel_guests(&self) -> bool {
        !self.systemd_only || !self.suites.is_empty()
    }

    /// The systemd guests run by default and when asked for; not when
    /// particular kernel suites or tests were named.
    fn systemd_guests(&self) -> bool {
        self.systemd_only || (self.suites.is_empty() && self.filter.is_none())
    }
}

fn parse(args: &[String], matrix: &Matrix) -> Result<Options> {
    let all_kernels: Vec<String> = matrix.kernel.iter().map(|k| k.name.clone()).collect();
    let all_backends: Vec<String> = matrix.backend.keys().cloned().collect();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut o = Options {
        kernels: all_kernels.clone(),
        backends: all_backends.clone(),
        filter: None,
        all_suites: std::env::var("AIRLOCK_VM_ALL_SUITES").is_ok_and(|v| v == "1"),
        jobs: std::env::var("AIRLOCK_VM_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(cores).max(1),
        suites: Vec::new(),
        systemd_only: false,
    };
    let usage = format!(
        "usage: cargo xtask vm-test [--kernel {}|all] [--backend {}|both] [--suite SUITE|systemd]... [--systemd] [--filter NAME] [--all-suites] [--jobs N]",
        all_kernels.join("|"),
        all_backends.join("|")
    );
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => {
                let v = it.next().with_context(|| usage.clone())?;
                o.kernels = if v == "all" { all_kernels.clone() } else { vec![v.clone()] };
                if !o.kernels.iter().all(|k| all_kernels.contains(k)) {
                    bail!("unknown kernel {v:?}\n{usage}");
                }
            }
            "--backend" => {
                let v = it.next().with_context(|| usage.clone())?;
                o.backends = if v == "both" { all_backends.clone() } else { vec![v.clone()] };
                if !o.backends.iter().all(|b| all_backends.contains(b)) {
                    bail!("unknown backend {v:?}\n{usage}");
                }
            }
            "--all-suites" => o.all_suites = true,
            "--suite" => {
                let v = it.next().with_context(|| usage.clone())?;
                if v == SYSTEMD_SUITE {
                    o.systemd_only = true;
                } else {
                    o.suites.push(v.clone());
                }
            }
            "--systemd" => o.systemd_only = true,
            "--filter" => o.filter = Some(it.next().with_context(|| usage.clone())?.clone()),
            "--jobs" => o.jobs = it.next().with_context(|| usage.clone())?.parse::<usize>().context("--jobs N")?.max(1),
            other => bail!("unknown argument {other:?}\n{usage}"),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let workspace = workspace_root()?;
    let matrix_path = workspace.join("vm-tests/matrix.toml");
    let matrix: Matrix = toml::from_str(&std::fs::read_to_string(&matrix_path).with_context(|| format!("read {}", matrix_path.display()))?)
        .with_context(|| format!("{} is not a valid matrix", matrix_path.display()))?;
    let opts = parse(args, &matrix)?;
    if let Some(spec) = &matrix.systemd {
        let kernels: Vec<String> = matrix.kernel.iter().map(|k| k.name.clone()).collect();
        let backends: Vec<String> = matrix.backend.keys().cloned().collect();
        systemd::validate(spec, &kernels, &backends)?;
    }
    if opts.systemd_only && matrix.systemd.is_none() {
        bail!("{} has no [systemd] section: there are no systemd guests", matrix_path.display());
    }
    if !is_root() {
        bail!("vm-test installs packages and extracts kernels: run as root");
    }
    let vm_dir = workspace.join("target/vm");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("create {}", vm_dir.display()))?;
    ensure_host_tools(matrix.systemd.is_some() && opts.systemd_guests())?;

    let prepare = Instant::now();
    let suites = if opts.kernel_guests() { build_test_suites()? } else { Vec::new() };
    if let Some(unknown) = opts.suites.iter().find(|want| !suites.iter().any(|(name, _)| name == *want)) {
        bail!("no kernel suite named {unknown:?}; the suites: {}", suites.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "));
    }
    let busybox = kernel::find_busybox()?;
    for (name, exe) in &suites {
        eprintln!("==> guest test suite {name}: {}", exe.display());
    }
    let mut plans = Vec::new();
    for spec in matrix.kernel.iter().filter(|k| opts.kernels.contains(&k.name) && opts.kernel_guests()) {
        let image = kernel::prepare_kernel(&spec.package, &vm_dir)?;
        let initramfs = kernel::build_initramfs(&image, &busybox, &vm_dir)?;
        for (backend, b) in matrix.backend.iter().filter(|(name, _)| opts.backends.contains(name)) {
            let chosen: Vec<(String, PathBuf)> = suites
                .iter()
                .filter(|(name, _)| opts.suites.is_empty() || opts.suites.contains(name))
                .filter(|(name, _)| opts.suites.contains(name) || !matrix.host_only.contains(name))
                .filter(|(name, _)| {
                    !opts.suites.is_empty()
                        || opts.all_suites
                        || opts.filter.is_some()
                        || match &b.suites {
                            Suites::All(all) => all == "all",
                            Suites::Named(list) => list.contains(name),
                        }
                })
                .cloned()
                .collect();
            plans.push(GuestPlan {
                kernel: spec.name.clone(),
                backend: backend.clone(),
                lsm: b.lsm.clone(),
                image: image.clone(),
                initramfs: initramfs.clone(),
                kind: GuestKind::Suites { suites: chosen, filter: opts.filter.clone() },
            });
        }
    }
    if let Some(spec) = matrix.systemd.as_ref().filter(|s| opts.systemd_guests() && opts.kernels.contains(&s.kernel)) {
        plans.extend(systemd_plans(spec, &matrix, &opts, &busybox, &vm_dir)?);
    }
    if plans.is_empty() {
        bail!("no guest matches these options (the systemd guests run kernel {})", matrix.systemd.as_ref().map(|s| s.kernel.as_str()).unwrap_or("-"));
    }
    phase("vm-test: build the suites and packages, prepare the kernels and roots", prepare.elapsed());

    // The longest guests first (the most suites), so the last to start is a short one.
    plans.sort_by(|a, b| b.weight().cmp(&a.weight()).then(a.kernel.cmp(&b.kernel)));
    let guests = Instant::now();
    let jobs = opts.jobs.min(plans.len()).max(1);
    eprintln!("==> booting {} guests, {jobs} at a time", plans.len());
    let results = run_guests(plans, jobs, &workspace, &vm_dir)?;
    phase("vm-test: guests", guests.elapsed());

    print_times(&results);
    print_table(&results);
    let count = |f: fn(&Outcome) -> bool| results.iter().map(|r| r.count(f)).sum::<usize>();
    let (pass, fail, skipped) = (count(|o| *o == Outcome::Passed), count(|o| *o == Outcome::Failed), count(|o| matches!(o, Outcome::Skipped(_))));
    println!("vm-tests: {pass} passed, {fail} failed, {skipped} skipped");
    let failed: Vec<String> = results.iter().filter(|r| !r.passed()).map(|r| format!("{} {}{}", r.kernel, r.backend, r.guest)).collect();
    if !failed.is_empty() {
        bail!("vm-tests failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// The systemd guests of the matrix's `[systemd]`: the root image (built once
/// per recipe), the packages, and per backend a disk and a share.
fn systemd_plans(spec: &systemd::SystemdSpec, matrix: &Matrix, opts: &Options, busybox: &Path, vm_dir: &Path) -> Result<Vec<GuestPlan>> {
    let kernel_spec = matrix.kernel.iter().find(|k| k.name == spec.kernel).context("the [systemd] kernel is in the matrix (validated)")?;
    let image = kernel::prepare_kernel(&kernel_spec.package, vm_dir)?;
    let initramfs = systemd::initramfs(&image, busybox, vm_dir)?;
    let root = systemd::root_image(spec, vm_dir)?;
    let (agent, gateway) = systemd::build_packages(vm_dir)?;
    let mut plans = Vec::new();
    for backend in spec.backends.iter().filter(|b| opts.backends.contains(b)) {
        let lsm = matrix.backend.get(backend).map(|b| b.lsm.clone()).context("the [systemd] backend is in the matrix (validated)")?;
        let label = format!("{}-{backend}-systemd", spec.kernel);
        let (disk, share) = systemd::prepare_guest(&label, backend, &root, &[agent.clone(), gateway.clone()], vm_dir)?;
        plans.push(GuestPlan {
            kernel: spec.kernel.clone(),
            backend: backend.clone(),
            lsm,
            image: image.clone(),
            initramfs: initramfs.clone(),
            kind: GuestKind::Systemd { disk, share },
        });
    }
    Ok(plans)
}

/// Boots the guests, `jobs` at a time, and reports each as it finishes.
fn run_guests(plans: Vec<GuestPlan>, jobs: usize, workspace: &Path, vm_dir: &Path) -> Result<Vec<RunResult>> {
    let queue = Mutex::new(plans.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some(plan) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { break };
                eprintln!("==> booting Debian {} ({}) with the {} backend: {}", plan.kernel, plan.image.version, plan.backend, plan.describe());
                match guest::boot_and_test(&plan, workspace, vm_dir) {
                    Ok(result) => {
                        report_one(&result);
                        results.lock().unwrap_or_else(|p| p.into_inner()).push(result);
                    }
                    Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {e:#}", plan.label())),
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if !errors.is_empty() {
        bail!("guests could not run:\n{}", errors.join("\n"));
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by(|a, b| (&a.kernel, &a.backend, a.guest).cmp(&(&b.kernel, &b.backend, b.guest)));
    Ok(results)
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().context("xtask lives inside the workspace")?;
    Ok(root.to_path_buf())
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn ensure_host_tools(systemd_guests: bool) -> Result<()> {
    let mut wanted = vec![("qemu-system-x86_64", "qemu-system-x86"), ("xz", "xz-utils"), ("dpkg-deb", "dpkg")];
    if systemd_guests {
        wanted.extend([("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs")]);
    }
    let missing: Vec<&str> = wanted.iter().filter(|(tool, _)| !have(tool)).map(|(_, pkg)| *pkg).collect();
    if !missing.is_empty() {
        eprintln!("==> installing {}", missing.join(" "));
        run_step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
        run_step("apt-get install", Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// The kernel test suites (airlock-agent's `kernel_*` tests), from the same
/// build `cargo xtask test` made: the same command and flags, so nothing is
/// rebuilt.
fn build_test_suites() -> Result<Vec<(String, PathBuf)>> {
    eprintln!("==> the kernel test suites (built once, with the host run's flags)");
    let out = cargo()
        .args(crate::test::TEST_ARGS)
        .args(["--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel tests failed");
    }
    let mut suites = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let is_test_target = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] == "compiler-artifact" && is_test_target && name.starts_with("kernel_") {
            if let Some(exe) = msg["executable"].as_str() {
                suites.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    if suites.is_empty() {
        bail!("cargo reported no kernel_* test executable for airlock-agent");
    }
    suites.sort();
    Ok(suites)
}

fn report_one(r: &RunResult) {
    let label = format!("{} {}{}", r.kernel, r.backend, r.guest);
    for (name, outcome) in &r.tests {
        let took = r.test_seconds.get(name).map(|s| format!(" ({s:.1} s)")).unwrap_or_default();
        match outcome {
            Outcome::Passed => println!("  [{label}] {name} ... ok{took}"),
            Outcome::Failed => println!("  [{label}] {name} ... FAILED{took}"),
            Outcome::Skipped(why) => println!("  [{label}] {name} ... SKIPPED ({why}){took}"),
        }
    }
    if !r.failures.is_empty() {
        println!("{}", r.failures);
    }
    if let Some(p) = &r.problem {
        println!("  [{label}] PROBLEM: {p}");
    }
    // A systemd guest's console is its checks' transcript (and systemd's errors): all of it.
    if !r.guest.is_empty() && !r.passed() {
        println!("  [{label}] the guest's transcript ({}):", r.console_log.display());
        match std::fs::read_to_string(&r.console_log) {
            Ok(text) => text.lines().for_each(|l| println!("  [{label}] | {l}")),
            Err(e) => println!("  [{label}] (cannot read it: {e})"),
        }
    }
    println!("  [{label}] {:.0} s; console log: {}", r.seconds, r.console_log.display());
}

/// How many of each guest's slowest tests the summary lists.
const SLOWEST: usize = 10;

/// Where each guest's time went: each suite's wall time (libtest's
/// `finished in`) and the sum of its tests' own times (more than the wall
/// time where tests ran side by side), then the guest's slowest tests.
fn print_times(results: &[RunResult]) {
    for r in results {
        let label = format!("{} {}{}", r.kernel, r.backend, r.guest);
        if r.suite_seconds.is_empty() && r.test_seconds.is_empty() {
            continue;
        }
        println!();
        println!("{label}: time per suite (wall; sum of its tests' times)");
        let mut wall_total = 0.0;
        for (suite, wall) in &r.suite_seconds {
            let prefix = format!("{suite}::");
            let (sum, n) = r.test_seconds.iter().filter(|(name, _)| name.starts_with(&prefix)).fold((0.0, 0), |(s, n), (_, t)| (s + t, n + 1));
            println!("  {suite:<28} {wall:>7.0} s  ({n} tests, {sum:.0} s)");
            wall_total += wall;
        }
        println!("  {:<28} {wall_total:>7.0} s of the guest's {:.0} s (the rest: boot, set-up)", "suites", r.seconds);
        let mut slowest: Vec<(&String, &f64)> = r.test_seconds.iter().collect();
        slowest.sort_by(|a, b| b.1.total_cmp(a.1));
        println!("{label}: the {} slowest tests", SLOWEST.min(slowest.len()));
        for (name, secs) in slowest.into_iter().take(SLOWEST) {
            println!("  {secs:>7.1} s  {name}");
        }
    }
}

fn print_table(results: &[RunResult]) {
    println!();
    println!("| kernel | backend | guest | passed | failed | skipped | guest exit | time (s) |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let exit = match (&r.problem, r.exit) {
            (Some(p), _) => p.clone(),
            (None, Some(code)) => code.to_string(),
            (None, None) => "none".into(),
        };
        let guest = if r.guest.is_empty() { "host root (9p), kernel suites" } else { "bookworm, systemd PID 1" };
        println!(
            "| {} | {} | {guest} | {} | {} | {} | {exit} | {:.0} |",
            r.kernel,
            r.backend,
            r.count(|o| *o == Outcome::Passed),
            r.count(|o| *o == Outcome::Failed),
            r.count(|o| matches!(o, Outcome::Skipped(_))),
            r.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_in_vm_tests_reads() {
        let text = std::fs::read_to_string(workspace_root().unwrap().join("vm-tests/matrix.toml")).expect("matrix.toml");
        let m: Matrix = toml::from_str(&text).expect("valid");
        assert!(m.kernel.len() >= 2 && m.backend.contains_key("lsm") && m.backend.contains_key("compat"));
        assert!(matches!(&m.backend["lsm"].suites, Suites::All(a) if a == "all"));
        let o = parse(&["--kernel".into(), "6.1".into(), "--jobs".into(), "2".into()], &m).expect("parse");
        assert_eq!((o.kernels, o.jobs), (vec!["6.1".to_string()], 2));
        assert!(parse(&["--kernel".into(), "5.4".into()], &m).is_err());
        let spec = m.systemd.as_ref().expect("the matrix has systemd guests");
        let kernels: Vec<String> = m.kernel.iter().map(|k| k.name.clone()).collect();
        let backends: Vec<String> = m.backend.keys().cloned().collect();
        systemd::validate(spec, &kernels, &backends).expect("a valid [systemd]");
    }

    #[test]
    fn systemd_guests_run_by_default_alone_on_request_and_not_for_named_suites() {
        let text = std::fs::read_to_string(workspace_root().unwrap().join("vm-tests/matrix.toml")).expect("matrix.toml");
        let m: Matrix = toml::from_str(&text).expect("valid");
        let o = parse(&[], &m).unwrap();
        assert!(o.kernel_guests() && o.systemd_guests());
        for only in [vec!["--systemd".to_string()], vec!["--suite".into(), "systemd".into()]] {
            let o = parse(&only, &m).unwrap();
            assert!(!o.kernel_guests() && o.systemd_guests(), "{only:?}");
        }
        let o = parse(&["--suite".into(), "kernel_guard".into()], &m).unwrap();
        assert!(o.kernel_guests() && !o.systemd_guests());
        let o = parse(&["--filter".into(), "blocked".into()], &m).unwrap();
        assert!(!o.systemd_guests());
    }
}
