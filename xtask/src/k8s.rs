//! `cargo xtask k8s`: renders every Kustomize overlay under
//! deploy/kubernetes/overlays with `kubectl kustomize` and validates the
//! result offline (scripts/k8s_validate.py: kubernetes-validate's schemas,
//! strict, for each pinned Kubernetes version; the vendored CRDs for custom
//! resources). Then it proves the validator still catches mistakes: each
//! fixture under deploy/kubernetes/tests/rejected must be refused with the
//! message in its `expect` file.
//!
//! Without kubectl or the venv the step reports SKIPPED, unless
//! AIRLOCK_REQUIRE_KUBECTL=1 (scripts/test.sh) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The Kubernetes versions every overlay is validated against: the oldest
/// the manifests claim to support and a recent one (docs/kubernetes.md).
pub const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.35.0"];
/// Custom resource definitions for the custom resources the overlays use.
const CRDS: &[&str] = &["deploy/kubernetes/schemas/cloudnative-pg-1.30.0/postgresql.cnpg.io_clusters.yaml"];
/// `labels:` and the patch forms the overlays use need Kustomize 5.
const MIN_KUSTOMIZE_MAJOR: u32 = 5;
const REQUIRE_ENV: &str = "AIRLOCK_REQUIRE_KUBECTL";

pub fn run() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask has no parent directory")?.to_path_buf();
    let python = root.join("target/pyvenv/bin/python");
    if let Err(why) = tools_ready(&python) {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            bail!("{REQUIRE_ENV}=1 but the manifests cannot be validated: {why:#}");
        }
        println!("k8s: SKIPPED: {why:#} (set {REQUIRE_ENV}=1 to fail instead)");
        return Ok(());
    }
    let out = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("k8s");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let k8s = root.join("deploy/kubernetes");

    let overlays = subdirs(&k8s.join("overlays"))?;
    if overlays.is_empty() {
        bail!("no overlays under {}", k8s.join("overlays").display());
    }
    for overlay in &overlays {
        let rendered = render(overlay, &out, "overlay")?;
        let (ok, text) = validate(&root, &python, &rendered)?;
        print!("{text}");
        if !ok {
            bail!("{} does not validate (above)", rel(&root, overlay));
        }
        eprintln!("==> {}: valid", rel(&root, overlay));
    }

    let fixtures = subdirs(&k8s.join("tests/rejected"))?;
    if fixtures.is_empty() {
        bail!("no fixtures under {}: the validator's rejections would go untested", k8s.join("tests/rejected").display());
    }
    for fixture in &fixtures {
        let expect_file = fixture.join("expect");
        let expect = std::fs::read_to_string(&expect_file).with_context(|| format!("read {}", expect_file.display()))?;
        let expect = expect.trim();
        if expect.is_empty() {
            bail!("{}: empty; it must name the error the validator reports", expect_file.display());
        }
        let rendered = render(fixture, &out, "rejected")?;
        let (ok, text) = validate(&root, &python, &rendered)?;
        if ok {
            print!("{text}");
            bail!("the validator accepted {}, which must be refused with: {expect}", rel(&root, fixture));
        }
        if !text.lines().any(|l| l.starts_with("ERROR") && l.contains(expect)) {
            print!("{text}");
            bail!("{} was refused, but not with: {expect}", rel(&root, fixture));
        }
        eprintln!("==> {}: refused as expected ({expect})", rel(&root, fixture));
    }
    println!("k8s: {} overlays valid against Kubernetes {}; {} broken fixtures refused", overlays.len(), KUBERNETES_VERSIONS.join(", "), fixtures.len());
    Ok(())
}

/// kubectl with Kustomize 5 or newer, and the venv with kubernetes-validate.
fn tools_ready(python: &Path) -> Result<()> {
    let version = Command::new("kubectl").args(["version", "--client"]).output().context("kubectl not found (scripts/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&version.stdout);
    let kustomize = text.lines().find_map(|l| l.strip_prefix("Kustomize Version: v")).map(str::to_string);
    let major = kustomize.as_deref().and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_KUSTOMIZE_MAJOR => {}
        _ => bail!(
            "kubectl's Kustomize is {} (need v{MIN_KUSTOMIZE_MAJOR} or newer; Debian's kubernetes-client is too old; scripts/setup.sh installs kubectl)",
            kustomize.map(|v| format!("v{v}")).unwrap_or_else(|| "unknown".into())
        ),
    }
    let probe = Command::new(python).args(["-c", "import kubernetes_validate"]).output();
    match probe {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("{} cannot import kubernetes_validate (scripts/setup.sh installs it from PyPI)", python.display()),
    }
}

/// `kubectl kustomize DIR` into OUT/KIND-NAME.yaml.
fn render(dir: &Path, out: &Path, kind: &str) -> Result<PathBuf> {
    let name = dir.file_name().context("a directory without a name")?.to_string_lossy().into_owned();
    let output = Command::new("kubectl").arg("kustomize").arg(dir).output().context("run kubectl kustomize")?;
    if !output.status.success() {
        bail!("kubectl kustomize {} failed: {}", dir.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    let file = out.join(format!("{kind}-{name}.yaml"));
    std::fs::write(&file, &output.stdout).with_context(|| format!("write {}", file.display()))?;
    Ok(file)
}

/// Runs the validator on one rendered file: (passed, its output).
fn validate(root: &Path, python: &Path, file: &Path) -> Result<(bool, String)> {
    let mut cmd = Command::new(python);
    cmd.arg(root.join("scripts/k8s_validate.py"));
    for version in KUBERNETES_VERSIONS {
        cmd.args(["-k", version]);
    }
    for crd in CRDS {
        cmd.arg("--crd").arg(root.join(crd));
    }
    let output = cmd.arg(file).output().context("run scripts/k8s_validate.py")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match output.status.code() {
        Some(0) => Ok((true, text)),
        Some(1) => Ok((false, text)),
        _ => bail!("scripts/k8s_validate.py on {} did not run ({}): {}{}", file.display(), output.status, text, String::from_utf8_lossy(&output.stderr)),
    }
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry.with_context(|| format!("read {}", dir.display()))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
