//! Pinned enforcement: the links and maps in bpffs that outlive the daemon.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/airlock`):
//!
//! ```text
//! <pin-dir>/                      flock()ed by the running daemon: one daemon per pin dir
//!   set-<seconds>-<pid>/          one pinned set: one loaded object and its attachments
//!     links/<program>             every attachment (tp_btf, tracepoint, lsm, cgroup links);
//!                                 an on-demand hook's only while a governed process lives
//!     progs/<program>             the programs of the on-demand hooks, to attach them again
//!     maps/<map>                  every map of the object
//!     meta                        written LAST: a one-entry array map holding a JSON record
//! ```
//!
//! A set without `meta` is incomplete (the daemon died while pinning it) and is
//! never adopted. bpffs holds only BPF objects and directories, which is why the
//! metadata record is itself a small map.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, MapType};
use serde::{Deserialize, Serialize};

use super::types::{Hook, MapSizes};

/// Where the enforcement is pinned unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/airlock";

/// Version of this layout and of the meta record; a different one is never
/// adopted. A set with on-demand hooks (whose links come and go) must not be
/// adopted by a daemon that would take their absence for hooks not needed.
pub const LAYOUT: u32 = 2;
/// Bytes of the meta record (JSON, NUL padded).
pub const META_BYTES: u32 = 8192;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a pinned set is: enough to decide whether a daemon may adopt it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinMeta {
    pub layout: u32,
    /// FNV-1a of the compiled enforcement object: programs and map layouts.
    pub object_hash: String,
    /// FNV-1a of the ABI header: equal means the same event format.
    pub abi_hash: String,
    pub backend: String,
    pub daemon_version: String,
    pub daemon_pid: u32,
    pub pinned_at: String,
    pub sizes: SavedSizes,
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedSizes {
    pub programs: u32,
    pub trie: u32,
    pub egress: u32,
    pub ringbuf_bytes: u32,
}

impl PinMeta {
    /// Parses the record's bytes (JSON, NUL padded).
    pub fn from_record(bytes: &[u8]) -> Result<PinMeta> {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        serde_json::from_slice(&bytes[..end]).context("the meta record is not this layout's JSON")
    }
}

impl From<MapSizes> for SavedSizes {
    fn from(s: MapSizes) -> Self {
        SavedSizes { programs: s.programs, trie: s.trie, egress: s.egress, ringbuf_bytes: s.ringbuf_bytes }
    }
}

/// The hash that identifies this build's enforcement object.
pub fn object_hash() -> String {
    format!("{:016x}", airlock_common::abi::word_hash(airlock_ebpf::AIRLOCK_OBJECT))
}

/// The pin directory, locked for as long as this value lives.
pub struct PinRoot {
    dir: PathBuf,
    _lock: File,
}

impl PinRoot {
    /// Creates the directory if needed (it must be on bpffs) and takes its lock.
    pub fn lock(dir: &Path) -> Result<PinRoot> {
        std::fs::create_dir_all(dir).with_context(|| format!("create the pin directory {}", dir.display()))?;
        require_bpffs(dir)?;
        let file = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!("another Airlock daemon is running with the pin directory {} (it holds its lock)", dir.display());
            }
            return Err(err).with_context(|| format!("lock {}", dir.display()));
        }
        Ok(PinRoot { dir: dir.to_path_buf(), _lock: file })
    }

    /// True when a running daemon holds the lock of `dir`.
    pub fn is_locked(dir: &Path) -> Result<bool> {
        let file = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
        // SAFETY: flock on a descriptor we own; the lock (if taken) ends with the file.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        Ok(rc != 0)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every set in the directory, oldest first.
    pub fn sets(&self) -> Result<Vec<PinSet>> {
        list_sets(&self.dir)
    }

    /// A directory name no earlier set used.
    pub fn new_set(&self) -> Result<PinSet> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut n = 0;
        loop {
            let dir = self.dir.join(format!("set-{secs:012}-{}-{n}", std::process::id()));
            if !dir.exists() {
                for sub in ["links", "progs", "maps"] {
                    std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}", dir.join(sub).display()))?;
                }
                return Ok(PinSet { dir });
            }
            n += 1;
        }
    }
}

pub fn list_sets(root: &Path) -> Result<Vec<PinSet>> {
    let mut sets = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sets),
        Err(e) => return Err(e).with_context(|| format!("read {}", root.display())),
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("set-") && entry.path().is_dir() {
            sets.push(PinSet { dir: entry.path() });
        }
    }
    sets.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(sets)
}

fn require_bpffs(dir: &Path) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).context("pin directory path contains NUL")?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", dir.display()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!("the pin directory {} is not on a bpf file system (mount bpffs, e.g. on /sys/fs/bpf)", dir.display());
    }
    Ok(())
}

/// One pinned set of links and maps.
#[derive(Debug, Clone)]
pub struct PinSet {
    pub dir: PathBuf,
}

impl PinSet {
    /// bpffs refuses names with a dot, which libbpf gives internal maps (`.bss`).
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name.replace('.', "_"))
    }

    pub fn link_path(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    /// Where an on-demand hook's program is pinned.
    pub fn prog_path(&self, program: &str) -> PathBuf {
        self.dir.join("progs").join(program)
    }

    /// Opens a pinned map by the name it has in the object.
    pub fn map(&self, name: &str) -> Result<MapHandle> {
        let path = self.map_path(name);
        MapHandle::from_pinned_path(&path).with_context(|| format!("open the pinned map {}", path.display()))
    }

    /// The set's meta record, if it is complete and readable.
    pub fn meta(&self) -> Result<PinMeta> {
        let path = self.dir.join("meta");
        let map = MapHandle::from_pinned_path(&path).with_context(|| format!("open {} (an incomplete set has none)", path.display()))?;
        let bytes = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?.context("the meta record is empty")?;
        PinMeta::from_record(&bytes).with_context(|| format!("parse the meta record in {}", path.display()))
    }

    /// Writes the meta record: from now on the set is complete.
    pub fn write_meta(&self, meta: &PinMeta) -> Result<()> {
        let json = serde_json::to_vec(meta)?;
        if json.len() >= META_BYTES as usize {
            bail!("the pin meta record is {} bytes, more than {META_BYTES}", json.len());
        }
        let mut value = vec![0u8; META_BYTES as usize];
        value[..json.len()].copy_from_slice(&json);
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut map = MapHandle::create(MapType::Array, Some("airlock_meta"), 4, META_BYTES, 1, &opts).context("create the pin meta map")?;
        map.update(&0u32.to_ne_bytes(), &value, MapFlags::ANY).context("write the pin meta record")?;
        let path = self.dir.join("meta");
        let _ = std::fs::remove_file(&path);
        map.pin(&path).with_context(|| format!("pin {}", path.display()))
    }

    /// Names of the pinned links (the programs they attach).
    pub fn links(&self) -> Vec<String> {
        names_in(&self.dir.join("links"))
    }

    /// File names of the pinned maps (`.` of an object's map name is `_` here).
    pub fn map_pins(&self) -> Vec<String> {
        names_in(&self.dir.join("maps"))
    }

    /// The directory's own name (`set-...`).
    pub fn name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Removes the set. Unpinning a link nobody else holds detaches its program;
    /// links go first so nothing is left enforcing from maps about to vanish.
    pub fn remove(&self) -> Result<Vec<String>> {
        let programs = self.program_ids();
        let removed = self.unpin_all()?;
        wait_programs_gone(&programs);
        Ok(removed)
    }

    /// The ids of the programs the pinned links attach, and of the pinned programs.
    pub fn program_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .links()
            .iter()
            .filter_map(|name| libbpf_rs::Link::open(self.link_path(name)).ok())
            // A link opened from its pin only closes its fd when dropped: the pin keeps it.
            .filter_map(|link| link.info().ok().map(|i| i.prog_id))
            .collect();
        for name in names_in(&self.dir.join("progs")) {
            if let Ok(id) = pinned_program_id(&self.prog_path(&name)) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn unpin_all(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for sub in ["links", "progs", "maps"] {
            for name in names_in(&self.dir.join(sub)) {
                let path = self.dir.join(sub).join(&name);
                std::fs::remove_file(&path).with_context(|| format!("unpin {}", path.display()))?;
                removed.push(format!("{sub}/{name}"));
            }
            let _ = std::fs::remove_dir(self.dir.join(sub));
        }
        let meta = self.dir.join("meta");
        if meta.exists() {
            std::fs::remove_file(&meta).with_context(|| format!("unpin {}", meta.display()))?;
            removed.push("meta".into());
        }
        std::fs::remove_dir(&self.dir).with_context(|| format!("remove {}", self.dir.display()))?;
        Ok(removed)
    }

    /// Why this set cannot be adopted by a daemon wanting `want`, or None if it can.
    pub fn incompatibility(&self, want: &PinMeta) -> Option<String> {
        let meta = match self.meta() {
            Ok(m) => m,
            Err(e) => return Some(format!("{e:#}")),
        };
        if meta.layout != want.layout {
            return Some(format!("pin layout {} (this daemon uses {})", meta.layout, want.layout));
        }
        if meta.object_hash != want.object_hash {
            return Some(format!(
                "pinned by daemon {} with enforcement object {} (this daemon's is {})",
                meta.daemon_version, meta.object_hash, want.object_hash
            ));
        }
        if meta.backend != want.backend {
            return Some(format!("backend {} (this daemon chose {})", meta.backend, want.backend));
        }
        if meta.sizes != want.sizes {
            return Some(format!("map sizes {:?} (this daemon wants {:?})", meta.sizes, want.sizes));
        }
        let links = self.links();
        if let Some(missing) = meta.hooks.iter().find(|h| !h.on_demand && !links.contains(&h.program)) {
            return Some(format!("the link of {} ({}) is no longer pinned", missing.program, missing.attach_point));
        }
        // An on-demand program is found again from its pin, or from its link while attached.
        let programs = names_in(&self.dir.join("progs"));
        if let Some(missing) = meta.hooks.iter().find(|h| h.on_demand && !programs.contains(&h.program) && !links.contains(&h.program)) {
            return Some(format!("the on-demand program {} ({}) is no longer pinned", missing.program, missing.attach_point));
        }
        None
    }
}

/// A descriptor of the loaded program with this kernel id.
pub fn program_by_id(id: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; a returned fd is ours.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Which of the programs `ids` still exist.
pub fn programs_alive(ids: &[u32]) -> Vec<u32> {
    ids.iter().copied().filter(|id| program_by_id(*id).is_ok()).collect()
}

/// The kernel frees a released link's program asynchronously: wait (bounded)
/// until none of `ids` exists, so "unloaded" means detached.
pub fn wait_programs_gone(ids: &[u32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive = programs_alive(ids);
        if alive.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(programs = ?alive, "programs still loaded 10 s after their links were removed (something else holds them)");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Pins a BPF object (map, link or program) at `path`.
pub fn pin_object(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).context("pin path contains NUL")?;
    // SAFETY: valid descriptor and C string for the duration of the call.
    let rc = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(-rc)).with_context(|| format!("pin {}", path.display()));
    }
    Ok(())
}

/// Opens the BPF object pinned at `path`.
pub fn open_pinned(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).context("pin path contains NUL")?;
    // SAFETY: valid C string; a returned fd is ours.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd)).with_context(|| format!("open the pin {}", path.display()));
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel id of the program pinned at `path`.
pub fn pinned_program_id(path: &Path) -> Result<u32> {
    let fd = open_pinned(path)?;
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is valid for len bytes.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(-rc)).with_context(|| format!("read the program pinned at {}", path.display()));
    }
    Ok(info.id)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Removes every set under `root` and the directory itself (`unload`, `uninstall`).
pub fn remove_all(root: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for set in list_sets(root)? {
        for item in set.remove()? {
            removed.push(format!("{}/{item}", set.dir.display()));
        }
    }
    match std::fs::remove_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {} (something else is pinned there)", root.display())),
    }
    Ok(removed)
}
