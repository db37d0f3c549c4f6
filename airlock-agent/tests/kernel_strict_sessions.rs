//! Kernel tests for strict sessions (a role's `exec.deny_session_written`): a
//! session cannot execute a file it created or modified. A real daemon on this
//! kernel, real governed sessions. Each test asserts what docs/security.md
//! says for the backend in use, gaps included.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use libbpf_rs::MapCore;
use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply"] }"#;
const STRICT: &str = r#"{ "id": "strict", "name": "Strict", "policies": ["test-infra"], "exec": { "deny_session_written": true } }"#;
const PLAIN: &str = r#"{ "id": "plain", "name": "Plain", "policies": ["test-infra"] }"#;
/// A policy that lets the dynamic loader and fileless files run.
const LOOSE: &str = r#"{ "id": "loose", "name": "Loose", "exec": { "deny_direct_loader": false, "deny_fileless": false } }"#;
const PLAIN_LOOSE: &str = r#"{ "id": "plain-loose", "name": "Plain, loose policy", "policies": ["loose"] }"#;
const STRICT_LOOSE: &str = r#"{ "id": "strict-loose", "name": "Strict, loose policy", "policies": ["loose"], "exec": { "deny_session_written": true } }"#;

fn daemon(tag: &str) -> Daemon {
    Daemon::start_with(
        tag,
        &[("test-infra.json", POLICY), ("loose.json", LOOSE)],
        &[("strict.json", STRICT), ("plain.json", PLAIN), ("strict-loose.json", STRICT_LOOSE), ("plain-loose.json", PLAIN_LOOSE)],
        &[],
    )
}

fn written_deny(v: &Value, session: &str) -> bool {
    v["session_id"] == session && v["kind"] == "exec" && v["decision"] == "deny" && v["reason"] == "session_written"
}

/// Runs `script` in a session of `role`; the marker must not be printed and a
/// session_written deny of the session must reach the audit trail.
fn assert_denied(d: &Daemon, role: &str, case: &str, script: &str) -> Session {
    let s = d.governed(Some(role), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(!s.tool_ran(), "{case}: a file the session wrote ran:\n{}", s.all_output());
    let id = s.session_id.clone();
    d.wait_audit(&format!("{case}: a session_written deny in session {id}"), |v| written_deny(v, &id));
    s
}

fn assert_runs(d: &Daemon, role: &str, case: &str, script: &str) -> Session {
    let s = d.governed(Some(role), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(s.tool_ran(), "{case}: the program did not run:\n{}", s.all_output());
    let id = s.session_id.clone();
    let denies: Vec<Value> = d.audit().into_iter().filter(|v| written_deny(v, &id)).collect();
    assert!(denies.is_empty(), "{case}: session_written denies in a session whose program ran: {denies:#?}");
    s
}

/// Copies, modified copies, renamed and rewritten files: none of them runs in
/// a strict session, whatever its name or content.
fn strict_session_cannot_run_what_it_wrote() {
    let d = daemon("strict-copies");
    assert_denied(&d, "strict", "copy of /bin/true", "cp /bin/true ./t && ./t && echo FAKE-TOOL-RAN");
    // One byte appended: no content identity knows this file; the session wrote it.
    assert_denied(&d, "strict", "copy of a tool with a byte appended", "cp $BIN/kubectl ./kc && printf x >> ./kc && ./kc get pods");
    assert_denied(&d, "strict", "copy under the tool's own name", "mkdir -p b && cp $BIN/kubectl b/kubectl && b/kubectl get pods");
    // A rename keeps the inode: written in one place, moved into another, still the session's.
    assert_denied(&d, "strict", "written, then renamed", "cp $BIN/kubectl .stage && mv .stage ./moved && ./moved get pods");
    // Written through a shell redirection (open O_TRUNC), into a file the session did not create.
    let pre = d.ungoverned("cp $BIN/kubectl ./rewritten && chmod +x ./rewritten");
    assert!(pre.status.success(), "prepare: {}", String::from_utf8_lossy(&pre.stderr));
    assert_denied(&d, "strict", "a pre-existing file rewritten", "cat $BIN/kubectl > ./rewritten && ./rewritten get pods");
    // Downloads are files opened for writing like any other (here by python, not cp).
    assert_denied(
        &d,
        "strict",
        "written by python",
        "python3 -c 'import os, shutil, sys; shutil.copyfile(sys.argv[1], \"dl\"); os.chmod(\"dl\", 0o755)' $BIN/kubectl && ./dl get pods",
    );
    // creat(2) is an open for writing too (x86-64 has the system call; glibc's creat() uses openat).
    if std::env::consts::ARCH == "x86_64" {
        assert_denied(
            &d,
            "strict",
            "created by creat(2)",
            "python3 -c 'import ctypes, os, sys; fd = ctypes.CDLL(None, use_errno=True).syscall(85, b\"cr\", 0o755); os.write(fd, open(sys.argv[1], \"rb\").read())' $BIN/kubectl && ./cr get pods",
        );
    } else {
        harness::skip_part(format!("created by creat(2): no creat system call on {}", std::env::consts::ARCH));
    }
}

/// ld.so maps the program it loads, no exec of that file takes place: a strict
/// role keeps running the loader directly denied, even where its policies allow it.
fn strict_session_loader_stays_denied() {
    let d = daemon("strict-loader");
    let ld = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-x86-64.so.2"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a glibc dynamic loader is installed");
    let script = format!("cp $BIN/kubectl ./w && {ld} ./w get pods");
    let s = d.governed(Some("strict-loose"), &script);
    assert!(!s.tool_ran(), "the loader ran a written file:\n{}", s.all_output());
    let id = s.session_id.clone();
    d.wait_audit("a direct_loader deny", |v| v["session_id"] == id.as_str() && v["reason"] == "direct_loader");
    // The same policy in a role without the switch lets the loader run it.
    let s = d.governed(Some("plain-loose"), &format!("cp $BIN/kubectl ./w2 && {ld} ./w2 get pods"));
    assert!(s.tool_ran(), "the loader did not run in a role without the switch:\n{}", s.all_output());
}

/// What a strict session did not write runs: installed programs, files an
/// untagged process or another session wrote. And roles without the switch
/// are unaffected.
fn strict_session_runs_what_others_wrote() {
    let d = daemon("strict-others");
    assert_runs(&d, "strict", "an installed tool", "$BIN/kubectl get pods");
    assert_runs(&d, "strict", "/bin/true", "/bin/true && echo FAKE-TOOL-RAN");

    let pre = d.ungoverned("cp $BIN/kubectl ./by-untagged");
    assert!(pre.status.success(), "prepare: {}", String::from_utf8_lossy(&pre.stderr));
    assert_runs(&d, "strict", "written by an untagged process", "./by-untagged get pods");

    // Another strict session writes; this one runs it. Per session, not per role.
    let writer = d.governed(Some("strict"), "cp $BIN/kubectl ./by-other");
    assert!(writer.output.status.success(), "the writing session failed: {}", writer.all_output());
    assert_runs(&d, "strict", "written by another session", "./by-other get pods");

    // Reading a file it wrote is not executing it.
    assert_runs(&d, "strict", "reading a written file", "printf 'FAKE-TOOL-RAN\\n' > note.txt && cat note.txt");

    // The same steps in a role without the switch.
    assert_runs(&d, "plain", "plain role: copy of /bin/true", "cp /bin/true ./p && ./p && echo FAKE-TOOL-RAN");
    assert_runs(&d, "plain", "plain role: copy with a byte appended", "cp $BIN/kubectl ./pk && printf x >> ./pk && ./pk get pods");
}

/// Scripts the session wrote. LSM: the script itself reaches
/// bprm_check_security first, so `./s.sh` is refused; compat: the script is
/// gone by the time sched_process_exec runs (the interpreter is the file), so
/// it runs. `bash s.sh` hands the script to bash as a path the kernel never
/// resolves: it runs on both backends (docs/security.md says so).
fn strict_session_scripts_per_backend() {
    let d = daemon("strict-scripts");
    let lsm = d.backend() == "lsm";
    let write = "printf '#!/bin/sh\\necho FAKE-TOOL-RAN script\\n' > s.sh && chmod +x s.sh";
    if lsm {
        assert_denied(&d, "strict", "./s.sh (LSM)", &format!("{write} && ./s.sh"));
    } else {
        assert_runs(&d, "strict", "./s.sh (compat gap)", &format!("{write} && ./s.sh"));
    }
    assert_runs(&d, "strict", "bash s.sh (gap on both backends)", &format!("{write} && bash s.sh"));
    // A compiled program the session builds is a written file like any other.
    assert_denied(&d, "strict", "a program the session compiled", "printf 'int main(void){return 0;}\\n' > m.c && cc -o m m.c && ./m && echo FAKE-TOOL-RAN");
}

/// The records live in the kernel: a daemon restart adopts them, and a
/// replacement by another build (its programs and maps new) carries them over.
fn strict_session_records_survive_restart_and_replacement() {
    let mut d = daemon("strict-restart");
    let mut s = d.live_session("strict");
    let (out, rc) = s.run("cp $BIN/kubectl ./w1 && ./w1 get pods");
    assert!(!out.contains(RAN) && rc != 0, "a written file ran: rc={rc} {out}");

    d.kill_hard();
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "adopted", "log:\n{}", d.current_log());
    let (out, rc) = s.run("./w1 get pods");
    assert!(!out.contains(RAN) && rc != 0, "a written file ran after the restart: rc={rc} {out}");
    let (out, _) = s.run("cp $BIN/kubectl ./w2");
    assert!(!out.contains(RAN), "{out}");

    // Make the pinned set look like another build's: its meta record names another object.
    d.kill_hard();
    let sets: Vec<std::path::PathBuf> = std::fs::read_dir(&d.pin_dir)
        .expect("read the pin dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("set-")))
        .collect();
    assert_eq!(sets.len(), 1, "expected one pinned set: {sets:?}");
    let meta = libbpf_rs::MapHandle::from_pinned_path(sets[0].join("meta")).expect("open the pinned meta record");
    let mut value = meta.lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY).expect("read meta").expect("meta present");
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    let mut record: Value = serde_json::from_slice(&value[..end]).expect("meta is JSON");
    record["object_hash"] = "0000000000000000".into();
    let json = serde_json::to_vec(&record).expect("meta as JSON");
    value.iter_mut().for_each(|b| *b = 0);
    value[..json.len()].copy_from_slice(&json);
    meta.update(&0u32.to_ne_bytes(), &value, libbpf_rs::MapFlags::ANY).expect("rewrite meta");
    drop(meta);
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "replaced", "log:\n{}", d.current_log());
    for file in ["./w1", "./w2"] {
        let (out, rc) = s.run(&format!("{file} get pods"));
        assert!(!out.contains(RAN) && rc != 0, "{file} ran after the replacement: rc={rc} {out}\nlog:\n{}", d.current_log());
    }
    let (out, _) = s.run("$BIN/kubectl get pods");
    assert!(out.contains(RAN), "an installed program did not run after the replacement: {out}");
    s.quit();
}

/// Strict sessions' records go once no process of the session is left.
fn strict_session_records_are_forgotten_after_the_session() {
    let d = daemon("strict-forget");
    assert_denied(&d, "strict", "copy of /bin/true", "cp /bin/true ./t && ./t && echo FAKE-TOOL-RAN");
    let map = d.bpf_map("session_written");
    assert!(map.keys().next().is_some(), "the session's written files were not recorded");
    // The daemon sweeps every few seconds; poll, bounded by the harness's time scale.
    let mut left = usize::MAX;
    for _ in 0..60 {
        left = map.keys().count();
        if left == 0 {
            break;
        }
        std::thread::sleep(seconds(1));
    }
    assert_eq!(left, 0, "the ended session's written files are still recorded; log:\n{}", d.log());
}

kernel_tests!(
    strict_session_cannot_run_what_it_wrote,
    strict_session_runs_what_others_wrote,
    strict_session_scripts_per_backend,
    strict_session_loader_stays_denied,
    strict_session_records_survive_restart_and_replacement,
    strict_session_records_are_forgotten_after_the_session,
);
