//! The daemon's background threads besides the event thread: the watcher
//! (policy files, session ends, protected files, memory, systemd's watchdog),
//! the DNS refresher and the reload thread.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::agent::{lock, Agent};
use crate::kernel::types::Backend;

/// How often the watcher returns the allocator's free memory to the kernel.
const HEAP_TRIM_EVERY: Duration = Duration::from_secs(10);
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How often the files written by ended strict sessions are forgotten.
const FORGET_WRITTEN_EVERY: Duration = Duration::from_secs(10);

impl Agent {
    /// Every 0.5 s: asks for a reload if the policy files changed, marks
    /// sessions whose root process exited, keeps the LSM hooks' function
    /// tracing on ([`crate::kernel::ftrace`]), re-resolves the protected files,
    /// and feeds systemd's watchdog (from the loop that also reaps: a wedged
    /// daemon misses it and systemd restarts it).
    pub fn watch_loop(&self) -> Result<()> {
        let watchdog = sd_notify::watchdog_enabled();
        let mut last_ping = Instant::now();
        let mut last_trim = Instant::now();
        let mut last_forget = Instant::now();
        while !self.shutdown.load(Ordering::SeqCst) {
            std::thread::sleep(WATCH_EVERY);
            if last_trim.elapsed() >= HEAP_TRIM_EVERY {
                // After a burst of decisions the allocator holds what the burst needed.
                release_free_heap();
                last_trim = Instant::now();
            }
            let changed = lock(&self.policy).changed_on_disk();
            if changed {
                self.request_reload("policy directory changed");
            }
            for id in lock(&self.sessions).reap() {
                tracing::info!(session = %id, "session root exited");
            }
            let sessions_live = lock(&self.sessions).any_active();
            self.kernel.release_on_demand_if_idle(sessions_live, |detached| super::fd_store::withdraw_links(&self.fd_store, detached));
            if last_forget.elapsed() >= FORGET_WRITTEN_EVERY {
                let gone = self.kernel.maps().forget_written_of_ended();
                if gone > 0 {
                    tracing::debug!(entries = gone, "forgot the files written by ended strict sessions");
                }
                last_forget = Instant::now();
            }
            self.approvals_tick();
            self.security_tick();
            if let Err(e) = lock(&self.policy).apply_time_windows(&self.kernel) {
                tracing::error!("time windows: {e:#}");
            }
            if self.kernel.backend() == Backend::Lsm {
                match crate::kernel::ftrace::keep_on() {
                    Ok(true) => tracing::error!("kernel.ftrace_enabled was 0, which stops every LSM hook (their BPF trampolines are ftrace call sites); it is set back to 1"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("the LSM hooks need kernel.ftrace_enabled at 1: {e:#}"),
                }
            }
            // Files created (or replaced) since the last tick become protected.
            if let Err(e) = self.refresh_protected() {
                tracing::warn!("{e:#}");
            }
            if let Some(interval) = watchdog {
                if last_ping.elapsed() >= interval / 2 {
                    crate::systemd::notify(&[sd_notify::NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
            }
        }
        Ok(())
    }

    /// Re-resolves hostname rules whose answer expired. Lookups run without
    /// the policy lock; the answers are applied under it.
    pub fn dns_loop(&self) -> Result<()> {
        while !self.shutdown.load(Ordering::SeqCst) {
            let (due, client, next) = lock(&self.policy).hosts_due();
            if due.is_empty() {
                let nap = next.unwrap_or(WATCH_EVERY).min(WATCH_EVERY);
                std::thread::sleep(nap.max(Duration::from_millis(50)));
                continue;
            }
            let answers = client.resolve_all(&due);
            if let Err(e) = lock(&self.policy).refresh_hosts(&self.kernel, answers) {
                tracing::error!("hostname rules: {e:#}");
            }
        }
        Ok(())
    }

    /// Runs the reloads SIGHUP and the policy directory's watcher ask for.
    pub fn reload_loop(&self) -> Result<()> {
        loop {
            let mut request = lock(&self.reload_request);
            while request.is_none() && !self.shutdown.load(Ordering::SeqCst) {
                request = self.reload_wakeup.wait(request).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if self.shutdown.load(Ordering::SeqCst) {
                return Ok(());
            }
            let why = request.take().unwrap_or("reload");
            drop(request);
            match self.reload_now() {
                Ok((version, generation)) => {
                    tracing::info!(%version, generation, why, "policy reloaded")
                }
                Err(e) => tracing::error!(why, "{e:#}"),
            }
        }
    }
}

/// At most two glibc heaps (arenas) for all the daemon's threads. By default
/// every thread that allocates under contention gets a heap of its own, and
/// each keeps its own high-water mark resident: at 50,000 decisions/s that was
/// about 2.5 MB more peak RSS, for no CPU measurably saved. Call before the
/// daemon starts its threads.
pub fn limit_heap_arenas() {
    // SAFETY: mallopt only sets an allocator parameter.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) } != 1 {
        tracing::warn!("the allocator refused M_ARENA_MAX=2; every thread may get a heap of its own");
    }
}

/// Returns the allocator's free memory to the kernel. glibc keeps freed
/// blocks for reuse; after the large, short-lived allocations of loading (the
/// kernel's BTF) and of a policy compile, that is megabytes of resident memory
/// nothing will use again.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}
