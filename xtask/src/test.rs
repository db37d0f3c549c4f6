//! `cargo xtask test`: every test, then a check that the kernel is left
//! clean, then the .deb packages of the tested binaries through lintian.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, phase, run};

/// The one test command: `cargo xtask test` builds and runs it, and
/// `cargo xtask vm-test` takes the kernel suites from the same build.
pub const TEST_ARGS: &[&str] = &["test", "--workspace", "--locked"];

pub fn test(extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the kernel tests load eBPF programs: run as root (sudo ./scripts/test.sh); as a normal user, `cargo test` runs the rest and reports the kernel suites as skipped");
    }
    let before = leftovers()?;
    let build = Instant::now();
    run("build the workspace and its tests", cargo().args(TEST_ARGS).arg("--no-run"))?;
    phase("test: build", build.elapsed());
    let tests = Instant::now();
    let totals = run_tests(cargo().args(TEST_ARGS).args(extra))?;
    phase("test: host tests", tests.elapsed());
    let after = leftovers()?;
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    if !new.is_empty() {
        bail!("the tests left these in the kernel:\n  {}", new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "));
    }
    eprintln!("==> kernel left clean: no Airlock programs or pins remain");
    // The packages of the binaries just tested (no second compile), and
    // lintian on them: an error fails the run.
    crate::package::run(&["--profile".into(), "dev".into(), "--check".into()])?;
    for (name, why) in &totals.skipped {
        println!("skipped: {name} ({why})");
    }
    println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests that reported themselves skipped here, and why.
    skipped: Vec<(String, String)>,
}

/// Runs cargo test, passing its output through, and adds up every "test result:" line.
fn run_tests(cmd: &mut Command) -> Result<Totals> {
    use std::io::{BufRead, BufReader};
    eprintln!("==> run every test (unit, ABI layout against BTF, policy, kernel enforcement)");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("start cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test's output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count_before(rest, " passed");
            totals.failed += count_before(rest, " failed");
            totals.ignored += count_before(rest, " ignored");
        } else if let Some((name, why)) = skipped_test(&line) {
            totals.skipped.push((name, why));
        }
    }
    let status = child.wait().context("wait for cargo test")?;
    if !status.success() {
        println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed.max(1), totals.ignored);
        bail!("cargo test failed ({status})");
    }
    Ok(totals)
}

/// "test NAME ... ignored (REASON)" as (NAME, REASON).
fn skipped_test(line: &str) -> Option<(String, String)> {
    let (name, outcome) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
    let reason = outcome.trim().strip_prefix("ignored")?.trim();
    Some((name.trim().to_string(), reason.trim_start_matches('(').trim_end_matches(')').to_string()))
}

/// The number just before `label` in "ok. 9 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.find(label)
        .and_then(|end| text[..end].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn clean_check() -> Result<()> {
    let left = leftovers()?;
    if !left.is_empty() {
        bail!("left in the kernel:\n  {}", left.join("\n  "));
    }
    println!("no Airlock programs or pins are loaded");
    Ok(())
}

/// Airlock programs still loaded and pins under bpffs.
pub fn leftovers() -> Result<Vec<String>> {
    let mut found = Vec::new();
    if let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("name airlock_") {
                found.push(format!("program: {}", line.trim()));
            }
        }
    } else {
        eprintln!("xtask: bpftool not found; only pins are checked");
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.to_ascii_lowercase().contains("airlock") {
                found.push(format!("pin: /sys/fs/bpf/{name}"));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn reads_counts_from_a_cargo_test_summary() {
        let line = "ok. 9 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.78s";
        assert_eq!(count_before(line, " passed"), 9);
        assert_eq!(count_before(line, " failed"), 2);
        assert_eq!(count_before("FAILED. 15 passed; 0 failed;", " passed"), 15);
        assert_eq!(count_before(line, " ignored"), 0);
    }

    #[test]
    fn skipped_tests_are_read_with_their_reason() {
        assert_eq!(super::skipped_test("test a_python_client     ... ignored (no grpcio)"), Some(("a_python_client".into(), "no grpcio".into())));
        assert_eq!(super::skipped_test("test b ... ok"), None);
    }
}
