//! Restart tests: the enforcement is pinned in bpffs, so a daemon killed with
//! SIGKILL leaves it in force, and a new daemon re-adopts the live sessions
//! and audits what the kernel decided while no daemon ran.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde_json::Value;
use support::*;

fn policy(denied_port: u16) -> String {
    format!(
        r#"{{ "id": "test-infra", "name": "Test infra block", "status": "active",
  "blocked_commands": ["terraform apply", "kubectl delete"],
  "egress": {{ "deny": ["10.0.0.0/8", {{ "cidr": "127.0.0.2/32", "ports": [{denied_port}] }}] }} }}"#
    )
}
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["test-infra"] }"#;

/// A loopback connect from inside the session: prints "connect=ok" or "connect=errnoN".
const PROBE: &str = "import socket, sys\ns = socket.socket()\ns.settimeout(3)\ntry:\n    s.connect((sys.argv[1], int(sys.argv[2])))\n    print('connect=ok')\nexcept OSError as e:\n    print('connect=errno%d' % e.errno)\n";

fn connect_cmd(d: &Daemon, addr: &str, port: u16) -> String {
    let probe = d.work_dir.join("probe.py");
    if !probe.exists() {
        write_file(&probe, PROBE, 0o644);
    }
    format!("python3 {} {addr} {port}", probe.display())
}

/// The session id a pid carries in the pinned tag map, read directly from bpffs.
fn pinned_tag(set: &Path, pid: u32) -> Option<String> {
    let map = MapHandle::from_pinned_path(set.join("maps/tagged_procs")).expect("open the pinned tag map");
    let value = map.lookup(&pid.to_ne_bytes(), MapFlags::ANY).expect("look up the tag")?;
    let id = u64::from_ne_bytes(value[..8].try_into().expect("a tag holds a session id"));
    Some(format!("{id:016x}"))
}

fn lines_of(d: &Daemon, session: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    d.audit().into_iter().filter(|v| v["session_id"] == session && pred(v)).collect()
}

fn restart_after_sigkill_readopts_the_sessions_and_audits_the_backlog() {
    let denied = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = denied.local_addr().unwrap().port();
    let mut d = Daemon::start("restart", &[("test-infra.json", &policy(port))], &[("agent.json", ROLE)]);
    let backend = d.backend();
    let mut s = d.live_session("agent");
    let sid = s.session_id.clone();

    // Governed before the kill.
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran before the kill: {out}");
    let set = pinned_set(&d.pin_dir);
    assert_eq!(pinned_tag(&set, s.pid()).as_deref(), Some(sid.as_str()), "the session root is not tagged in the pinned map");

    let first_pid = d.pid();
    d.kill_hard();
    assert!(!d.socket.exists() || std::os::unix::net::UnixStream::connect(&d.socket).is_err(), "a killed daemon still answers");

    // While no daemon runs: the pinned programs still enforce.
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran while the daemon was down: {out}");
    let want_rc = if backend == "lsm" { "rc=126" } else { "rc=137" };
    assert!(out.contains(want_rc), "the blocked exec did not fail as the {backend} backend does ({want_rc}): {out}");
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "a denied connect was not refused with EPERM while the daemon was down: {out}");
    // A child forked now still gets the session's tag (it stays alive to be looked up).
    let (out, _) = s.run("sleep 300 & echo child=$!");
    let child: u32 = out.lines().find_map(|l| l.strip_prefix("child=")).and_then(|p| p.trim().parse().ok()).expect("child pid");
    assert_eq!(pinned_tag(&set, child).as_deref(), Some(sid.as_str()), "a child forked while the daemon was down is not tagged");
    // ...and is governed: a subshell (a fresh fork) running the blocked command.
    let (out, _) = s.run("(terraform -chdir=x apply); echo sub-rc=$?");
    assert!(!out.contains(RAN), "a forked subshell ran terraform apply while the daemon was down: {out}");
    // Nothing wrote those decisions to the trail yet: no daemon ran.
    let down_denies = |d: &Daemon| lines_of(d, &sid, |v| v["decision"] == "deny");
    let before_restart = down_denies(&d).len();

    d.restart();
    // The backlog is audited before the daemon answers: no waiting here.
    let denies = down_denies(&d);
    let connect_denies: Vec<&Value> = denies.iter().filter(|v| v["kind"] == "connect" && v["destination"]["port"] == port).collect();
    let exec_denies: Vec<&Value> = denies.iter().filter(|v| v["kind"] == "exec" && v["rule"] == "terraform apply").collect();
    assert!(
        !connect_denies.is_empty() && exec_denies.len() >= before_restart + 2,
        "the decisions made while the daemon was down are not in the audit trail when it answers: {denies:#?}\nlog:\n{}",
        d.current_log()
    );
    for line in exec_denies.iter().chain(connect_denies.iter()) {
        assert_eq!(line["role"], "agent", "{line:#}");
        assert_eq!(line["policy"], "test-infra", "{line:#}");
    }
    let log = d.current_log();
    let pos = |what: &str| log.find(what).unwrap_or_else(|| panic!("the restarted daemon's log lacks {what:?}:\n{log}"));
    assert!(pos("adopted the running enforcement") < pos("audited the decisions made while no daemon was running"), "{log}");
    assert!(pos("audited the decisions made while no daemon was running") < pos("policy in force"), "the backlog was not read first:\n{log}");

    // Status: the session is back, running, with its role; nothing was reloaded from scratch.
    let status = d.status_json();
    assert_ne!(status["pid"], first_pid);
    assert_eq!(status["lifecycle"]["startup"]["kind"], "adopted", "{status:#}");
    assert!(status["lifecycle"]["backlog_audited"].as_u64().unwrap_or(0) >= 3, "{status:#}");
    let sessions = status["sessions"].as_array().expect("sessions");
    let me = sessions.iter().find(|x| x["id"] == sid.as_str()).unwrap_or_else(|| panic!("the session was not re-adopted: {status:#}"));
    assert_eq!(me["role"], "agent");
    assert_eq!(me["state"], "running");
    assert_eq!(pinned_set(&d.pin_dir), set, "the restart replaced the pinned set instead of adopting it");

    // Enforcement and auditing carry on under the new daemon.
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran after the restart: {out}");
    let (out, _) = s.run("terraform plan");
    assert!(out.contains(RAN), "terraform plan was blocked after the restart: {out}");
    let deadline = std::time::Instant::now() + seconds(15);
    while lines_of(&d, &sid, |v| v["decision"] == "deny").len() <= denies.len() {
        assert!(std::time::Instant::now() < deadline, "no deny line after the restart; log:\n{}", d.current_log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "{out}");
    // The child forked while down is still governed, and reaped with the session.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), nix::sys::signal::Signal::SIGKILL);

    // The session ends: the new daemon reaps it.
    s.quit();
    d.wait_status("the session reaped", |st| st["sessions"].as_array().is_some_and(|a| a.iter().all(|x| x["id"] != sid.as_str())));
    // Each decision once: the event thread went on from where the backlog read
    // stopped (by now it has polled the ring many times).
    let chdir = lines_of(&d, &sid, |v| v["decision"] == "deny" && v["argv"][1] == "-chdir=x");
    assert_eq!(chdir.len(), 1, "the deny made while down is not in the trail exactly once: {chdir:#?}");
    let out = std::process::Command::new(AGENT).args(["sessions", "--json", "--socket"]).arg(&d.socket).output().expect("sessions");
    let all: Value = serde_json::from_slice(&out.stdout).expect("sessions --json");
    assert!(all.as_array().unwrap().iter().any(|x| x["id"] == sid.as_str() && x["state"] == "exited"), "{all:#}");
    eprintln!(
        "restart: {} decisions audited from the ring buffer after SIGKILL ({} exec denies, {} connect denies for the session)",
        status["lifecycle"]["backlog_audited"], exec_denies.len() - before_restart, connect_denies.len()
    );
    drop(denied);
}

fn restart_replaces_pins_of_another_build_without_a_gap() {
    let mut d = Daemon::start("replace", &[("test-infra.json", &policy(9))], &[("agent.json", ROLE)]);
    let mut s = d.live_session("agent");
    let sid = s.session_id.clone();
    let old_set = pinned_set(&d.pin_dir);
    d.kill_hard();

    // Make the pinned set look like another build's: its meta record names another object.
    let meta = MapHandle::from_pinned_path(old_set.join("meta")).expect("open the pinned meta record");
    let mut value = meta.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).expect("read meta").expect("meta present");
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    let mut record: Value = serde_json::from_slice(&value[..end]).expect("meta is JSON");
    record["object_hash"] = "0000000000000000".into();
    let json = serde_json::to_vec(&record).unwrap();
    value.iter_mut().for_each(|b| *b = 0);
    value[..json.len()].copy_from_slice(&json);
    meta.update(&0u32.to_ne_bytes(), &value, MapFlags::ANY).expect("rewrite meta");
    drop(meta);

    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "{out}");

    d.restart();
    let status = d.status_json();
    assert_eq!(status["lifecycle"]["startup"]["kind"], "replaced", "{status:#}");
    assert!(status["lifecycle"]["startup"]["reason"].as_str().unwrap_or_default().contains("0000000000000000"), "{status:#}");
    assert!(status["lifecycle"]["startup"]["tags_copied"].as_u64().unwrap_or(0) >= 1, "{status:#}");
    let new_set = pinned_set(&d.pin_dir);
    assert_ne!(new_set, old_set, "the old set is still pinned");
    assert!(!old_set.exists(), "the old set was not removed");
    assert!(d.current_log().contains("cannot be adopted"), "{}", d.current_log());
    // The decision made while down, by the old programs, still reached the trail.
    assert!(!lines_of(&d, &sid, |v| v["decision"] == "deny" && v["rule"] == "terraform apply").is_empty(), "{}", d.current_log());

    // The session lives on, governed by the new programs.
    assert_eq!(pinned_tag(&new_set, s.pid()).as_deref(), Some(sid.as_str()), "the tag was not carried into the new set");
    let running = status["sessions"].as_array().unwrap().iter().any(|x| x["id"] == sid.as_str() && x["role"] == "agent");
    assert!(running, "{status:#}");
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran after the replacement: {out}");
    let (out, _) = s.run("kubectl get pods");
    assert!(out.contains(RAN), "{out}");
    s.quit();
}

fn restart_after_stop_and_unload() {
    let mut d = Daemon::start("stop", &[("test-infra.json", &policy(9))], &[("agent.json", ROLE)]);
    // Without --release-on-exit, as systemd runs it: SIGTERM leaves the enforcement pinned.
    d.run_args.retain(|a| a != "--release-on-exit");
    d.kill_hard();
    // A set a daemon died building (maps pinned, no meta yet) is never adopted, and goes.
    let stale = d.pin_dir.join("set-000000000000-1-0");
    std::fs::create_dir_all(stale.join("maps")).expect("make an incomplete set");
    d.restart();
    let status = d.status_json();
    assert_eq!(status["lifecycle"]["startup"]["kind"], "adopted", "{status:#}");
    assert!(!stale.exists(), "the incomplete set was left in place; log:\n{}", d.current_log());
    let mut s = d.live_session("agent");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let _ = d.child.wait();
    assert!(d.current_log().contains("the enforcement stays pinned"), "{}", d.current_log());
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran after systemctl-stop-like SIGTERM: {out}");

    // unload refuses while a daemon holds the pins, and detaches when none does.
    let set = pinned_set(&d.pin_dir);
    let out = std::process::Command::new(AGENT).arg("unload").arg("--pin-dir").arg(&d.pin_dir).output().expect("unload");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!d.pin_dir.exists(), "unload left {}", d.pin_dir.display());
    assert!(!set.exists());
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(out.contains(RAN), "after unload the session should no longer be governed: {out}");
    s.quit();

    // A running daemon's pins cannot be unloaded from under it.
    d.restart();
    let out = std::process::Command::new(AGENT).arg("unload").arg("--pin-dir").arg(&d.pin_dir).output().expect("unload");
    assert!(!out.status.success(), "unload removed a running daemon's pins");
    assert!(String::from_utf8_lossy(&out.stderr).contains("running Airlock daemon"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A set whose link pin was removed while no daemon ran (its hook detached) is
/// not adopted as if whole: the next start attaches a complete new set with
/// the sessions' tags and removes the damaged one.
fn restart_repairs_a_set_with_a_missing_link_pin() {
    let denied = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = denied.local_addr().unwrap().port();
    let mut d = Daemon::start("repair", &[("test-infra.json", &policy(port))], &[("agent.json", ROLE)]);
    let hook = if d.backend() == "lsm" { "airlock_socket_connect" } else { "airlock_connect4" };
    let mut s = d.live_session("agent");
    let sid = s.session_id.clone();
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "{out}");
    let old_set = pinned_set(&d.pin_dir);
    d.kill_hard();
    std::fs::remove_file(old_set.join("links").join(hook)).expect("remove the link pin");

    d.restart();
    let status = d.status_json();
    assert_eq!(status["lifecycle"]["startup"]["kind"], "replaced", "{status:#}");
    let reason = status["lifecycle"]["startup"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(hook), "the reason does not name the missing link: {reason}");
    let new_set = pinned_set(&d.pin_dir);
    assert!(new_set.join("links").join(hook).exists(), "the new set lacks {hook}");
    assert!(!old_set.exists());
    assert!(status["sessions"].as_array().unwrap().iter().any(|x| x["id"] == sid.as_str()), "{status:#}");
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "the denied connect is not refused after the repair: {out}");
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "{out}");
    s.quit();
    drop(denied);
}

/// Whether a BPF program with this id still exists.
fn program_alive(id: u32) -> bool {
    // SAFETY: plain syscall wrapper; a returned fd is ours to close.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd >= 0 {
        // SAFETY: closing the fd we were just given.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// The programs the links pinned in `set` attach.
fn pinned_programs(set: &Path) -> Vec<(String, u32)> {
    let mut programs: Vec<(String, u32)> = std::fs::read_dir(set.join("links"))
        .expect("read the pinned links")
        .flatten()
        .map(|e| {
            let link = libbpf_rs::Link::open(e.path()).expect("open a pinned link");
            (e.file_name().to_string_lossy().into_owned(), link.info().expect("link info").prog_id)
        })
        .collect();
    programs.sort();
    programs
}

/// The store names of everything pinned in `set`, as the daemon names them.
fn store_names_of(set: &Path) -> Vec<String> {
    let set_name = set.file_name().unwrap().to_string_lossy().into_owned();
    let names_in = |sub: &str| -> Vec<String> { std::fs::read_dir(set.join(sub)).expect("read the set").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect() };
    let mut names: Vec<String> = names_in("maps").into_iter().map(|m| format!("airlock.{set_name}.map.{m}")).collect();
    names.extend(names_in("links").into_iter().map(|l| format!("airlock.{set_name}.link.{l}")));
    names.push(format!("airlock.{set_name}.meta"));
    names.sort();
    names
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Under systemd the daemon also hands every link and map of its set to the
/// unit's file descriptor store (the test plays systemd's side of the real
/// protocol). Governed root's way around the compat guard, SIGKILL of the
/// daemon and then removing the pins, then detaches nothing: PID 1 holds the
/// links. The next daemon is handed the descriptors back (LISTEN_FDS), checks
/// them, pins them again and adopts the very same programs; descriptors that
/// are not what their names say are ignored and leave the store. Stopping
/// the unit empties the store (systemd 252), and `unload` then detaches all.
fn fd_store_holds_the_enforcement_when_the_daemon_is_killed_and_the_pins_removed() {
    let denied = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = denied.local_addr().unwrap().port();
    let mut d = Daemon::start_under_service_manager("fdstore", &[("test-infra.json", &policy(port))], &[("agent.json", ROLE)]);
    let backend = d.backend();
    let set = pinned_set(&d.pin_dir);
    // With a session running, the on-demand hooks are attached and stored too.
    let mut s = d.live_session("agent");
    let sid = s.session_id.clone();
    let want = store_names_of(&set);
    let manager = d.manager.as_ref().expect("a service manager");
    manager.wait("every pinned object stored", |_, names| sorted(names.to_vec()) == want);
    assert!(manager.refused().is_empty(), "the service manager refused or dropped descriptors: {:#?}", manager.refused());
    assert!(
        want.len() * 2 <= manager.max(),
        "FileDescriptorStoreMax={} in the unit has no room for a replacement (two sets of {} descriptors)",
        manager.max(),
        want.len()
    );
    let stored_ids = sorted(manager.stored_ids().into_iter().map(|(n, id)| format!("{n}={id}")).collect());
    let status = d.status_json();
    assert_eq!(status["lifecycle"]["fd_store"]["active"], true, "{status:#}");
    assert_eq!(status["lifecycle"]["fd_store"]["stored"].as_u64(), Some(want.len() as u64), "{status:#}");
    let programs = pinned_programs(&set);

    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "{out}");

    // The attack: the daemon is SIGKILLed (compat delivers it) and the pins go.
    d.kill_hard();
    std::fs::remove_dir_all(&d.pin_dir).expect("remove the pins");
    for (program, id) in &programs {
        assert!(program_alive(*id), "{program} (program {id}) was detached with its pins although the store holds its link");
    }
    let want_rc = if backend == "lsm" { "rc=126" } else { "rc=137" };
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN) && out.contains(want_rc), "with the daemon dead and the pins removed, terraform apply was not refused: {out}");
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "with the daemon dead and the pins removed, a denied connect was not refused: {out}");

    // Descriptors that are not what their names say: handed back too, never used.
    let set_name = set.file_name().unwrap().to_string_lossy().into_owned();
    let devnull = || OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
    let bogus = [
        (format!("airlock.{set_name}.link.airlock_bogus"), d.manager.as_ref().expect("a service manager").dup_of(&format!("airlock.{set_name}.map.tagged_procs"))),
        (format!("airlock.{set_name}.map.quarantine_x"), devnull()),
        ("airlock.set-000000000001-1-0.link.airlock_fork".to_string(), devnull()),
        ("something-else".to_string(), devnull()),
    ];
    for (name, fd) in bogus {
        d.manager.as_ref().expect("a service manager").plant(&name, fd);
    }

    d.restart();
    let status = d.status_json();
    let fd = &status["lifecycle"]["fd_store"];
    assert_eq!(status["lifecycle"]["startup"]["kind"], "adopted", "the restarted daemon did not adopt the set it took back: {status:#}\nlog:\n{}", d.current_log());
    assert_eq!(fd["received"].as_u64(), Some(want.len() as u64 + 4), "{status:#}");
    assert_eq!(fd["taken_back"].as_u64(), Some(want.len() as u64), "{status:#}");
    assert_eq!(fd["repinned"].as_array().map(Vec::len), Some(want.len()), "every removed pin is pinned again: {status:#}");
    let ignored: Vec<String> = fd["ignored"].as_array().unwrap().iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(ignored.len(), 4, "{ignored:#?}");
    for why in ["not a BPF link but anon_inode:bpf-map", "not a BPF map but /dev/null", "meta record was not stored", "not an Airlock name"] {
        assert!(ignored.iter().any(|i| i.contains(why)), "no descriptor was ignored because {why:?}: {ignored:#?}");
    }
    assert_eq!(fd["withdrawn"].as_u64(), Some(4), "{status:#}");
    let log = d.current_log();
    assert!(log.contains("took the enforcement back from systemd's file descriptor store"), "{log}");
    assert!(log.contains("adopted the running enforcement"), "{log}");
    // The store holds links, not programs: the on-demand programs came back from their attached links.
    assert!(log.contains("the on-demand programs were pinned again from their links"), "{log}");
    assert!(std::fs::read_dir(set.join("progs")).is_ok_and(|mut d| d.next().is_some()), "no on-demand program is pinned again");

    // The same set, the same programs, pinned again where they were.
    assert_eq!(pinned_set(&d.pin_dir), set, "the set was not pinned again under its own name");
    assert_eq!(store_names_of(&set), want);
    assert_eq!(pinned_programs(&set), programs, "the restarted daemon does not hold the programs it was handed back");
    // The store holds the set once: nothing accumulated, the bogus entries left.
    let manager = d.manager.as_ref().expect("a service manager");
    manager.wait("the store back to the set alone", |_, names| sorted(names.to_vec()) == want);
    assert_eq!(sorted(manager.stored_ids().into_iter().map(|(n, id)| format!("{n}={id}")).collect()), stored_ids, "the store holds other objects than before");

    // Governed as before, and the session was re-adopted.
    let me = status["sessions"].as_array().unwrap().iter().find(|x| x["id"] == sid.as_str()).cloned();
    assert!(me.is_some_and(|m| m["state"] == "running"), "the session was not re-adopted: {status:#}");
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "terraform apply ran after the restart: {out}");
    let (out, _) = s.run("terraform plan");
    assert!(out.contains(RAN), "{out}");
    let (out, _) = s.run(&connect_cmd(&d, "127.0.0.2", port));
    assert!(out.contains("connect=errno1"), "{out}");

    // While systemd holds the links (the unit restarting), unload cannot detach and says why.
    d.kill_hard();
    let out = std::process::Command::new(AGENT).arg("unload").arg("--pin-dir").arg(&d.pin_dir).output().expect("unload");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("file descriptor store") && err.contains("systemctl stop"), "unload while the store holds the links: {err}");
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(!out.contains(RAN), "{out}");

    // The unit stops: the store is emptied, and nothing is attached any more.
    d.manager.as_ref().expect("a service manager").flush();
    let deadline = std::time::Instant::now() + seconds(15);
    while programs.iter().any(|(_, id)| program_alive(*id)) {
        assert!(std::time::Instant::now() < deadline, "programs still loaded after the store was emptied and the pins removed: {programs:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = std::process::Command::new(AGENT).arg("unload").arg("--pin-dir").arg(&d.pin_dir).output().expect("unload");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!d.pin_dir.exists());
    let (out, _) = s.run("terraform apply; echo rc=$?");
    assert!(out.contains(RAN), "after the store was emptied and unload ran, the session should no longer be governed: {out}");
    s.quit();
    eprintln!("fdstore: {} descriptors stored for one set ({} programs); FileDescriptorStoreMax={}", want.len(), programs.len(), d.manager.as_ref().unwrap().max());
    drop(denied);
}

kernel_tests!(
    restart_after_sigkill_readopts_the_sessions_and_audits_the_backlog,
    restart_replaces_pins_of_another_build_without_a_gap,
    restart_after_stop_and_unload,
    restart_repairs_a_set_with_a_missing_link_pin,
    fd_store_holds_the_enforcement_when_the_daemon_is_killed_and_the_pins_removed,
);
