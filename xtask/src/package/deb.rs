//! One package: its tree staged under the output directory (binaries
//! stripped, unit, conffiles, docs, DEBIAN/), then `dpkg-deb --build
//! --root-owner-group`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::spec::{deb_file_name, Binaries, PackageSpec, Source, HOMEPAGE, MAINTAINER, SCRIPTS};
use super::Profile;

pub const ARCH: &str = "amd64";

/// A Cargo version as a Debian one: a pre-release (`0.2.0-rc.1`) sorts
/// before its release in Debian only as `0.2.0~rc.1`; `-` would start a
/// Debian revision.
pub fn debian_version(cargo_version: &str) -> String {
    let (release, build) = cargo_version.split_once('+').map_or((cargo_version, None), |(r, b)| (r, Some(b)));
    let mut version = release.replacen('-', "~", 1);
    if let Some(build) = build {
        version.push('+');
        version.push_str(build);
    }
    version
}

/// Stages and builds `spec`'s package into `out`; returns the .deb's path.
pub fn build_package(spec: &PackageSpec, binaries: &Binaries, root: &Path, out: &Path, version: &str, profile: Profile) -> Result<PathBuf> {
    if !cfg!(target_arch = "x86_64") {
        bail!("the packages are {ARCH} only (the eBPF object and the binaries are built for x86_64)");
    }
    let stage = out.join(format!(".stage-{}", spec.name));
    remove_dir_if_exists(&stage)?;
    let result = stage_and_build(spec, binaries, root, out, version, profile, &stage);
    // The staged tree is only an input of dpkg-deb.
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// The first `@NAME@` (NAME in capitals, digits, `_`) left in a unit's text.
fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('@') {
            return Some(&rest[start..start + name_len + 2]);
        }
        rest = after;
    }
    None
}

fn stage_and_build(spec: &PackageSpec, binaries: &Binaries, root: &Path, out: &Path, version: &str, profile: Profile, stage: &Path) -> Result<PathBuf> {
    for entry in spec.entries {
        let dest = under(stage, entry.dest);
        match &entry.source {
            Source::Binary(which) => strip_into(binaries.get(*which), &dest)?,
            Source::Unit(template, binary) => {
                let text = read_text(&root.join(template))?.replace("@BINARY@", binary);
                // A placeholder is @NAME@ (capitals); a lone @ (the comment's
                // `@system-service`, a unit name like getty@) is the unit's own text.
                if let Some(left) = leftover_placeholder(&text) {
                    bail!("{template}: a placeholder other than @BINARY@ is left in the unit: {left}");
                }
                write(&dest, text.as_bytes(), 0o644)?;
            }
            Source::File(path) => write(&dest, &read(&root.join(path))?, 0o644)?,
            Source::Tree(dir) => copy_tree(&root.join(dir), &dest)?,
        }
    }
    let doc = stage.join("usr/share/doc").join(spec.name);
    write(&doc.join("copyright"), &read(&root.join("packaging/deb/copyright"))?, 0o644)?;
    write(&doc.join("changelog.gz"), &gzip(changelog(spec.name, version, root)?.as_bytes())?, 0o644)?;

    let debian = stage.join("DEBIAN");
    let conffiles = files_under(stage, "etc")?;
    write(&debian.join("conffiles"), lines(&conffiles).as_bytes(), 0o644)?;
    for script in SCRIPTS {
        write(&debian.join(script), &read(&root.join(spec.scripts).join(script))?, 0o755)?;
    }
    write(&debian.join("md5sums"), md5sums(stage, &conffiles)?.as_bytes(), 0o644)?;
    let control = control(spec, version, &shlib_depends(spec, stage)?, installed_size_kib(stage)?);
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    set_dir_modes(stage)?;

    let deb = out.join(deb_file_name(spec.name, version));
    // Release: xz, as Debian's archive ships; dev: gzip -1 of large unoptimised
    // binaries, which takes a second where xz takes many.
    let compression: &[&str] = match profile {
        Profile::Release => &["-Zxz"],
        Profile::Dev => &["-Zgzip", "-z1"],
    };
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .args(compression)
        .arg(stage)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", commit_time(root)?)
        .stdout(Stdio::null())
        .status()
        .context("run dpkg-deb (Debian's dpkg package)")?;
    if !status.success() {
        bail!("dpkg-deb --build {} failed ({status})", stage.display());
    }
    Ok(deb)
}

fn control(spec: &PackageSpec, version: &str, shlibs: &str, installed_size: u64) -> String {
    let mut depends: Vec<&str> = shlibs.split(", ").filter(|d| !d.is_empty()).collect();
    depends.extend(spec.depends);
    format!(
        "Package: {}\nVersion: {version}\nArchitecture: {ARCH}\nMaintainer: {MAINTAINER}\nInstalled-Size: {installed_size}\nDepends: {}\nSection: {}\nPriority: optional\nHomepage: {HOMEPAGE}\nDescription: {}\n",
        spec.name,
        depends.join(", "),
        spec.section,
        spec.description
    )
}

/// The shared libraries' Depends (libc6, libgcc-s1, ...), as Debian's own
/// dpkg-shlibdeps computes them from the staged binaries.
fn shlib_depends(spec: &PackageSpec, stage: &Path) -> Result<String> {
    let executables: Vec<PathBuf> = spec
        .entries
        .iter()
        .filter(|e| matches!(e.source, Source::Binary(_)))
        .map(|e| std::path::absolute(under(stage, e.dest)))
        .collect::<std::io::Result<_>>()
        .context("absolute path of a staged binary")?;
    // dpkg-shlibdeps reads the package's name from debian/control.
    let work = stage.with_file_name(format!(".shlibs-{}", spec.name));
    remove_dir_if_exists(&work)?;
    write(&work.join("debian/control"), format!("Source: airlock\n\nPackage: {}\nArchitecture: any\n", spec.name).as_bytes(), 0o644)?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&work).arg("-O");
    for exe in &executables {
        cmd.arg(format!("-e{}", exe.display()));
    }
    let out = cmd.output().context("run dpkg-shlibdeps (Debian's dpkg-dev package; scripts/setup.sh installs it)");
    let _ = std::fs::remove_dir_all(&work);
    let out = out?;
    if !out.status.success() {
        bail!("dpkg-shlibdeps failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let depends = text.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")).unwrap_or("").trim().to_string();
    if !depends.contains("libc6") {
        bail!("dpkg-shlibdeps found no libc6 dependency for {} (output: {text:?})", spec.name);
    }
    Ok(depends)
}

/// A Debian changelog entry for this build (a native package's
/// `changelog.gz`), dated by the commit so the same commit gives the same file.
fn changelog(name: &str, version: &str, root: &Path) -> Result<String> {
    let commit = git(root, &["rev-parse", "--short=12", "HEAD"])?;
    let date = git(root, &["log", "-1", "--format=%aD", "HEAD"])?;
    Ok(format!(
        "{name} ({version}) unstable; urgency=medium\n\n  * Built by cargo xtask package from the Airlock workspace at commit\n    {commit}.\n\n -- {MAINTAINER}  {date}\n"
    ))
}

fn commit_time(root: &Path) -> Result<String> {
    git(root, &["log", "-1", "--format=%ct", "HEAD"])
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().context("run git")?;
    if !out.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `strip` as dh_strip does for executables: no symbols, no .comment/.note.
fn strip_into(binary: &Path, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let status = Command::new("strip")
        .args(["--remove-section=.comment", "--remove-section=.note", "-o"])
        .arg(dest)
        .arg(binary)
        .status()
        .context("run strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed ({status})", binary.display());
    }
    set_mode(dest, 0o755)
}

/// md5sums of every file but the conffiles (dpkg keeps their sums itself).
fn md5sums(stage: &Path, conffiles: &[String]) -> Result<String> {
    let mut files = Vec::new();
    for top in ["usr", "lib"] {
        files.extend(files_under(stage, top)?);
    }
    files.retain(|f| !conffiles.contains(f));
    let relative: Vec<&str> = files.iter().map(|f| f.trim_start_matches('/')).collect();
    let out = Command::new("md5sum").current_dir(stage).arg("--").args(&relative).output().context("run md5sum")?;
    if !out.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).context("md5sum's output")
}

/// Every regular file under `stage/top`, as absolute installed paths, sorted.
fn files_under(stage: &Path, top: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![stage.join(top)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        for entry in entries {
            let path = entry.with_context(|| format!("read {}", dir.display()))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(stage).context("a staged file outside the stage")?;
                found.push(format!("/{}", relative.display()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up,
/// and one per directory.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    let mut dirs = vec![stage.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            if entry.file_name() == "DEBIAN" && dir == stage {
                continue;
            }
            let meta = entry.metadata().with_context(|| format!("stat {}", entry.path().display()))?;
            if meta.is_dir() {
                total += 1;
                dirs.push(entry.path());
            } else {
                total += meta.len().div_ceil(1024);
            }
        }
    }
    Ok(total)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry.with_context(|| format!("read {}", from.display()))?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            write(&dest, &read(&source)?, 0o644)?;
        }
    }
    Ok(())
}

/// Directories 0755 whatever the umask (dpkg-deb keeps the modes it finds).
fn set_dir_modes(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry.with_context(|| format!("read {}", dir.display()))?.path();
        if path.is_dir() {
            set_dir_modes(&path)?;
        }
    }
    Ok(())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // -n: no name or time stamp in the header (lintian, reproducible builds).
    let mut child = Command::new("gzip").args(["-9", "-n", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("run gzip")?;
    child.stdin.take().context("gzip's stdin")?.write_all(bytes).context("write to gzip")?;
    let out = child.wait_with_output().context("wait for gzip")?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn lines(items: &[String]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}

fn under(stage: &Path, installed: &str) -> PathBuf {
    stage.join(installed.trim_start_matches('/'))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn write(dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(dest, bytes).with_context(|| format!("write {}", dest.display()))?;
    set_mode(dest, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("remove {}", dir.display())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::leftover_placeholder;

    #[test]
    fn only_capital_placeholders_count() {
        assert_eq!(leftover_placeholder("ExecStart=/usr/bin/x\n# outside @system-service\nWants=getty@tty1.service"), None);
        assert_eq!(leftover_placeholder("ExecStart=@PREFIX@/bin/x"), Some("@PREFIX@"));
        assert_eq!(leftover_placeholder("a @ b @C_1@"), Some("@C_1@"));
    }
}
