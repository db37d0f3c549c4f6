//! Loading, attaching and pinning the enforcement object, or adopting a
//! compatible set that is already pinned and running.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use airlock_common::abi;
use airlock_ebpf::airlock::{AirlockSkelBuilder, OpenAirlockSkel};
use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};

use super::maps::Maps;
use super::on_demand::OnDemand;
use super::pins::{self, PinMeta, PinRoot, PinSet};
use super::types::{Backend, Hook, MapSizes, Startup};
use super::{mounts, probe};

/// What loading (or adopting) produced; the kernel facade keeps it.
pub struct Attached {
    pub backend: Backend,
    pub hooks: Vec<Hook>,
    /// The links this daemon attached (empty when it adopted a set: the pins hold those).
    pub links: Vec<Link>,
    pub maps: Maps,
    pub sizes: MapSizes,
    pub pins: PinRoot,
    pub set: PinSet,
    pub startup: Startup,
    /// Sets of earlier daemons this one replaces; retired once the policy is in the new set.
    pub retiring: Vec<PinSet>,
    /// What this kernel cannot enforce with the chosen backend, for `status`.
    pub gaps: Vec<String>,
}

/// Keeps a running, compatible set: its programs stay attached throughout.
pub fn adopt(pins: PinRoot, set: PinSet, all: Vec<PinSet>, backend: Backend, sizes: MapSizes) -> Result<Attached> {
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
    let gaps = probe::backend_gaps(backend, probe::kernel_has_cgroup_unix_hooks());
    Ok(Attached { backend, hooks: meta.hooks, links: Vec::new(), maps, sizes, pins, set, startup, retiring, gaps })
}

/// Loads the object, pins its maps, attaches and pins every program, copies the
/// tags of the sets it replaces, and writes the meta record last.
pub fn load_and_attach(pins: PinRoot, old_sets: Vec<PinSet>, reason: String, backend: Backend, sizes: MapSizes) -> Result<Attached> {
    let mut storage = MaybeUninit::uninit();
    let mut open = AirlockSkelBuilder::default().open(&mut storage).context("open the enforcement object")?;
    configure_maps(&mut open, sizes)?;

    let lsm = backend == Backend::Lsm;
    let compat_unix = probe::kernel_has_cgroup_unix_hooks();
    let gaps = probe::backend_gaps(backend, compat_unix);
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
        // Unix socket rules. Compat needs cgroup/connect_unix (kernels >= 6.7).
        p.airlock_unix_stream_connect.set_autoload(lsm);
        p.airlock_unix_may_send.set_autoload(lsm);
        p.airlock_connect_unix.set_autoload(!lsm && compat_unix);
        p.airlock_sendmsg_unix.set_autoload(!lsm && compat_unix);
        // Raw and packet sockets.
        p.airlock_socket_create.set_autoload(lsm);
        p.airlock_sock_create.set_autoload(!lsm);
        p.airlock_compat_socket.set_autoload(!lsm);
        // Raw sockets of roles that allow them (and, on compat, ping sockets), packet by packet.
        p.airlock_sock_tag.set_autoload(lsm);
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
        hooks.push(Hook { program: name.to_string(), attach_point: point.to_string(), on_demand: false });
        Ok(())
    };
    // Syscall tracepoints: pinned programs, attached while a governed process lives.
    let mut on_demand_hooks = Vec::new();
    let mut on_demand = |name: &str, syscall: &str, prog: &libbpf_rs::Program<'_>| -> Result<()> {
        let point = format!("tracepoint/syscalls/{syscall}");
        if !probe::tracepoint_exists(syscall) {
            tracing::warn!(hook = %point, "this kernel has no such tracepoint; not attached");
            return Ok(());
        }
        pins::pin_object(prog.as_fd(), &set.prog_path(name)).with_context(|| format!("pin program {name}"))?;
        on_demand_hooks.push(Hook { program: name.to_string(), attach_point: point, on_demand: true });
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
    let cgroup_root = mounts::cgroup2_root()?;
    let cgroup = std::fs::File::open(&cgroup_root).with_context(|| format!("open the cgroup2 root {}", cgroup_root.display()))?;
    let cgroup_fd = cgroup.as_raw_fd();
    let at = |hook: &str| format!("{hook} on {}", cgroup_root.display());
    attached("airlock_packet_egress", &at("cgroup/egress"), p.airlock_packet_egress.attach_cgroup(cgroup_fd))?;
    if lsm {
        on_demand("airlock_enter_execve", "sys_enter_execve", &p.airlock_enter_execve)?;
        on_demand("airlock_enter_execveat", "sys_enter_execveat", &p.airlock_enter_execveat)?;
        attached("airlock_bprm_check", "lsm/bprm_check_security", p.airlock_bprm_check.attach_lsm())?;
        attached("airlock_socket_connect", "lsm/socket_connect", p.airlock_socket_connect.attach_lsm())?;
        attached("airlock_socket_sendmsg", "lsm/socket_sendmsg", p.airlock_socket_sendmsg.attach_lsm())?;
        attached("airlock_unix_stream_connect", "lsm/unix_stream_connect", p.airlock_unix_stream_connect.attach_lsm())?;
        attached("airlock_unix_may_send", "lsm/unix_may_send", p.airlock_unix_may_send.attach_lsm())?;
        attached("airlock_socket_create", "lsm/socket_create", p.airlock_socket_create.attach_lsm())?;
        attached("airlock_sock_tag", &at("cgroup/sock_create"), p.airlock_sock_tag.attach_cgroup(cgroup_fd))?;
        // Tamper resistance and protected files
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
        let fd = cgroup_fd;
        attached("airlock_connect4", &at("cgroup/connect4"), p.airlock_connect4.attach_cgroup(fd))?;
        attached("airlock_connect6", &at("cgroup/connect6"), p.airlock_connect6.attach_cgroup(fd))?;
        attached("airlock_sendmsg4", &at("cgroup/sendmsg4"), p.airlock_sendmsg4.attach_cgroup(fd))?;
        attached("airlock_sendmsg6", &at("cgroup/sendmsg6"), p.airlock_sendmsg6.attach_cgroup(fd))?;
        if compat_unix {
            attached("airlock_connect_unix", &at("cgroup/connect_unix"), p.airlock_connect_unix.attach_cgroup(fd))?;
            attached("airlock_sendmsg_unix", &at("cgroup/sendmsg_unix"), p.airlock_sendmsg_unix.attach_cgroup(fd))?;
        }
        // Raw inet sockets are refused at creation; packet sockets are punished below.
        attached("airlock_sock_create", &at("cgroup/sock_create"), p.airlock_sock_create.attach_cgroup(fd))?;
        // Detection of what compat cannot refuse. A syscall this kernel
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
            ("airlock_compat_creat", "sys_exit_creat", &p.airlock_compat_creat),
            ("airlock_compat_socket", "sys_enter_socket", &p.airlock_compat_socket),
        ] {
            on_demand(name, syscall, prog)?;
        }
    }
    hooks.extend(on_demand_hooks);
    // The old sets' sessions are governed by this set from now on.
    if !old_sets.is_empty() {
        let on_demand = OnDemand::new(set.clone(), &hooks);
        on_demand.attach()?;
    }
    // Every open hook of the new set records now: the old sets' strict-session
    // records come over last, so no write falls between the two.
    copy_written(&old_sets, &maps);
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
    maps.set_config(backend, 0)?;
    Ok(Attached { backend, hooks, links, maps, sizes, pins, set, startup, retiring: old_sets, gaps })
}

/// Copies the old sets' strict-session records (files written, overflowed
/// sessions). A record that cannot be copied marks its session overflowed in
/// the new maps, which then executes nothing (fail closed). An old set without
/// the maps (a build before strict sessions) had nothing to record.
fn copy_written(old_sets: &[PinSet], maps: &Maps) {
    let key_size = std::mem::size_of::<abi::WrittenKey>() as u32;
    for set in old_sets {
        let (Ok(written), Ok(full)) = (set.map("session_written"), set.map("session_written_full")) else {
            continue;
        };
        if written.key_size() != key_size || full.key_size() != 8 {
            tracing::warn!(set = %set.dir.display(), "the old strict-session maps have another layout; their sessions are marked overflowed");
            for key in written.keys() {
                if let Some(session) = key.get(..8) {
                    maps.mark_written_full(session);
                }
            }
            continue;
        }
        let (copied, overflowed) = maps.copy_written_from(&written, &full);
        if copied + overflowed > 0 {
            tracing::info!(set = %set.dir.display(), copied, overflowed, "strict-session records carried over");
        }
    }
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
    let (tagged_procs, quarantine) = maps.tag_maps();
    let mut copied = std::collections::BTreeSet::new();
    let mut quarantined = std::collections::BTreeSet::new();
    for _pass in 0..2 {
        for (from, to, seen) in [(&old_tags, tagged_procs, &mut copied), (&old_quarantine, quarantine, &mut quarantined)] {
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
    for (from, to, seen) in [(&old_tags, tagged_procs, &mut copied), (&old_quarantine, quarantine, &mut quarantined)] {
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

/// The LSM programs of the tamper and protected-file hooks.
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

/// The compat backend's syscall tracepoints.
fn guard_compat_programs<'a, 'b>(p: &'a mut airlock_ebpf::airlock::OpenAirlockProgs<'b>) -> [&'a mut libbpf_rs::OpenProgramMut<'b>; 20] {
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
        &mut p.airlock_compat_creat,
    ]
}

fn configure_maps(open: &mut OpenAirlockSkel<'_>, sizes: MapSizes) -> Result<()> {
    // Sized to pid_max so a tag can never be refused for want of room.
    let tags = probe::pid_max().clamp(32_768, 4_194_304);
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

/// Hash of the ABI header: sets with the same one write events this daemon decodes.
pub fn abi_hash() -> String {
    format!("{:016x}", abi::word_hash(airlock_ebpf::ABI_HEADER.as_bytes()))
}

pub fn wanted_meta(backend: Backend, sizes: MapSizes, hooks: Vec<Hook>) -> PinMeta {
    PinMeta {
        layout: pins::LAYOUT,
        object_hash: pins::object_hash(),
        abi_hash: abi_hash(),
        backend: backend.to_string(),
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        daemon_pid: std::process::id(),
        pinned_at: crate::clock::now_rfc3339(),
        sizes: sizes.into(),
        hooks,
    }
}

