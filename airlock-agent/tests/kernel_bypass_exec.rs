//! Kernel tests for the exec bypasses a program's name cannot decide
//! (docs/bypasses.md items 3, 7, 8 and the rechecks of 2, 9, 10): hard links and
//! copies, the dynamic loader run directly, fileless execution, interpreters
//! given the program as an operand. A real daemon on this kernel, real
//! governed sessions. Each test asserts what docs/security.md says for the
//! backend in use, gaps included.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply", "terraform destroy", "kubectl delete", "aws iam create-role"],
  "rules": [] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

/// The same rules with the fileless and loader denies switched off.
const POLICY_PERMISSIVE: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply", "terraform destroy", "kubectl delete", "aws iam create-role"],
  "exec": { "deny_fileless": false, "deny_direct_loader": false } }"#;

fn daemon(tag: &str, policy: &str, extra: &[&str]) -> Daemon {
    Daemon::start_with(tag, &[("test-infra.json", policy)], &[("agent.json", ROLE)], extra)
}

fn deny_lines(d: &Daemon, session: &str) -> Vec<Value> {
    d.wait_audit(&format!("a deny in session {session}"), |v| {
        v["session_id"] == session && v["kind"] == "exec" && v["decision"] == "deny"
    })
}

/// Runs `script` governed; the tool must not run and a deny line must satisfy `check`.
fn assert_denied(d: &Daemon, case: &str, script: &str, check: impl Fn(&Value) -> bool) {
    let s = d.governed(Some("agent"), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(!s.tool_ran(), "{case}: the blocked program ran:\n{}", s.all_output());
    let denies = deny_lines(d, &s.session_id);
    assert!(denies.iter().any(&check), "{case}: no deny line as expected: {denies:#?}");
}

fn assert_runs(d: &Daemon, case: &str, script: &str) -> Session {
    let s = d.governed(Some("agent"), script);
    assert!(s.tool_ran(), "{case}: an allowed program did not run:\n{}", s.all_output());
    s
}

fn rule(v: &Value, rule: &str, via: &str) -> bool {
    v["rule"] == rule && v["exec"]["matched_by"] == via
}

fn reason(v: &Value, reason: &str) -> bool {
    v["reason"] == reason
}

/// A directory of protected programs that are scripts, given to the daemon as
/// `--program-path`: `aws` (Python, like the AWS CLI v1) and `terraform` (sh).
fn script_tools() -> TempDir {
    let dir = trusted_dir("exec-tools");
    write_file(&dir.0.join("aws"), "#!/usr/bin/env python3\nimport sys\nprint(\"FAKE-TOOL-RAN\", *sys.argv)\n", 0o755);
    write_file(&dir.0.join("terraform"), "#!/bin/sh\necho FAKE-TOOL-RAN terraform \"$@\"\n", 0o755);
    dir
}

/// A directory only its owner can write to: the daemon fingerprints nothing
/// another user could replace, whatever the umask of the test run.
fn trusted_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod the tools dir");
    dir
}

fn loader() -> &'static str {
    ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-x86-64.so.2"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a glibc dynamic loader is installed")
}

fn busybox() -> &'static str {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is installed (busybox-static)")
}

/// Python that copies argv[1] into a memfd and executes the memfd (execveat AT_EMPTY_PATH).
const MEMFD_EXEC: &str = r#"
import os, sys
fd = os.memfd_create("payload", 0)
with open(sys.argv[1], "rb") as f:
    os.write(fd, f.read())
os.execve(fd, sys.argv[2:], dict(os.environ))
"#;

/// Python that copies argv[1] to argv[2], opens it, deletes it and executes the open file.
const DELETED_EXEC: &str = r#"
import os, shutil, sys
shutil.copy(sys.argv[1], sys.argv[2])
os.chmod(sys.argv[2], 0o755)
fd = os.open(sys.argv[2], os.O_RDONLY)
os.unlink(sys.argv[2])
os.execve(fd, sys.argv[3:], dict(os.environ))
"#;

/// docs/bypasses.md item 3: a hard link or a copy of the protected binary, under
/// another name, in the project or in /tmp, is the program it copies.
fn bypass_item3_hard_links_and_copies_are_the_program() {
    let d = daemon("exec-copies", POLICY, &[]);
    let status = d.status_json();
    assert!(
        status["policy"]["protected_contents"].as_u64().unwrap_or(0) >= 1,
        "the fake tools were not fingerprinted: {status:#}\nlog:\n{}",
        d.log()
    );
    let identity = |v: &Value| rule(v, "terraform apply", "identity");
    assert_denied(&d, "3 hard link", "ln $BIN/terraform tf-link && ./tf-link apply", identity);
    assert_denied(&d, "3 copy in the project", "cp $BIN/terraform deploy-tool && ./deploy-tool apply", identity);
    assert_denied(
        &d,
        "3 copy in /tmp",
        "t=$(mktemp -d /tmp/airlock-exec-XXXXXX) && cp $BIN/terraform $t/x && $t/x -chdir=infra apply; rm -rf $t",
        identity,
    );
    // Bytes the loader ignores (e_ident padding, the section header offset) change nothing.
    assert_denied(
        &d,
        "3 copy with padding bytes flipped",
        "cp $BIN/terraform padded && python3 -c 'import sys; b = bytearray(open(\"padded\", \"rb\").read()); b[9] ^= 0x5a; b[40] ^= 0x01; open(\"padded\", \"wb\").write(b)' && ./padded apply",
        identity,
    );
    // 10: a path alias of a copy is still the copy.
    assert_denied(&d, "10 /proc/self/root alias of a copy", "cp $BIN/terraform tf3 && /proc/self/root$WORK/tf3 apply", identity);
    // Copies of identical binaries (the fake tools are one binary) are all of their names.
    assert_denied(&d, "3 copy of kubectl", "cp $BIN/kubectl kc && ./kc delete pod x", |v| rule(v, "kubectl delete", "identity"));

    // The copy keeps the program's allowed commands.
    assert_runs(&d, "copy running an allowed command", "cp $BIN/terraform tf-ok && ./tf-ok plan");

    // Documented gap: a copy with bytes appended is another file (its size is
    // part of the identity); it is recorded, not recognised.
    let s = assert_runs(&d, "copy with bytes appended (gap)", "cp $BIN/terraform grown && printf junk >> grown && ./grown apply");
    d.wait_audit("the allowed grown copy", |v| {
        v["session_id"] == s.session_id.as_str() && v["decision"] == "allow" && v["argv"][0] == "./grown"
    });
}

/// docs/bypasses.md item 7: ld.so run directly is denied by default, whatever it loads.
fn bypass_item7_direct_loader_is_denied() {
    let d = daemon("exec-loader", POLICY, &[]);
    let ld = loader();
    let direct = |v: &Value| reason(v, "direct_loader") && v["exec"]["file_identity"].as_array().is_some_and(|a| a.iter().any(|f| f == "loader"));
    assert_denied(&d, "7 ld.so tool apply", &format!("{ld} $BIN/terraform apply"), direct);
    assert_denied(&d, "7 ld.so tool plan", &format!("{ld} $BIN/terraform plan"), direct);
    assert_denied(&d, "7 ld.so --library-path", &format!("{ld} --library-path /lib $BIN/terraform apply"), direct);
    // A copy of the loader is the loader by content.
    assert_denied(&d, "7 renamed copy of ld.so", &format!("cp {ld} ./myld && ./myld $BIN/terraform plan"), direct);
    // Programs that use the loader the ordinary way are not affected.
    assert_runs(&d, "an ordinary dynamic program", "terraform plan");
}

/// docs/bypasses.md item 7 where a policy allows the loader: the program it loads
/// is judged by name with its arguments.
fn bypass_item7_loader_allowed_by_policy_judges_the_loaded_program() {
    let d = daemon("exec-loader-allowed", POLICY_PERMISSIVE, &[]);
    let ld = loader();
    let loaded = |v: &Value| rule(v, "terraform apply", "loader");
    assert_denied(&d, "7 ld.so tool apply", &format!("{ld} $BIN/terraform apply"), loaded);
    assert_denied(&d, "7 ld.so --library-path X tool apply", &format!("{ld} --library-path /lib $BIN/terraform apply"), loaded);
    assert_denied(&d, "7 ld.so --argv0 X tool apply", &format!("{ld} --argv0 tf $BIN/terraform apply"), loaded);
    assert_runs(&d, "7 ld.so tool plan", &format!("{ld} $BIN/terraform plan"));
}

/// docs/bypasses.md item 8: memfd + execveat(AT_EMPTY_PATH), a deleted file, a
/// memfd #! script: denied by default. /proc/self/fd/N of a real file is that file.
fn bypass_item8_fileless_execution_is_denied() {
    let d = daemon("exec-fileless", POLICY, &[]);
    write_file(&d.work_dir.join("memfd_exec.py"), MEMFD_EXEC, 0o644);
    write_file(&d.work_dir.join("deleted_exec.py"), DELETED_EXEC, 0o644);
    write_file(&d.work_dir.join("hello.sh"), "#!/bin/sh\necho FAKE-TOOL-RAN hello\n", 0o755);
    let fileless = |v: &Value| reason(v, "fileless");
    assert_denied(&d, "8 memfd execveat", "python3 memfd_exec.py $BIN/terraform terraform plan", fileless);
    // The marker is quoted apart in argv: a block message quotes the command.
    assert_denied(&d, "8 memfd of an unprotected program", "python3 memfd_exec.py /bin/sh sh -c 'echo FAKE-TOOL-\"\"RAN'", fileless);
    assert_denied(&d, "8 deleted file via execveat", "python3 deleted_exec.py $BIN/terraform gone terraform plan", fileless);
    assert_denied(
        &d,
        "8 deleted file via /proc/self/fd",
        "cp $BIN/terraform gone2 && ( exec 3<gone2 && rm gone2 && /proc/self/fd/3 plan )",
        fileless,
    );
    assert_denied(&d, "8 memfd #! script", "python3 memfd_exec.py hello.sh hello.sh", fileless);

    // /proc/self/fd/N of a file that has a name is that file, judged by its name.
    assert_denied(&d, "8 /proc/self/fd of the real tool", "( exec 3<$BIN/terraform && /proc/self/fd/3 apply )", |v| {
        rule(v, "terraform apply", "executable")
    });
    assert_runs(&d, "8 /proc/self/fd allowed command", "( exec 3<$BIN/terraform && /proc/self/fd/3 plan )");
    // Untagged processes may do all of it.
    let out = d.ungoverned(&format!("cd {} && python3 memfd_exec.py $BIN/terraform terraform apply", d.work_dir.display()));
    assert!(String::from_utf8_lossy(&out.stdout).contains(RAN), "an untagged memfd exec was stopped");
}

/// docs/bypasses.md item 8 where a policy allows fileless execution: the content
/// still identifies a protected program.
fn bypass_item8_fileless_allowed_by_policy_still_matches_by_identity() {
    let d = daemon("exec-fileless-allowed", POLICY_PERMISSIVE, &[]);
    write_file(&d.work_dir.join("memfd_exec.py"), MEMFD_EXEC, 0o644);
    // The payload is named without a '/': a path operand of an interpreter
    // followed by blocked words would itself be judged as the program.
    assert_denied(&d, "8 memfd copy of terraform apply", "cp $BIN/terraform payload && python3 memfd_exec.py payload x apply", |v| {
        rule(v, "terraform apply", "identity") && v["exec"]["file_identity"].as_array().is_some_and(|a| a.iter().any(|f| f == "fileless"))
    });
    assert_runs(&d, "8 memfd copy of terraform plan", "cp $BIN/terraform payload && python3 memfd_exec.py payload x plan");
}

/// docs/bypasses.md issue item 4: an interpreter given the program as its operand
/// (`python3 /x/aws iam create-role`, `sh script`) runs that program.
fn bypass_interpreter_operand_is_the_program() {
    let tools = script_tools();
    let tools_dir = tools.0.display().to_string();
    let d = daemon("exec-interp", POLICY, &["--program-path", &tools_dir]);
    let t = &tools_dir;
    let interp = |rule_text: &'static str| move |v: &Value| rule(v, rule_text, "interpreter");
    assert_denied(&d, "4 python3 script", &format!("python3 {t}/aws iam create-role --role-name x"), interp("aws iam create-role"));
    assert_denied(&d, "4 python3 options first", &format!("python3 -u -B {t}/aws iam create-role"), interp("aws iam create-role"));
    assert_denied(&d, "4 python3 option with a value", &format!("python3 -W ignore {t}/aws iam create-role"), interp("aws iam create-role"));
    assert_denied(&d, "4 sh script", &format!("sh {t}/terraform apply"), interp("terraform apply"));
    assert_denied(&d, "4 bash script relative", &format!("cd {t} && bash ./terraform -chdir=x apply"), interp("terraform apply"));
    // A copy of the interpreter is the interpreter by content.
    assert_denied(
        &d,
        "4 renamed copy of python3",
        &format!("cp \"$(readlink -f \"$(command -v python3)\")\" ./py && ./py {t}/aws iam create-role"),
        interp("aws iam create-role"),
    );
    // busybox dispatches on its first operand.
    let bb = busybox();
    assert_denied(&d, "9 busybox sh script", &format!("{bb} sh {t}/terraform apply"), interp("terraform apply"));

    assert_runs(&d, "4 python3 script, allowed command", &format!("python3 {t}/aws s3 ls"));
    // Documented gap (both backends): a renamed copy of a script handed to its
    // interpreter is judged by the name it was given. The daemon detects it
    // afterwards by content.
    let s = assert_runs(&d, "4 renamed script copy via its interpreter (gap)", &format!("cp {t}/aws ./aws2 && python3 ./aws2 iam create-role"));
    d.wait_audit("the renamed script detected as aws", |v| {
        v["session_id"] == s.session_id.as_str()
            && v["decision"] == "allow"
            && v["exec"]["detected_program"]["program"] == "aws"
            && v["exec"]["detected_program"]["by"] == "content"
    });
    assert_runs(&d, "4 sh script, allowed command", &format!("sh {t}/terraform plan"));
    // An operand that merely mentions a protected name further on is not the program.
    assert_runs(&d, "4 unrelated script", "printf 'echo FAKE-TOOL-RAN \"$@\"\\n' > other.sh && sh other.sh terraform apply");
    // A path operand followed by blocked words is the program too, as with env or xargs.
    assert_denied(&d, "4 script handed the tool's path", &format!("sh other.sh {t}/terraform apply"), interp("terraform apply"));
}

/// Rechecks of docs/bypasses.md items 2, 3 and 9 for #! scripts and multi-call
/// binaries. A #! script under another name (symlink or copy) is blocked on
/// LSM, where the kernel shows the script file itself; on compat the kernel
/// only shows its interpreter, and this is the documented gap.
fn bypass_item2_item9_scripts_under_other_names_and_multi_call_binaries() {
    let tools = script_tools();
    let tools_dir = tools.0.display().to_string();
    // A protected name that is a multi-call binary: wget -> busybox.
    let multi = trusted_dir("exec-multi");
    std::os::unix::fs::symlink(busybox(), multi.0.join("wget")).expect("symlink wget -> busybox");
    let multi_dir = multi.0.display().to_string();
    let policy = r#"{ "id": "test-infra", "name": "T",
        "blocked_commands": ["terraform apply", "aws iam create-role", "wget"] }"#;
    let d = daemon("exec-recheck", policy, &["--program-path", &tools_dir, "--program-path", &multi_dir]);
    let t = &tools_dir;
    let lsm = d.backend() == "lsm";

    let symlinked = format!("ln -s {t}/aws ./myaws && ./myaws iam create-role");
    let copied = format!("cp {t}/aws ./aws-copy && ./aws-copy iam create-role");
    if lsm {
        assert_denied(&d, "2 symlinked #! script", &symlinked, |v| rule(v, "aws iam create-role", "executable") && v["exec"]["stage"] == "early");
        assert_denied(&d, "3 copied #! script", &copied, |v| rule(v, "aws iam create-role", "identity") && v["exec"]["stage"] == "early");
    } else {
        // Documented compat gap: at sched_process_exec the file is the interpreter.
        // It runs; the daemon detects afterwards what the script was.
        let s = assert_runs(&d, "2 symlinked #! script (compat gap)", &symlinked);
        d.wait_audit("the symlinked script detected as aws", |v| {
            v["session_id"] == s.session_id.as_str()
                && v["decision"] == "allow"
                && v["exec"]["filename"] == "./myaws"
                && v["exec"]["detected_program"]["program"] == "aws"
                && v["exec"]["detected_program"]["by"] == "name"
        });
        let s = assert_runs(&d, "3 copied #! script (compat gap)", &copied);
        d.wait_audit("the copied script detected as aws", |v| {
            v["session_id"] == s.session_id.as_str()
                && v["exec"]["filename"] == "./aws-copy"
                && v["exec"]["detected_program"]["program"] == "aws"
                && v["exec"]["detected_program"]["by"] == "content"
        });
    }
    // Both backends: the symlink's name is what argv[0] and the interpreter see,
    // so a symlink named after the tool is the tool.
    assert_denied(&d, "2 symlink named after the tool", &format!("ln -s {t}/terraform ./terraform && ./terraform apply"), |v| {
        v["rule"] == "terraform apply"
    });

    // 9: wget is busybox here; argv[0] decides, and busybox's other applets are not wget.
    let bb = busybox();
    assert_denied(&d, "9 wget symlink to busybox", &format!("{multi_dir}/wget -q -O- http://127.0.0.1:9/"), |v| v["rule"] == "wget");
    assert_denied(&d, "9 busybox wget", &format!("{bb} wget -q -O- http://127.0.0.1:9/"), |v| v["rule"] == "wget");
    assert_runs(&d, "9 other busybox applets", &format!("{bb} echo FAKE-TOOL-RAN"));
    // The code of `sh -c` is no program path, even when it ends in one.
    assert_runs(&d, "4 -c code ending in a tool's path", "bash -c 'echo FAKE-TOOL-RAN /usr/bin/wget'");
    assert_runs(&d, "4 -lc code ending in a tool's path", "sh -ec 'echo FAKE-TOOL-RAN /usr/bin/wget'");
    assert_runs(&d, "9 a copy of busybox is not wget", &format!("cp {bb} ./bb && (exec -a busybox ./bb echo FAKE-TOOL-RAN)"));
    assert!(d.log().contains("multi-call binary"), "the daemon did not report wget as multi-call:\n{}", d.log());
}

kernel_tests!(
    bypass_item3_hard_links_and_copies_are_the_program,
    bypass_item7_direct_loader_is_denied,
    bypass_item7_loader_allowed_by_policy_judges_the_loaded_program,
    bypass_item8_fileless_execution_is_denied,
    bypass_item8_fileless_allowed_by_policy_still_matches_by_identity,
    bypass_interpreter_operand_is_the_program,
    bypass_item2_item9_scripts_under_other_names_and_multi_call_binaries,
);
