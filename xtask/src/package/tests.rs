//! Both packages built from the test build's binaries, then read back with
//! dpkg-deb (-f, -c, -I, -x) as apt and dpkg would see them: control fields,
//! every path with its mode and owner, the conffiles, the maintainer scripts,
//! and the unpacked binaries run against the unpacked policies and units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::spec::{Binaries, PACKAGES};
use super::{build_all, workspace_root, Profile};

/// Set by scripts/test.sh: a missing tool or binary fails instead of skipping.
const REQUIRE: &str = "AIRLOCK_REQUIRE_PACKAGE";

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binaries `cargo test --workspace` built beside this test, and the
/// Debian tools the packages are built and read with; None (after printing
/// SKIPPED) when something is missing, unless AIRLOCK_REQUIRE_PACKAGE=1.
fn prerequisites(test: &str) -> Option<Binaries> {
    let missing = || -> Result<Binaries, String> {
        for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "readelf", "md5sum", "gzip"] {
            if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success()) {
                return Err(format!("{tool} is not installed (scripts/setup.sh installs dpkg-dev and binutils)"));
            }
        }
        // target/<profile>/deps/xtask-<hash> -> target/<profile>
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe.parent().and_then(Path::parent).ok_or("no target directory above the test binary")?;
        Binaries::in_dir(dir).map_err(|e| format!("{e:#} (cargo test --workspace builds it; cargo test -p xtask alone does not)"))
    };
    match missing() {
        Ok(binaries) => Some(binaries),
        Err(why) if std::env::var(REQUIRE).as_deref() == Ok("1") => panic!("{REQUIRE}=1 but {test} cannot run: {why}"),
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    run(Command::new("dpkg-deb").args(args).arg(deb))
}

/// `dpkg-deb -c`: path -> (mode string, owner/group), directories with a trailing '/'.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    dpkg_deb(&["-c"], deb)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "dpkg-deb -c line: {line}");
            let path = fields[5].trim_start_matches('.').to_string();
            (path, (fields[0].to_string(), fields[1].to_string()))
        })
        .collect()
}

fn repo_files(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    let root = workspace_root().join(dir);
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_packages_hold_their_files_conffiles_and_scripts() {
    let Some(binaries) = prerequisites("the_packages_hold_their_files_conffiles_and_scripts") else { return };
    let scratch = Scratch(std::env::temp_dir().join(format!("airlock-package-test-{}", std::process::id())));
    let debs = build_all(&binaries, &scratch.0, Profile::Dev).expect("build the packages");
    assert_eq!(debs.len(), PACKAGES.len());
    let version = super::deb::debian_version(env!("CARGO_PKG_VERSION"));

    let policies: Vec<String> = repo_files("policies").iter().map(|f| format!("/etc/airlock/policies/{f}")).collect();
    let expected: [(&str, Vec<String>); 2] = [
        (
            "airlock-agent",
            [
                vec![
                    "/usr/bin/airlock-agent".to_string(),
                    "/lib/systemd/system/airlock-agent.service".into(),
                    "/etc/default/airlock-agent".into(),
                    "/usr/share/doc/airlock-agent/copyright".into(),
                    "/usr/share/doc/airlock-agent/changelog.gz".into(),
                ],
                policies.clone(),
            ]
            .concat(),
        ),
        (
            "airlock-gateway",
            vec![
                "/usr/bin/airlock-gateway".to_string(),
                "/lib/systemd/system/airlock-gateway.service".into(),
                "/etc/airlock/gateway.toml".into(),
                "/usr/share/doc/airlock-gateway/copyright".into(),
                "/usr/share/doc/airlock-gateway/changelog.gz".into(),
            ],
        ),
    ];

    for (deb, (name, files)) in debs.iter().zip(&expected) {
        assert_eq!(deb.file_name().unwrap().to_string_lossy(), format!("{name}_{version}_amd64.deb"), "the path other tests rely on");

        // Control fields.
        let fields = dpkg_deb(&["-f"], deb);
        for line in [format!("Package: {name}"), format!("Version: {version}"), "Architecture: amd64".into(), "Priority: optional".into()] {
            assert!(fields.lines().any(|l| l == line), "{name}: no {line:?} in\n{fields}");
        }
        let depends = fields.lines().find_map(|l| l.strip_prefix("Depends: ").map(str::to_string)).expect("Depends");
        for needed in ["libc6 (>= ", "adduser", "init-system-helpers (>= 1.54~)"] {
            assert!(depends.contains(needed), "{name}: Depends lacks {needed}: {depends}");
        }

        // Every file, and nothing else, root-owned, with its mode.
        let listed = contents(deb);
        let listed_files: Vec<&String> = listed.keys().filter(|p| !p.ends_with('/')).collect();
        let mut want: Vec<&String> = files.iter().collect();
        want.sort();
        assert_eq!(listed_files, want, "{name}: the package's files");
        for (path, (mode, owner)) in &listed {
            assert_eq!(owner, "root/root", "{name}: {path} is not root's");
            let want_mode = if path.ends_with('/') {
                "drwxr-xr-x"
            } else if path.starts_with("/usr/bin/") {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            };
            assert_eq!(mode, want_mode, "{name}: mode of {path}");
        }

        // The conffiles are exactly the files under /etc.
        let conffiles: Vec<String> = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles")).lines().map(str::to_string).collect();
        let mut etc: Vec<String> = files.iter().filter(|f| f.starts_with("/etc/")).cloned().collect();
        etc.sort();
        assert_eq!(conffiles, etc, "{name}: conffiles");

        // The maintainer scripts: present, executable, valid sh, and the
        // systemd handling as debhelper writes it.
        let control = dpkg_deb(&["-I"], deb);
        for script in ["postinst", "prerm", "postrm", "md5sums", "conffiles", "control"] {
            assert!(control.lines().any(|l| l.split_whitespace().any(|w| w == script)), "{name}: no {script} in\n{control}");
        }
        let unit = format!("{name}.service");
        let postinst = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postinst"));
        assert!(postinst.contains("deb-systemd-helper enable \"$UNIT\"") && postinst.contains("deb-systemd-invoke \"$_action\" \"$UNIT\""), "{name}: postinst");
        let prerm = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("prerm"));
        assert!(prerm.contains("if [ \"$1\" = \"remove\" ]") && !prerm.contains("\"upgrade\""), "{name}: prerm must stop on remove only:\n{prerm}");
        let postrm = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postrm"));
        assert!(postrm.contains("deb-systemd-helper purge \"$UNIT\""), "{name}: postrm");
        for (script, text) in [("postinst", &postinst), ("prerm", &prerm), ("postrm", &postrm)] {
            assert!(text.starts_with("#!/bin/sh\n") && text.contains("\nset -e\n") && text.contains(&format!("UNIT={unit}")), "{name}: {script}");
            let check = Command::new("sh").arg("-n").arg("-c").arg(text.as_str()).output().unwrap();
            assert!(check.status.success(), "{name}: {script} is not valid sh: {}", String::from_utf8_lossy(&check.stderr));
        }

        // Unpacked: the stripped binary runs, and its unit points at it.
        let root = scratch.0.join(format!("root-{name}"));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        let binary = root.join("usr/bin").join(name);
        let sections = run(Command::new("readelf").args(["-S", "-W"]).arg(&binary));
        assert!(!sections.contains(".symtab") && !sections.contains(".debug_info"), "{name}: the binary is not stripped");
        let shown = run(Command::new(&binary).arg("--version"));
        assert!(shown.contains(env!("CARGO_PKG_VERSION")), "{name} --version: {shown}");
        let unit_text = std::fs::read_to_string(root.join("lib/systemd/system").join(&unit)).unwrap();
        assert!(unit_text.contains(&format!("ExecStart=/usr/bin/{name} run")) && !unit_text.contains('@'), "{name}: {unit_text}");
        assert!(unit_text.contains("Type=notify"), "{name}: the unit waits for READY=1");
        verify_unit(&unit_text, &binary, &format!("/usr/bin/{name}"), &scratch.0.join(format!("verify-{name}")));
    }

    // The agent's specifics: its packaged policies are the ones it enforces
    // by default (/etc/airlock/policies), valid, and the same as the
    // embedded default; the options file is read by the unit.
    let agent_root = scratch.0.join("root-airlock-agent");
    let agent = agent_root.join("usr/bin/airlock-agent");
    let checked = run(Command::new(&agent).args(["policy", "check"]).arg(agent_root.join("etc/airlock/policies")));
    assert!(checked.contains("OK"), "{checked}");
    for file in repo_files("policies") {
        assert_eq!(
            std::fs::read(agent_root.join("etc/airlock/policies").join(&file)).unwrap(),
            std::fs::read(workspace_root().join("policies").join(&file)).unwrap(),
            "{file}"
        );
    }
    let unit = std::fs::read_to_string(agent_root.join("lib/systemd/system/airlock-agent.service")).unwrap();
    assert!(unit.contains("EnvironmentFile=-/etc/default/airlock-agent") && unit.contains("$AIRLOCK_AGENT_OPTS"), "{unit}");
    let defaults = std::fs::read_to_string(agent_root.join("etc/default/airlock-agent")).unwrap();
    assert!(defaults.lines().any(|l| l == "AIRLOCK_AGENT_OPTS=\"\""), "{defaults}");
    assert!(!defaults.lines().any(|l| l.starts_with("AIRLOCK_JOIN_TOKEN=")), "a join token without --gateway makes the daemon refuse to start");
}

/// `systemd-analyze verify` of a packaged unit, with ExecStart pointing at
/// the unpacked binary (the installed path does not exist here).
fn verify_unit(text: &str, binary: &Path, installed: &str, dir: &Path) {
    if !Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("systemd-analyze not found: the unit was not verified by systemd");
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let name = Path::new(installed).file_name().unwrap().to_string_lossy().into_owned();
    let local = dir.join(format!("{name}.service"));
    std::fs::write(&local, text.replace(installed, &binary.display().to_string())).unwrap();
    let v = Command::new("systemd-analyze").arg("verify").arg(&local).output().unwrap();
    let complaints = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && complaints.trim().is_empty(), "systemd-analyze verify {name}: {complaints}");
}
