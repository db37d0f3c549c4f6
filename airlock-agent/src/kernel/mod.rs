//! The kernel loader: probes which backend this kernel runs, loads and attaches
//! the eBPF programs, and owns every map operation the daemon performs.
//!
//! After attach the libbpf object is dropped: the links keep the programs in
//! the kernel and owned map handles keep the maps, so nothing here borrows.

pub mod mounts;

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use airlock_common::abi::{self, as_bytes, from_bytes, Pod};
use airlock_ebpf::airlock::{AirlockSkelBuilder, OpenAirlockSkel};
use airlock_ebpf::probe_lsm::ProbeLsmSkelBuilder;
use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

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
    pub role_sets: MapHandle,
    pub programs: MapHandle,
    pub trie: MapHandle,
    pub egress4: MapHandle,
    pub egress6: MapHandle,
    pub counters: MapHandle,
    pub config: MapHandle,
    pub events: MapHandle,
    /// net: Unix socket rules.
    pub unix_rules: MapHandle,
    /// net: egress.allow entries.
    pub egress_allow4: MapHandle,
    pub egress_allow6: MapHandle,
}

/// The loaded and attached enforcement. Dropping it (its links) detaches every program.
pub struct Kernel {
    backend: Backend,
    hooks: Vec<Hook>,
    /// Held, never read: closing a link detaches its program.
    _links: Vec<Link>,
    maps: Maps,
    sizes: MapSizes,
    /// What this kernel cannot enforce with the chosen backend, for `status`.
    gaps: Vec<String>,
}

/// Kernel-wide totals of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CounterTotals {
    pub decisions: u64,
    pub denies: u64,
    pub ringbuf_drops: u64,
    pub tag_failures: u64,
}

impl Kernel {
    /// Probes the kernel, loads the programs of the chosen backend and attaches them.
    pub fn start(choice: BackendChoice, sizes: MapSizes) -> Result<Kernel> {
        mounts::require_root()?;
        mounts::ensure_pseudo_filesystems()?;
        bump_memlock_rlimit();

        let backend = match choice {
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
        load_and_attach(backend, sizes)
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
            }
        }
        Ok(totals)
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

fn load_and_attach(backend: Backend, sizes: MapSizes) -> Result<Kernel> {
    let mut storage = MaybeUninit::uninit();
    let mut open = AirlockSkelBuilder::default().open(&mut storage).context("open the enforcement object")?;
    configure_maps(&mut open, sizes)?;

    let lsm = backend == Backend::Lsm;
    let compat_unix = kernel_has_cgroup_unix_hooks();
    let mut gaps = Vec::new();
    if lsm && !compat_unix {
        // Measured, not understood yet: on Debian 6.1 the LSM Unix hooks run
        // but read the socket's path back empty, so no rule matches (vm-tests).
        gaps.push(
            "Unix socket rules (egress.unix_deny) are NOT enforced reliably on this kernel: the LSM backend's Unix \
             hooks are proven only on kernels >= 6.7 (on Debian 6.1 the socket's path reads back empty)"
                .to_string(),
        );
    }
    if !lsm && !compat_unix {
        gaps.push(
            "Unix socket rules (egress.unix_deny) are NOT enforced: this kernel has no cgroup/connect_unix \
             (added in 6.7) and the LSM backend is not in use"
                .to_string(),
        );
    }
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
    }
    let skel = open.load().context("load the enforcement programs (the verifier log above says why)")?;

    let maps = Maps {
        tagged_procs: MapHandle::try_from(&skel.maps.tagged_procs)?,
        role_sets: MapHandle::try_from(&skel.maps.role_sets)?,
        programs: MapHandle::try_from(&skel.maps.programs)?,
        trie: MapHandle::try_from(&skel.maps.trie)?,
        egress4: MapHandle::try_from(&skel.maps.egress4)?,
        egress6: MapHandle::try_from(&skel.maps.egress6)?,
        counters: MapHandle::try_from(&skel.maps.counters)?,
        config: MapHandle::try_from(&skel.maps.airlock_config)?,
        events: MapHandle::try_from(&skel.maps.events)?,
        unix_rules: MapHandle::try_from(&skel.maps.unix_rules)?,
        egress_allow4: MapHandle::try_from(&skel.maps.egress_allow4)?,
        egress_allow6: MapHandle::try_from(&skel.maps.egress_allow6)?,
    };

    let mut links = Vec::new();
    let mut hooks = Vec::new();
    let mut attached = |name: &str, point: &str, link: libbpf_rs::Result<Link>| -> Result<()> {
        let link = link.with_context(|| format!("attach {name} to {point}"))?;
        links.push(link);
        hooks.push(Hook { program: name.to_string(), attach_point: point.to_string() });
        Ok(())
    };

    let p = &skel.progs;
    // Tagging first: from here on every fork of a governed process is followed.
    attached("airlock_fork", "tp_btf/sched_process_fork", p.airlock_fork.attach())?;
    attached("airlock_exit", "tp_btf/sched_process_exit", p.airlock_exit.attach())?;
    attached("airlock_sched_exec", "tp_btf/sched_process_exec", p.airlock_sched_exec.attach())?;
    if lsm {
        attached("airlock_enter_execve", "tracepoint/syscalls/sys_enter_execve", p.airlock_enter_execve.attach())?;
        attached("airlock_enter_execveat", "tracepoint/syscalls/sys_enter_execveat", p.airlock_enter_execveat.attach())?;
        attached("airlock_bprm_check", "lsm/bprm_check_security", p.airlock_bprm_check.attach_lsm())?;
        attached("airlock_socket_connect", "lsm/socket_connect", p.airlock_socket_connect.attach_lsm())?;
        attached("airlock_socket_sendmsg", "lsm/socket_sendmsg", p.airlock_socket_sendmsg.attach_lsm())?;
        attached("airlock_unix_stream_connect", "lsm/unix_stream_connect", p.airlock_unix_stream_connect.attach_lsm())?;
        attached("airlock_unix_may_send", "lsm/unix_may_send", p.airlock_unix_may_send.attach_lsm())?;
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
    }

    let kernel = Kernel { backend, hooks, _links: links, maps, sizes, gaps };
    kernel.set_config(0)?;
    Ok(kernel)
}

