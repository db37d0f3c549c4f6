//! Kernel tests of the guard hooks (docs/bypasses.md 18 and 19;
//! protected credential files). A real daemon, real governed sessions run as
//! root, real attempts on the daemon and its kernel objects. Each test asserts
//! the outcome docs/security.md documents for the backend the daemon chose:
//! refused with EPERM on LSM, the offender killed (exit 137) on compat.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libbpf_rs::MapCore;
use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply"],
  "egress": { "deny": ["127.0.0.2/32"] } }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

fn daemon(tag: &str) -> Daemon {
    Daemon::start(tag, &[("test-infra.json", POLICY)], &[("agent.json", ROLE)])
}

/// Tries one thing and says how it went: `OP=ok`, `OP=errno<N>`. A process the
/// compat backend kills never prints; its shell reports 137.
const TAMPER_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int report(const char *op, long rc) {
    const char *label = getenv("TAMPER_LABEL");
    if (label) op = label;
    if (rc < 0) { printf("%s=errno%d\n", op, errno); return 1; }
    printf("%s=ok\n", op);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *op = argv[1];
    int pid = argc > 2 ? atoi(argv[2]) : 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(op, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        return report(op, syscall(SYS_bpf, BPF_PROG_GET_NEXT_ID, &attr, sizeof(attr)));
    }
    if (!strcmp(op, "signal")) return report(op, kill(pid, atoi(argv[3])));
    if (!strcmp(op, "ptrace")) return report(op, ptrace(PTRACE_SEIZE, pid, 0, 0));
    if (!strcmp(op, "vmread")) {
        char buf[8];
        struct iovec local = { buf, sizeof(buf) }, remote = { (void *)0x10000, sizeof(buf) };
        return report(op, syscall(SYS_process_vm_readv, pid, &local, 1, &remote, 1, 0));
    }
    if (!strcmp(op, "getfd")) {
        long pidfd = syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) return report("pidfd_open", pidfd);
        return report(op, syscall(SYS_pidfd_getfd, pidfd, 0, 0));
    }
    if (!strcmp(op, "module")) {
        static char image[64] = "not a module";
        return report(op, syscall(SYS_init_module, image, sizeof(image), ""));
    }
    if (!strcmp(op, "read") || !strcmp(op, "write")) {
        int fd = open(argv[2], (!strcmp(op, "read") ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
        if (fd < 0) return report(op, fd);
        char buf[256];
        long n = !strcmp(op, "read") ? read(fd, buf, sizeof(buf) - 1) : 0;
        if (n > 0) { buf[n] = 0; printf("content=%s\n", buf); }
        return report(op, 0);
    }
    if (!strcmp(op, "rmdir")) return report(op, rmdir(argv[2]));
    return 2;
}
"#;

/// The tamper tool, compiled once (a compile is seconds of a slow guest's only CPU).
fn tamper_tool(_d: &Daemon) -> PathBuf {
    cached_c_binary("tamper-tool", "tamper", TAMPER_C, &["-O2"])
}

/// The outcome line of one attempt: `OP=ok`, `OP=errno<N>`, or `rc<OP>=137` when killed.
fn outcome(s: &Session, op: &str) -> String {
    let out = s.all_output();
    if let Some(v) = out.lines().find_map(|l| l.strip_prefix(&format!("{op}="))) {
        return v.to_string();
    }
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("rc{op}=")))
        .map(|rc| format!("rc{rc}"))
        .unwrap_or_else(|| panic!("no outcome for {op}:\n{out}"))
}

/// What each backend documents for a refused tamper attempt.
fn expect_stopped(backend: &str, s: &Session, op: &str) {
    let got = outcome(s, op);
    let want = if backend == "lsm" { "errno1" } else { "rc137" };
    assert_eq!(got, want, "{op} on {backend}:\n{}", s.all_output());
}

fn tamper_lines(d: &Daemon, session: &str, reason: &str, operation: &str) -> Vec<Value> {
    d.wait_audit(&format!("tamper {reason}/{operation}"), |v| {
        v["session_id"] == session && v["kind"] == "tamper" && v["reason"] == reason && v["guard"]["operation"] == operation
    })
}

fn enforcement(backend: &str) -> &'static str {
    if backend == "lsm" {
        "refused"
    } else {
        "killed"
    }
}

fn attempt(tool: &Path, op: &str, args: &str) -> String {
    labelled(tool, op, op, args)
}

/// One attempt whose outcome is reported under `label`.
fn labelled(tool: &Path, label: &str, op: &str, args: &str) -> String {
    format!("TAMPER_LABEL={label} {} {op} {args}; echo \"rc{label}=$?\"\n", tool.display())
}

/// docs/bypasses.md 18: bpf(), signals, ptrace, memory and fd grabs aimed at the
/// daemon, module loading, as root inside a session. The daemon survives all
/// of it on both backends and keeps enforcing.
fn guard_tamper_with_the_daemon_is_refused_or_killed() {
    let mut d = daemon("tamper");
    let backend = d.backend();
    let tool = tamper_tool(&d);
    let pid = d.child.id();
    let mut script = String::new();
    script += &attempt(&tool, "bpf", "");
    script += &attempt(&tool, "signal", &format!("{pid} 15"));
    script += &attempt(&tool, "ptrace", &pid.to_string());
    script += &attempt(&tool, "vmread", &pid.to_string());
    script += &attempt(&tool, "getfd", &pid.to_string());
    script += &attempt(&tool, "module", "");
    // Still enforcing afterwards, in the same session.
    script += "terraform apply; echo \"rcapply=$?\"\n";
    let s = d.governed(Some("agent"), &script);
    assert!(!s.session_id.is_empty(), "{}", s.all_output());

    for op in ["bpf", "signal", "ptrace", "vmread", "getfd"] {
        expect_stopped(&backend, &s, op);
    }
    // A kernel built without module support has no init_module to guard (ENOSYS).
    let modules = Path::new("/proc/modules").exists();
    if modules {
        expect_stopped(&backend, &s, "module");
    } else {
        assert_eq!(outcome(&s, "module"), "errno38", "{}", s.all_output());
    }
    assert!(!s.tool_ran(), "terraform apply ran after the tamper attempts:\n{}", s.all_output());
    let killed = enforcement(&backend);
    for (reason, operation) in [
        ("tamper_bpf", "bpf"),
        ("tamper_signal", "kill"),
        ("tamper_ptrace", "ptrace"),
        ("tamper_ptrace", if backend == "lsm" { "ptrace" } else { "process_vm_readv" }),
        ("tamper_ptrace", if backend == "lsm" { "ptrace" } else { "pidfd_getfd" }),
    ] {
        let lines = tamper_lines(&d, &s.session_id, reason, operation);
        assert!(lines.iter().all(|v| v["decision"] == "deny" && v["guard"]["enforcement"] == killed), "{lines:#?}");
    }
    if modules {
        tamper_lines(&d, &s.session_id, "tamper_kernel_code", "init_module");
    }
    let signal = tamper_lines(&d, &s.session_id, "tamper_signal", "kill");
    assert_eq!(signal[0]["guard"]["argument"], 15);
    assert!(signal[0]["guard"]["target_pid"] == pid, "{signal:#?}");

    // The daemon is alive, answering, and counted every attempt.
    assert!(d.alive(), "the daemon stopped; log:\n{}", d.log());
    let status = d.status_json();
    assert!(status["counters"]["tamper"].as_u64().unwrap_or(0) >= 5, "{:#}", status["counters"]);
    let guarantees = status["guarantees"].to_string();
    let promise = if backend == "lsm" { "tamper: governed processes (root included) are refused" } else { "tamper DETECTED, not prevented" };
    assert!(guarantees.contains(promise), "{guarantees}");
    if backend == "compat" {
        // The SIGTERM was delivered, and the daemon ignored it because a governed process sent it.
        assert!(d.log().contains("signal from a governed process ignored"), "{}", d.log());
    }

    // Outside a session nothing is refused: root may still inspect BPF state.
    let out = Command::new(&tool).arg("bpf").output().expect("run tamper bpf");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bpf=ok"), "{out:?}");
}

/// docs/bypasses.md 18, the kernel's control file systems: bpffs (pins, and the
/// programs and maps behind them) and cgroupfs (cgroup.kill, freeze, moving
/// the daemon), and the daemon's /proc files opened for writing.
fn guard_control_filesystems_and_daemon_proc_files() {
    let d = daemon("controlfs");
    let backend = d.backend();
    let tool = tamper_tool(&d);
    let bpffs = mount_of("bpf").expect("the daemon mounts bpffs");
    let cgroup2 = mount_of("cgroup2").expect("cgroup2 is mounted");
    let scratch_pin = bpffs.join(format!("airlock-guard-test-{}", std::process::id()));
    let scratch_cg = cgroup2.join(format!("airlock-guard-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch_pin).expect("mkdir in bpffs");
    std::fs::create_dir_all(&scratch_cg).expect("mkdir a cgroup");
    let oom = format!("/proc/{}/oom_score_adj", d.child.id());

    let mut script = String::new();
    script += &attempt(&tool, "read", &bpffs.display().to_string());
    script += &attempt(&tool, "write", &scratch_cg.join("cgroup.procs").display().to_string());
    script += &labelled(&tool, "oom", "write", &oom);
    script += &attempt(&tool, "rmdir", &scratch_pin.display().to_string());
    let s = d.governed(Some("agent"), &script);

    let out = s.all_output();
    let want = if backend == "lsm" { "errno1" } else { "rc137" };
    assert_eq!(outcome(&s, "read"), want, "bpffs open:\n{out}");
    assert_eq!(outcome(&s, "write"), want, "cgroup.procs open for writing:\n{out}");
    assert_eq!(outcome(&s, "oom"), want, "the daemon's oom_score_adj opened for writing:\n{out}");

    let killed = enforcement(&backend);
    let lines = tamper_lines(&d, &s.session_id, "tamper_control_fs", "open");
    assert!(lines.iter().any(|v| v["guard"]["file"] == bpffs.display().to_string() && v["guard"]["enforcement"] == killed), "{lines:#?}");
    assert!(
        lines.iter().any(|v| v["guard"]["file"] == scratch_cg.join("cgroup.procs").display().to_string()),
        "{lines:#?}"
    );
    tamper_lines(&d, &s.session_id, "tamper_ptrace", "open");

    // Removing things in bpffs: refused on LSM; compat does not see it (documented gap).
    let rmdir = outcome(&s, "rmdir");
    if backend == "lsm" {
        assert_eq!(rmdir, "errno1", "{out}");
        assert!(scratch_pin.exists());
        tamper_lines(&d, &s.session_id, "tamper_control_fs", "rmdir");
    } else {
        assert_eq!(rmdir, "ok", "{out}");
    }
    let _ = std::fs::remove_dir(&scratch_pin);
    let _ = std::fs::remove_dir(&scratch_cg);
}

/// SIGKILL of the daemon by governed root: refused on LSM. On compat the
/// signal cannot be refused or ignored: the daemon dies with the offender
/// (documented gap; its enforcement goes with it unless pinned).
fn guard_sigkill_of_the_daemon() {
    let mut d = daemon("sigkill");
    let backend = d.backend();
    let tool = tamper_tool(&d);
    let pid = d.child.id();
    let s = d.governed(Some("agent"), &attempt(&tool, "signal", &format!("{pid} 9")));
    expect_stopped(&backend, &s, "signal");
    if backend == "lsm" {
        assert!(d.alive(), "the daemon died; log:\n{}", d.log());
        tamper_lines(&d, &s.session_id, "tamper_signal", "kill");
    } else {
        let deadline = Instant::now() + seconds(10);
        while d.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!d.alive(), "compat cannot stop SIGKILL, yet the daemon survived: docs/security.md is wrong");
        assert_eq!(d.child.try_wait().ok().flatten().and_then(|s| s.signal()), Some(9));
    }
}

/// Where a file system of this type is mounted, from /proc/self/mounts.
fn mount_of(fstype: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| PathBuf::from(target.replace("\\040", " ")))
    })
}

/// docs/bypasses.md 19: an exec and connect storm while the
/// daemon cannot read (stopped by the test, by pid) overflows the ring buffer
/// on purpose. Every blocked exec is still stopped and every denied connect
/// still gets EPERM; every lost event is counted by the kernel, and the audit
/// trail reports exactly that count.
fn guard_event_flood_drops_are_counted_and_decisions_hold() {
    // A 16 KiB ring holds about ten exec events: the storm must overflow it.
    let d = Daemon::start_with_args("flood", &[("test-infra.json", POLICY)], &[("agent.json", ROLE)], &["--ringbuf-kib", "16"]);
    let backend = d.backend();
    let (execs, connects) = (150, 2000);
    let go = d.work_dir.join("go");
    let storm = format!(
        r#"
while [ ! -e {go} ]; do sleep 0.05; done
blocked=0; ran=0; other=0
for i in $(seq 1 {execs}); do
  terraform apply >> ran.log 2>/dev/null; rc=$?
  case $rc in 126|137) blocked=$((blocked+1));; 0) ran=$((ran+1));; *) other=$((other+1));; esac
done
echo "execs blocked=$blocked ran=$ran other=$other"
python3 -c '
import socket
eperm = other = 0
for i in range({connects}):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.2", 9))
        other += 1
    except OSError as e:
        if e.errno == 1: eperm += 1
        else: other += 1
    finally:
        s.close()
print("connects eperm=%d other=%d" % (eperm, other))
'
"#,
        go = go.display()
    );
    let child = std::process::Command::new(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--", "bash", "-c", &storm])
        .current_dir(&d.work_dir)
        .env("PATH", d.path_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("launch the storm");
    let root = child.id();
    d.wait_status("the storm session", |s| s["sessions"].as_array().is_some_and(|a| a.iter().any(|x| x["root_pid"] == root)));
    let before = d.status_json()["counters"].clone();

    // The daemon stops reading; the kernel goes on deciding.
    let daemon = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the test's daemon");
    std::fs::write(&go, "").expect("start the storm");
    let out = child.wait_with_output();
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT the test's daemon");
    let out = out.expect("wait for the storm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();

    // Every decision was enforced.
    assert!(stdout.contains(&format!("execs blocked={execs} ran=0 other=0")), "exec storm on {backend}:\n{stdout}");
    assert!(stdout.contains(&format!("connects eperm={connects} other=0")), "connect storm on {backend}:\n{stdout}");
    let ran = std::fs::read_to_string(d.work_dir.join("ran.log")).unwrap_or_default();
    assert!(!ran.contains(RAN), "a blocked command ran during the flood:\n{ran}");

    // Every decision either reached the daemon or was counted lost, and the loss is in the trail.
    let drained = d.wait_status("the ring buffer drained", |s| {
        let c = &s["counters"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        n(&c["decisions"]) == n(&s["events_received"]) + n(&c["ringbuf_drops"])
    });
    let drops = drained["counters"]["ringbuf_drops"].as_u64().unwrap_or(0);
    let decided = drained["counters"]["decisions"].as_u64().unwrap_or(0) - before["decisions"].as_u64().unwrap_or(0);
    assert!(decided >= (execs + connects) as u64, "the kernel counted {decided} decisions for {execs} execs and {connects} connects");
    assert!(drops > 0, "a 16 KiB ring did not overflow: {:#}", drained["counters"]);
    let deadline = Instant::now() + seconds(15);
    let reported = loop {
        let lost: u64 = d.audit().iter().filter(|v| v["kind"] == "events_lost").filter_map(|v| v["events_lost"]["count"].as_u64()).sum();
        if lost == drops || Instant::now() > deadline {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reported, drops, "the audit trail's events_lost lines do not add up to the kernel's drop count");
    let last = d.audit().into_iter().rfind(|v| v["kind"] == "events_lost").expect("an events_lost line");
    assert_eq!(last["events_lost"]["total"], drops);
    assert!(d.status_text().contains(&format!("ringbuf_drops={drops}")));
    eprintln!("flood on {backend}: {decided} decisions, {drops} events lost and reported");
}

/// Prints a file's first bytes: installed as `aws`, the program the default
/// policy lets read the AWS credentials.
const READER_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    char buf[128];
    long n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0) return 1;
    buf[n] = 0;
    printf("content=%s\n", buf);
    return 0;
}
"#;

/// Issue 5 item 8: the default protected files (the test policy names none,
/// so the defaults apply) can be opened only by the programs the policy
/// allows: `aws` reads the AWS credentials, `cat` does not, whatever name or
/// link it reaches them by; a non-root session's renamed copy of `cat` is not `aws`.
fn guard_protected_files_open_only_for_allowed_programs() {
    let d = daemon("files");
    let backend = d.backend();
    let reader = compile_c(&d.work_dir, "reader", READER_C);
    std::fs::copy(&reader, d.bin_dir.join("aws")).expect("install the reader as aws");
    let home = d.work_dir.join("home");
    for (file, text) in [(".aws/credentials", "SECRET-AWS-KEY\n"), (".ssh/id_test", "SECRET-SSH-KEY\n"), (".ssh/known_hosts", "known-hosts-content\n")] {
        let path = home.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir in the test home");
        std::fs::write(&path, text).expect("write a credential file");
    }
    let blocked = if backend == "lsm" { "1" } else { "137" };
    let script = r#"
cat $HOME/.aws/credentials; echo "rccat=$?"
aws $HOME/.aws/credentials; echo "rcaws=$?"
ln $HOME/.aws/credentials $WORK/hardlink && cat $WORK/hardlink; echo "rchardlink=$?"
mv $HOME/.aws/credentials $WORK/moved && sleep 1 && cat $WORK/moved; echo "rcmoved=$?"; mv $WORK/moved $HOME/.aws/credentials
cat /proc/self/root$HOME/.aws/credentials; echo "rcalias=$?"
cat $HOME/.ssh/id_test; echo "rcssh=$?"
cat $HOME/.ssh/known_hosts; echo "rcknown=$?"
"#;
    let home_s = home.display().to_string();
    let s = d.governed_env(Some("agent"), script, &[("HOME", &home_s)]);
    let out = s.all_output();
    let rc = |name: &str| out.lines().find_map(|l| l.strip_prefix(&format!("rc{name}="))).unwrap_or_default().to_string();
    for name in ["cat", "hardlink", "moved", "alias", "ssh"] {
        assert_eq!(rc(name), blocked, "{name}: a protected file was opened by cat on {backend}:\n{out}");
    }
    assert_eq!(rc("aws"), "0", "aws may read the AWS credentials:\n{out}");
    assert_eq!(rc("known"), "0", "known_hosts is not protected:\n{out}");
    assert_eq!(out.matches("SECRET-AWS-KEY").count(), 1, "only aws may print the key:\n{out}");
    assert!(!out.contains("SECRET-SSH-KEY"), "{out}");
    assert!(out.contains("known-hosts-content"), "{out}");

    let killed = enforcement(&backend);
    // The ssh key was the last attempt: once its line is in, all earlier ones are too.
    d.wait_audit("the ssh key's deny", |v| {
        v["session_id"] == s.session_id.as_str() && v["kind"] == "file_open" && v["rule"] == "~/.ssh/id_*"
    });
    let denies: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|v| v["session_id"] == s.session_id.as_str() && v["kind"] == "file_open" && v["decision"] == "deny")
        .collect();
    let aws_denies: Vec<&Value> = denies.iter().filter(|v| v["rule"] == "~/.aws/credentials").collect();
    assert!(aws_denies.len() >= 4, "{denies:#?}");
    assert!(aws_denies.iter().all(|v| v["comm"] == "cat" && v["reason"] == "protected_file" && v["policy"] == "test-infra" && v["guard"]["enforcement"] == killed), "{aws_denies:#?}");
    for file in [home.join(".aws/credentials"), d.work_dir.join("hardlink"), d.work_dir.join("moved")] {
        assert!(aws_denies.iter().any(|v| v["guard"]["file"] == file.display().to_string()), "no deny naming {}: {aws_denies:#?}", file.display());
    }
    assert!(denies.iter().any(|v| v["rule"] == "~/.ssh/id_*" && v["guard"]["file"] == home.join(".ssh/id_test").display().to_string()), "{denies:#?}");
    d.wait_audit("aws's allowed open", |v| {
        v["session_id"] == s.session_id.as_str() && v["kind"] == "file_open" && v["decision"] == "allow" && v["comm"] == "aws"
    });
    assert!(d.status_json()["protected_files"].as_u64().unwrap_or(0) >= 2);

    // A non-root session: its own copy of cat named aws is not the aws the policy means.
    std::fs::remove_file(d.work_dir.join("hardlink")).expect("remove the hard link");
    chown_tree(&home, 65534);
    let nobody = "cp /bin/cat $HOME/aws && $HOME/aws $HOME/.aws/credentials; echo \"rccopy=$?\"\naws $HOME/.aws/credentials; echo \"rcaws=$?\"\n";
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(AGENT)
        .args(["launch", "--socket"])
        .arg(&d.socket)
        .args(["--role", "agent", "--", "bash", "-c", nobody])
        .current_dir(&home)
        .env("HOME", &home)
        .env("PATH", d.path_env())
        .output()
        .expect("launch as nobody");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("rccopy={blocked}")), "a non-root renamed copy of cat read the AWS key:\n{text}");
    assert!(text.contains("rcaws=0") && text.matches("SECRET-AWS-KEY").count() == 1, "{text}");

    // A protected file deleted everywhere is released: its inode number is
    // about to be another file's. Until then the daemon holds the inode, so
    // no other file can have its number while it is protected.
    let key = d.work_dir.join("key-to-delete");
    std::fs::write(home.join(".ssh/id_gone"), "SECRET-SSH-KEY\n").expect("write another key");
    std::fs::hard_link(home.join(".ssh/id_gone"), &key).expect("a second name for it");
    let inode = protected_inode_key(&key);
    let protected = d.bpf_map("protected_inode");
    let is_protected = || protected.lookup(&inode, libbpf_rs::MapFlags::ANY).expect("look up the protected inode").is_some();
    wait_until("the new key protected (the next watch tick)", is_protected);
    std::fs::remove_file(home.join(".ssh/id_gone")).expect("delete the key at its path");
    std::thread::sleep(seconds(2));
    assert!(is_protected(), "a protected file still linked elsewhere was released");
    std::fs::remove_file(&key).expect("delete its last name");
    wait_until("the deleted key released", || !is_protected());
}

/// The protected_inodes key of a file: (s_dev in the kernel's encoding, inode).
fn protected_inode_key(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat");
    let dev = ((libc::major(meta.dev()) << 20) | (libc::minor(meta.dev()) & 0xfffff)) as u32;
    let mut key = dev.to_ne_bytes().to_vec();
    key.extend_from_slice(&0u32.to_ne_bytes());
    key.extend_from_slice(&meta.ino().to_ne_bytes());
    key
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + seconds(15);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chown_tree(path: &Path, uid: u32) {
    let id = Some(nix::unistd::Uid::from_raw(uid));
    let gid = Some(nix::unistd::Gid::from_raw(uid));
    nix::unistd::chown(path, id, gid).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

/// docs/bypasses.md 18, Airlock's own files: a governed root must not relax the
/// policy by editing or replacing its files (the daemon reloads on change),
/// nor rewrite the audit trail. LSM refuses writes, creates, truncates,
/// renames and removals there; compat kills a process that opens them for
/// writing, and does not see rename or unlink (documented gap).
fn guard_airlock_own_files_cannot_be_rewritten() {
    let d = daemon("ownfiles");
    let backend = d.backend();
    let tool = tamper_tool(&d);
    let policy = d.policy_dir().join("policies").join("test-infra.json");
    let audit = d.state_dir.join("audit.jsonl");
    let gen = |s: &Value| s["policy"]["generation"].as_u64().unwrap_or(0);
    let first = gen(&d.status_json());
    let mut script = String::new();
    script += &labelled(&tool, "edit", "write", &policy.display().to_string());
    script += &labelled(&tool, "audit", "write", &audit.display().to_string());
    script += &format!("( : > {} ); echo \"rccreate=$?\"\n", d.policy_dir().join("roles").join("evil.json").display());
    // truncate(2) by path, no open (GNU truncate opens the file; Python's os.truncate does not).
    script += &format!(
        "python3 -c 'import os, sys; os.truncate(sys.argv[1], 0)' {} 2>/dev/null; echo \"rctruncate=$?\"\n",
        policy.display()
    );
    let s = d.governed(Some("agent"), &script);
    let out = s.all_output();
    let want = if backend == "lsm" { "errno1" } else { "rc137" };
    assert_eq!(outcome(&s, "edit"), want, "policy file opened for writing:\n{out}");
    assert_eq!(outcome(&s, "audit"), want, "audit trail opened for writing:\n{out}");
    let created = d.policy_dir().join("roles").join("evil.json").exists();
    let truncated = std::fs::metadata(&policy).map(|m| m.len() == 0).unwrap_or(true);
    if backend == "lsm" {
        assert!(out.contains("rccreate=1") && !created, "a file was created in the policy directory:\n{out}");
        assert!(out.contains("rctruncate=1") && !truncated, "the policy file was truncated:\n{out}");
        for operation in ["open", "create", "truncate"] {
            tamper_lines(&d, &s.session_id, "tamper_airlock_files", operation);
        }
    } else {
        // The creating open ran (the file exists, empty) and its process was killed before writing;
        // an empty policy file is invalid, so the reload is refused and the policy stays.
        assert!(out.contains("rccreate=137") && created, "{out}");
        let _ = std::fs::remove_file(d.policy_dir().join("roles").join("evil.json"));
        tamper_lines(&d, &s.session_id, "tamper_airlock_files", "open");
        // truncate(2) opens nothing: compat does not see it (documented gap). An empty
        // policy file is invalid, so the daemon refuses the reload and keeps the last good one.
        assert!(out.contains("rctruncate=0") && truncated, "{out}");
        d.wait_status("the refused reload", |s| !s["policy"]["last_reload_error"].is_null());
    }
    // Whatever happened, the policy in force is the one the test wrote, and it still blocks.
    std::thread::sleep(Duration::from_millis(1500));
    let s = d.governed(Some("agent"), "terraform apply");
    assert!(!s.tool_ran(), "{}", s.all_output());
    let status = d.status_json();
    assert!(gen(&status) <= first + 1, "the policy was replaced: {:#}", status["policy"]);
}

const FTRACE_SWITCH: &str = "/proc/sys/kernel/ftrace_enabled";

fn ftrace_switch() -> String {
    std::fs::read_to_string(FTRACE_SWITCH).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// Puts function tracing back on when the test ends, however it ends: the
/// machine's other tests and programs rely on it.
struct FtraceOn;

impl Drop for FtraceOn {
    fn drop(&mut self) {
        if ftrace_switch() == "0" {
            let _ = std::fs::write(FTRACE_SWITCH, "1");
        }
    }
}

/// kernel.ftrace_enabled at 0 makes the kernel skip every ftrace call site,
/// and with them the BPF trampolines every LSM program runs on. A governed
/// root cannot turn it off: LSM refuses the open (the shell cannot create the
/// redirection), compat kills the writer before it writes. Anyone else who
/// does finds it back on within a tick of an LSM daemon, and the exec check
/// refusing again.
fn guard_function_tracing_stays_on() {
    if !Path::new(FTRACE_SWITCH).exists() {
        harness::skip("this kernel has no kernel.ftrace_enabled (built without ftrace: no trampolines to switch off)");
    }
    let _restore = FtraceOn;
    let d = daemon("ftrace");
    let backend = d.backend();
    let s = d.governed(
        Some("agent"),
        &format!("sh -c 'echo 0 > {FTRACE_SWITCH}'; echo \"rcftrace=$?\"\nterraform apply; echo \"rcapply=$?\"\n"),
    );
    let out = s.all_output();
    assert_eq!(ftrace_switch(), "1", "a governed root turned function tracing off:\n{out}");
    if backend == "lsm" {
        assert!(out.contains("rcftrace=2") && out.contains("Operation not permitted"), "the open was not refused:\n{out}");
        assert!(out.contains("rcapply=126"), "the exec check did not refuse terraform apply:\n{out}");
    } else {
        assert!(out.contains("rcftrace=137"), "the writer was not killed:\n{out}");
        assert!(out.contains("rcapply=137"), "{out}");
    }
    let lines = tamper_lines(&d, &s.session_id, "tamper_control_fs", "open");
    assert!(
        lines.iter().any(|v| v["guard"]["file"] == FTRACE_SWITCH && v["guard"]["enforcement"] == enforcement(&backend)),
        "{lines:#?}"
    );
    if backend != "lsm" {
        return;
    }
    // Off by an ungoverned root: back on within a tick, and the hooks with it.
    // Meanwhile every LSM hook is off, for a test running beside this one
    // too, and its daemon would turn the switch back on instead of this one.
    harness::alone();
    if std::fs::write(FTRACE_SWITCH, "0").is_err() || ftrace_switch() != "0" {
        harness::skip_part("this kernel refuses to turn function tracing off (a permanent ftrace user, such as a live patch, holds it)");
        return;
    }
    // The daemon writes the switch first and logs after: both are waited for.
    let deadline = Instant::now() + seconds(15);
    while ftrace_switch() != "1" || !d.log().contains("kernel.ftrace_enabled was 0") {
        assert!(Instant::now() < deadline, "the daemon did not turn function tracing back on (it reads {}); log:\n{}", ftrace_switch(), d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = d.governed(Some("agent"), "terraform apply; echo \"rcapply=$?\"");
    assert!(s.all_output().contains("rcapply=126"), "the exec check is not back:\n{}", s.all_output());
}

kernel_tests!(
    guard_function_tracing_stays_on,
    guard_tamper_with_the_daemon_is_refused_or_killed,
    guard_control_filesystems_and_daemon_proc_files,
    guard_sigkill_of_the_daemon,
    guard_event_flood_drops_are_counted_and_decisions_hold,
    guard_protected_files_open_only_for_allowed_programs,
    guard_airlock_own_files_cannot_be_rewritten,
);
