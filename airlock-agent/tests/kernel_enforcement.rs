//! Kernel tests: a real daemon on this kernel, real governed sessions, real
//! processes. Each docs/bypasses.md item a matcher cannot decide alone is tried
//! from inside a session. Run as root (scripts/test.sh).

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};
use std::os::unix::process::ExitStatusExt;

use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply", "terraform destroy", "kubectl delete", "aws iam create-role"],
  "egress": { "deny": ["10.0.0.0/8"] }, "rules": [] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

fn daemon(tag: &str) -> Daemon {
    Daemon::start(tag, &[("test-infra.json", POLICY)], &[("agent.json", ROLE)])
}

/// The decision lines of one session.
fn session_lines(d: &Daemon, session: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    d.wait_audit(&format!("session {session}"), |v| v["session_id"] == session && pred(v))
}

fn assert_blocked(d: &Daemon, case: &str, script: &str, rule: &str) {
    let s = d.governed(Some("agent"), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(!s.tool_ran(), "{case}: the blocked command ran:\n{}", s.all_output());
    let denies = session_lines(d, &s.session_id, |v| v["kind"] == "exec" && v["decision"] == "deny");
    assert!(
        denies.iter().any(|v| v["rule"] == rule && v["policy"] == "test-infra"),
        "{case}: no deny line naming rule {rule:?}: {denies:#?}"
    );
}

fn assert_runs(d: &Daemon, case: &str, script: &str) {
    let s = d.governed(Some("agent"), script);
    assert!(s.tool_ran(), "{case}: an allowed command did not run:\n{}", s.all_output());
    assert!(s.output.status.success(), "{case}: exit {:?}:\n{}", s.output.status, s.all_output());
}

fn exec_bypasses_are_blocked() {
    let d = daemon("exec");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox is installed (busybox-static)");
    let cases: Vec<(&str, String)> = vec![
        // 1. paths, PATH, subshells, shells, scripts
        ("1 absolute path", "$BIN/terraform apply".into()),
        ("1 relative path", "cd $BIN && ./terraform apply".into()),
        ("1 PATH changed", "PATH=/nonexistent:$BIN terraform apply".into()),
        ("1 subshell", "(terraform apply)".into()),
        ("1 bash -c", "bash -c 'terraform apply'".into()),
        ("1 sh -c", "sh -c 'terraform apply'".into()),
        ("1 script file", "printf '#!/bin/sh\\nterraform apply\\n' > s.sh && chmod +x s.sh && ./s.sh".into()),
        // 2. symlink with another name
        ("2 symlink", "ln -sf $BIN/terraform tf && ./tf apply".into()),
        // 4. wrappers that exec their arguments
        ("4 env", "env terraform apply".into()),
        ("4 nice", "nice -n 1 terraform apply".into()),
        ("4 nohup", "nohup terraform apply".into()),
        ("4 timeout", "timeout 20 terraform apply".into()),
        ("4 setsid", "setsid -w terraform apply".into()),
        ("4 xargs", "echo apply | xargs terraform".into()),
        ("4 find -exec", "find $BIN -name terraform -exec {} apply \\;".into()),
        ("4 sudo", "sudo $BIN/terraform apply".into()),
        // 5. interpreters
        ("5 python os.execv", "python3 -c 'import os; os.execv(os.environ[\"BIN\"] + \"/terraform\", [\"terraform\", \"apply\"])'".into()),
        ("5 python subprocess", "python3 -c 'import subprocess; subprocess.run([\"terraform\", \"apply\"])'".into()),
        ("5 perl exec", "perl -e 'exec \"terraform\", \"apply\"'".into()),
        ("5 node child_process", "node -e 'require(\"child_process\").spawnSync(\"terraform\", [\"apply\"], {stdio: \"inherit\"})'".into()),
        // 6. options before the subcommand
        ("6 -chdir", "terraform -chdir=infra apply".into()),
        ("6 -auto-approve", "terraform -auto-approve apply".into()),
        // 9. multi-call binary: argv[0] decides
        ("9 busybox multi-call", format!("ln -sf {busybox} terraform && ./terraform apply")),
        // 10. path aliases
        ("10 /proc/self/root", "/proc/self/root$BIN/terraform apply".into()),
        // 12. double fork, daemonize, re-parenting
        ("12 double fork", "( ( terraform apply ) & wait ) & wait".into()),
        ("12 nohup in background", "nohup terraform apply & wait".into()),
    ];
    for (case, script) in &cases {
        assert_blocked(&d, case, script, "terraform apply");
    }
    assert_blocked(&d, "6 kubectl --context", "kubectl --context prod delete pod x", "kubectl delete");
    assert_blocked(&d, "6 kubectl -n", "kubectl -n default delete pod x", "kubectl delete");
    // A #! script named after the tool is the tool (the AWS CLI v1 is such a script).
    write_file(&d.bin_dir.join("aws"), "#!/bin/sh\necho FAKE-TOOL-RAN aws \"$@\"\n", 0o755);
    assert_blocked(&d, "#! script tool", "aws iam create-role --role-name x", "aws iam create-role");
}

fn allowed_commands_and_untagged_processes_run() {
    let d = daemon("allow");
    assert_runs(&d, "terraform plan", "terraform plan");
    assert_runs(&d, "terraform init", "terraform init");
    assert_runs(&d, "kubectl get pods", "kubectl get pods");
    assert_runs(&d, "terraform show plan-apply.out", "terraform show plan-apply.out");
    assert_runs(&d, "aws s3 ls", "aws s3 ls");

    // Untagged processes are never touched, even for a blocked command.
    let out = d.ungoverned("terraform apply");
    assert!(String::from_utf8_lossy(&out.stdout).contains(RAN), "an untagged terraform apply was blocked");
    assert!(out.status.success());
}

fn double_fork_reparented_to_init_stays_governed() {
    let d = daemon("reparent");
    let rc = d.work_dir.join("daemonized.rc");
    // setsid + a background subshell whose parent exits at once: it is re-parented.
    let s = d.governed(
        Some("agent"),
        &format!("setsid bash -c '( sleep 0.3; terraform apply; echo \"rc=$? ppid=$PPID\" > {} ) & exit 0'", rc.display()),
    );
    assert!(s.output.status.success(), "{}", s.all_output());
    let deadline = Instant::now() + seconds(15);
    while !rc.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&rc).expect("the daemonized shell wrote its result");
    // LSM refuses the exec (a shell reports 126); compat kills the new image (137).
    let want = if d.backend() == "lsm" { "rc=126" } else { "rc=137" };
    assert!(text.starts_with(want), "the daemonized terraform apply was not stopped as expected ({want}): {text}");
    session_lines(&d, &s.session_id, |v| v["decision"] == "deny" && v["rule"] == "terraform apply");
}

fn audit_lines_carry_every_field() {
    let d = daemon("audit");
    let s = d.governed(Some("agent"), "terraform plan; terraform -chdir=x apply");
    let deny = session_lines(&d, &s.session_id, |v| v["decision"] == "deny").remove(0);
    for field in ["time", "host", "session_id", "role", "agent", "pid", "ppid", "executable", "argv", "cwd", "decision", "policy", "rule", "backend", "reason"] {
        assert!(!deny[field].is_null(), "field {field} missing in {deny:#}");
    }
    assert_eq!(deny["role"], "agent");
    assert_eq!(deny["agent"], "bash");
    assert_eq!(deny["uid"], 0);
    assert_eq!(deny["user"], "root");
    assert_eq!(deny["backend"], d.backend().as_str());
    assert_eq!(deny["reason"], "rule");
    assert_eq!(deny["exec"]["matched_by"], "executable");
    assert_eq!(deny["argv"], serde_json::json!(["terraform", "-chdir=x", "apply"]));
    assert_eq!(deny["executable"], d.bin_dir.join("terraform").display().to_string());
    assert_eq!(deny["cwd"], d.work_dir.display().to_string());
    let allow = session_lines(&d, &s.session_id, |v| v["decision"] == "allow" && v["argv"][1] == "plan");
    assert_eq!(allow[0]["rule"], Value::Null);
    // The session's own shell was an audited exec too.
    session_lines(&d, &s.session_id, |v| v["kind"] == "exec" && v["argv"][0] == "bash");

    // Credentials on a command line never reach the trail.
    let s = d.governed(Some("agent"), "kubectl get pods --token=s3cr3t-value-1 && env API_TOKEN=s3cr3t-value-2 kubectl get pods");
    assert!(s.tool_ran(), "{}", s.all_output());
    let masked = session_lines(&d, &s.session_id, |v| v["argv"][0] == "kubectl" && v["argv"][3] == "--token=****");
    assert_eq!(masked[0]["decision"], "allow");
    session_lines(&d, &s.session_id, |v| v["argv"][0] == "env" && v["argv"][1] == "API_TOKEN=****");
    let trail = std::fs::read_to_string(d.state_dir.join("audit.jsonl")).expect("read the audit trail");
    assert!(!trail.contains("s3cr3t-value"), "a secret reached the audit trail");
}

fn argv_too_long_is_denied_only_for_ruled_programs() {
    let d = daemon("longargv");
    // 70 words is more than the kernel inspects (64).
    let s = d.governed(Some("agent"), "terraform plan $(seq 1 70)");
    assert!(!s.tool_ran(), "a terraform argv too long to inspect ran");
    let deny = session_lines(&d, &s.session_id, |v| v["decision"] == "deny");
    assert_eq!(deny[0]["reason"], "argv_too_long", "{deny:#?}");
    // A program no rule names runs whatever its length.
    let s = d.governed(Some("agent"), "/bin/echo FAKE-TOOL-RAN $(seq 1 2000) > /dev/null && echo FAKE-TOOL-RAN");
    assert!(s.tool_ran() && s.output.status.success(), "{}", s.all_output());
}

/// The kernel follows at most 16 partial matches at once. An argv that would
/// need more (17 rules share a program and each first word is given) is
/// denied, never judged on a partial view: fail closed (`match_overflow`).
fn an_argv_that_overflows_the_match_state_is_denied() {
    let rules: Vec<String> = (1..=17).map(|i| format!("\"terraform w{i} end\"")).collect();
    let policy = format!(r#"{{ "id": "test-infra", "name": "Many", "blocked_commands": [{}] }}"#, rules.join(", "));
    let d = Daemon::start("overflow", &[("test-infra.json", &policy)], &[("agent.json", ROLE)]);
    let words: Vec<String> = (1..=17).map(|i| format!("w{i}")).collect();
    let s = d.governed(Some("agent"), &format!("terraform {}", words.join(" ")));
    assert!(!s.tool_ran(), "an argv beyond the match state ran:\n{}", s.all_output());
    let deny = session_lines(&d, &s.session_id, |v| v["kind"] == "exec" && v["decision"] == "deny");
    assert_eq!(deny[0]["reason"], "match_overflow", "{deny:#?}");
    // Within the limit the rules decide as written.
    assert_runs(&d, "15 partial matches", &format!("terraform {}", words[..15].join(" ")));
    assert_blocked(&d, "a complete rule", "terraform w3 -x end", "terraform w3 end");
}

fn egress_is_denied_for_ipv4_ipv6_mapped_aliases_and_udp() {
    // Listeners first: their ports go into the policy.
    let allowed = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let denied_host = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let alias = TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0");
    let v6 = TcpListener::bind("[::1]:0").expect("bind ::1");
    let udp_allowed = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let (pa, pb, pc, pd) = (
        allowed.local_addr().unwrap().port(),
        denied_host.local_addr().unwrap().port(),
        alias.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    );
    let pu = udp_allowed.local_addr().unwrap().port();
    let policy = format!(
        r#"{{ "id": "net", "name": "Net", "egress": {{ "deny": [
            "10.0.0.0/8", "127.0.0.2/32",
            {{ "cidr": "127.0.0.0/8", "ports": [{pc}] }},
            {{ "cidr": "::1/128", "ports": [{pd}] }} ] }} }}"#
    );
    let d = Daemon::start("egress", &[("net.json", &policy)], &[("agent.json", r#"{"id":"agent","name":"A","policies":["net"]}"#)]);
    let probe = r#"
import socket, sys
def tcp(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect(addr); return "ok"
    except OSError as e:
        return "errno%d" % e.errno
    finally:
        s.close()
def udp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", addr); return "ok"
    except OSError as e:
        return "errno%d" % e.errno
    finally:
        s.close()
pa, pb, pc, pd, pu = map(int, sys.argv[1:6])
I4, I6 = socket.AF_INET, socket.AF_INET6
print("allowed", tcp(I4, ("127.0.0.1", pa)))
print("v4", tcp(I4, ("127.0.0.2", pb)))
print("mapped", tcp(I6, ("::ffff:127.0.0.2", pb)))
print("alias127", tcp(I4, ("127.0.0.3", pc)))
print("alias0", tcp(I4, ("0.0.0.0", pc)))
print("v6", tcp(I6, ("::1", pd)))
print("udp_denied", udp(("127.0.0.2", 53)))
print("udp_allowed", udp(("127.0.0.1", pu)))
"#;
    write_file(&d.work_dir.join("probe.py"), probe, 0o644);
    let s = d.governed(Some("agent"), &format!("python3 probe.py {pa} {pb} {pc} {pd} {pu}"));
    let results: std::collections::BTreeMap<&str, &str> =
        s.stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    let expect = [
        ("allowed", "ok"),
        ("v4", "errno1"),
        ("mapped", "errno1"),
        ("alias127", "errno1"),
        ("alias0", "errno1"),
        ("v6", "errno1"),
        ("udp_denied", "errno1"),
        ("udp_allowed", "ok"),
    ];
    for (name, want) in expect {
        assert_eq!(results.get(name).copied(), Some(want), "{name}: {}", s.all_output());
    }
    let denies = session_lines(&d, &s.session_id, |v| v["kind"] == "connect" && v["decision"] == "deny");
    assert!(denies.iter().any(|v| v["destination"]["address"] == "127.0.0.2" && v["rule"] == "127.0.0.2/32"), "{denies:#?}");
    // The socket hook carries no command line: the daemon fills it from the process's exec.
    assert!(
        denies.iter().all(|v| v["argv"].as_array().is_some_and(|a| a.iter().any(|w| w == "probe.py")) && v["cwd"] == d.work_dir.display().to_string()),
        "connect lines lack the process's argv or cwd: {denies:#?}"
    );
    session_lines(&d, &s.session_id, |v| v["kind"] == "sendmsg" && v["decision"] == "deny" && v["destination"]["port"] == 53);
    session_lines(&d, &s.session_id, |v| v["kind"] == "connect" && v["decision"] == "allow" && v["destination"]["port"] == pa);

    // The same probe outside a session reaches everything.
    let out = d.ungoverned(&format!("cd {} && python3 probe.py {pa} {pb} {pc} {pd} {pu}", d.work_dir.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("errno1"), "an untagged process was refused: {text}");
    drop((allowed, denied_host, alias, v6, udp_allowed));
}

fn launch_fails_closed() {
    let d = daemon("launch");
    let marker = d.work_dir.join("ran");
    let touch = format!("touch {}", marker.display());

    // Daemon not answering.
    let out = std::process::Command::new(AGENT)
        .args(["launch", "--socket", "/nonexistent/airlock.sock", "--", "bash", "-c", &touch])
        .output()
        .expect("run launch");
    assert_eq!(out.status.code(), Some(125), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not answering"));
    assert!(!marker.exists(), "the command ran without the daemon");

    // Unknown role.
    let out = std::process::Command::new(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "no-such-role", "--", "bash", "-c", &touch])
        .output()
        .expect("run launch");
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    assert!(!marker.exists(), "the command ran under an unknown role");

    // A governed process cannot start a second session to change its role.
    let agent = AGENT;
    let s = d.governed(Some("agent"), &format!("{agent} launch --socket {} --role agent -- true; echo nested=$?", d.socket.display()));
    assert!(s.stdout.contains("nested=125"), "{}", s.all_output());

    // The exit status is the command's.
    let s = d.governed(Some("agent"), "exit 7");
    assert_eq!(s.output.status.code(), Some(7));
}

fn status_shows_backend_hooks_and_live_sessions() {
    let d = daemon("status");
    let mut child = std::process::Command::new(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--", "sleep", "30"])
        .spawn()
        .expect("launch sleep");
    let root_pid = child.id();
    // The daemon lists a session before it tags its process, so that the first event finds
    // the session: a status read between the two shows the session and no tagged process.
    let status = d.wait_status("the sleep session and its tagged process", |s| {
        s["sessions"].as_array().is_some_and(|a| a.iter().any(|x| x["root_pid"] == root_pid))
            && s["tagged_processes"].as_u64().is_some_and(|n| n >= 1)
    });
    let backend = d.backend();
    let hooks: Vec<&str> = status["hooks"].as_array().unwrap().iter().filter_map(|h| h["program"].as_str()).collect();
    let expected: &[&str] = if backend == "lsm" {
        &["airlock_fork", "airlock_exit", "airlock_sched_exec", "airlock_enter_execve", "airlock_enter_execveat", "airlock_bprm_check", "airlock_socket_connect", "airlock_socket_sendmsg"]
    } else {
        &["airlock_fork", "airlock_exit", "airlock_sched_exec", "airlock_connect4", "airlock_connect6", "airlock_sendmsg4", "airlock_sendmsg6"]
    };
    for hook in expected {
        assert!(hooks.contains(hook), "{hook} not attached on {backend}: {hooks:?}");
    }
    let text = d.status_text();
    assert!(text.contains(&format!("backend:        {backend}")) && text.contains("role=agent"), "{text}");

    // Ended by pid; the session is then reported as exited.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(root_pid as i32), nix::sys::signal::Signal::SIGTERM).expect("kill sleep");
    let _ = child.wait();
    d.wait_status("the session's end", |s| {
        s["sessions"].as_array().is_some_and(|a| a.iter().all(|x| x["root_pid"] != root_pid))
    });
}

fn invalid_reload_keeps_the_last_good_policy() {
    let d = daemon("reload");
    let gen = |s: &Value| s["policy"]["generation"].as_u64().unwrap_or(0);
    let first = gen(&d.status_json());

    // A broken file: refused, the old policy stays in force.
    let bad = d.policy_dir().join("policies").join("broken.json");
    std::fs::write(&bad, "{ \"id\": \"broken\", \"name\": \"B\",\n  \"egress\": { \"deny\": [\"10.0.0.0/33\"] } }\n").expect("write bad policy");
    let status = d.wait_status("the refused reload", |s| !s["policy"]["last_reload_error"].is_null());
    let error = status["policy"]["last_reload_error"].as_str().unwrap();
    assert!(error.contains("broken.json") && error.contains("egress.deny[0]"), "{error}");
    assert_eq!(gen(&status), first, "a refused policy changed the generation");
    assert_blocked(&d, "after refused reload", "terraform apply", "terraform apply");
    assert_runs(&d, "after refused reload", "terraform init");

    // A good change: in force without a restart.
    std::fs::remove_file(&bad).expect("remove bad policy");
    let stricter = POLICY.replace("\"terraform apply\",", "\"terraform apply\", \"terraform init\",");
    std::fs::write(d.policy_dir().join("policies").join("test-infra.json"), stricter).expect("write policy");
    d.wait_status("the new policy", |s| gen(s) > first && s["policy"]["last_reload_error"].is_null());
    assert_blocked(&d, "after good reload", "terraform init", "terraform init");
    assert_blocked(&d, "after good reload", "terraform apply", "terraform apply");
}

fn a_blocked_exec_fails_as_its_backend_documents() {
    let d = daemon("outcome");
    let backend = d.backend();
    // The shell lives on a moment, so the block message can reach its stderr.
    let s = d.governed(Some("agent"), "terraform apply; echo \"rc=$?\"; sleep 3");
    assert!(!s.tool_ran(), "{}", s.all_output());
    let deny = session_lines(&d, &s.session_id, |v| v["decision"] == "deny").remove(0);
    // launch itself, straight into the blocked command.
    let direct = std::process::Command::new(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--"])
        .arg(d.bin_dir.join("terraform"))
        .arg("apply")
        .output()
        .expect("run launch");
    assert!(!String::from_utf8_lossy(&direct.stdout).contains(RAN));
    // The agent learns it was a policy block, and that it must stop.
    let stderr = String::from_utf8_lossy(&s.output.stderr);
    for line in [
        "airlock: POLICY BLOCK",
        "airlock: command=terraform apply",
        "airlock: rule=test-infra",
        "airlock: result=blocked; the real executable was not run.",
        "airlock: ai_instruction=Stop. Do not retry this command",
    ] {
        assert!(stderr.contains(line), "the governed shell's stderr lacks {line:?}:\n{stderr}");
    }
    if backend == "lsm" {
        // A clean refusal: execve returns EPERM, the shell says so and reports 126.
        assert!(s.stdout.contains("rc=126"), "{}", s.all_output());
        assert!(s.all_output().contains("Operation not permitted"), "{}", s.all_output());
        assert_eq!(deny["exec"]["stage"], "early");
        assert_eq!(direct.status.code(), Some(126), "{}", String::from_utf8_lossy(&direct.stderr));
    } else {
        // Killed before its first instruction: the shell reports 137.
        assert!(s.stdout.contains("rc=137"), "{}", s.all_output());
        assert_eq!(deny["exec"]["stage"], "new_image");
        assert_eq!(direct.status.signal(), Some(9), "{:?}", direct.status);
    }
}

/// docs/bypasses.md item 11: a second thread rewrites argv while execve runs. The
/// decision is made from the new image's own copy, so whatever the early check
/// saw, the program that runs never runs with the blocked arguments.
fn argv_rewrite_race_never_runs_the_blocked_command() {
    let d = daemon("race");
    let racer = d.work_dir.join("racer.c");
    std::fs::write(&racer, RACER_C).expect("write racer.c");
    let bin = d.work_dir.join("racer");
    let cc = std::process::Command::new("cc").args(["-O2", "-pthread", "-o"]).arg(&bin).arg(&racer).status().expect("run cc");
    assert!(cc.success(), "cc failed on racer.c");
    let attempts = 200;
    let s = d.governed(Some("agent"), &format!("{} $BIN/terraform {attempts}", bin.display()));
    let out = s.all_output();
    // What each run received as argv[1], exactly as the program saw it. A torn
    // copy ("apply" glued to the next string) is not the word "apply".
    let ran_with: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix(RAN))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .collect();
    let ran_apply = ran_with.iter().filter(|w| **w == "apply").count();
    let ran_plan = ran_with.iter().filter(|w| **w == "plan").count();
    assert_eq!(ran_apply, 0, "terraform ran with the rewritten, blocked argv:\n{out}");
    assert!(out.contains(&format!("racer: {attempts} attempts")), "the racer did not finish: {out}");
    let denies = d.audit().into_iter().filter(|v| v["session_id"] == s.session_id.as_str() && v["decision"] == "deny").count();
    assert!(ran_plan + denies > 0, "nothing ran and nothing was denied: {out}");
    eprintln!("race: {ran_plan} ran as plan, {} ran with a torn word, {denies} denied", ran_with.len() - ran_plan);
}

const RACER_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* argv[1] flips between "plan" and "apply" while the main thread execs. */
static char word[8] = "plan";
static volatile int stop;
static volatile unsigned long flips;

static void *flipper(void *arg) {
    (void)arg;
    while (!stop) {
        memcpy(word, "apply", 6);
        __sync_synchronize();
        memcpy(word, "plan\0", 6);
        __sync_synchronize();
        flips++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int attempts = atoi(argv[2]);
    for (int i = 0; i < attempts; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t t;
            pthread_create(&t, NULL, flipper, NULL);
            /* Exec only once the flipper is running flat out. */
            while (flips < 1000)
                ;
            char *args[] = {"terraform", word, NULL};
            execv(argv[1], args);
            _exit(126);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    printf("racer: %d attempts\n", attempts);
    return 0;
}
"#;

kernel_tests!(
    exec_bypasses_are_blocked,
    allowed_commands_and_untagged_processes_run,
    double_fork_reparented_to_init_stays_governed,
    audit_lines_carry_every_field,
    argv_too_long_is_denied_only_for_ruled_programs,
    an_argv_that_overflows_the_match_state_is_denied,
    egress_is_denied_for_ipv4_ipv6_mapped_aliases_and_udp,
    launch_fails_closed,
    status_shows_backend_hooks_and_live_sessions,
    invalid_reload_keeps_the_last_good_policy,
    a_blocked_exec_fails_as_its_backend_documents,
    argv_rewrite_race_never_runs_the_blocked_command,
);
