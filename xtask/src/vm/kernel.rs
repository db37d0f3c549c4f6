//! A guest's kernel and initramfs: a Debian kernel package resolved,
//! downloaded and extracted (cached under target/vm/), the modules the guest
//! needs to reach the host, and an initramfs (cpio "newc") with a static
//! busybox and vm-tests/init.sh as /init.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run as run_step;

/// What the guest needs from the kernel's modules to mount the host over 9p.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// The guest's first stage.
const INIT: &str = include_str!("../../../vm-tests/init.sh");

/// What an initramfs holds besides busybox: its `/init`, the modules it
/// loads (in order) and the directories that script expects.
pub struct InitramfsSpec<'a> {
    /// Distinguishes this initramfs's file from others for the same kernel.
    pub name: &'a str,
    pub init: &'a str,
    pub modules: &'a [PathBuf],
    pub dirs: &'a [&'a str],
}

/// A kernel ready to boot.
#[derive(Clone)]
pub struct KernelImage {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// Module files in load order, decompressed.
    pub modules: Vec<PathBuf>,
    /// The package's lib/modules/VERSION, for guests that need other modules.
    pub module_root: PathBuf,
}

/// Resolves, downloads and extracts a Debian kernel package (cached under target/vm).
pub fn prepare_kernel(meta_package: &str, vm_dir: &Path) -> Result<KernelImage> {
    let package = resolve_meta(meta_package)?;
    let root = vm_dir.join(&package);
    let boot = root.join("boot");
    if !boot.is_dir() {
        let debs = vm_dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        let existing = find_deb(&debs, &package);
        let deb = match existing {
            Some(deb) => deb,
            None => {
                eprintln!("==> downloading {package}");
                // apt's sandbox user cannot write here; root download is expected.
                run_step(&format!("apt-get download {package}"), Command::new("apt-get").args(["download", "-qq", &package]).current_dir(&debs))?;
                find_deb(&debs, &package).with_context(|| format!("apt-get download left no {package} .deb"))?
            }
        };
        let staging = vm_dir.join(format!("{package}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        run_step(&format!("extract {}", deb.display()), Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        std::fs::rename(&staging, &root)?;
    }
    let vmlinuz = std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let version = vmlinuz.file_name().map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string()).unwrap_or_default();
    let module_root = root.join("lib/modules").join(&version);
    let modules = guest_modules(&module_root, GUEST_MODULES, &vm_dir.join(format!("{package}.modules")))?;
    Ok(KernelImage { version, vmlinuz, modules, module_root })
}

fn resolve_meta(meta: &str) -> Result<String> {
    let resolve = || -> Result<Option<String>> {
        let out = Command::new("apt-cache").args(["depends", meta]).output().context("run apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string))
    };
    if let Some(p) = resolve()? {
        return Ok(p);
    }
    run_step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
    resolve()?.with_context(|| format!("apt cannot resolve {meta} to a kernel image package"))
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
    })
}

/// The modules (with their dependencies, in load order) the guest needs. A
/// package carries no modules.dep (depmod writes it at install time), so the
/// dependencies are read from each module's own .modinfo "depends=" entry;
/// modules built into this kernel have no file and are skipped.
pub fn guest_modules(module_root: &Path, wanted: &[&str], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files_by_name = BTreeMap::new();
    index_modules(&module_root.join("kernel"), &mut files_by_name)?;
    std::fs::create_dir_all(out_dir)?;

    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(String, bool)> = wanted.iter().rev().map(|m| (m.to_string(), false)).collect();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Depth-first, dependencies before dependents.
    while let Some((name, expanded)) = stack.pop() {
        if expanded {
            if let Some(bytes) = contents.remove(&name) {
                order.push((name, bytes));
            }
            continue;
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(path) = files_by_name.get(&name) else { continue };
        let bytes = read_module(path)?;
        let depends = modinfo_depends(&bytes);
        contents.insert(name.clone(), bytes);
        stack.push((name, true));
        for dep in depends.into_iter().rev() {
            stack.push((dep, false));
        }
    }
    let mut files = Vec::new();
    for (i, (name, bytes)) in order.iter().enumerate() {
        let dest = out_dir.join(format!("{i:02}-{name}.ko"));
        std::fs::write(&dest, bytes).with_context(|| format!("write {}", dest.display()))?;
        files.push(dest);
    }
    Ok(files)
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            index_modules(&path, out)?;
        } else if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) {
            if name.contains(".ko") {
                out.insert(module_name(&name), path);
            }
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    }
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        bail!("{} is compressed in a way this runner does not know", path.display());
    };
    let out = Command::new(tool).arg("-dc").arg(path).output().with_context(|| format!("run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} could not decompress {}", path.display());
    }
    Ok(out.stdout)
}

/// The "depends=a,b" entry of a module's .modinfo strings.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list).split(',').filter(|s| !s.is_empty()).map(|s| s.replace('-', "_")).collect()
        })
        .unwrap_or_default()
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

pub fn find_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(p);
        if path.exists() {
            let out = Command::new("file").arg(path).output();
            // Only a static busybox runs in the initramfs before anything is mounted.
            if out.map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked")).unwrap_or(true) {
                return Ok(path.to_path_buf());
            }
        }
    }
    bail!("no static busybox found: apt-get install busybox-static")
}

/// The initramfs of the guests that run the host's root over 9p.
pub fn build_initramfs(image: &KernelImage, busybox: &Path, vm_dir: &Path) -> Result<PathBuf> {
    let spec = InitramfsSpec { name: "", init: INIT, modules: &image.modules, dirs: &["bin", "dev", "proc", "sys", "host", "modules", "tmp"] };
    build_initramfs_with(image, busybox, vm_dir, &spec)
}

pub fn build_initramfs_with(image: &KernelImage, busybox: &Path, vm_dir: &Path, spec: &InitramfsSpec<'_>) -> Result<PathBuf> {
    let out = vm_dir.join(format!("initramfs-{}{}.cpio", spec.name, image.version));
    let mut cpio = CpioWriter::default();
    for dir in spec.dirs {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", &std::fs::read(busybox).context("read busybox")?, 0o755);
    cpio.file("init", spec.init.as_bytes(), 0o755);
    for module in spec.modules {
        let name = module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        cpio.file(&format!("modules/{name}"), &std::fs::read(module)?, 0o644);
    }
    std::fs::write(&out, cpio.finish()).with_context(|| format!("write {}", out.display()))?;
    Ok(out)
}

/// A cpio archive in the "newc" format the kernel unpacks into its rootfs.
#[derive(Default)]
struct CpioWriter {
    buf: Vec<u8>,
    ino: u32,
}

impl CpioWriter {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_path_and_compression() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko.xz"), "9pnet_virtio");
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(module_name("kernel/drivers/virtio/virtio-pci.ko"), "virtio_pci");
    }

    #[test]
    fn modinfo_depends_are_read_from_the_module_strings() {
        let module = b"\x7fELF...\0license=GPL\0depends=netfs,9pnet\0intree=Y\0";
        assert_eq!(modinfo_depends(module), vec!["netfs".to_string(), "9pnet".to_string()]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = CpioWriter::default();
        c.file("init", b"#!x", 0o755);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn the_init_script_is_the_one_in_vm_tests() {
        assert!(INIT.starts_with("#!/bin/busybox sh") && INIT.contains("airlock_plan="));
    }
}
