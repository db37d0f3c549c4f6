//! `install` and `uninstall`: the agent as a systemd service on a fleet host.
//!
//! `install` copies this binary to `<prefix>/bin`, the unit to
//! `/etc/systemd/system`, the shipped policies to `/etc/airlock/policies`
//! (never over a file an operator edited), creates the `airlock` group and the
//! state directory, and enables and starts the service when systemd runs the
//! host. Everything is relative to `--root`, so a package build or a test can
//! install into a directory. Each step prints what it did or why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

const UNIT_NAME: &str = "airlock-agent.service";
/// The unit as shipped in `packaging/`; `@BINARY@` becomes the installed path.
const UNIT_TEMPLATE: &str = include_str!("../../packaging/airlock-agent.service");
const GROUP: &str = "airlock";

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Install under this directory instead of / (package builds, tests). Nothing is started then.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Where the binary goes: <prefix>/bin/airlock-agent.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// The binary to install (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Do not enable and start the service.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Where the running enforcement is pinned (unloaded when --root is /).
    #[arg(long, default_value = crate::kernel::pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Also delete the state directory (audit trail, sessions) and the `airlock` group.
    #[arg(long)]
    pub purge_state: bool,
}

/// Paths of an installation under a root.
struct Layout {
    root: PathBuf,
    /// The binary's path as the running system sees it (in the unit).
    binary_in_system: PathBuf,
    binary: PathBuf,
    unit: PathBuf,
    policies: PathBuf,
    state: PathBuf,
}

impl Layout {
    fn new(root: &Path, prefix: &Path) -> Layout {
        let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let binary_in_system = prefix.join("bin/airlock-agent");
        Layout {
            root: root.to_path_buf(),
            binary: under(&binary_in_system),
            binary_in_system,
            unit: under(Path::new("/etc/systemd/system").join(UNIT_NAME).as_path()),
            policies: under(Path::new("/etc/airlock/policies")),
            state: under(Path::new("/var/lib/airlock")),
        }
    }

    fn is_live_system(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// The unit file for a binary installed at `binary`.
pub fn unit_text(binary: &Path) -> String {
    UNIT_TEMPLATE.replace("@BINARY@", &binary.display().to_string())
}

/// True when systemd is the init system of this host (as sd_booted() decides).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn say(what: &str) {
    println!("install: {what}");
}

pub fn install(args: &InstallArgs) -> Result<i32> {
    require_root()?;
    if !args.prefix.is_absolute() {
        bail!("--prefix must be an absolute path");
    }
    let l = Layout::new(&args.root, &args.prefix);

    // 1. The binary, replaced atomically (a running daemon keeps its old inode).
    let source = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("find this program's path")?,
    };
    copy_atomically(&source, &l.binary, 0o755)?;
    say(&format!("binary {}", l.binary.display()));

    // 2. The unit (ours: replaced; local changes belong in drop-ins).
    write_file(&l.unit, unit_text(&l.binary_in_system).as_bytes(), 0o644)?;
    say(&format!("unit {}", l.unit.display()));

    // 3. The shipped policies, never over an operator's file.
    for source in airlock_policy::default_sources() {
        let relative = source.path.strip_prefix("<embedded>").unwrap_or(&source.path).to_path_buf();
        let dest = l.policies.join(&relative);
        match std::fs::read(&dest) {
            Ok(existing) if existing == source.content.as_bytes() => say(&format!("policy {} (unchanged)", dest.display())),
            Ok(_) => say(&format!("policy {} kept: it differs from the shipped one (edited); not overwritten", dest.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file(&dest, source.content.as_bytes(), 0o644)?;
                say(&format!("policy {}", dest.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", dest.display())),
        }
    }

    // 4. The group whose members may read the audit trail, and the state directory it owns.
    let gid = ensure_group(&l)?;
    std::fs::create_dir_all(&l.state).with_context(|| format!("create {}", l.state.display()))?;
    if let Some(gid) = gid {
        nix::unistd::chown(&l.state, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chown {}", l.state.display()))?;
    }
    // setgid: files the daemon creates there belong to the group (the unit's UMask makes them 0640).
    set_mode(&l.state, 0o2750)?;
    say(&format!("state directory {} (root:{GROUP}, 2750)", l.state.display()));

    // 5. systemd: only on the live system, only when systemd runs it.
    if !l.is_live_system() {
        say(&format!("skipped systemctl: installed under --root {}, not on the running system", l.root.display()));
    } else if !systemd_running() {
        say("skipped systemctl daemon-reload/enable --now: systemd is not the init system here (no /run/systemd/system); start the daemon with your init system or run `airlock-agent run`");
    } else {
        systemctl(&["daemon-reload"])?;
        if args.no_start {
            say("service installed, not enabled (--no-start)");
        } else {
            systemctl(&["enable", "--now", UNIT_NAME])?;
            say("service enabled and started (a running older daemon's enforcement is re-adopted or replaced without a gap)");
        }
    }
    Ok(0)
}

pub fn uninstall(args: &UninstallArgs) -> Result<i32> {
    require_root()?;
    let l = Layout::new(&args.root, &args.prefix);
    let say = |what: &str| println!("uninstall: {what}");

    if l.is_live_system() {
        if systemd_running() {
            // Stopping leaves the enforcement pinned (by design); the unload below removes it.
            let _ = systemctl(&["disable", "--now", UNIT_NAME]);
            say("service stopped and disabled");
        } else {
            say("systemd is not the init system here: stop a running daemon yourself first (unload refuses while one runs)");
        }
        let removed = crate::kernel::unload(&args.pin_dir)?;
        say(&format!("enforcement unloaded: {} pins removed from {}", removed.len(), args.pin_dir.display()));
    } else {
        say(&format!("skipped stopping and unloading: --root {} is not the running system", l.root.display()));
    }

    remove_if_exists(&l.unit, &say)?;
    if l.is_live_system() && systemd_running() {
        let _ = systemctl(&["daemon-reload"]);
    }
    remove_if_exists(&l.binary, &say)?;

    // Shipped policies that nobody edited go; edited ones stay.
    for source in airlock_policy::default_sources() {
        let relative = source.path.strip_prefix("<embedded>").unwrap_or(&source.path).to_path_buf();
        let dest = l.policies.join(&relative);
        match std::fs::read(&dest) {
            Ok(existing) if existing == source.content.as_bytes() => remove_if_exists(&dest, &say)?,
            Ok(_) => say(&format!("kept {}: edited", dest.display())),
            Err(_) => {}
        }
    }
    for dir in [l.policies.join("policies"), l.policies.join("roles"), l.policies.clone(), l.policies.parent().map(Path::to_path_buf).unwrap_or_default()] {
        // Only empty directories: anything an operator added stays.
        let _ = std::fs::remove_dir(&dir);
    }

    if args.purge_state {
        if l.state.exists() {
            std::fs::remove_dir_all(&l.state).with_context(|| format!("remove {}", l.state.display()))?;
            say(&format!("removed {} (audit trail, sessions)", l.state.display()));
        }
        remove_group(&l)?;
    } else if l.state.exists() {
        say(&format!("kept {} (audit trail); --purge-state removes it and the {GROUP} group", l.state.display()));
    }
    Ok(0)
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("install and uninstall must run as root");
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> Result<()> {
    let status = Command::new("systemctl").args(args).status().with_context(|| format!("run systemctl {}", args.join(" ")))?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Creates the system group (groupadd, under --prefix for another root); returns its gid.
fn ensure_group(l: &Layout) -> Result<Option<u32>> {
    let group_file = l.root.join("etc/group");
    if let Some(gid) = gid_in(&group_file, GROUP) {
        say(&format!("group {GROUP} exists (gid {gid})"));
        return Ok(Some(gid));
    }
    if !group_file.exists() {
        say(&format!("skipped group {GROUP}: {} does not exist", group_file.display()));
        return Ok(None);
    }
    let mut cmd = Command::new("groupadd");
    cmd.arg("--system");
    if !l.is_live_system() {
        // --prefix edits <root>/etc/group without chrooting (no NSS or PAM needed inside).
        cmd.arg("--prefix").arg(&l.root);
    }
    let out = cmd.arg(GROUP).output().context("run groupadd")?;
    if !out.status.success() {
        bail!("groupadd {GROUP} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let gid = gid_in(&group_file, GROUP).context("groupadd succeeded but the group is not in /etc/group")?;
    say(&format!("group {GROUP} created (gid {gid})"));
    Ok(Some(gid))
}

fn remove_group(l: &Layout) -> Result<()> {
    if gid_in(&l.root.join("etc/group"), GROUP).is_none() {
        return Ok(());
    }
    let mut cmd = Command::new("groupdel");
    if !l.is_live_system() {
        cmd.arg("--prefix").arg(&l.root);
    }
    let out = cmd.arg(GROUP).output().context("run groupdel")?;
    if !out.status.success() {
        bail!("groupdel {GROUP} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    println!("uninstall: group {GROUP} removed");
    Ok(())
}

fn gid_in(group_file: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

fn write_file(dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = dest.with_extension("airlock-new");
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    set_mode(&tmp, mode)?;
    std::fs::rename(&tmp, dest).with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))
}

fn copy_atomically(source: &Path, dest: &Path, mode: u32) -> Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("read {}", source.display()))?;
    write_file(dest, &bytes, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

fn remove_if_exists(path: &Path, say: &dyn Fn(&str)) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            say(&format!("removed {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}
