//! The kernel loader: probes which backend this kernel runs, loads and attaches
//! the eBPF programs, and owns every map operation the daemon performs.
//!
//! After attach the libbpf object is dropped: the links keep the programs in
//! the kernel and owned map handles keep the maps, so nothing here borrows.

pub mod mounts;
pub mod pins;

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use airlock_common::abi::{self, as_bytes, from_bytes, Pod};
use airlock_ebpf::airlock::{AirlockSkelBuilder, OpenAirlockSkel};
use airlock_ebpf::probe_lsm::ProbeLsmSkelBuilder;
use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use pins::{PinMeta, PinRoot, PinSet};

/// Which enforcement the kernel gives us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// BPF LSM hooks: exec and connect refused with EPERM.
    Lsm,
    /// Tracepoints and cgroup hooks: exec killed before its first instruction, connect refused.
    Compat,
}

impl Backend {
    pub fn abi_value(self) -> u32 {
        match self {
            Backend::Lsm => abi::BACKEND_LSM,
            Backend::Compat => abi::BACKEND_COMPAT,
        }
    }

    pub fn from_abi(value: u32) -> Option<Backend> {
        match value {
            abi::BACKEND_LSM => Some(Backend::Lsm),
            abi::BACKEND_COMPAT => Some(Backend::Compat),
            _ => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Lsm => "lsm",
            Backend::Compat => "compat",
        })
    }
}

/// What the operator asked for; `Auto` probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Lsm,
    Compat,
}

/// One attached program, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    pub program: String,
    pub attach_point: String,
}

/// Entries of the unix_rules map (fixed in maps.h).
pub const UNIX_RULES_CAPACITY: u32 = 16_384;
/// guard: capacities of the protected-file maps (fixed in maps.h).
pub const FILE_RULES_CAPACITY: u32 = 16_384;
pub const FILE_ALLOW_CAPACITY: u32 = 65_536;
pub const PROTECTED_INODES_CAPACITY: usize = 16_384;

/// Sizes of the maps the policy and sessions fill.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    pub programs: u32,
    pub trie: u32,
    pub egress: u32,
    pub ringbuf_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        // 4 MiB of events: the daemon drains every 200 ms and is woken at 512 KiB,
        // and the consumer's mapping of the ring counts twice in its RSS.
        MapSizes { programs: 65_536, trie: 262_144, egress: 131_072, ringbuf_bytes: 4 << 20 }
    }
}

/// The maps the daemon reads and writes, as owned handles.
pub struct Maps {
    pub tagged_procs: MapHandle,
    pub quarantine: MapHandle,
    pub role_sets: MapHandle,
    pub programs: MapHandle,
    pub trie: MapHandle,
    pub egress4: MapHandle,
    pub egress6: MapHandle,
    pub counters: MapHandle,
    pub config: MapHandle,
    pub events: MapHandle,
    /// api (issue 4): sessions revoked through the API.
    pub revoked_sessions: MapHandle,
    /// exec identity: names and contents of protected programs, interpreters, loaders.
    pub exec_identity: MapHandle,
    /// net: Unix socket rules.
    pub unix_rules: MapHandle,
    /// net: egress.allow entries.
    pub egress_allow4: MapHandle,
    pub egress_allow6: MapHandle,
    // guard
    pub guarded_tids: MapHandle,
    pub tamper_senders: MapHandle,
    pub protected_inodes: MapHandle,
    pub file_rules: MapHandle,
    pub file_allow: MapHandle,
}

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
}

/// How this daemon came by its enforcement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Startup {
    /// Nothing was pinned: programs loaded and attached now.
    Fresh,
    /// A compatible pinned set was running: its programs and maps were kept.
    Adopted { set: String, pinned_by_pid: u32, pinned_by_version: String, pinned_at: String },
    /// Pinned programs of another build (or a damaged set) were running: a new
    /// set was attached beside them with their tags, then they were detached.
    Replaced { old_sets: Vec<String>, reason: String, tags_copied: usize },
}

/// What `Kernel::start` needs.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub backend: BackendChoice,
    pub sizes: MapSizes,
    pub pin_dir: PathBuf,
}

/// Kernel-wide totals of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CounterTotals {
    pub decisions: u64,
    pub denies: u64,
    pub ringbuf_drops: u64,
    pub tag_failures: u64,
    /// guard: tamper attempts (refused on LSM, offender killed on compat).
    #[serde(default)]
    pub tamper: u64,
}

impl Kernel {
    /// Probes the kernel, then adopts the compatible pinned set in the pin
    /// directory if one is running, else loads, attaches and pins a new one
    /// (carrying over the tags of any set it replaces).
    pub fn start(opts: &KernelOptions) -> Result<Kernel> {
        mounts::require_root()?;
        mounts::ensure_pseudo_filesystems()?;
        bump_memlock_rlimit();

        let backend = match opts.backend {
            BackendChoice::Compat => Backend::Compat,
            BackendChoice::Lsm => {
                probe_lsm().context("the LSM backend was requested but BPF LSM programs do not run here")?;
                Backend::Lsm
            }
            BackendChoice::Auto => match probe_lsm() {
                Ok(()) => Backend::Lsm,
                Err(e) => {
                    tracing::info!("BPF LSM unavailable ({e:#}); using the compat backend");
                    Backend::Compat
                }
            },
        };
        let pins = PinRoot::lock(&opts.pin_dir)?;
        let want = wanted_meta(backend, opts.sizes, Vec::new());
        let sets = pins.sets()?;
        // Newest first. A set is adopted only if it is this build's, complete,
        // and every map the daemon needs opens; anything else is replaced.
        let why_not = |set: &PinSet| -> Option<String> {
            set.incompatibility(&want).or_else(|| Maps::open(|name| set.map(name)).err().map(|e| format!("{e:#}")))
        };
        let adoptable = sets.iter().rev().find(|set| why_not(set).is_none()).cloned();
        match adoptable {
            Some(set) => adopt(pins, set, sets, backend, opts.sizes),
            None => {
                let reason = sets.last().and_then(why_not).unwrap_or_default();
                load_and_attach(pins, sets, reason, backend, opts.sizes)
            }
        }
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

    /// Event ring buffers of replaced sets that speak this build's event format:
    /// what they hold was decided before the switch and belongs in the audit trail.
    pub fn retiring_events(&self) -> Vec<MapHandle> {
        let abi = abi_hash();
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
                Ok(items) => tracing::info!(set = %set.dir.display(), items = items.len(), "detached and unpinned the replaced enforcement"),
                Err(e) => tracing::error!(set = %set.dir.display(), "could not fully remove a replaced pinned set: {e:#}"),
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

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// Enforcement this kernel lacks with the chosen backend (shown by `status`).
    pub fn gaps(&self) -> &[String] {
        &self.gaps
    }

    /// Tags a process (by tgid) as a member of a session.
    pub fn tag(&self, tgid: u32, tag: &abi::ProcTag) -> Result<()> {
        self.maps
            .tagged_procs
            .update(as_bytes(&tgid), as_bytes(tag), MapFlags::ANY)
            .with_context(|| format!("tag process {tgid}"))
    }

    /// The session a process belongs to, if it is governed.
    pub fn tag_of(&self, tgid: u32) -> Option<abi::ProcTag> {
        let value = self.maps.tagged_procs.lookup(as_bytes(&tgid), MapFlags::ANY).ok()??;
        from_bytes(&value)
    }

    /// Every tagged process, for `status`.
    pub fn tagged(&self) -> Vec<(u32, abi::ProcTag)> {
        self.maps
            .tagged_procs
            .keys()
            .filter_map(|key| {
                let tgid: u32 = from_bytes(&key)?;
                let value = self.maps.tagged_procs.lookup(&key, MapFlags::ANY).ok()??;
                Some((tgid, from_bytes(&value)?))
            })
            .collect()
    }

    pub fn set_config(&self, policy_generation: u32) -> Result<()> {
        let config = abi::Config {
            backend: self.backend.abi_value(),
            policy_generation,
            daemon_tgid: std::process::id(),
            pad: 0,
            daemon_pgid: nix::unistd::getpgrp().as_raw() as u32,
            guard_pad: 0,
        };
        self.maps
            .config
            .update(as_bytes(&0u32), as_bytes(&config), MapFlags::ANY)
            .context("write the config map")
    }

    pub fn counters(&self) -> Result<CounterTotals> {
        let per_cpu = self
            .maps
            .counters
            .lookup_percpu(as_bytes(&0u32), MapFlags::ANY)
            .context("read the counters map")?
            .unwrap_or_default();
        let mut totals = CounterTotals::default();
        for bytes in per_cpu {
            if let Some(c) = from_bytes::<abi::Counters>(&bytes) {
                totals.decisions += c.decisions;
                totals.denies += c.denies;
                totals.ringbuf_drops += c.ringbuf_drops;
                totals.tag_failures += c.tag_failures;
                totals.tamper += c.tamper;
            }
        }
        Ok(totals)
    }

    /// guard: the daemon's threads, which signals and ptrace may name (compat
    /// hooks compare thread ids; the LSM hooks compare the process).
    pub fn guard_threads(&self) -> Result<usize> {
        // An adopted set still lists the previous daemon's threads: those ids
        // may belong to anyone now.
        for key in self.maps.guarded_tids.keys().collect::<Vec<_>>() {
            let _ = self.maps.guarded_tids.delete(&key);
        }
        let mut n = 0;
        for entry in std::fs::read_dir("/proc/self/task").context("list /proc/self/task")? {
            let Some(tid) = entry.ok().and_then(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())) else { continue };
            self.maps
                .guarded_tids
                .update(as_bytes(&tid), as_bytes(&1u32), MapFlags::ANY)
                .with_context(|| format!("guard thread {tid}"))?;
            n += 1;
        }
        Ok(n)
    }

    /// guard (compat): whether this process was recorded sending the daemon a
    /// signal from inside a session. The entry is taken, so each signal counts once.
    pub fn take_tamper_sender(&self, tgid: u32) -> bool {
        let found = matches!(self.maps.tamper_senders.lookup(as_bytes(&tgid), MapFlags::ANY), Ok(Some(_)));
        if found {
            let _ = self.maps.tamper_senders.delete(as_bytes(&tgid));
        }
        found
    }

    /// A new handle on the event ring buffer, for the consumer thread.
    pub fn events_handle(&self) -> Result<MapHandle> {
        MapHandle::try_from(&self.maps.events).context("duplicate the events map handle")
    }
}

/// Writes a batch of entries into a map; stops at the first failure.
pub fn update_all<K: Pod, V: Pod>(map: &MapHandle, entries: &[(K, V)], what: &str) -> Result<()> {
    for (key, value) in entries {
        map.update(as_bytes(key), as_bytes(value), MapFlags::ANY)
            .with_context(|| format!("insert into the {what} map ({} entries in this batch)", entries.len()))?;
    }
    Ok(())
}

/// Removes a batch of entries; missing ones are ignored.
pub fn delete_all<K: Pod, V>(map: &MapHandle, entries: &[(K, V)]) {
    for (key, _) in entries {
        let _ = map.delete(as_bytes(key));
    }
}

fn bump_memlock_rlimit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Loads and attaches a one-line LSM program, then lets it go.
pub fn probe_lsm() -> Result<()> {
    let lsms = mounts::active_lsms();
    if let Some(list) = &lsms {
        if !list.split(',').any(|l| l == "bpf") {
            bail!("bpf is not in the kernel's active LSM list ({list}); boot with lsm=...,bpf");
        }
    }
    let mut storage = MaybeUninit::uninit();
    let open = ProbeLsmSkelBuilder::default().open(&mut storage).context("open the LSM probe")?;
    let skel = open.load().context("load the LSM probe program")?;
    let _link = skel.progs.airlock_probe_lsm.attach_lsm().context("attach the LSM probe program")?;
    Ok(())
}

/// True when the running kernel knows the cgroup Unix socket hooks (6.7+):
/// their attach type is named in the kernel's own BTF. A kernel without BTF
/// cannot run Airlock at all, so "unreadable" means "no".
fn kernel_has_cgroup_unix_hooks() -> bool {
    match std::fs::read("/sys/kernel/btf/vmlinux") {
        Ok(btf) => btf.windows(23).any(|w| w == b"BPF_CGROUP_UNIX_CONNECT"),
        Err(e) => {
            tracing::warn!("cannot read /sys/kernel/btf/vmlinux ({e}); Unix socket hooks not used");
            false
        }
    }
}

/// api (issue 4): session revocation.
impl Kernel {
    /// From now on the kernel refuses every exec and connect of the session's
    /// processes (and kills those that fork).
    pub fn mark_revoked(&self, session_id: u64) -> Result<()> {
        self.maps
            .revoked_sessions
            .update(as_bytes(&session_id), as_bytes(&1u32), MapFlags::ANY)
            .context("record the revocation in the kernel")
    }

    /// Every process the kernel counts as a member of the session: tagged, or
    /// quarantined under its id.
    pub fn session_processes(&self, session_id: u64) -> Vec<u32> {
        let mut pids: Vec<u32> = self.tagged().into_iter().filter(|(_, t)| t.session_id == session_id).map(|(pid, _)| pid).collect();
        for key in self.maps.quarantine.keys() {
            let Some(pid) = from_bytes::<u32>(&key) else { continue };
            let session = self.maps.quarantine.lookup(&key, MapFlags::ANY).ok().flatten().and_then(|v| from_bytes::<u64>(&v));
            if session == Some(session_id) {
                pids.push(pid);
            }
        }
        pids
    }

    /// How many processes each session has now, for the session list.
    pub fn processes_per_session(&self) -> std::collections::HashMap<u64, u32> {
        let mut counts = std::collections::HashMap::new();
        for (_, tag) in self.tagged() {
            *counts.entry(tag.session_id).or_insert(0) += 1;
        }
        counts
    }
}

/// guard: the LSM programs of the tamper and protected-file hooks.
fn guard_lsm_programs<'a, 'b>(p: &'a mut airlock_ebpf::airlock::OpenAirlockProgs<'b>) -> [&'a mut libbpf_rs::OpenProgramMut<'b>; 17] {
    [
        &mut p.airlock_guard_bpf,
        &mut p.airlock_guard_task_kill,
        &mut p.airlock_guard_sigio,
        &mut p.airlock_guard_ptrace,
        &mut p.airlock_guard_kernel_read_file,
        &mut p.airlock_guard_kernel_load_data,
        &mut p.airlock_guard_module_request,
        &mut p.airlock_guard_file_open,
        &mut p.airlock_guard_unlink,
        &mut p.airlock_guard_rmdir,
        &mut p.airlock_guard_rename,
        &mut p.airlock_guard_umount,
        &mut p.airlock_guard_create,
        &mut p.airlock_guard_mkdir,
        &mut p.airlock_guard_symlink,
        &mut p.airlock_guard_link,
        &mut p.airlock_guard_truncate,
    ]
}

/// guard: the compat backend's syscall tracepoints.
fn guard_compat_programs<'a, 'b>(p: &'a mut airlock_ebpf::airlock::OpenAirlockProgs<'b>) -> [&'a mut libbpf_rs::OpenProgramMut<'b>; 19] {
    [
        &mut p.airlock_compat_bpf,
        &mut p.airlock_compat_kill,
        &mut p.airlock_compat_tkill,
        &mut p.airlock_compat_tgkill,
        &mut p.airlock_compat_sigqueue,
        &mut p.airlock_compat_tgsigqueue,
        &mut p.airlock_compat_pidfd_signal,
        &mut p.airlock_compat_pidfd_getfd,
        &mut p.airlock_compat_ptrace,
        &mut p.airlock_compat_vm_writev,
        &mut p.airlock_compat_vm_readv,
        &mut p.airlock_compat_init_module,
        &mut p.airlock_compat_finit_module,
        &mut p.airlock_compat_kexec_load,
        &mut p.airlock_compat_kexec_file_load,
        &mut p.airlock_compat_openat,
        &mut p.airlock_compat_openat2,
        &mut p.airlock_compat_open,
        &mut p.airlock_compat_open_by_handle,
    ]
}

/// Whether tracefs lists the syscall tracepoint (it exists only for syscalls the architecture has).
fn tracepoint_exists(syscall: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| Path::new(root).join("events/syscalls").join(syscall).exists())
}


fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

fn configure_maps(open: &mut OpenAirlockSkel<'_>, sizes: MapSizes) -> Result<()> {
    // Sized to pid_max so a tag can never be refused for want of room.
    let tags = pid_max().clamp(32_768, 4_194_304);
    open.maps.tagged_procs.set_max_entries(tags)?;
    open.maps.programs.set_max_entries(sizes.programs)?;
    open.maps.trie.set_max_entries(sizes.trie)?;
    open.maps.egress4.set_max_entries(sizes.egress)?;
    open.maps.egress6.set_max_entries(sizes.egress)?;
    open.maps.egress_allow4.set_max_entries(sizes.egress)?;
    open.maps.egress_allow6.set_max_entries(sizes.egress)?;
    open.maps.events.set_max_entries(sizes.ringbuf_bytes)?;
    Ok(())
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

/// Hash of the ABI header: sets with the same one write events this daemon decodes.
pub fn abi_hash() -> String {
    format!("{:016x}", abi::word_hash(airlock_ebpf::ABI_HEADER.as_bytes()))
}

fn wanted_meta(backend: Backend, sizes: MapSizes, hooks: Vec<Hook>) -> PinMeta {
    PinMeta {
        layout: pins::LAYOUT,
        object_hash: pins::object_hash(),
        abi_hash: abi_hash(),
        backend: backend.to_string(),
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        daemon_pid: std::process::id(),
        pinned_at: crate::daemon::now_rfc3339(),
        sizes: sizes.into(),
        hooks,
    }
}

impl Maps {
    /// Opens every map the daemon uses, by its name in the object.
    fn open(by_name: impl Fn(&str) -> Result<MapHandle>) -> Result<Maps> {
        Ok(Maps {
            tagged_procs: by_name("tagged_procs")?,
            quarantine: by_name("quarantine")?,
            role_sets: by_name("role_sets")?,
            programs: by_name("programs")?,
            trie: by_name("trie")?,
            egress4: by_name("egress4")?,
            egress6: by_name("egress6")?,
            counters: by_name("counters")?,
            config: by_name("airlock_config")?,
            events: by_name("events")?,
            revoked_sessions: by_name("revoked_sessions")?,
            exec_identity: by_name("exec_identity")?,
            unix_rules: by_name("unix_rules")?,
            egress_allow4: by_name("egress_allow4")?,
            egress_allow6: by_name("egress_allow6")?,
            guarded_tids: by_name("guarded_tids")?,
            tamper_senders: by_name("tamper_senders")?,
            protected_inodes: by_name("protected_inodes")?,
            file_rules: by_name("file_rules")?,
            file_allow: by_name("file_allow")?,
        })
    }
}

/// What this kernel cannot enforce with the chosen backend, for `status`.
fn backend_gaps(backend: Backend, compat_unix: bool) -> Vec<String> {
    let mut gaps = Vec::new();
    let lsm = backend == Backend::Lsm;
    if !lsm && !compat_unix {
        gaps.push(
            "Unix socket rules (egress.unix_deny) are NOT enforced: this kernel has no cgroup/connect_unix \
             (added in 6.7) and the LSM backend is not in use"
                .to_string(),
        );
    }
    gaps
}

/// Keeps a running, compatible set: its programs stay attached throughout.
fn adopt(pins: PinRoot, set: PinSet, all: Vec<PinSet>, backend: Backend, sizes: MapSizes) -> Result<Kernel> {
    let meta = set.meta()?;
    let maps = Maps::open(|name| set.map(name))?;
    let retiring: Vec<PinSet> = all.into_iter().filter(|s| s.dir != set.dir).collect();
    for old in &retiring {
        tracing::warn!(set = %old.dir.display(), "a second pinned set is present (left by an interrupted start); it is removed once the policy is installed");
    }
    let startup = Startup::Adopted {
        set: set.dir.display().to_string(),
        pinned_by_pid: meta.daemon_pid,
        pinned_by_version: meta.daemon_version.clone(),
        pinned_at: meta.pinned_at.clone(),
    };
    tracing::info!(set = %set.dir.display(), pinned_by = meta.daemon_pid, pinned_at = %meta.pinned_at, hooks = meta.hooks.len(), "adopted the running enforcement (programs and maps were pinned; nothing was detached)");
    let gaps = backend_gaps(backend, kernel_has_cgroup_unix_hooks());
    Ok(Kernel { backend, hooks: meta.hooks, links: Vec::new(), maps, sizes, pins, set, startup, retiring: retiring.into(), released: false, gaps })
}

/// Loads the object, pins its maps, attaches and pins every program, copies the
/// tags of the sets it replaces, and writes the meta record last.
fn load_and_attach(pins: PinRoot, old_sets: Vec<PinSet>, reason: String, backend: Backend, sizes: MapSizes) -> Result<Kernel> {
    let mut storage = MaybeUninit::uninit();
    let mut open = AirlockSkelBuilder::default().open(&mut storage).context("open the enforcement object")?;
    configure_maps(&mut open, sizes)?;

    let lsm = backend == Backend::Lsm;
    let compat_unix = kernel_has_cgroup_unix_hooks();
    let gaps = backend_gaps(backend, compat_unix);
    {
        let p = &mut open.progs;
        p.airlock_bprm_check.set_autoload(lsm);
        p.airlock_enter_execve.set_autoload(lsm);
        p.airlock_enter_execveat.set_autoload(lsm);
        p.airlock_socket_connect.set_autoload(lsm);
        p.airlock_socket_sendmsg.set_autoload(lsm);
        p.airlock_connect4.set_autoload(!lsm);
        p.airlock_connect6.set_autoload(!lsm);
        p.airlock_sendmsg4.set_autoload(!lsm);
        p.airlock_sendmsg6.set_autoload(!lsm);
        // net: Unix socket rules. Compat needs cgroup/connect_unix (kernels >= 6.7).
        p.airlock_unix_stream_connect.set_autoload(lsm);
        p.airlock_unix_may_send.set_autoload(lsm);
        p.airlock_connect_unix.set_autoload(!lsm && compat_unix);
        p.airlock_sendmsg_unix.set_autoload(!lsm && compat_unix);
        // guard
        for prog in guard_lsm_programs(p) {
            prog.set_autoload(lsm);
        }
        for prog in guard_compat_programs(p) {
            prog.set_autoload(!lsm);
        }
    }
    let mut skel = open.load().context("load the enforcement programs (the verifier log above says why)")?;

    // Maps first: a set that dies half-pinned has maps but no links, so no
    // program is left attached to maps nobody can reach.
    let set = pins.new_set()?;
    for map in skel.object().maps() {
        let name = map.name().to_string_lossy().into_owned();
        let mut handle = MapHandle::try_from(&map).with_context(|| format!("duplicate the handle of map {name}"))?;
        handle.pin(set.map_path(&name)).with_context(|| format!("pin map {name} in {}", set.dir.display()))?;
    }
    let maps = Maps::open(|name| set.map(name))?;

    let mut links = Vec::new();
    let mut hooks = Vec::new();
    let mut attached = |name: &str, point: &str, link: libbpf_rs::Result<Link>| -> Result<()> {
        let mut link = link.with_context(|| format!("attach {name} to {point}"))?;
        link.pin(set.link_path(name)).with_context(|| format!("pin the link of {name}"))?;
        links.push(link);
        hooks.push(Hook { program: name.to_string(), attach_point: point.to_string() });
        Ok(())
    };

    let p = &skel.progs;
    // Tagging first: from here on every fork of a governed process is followed.
    attached("airlock_fork", "tp_btf/sched_process_fork", p.airlock_fork.attach())?;
    attached("airlock_exit", "tp_btf/sched_process_exit", p.airlock_exit.attach())?;
    // With fork and exit followed in the new maps, carry the old sets' sessions
    // over. Their programs still enforce until the daemon retires them.
    let (tags_copied, quarantined) = copy_tags(&old_sets, &maps);
    if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
        bss.quarantined_count = quarantined;
    }
    let p = &skel.progs;
    attached("airlock_sched_exec", "tp_btf/sched_process_exec", p.airlock_sched_exec.attach())?;
    if lsm {
        attached("airlock_enter_execve", "tracepoint/syscalls/sys_enter_execve", p.airlock_enter_execve.attach())?;
        attached("airlock_enter_execveat", "tracepoint/syscalls/sys_enter_execveat", p.airlock_enter_execveat.attach())?;
        attached("airlock_bprm_check", "lsm/bprm_check_security", p.airlock_bprm_check.attach_lsm())?;
        attached("airlock_socket_connect", "lsm/socket_connect", p.airlock_socket_connect.attach_lsm())?;
        attached("airlock_socket_sendmsg", "lsm/socket_sendmsg", p.airlock_socket_sendmsg.attach_lsm())?;
        attached("airlock_unix_stream_connect", "lsm/unix_stream_connect", p.airlock_unix_stream_connect.attach_lsm())?;
        attached("airlock_unix_may_send", "lsm/unix_may_send", p.airlock_unix_may_send.attach_lsm())?;
        // guard: tamper resistance and protected files
        for (name, hook, prog) in [
            ("airlock_guard_bpf", "lsm/bpf", &p.airlock_guard_bpf),
            ("airlock_guard_task_kill", "lsm/task_kill", &p.airlock_guard_task_kill),
            ("airlock_guard_sigio", "lsm/file_send_sigiotask", &p.airlock_guard_sigio),
            ("airlock_guard_ptrace", "lsm/ptrace_access_check", &p.airlock_guard_ptrace),
            ("airlock_guard_kernel_read_file", "lsm/kernel_read_file", &p.airlock_guard_kernel_read_file),
            ("airlock_guard_kernel_load_data", "lsm/kernel_load_data", &p.airlock_guard_kernel_load_data),
            ("airlock_guard_module_request", "lsm/kernel_module_request", &p.airlock_guard_module_request),
            ("airlock_guard_file_open", "lsm/file_open", &p.airlock_guard_file_open),
            ("airlock_guard_unlink", "lsm/inode_unlink", &p.airlock_guard_unlink),
            ("airlock_guard_rmdir", "lsm/inode_rmdir", &p.airlock_guard_rmdir),
            ("airlock_guard_rename", "lsm/inode_rename", &p.airlock_guard_rename),
            ("airlock_guard_umount", "lsm/sb_umount", &p.airlock_guard_umount),
            ("airlock_guard_create", "lsm/inode_create", &p.airlock_guard_create),
            ("airlock_guard_mkdir", "lsm/inode_mkdir", &p.airlock_guard_mkdir),
            ("airlock_guard_symlink", "lsm/inode_symlink", &p.airlock_guard_symlink),
            ("airlock_guard_link", "lsm/inode_link", &p.airlock_guard_link),
            ("airlock_guard_truncate", "lsm/path_truncate", &p.airlock_guard_truncate),
        ] {
            attached(name, hook, prog.attach_lsm())?;
        }
    } else {
        let root = mounts::cgroup2_root()?;
        let cgroup = std::fs::File::open(&root).with_context(|| format!("open the cgroup2 root {}", root.display()))?;
        let fd = cgroup.as_raw_fd();
        let at = |hook: &str| format!("{hook} on {}", root.display());
        attached("airlock_connect4", &at("cgroup/connect4"), p.airlock_connect4.attach_cgroup(fd))?;
        attached("airlock_connect6", &at("cgroup/connect6"), p.airlock_connect6.attach_cgroup(fd))?;
        attached("airlock_sendmsg4", &at("cgroup/sendmsg4"), p.airlock_sendmsg4.attach_cgroup(fd))?;
        attached("airlock_sendmsg6", &at("cgroup/sendmsg6"), p.airlock_sendmsg6.attach_cgroup(fd))?;
        if compat_unix {
            attached("airlock_connect_unix", &at("cgroup/connect_unix"), p.airlock_connect_unix.attach_cgroup(fd))?;
            attached("airlock_sendmsg_unix", &at("cgroup/sendmsg_unix"), p.airlock_sendmsg_unix.attach_cgroup(fd))?;
        }
        // guard: detection of what compat cannot refuse. A syscall this kernel
        // does not have (open on aarch64) has no tracepoint: skipped, and absent
        // from the hooks `status` lists.
        for (name, syscall, prog) in [
            ("airlock_compat_bpf", "sys_enter_bpf", &p.airlock_compat_bpf),
            ("airlock_compat_kill", "sys_enter_kill", &p.airlock_compat_kill),
            ("airlock_compat_tkill", "sys_enter_tkill", &p.airlock_compat_tkill),
            ("airlock_compat_tgkill", "sys_enter_tgkill", &p.airlock_compat_tgkill),
            ("airlock_compat_sigqueue", "sys_enter_rt_sigqueueinfo", &p.airlock_compat_sigqueue),
            ("airlock_compat_tgsigqueue", "sys_enter_rt_tgsigqueueinfo", &p.airlock_compat_tgsigqueue),
            ("airlock_compat_pidfd_signal", "sys_enter_pidfd_send_signal", &p.airlock_compat_pidfd_signal),
            ("airlock_compat_pidfd_getfd", "sys_enter_pidfd_getfd", &p.airlock_compat_pidfd_getfd),
            ("airlock_compat_ptrace", "sys_enter_ptrace", &p.airlock_compat_ptrace),
            ("airlock_compat_vm_writev", "sys_enter_process_vm_writev", &p.airlock_compat_vm_writev),
            ("airlock_compat_vm_readv", "sys_enter_process_vm_readv", &p.airlock_compat_vm_readv),
            ("airlock_compat_init_module", "sys_enter_init_module", &p.airlock_compat_init_module),
            ("airlock_compat_finit_module", "sys_enter_finit_module", &p.airlock_compat_finit_module),
            ("airlock_compat_kexec_load", "sys_enter_kexec_load", &p.airlock_compat_kexec_load),
            ("airlock_compat_kexec_file_load", "sys_enter_kexec_file_load", &p.airlock_compat_kexec_file_load),
            ("airlock_compat_openat", "sys_exit_openat", &p.airlock_compat_openat),
            ("airlock_compat_openat2", "sys_exit_openat2", &p.airlock_compat_openat2),
            ("airlock_compat_open", "sys_exit_open", &p.airlock_compat_open),
            ("airlock_compat_open_by_handle", "sys_exit_open_by_handle_at", &p.airlock_compat_open_by_handle),
        ] {
            let point = format!("tracepoint/syscalls/{syscall}");
            if !tracepoint_exists(syscall) {
                tracing::warn!(hook = %point, "this kernel has no such tracepoint; not attached");
                continue;
            }
            attached(name, &point, prog.attach())?;
        }
    }
    set.write_meta(&wanted_meta(backend, sizes, hooks.clone()))?;

    let startup = if old_sets.is_empty() {
        tracing::info!(set = %set.dir.display(), "enforcement loaded, attached and pinned");
        Startup::Fresh
    } else {
        let old: Vec<String> = old_sets.iter().map(|s| s.dir.display().to_string()).collect();
        tracing::warn!(old = ?old, %reason, tags_copied, new = %set.dir.display(),
            "the pinned enforcement cannot be adopted; a new set is attached beside it with its tags, and the old one is detached once the policy is installed");
        Startup::Replaced { old_sets: old, reason, tags_copied }
    };
    let kernel = Kernel { backend, hooks, links, maps, sizes, pins, set, startup, retiring: old_sets.into(), released: false, gaps };
    kernel.set_config(0)?;
    Ok(kernel)
}

/// Copies tagged and quarantined processes from old sets into the new maps:
/// twice (forks during the first pass land in the old maps too), then drops
/// what the old sets no longer hold (those processes exited meanwhile).
/// Returns the tags copied and the quarantine entries now held.
fn copy_tags(old_sets: &[PinSet], maps: &Maps) -> (usize, u32) {
    let open = |name: &str, key: u32, value: u32| -> Vec<MapHandle> {
        old_sets
            .iter()
            .filter_map(|set| match set.map(name) {
                Ok(m) if m.key_size() == key && m.value_size() == value => Some(m),
                Ok(_) => {
                    tracing::warn!(set = %set.dir.display(), map = name, "the old map has another layout; its entries are not copied");
                    None
                }
                Err(e) => {
                    tracing::warn!(set = %set.dir.display(), "{e:#}");
                    None
                }
            })
            .collect()
    };
    let tag_size = std::mem::size_of::<abi::ProcTag>() as u32;
    let old_tags = open("tagged_procs", 4, tag_size);
    let old_quarantine = open("quarantine", 4, 8);
    let mut copied = std::collections::BTreeSet::new();
    let mut quarantined = std::collections::BTreeSet::new();
    for _pass in 0..2 {
        for (from, to, seen) in [(&old_tags, &maps.tagged_procs, &mut copied), (&old_quarantine, &maps.quarantine, &mut quarantined)] {
            for map in from {
                for key in map.keys() {
                    if let Ok(Some(value)) = map.lookup(&key, MapFlags::ANY) {
                        if to.update(&key, &value, MapFlags::ANY).is_ok() {
                            seen.insert(key);
                        }
                    }
                }
            }
        }
    }
    for (from, to, seen) in [(&old_tags, &maps.tagged_procs, &mut copied), (&old_quarantine, &maps.quarantine, &mut quarantined)] {
        seen.retain(|key| {
            let live = from.iter().any(|m| matches!(m.lookup(key, MapFlags::ANY), Ok(Some(_))));
            if !live {
                let _ = to.delete(key);
            }
            live
        });
    }
    (copied.len(), quarantined.len() as u32)
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
    let removed = pins::remove_all(pin_dir)?;
    tracing::info!(pin_dir = %pin_dir.display(), removed = removed.len(), "enforcement unloaded");
    Ok(removed)
}
