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
    attached: bool,
    /// No scan before this (governed processes were found without a session).
    next_scan: Option<Instant>,
}

/// Keeps the on-demand hooks attached for as long as it lives.
pub struct Held<'a> {
    _state: MutexGuard<'a, State>,
}

impl OnDemand {
    /// The set's on-demand hooks, attached if any of their links is pinned.
    pub fn new(set: PinSet, hooks: &[Hook]) -> OnDemand {
        let hooks: Vec<Hook> = hooks.iter().filter(|h| h.on_demand).cloned().collect();
        let attached = hooks.iter().any(|h| set.link_path(&h.program).exists());
        OnDemand { set, hooks, state: Mutex::new(State { attached, next_scan: None }) }
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
            let program = program_by_id(id).with_context(|| format!("open program {id} of {}", hook.program))?;
            if let Some(dir) = prog_path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            }
            pins::pin_object(program.as_fd(), &prog_path)?;
            pinned.push(hook.program.clone());
        }
        Ok(pinned)
    }

    /// Attaches every on-demand hook not attached yet and pins its link.
    /// Returns the hold (no detaching until it is dropped) and the programs
    /// whose links were pinned now.
    pub fn attach(&self) -> Result<(Held<'_>, Vec<String>)> {
        let mut state = self.lock();
        let mut attached = Vec::new();
        let mut result = Ok(());
        for hook in &self.hooks {
            if self.set.link_path(&hook.program).exists() {
                continue;
            }
            match attach_pinned(&self.set, hook) {
                Ok(()) => attached.push(hook.program.clone()),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Partly attached counts as attached: the next idle check detaches it.
        state.attached |= !attached.is_empty() || result.is_ok();
        state.next_scan = None;
        result?;
        Ok((Held { _state: state }, attached))
    }

    /// Detaches the on-demand hooks when no governed process is left:
    /// `sessions_live` (cheap) rules that out first, then `governed()` looks
    /// for one in the tag maps. Returns the programs whose links were unpinned.
    pub fn detach_if_idle(&self, sessions_live: bool, governed: impl FnOnce() -> bool) -> Result<Vec<String>> {
        let mut state = self.lock();
        if !state.attached {
            return Ok(Vec::new());
        }
        if sessions_live {
            state.next_scan = None;
            return Ok(Vec::new());
        }
        let now = Instant::now();
        if state.next_scan.is_some_and(|at| now < at) {
            return Ok(Vec::new());
        }
        if governed() {
            state.next_scan = Some(now + RESCAN_EVERY);
            return Ok(Vec::new());
        }
        let mut detached = Vec::new();
        for hook in &self.hooks {
            let path = self.set.link_path(&hook.program);
            match std::fs::remove_file(&path) {
                Ok(()) => detached.push(hook.program.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("unpin {}", path.display())),
            }
        }
        state.attached = false;
        state.next_scan = None;
        Ok(detached)
    }
}

/// Attaches the program pinned for `hook` to its syscall tracepoint through
/// a perf-event link, and pins the link.
fn attach_pinned(set: &PinSet, hook: &Hook) -> Result<()> {
    let Some(syscall) = hook.attach_point.strip_prefix("tracepoint/syscalls/") else {
        bail!("{} attaches to {}, not a syscall tracepoint", hook.program, hook.attach_point);
    };
    let program = pins::open_pinned(&set.prog_path(&hook.program))?;
    let id = probe::syscall_tracepoint_id(syscall)?;
    let event = open_tracepoint_event(id).with_context(|| format!("open the perf event of {}", hook.attach_point))?;
    let link = create_perf_link(program.as_fd(), event.as_fd()).with_context(|| format!("attach {} to {}", hook.program, hook.attach_point))?;
    pins::pin_object(link.as_fd(), &set.link_path(&hook.program)).with_context(|| format!("pin the link of {}", hook.program))
}

/// A perf event on a tracepoint, counting on every CPU (BPF programs on
/// tracepoints run wherever the event fires, whatever CPU the event names).
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

fn program_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; a returned fd is ours.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
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

    #[test]
    fn detached_hooks_are_never_looked_at_and_a_live_session_needs_no_scan() {
        let on_demand = empty();
        assert!(!on_demand.attached());
        let none = on_demand.detach_if_idle(false, || panic!("scanned while detached")).expect("idle check");
        assert!(none.is_empty());
        drop(on_demand.attach().expect("attach"));
        assert!(on_demand.attached());
        on_demand.detach_if_idle(true, || panic!("scanned while a session is live")).expect("idle check");
        assert!(on_demand.attached());
    }

    #[test]
    fn governed_processes_without_a_session_are_looked_for_again_only_after_the_pause() {
        let on_demand = empty();
        drop(on_demand.attach().expect("attach"));
        on_demand.detach_if_idle(false, || true).expect("idle check");
        assert!(on_demand.attached(), "a governed process was found: still attached");
        on_demand.detach_if_idle(false, || panic!("scanned again before {RESCAN_EVERY:?}")).expect("idle check");
        // A session resets the pause: the scan after it ends is immediate.
        on_demand.detach_if_idle(true, || panic!("scanned while a session is live")).expect("idle check");
        on_demand.detach_if_idle(false, || false).expect("idle check");
        assert!(!on_demand.attached(), "nothing governed is left: detached");
    }

    #[test]
    fn a_hold_keeps_the_idle_check_waiting() {
        let on_demand = empty();
        let on_demand = std::sync::Arc::new(on_demand);
        let (held, _) = on_demand.attach().expect("attach");
        let checker = {
            let on_demand = on_demand.clone();
            std::thread::spawn(move || on_demand.detach_if_idle(false, || true).expect("idle check"))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!checker.is_finished(), "the idle check ran while a launch held the hooks");
        drop(held);
        checker.join().expect("the idle check");
        assert!(on_demand.attached());
    }
}
