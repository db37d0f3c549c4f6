//! What this kernel can do: BPF LSM, the cgroup Unix socket hooks, which
//! syscall tracepoints exist, and the process table's size.

use std::mem::MaybeUninit;
use std::path::Path;

use airlock_ebpf::probe_lsm::ProbeLsmSkelBuilder;
use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use super::mounts;
use super::types::Backend;

/// Loads and attaches a one-line LSM program, then lets it go.
pub fn probe_lsm() -> Result<()> {
    if let Some(list) = mounts::active_lsms() {
        if !list.split(',').any(|l| l == "bpf") {
            bail!("bpf is not in the kernel's active LSM list ({list}); boot with lsm=...,bpf");
        }
    }
    let mut storage = MaybeUninit::uninit();
    let open = ProbeLsmSkelBuilder::default().open(&mut storage).context("open the LSM probe")?;
    let skel = open.load().context("load the LSM probe program")?;
    let _link = skel.progs.airlock_probe_lsm.attach_lsm().context("attach the LSM probe program")?;
    Ok(())
}

/// True when the running kernel knows the cgroup Unix socket hooks (6.7+):
/// their attach type is named in the kernel's own BTF. A kernel without BTF
/// cannot run Airlock at all, so "unreadable" means "no".
pub fn kernel_has_cgroup_unix_hooks() -> bool {
    match std::fs::read("/sys/kernel/btf/vmlinux") {
        Ok(btf) => btf.windows(23).any(|w| w == b"BPF_CGROUP_UNIX_CONNECT"),
        Err(e) => {
            tracing::warn!("cannot read /sys/kernel/btf/vmlinux ({e}); Unix socket hooks not used");
            false
        }
    }
}

/// What this kernel cannot enforce with the chosen backend, for `status`.
pub fn backend_gaps(backend: Backend, compat_unix: bool) -> Vec<String> {
    let mut gaps = Vec::new();
    if backend == Backend::Compat && !compat_unix {
        gaps.push(
            "Unix socket rules (egress.unix_deny) are NOT enforced: this kernel has no cgroup/connect_unix \
             (added in 6.7) and the LSM backend is not in use"
                .to_string(),
        );
    }
    gaps
}

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Whether tracefs lists the syscall tracepoint (it exists only for syscalls the architecture has).
pub fn tracepoint_exists(syscall: &str) -> bool {
    TRACEFS_ROOTS.iter().any(|root| Path::new(root).join("events/syscalls").join(syscall).exists())
}

/// The perf event id tracefs gives the syscall tracepoint.
pub fn syscall_tracepoint_id(syscall: &str) -> Result<u64> {
    let mut last = None;
    for root in TRACEFS_ROOTS {
        let path = Path::new(root).join("events/syscalls").join(syscall).join("id");
        match std::fs::read_to_string(&path) {
            Ok(text) => return text.trim().parse().with_context(|| format!("{} holds {:?}, not an id", path.display(), text.trim())),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("read {}", path.display()))),
        }
    }
    match last {
        Some(e) => Err(e),
        None => bail!("no tracefs"),
    }
}

/// The kernel's largest pid (the tag map is sized to it).
pub fn pid_max() -> u32 {
    procfs::sys::kernel::pid_max().ok().and_then(|n| u32::try_from(n).ok()).unwrap_or(4_194_304)
}

pub fn bump_memlock_rlimit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
