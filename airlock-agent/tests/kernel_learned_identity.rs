//! Kernel tests for learned exec identity: a protected program the daemon's
//! own scan never finds (it lives in a directory only the session's PATH
//! names, or in none at all) is learned by content, from the session's PATH
//! at launch or from an exec that ran it by its name; from then on a hard
//! link, a copy, a rename or a bind mount of it is the program. The learned
//! contents survive a reload and a restart. A real daemon on this kernel,
//! real governed sessions, both backends.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use support::*;

/// Without `--program-path`: the daemon's scan (its own PATH, the standard
/// bin directories) does not see the test's tools.
fn daemon(tag: &str) -> Daemon {
    Daemon::start(tag, &[("test-infra.json", APPLY_BLOCKED)], &[("agent.json", AGENT_ROLE)])
}

fn identity_deny(v: &Value, session: &str) -> bool {
    v["session_id"] == session && v["kind"] == "exec" && v["decision"] == "deny" && v["rule"] == "terraform apply" && v["exec"]["matched_by"] == "identity"
}

fn assert_denied(d: &Daemon, case: &str, script: &str) {
    let s = d.governed(Some("agent"), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(!s.tool_ran(), "{case}: the blocked program ran:\n{}", s.all_output());
    let id = s.session_id.clone();
    d.wait_audit(&format!("{case}: an identity deny in session {id}"), |v| identity_deny(v, &id));
}

fn assert_runs(d: &Daemon, case: &str, script: &str) {
    let s = d.governed(Some("agent"), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(s.tool_ran(), "{case}: the program did not run:\n{}", s.all_output());
}

fn learned(d: &Daemon) -> u64 {
    d.status_json()["policy"]["learned_identities"].as_u64().unwrap_or(0)
}

/// The files are the session user's, not root's: `nobody` owns them.
fn give_to_nobody(path: &Path) {
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(path, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// A second fake tool, another binary than the one in the bin dir (its
/// content is learned only when something runs it).
fn other_tool(dir: &Path) -> std::path::PathBuf {
    let bin = cached_c_binary(
        "fake-tool",
        "fake_tool_other",
        "#include <stdio.h>\nstatic const char pad[4096] = \"other\";\nint main(int argc, char **argv) {\n  printf(\"FAKE-TOOL-RAN%s\", pad + 5);\n  for (int i = 0; i < argc; i++) printf(\" %s\", argv[i]);\n  printf(\"\\n\");\n  return 0;\n}\n",
        &["-O2"],
    );
    std::fs::create_dir_all(dir).expect("mkdir tools");
    let dest = dir.join("terraform");
    std::fs::copy(&bin, &dest).expect("install the other tool");
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    give_to_nobody(&dest);
    dest
}

/// (i) The `terraform` that only the session's PATH finds (a directory the
/// daemon is not told about, owned by a user) is learned at launch: its
/// hard link, copy, rename and a bind mount over another program are it.
fn learned_from_the_session_path_at_launch() {
    let d = daemon("learn-path");
    d.backend();
    for tool in ["terraform", "kubectl", "aws"] {
        give_to_nobody(&d.bin_dir.join(tool));
    }
    give_to_nobody(&d.bin_dir);
    assert_eq!(learned(&d), 0, "nothing is learned before a session: {}", d.log());
    assert_denied(&d, "hard link", "ln $BIN/terraform tf-link && ./tf-link apply");
    assert!(learned(&d) >= 1, "the session's terraform was not learned at launch; log:\n{}", d.log());
    assert_denied(&d, "copy", "cp $BIN/terraform ./tf && ./tf apply");
    assert_denied(&d, "copy in /tmp", "t=$(mktemp -d /tmp/airlock-learn-XXXXXX) && cp $BIN/terraform $t/x && $t/x -chdir=infra apply; rm -rf $t");
    assert_denied(&d, "rename of a copy", "cp $BIN/terraform a && mv a deploy && ./deploy apply");
    assert_runs(&d, "a copy running an allowed command", "cp $BIN/terraform tf-ok && ./tf-ok plan");
    if Path::new("/usr/bin/unshare").exists() {
        assert_denied(&d, "bind mount over another program in a private mount namespace", "cp /bin/true other && unshare -m sh -c \"mount --bind $BIN/terraform $WORK/other && $WORK/other apply\"");
    } else {
        eprintln!("note: no unshare here; the bind-mount case was not run");
    }
    let status = d.status_text();
    assert!(status.contains("contents learned from sessions"), "status does not show the learned identities:\n{status}");
}

/// (ii) A `terraform` in no directory of the PATH at launch, run by its name,
/// is learned from that exec; (iii) the learned content still denies after a
/// reload and after a daemon restart.
fn learned_from_an_exec_survives_reload_and_restart() {
    let mut d = daemon("learn-exec");
    d.backend();
    let tools = d.work_dir.join("tools");
    other_tool(&tools);
    // Not known yet: a copy under another name runs (the test can fail).
    assert_runs(&d, "before learning, a copy is another program", "cp tools/terraform tf0 && ./tf0 apply");
    let before = learned(&d);
    assert_runs(&d, "terraform plan by its name", "tools/terraform plan");
    d.wait_status("the exec's terraform learned", |s| s["policy"]["learned_identities"].as_u64().unwrap_or(0) > before);
    assert_denied(&d, "copy of the learned program", "cp tools/terraform tf && ./tf apply");
    // Run by its name again, the file is not read again: the kernel reports its
    // content as already known as terraform, and nothing more is learned.
    let known = |s: &Value| s["policy"]["learn_already_known"].as_u64().unwrap_or(0);
    let (known_before, learned_now) = (known(&d.status_json()), learned(&d));
    assert_runs(&d, "terraform plan again", "tools/terraform plan");
    d.wait_status("the second exec counted as already known", |s| known(s) > known_before);
    assert_eq!(learned(&d), learned_now, "an exec of a known content learned something");

    // A reload (the policy file rewritten) keeps it.
    let generation = d.status_json()["policy"]["generation"].as_u64().unwrap_or(0);
    let file = d.policy_dir().join("policies/test-infra.json");
    std::fs::write(&file, format!("{APPLY_BLOCKED}\n")).expect("rewrite the policy");
    d.wait_status("the reload", |s| s["policy"]["generation"].as_u64().unwrap_or(0) > generation);
    assert_denied(&d, "copy after a reload", "cp tools/terraform tf2 && ./tf2 apply");

    // A restart keeps it: the file in the state dir.
    let saved = std::fs::read_to_string(d.state_dir.join("restart/learned-identities.json")).expect("the learned identities are saved");
    assert!(saved.contains("tools/terraform"), "{saved}");
    d.stop();
    d.restart();
    assert!(learned(&d) > before, "the learned identities were not loaded after the restart; log:\n{}", d.current_log());
    assert_denied(&d, "copy after a restart", "cp tools/terraform tf3 && ./tf3 apply");
}

kernel_tests!(learned_from_the_session_path_at_launch, learned_from_an_exec_survives_reload_and_restart);
