//! `install` and `uninstall` into a temporary root (`--root`): what lands
//! where, that an edited policy is never overwritten or removed, and that the
//! unit passes `systemd-analyze verify` where that tool exists.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::AGENT;


struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], root: &Path) -> String {
    let out = Command::new(AGENT).args(args).arg("--root").arg(root).output().expect("run airlock-agent");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "airlock-agent {args:?} failed:\n{text}");
    text
}

fn install_and_uninstall_into_a_root() {
    assert!(nix::unistd::geteuid().is_root(), "install tests run as root (scripts/test.sh)");
    let root = Root(std::env::temp_dir().join(format!("airlock-install-test-{}", std::process::id())));
    let r = &root.0;
    std::fs::create_dir_all(r.join("etc")).unwrap();
    // A minimal /etc/group and /etc/gshadow for groupadd --prefix.
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(r.join("etc/gshadow"), "root:*::\n").unwrap();

    let out = run(&["install"], r);
    let binary = r.join("usr/local/bin/airlock-agent");
    let unit = r.join("etc/systemd/system/airlock-agent.service");
    let policy = r.join("etc/airlock/policies/policies/infra-mutation-block.json");
    let role = r.join("etc/airlock/policies/roles/default.json");
    assert_eq!(std::fs::read(&binary).unwrap(), std::fs::read(AGENT).unwrap(), "the installed binary is not this one");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755);
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("ExecStart=/usr/local/bin/airlock-agent run "), "{unit_text}");
    for key in ["Type=notify", "Restart=always", "WatchdogSec=", "ProtectSystem=strict", "ReadWritePaths=/sys/fs/bpf", "CAP_BPF", "Group=airlock"] {
        assert!(unit_text.contains(key), "the unit lacks {key}");
    }
    assert!(policy.exists() && role.exists(), "{out}");
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let gid: u32 = group.lines().find_map(|l| l.strip_prefix("airlock:x:")).and_then(|rest| rest.split(':').next()?.parse().ok()).expect("the airlock group");
    let state = r.join("var/lib/airlock");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (gid, 0o2750));
    assert!(out.contains("skipped systemctl"), "{out}");

    // The installed policies are valid as they are.
    let check = Command::new(&binary).args(["policy", "check"]).arg(r.join("etc/airlock/policies")).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // systemd's own check of the unit, with ExecStart pointing at the installed binary.
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let dir = r.join("verify");
        std::fs::create_dir_all(&dir).unwrap();
        let local = dir.join("airlock-agent.service");
        std::fs::write(&local, unit_text.replace("/usr/local/bin/airlock-agent", &binary.display().to_string())).unwrap();
        let v = Command::new("systemd-analyze").arg("verify").arg(&local).output().unwrap();
        let complaints = String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    } else {
        eprintln!("systemd-analyze not found: the unit was not verified by systemd");
    }

    // An operator edits a policy; a re-install keeps it.
    std::fs::write(&policy, "{ \"id\": \"infra-mutation-block\", \"name\": \"Edited\", \"blocked_commands\": [\"terraform\"] }\n").unwrap();
    let out = run(&["install"], r);
    assert!(out.contains("kept: it differs"), "{out}");
    assert!(std::fs::read_to_string(&policy).unwrap().contains("Edited"));

    // Uninstall: the files go, the edited policy and the audit trail stay.
    std::fs::write(state.join("audit.jsonl"), "{}\n").unwrap();
    let out = run(&["uninstall"], r);
    assert!(!binary.exists() && !unit.exists() && !role.exists(), "{out}");
    assert!(policy.exists(), "uninstall removed an edited policy: {out}");
    assert!(state.join("audit.jsonl").exists() && out.contains("kept"), "{out}");
    assert!(out.contains("skipped stopping and unloading"), "{out}");

    // --purge-state: the state directory and the group go too.
    run(&["uninstall", "--purge-state"], r);
    assert!(!state.exists());
    assert!(!std::fs::read_to_string(r.join("etc/group")).unwrap().contains("airlock:"));
}

kernel_tests!(
    install_and_uninstall_into_a_root,
);
