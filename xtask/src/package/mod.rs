//! `cargo xtask package`: the `airlock-agent` and `airlock-gateway` Debian
//! packages, assembled with Debian's own `dpkg-deb` (no cargo-deb to compile
//! on every clean CI machine; docs/packaging.md says why), and checked with
//! `lintian` when asked.
//!
//! `deb.rs` stages one package's tree and builds it; `spec.rs` says what
//! goes into each package; `lintian.rs` runs the check.

mod deb;
mod lintian;
mod spec;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, phase, run as run_step};

pub use deb::build_package;
pub use spec::{Binaries, PACKAGES};

const USAGE: &str = "usage: cargo xtask package [--profile release|dev] [--out DIR] [--check]
  --profile  release (default): cargo build --release of the two binaries;
             dev: the binaries `cargo test --workspace --locked` builds (no second compile)
  --out      where the .deb files go (default <workspace>/target/package)
  --check    run lintian on both packages; fail on any error or unexplained warning";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    Release,
    Dev,
}

struct Options {
    profile: Profile,
    out: PathBuf,
    check: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options { profile: Profile::Release, out: workspace_root().join("target/package"), check: false };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--profile" => {
                options.profile = match it.next().map(String::as_str) {
                    Some("release") => Profile::Release,
                    Some("dev") => Profile::Dev,
                    other => bail!("--profile {}: expected release or dev\n{USAGE}", other.unwrap_or("(missing)")),
                }
            }
            "--out" => options.out = PathBuf::from(it.next().with_context(|| format!("--out needs a directory\n{USAGE}"))?),
            "--check" => options.check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let started = Instant::now();
    let binaries = build_binaries(options.profile)?;
    let debs = build_all(&binaries, &options.out, options.profile)?;
    phase(&format!("package: {:?} build and assemble", options.profile).to_lowercase(), started.elapsed());
    for deb in &debs {
        println!("{}", deb.display());
    }
    if options.check {
        let checked = Instant::now();
        for deb in &debs {
            lintian::check(deb)?;
        }
        phase("package: lintian", checked.elapsed());
    }
    Ok(())
}

/// Both packages from `binaries` into `out`; the paths of the .deb files.
pub fn build_all(binaries: &Binaries, out: &Path, profile: Profile) -> Result<Vec<PathBuf>> {
    let version = deb::debian_version(&workspace_version()?);
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    PACKAGES.iter().map(|spec| build_package(spec, binaries, &workspace_root(), out, &version, profile)).collect()
}

/// Builds the two binaries for `profile` and returns where they are.
fn build_binaries(profile: Profile) -> Result<Binaries> {
    let dir = match profile {
        Profile::Release => {
            run_step(
                "build the release binaries",
                cargo().current_dir(workspace_root()).args(["build", "--release", "--locked", "--bin", "airlock-agent", "--bin", "airlock-gateway"]),
            )?;
            target_dir()?.join("release")
        }
        Profile::Dev => {
            // The exact command `cargo xtask test` builds with: after it, this
            // compiles nothing, and the packaged binaries are the tested ones.
            run_step("build (or reuse) the test build's binaries", cargo().current_dir(workspace_root()).args(crate::test::TEST_ARGS).arg("--no-run"))?;
            target_dir()?.join("debug")
        }
    };
    Binaries::in_dir(&dir)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

fn metadata() -> Result<serde_json::Value> {
    let out = cargo()
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .output()
        .context("run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("parse cargo metadata's output")
}

/// The cargo target directory (CARGO_TARGET_DIR or the workspace's `target`).
fn target_dir() -> Result<PathBuf> {
    let meta = metadata()?;
    meta["target_directory"].as_str().map(PathBuf::from).context("cargo metadata names no target_directory")
}

/// The version of the airlock-agent crate (the workspace's version).
fn workspace_version() -> Result<String> {
    let meta = metadata()?;
    let packages = meta["packages"].as_array().context("cargo metadata lists no packages")?;
    packages
        .iter()
        .find(|p| p["name"] == "airlock-agent")
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .context("cargo metadata has no airlock-agent package version")
}
