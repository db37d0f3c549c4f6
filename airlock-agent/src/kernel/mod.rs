//! The kernel: probes which backend this kernel runs, loads, attaches and
//! pins the eBPF programs (or adopts a pinned set), and is the only writer of
//! BPF maps ([`maps::Maps`]).
//!
//! After attach the libbpf object is dropped: every map and link is pinned in
//! bpffs, and owned map handles opened from the pins keep the maps, so nothing
//! here borrows and the enforcement outlives the daemon.

pub mod fdstore;
pub mod ftrace;
mod load;
pub mod maps;
pub mod mounts;
pub mod on_demand;
pub mod pins;
mod probe;
pub mod types;

use std::os::fd::OwnedFd;
use std::path::Path;

use airlock_policy::Table;
use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, MapHandle};

use maps::Maps;
use pins::{PinRoot, PinSet};
pub use types::{Backend, BackendChoice, CounterTotals, Hook, KernelOptions, MapSizes, Startup};

/// The loaded and attached enforcement, pinned in bpffs so that it outlives
/// the daemon. Dropping it leaves the pins (and so the enforcement) in place;
/// only [`Kernel::release`] detaches.
pub struct Kernel {
    backend: Backend,
    hooks: Vec<Hook>,
    /// The links this daemon attached (empty when it adopted a set: the pins hold those).
    links: Vec<Link>,
    maps: Maps,
    sizes: MapSizes,
    pins: PinRoot,
    set: PinSet,
    startup: Startup,
    /// Sets of earlier daemons this one replaces; retired once the policy is in the new set.
    retiring: std::sync::Mutex<Vec<PinSet>>,
    released: bool,
    /// What this kernel cannot enforce with the chosen backend, for `status`.
    gaps: Vec<String>,
    /// What the descriptors systemd handed back at start came to.
    restored: fdstore::Restored,
    /// The syscall tracepoints, attached while a governed process lives.
    on_demand: on_demand::OnDemand,
}

impl Kernel {
    /// Probes the kernel, then adopts the compatible pinned set in the pin
    /// directory if one is running, else loads, attaches and pins a new one
    /// (carrying over the tags of any set it replaces).
    ///
    /// `inherited` are the descriptors systemd's file descriptor store handed
    /// back (name, descriptor): each is checked, what a valid set lacks in
    /// the pin directory is pinned again from them, and all are closed before
    /// the sets are looked at.
    pub fn start(opts: &KernelOptions, inherited: Vec<(String, OwnedFd)>) -> Result<Kernel> {
        mounts::require_root()?;
        mounts::ensure_pseudo_filesystems()?;
        probe::bump_memlock_rlimit();

        let backend = match opts.backend {
            BackendChoice::Compat => Backend::Compat,
            BackendChoice::Lsm => {
                probe::probe_lsm().context("the LSM backend was requested but BPF LSM programs do not run here")?;
                Backend::Lsm
            }
            BackendChoice::Auto => match probe::probe_lsm() {
                Ok(()) => Backend::Lsm,
                Err(e) => {
                    tracing::info!("BPF LSM unavailable ({e:#}); using the compat backend");
                    Backend::Compat
                }
            },
        };
        let pins = PinRoot::lock(&opts.pin_dir)?;
        let restored = fdstore::restore(&pins, inherited);
        let want = load::wanted_meta(backend, opts.sizes, Vec::new());
        let sets = pins.sets()?;
        // Newest first. A set is adopted only if it is this build's, complete,
        // and every map the daemon needs opens; anything else is replaced.
        let why_not = |set: &PinSet| -> Option<String> {
            set.incompatibility(&want).or_else(|| Maps::open(|name| set.map(name)).err().map(|e| format!("{e:#}")))
        };
        let adoptable = sets.iter().rev().find(|set| why_not(set).is_none()).cloned();
        let attached = match adoptable {
            Some(set) => load::adopt(pins, set, sets, backend, opts.sizes)?,
            None => {
                let reason = sets.last().and_then(why_not).unwrap_or_default();
                load::load_and_attach(pins, sets, reason, backend, opts.sizes)?
            }
        };
        let on_demand = on_demand::OnDemand::new(attached.set.clone(), &attached.hooks);
        match on_demand.repin_programs() {
            Ok(pinned) if !pinned.is_empty() => tracing::info!(programs = ?pinned, "the on-demand programs were pinned again from their links"),
            Ok(_) => {}
            // The program or its link is pinned (the set was adoptable), yet it did not open: launches are refused.
            Err(e) => tracing::error!("the on-demand hooks cannot be attached again: {e:#}"),
        }
        // Governed processes live (an adopted set whose link pins were removed
        // while no daemon ran): their hooks are attached before anything else.
        if attached.maps.any_governed() {
            let (_held, now) = on_demand.attach().context("attach the syscall tracepoints for the governed processes already running")?;
            if !now.is_empty() {
                tracing::warn!(hooks = ?now, "governed processes run without these hooks' links: attached again");
            }
        }
        Ok(Kernel {
            on_demand,
            backend: attached.backend,
            hooks: attached.hooks,
            links: attached.links,
            maps: attached.maps,
            sizes: attached.sizes,
            pins: attached.pins,
            set: attached.set,
            startup: attached.startup,
            retiring: attached.retiring.into(),
            released: false,
            gaps: attached.gaps,
            restored,
        })
    }

    /// What the descriptors systemd handed back at start came to.
    pub fn restored(&self) -> &fdstore::Restored {
        &self.restored
    }

    /// Every link and map of the set in force, and its meta record, opened
    /// from their pins under their store names (for systemd's file descriptor store).
    pub fn store_entries(&self) -> Result<Vec<fdstore::Entry>> {
        fdstore::entries(&self.set)
    }

    /// Every map operation.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    pub fn pin_dir(&self) -> &Path {
        self.pins.dir()
    }

    pub fn pinned_set(&self) -> &Path {
        &self.set.dir
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// Whether the on-demand hooks (the syscall tracepoints) are attached now.
    pub fn on_demand_attached(&self) -> bool {
        self.on_demand.attached()
    }

    /// Attaches the on-demand hooks for a process about to be tagged; they
    /// stay attached at least until the hold is dropped (after the tag).
    /// Also returns the links attached now, for systemd's descriptor store.
    pub fn hold_on_demand(&self) -> Result<(on_demand::Held<'_>, Vec<fdstore::Entry>)> {
        let (held, attached) = self.on_demand.attach().context("attach the syscall tracepoints")?;
        if !attached.is_empty() {
            tracing::info!(hooks = attached.len(), "a governed session starts: the syscall tracepoints are attached");
        }
        let entries = fdstore::link_entries(&self.set, &attached)?;
        Ok((held, entries))
    }

    /// Detaches the on-demand hooks if no governed process is left (none when
    /// `sessions_live`, else the tag maps are looked at). `withdraw` gets the
    /// store names of the links detached (for systemd's descriptor store),
    /// before a launch can attach them again.
    pub fn release_on_demand_if_idle(&self, sessions_live: bool, withdraw: impl FnOnce(&[String])) {
        self.on_demand.detach_if_idle(
            sessions_live,
            || self.maps.any_governed(),
            |detached| {
                tracing::info!(hooks = detached.len(), "no governed process is left: the syscall tracepoints are detached");
                let names: Vec<String> = detached.iter().map(|program| fdstore::link_name(&self.set, program)).collect();
                withdraw(&names);
            },
        );
    }

    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// How many entries a policy table's map holds.
    pub fn capacity(&self, table: Table) -> usize {
        let entries = match table {
            Table::Programs => self.sizes.programs,
            Table::Trie => self.sizes.trie,
            Table::Egress4 | Table::Egress6 | Table::EgressAllow4 | Table::EgressAllow6 => self.sizes.egress,
            Table::UnixRules => types::UNIX_RULES_CAPACITY,
            Table::FileRules => types::FILE_RULES_CAPACITY,
            Table::FileAllow => types::FILE_ALLOW_CAPACITY,
            Table::RuleLimits => types::RULE_LIMITS_CAPACITY,
        };
        entries as usize
    }

    /// Enforcement this kernel lacks with the chosen backend (shown by `status`).
    pub fn gaps(&self) -> &[String] {
        &self.gaps
    }

    /// Writes the policy generation (and the daemon's identity) to the config map.
    pub fn set_config(&self, policy_generation: u32) -> Result<()> {
        self.maps.set_config(self.backend, policy_generation)
    }

    /// Event ring buffers of replaced sets that speak this build's event format:
    /// what they hold was decided before the switch and belongs in the audit trail.
    pub fn retiring_events(&self) -> Vec<MapHandle> {
        let abi = load::abi_hash();
        self.retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|set| set.meta().is_ok_and(|m| m.abi_hash == abi))
            .filter_map(|set| set.map("events").ok())
            .collect()
    }

    /// Detaches and unpins the sets this daemon replaced. Call only once the
    /// policy is installed in the new set: until then the old programs enforce.
    pub fn retire_replaced(&self) {
        let sets = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for set in sets {
            match set.remove() {
                Ok(items) => {
                    tracing::info!(set = %set.dir.display(), items = items.len(), "detached and unpinned the replaced enforcement")
                }
                Err(e) => {
                    tracing::error!(set = %set.dir.display(), "could not fully remove a replaced pinned set: {e:#}")
                }
            }
        }
    }

    /// Detaches every program and removes the pins: enforcement ends
    /// (`run --release-on-exit`, `unload`, `uninstall`).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let mut result = Ok(());
        let retiring = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        // Our link fds go first; the pins are then the last references, and
        // removing them detaches (remove() waits until the programs are gone).
        self.links.clear();
        for set in std::iter::once(self.set.clone()).chain(retiring) {
            if let Err(e) = set.remove() {
                result = Err(e);
            }
        }
        let _ = std::fs::remove_dir(self.pins.dir());
        result
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if !self.released {
            // The pins keep the programs attached. Disconnecting stops libbpf from
            // detaching on close (it would disable a pinned perf-event link).
            for link in &mut self.links {
                link.disconnect();
            }
        }
    }
}

/// Removes every pinned set under `pin_dir`, which detaches its programs.
/// Refused while a daemon holds the directory: stop it first.
pub fn unload(pin_dir: &Path) -> Result<Vec<String>> {
    mounts::require_root()?;
    if !pin_dir.exists() {
        return Ok(Vec::new());
    }
    if PinRoot::is_locked(pin_dir)? {
        bail!(
            "a running Airlock daemon holds {}; stop it first (systemctl stop airlock-agent), or run it with --release-on-exit",
            pin_dir.display()
        );
    }
    let programs: Vec<u32> = pins::list_sets(pin_dir)?.iter().flat_map(|set| set.program_ids()).collect();
    let removed = pins::remove_all(pin_dir)?;
    let held = pins::programs_alive(&programs);
    if !held.is_empty() {
        // Under systemd the unit's file descriptor store holds the links while
        // the unit is active or restarting; stopping the unit empties it.
        bail!(
            "the pins are removed but programs {held:?} are still attached: something else holds their links. Under systemd that is the unit's file descriptor store while the unit is active or restarting: run `systemctl stop airlock-agent` (which empties it), then unload again"
        );
    }
    tracing::info!(pin_dir = %pin_dir.display(), removed = removed.len(), "enforcement unloaded");
    Ok(removed)
}
