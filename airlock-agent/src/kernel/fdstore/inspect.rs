//! What a descriptor handed back by the service manager really is, asked of
//! the kernel (never taken from its name), and the checks that decide
//! whether it is the object its name says.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{bail, Context, Result};
use libbpf_rs::libbpf_sys;
use libbpf_rs::query::{LinkInfo, LinkTypeInfo, PerfEventType};

use crate::kernel::pins::META_BYTES;
use crate::kernel::types::Hook;

/// The kernel keeps object names to 15 bytes (BPF_OBJ_NAME_LEN less the NUL).
const KERNEL_NAME_MAX: usize = 15;
/// The meta record's map name (pins.rs creates it).
pub const META_MAP_NAME: &str = "airlock_meta";

/// A BPF map, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapObject {
    pub id: u32,
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// What a link attaches its program to, reduced to what the checks compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// A raw tracepoint (`tp_btf/` programs), by tracepoint name.
    RawTracepoint(String),
    /// A BTF tracing link, by attach type (`lsm/` programs: BPF_LSM_MAC).
    Tracing(u32),
    /// A cgroup link, by attach type (BPF_CGROUP_*).
    Cgroup(u32),
    /// A perf-event link (`tracepoint/` programs). Kernels before 6.6 do not report the tracepoint.
    Tracepoint(Option<String>),
    /// Anything else, described.
    Other(String),
}

/// A BPF program, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramObject {
    pub id: u32,
    pub name: String,
    /// Every map the program uses.
    pub map_ids: Vec<u32>,
}

/// A BPF link and the program it holds attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkObject {
    pub id: u32,
    pub attachment: Attachment,
    pub program: ProgramObject,
}

/// What kind of file a descriptor is. Asked first: `BPF_OBJ_GET_INFO_BY_FD`
/// fills whatever info structure the file's own type has, so a link passed
/// where a map was expected would be read as garbage map info.
pub fn anon_kind(fd: BorrowedFd<'_>) -> String {
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(target) => target.to_string_lossy().into_owned(),
        Err(e) => format!("unreadable ({e})"),
    }
}

pub fn is_map(kind: &str) -> bool {
    kind == "anon_inode:bpf-map"
}

pub fn is_link(kind: &str) -> bool {
    kind == "anon_inode:bpf-link"
}

pub fn map_object(fd: BorrowedFd<'_>) -> Result<MapObject> {
    let info = libbpf_rs::MapInfo::new(fd).context("read the map's info")?;
    Ok(MapObject {
        id: info.info.id,
        name: info.name().unwrap_or_default().to_string(),
        map_type: info.info.type_,
        key_size: info.info.key_size,
        value_size: info.info.value_size,
        max_entries: info.info.max_entries,
    })
}

pub fn link_object(fd: BorrowedFd<'_>) -> Result<LinkObject> {
    let info = LinkInfo::from_fd(fd).context("read the link's info")?;
    let attachment = match info.info {
        LinkTypeInfo::RawTracepoint(tp) => Attachment::RawTracepoint(tp.name),
        LinkTypeInfo::Tracing(t) => Attachment::Tracing(t.attach_type as u32),
        LinkTypeInfo::Cgroup(c) => Attachment::Cgroup(c.attach_type as u32),
        LinkTypeInfo::PerfEvent(p) => match p.event_type {
            PerfEventType::Tracepoint { name, .. } => {
                Attachment::Tracepoint(name.map(|n| n.to_string_lossy().into_owned()))
            }
            // 6.1 reports no detail for perf-event links.
            PerfEventType::Unknown(_) => Attachment::Tracepoint(None),
            other => Attachment::Other(format!("perf event {other:?}")),
        },
        other => Attachment::Other(format!("{other:?}")),
    };
    Ok(LinkObject {
        id: info.id,
        attachment,
        program: program_object(info.prog_id)?,
    })
}

/// The program by id: its name and the maps it uses.
fn program_object(id: u32) -> Result<ProgramObject> {
    let fd = crate::kernel::pins::program_by_id(id).with_context(|| format!("open program {id}"))?;
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the duration of the call.
    let rc =
        unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_fd().as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(-rc))
            .with_context(|| format!("read the info of program {id}"));
    }
    // Second call: the kernel copies at most nr_map_ids ids into our buffer.
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let mut with_maps = libbpf_sys::bpf_prog_info {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of_val(&with_maps) as u32;
    // SAFETY: map_ids holds nr_map_ids u32s and outlives the call.
    let rc = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(fd.as_fd().as_raw_fd(), &mut with_maps, &mut len)
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(-rc))
            .with_context(|| format!("read the maps of program {id}"));
    }
    map_ids.truncate(with_maps.nr_map_ids.min(map_ids.len() as u32) as usize);
    let name_bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(ProgramObject {
        id,
        name: String::from_utf8_lossy(&name_bytes).into_owned(),
        map_ids,
    })
}

/// Reads the meta record (one array entry) through a descriptor.
pub fn read_meta_record(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let mut value = vec![0u8; META_BYTES as usize];
    let key = 0u32;
    // SAFETY: key and value are valid buffers of the map's key and value sizes (checked before).
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            (&key as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!("read the meta record: {}", std::io::Error::last_os_error());
    }
    Ok(value)
}

/// Whether the kernel's (at most 15-byte) name is the start of `object`,
/// whose pin file name has `_` where the object's name had `.` (`.bss`).
pub fn kernel_name_matches(kernel: &str, object: &str) -> bool {
    let expected: String = object.chars().take(KERNEL_NAME_MAX).collect();
    !kernel.is_empty() && kernel.replace('.', "_") == expected
}

/// The meta record is a one-entry array of META_BYTES named `airlock_meta`.
pub fn check_meta_map(map: &MapObject) -> Result<(), String> {
    let want = (libbpf_sys::BPF_MAP_TYPE_ARRAY, 4, META_BYTES, 1);
    let have = (map.map_type, map.key_size, map.value_size, map.max_entries);
    if map.name != META_MAP_NAME || have != want {
        return Err(format!(
            "not a meta record: map {:?} type {} key {} value {} entries {} (want {META_MAP_NAME:?}, an array of one {META_BYTES}-byte value)",
            map.name, map.map_type, map.key_size, map.value_size, map.max_entries
        ));
    }
    Ok(())
}

pub fn check_map(pin_name: &str, map: &MapObject) -> Result<(), String> {
    if !kernel_name_matches(&map.name, pin_name) {
        return Err(format!(
            "the map is named {:?} in the kernel, not {pin_name:?}",
            map.name
        ));
    }
    Ok(())
}

/// A link is the set's attachment of `program` if the set's meta record lists
/// the hook, the kernel's program has that name, the link is of the kind the
/// hook's attach point needs, and every map the program uses is one of the set's.
pub fn check_link(
    program: &str,
    hooks: &[Hook],
    link: &LinkObject,
    set_maps: &BTreeSet<u32>,
) -> Result<(), String> {
    let Some(hook) = hooks.iter().find(|h| h.program == program) else {
        return Err(format!("the set's meta record lists no hook {program}"));
    };
    if !kernel_name_matches(&link.program.name, program) {
        return Err(format!(
            "the link holds program {:?} (id {}), not {program}",
            link.program.name, link.program.id
        ));
    }
    attachment_fits(&hook.attach_point, &link.attachment)?;
    if link.program.map_ids.is_empty() {
        return Err(format!(
            "program {program} (id {}) uses no map: not one of Airlock's",
            link.program.id
        ));
    }
    if let Some(foreign) = link
        .program
        .map_ids
        .iter()
        .find(|id| !set_maps.contains(id))
    {
        return Err(format!("program {program} (id {}) uses map {foreign}, which is not one of the set's stored maps", link.program.id));
    }
    Ok(())
}

/// Whether a link of this kind can be the attachment `attach_point` names
/// (as load.rs writes them: `tp_btf/X`, `lsm/X`, `tracepoint/syscalls/X`, `cgroup/X on DIR`).
pub fn attachment_fits(attach_point: &str, attachment: &Attachment) -> Result<(), String> {
    let mismatch = || {
        Err(format!(
            "the link is {attachment:?}, which cannot be {attach_point}"
        ))
    };
    if let Some(tp) = attach_point.strip_prefix("tp_btf/") {
        return match attachment {
            Attachment::RawTracepoint(name) if name == tp => Ok(()),
            _ => mismatch(),
        };
    }
    if attach_point.starts_with("lsm/") {
        return match attachment {
            Attachment::Tracing(libbpf_sys::BPF_LSM_MAC) => Ok(()),
            _ => mismatch(),
        };
    }
    if let Some(tp) = attach_point.strip_prefix("tracepoint/") {
        let event = tp.rsplit('/').next().unwrap_or(tp);
        return match attachment {
            Attachment::Tracepoint(None) => Ok(()),
            Attachment::Tracepoint(Some(name)) if name == event => Ok(()),
            _ => mismatch(),
        };
    }
    if let Some(rest) = attach_point.strip_prefix("cgroup/") {
        let hook = rest.split(' ').next().unwrap_or(rest);
        let want = match hook {
            "connect4" => libbpf_sys::BPF_CGROUP_INET4_CONNECT,
            "connect6" => libbpf_sys::BPF_CGROUP_INET6_CONNECT,
            "sendmsg4" => libbpf_sys::BPF_CGROUP_UDP4_SENDMSG,
            "sendmsg6" => libbpf_sys::BPF_CGROUP_UDP6_SENDMSG,
            "connect_unix" => libbpf_sys::BPF_CGROUP_UNIX_CONNECT,
            "sendmsg_unix" => libbpf_sys::BPF_CGROUP_UNIX_SENDMSG,
            "sock_create" => libbpf_sys::BPF_CGROUP_INET_SOCK_CREATE,
            "egress" => libbpf_sys::BPF_CGROUP_INET_EGRESS,
            _ => return Err(format!("unknown cgroup hook in {attach_point}")),
        };
        return match attachment {
            Attachment::Cgroup(t) if *t == want => Ok(()),
            _ => mismatch(),
        };
    }
    Err(format!("unknown attach point {attach_point}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(program: &str, point: &str) -> Hook {
        Hook {
            on_demand: false,
            program: program.into(),
            attach_point: point.into(),
        }
    }

    fn link(name: &str, attachment: Attachment, maps: &[u32]) -> LinkObject {
        LinkObject {
            id: 7,
            attachment,
            program: ProgramObject {
                id: 70,
                name: name.into(),
                map_ids: maps.to_vec(),
            },
        }
    }

    fn map(name: &str) -> MapObject {
        MapObject {
            id: 1,
            name: name.into(),
            map_type: libbpf_sys::BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 8,
            max_entries: 16,
        }
    }

    #[test]
    fn kernel_names_are_compared_as_truncated_to_15_bytes() {
        assert!(kernel_name_matches(
            "airlock_compat_",
            "airlock_compat_pidfd_getfd"
        ));
        assert!(kernel_name_matches("airlock_fork", "airlock_fork"));
        assert!(kernel_name_matches("airlock.bss", "airlock_bss"));
        assert!(!kernel_name_matches("airlock_exit", "airlock_fork"));
        assert!(!kernel_name_matches("", "airlock_fork"));
        assert!(!kernel_name_matches(
            "airlock_fork",
            "airlock_fork_x_longer_name"
        ));
    }

    #[test]
    fn maps_are_checked_by_name() {
        assert!(check_map("tagged_procs", &map("tagged_procs")).is_ok());
        assert!(check_map("airlock_bss", &map("airlock.bss")).is_ok());
        let err = check_map("tagged_procs", &map("quarantine")).unwrap_err();
        assert!(
            err.contains("quarantine") && err.contains("tagged_procs"),
            "{err}"
        );
    }

    #[test]
    fn the_meta_record_has_one_shape() {
        let good = MapObject {
            id: 3,
            name: META_MAP_NAME.into(),
            map_type: libbpf_sys::BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: META_BYTES,
            max_entries: 1,
        };
        assert!(check_meta_map(&good).is_ok());
        for bad in [
            MapObject {
                name: "tagged_procs".into(),
                ..good.clone()
            },
            MapObject {
                value_size: 8,
                ..good.clone()
            },
            MapObject {
                map_type: libbpf_sys::BPF_MAP_TYPE_HASH,
                ..good.clone()
            },
            MapObject {
                max_entries: 2,
                ..good.clone()
            },
        ] {
            assert!(check_meta_map(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_attach_point_takes_only_its_own_kind_of_link() {
        let cases: [(&str, Attachment); 6] = [
            (
                "tp_btf/sched_process_fork",
                Attachment::RawTracepoint("sched_process_fork".into()),
            ),
            (
                "lsm/bprm_check_security",
                Attachment::Tracing(libbpf_sys::BPF_LSM_MAC),
            ),
            (
                "tracepoint/syscalls/sys_enter_kill",
                Attachment::Tracepoint(Some("sys_enter_kill".into())),
            ),
            (
                "tracepoint/syscalls/sys_enter_kill",
                Attachment::Tracepoint(None),
            ),
            (
                "cgroup/connect4 on /sys/fs/cgroup",
                Attachment::Cgroup(libbpf_sys::BPF_CGROUP_INET4_CONNECT),
            ),
            (
                "cgroup/sendmsg_unix on /sys/fs/cgroup",
                Attachment::Cgroup(libbpf_sys::BPF_CGROUP_UNIX_SENDMSG),
            ),
        ];
        for (point, attachment) in &cases {
            assert!(
                attachment_fits(point, attachment).is_ok(),
                "{point} refused {attachment:?}"
            );
        }
        let wrong: [(&str, Attachment); 7] = [
            (
                "tp_btf/sched_process_fork",
                Attachment::RawTracepoint("sched_process_exit".into()),
            ),
            (
                "tp_btf/sched_process_fork",
                Attachment::Tracing(libbpf_sys::BPF_LSM_MAC),
            ),
            (
                "lsm/bprm_check_security",
                Attachment::Tracing(libbpf_sys::BPF_TRACE_FENTRY),
            ),
            (
                "tracepoint/syscalls/sys_enter_kill",
                Attachment::Tracepoint(Some("sys_enter_tkill".into())),
            ),
            (
                "cgroup/connect4 on /sys/fs/cgroup",
                Attachment::Cgroup(libbpf_sys::BPF_CGROUP_INET6_CONNECT),
            ),
            (
                "cgroup/connect4 on /sys/fs/cgroup",
                Attachment::Other("Xdp".into()),
            ),
            ("kprobe/do_exit", Attachment::Other("KprobeMulti".into())),
        ];
        for (point, attachment) in &wrong {
            let err = attachment_fits(point, attachment).unwrap_err();
            assert!(err.contains(point), "{err}");
        }
    }

    #[test]
    fn a_link_must_be_the_hook_program_and_use_only_the_set_maps() {
        let hooks = [
            hook("airlock_fork", "tp_btf/sched_process_fork"),
            hook("airlock_compat_kill", "tracepoint/syscalls/sys_enter_kill"),
        ];
        let set_maps: BTreeSet<u32> = [10, 11, 12].into();
        let fork = |name: &str, maps: &[u32]| {
            link(
                name,
                Attachment::RawTracepoint("sched_process_fork".into()),
                maps,
            )
        };
        assert!(check_link(
            "airlock_fork",
            &hooks,
            &fork("airlock_fork", &[10, 12]),
            &set_maps
        )
        .is_ok());
        assert!(check_link(
            "airlock_compat_kill",
            &hooks,
            &link("airlock_compat_", Attachment::Tracepoint(None), &[11]),
            &set_maps
        )
        .is_ok());

        let why =
            |program: &str, l: &LinkObject| check_link(program, &hooks, l, &set_maps).unwrap_err();
        assert!(why("airlock_exit", &fork("airlock_exit", &[10])).contains("lists no hook"));
        assert!(why("airlock_fork", &fork("airlock_exit", &[10])).contains("not airlock_fork"));
        assert!(
            why("airlock_fork", &fork("airlock_fork", &[10, 99])).contains("map 99"),
            "a program of another set"
        );
        assert!(why("airlock_fork", &fork("airlock_fork", &[])).contains("uses no map"));
        assert!(why(
            "airlock_fork",
            &link("airlock_fork", Attachment::Tracepoint(None), &[10])
        )
        .contains("cannot be tp_btf/"));
    }
}
