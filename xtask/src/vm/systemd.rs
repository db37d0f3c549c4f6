//! The systemd guests: a Debian root file system built from Debian's packages
//! with `mmdebstrap`, made into an ext4 image with `mke2fs -d` (no loop
//! mount), booted with systemd as PID 1 on one of the matrix's kernels. In it
//! airlock-checks.service runs vm-tests/systemd/checks.sh from a read-only
//! 9p share that also holds the .deb packages under test.
//!
//! The root is a disk of its own, not the host's root and not a 9p root:
//! `dpkg -i` and `--purge`, systemd's state and the agent's pins need a
//! writable file system that behaves like a host's (ext4 is what hosts run),
//! and every guest gets a fresh copy of the cached image, so nothing a run
//! does survives it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::kernel::{self, InitramfsSpec, KernelImage};
use crate::run as run_step;

/// The first stage: mounts the disk and hands it to systemd.
const INIT: &str = include_str!("../../../vm-tests/systemd/init.sh");
/// The unit that runs the checks once the system is up.
const CHECKS_UNIT: &str = include_str!("../../../vm-tests/systemd/airlock-checks.service");
const CHECKS: &str = include_str!("../../../vm-tests/systemd/checks.sh");

/// The modules the first stage loads: the disk (virtio_blk, ext4 and what
/// ext4 checksums with) and the checks' share (9p).
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "crc32c_intel", "ext4", "9pnet_virtio", "9p"];

/// The image's size: sparse, so only what the root uses is written.
const IMAGE_SIZE: &str = "2G";

/// Units masked in the guest (linked to /dev/null): the serial getty would
/// take the console the checks report on, and apt's timers have no business
/// in a test run.
const MASKED: &[&str] = &["serial-getty@ttyS0.service", "apt-daily.timer", "apt-daily-upgrade.timer"];

/// vm-tests/matrix.toml's `[systemd]`.
#[derive(Deserialize, Clone, Debug)]
pub struct SystemdSpec {
    /// The matrix kernel the guests boot.
    pub kernel: String,
    /// The backends they run, each a guest (the matrix's `[backend.*]` names).
    pub backends: Vec<String>,
    /// The Debian suite of the root file system.
    pub suite: String,
    pub mirror: String,
    /// Installed besides the minbase variant (systemd, the packages' dependencies, what the checks use).
    pub packages: Vec<String>,
}

/// Checks a spec against the matrix's kernels and backends.
pub fn validate(spec: &SystemdSpec, kernels: &[String], backends: &[String]) -> Result<()> {
    if !kernels.contains(&spec.kernel) {
        bail!("vm-tests/matrix.toml: [systemd] kernel {:?} is not a [[kernel]] name ({})", spec.kernel, kernels.join(", "));
    }
    if let Some(b) = spec.backends.iter().find(|b| !backends.contains(b)) {
        bail!("vm-tests/matrix.toml: [systemd] backends: {b:?} is not a [backend.*] name ({})", backends.join(", "));
    }
    if spec.packages.iter().any(|p| p.is_empty() || p.contains([',', ' '])) {
        bail!("vm-tests/matrix.toml: [systemd] packages: each entry is one package name");
    }
    Ok(())
}

/// FNV-1a (64 bit) of the recipe: the cache key of the root image. Stable
/// across toolchains, unlike std's hasher; it keys a cache, it guards nothing.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Everything the image is made from: a change to any of it builds a new one.
fn recipe_key(spec: &SystemdSpec) -> u64 {
    let packages = spec.packages.join(",");
    let masked = MASKED.join(",");
    fnv1a(&[&spec.suite, &spec.mirror, &packages, &masked, CHECKS_UNIT, IMAGE_SIZE])
}

/// The root image, built once per recipe and cached under `vm_dir`.
pub fn root_image(spec: &SystemdSpec, vm_dir: &Path) -> Result<PathBuf> {
    let image = vm_dir.join(format!("rootfs-{}-{:016x}.ext4", spec.suite, recipe_key(spec)));
    if image.is_file() {
        eprintln!("==> systemd guests' root: {} (cached)", image.display());
        return Ok(image);
    }
    let staging = vm_dir.join(format!("rootfs-{}.partial", spec.suite));
    let partial = image.with_extension("ext4.partial");
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_file(&partial);
    eprintln!("==> building the systemd guests' root: Debian {} with {} (mmdebstrap, once per recipe)", spec.suite, spec.packages.join(" "));
    run_step(
        "mmdebstrap",
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", &format!("--include={}", spec.packages.join(","))])
            // Documentation is no use in a test guest and only slows mke2fs and the boot's disk.
            .args(["--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/locale/*"])
            .arg(&spec.suite)
            .arg(&staging)
            .arg(&spec.mirror),
    )?;
    customize(&staging)?;
    run_step(
        "mke2fs -d",
        Command::new("mke2fs").args(["-q", "-t", "ext4", "-L", "airlock-root", "-d"]).arg(&staging).arg(&partial).arg(IMAGE_SIZE),
    )?;
    std::fs::rename(&partial, &image).with_context(|| format!("rename {} to {}", partial.display(), image.display()))?;
    std::fs::remove_dir_all(&staging).with_context(|| format!("remove {}", staging.display()))?;
    Ok(image)
}

/// The guest's own settings in the root: its name, the checks' unit enabled,
/// the masks.
fn customize(root: &Path) -> Result<()> {
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    let link = |target: &str, rel: &str| -> Result<()> {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path).with_context(|| format!("link {} to {target}", path.display()))
    };
    write("etc/hostname", "airlock-guest\n")?;
    write("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 airlock-guest\n::1 localhost ip6-localhost ip6-loopback\n")?;
    // The root is mounted by the first stage; nothing to check or mount at boot.
    write("etc/fstab", "# The root (/dev/vda) is mounted read-write by the initramfs.\n")?;
    write("etc/systemd/system/airlock-checks.service", CHECKS_UNIT)?;
    link("../airlock-checks.service", "etc/systemd/system/multi-user.target.wants/airlock-checks.service")?;
    for unit in MASKED {
        link("/dev/null", &format!("etc/systemd/system/{unit}"))?;
    }
    Ok(())
}

/// The initramfs of the systemd guests on `image`'s kernel.
pub fn initramfs(image: &KernelImage, busybox: &Path, vm_dir: &Path) -> Result<PathBuf> {
    let modules = kernel::guest_modules(&image.module_root, MODULES, &vm_dir.join(format!("systemd-{}.modules", image.version)))?;
    let spec = InitramfsSpec { name: "systemd-", init: INIT, modules: &modules, dirs: &["bin", "dev", "proc", "sys", "newroot", "modules"] };
    kernel::build_initramfs_with(image, busybox, vm_dir, &spec)
}

/// The .deb packages under test: `cargo xtask package --profile dev` (the
/// binaries the test build already made), into `vm_dir/packages`; or, with
/// AIRLOCK_VM_PACKAGES=DIR, the packages already in DIR (the very files a
/// release ships).
pub fn build_packages(vm_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let out = match std::env::var_os("AIRLOCK_VM_PACKAGES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            eprintln!("==> the packages under test: {} (AIRLOCK_VM_PACKAGES)", dir.display());
            dir
        }
        None => {
            let out = vm_dir.join("packages");
            let _ = std::fs::remove_dir_all(&out);
            let xtask = std::env::current_exe().context("find the xtask binary")?;
            run_step("cargo xtask package --profile dev", Command::new(xtask).args(["package", "--profile", "dev", "--out"]).arg(&out))?;
            out
        }
    };
    let find = |name: &str| -> Result<PathBuf> {
        let prefix = format!("{name}_");
        std::fs::read_dir(&out)
            .with_context(|| format!("list {}", out.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix) && n.to_string_lossy().ends_with("_amd64.deb")))
            .with_context(|| format!("cargo xtask package left no {name}_*_amd64.deb in {}", out.display()))
    };
    Ok((find("airlock-agent")?, find("airlock-gateway")?))
}

/// One guest's disk (a fresh copy of the root image) and share (the checks,
/// their plan, the packages).
pub fn prepare_guest(label: &str, backend: &str, root: &Path, debs: &[PathBuf], vm_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let disk = vm_dir.join(format!("disk-{label}.ext4"));
    let _ = std::fs::remove_file(&disk);
    run_step("copy the root image", Command::new("cp").arg("--sparse=always").arg(root).arg(&disk))?;
    let share = vm_dir.join(format!("share-{label}"));
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(share.join("debs")).with_context(|| format!("create {}", share.display()))?;
    std::fs::write(share.join("checks.sh"), CHECKS).context("write checks.sh")?;
    // A skipped fd store check fails where the fd store must be there (CI).
    let require_fdstore = std::env::var("AIRLOCK_REQUIRE_FDSTORE").is_ok_and(|v| v == "1");
    std::fs::write(share.join("plan.sh"), format!("BACKEND={}\nREQUIRE_FDSTORE={}\n", super::guest::quote(backend), u8::from(require_fdstore)))
        .context("write the systemd guest's plan")?;
    for deb in debs {
        let name = deb.file_name().context("a package path without a file name")?;
        std::fs::copy(deb, share.join("debs").join(name)).with_context(|| format!("copy {}", deb.display()))?;
    }
    Ok((disk, share))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SystemdSpec {
        SystemdSpec {
            kernel: "6.12".into(),
            backends: vec!["lsm".into()],
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["systemd".into()],
        }
    }

    #[test]
    fn the_cache_key_follows_the_recipe() {
        let a = spec();
        let mut b = spec();
        b.packages.push("dbus".into());
        assert_eq!(recipe_key(&a), recipe_key(&spec()));
        assert_ne!(recipe_key(&a), recipe_key(&b));
        // Parts are separated: moving a boundary changes the key.
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn a_spec_naming_what_the_matrix_lacks_is_refused() {
        let kernels = vec!["6.1".to_string(), "6.12".to_string()];
        let backends = vec!["lsm".to_string(), "compat".to_string()];
        assert!(validate(&spec(), &kernels, &backends).is_ok());
        let mut s = spec();
        s.kernel = "5.10".into();
        assert!(validate(&s, &kernels, &backends).unwrap_err().to_string().contains("[systemd] kernel \"5.10\""));
        let mut s = spec();
        s.backends = vec!["ebpf".into()];
        assert!(validate(&s, &kernels, &backends).is_err());
        let mut s = spec();
        s.packages = vec!["systemd,dbus".into()];
        assert!(validate(&s, &kernels, &backends).is_err());
    }

    #[test]
    fn the_guest_files_are_the_ones_in_vm_tests() {
        assert!(INIT.starts_with("#!/bin/busybox sh") && INIT.contains("switch_root"));
        assert!(CHECKS_UNIT.contains("checks.sh") && CHECKS.contains("AIRLOCK-VM-EXIT="));
    }
}
