//! One guest: qemu booting a kernel with the initramfs, the plan it runs
//! (vm-tests/guest.sh reads it) or, for a systemd guest, its own disk and
//! the share its checks run from, and the test results read back from its
//! serial console.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kernel::KernelImage;

/// A guest that has printed nothing new for this long is hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// Reported `ignored (reason)`: it could not check what it tests here.
    Skipped(String),
}

/// One guest to boot: a kernel, a backend's `lsm=` list, and what it runs.
pub struct GuestPlan {
    pub kernel: String,
    pub backend: String,
    pub lsm: String,
    pub image: KernelImage,
    pub initramfs: PathBuf,
    pub kind: GuestKind,
}

/// What a guest boots into and runs.
pub enum GuestKind {
    /// The host's root, read-only over 9p (chroot): the kernel test suites.
    Suites {
        /// (suite name, test executable)
        suites: Vec<(String, PathBuf)>,
        filter: Option<String>,
    },
    /// A Debian root on its own disk with systemd as PID 1: the packaging
    /// checks (vm-tests/systemd/checks.sh), run from a read-only 9p share.
    Systemd { disk: PathBuf, share: PathBuf },
}

impl GuestPlan {
    /// Names its console log, plan and disk: `KERNEL-BACKEND[-systemd]`.
    pub fn label(&self) -> String {
        format!("{}-{}{}", self.kernel, self.backend, self.guest_suffix())
    }

    pub fn guest_suffix(&self) -> &'static str {
        match self.kind {
            GuestKind::Suites { .. } => "",
            GuestKind::Systemd { .. } => "-systemd",
        }
    }

    /// How long it runs, roughly: the suites it runs (a systemd guest's checks count as one).
    pub fn weight(&self) -> usize {
        match &self.kind {
            GuestKind::Suites { suites, .. } => suites.len(),
            GuestKind::Systemd { .. } => 1,
        }
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            GuestKind::Suites { suites, .. } => format!("{} suites", suites.len()),
            GuestKind::Systemd { .. } => "Debian bookworm with systemd as PID 1, the packages' checks".into(),
        }
    }
}

/// One guest's outcome.
pub struct RunResult {
    pub kernel: String,
    pub backend: String,
    /// "" for a 9p guest, "-systemd" for a systemd guest.
    pub guest: &'static str,
    pub tests: BTreeMap<String, Outcome>,
    /// Each test's own time (`suite::test`, seconds), as the harness reports it.
    pub test_seconds: BTreeMap<String, f64>,
    /// Each suite's wall time (seconds), as its `test result:` line reports it, in the order run.
    pub suite_seconds: Vec<(String, f64)>,
    pub failures: String,
    pub exit: Option<i32>,
    pub problem: Option<String>,
    pub seconds: f64,
    pub console_log: PathBuf,
}

impl RunResult {
    pub fn count(&self, outcome: fn(&Outcome) -> bool) -> usize {
        self.tests.values().filter(|o| outcome(o)).count()
    }

    pub fn passed(&self) -> bool {
        self.problem.is_none() && self.exit == Some(0) && !self.tests.is_empty() && !self.tests.values().any(|o| *o == Outcome::Failed)
    }
}

/// KVM only when asked for (AIRLOCK_VM_KVM=1) and present: nested KVM on these
/// machines opens but faults early in the guest, while TCG is slow but sure.
fn kvm_usable() -> bool {
    std::env::var("AIRLOCK_VM_KVM").is_ok_and(|v| v == "1") && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Shell-quotes a value for a plan (single quotes).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The plan guest.sh sources: shell assignments, single-quoted.
fn plan_text(backend: &str, suites: &[(String, PathBuf)], filter: Option<&str>, workspace: &Path) -> String {
    let suites: Vec<String> = suites.iter().map(|(name, exe)| format!("{name}={}", exe.display())).collect();
    format!(
        "WORKSPACE={}\nBACKEND={}\nFILTER={}\nSUITES={}\n",
        quote(&workspace.display().to_string()),
        quote(backend),
        quote(filter.unwrap_or("")),
        quote(&suites.join(" "))
    )
}

/// Boots the guest, runs its plan, and reads the results from the console.
pub fn boot_and_test(plan: &GuestPlan, workspace: &Path, vm_dir: &Path) -> Result<RunResult> {
    let label = plan.label();
    let console_log = vm_dir.join(format!("console-{label}.log"));
    let mut append = format!("console=ttyS0 panic=-1 loglevel=4 lsm={}", plan.lsm);
    let mut guest_args: Vec<String> = Vec::new();
    match &plan.kind {
        GuestKind::Suites { suites, filter } => {
            let plan_path = vm_dir.join(format!("plan-{label}.sh"));
            std::fs::write(&plan_path, plan_text(&plan.backend, suites, filter.as_deref(), workspace))
                .with_context(|| format!("write {}", plan_path.display()))?;
            let guest = workspace.join("vm-tests/guest.sh");
            append.push_str(&format!(" airlock_guest={} airlock_plan={}", guest.display(), plan_path.display()));
            guest_args.extend(["-virtfs".into(), "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap".into()]);
        }
        GuestKind::Systemd { disk, share } => {
            // Only failures in systemd's own status lines: the console carries the checks' results.
            append.push_str(" systemd.show_status=error");
            // The disk is this guest's own copy: nothing outlives the run, so no flushes.
            guest_args.extend(["-drive".into(), format!("file={},format=raw,if=virtio,cache=unsafe", disk.display())]);
            guest_args.extend(["-virtfs".into(), format!("local,path={},mount_tag=airlockchecks,security_model=passthrough,readonly=on", share.display())]);
        }
    }

    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm_usable() {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // One host thread for both vCPUs: with multi-threaded TCG, a vCPU can
        // run a stale int3 while the kernel live-patches an LSM hook for a BPF
        // trampoline (text_poke_bp), and the guest oopses ("Oops: int3" in
        // bpf_lsm_bpf while a set was attached beside another). Round-robin
        // vCPUs still interleave, so the race tests keep their two CPUs.
        cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]);
    }
    cmd.args(["-m", "3072", "-smp", "2", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&plan.image.vmlinuz)
        .arg("-initrd")
        .arg(&plan.initramfs)
        .args(["-append", &append])
        .args(&guest_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let stderr = child.stderr.take().context("qemu's stderr")?;
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    // Lines arrive on a channel so a silent guest can be timed out and killed.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx.send(String::from_utf8_lossy(&line).trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    let mut log = std::fs::File::create(&console_log)?;
    let mut parser = GuestOutput::default();
    let mut problem = None;
    loop {
        match rx.recv_timeout(GUEST_TIMEOUT) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                parser.line(&line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                problem = Some(format!("the guest printed nothing for {} s and was killed", GUEST_TIMEOUT.as_secs()));
                // Our own child, by pid.
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("wait for qemu")?;
    let qemu_err = stderr_thread.join().unwrap_or_default();
    if problem.is_none() {
        if parser.panicked {
            problem = Some("the guest kernel panicked".into());
        } else if parser.exit.is_none() {
            let detail = if qemu_err.is_empty() { String::new() } else { format!(": {}", qemu_err.trim()) };
            problem = Some(format!("the guest stopped before the tests finished (qemu {status}){detail}"));
        }
    }
    Ok(RunResult {
        kernel: plan.kernel.clone(),
        backend: plan.backend.clone(),
        guest: plan.guest_suffix(),
        tests: parser.tests,
        test_seconds: parser.test_seconds,
        suite_seconds: parser.suite_seconds,
        failures: parser.failures,
        exit: parser.exit,
        problem,
        seconds: started.elapsed().as_secs_f64(),
        console_log,
    })
}

/// Reads the test harness's output from the serial console.
#[derive(Default)]
struct GuestOutput {
    tests: BTreeMap<String, Outcome>,
    test_seconds: BTreeMap<String, f64>,
    suite_seconds: Vec<(String, f64)>,
    suite: String,
    failures: String,
    in_failures: bool,
    exit: Option<i32>,
    panicked: bool,
}

impl GuestOutput {
    fn qualified(&self, name: &str) -> String {
        if self.suite.is_empty() {
            name.trim().to_string()
        } else {
            format!("{}::{}", self.suite, name.trim())
        }
    }

    fn line(&mut self, line: &str) {
        // The harness's `test-time: NAME 12.3 s` (stderr), beside libtest's line.
        if let Some(rest) = line.strip_prefix("test-time: ") {
            if let Some((name, secs)) = rest.trim().strip_suffix(" s").and_then(|r| r.rsplit_once(' ')) {
                if let Ok(secs) = secs.parse::<f64>() {
                    let name = self.qualified(name);
                    self.test_seconds.insert(name, secs);
                }
            }
        }
        // `test result: ok. 3 passed; ...; finished in 198.37s`: the suite's wall time.
        if let Some(rest) = line.strip_prefix("test result:") {
            if let Some(secs) = rest.rsplit_once("finished in ").and_then(|(_, t)| t.trim().trim_end_matches('s').parse::<f64>().ok()) {
                let suite = if self.suite.is_empty() { "(suite)".to_string() } else { self.suite.clone() };
                self.suite_seconds.push((suite, secs));
            }
        }
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, outcome)) = rest.rsplit_once(" ... ") {
                let outcome = outcome.trim();
                let outcome = if outcome == "ok" {
                    Some(Outcome::Passed)
                } else if outcome.starts_with("FAILED") {
                    Some(Outcome::Failed)
                } else {
                    outcome.strip_prefix("ignored").map(|reason| Outcome::Skipped(reason.trim().trim_start_matches('(').trim_end_matches(')').to_string()))
                };
                if let Some(outcome) = outcome {
                    let name = self.qualified(name);
                    self.tests.insert(name, outcome);
                }
            }
        }
        if let Some(suite) = line.strip_prefix("AIRLOCK-VM-SUITE=") {
            self.suite = suite.trim().to_string();
        }
        if line == "failures:" {
            self.in_failures = true;
        } else if line.starts_with("test result:") {
            self.in_failures = false;
        }
        if self.in_failures {
            self.failures.push_str(line);
            self.failures.push('\n');
        }
        if let Some(code) = line.strip_prefix("AIRLOCK-VM-EXIT=") {
            self.exit = code.trim().parse().ok();
        }
        if line.contains("Kernel panic - not syncing") {
            self.panicked = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_output_is_read_per_test() {
        let mut g = GuestOutput::default();
        for line in [
            "test a ... ok",
            "AIRLOCK-VM-SUITE=kernel_x",
            "test-time: b 12.5 s",
            "test b                 ... FAILED",
            "test c ... ignored (needs grpcio)",
            "failures:",
            "---- b stdout ----",
            "boom",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 14.20s",
            "AIRLOCK-VM-EXIT=101",
        ] {
            g.line(line);
        }
        assert_eq!(g.test_seconds.get("kernel_x::b"), Some(&12.5));
        assert_eq!(g.suite_seconds, vec![("kernel_x".to_string(), 14.2)]);
        assert_eq!(g.tests.get("a"), Some(&Outcome::Passed));
        assert_eq!(g.tests.get("kernel_x::b"), Some(&Outcome::Failed));
        assert_eq!(g.tests.get("kernel_x::c"), Some(&Outcome::Skipped("needs grpcio".into())));
        assert!(g.failures.contains("boom"));
        assert_eq!(g.exit, Some(101));
    }

    #[test]
    fn the_plan_quotes_what_it_passes() {
        let suites = vec![("kernel_a".to_string(), PathBuf::from("/t/kernel_a-1"))];
        let text = plan_text("lsm", &suites, Some("it's"), Path::new("/w"));
        assert!(text.contains("SUITES='kernel_a=/t/kernel_a-1'") && text.contains(r"FILTER='it'\''s'"), "{text}");
    }
}
