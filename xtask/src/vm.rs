//! `cargo xtask vm-test`: boots Debian's own kernels in qemu and runs the
//! kernel test suite inside them, with the LSM backend (bpf in `lsm=`) and the
//! compat backend (without it).
//!
//! The guest is a busybox initramfs that mounts this machine's root file
//! system read-only over 9p and chroots into it, with fresh tmpfs where tests
//! write. So the guest runs the very binaries `cargo test` built here, with
//! the same interpreters the host tests use, on a different kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run as run_step};

/// A Debian kernel: the meta package apt resolves to the current image.
struct KernelSpec {
    name: &'static str,
    meta_package: &'static str,
}

const KERNELS: &[KernelSpec] = &[
    KernelSpec { name: "6.1", meta_package: "linux-image-amd64" },
    KernelSpec { name: "6.12", meta_package: "linux-image-6.12-amd64" },
];

/// What the guest needs from the kernel's modules to mount the host over 9p.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

const LSM_WITH_BPF: &str = "lockdown,capability,landlock,bpf";
const LSM_WITHOUT_BPF: &str = "lockdown,capability,landlock";

/// A guest that has printed nothing new for this long is hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Backend {
    Lsm,
    Compat,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Lsm => "lsm",
            Backend::Compat => "compat",
        }
    }
}

struct Options {
    kernels: Vec<&'static KernelSpec>,
    backends: Vec<Backend>,
    /// Passed to each test binary: only tests whose name contains it run.
    filter: Option<String>,
    /// Run every suite on the compat backend too (default: the core suite only).
    all_compat_suites: bool,
}

/// The suite a compat guest runs by default. The compat backend runs every
/// suite on the host's own kernel (`cargo xtask test`); the guests add the
/// older kernels for the core suite, and the LSM backend, which the host
/// cannot load, for every suite. All suites on both backends take TCG more
/// than an hour on two cores.
const COMPAT_CORE_SUITE: &str = "kernel_enforcement";

/// A kernel test suite: an airlock-agent integration test named `kernel_*`.
struct TestSuite {
    name: String,
    executable: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut kernels: Vec<&KernelSpec> = KERNELS.iter().collect();
    let mut backends = vec![Backend::Lsm, Backend::Compat];
    let mut filter = None;
    let mut all_compat_suites = std::env::var("AIRLOCK_VM_ALL_SUITES").is_ok_and(|v| v == "1");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => {
                let v = it.next().context("--kernel needs 6.1, 6.12 or all")?;
                kernels = match v.as_str() {
                    "all" => KERNELS.iter().collect(),
                    name => vec![KERNELS.iter().find(|k| k.name == name).with_context(|| format!("unknown kernel {name:?}; use 6.1, 6.12 or all"))?],
                };
            }
            "--backend" => {
                let v = it.next().context("--backend needs lsm, compat or both")?;
                backends = match v.as_str() {
                    "lsm" => vec![Backend::Lsm],
                    "compat" => vec![Backend::Compat],
                    "both" => vec![Backend::Lsm, Backend::Compat],
                    other => bail!("unknown backend {other:?}; use lsm, compat or both"),
                };
            }
            "--all-suites" => all_compat_suites = true,
            "--filter" => filter = Some(it.next().context("--filter needs a test name substring")?.clone()),
            other => bail!("unknown argument {other:?}; usage: cargo xtask vm-test [--kernel 6.1|6.12|all] [--backend lsm|compat|both] [--filter NAME] [--all-suites]"),
        }
    }
    Ok(Options { kernels, backends, filter, all_compat_suites })
}

/// One guest run's outcome.
struct RunResult {
    kernel: &'static str,
    backend: Backend,
    tests: BTreeMap<String, bool>,
    failures: String,
    exit: Option<i32>,
    problem: Option<String>,
    seconds: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if !is_root() {
        bail!("vm-test installs packages and extracts kernels: run as root");
    }
    let workspace = workspace_root()?;
    let vm_dir = workspace.join("target/vm");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("create {}", vm_dir.display()))?;
    ensure_host_tools()?;

    let suites = build_test_suites()?;
    let busybox = find_busybox()?;
    for suite in &suites {
        eprintln!("==> guest test suite {}: {}", suite.name, suite.executable.display());
    }

    let mut results = Vec::new();
    for kernel in &opts.kernels {
        let image = prepare_kernel(kernel, &vm_dir)?;
        let initramfs = build_initramfs(&image, &busybox, &vm_dir)?;
        for backend in &opts.backends {
            eprintln!("==> booting Debian {} ({}) with the {} backend", kernel.name, image.version, backend.name());
            let guest_suites: Vec<&TestSuite> = suites
                .iter()
                .filter(|s| *backend == Backend::Lsm || opts.all_compat_suites || opts.filter.is_some() || s.name == COMPAT_CORE_SUITE)
                .collect();
            let result = boot_and_test(kernel.name, *backend, &image, &initramfs, &guest_suites, opts.filter.as_deref(), &workspace, &vm_dir)?;
            report_one(&result);
            results.push(result);
        }
    }
    print_table(&results);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !passed(r))
        .map(|r| format!("{} {}", r.kernel, r.backend.name()))
        .collect();
    let (pass, fail) = results.iter().fold((0, 0), |(p, f), r| {
        (p + r.tests.values().filter(|ok| **ok).count(), f + r.tests.values().filter(|ok| !**ok).count())
    });
    println!("vm-tests: {pass} passed, {fail} failed");
    if !failed.is_empty() {
        bail!("vm-tests failed on: {}", failed.join(", "));
    }
    Ok(())
}

fn passed(r: &RunResult) -> bool {
    r.problem.is_none() && r.exit == Some(0) && !r.tests.is_empty() && r.tests.values().all(|ok| *ok)
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().context("xtask lives inside the workspace")?;
    Ok(root.to_path_buf())
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn ensure_host_tools() -> Result<()> {
    let wanted = [("qemu-system-x86_64", "qemu-system-x86"), ("xz", "xz-utils"), ("dpkg-deb", "dpkg")];
    let missing: Vec<&str> = wanted.iter().filter(|(tool, _)| !have(tool)).map(|(_, pkg)| *pkg).collect();
    if !missing.is_empty() {
        eprintln!("==> installing {}", missing.join(" "));
        run_step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
        run_step("apt-get install", Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn find_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(p);
        if path.exists() {
            let out = Command::new("file").arg(path).output();
            // Only a static busybox runs in the initramfs before anything is mounted.
            if out.map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked")).unwrap_or(true) {
                return Ok(path.to_path_buf());
            }
        }
    }
    bail!("no static busybox found: apt-get install busybox-static")
}

/// Builds every kernel test suite (airlock-agent's `kernel_*` integration tests).
fn build_test_suites() -> Result<Vec<TestSuite>> {
    eprintln!("==> building the kernel tests");
    let out = cargo()
        .args(["test", "--locked", "-p", "airlock-agent", "--tests", "--no-run", "--message-format=json"])
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
                suites.push(TestSuite { name: name.to_string(), executable: PathBuf::from(exe) });
            }
        }
    }
    if suites.is_empty() {
        bail!("cargo reported no kernel_* test executable for airlock-agent");
    }
    suites.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(suites)
}

struct KernelImage {
    version: String,
    vmlinuz: PathBuf,
    /// Module files in load order, decompressed.
    modules: Vec<PathBuf>,
}

/// Resolves, downloads and extracts a Debian kernel package (cached under target/vm).
fn prepare_kernel(spec: &KernelSpec, vm_dir: &Path) -> Result<KernelImage> {
    let package = resolve_meta(spec.meta_package)?;
    let root = vm_dir.join(&package);
    let boot = root.join("boot");
    if !boot.is_dir() {
        let debs = vm_dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        let existing = find_deb(&debs, &package);
        let deb = match existing {
            Some(deb) => deb,
            None => {
                eprintln!("==> downloading {package}");
                // apt's sandbox user cannot write here; root download is expected.
                run_step(&format!("apt-get download {package}"), Command::new("apt-get").args(["download", "-qq", &package]).current_dir(&debs))?;
                find_deb(&debs, &package).with_context(|| format!("apt-get download left no {package} .deb"))?
            }
        };
        let staging = vm_dir.join(format!("{package}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        run_step(&format!("extract {}", deb.display()), Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        std::fs::rename(&staging, &root)?;
    }
    let vmlinuz = std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let version = vmlinuz.file_name().map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string()).unwrap_or_default();
    let modules = guest_modules(&root.join("lib/modules").join(&version), &vm_dir.join(format!("{package}.modules")))?;
    Ok(KernelImage { version, vmlinuz, modules })
}

fn resolve_meta(meta: &str) -> Result<String> {
    let resolve = || -> Result<Option<String>> {
        let out = Command::new("apt-cache").args(["depends", meta]).output().context("run apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string))
    };
    if let Some(p) = resolve()? {
        return Ok(p);
    }
    run_step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
    resolve()?.with_context(|| format!("apt cannot resolve {meta} to a kernel image package"))
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
    })
}

/// The modules (with their dependencies, in load order) the guest needs. A
/// package carries no modules.dep (depmod writes it at install time), so the
/// dependencies are read from each module's own .modinfo "depends=" entry;
/// modules built into this kernel have no file and are skipped.
fn guest_modules(module_root: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files_by_name = BTreeMap::new();
    index_modules(&module_root.join("kernel"), &mut files_by_name)?;
    std::fs::create_dir_all(out_dir)?;

    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(String, bool)> = GUEST_MODULES.iter().rev().map(|m| (m.to_string(), false)).collect();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Depth-first, dependencies before dependents.
    while let Some((name, expanded)) = stack.pop() {
        if expanded {
            if let Some(bytes) = contents.remove(&name) {
                order.push((name, bytes));
            }
            continue;
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(path) = files_by_name.get(&name) else { continue };
        let bytes = read_module(path)?;
        let depends = modinfo_depends(&bytes);
        contents.insert(name.clone(), bytes);
        stack.push((name, true));
        for dep in depends.into_iter().rev() {
            stack.push((dep, false));
        }
    }
    let mut files = Vec::new();
    for (i, (name, bytes)) in order.iter().enumerate() {
        let dest = out_dir.join(format!("{i:02}-{name}.ko"));
        std::fs::write(&dest, bytes).with_context(|| format!("write {}", dest.display()))?;
        files.push(dest);
    }
    Ok(files)
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            index_modules(&path, out)?;
        } else if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) {
            if name.contains(".ko") {
                out.insert(module_name(&name), path);
            }
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    }
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        bail!("{} is compressed in a way this runner does not know", path.display());
    };
    let out = Command::new(tool).arg("-dc").arg(path).output().with_context(|| format!("run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} could not decompress {}", path.display());
    }
    Ok(out.stdout)
}

/// The "depends=a,b" entry of a module's .modinfo strings.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list).split(',').filter(|s| !s.is_empty()).map(|s| s.replace('-', "_")).collect()
        })
        .unwrap_or_default()
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// The guest's first stage: mount the host's root over 9p and chroot into it.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(ls /modules | sort); do insmod /modules/$m || echo "airlock-vm: insmod $m failed"; done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host; then
    echo "airlock-vm: cannot mount the host over 9p"; echo "AIRLOCK-VM-EXIT=97"; poweroff -f
fi
mount --rbind /proc /host/proc
mount --rbind /sys /host/sys
mount --rbind /dev /host/dev
mkdir -p /dev/shm
for d in /run /var/tmp /dev/shm; do mount -t tmpfs tmpfs /host$d; done
script=$(sed -n 's/.*airlock_guest=\([^ ]*\).*/\1/p' /proc/cmdline)
chroot /host /bin/bash "$script"
echo "AIRLOCK-VM-EXIT=$?"
sync
poweroff -f
"#;

fn build_initramfs(image: &KernelImage, busybox: &Path, vm_dir: &Path) -> Result<PathBuf> {
    let out = vm_dir.join(format!("initramfs-{}.cpio", image.version));
    let mut cpio = CpioWriter::default();
    for dir in ["bin", "dev", "proc", "sys", "host", "modules", "tmp"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", &std::fs::read(busybox).context("read busybox")?, 0o755);
    cpio.file("init", INIT.as_bytes(), 0o755);
    for module in &image.modules {
        let name = module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        cpio.file(&format!("modules/{name}"), &std::fs::read(module)?, 0o644);
    }
    std::fs::write(&out, cpio.finish()).with_context(|| format!("write {}", out.display()))?;
    Ok(out)
}

/// A cpio archive in the "newc" format the kernel unpacks into its rootfs.
#[derive(Default)]
struct CpioWriter {
    buf: Vec<u8>,
    ino: u32,
}

impl CpioWriter {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }
}

/// The second stage, run inside the chroot: the kernel test suite.
fn guest_script(backend: Backend, suites: &[&TestSuite], filter: Option<&str>, workspace: &Path) -> String {
    let target_tmp = workspace.join("target/tmp");
    let filter_arg = filter.map(|f| format!(" '{}'", f.replace('\'', ""))).unwrap_or_default();
    let runs: String = suites
        .iter()
        .map(|s| format!("echo AIRLOCK-VM-SUITE={name}\n{exe} --test-threads=2 --color=never{filter_arg} || rc=1\n", name = s.name, exe = s.executable.display()))
        .collect();
    format!(
        r#"set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Tests write under TMPDIR. A tmpfs over /tmp would hide a checkout that lives there.
case "{workspace}/" in
    /tmp/*) mkdir -p /run/airlock-tmp && export TMPDIR=/run/airlock-tmp ;;
    *) mount -t tmpfs tmpfs /tmp && export TMPDIR=/tmp ;;
esac
export HOME=$TMPDIR RUST_BACKTRACE=1
export AIRLOCK_EXPECT_BACKEND={backend} AIRLOCK_TEST_TIME_SCALE=6
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || {{ mkdir -p /run/cgroup2 && mount -t cgroup2 cgroup2 /run/cgroup2; }}
mount -t tmpfs tmpfs {target_tmp}
ip link set lo up
# Pseudo-terminals (tmux in the broker-escape tests needs them).
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
echo "airlock-vm: kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm 2>/dev/null || echo '?')"
cd {workspace}
rc=0
{runs}exit $rc
"#,
        backend = backend.name(),
        target_tmp = target_tmp.display(),
        workspace = workspace.display(),
    )
}

/// KVM only when asked for (AIRLOCK_VM_KVM=1) and present: nested KVM on these
/// machines opens but faults early in the guest, while TCG is slow but sure.
fn kvm_usable() -> bool {
    std::env::var("AIRLOCK_VM_KVM").is_ok_and(|v| v == "1")
        && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

fn boot_and_test(
    kernel: &'static str,
    backend: Backend,
    image: &KernelImage,
    initramfs: &Path,
    suites: &[&TestSuite],
    filter: Option<&str>,
    workspace: &Path,
    vm_dir: &Path,
) -> Result<RunResult> {
    let script_path = vm_dir.join(format!("guest-{kernel}-{}.sh", backend.name()));
    std::fs::write(&script_path, guest_script(backend, suites, filter, workspace))?;
    let log_path = vm_dir.join(format!("console-{kernel}-{}.log", backend.name()));
    let lsm = if backend == Backend::Lsm { LSM_WITH_BPF } else { LSM_WITHOUT_BPF };
    let append = format!("console=ttyS0 panic=-1 loglevel=4 lsm={lsm} airlock_guest={}", script_path.display());

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
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .args(["-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap"])
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
    let mut log = std::fs::File::create(&log_path)?;
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
            problem = Some(format!("the guest stopped before the tests finished (qemu {status}){}", if qemu_err.is_empty() { String::new() } else { format!(": {}", qemu_err.trim()) }));
        }
    }
    Ok(RunResult {
        kernel,
        backend,
        tests: parser.tests,
        failures: parser.failures,
        exit: parser.exit,
        problem,
        seconds: started.elapsed().as_secs_f64(),
    })
    .inspect(|_| eprintln!("    console log: {}", log_path.display()))
}

/// Reads libtest's output from the serial console.
#[derive(Default)]
struct GuestOutput {
    tests: BTreeMap<String, bool>,
    suite: String,
    failures: String,
    in_failures: bool,
    exit: Option<i32>,
    panicked: bool,
}

impl GuestOutput {
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, outcome)) = rest.rsplit_once(" ... ") {
                let ok = outcome.trim() == "ok";
                if ok || outcome.trim().starts_with("FAILED") {
                    let name = if self.suite.is_empty() { name.trim().to_string() } else { format!("{}::{}", self.suite, name.trim()) };
                    self.tests.insert(name, ok);
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

fn report_one(r: &RunResult) {
    for (name, ok) in &r.tests {
        println!("  [{} {}] {} ... {}", r.kernel, r.backend.name(), name, if *ok { "ok" } else { "FAILED" });
    }
    if !r.failures.is_empty() {
        println!("{}", r.failures);
    }
    if let Some(p) = &r.problem {
        println!("  [{} {}] PROBLEM: {p}", r.kernel, r.backend.name());
    }
}

fn print_table(results: &[RunResult]) {
    println!();
    println!("| kernel | backend | passed | failed | guest exit | time (s) |");
    println!("|---|---|---|---|---|---|");
    for r in results {
        let pass = r.tests.values().filter(|ok| **ok).count();
        let fail = r.tests.len() - pass;
        let exit = match (&r.problem, r.exit) {
            (Some(p), _) => p.clone(),
            (None, Some(code)) => code.to_string(),
            (None, None) => "none".into(),
        };
        println!("| {} | {} | {pass} | {fail} | {exit} | {:.0} |", r.kernel, r.backend.name(), r.seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_path_and_compression() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko.xz"), "9pnet_virtio");
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(module_name("kernel/drivers/virtio/virtio-pci.ko"), "virtio_pci");
    }

    #[test]
    fn modinfo_depends_are_read_from_the_module_strings() {
        let module = b"\x7fELF...\0license=GPL\0depends=netfs,9pnet\0intree=Y\0";
        assert_eq!(modinfo_depends(module), vec!["netfs".to_string(), "9pnet".to_string()]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = CpioWriter::default();
        c.file("init", b"#!x", 0o755);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn guest_output_is_read_per_test() {
        let mut g = GuestOutput::default();
        for line in ["test a ... ok", "AIRLOCK-VM-SUITE=kernel_x", "test b ... FAILED", "failures:", "---- b stdout ----", "boom", "test result: FAILED. 1 passed; 1 failed", "AIRLOCK-VM-EXIT=101"] {
            g.line(line);
        }
        assert_eq!(g.tests.get("a"), Some(&true));
        assert_eq!(g.tests.get("kernel_x::b"), Some(&false));
        assert!(g.failures.contains("boom"));
        assert_eq!(g.exit, Some(101));
    }
}
