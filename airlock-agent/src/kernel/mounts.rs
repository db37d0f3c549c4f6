//! The pseudo file systems the programs need, found (never assumed) in /proc/self/mountinfo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

/// Where cgroup2 is mounted: /sys/fs/cgroup on systemd hosts, /sys/fs/cgroup/unified on hybrid ones.
pub fn cgroup2_root() -> Result<PathBuf> {
    find_mount("cgroup2")?.context(
        "no cgroup2 file system is mounted (looked in /proc/self/mountinfo); \
         Airlock attaches its egress programs to the cgroup2 root",
    )
}

/// Mounts bpffs, tracefs and securityfs where they are missing.
pub fn ensure_pseudo_filesystems() -> Result<()> {
    ensure_mounted("bpf", Path::new("/sys/fs/bpf"))?;
    if find_mount("tracefs")?.is_none() {
        ensure_mounted("tracefs", Path::new("/sys/kernel/tracing"))?;
    }
    if find_mount("securityfs")?.is_none() {
        // Only informative (the lsm list); a kernel without it still runs the compat backend.
        if let Err(e) = ensure_mounted("securityfs", Path::new("/sys/kernel/security")) {
            tracing::debug!("securityfs not mounted: {e:#}");
        }
    }
    Ok(())
}

/// The kernel's active LSMs, when securityfs shows them.
pub fn active_lsms() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/security/lsm").ok().map(|s| s.trim().to_string())
}

fn ensure_mounted(fstype: &str, target: &Path) -> Result<()> {
    if find_mount(fstype)?.is_some_and(|p| p == target) {
        return Ok(());
    }
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    if let Err(e) = mount(Some(fstype), target, Some(fstype), MsFlags::empty(), None::<&str>) {
        // Another process (a second daemon starting, systemd) may have just mounted it.
        if find_mount(fstype)?.is_some() {
            return Ok(());
        }
        return Err(e).with_context(|| format!("mount {fstype} on {}", target.display()));
    }
    tracing::info!(fstype, target = %target.display(), "mounted");
    Ok(())
}

/// Where a file system of `fstype` is mounted in this mount namespace (the first one).
fn find_mount(fstype: &str) -> Result<Option<PathBuf>> {
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .context("read /proc/self/mountinfo")?;
    // procfs hands the field over as the kernel wrote it, with space, tab,
    // newline and backslash escaped as octal.
    Ok(mounts.into_iter().find(|m| m.fs_type == fstype).map(|m| PathBuf::from(unescape_mount_path(&m.mount_point.to_string_lossy()))))
}

/// Mount paths escape space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses to run where enforcement cannot work at all, naming what is missing.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the Airlock daemon must run as root (it loads eBPF programs)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_proc_where_it_is_mounted() {
        assert_eq!(find_mount("proc").expect("mountinfo").as_deref(), Some(Path::new("/proc")));
        assert_eq!(find_mount("no-such-fs").expect("mountinfo"), None);
    }

    #[test]
    fn unescapes_octal_in_mount_paths() {
        assert_eq!(unescape_mount_path(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
    }
}
