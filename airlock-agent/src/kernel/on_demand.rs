//! Syscall tracepoints, attached only while a governed process lives.
//!
//! While any BPF program is attached to a syscall tracepoint, the kernel sets
//! `SYSCALL_WORK_SYSCALL_TRACEPOINT` on every task: every syscall of every
//! process, governed or not, takes the tracing slow path. Every program on
//! those tracepoints acts for governed processes only, so they are attached
//! when a session starts (before its process is tagged: the launch holds
//! [`Held`] until then) and detached once no governed process is left.
//!
//! Their programs stay pinned in the set (`progs/`), so a daemon that adopts
//! the set attaches them again; while attached, their links are pinned (and
//! stored with systemd) like every other. Governed processes only come from
//! the daemon's tag at launch and from forks of governed processes, so with
//! both tag maps empty none can appear before the next launch.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::libbpf_sys;

use super::pins::{self, PinSet};
use super::probe;
use super::types::Hook;

/// While processes of ended sessions still run, how often the tag maps are
/// scanned for them: a scan that finds nothing walks every bucket of
/// `tagged_procs`, sized to pid_max (about 10 ms at 4,194,304).
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The on-demand hooks of the set in force.
pub struct OnDemand {
    set: PinSet,
    hooks: Vec<Hook>,
    state: Mutex<State>,
}

struct State {
    /// Whether the hooks are attached (all of them; true of a set with none
    /// once a session asked for them).
    attached: bool,
    /// The links, held: a pin removed behind the daemon's back does not detach
    /// them, and the watcher pins them again.
    links: Vec<(String, OwnedFd)>,
    /// No scan before this (governed processes were found without a session).
    next_scan: Option<Instant>,
}

/// Keeps the on-demand hooks attached for as long as it lives.
pub struct Held<'a> {
    _state: MutexGuard<'a, State>,
}

impl OnDemand {
    /// The set's on-demand hooks, attached if any of their links is pinned
    /// (those links are held from now on).
    pub fn new(set: PinSet, hooks: &[Hook]) -> OnDemand {
        let hooks: Vec<Hook> = hooks.iter().filter(|h| h.on_demand).cloned().collect();
        let mut links = Vec::new();
        for hook in &hooks {
            let path = set.link_path(&hook.program);
            if !path.exists() {
                continue;
            }
            match pins::open_pinned(&path) {
                Ok(fd) => links.push((hook.program.clone(), fd)),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        let attached = !links.is_empty();
        OnDemand { set, hooks, state: Mutex::new(State { attached, links, next_scan: None }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn attached(&self) -> bool {
        self.lock().attached
    }

    /// Pins again the program of every on-demand hook whose pin is gone while
    /// its link is attached (a set taken back from systemd's file descriptor
    /// store after its pins were removed: the store holds links, not programs).
    pub fn repin_programs(&self) -> Result<Vec<String>> {
        let mut pinned = Vec::new();
        for hook in &self.hooks {
            let prog_path = self.set.prog_path(&hook.program);
            if prog_path.exists() {
                continue;
            }
            let link = libbpf_rs::Link::open(self.set.link_path(&hook.program))
                .with_context(|| format!("the program of {} is neither pinned nor attached", hook.program))?;
            let id = link.info().with_context(|| format!("read the link of {}", hook.program))?.prog_id;
            let program = pins::program_by_id(id).with_context(|| format!("open program {id} of {}", hook.program))?;
            if let Some(dir) = prog_path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            }
            pins::pin_object(program.as_fd(), &prog_path)?;
            pinned.push(hook.program.clone());
        }
        Ok(pinned)
    }

    /// Attaches every on-demand hook not attached yet and pins its link; all
    /// or none (a failure detaches what this call attached). Returns the hold
    /// (no detaching until it is dropped) and the programs attached now.
    pub fn attach(&self) -> Result<(Held<'_>, Vec<String>)> {
        let mut state = self.lock();
        let mut attached = Vec::new();
        for hook in &self.hooks {
            if state.links.iter().any(|(program, _)| *program == hook.program) {
                continue;
            }
            let path = self.set.link_path(&hook.program);
            let link = if path.exists() { pins::open_pinned(&path) } else { attach_pinned(&self.set, hook) };
            match link {
                Ok(fd) => {
                    state.links.push((hook.program.clone(), fd));
                    attached.push(hook.program.clone());
                }
                Err(e) => {
                    state.links.retain(|(program, _)| {
                        let new = attached.contains(program);
                        if new {
                            let _ = std::fs::remove_file(self.set.link_path(program));
                        }
                        !new
                    });
                    return Err(e);
                }
            }
        }
        state.attached = true;
        state.next_scan = None;
        Ok((Held { _state: state }, attached))
    }

    /// Detaches the on-demand hooks when no governed process is left:
    /// `sessions_live` (cheap) rules that out first, then `governed()` looks
    /// for one in the tag maps. `on_detached` gets the programs detached,
    /// under the same lock (a launch cannot attach them again meanwhile).
    /// While they stay attached, a link pin found removed is pinned again.
    pub fn detach_if_idle(&self, sessions_live: bool, governed: impl FnOnce() -> bool, on_detached: impl FnOnce(&[String])) {
        let mut state = self.lock();
        if !state.attached {
            return;
        }
        let now = Instant::now();
        let idle = if sessions_live {
            state.next_scan = None;
            false
        } else if state.next_scan.is_some_and(|at| now < at) {
            false
        } else if governed() {
            state.next_scan = Some(now + RESCAN_EVERY);
            false
        } else {
            true
        };
        if !idle {
            self.repin_links(&state);
            return;
        }
        let mut detached = Vec::new();
        for (program, link) in state.links.drain(..) {
            let path = self.set.link_path(&program);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The pin keeps it attached: the next attach takes it up again.
                Err(e) => tracing::error!("unpin {}: {e}", path.display()),
            }
            drop(link);
            detached.push(program);
        }
        state.attached = false;
        state.next_scan = None;
        on_detached(&detached);
    }

    fn repin_links(&self, state: &State) {
        for (program, link) in &state.links {
            let path = self.set.link_path(program);
            if path.exists() {
                continue;
            }
            match pins::pin_object(link.as_fd(), &path) {
                Ok(()) => tracing::warn!(pin = %path.display(), "the pin of an attached on-demand link was removed; it is pinned again"),
                Err(e) => tracing::error!("{e:#}"),
            }
        }
    }
}

/// Attaches the program pinned for `hook` to its syscall tracepoint through
/// a perf-event link, and pins the link.
fn attach_pinned(set: &PinSet, hook: &Hook) -> Result<OwnedFd> {
    let Some(syscall) = hook.attach_point.strip_prefix("tracepoint/syscalls/") else {
        bail!("{} attaches to {}, not a syscall tracepoint", hook.program, hook.attach_point);
    };
    let program = pins::open_pinned(&set.prog_path(&hook.program))?;
    let id = probe::syscall_tracepoint_id(syscall)?;
    let event = open_tracepoint_event(id).with_context(|| format!("open the perf event of {}", hook.attach_point))?;
    let link = create_perf_link(program.as_fd(), event.as_fd()).with_context(|| format!("attach {} to {}", hook.program, hook.attach_point))?;
    pins::pin_object(link.as_fd(), &set.link_path(&hook.program)).with_context(|| format!("pin the link of {}", hook.program))?;
    Ok(link)
}

/// A perf event on a tracepoint. It names CPU 0 as libbpf's does: a BPF
/// program on a tracepoint runs wherever the tracepoint fires.
fn open_tracepoint_event(tracepoint_id: u64) -> Result<OwnedFd> {
    let attr = libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: tracepoint_id,
        ..Default::default()
    };
    // SAFETY: a valid attribute for the call; a returned fd is ours.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const _, -1 as libc::pid_t, 0 as libc::c_int, -1 as libc::c_int, libbpf_sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A BPF link of `program` to the perf event (the link keeps the event).
fn create_perf_link(program: BorrowedFd<'_>, event: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: valid descriptors; no options; a returned fd is ours.
    let fd = unsafe { libbpf_sys::bpf_link_create(program.as_raw_fd(), event.as_raw_fd(), libbpf_sys::BPF_PERF_EVENT, std::ptr::null()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd).into());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set with no on-demand hook: the state machine alone, no kernel or pins.
    fn empty() -> OnDemand {
        OnDemand::new(PinSet { dir: "/nonexistent/airlock-set".into() }, &[])
    }

    fn detached(on_demand: &OnDemand, sessions_live: bool, governed: impl FnOnce() -> bool) -> bool {
        let mut called = false;
        on_demand.detach_if_idle(sessions_live, governed, |_| called = true);
        called
    }

    #[test]
    fn detached_hooks_are_never_looked_at_and_a_live_session_needs_no_scan() {
        let on_demand = empty();
        assert!(!on_demand.attached());
        assert!(!detached(&on_demand, false, || panic!("scanned while detached")));
        drop(on_demand.attach().expect("attach"));
        assert!(on_demand.attached());
        assert!(!detached(&on_demand, true, || panic!("scanned while a session is live")));
        assert!(on_demand.attached());
    }

    #[test]
    fn governed_processes_without_a_session_are_looked_for_again_only_after_the_pause() {
        let on_demand = empty();
        drop(on_demand.attach().expect("attach"));
        assert!(!detached(&on_demand, false, || true));
        assert!(on_demand.attached(), "a governed process was found: still attached");
        assert!(!detached(&on_demand, false, || panic!("scanned again before {RESCAN_EVERY:?}")));
        // A session resets the pause: the scan after it ends is immediate.
        assert!(!detached(&on_demand, true, || panic!("scanned while a session is live")));
        assert!(detached(&on_demand, false, || false));
        assert!(!on_demand.attached(), "nothing governed is left: detached");
    }

    #[test]
    fn a_hold_keeps_the_idle_check_waiting() {
        let on_demand = std::sync::Arc::new(empty());
        let (held, _) = on_demand.attach().expect("attach");
        let (started, checking) = std::sync::mpsc::channel();
        let checker = {
            let on_demand = on_demand.clone();
            std::thread::spawn(move || {
                started.send(()).expect("say the check starts");
                on_demand.detach_if_idle(false, || false, |_| {});
            })
        };
        checking.recv().expect("the checker started");
        std::thread::sleep(Duration::from_millis(100));
        assert!(on_demand.state.try_lock().is_err(), "the hold was not kept");
        assert!(!checker.is_finished(), "the idle check ran while a launch held the hooks");
        drop(held);
        checker.join().expect("the idle check");
        assert!(!on_demand.attached(), "once the hold is gone the idle check detaches");
    }
}
