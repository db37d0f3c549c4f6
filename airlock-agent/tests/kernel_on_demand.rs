//! Kernel tests of the on-demand hooks: the syscall tracepoints (every one
//! puts every task on the host on the syscall-tracing slow path) are attached
//! only while a governed process lives, before a session's first instruction,
//! and a restarted daemon that adopts the set attaches and detaches them too.
//! What is attached is read from the kernel: the links that use the programs
//! pinned in the set's `progs/`.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use serde_json::Value;
use support::*;

fn daemon(tag: &str) -> Daemon {
    Daemon::start(tag, &[("test-infra.json", APPLY_BLOCKED)], &[("agent.json", AGENT_ROLE)])
}

/// The programs pinned in the set's `progs/`: name and kernel id.
fn on_demand_programs(set: &Path) -> Vec<(String, u32)> {
    let mut programs: Vec<(String, u32)> = std::fs::read_dir(set.join("progs"))
        .expect("read the pinned programs")
        .flatten()
        .map(|e| {
            let path = std::ffi::CString::new(e.path().as_os_str().as_encoded_bytes()).expect("a pin path");
            // SAFETY: a valid C string; a returned fd is ours.
            let raw = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(path.as_ptr()) };
            assert!(raw >= 0, "open the pinned program {}", e.path().display());
            // SAFETY: the kernel just gave us this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
            // SAFETY: info is valid for len bytes.
            let rc = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
            assert_eq!(rc, 0, "read the program pinned at {}", e.path().display());
            (e.file_name().to_string_lossy().into_owned(), info.id)
        })
        .collect();
    programs.sort();
    programs
}

/// How many BPF links in the whole kernel attach each of `programs`.
fn links_per_program(programs: &[(String, u32)]) -> Vec<(String, usize)> {
    let links: Vec<u32> = libbpf_rs::query::LinkInfoIter::default().map(|l| l.prog_id).collect();
    programs.iter().map(|(name, id)| (name.clone(), links.iter().filter(|p| *p == id).count())).collect()
}

/// The on-demand hooks as status shows them: (program, attached).
fn on_demand_hooks(status: &Value) -> Vec<(String, bool)> {
    let mut hooks: Vec<(String, bool)> = status["hooks"]
        .as_array()
        .expect("status lists hooks")
        .iter()
        .filter(|h| h["on_demand"] == true)
        .map(|h| (h["program"].as_str().unwrap_or_default().to_string(), h["attached"] == true))
        .collect();
    hooks.sort();
    hooks
}

/// Asserts, from the kernel and from status, that the on-demand hooks are all
/// attached (one link each) or all detached (none).
fn assert_attached(d: &Daemon, want: bool, when: &str) {
    let status = d.wait_status(&format!("the on-demand hooks {} {when}", if want { "attached" } else { "detached" }), |s| {
        let hooks = on_demand_hooks(s);
        !hooks.is_empty() && hooks.iter().all(|(_, attached)| *attached == want)
    });
    let set = pinned_set(&d.pin_dir);
    let programs = on_demand_programs(&set);
    let hooks = on_demand_hooks(&status);
    assert_eq!(programs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), hooks.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), "every on-demand hook has its program pinned");
    let expected = if d.backend() == "lsm" { "airlock_enter_execve" } else { "airlock_compat_kill" };
    assert!(hooks.iter().any(|(n, _)| n == expected), "{expected} is not on demand: {hooks:?}");
    // The kernel frees a released link after a grace period: polled, bounded.
    let deadline = std::time::Instant::now() + seconds(15);
    loop {
        let counts = links_per_program(&programs);
        if counts.iter().all(|(_, links)| *links == usize::from(want)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{when}: links per program in the kernel {counts:?}, want {}\nstatus: {status:#}", usize::from(want));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (program, _) in &programs {
        assert_eq!(set.join("links").join(program).exists(), want, "{when}: the link pin of {program}");
    }
    assert!(d.status_text().contains(if want { "(on demand: attached" } else { "(on demand: detached" }), "{}", d.status_text());
}

/// What the on-demand hooks do, seen from the session. LSM: an allowed
/// `terraform plan` runs, which needs its argv captured at sys_enter_execve
/// (without it a program a rule names is refused, argv unknown). compat: a
/// signal to the daemon kills its sender at sys_enter_kill.
fn assert_governed(d: &Daemon, s: &mut LiveSession) {
    let (out, _) = s.run("terraform plan");
    assert!(out.contains(RAN), "the allowed terraform plan did not run: {out}");
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran: {out}");
    let (out, _) = s.run(&format!("(kill -CONT {}); echo sent=$?", d.pid()));
    let want = if d.backend() == "lsm" { "sent=1" } else { "sent=137" };
    assert!(out.contains(want), "a governed signal to the daemon was not stopped ({want} expected): {out}");
}

/// The link pin of the hook `assert_governed` relies on, in the set in force.
fn guard_link_pin(d: &Daemon) -> std::path::PathBuf {
    let program = if d.backend() == "lsm" { "airlock_enter_execve" } else { "airlock_compat_kill" };
    pinned_set(&d.pin_dir).join("links").join(program)
}

/// No session: detached. A session: attached before its first instruction,
/// and while a process of an ended session still runs. None left: detached.
fn syscall_tracepoints_follow_the_governed_processes() {
    let d = daemon("on-demand");
    assert_attached(&d, false, "with no session");

    let mut s = d.live_session("agent");
    assert_attached(&d, true, "while a session runs");
    assert_governed(&d, &mut s);

    // A link pin removed while the session runs: the daemon holds the link and pins it again.
    let pin = guard_link_pin(&d);
    std::fs::remove_file(&pin).expect("remove an on-demand link pin");
    let deadline = std::time::Instant::now() + seconds(15);
    while !pin.exists() {
        assert!(std::time::Instant::now() < deadline, "{} was not pinned again; log:\n{}", pin.display(), d.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_attached(&d, true, "after its link pin was removed");
    assert_governed(&d, &mut s);

    // A process that outlives its session's root is still governed.
    let (out, _) = s.run("setsid sleep 300 >/dev/null 2>&1 </dev/null & echo orphan=$!");
    let orphan: i32 = out.lines().find_map(|l| l.strip_prefix("orphan=")).and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("no orphan pid: {out}"));
    s.quit();
    d.wait_status("the session ended, its orphan tagged", |st| {
        st["sessions"].as_array().is_some_and(|a| !a.iter().any(|x| x["id"] == s.session_id.as_str())) && st["tagged_processes"].as_u64() == Some(1)
    });
    assert_attached(&d, true, "while the ended session's orphan runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), nix::sys::signal::Signal::SIGKILL).expect("kill the orphan by pid");
    assert_attached(&d, false, "once no governed process is left");

    // Attached again for the next session.
    let mut s = d.live_session("agent");
    assert_attached(&d, true, "for the next session");
    assert_governed(&d, &mut s);
    s.quit();
    assert_attached(&d, false, "after the next session");
}

/// A daemon that adopts the set finds the hooks as they were, detaches them
/// when the session ends, and attaches them from the pinned programs.
fn an_adopting_daemon_attaches_and_detaches_them() {
    let mut d = daemon("on-demand-adopt");
    let mut s = d.live_session("agent");
    assert_attached(&d, true, "before the restart");
    d.kill_hard();
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "with the daemon dead: {out}");
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "adopted", "log:\n{}", d.current_log());
    assert_attached(&d, true, "after the restart, the session still running");
    assert_governed(&d, &mut s);

    // A link pin removed while no daemon runs detaches that hook; the next
    // start finds governed processes and attaches it before anything else.
    let pin = guard_link_pin(&d);
    d.kill_hard();
    std::fs::remove_file(&pin).expect("remove an on-demand link pin");
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "adopted", "log:\n{}", d.current_log());
    assert!(d.current_log().contains("governed processes run without these hooks' links: attached again"), "{}", d.current_log());
    assert_attached(&d, true, "after a restart that found a link pin removed");
    assert_governed(&d, &mut s);
    s.quit();
    assert_attached(&d, false, "after the adopted session ended");

    d.kill_hard();
    d.restart();
    assert_eq!(d.status_json()["lifecycle"]["startup"]["kind"], "adopted", "log:\n{}", d.current_log());
    assert_attached(&d, false, "after a restart with no session");
    let mut s = d.live_session("agent");
    assert_attached(&d, true, "for a session of the adopting daemon");
    assert_governed(&d, &mut s);
    s.quit();
    assert_attached(&d, false, "after that session");
}

kernel_tests!(syscall_tracepoints_follow_the_governed_processes, an_adopting_daemon_attaches_and_detaches_them);
