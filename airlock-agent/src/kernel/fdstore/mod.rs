//! The pinned enforcement in systemd's file descriptor store.
//!
//! Pins are files: root can remove them, and with them every program whose
//! link only a pin held. Under systemd the daemon also hands a descriptor of
//! every link and map of its set to the service manager (`FDSTORE=1`), so
//! PID 1 holds the programs attached whatever happens to the pins and the
//! daemon. A restarted daemon is given them back (`LISTEN_FDS`), checks each
//! with the kernel, pins again what is missing, and then picks, adopts or
//! replaces sets exactly as it does without systemd.
//!
//! This module is the kernel side: the names ([`names`]), what a descriptor
//! is ([`inspect`]), taking descriptors back ([`restore`]) and the entries of
//! the set in force ([`entries`]). Sending them is `daemon/fd_store.rs`.

mod inspect;
pub mod names;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::pins::{self, PinMeta, PinRoot, PinSet};
use names::{FdName, Kind};

/// What the descriptors handed back at start came to.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Every name the service manager passed, valid or not: the daemon
    /// withdraws from the store whatever it does not store again.
    pub received: Vec<String>,
    /// The descriptors that proved to be what their names say, and so were
    /// used: name to the kernel's id of the object.
    pub taken_back: BTreeMap<String, u32>,
    /// Descriptors not used, each with why.
    pub ignored: Vec<String>,
    /// Pins made again from a descriptor (paths).
    pub repinned: Vec<String>,
}

/// One object of the set in force, to be stored under its name.
pub struct Entry {
    pub name: String,
    pub fd: OwnedFd,
    /// The kernel's id of the link or map: equal ids are the same object.
    pub id: u32,
}

/// A stored object that passed its checks.
struct Valid {
    name: FdName,
    fd: OwnedFd,
    id: u32,
}

/// Checks every descriptor the service manager passed, pins again what a
/// valid set lacks in `pins`, and closes them all. Nothing here fails the
/// start: a descriptor that is not what its name says is logged and ignored,
/// and what is left pinned is judged by the usual adoption checks.
pub fn restore(pins: &PinRoot, inherited: Vec<(String, OwnedFd)>) -> Restored {
    let mut restored = Restored {
        received: inherited.iter().map(|(n, _)| n.clone()).collect(),
        ..Default::default()
    };
    let mut ignored = Vec::new();
    let mut ignore = |name: &str, why: String| {
        tracing::warn!(
            descriptor = name,
            "a descriptor from systemd's file descriptor store is ignored: {why}"
        );
        ignored.push(format!("{name}: {why}"));
    };
    let mut sets: BTreeMap<String, Vec<(FdName, OwnedFd)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (name, fd) in inherited {
        match FdName::parse(&name) {
            Ok(_) if !seen.insert(name.clone()) => {
                ignore(&name, "a second descriptor under the same name".into())
            }
            Ok(parsed) => sets
                .entry(parsed.set.clone())
                .or_default()
                .push((parsed, fd)),
            Err(e) => ignore(&name, e.why.to_string()),
        }
    }
    for (set, objects) in sets {
        let valid = validate(objects, &mut ignore);
        if valid.is_empty() {
            continue;
        }
        let target = PinSet {
            dir: pins.dir().join(&set),
        };
        for v in &valid {
            restored.taken_back.insert(v.name.format(), v.id);
        }
        match repin(&target, &valid) {
            Ok(paths) => restored.repinned.extend(paths),
            Err(e) => {
                tracing::error!(set = %target.dir.display(), "pin again what the set lacks: {e:#}")
            }
        }
    }
    restored.ignored = ignored;
    if !restored.received.is_empty() {
        tracing::info!(
            received = restored.received.len(),
            taken_back = restored.taken_back.len(),
            ignored = restored.ignored.len(),
            repinned = restored.repinned.len(),
            "took the enforcement back from systemd's file descriptor store"
        );
    }
    restored
}

/// The set's objects that are what their names say. A set whose meta record
/// is missing or unreadable cannot be checked, so none of it is used.
fn validate(objects: Vec<(FdName, OwnedFd)>, ignore: &mut impl FnMut(&str, String)) -> Vec<Valid> {
    let mut meta = None;
    let mut maps = Vec::new();
    let mut links = Vec::new();
    for (name, fd) in objects {
        match name.kind {
            Kind::Meta => meta = Some((name, fd)),
            Kind::Map => maps.push((name, fd)),
            Kind::Link => links.push((name, fd)),
        }
    }
    let Some((meta_name, meta_fd)) = meta else {
        for (name, _) in maps.iter().chain(&links) {
            ignore(
                &name.format(),
                "its set's meta record was not stored, so nothing of the set can be checked".into(),
            );
        }
        return Vec::new();
    };
    let record = match check_meta(meta_fd.as_fd()) {
        Ok(r) => r,
        Err(e) => {
            ignore(&meta_name.format(), format!("{e:#}"));
            for (name, _) in maps.iter().chain(&links) {
                ignore(&name.format(), "its set's meta record is not valid".into());
            }
            return Vec::new();
        }
    };
    let mut valid = Vec::new();
    for (name, fd) in maps {
        let kind = inspect::anon_kind(fd.as_fd());
        let checked = if inspect::is_map(&kind) {
            inspect::map_object(fd.as_fd())
                .map_err(|e| format!("{e:#}"))
                .and_then(|m| inspect::check_map(&name.object, &m).map(|()| m.id))
        } else {
            Err(format!("not a BPF map but {kind}"))
        };
        match checked {
            Ok(id) => valid.push(Valid { name, fd, id }),
            Err(why) => ignore(&name.format(), why),
        }
    }
    let set_maps: BTreeSet<u32> = valid.iter().map(|v| v.id).collect();
    for (name, fd) in links {
        let kind = inspect::anon_kind(fd.as_fd());
        let checked = if inspect::is_link(&kind) {
            inspect::link_object(fd.as_fd())
                .map_err(|e| format!("{e:#}"))
                .and_then(|l| {
                    inspect::check_link(&name.object, &record.0.hooks, &l, &set_maps).map(|()| l.id)
                })
        } else {
            Err(format!("not a BPF link but {kind}"))
        };
        match checked {
            Ok(id) => valid.push(Valid { name, fd, id }),
            Err(why) => ignore(&name.format(), why),
        }
    }
    valid.push(Valid {
        name: meta_name,
        fd: meta_fd,
        id: record.1,
    });
    valid
}

/// The meta record behind a descriptor, and the map's id.
fn check_meta(fd: BorrowedFd<'_>) -> Result<(PinMeta, u32)> {
    let kind = inspect::anon_kind(fd);
    if !inspect::is_map(&kind) {
        bail!("not a BPF map but {kind}");
    }
    let map = inspect::map_object(fd)?;
    inspect::check_meta_map(&map).map_err(anyhow::Error::msg)?;
    let meta = PinMeta::from_record(&inspect::read_meta_record(fd)?)?;
    Ok((meta, map.id))
}

/// Pins every valid object the set's directory lacks: maps, then links, then
/// the meta record (a set is complete only once its meta record is pinned).
/// A pin that holds another object is replaced: the descriptor is what the
/// previous daemon attached. Returns the paths pinned.
fn repin(set: &PinSet, valid: &[Valid]) -> Result<Vec<String>> {
    for sub in ["maps", "links", "progs"] {
        let dir = set.dir.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut ordered: Vec<&Valid> = valid.iter().collect();
    ordered.sort_by_key(|v| match v.name.kind {
        Kind::Map => 0,
        Kind::Link => 1,
        Kind::Meta => 2,
    });
    let mut pinned = Vec::new();
    for v in ordered {
        let path = match v.name.kind {
            Kind::Map => set.dir.join("maps").join(&v.name.object),
            Kind::Link => set.dir.join("links").join(&v.name.object),
            Kind::Meta => set.dir.join("meta"),
        };
        match pinned_id(&path, v.name.kind) {
            Some(id) if id == v.id => continue,
            Some(other) => {
                tracing::warn!(pin = %path.display(), pinned = other, stored = v.id, "the pin holds another object than the stored one; it is replaced");
                std::fs::remove_file(&path)
                    .with_context(|| format!("remove {}", path.display()))?;
            }
            None => {}
        }
        if let Err(e) = pins::pin_object(v.fd.as_fd(), &path) {
            tracing::error!("{e:#}");
            continue;
        }
        tracing::info!(pin = %path.display(), "pinned again from systemd's file descriptor store");
        pinned.push(path.display().to_string());
    }
    Ok(pinned)
}

/// The id of the object pinned at `path`, if one of `kind` is.
fn pinned_id(path: &Path, kind: Kind) -> Option<u32> {
    if std::fs::symlink_metadata(path).is_err() {
        return None;
    }
    // Something is there: an object of another kind, or one that will not
    // open, counts as another object (id 0 is never a kernel id).
    let id = pins::open_pinned(path).ok().and_then(|fd| match kind {
        Kind::Link if inspect::is_link(&inspect::anon_kind(fd.as_fd())) => {
            inspect::link_object(fd.as_fd()).ok().map(|l| l.id)
        }
        Kind::Map | Kind::Meta if inspect::is_map(&inspect::anon_kind(fd.as_fd())) => {
            inspect::map_object(fd.as_fd()).ok().map(|m| m.id)
        }
        _ => None,
    });
    Some(id.unwrap_or(0))
}

/// Every pinned object of `set`, opened from its pin, under its store name.
pub fn entries(set: &PinSet) -> Result<Vec<Entry>> {
    let name = set.name();
    let mut out = Vec::new();
    for map in set.map_pins() {
        out.push(entry(FdName::map(&name, &map), set.dir.join("maps").join(&map))?);
    }
    for link in set.links() {
        out.push(entry(FdName::link(&name, &link), set.link_path(&link))?);
    }
    out.push(entry(FdName::meta(&name), set.dir.join("meta"))?);
    Ok(out)
}

/// The pinned links of `programs` in `set`, under their store names.
pub fn link_entries(set: &PinSet, programs: &[String]) -> Result<Vec<Entry>> {
    programs.iter().map(|program| entry(FdName::link(&set.name(), program), set.link_path(program))).collect()
}

/// The store name of the link of `program` in `set`.
pub fn link_name(set: &PinSet, program: &str) -> String {
    FdName::link(&set.name(), program).format()
}

fn entry(fd_name: FdName, path: PathBuf) -> Result<Entry> {
    let fd = pins::open_pinned(&path)?;
    let id = match fd_name.kind {
        Kind::Link => inspect::link_object(fd.as_fd())?.id,
        Kind::Map | Kind::Meta => inspect::map_object(fd.as_fd())?.id,
    };
    let name = fd_name.format();
    // Every name must read back: a pin whose name the parser refuses could never be taken back.
    FdName::parse(&name).with_context(|| format!("the pinned object {name} has no store name"))?;
    Ok(Entry { name, fd, id })
}
