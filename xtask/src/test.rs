//! `cargo xtask test`: every test, then a check that the kernel is left clean.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run};

pub fn test(extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the kernel tests load eBPF programs: run as root (sudo ./scripts/test.sh)");
    }
    let before = leftovers()?;
    run("build the workspace and its tests", cargo().args(["build", "--workspace", "--all-targets", "--locked"]))?;
    let totals = run_tests(cargo().args(["test", "--workspace", "--locked"]).args(extra))?;
    let after = leftovers()?;
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    if !new.is_empty() {
        bail!("the tests left these in the kernel:\n  {}", new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "));
    }
    eprintln!("==> kernel left clean: no Airlock programs or pins remain");
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
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
        }
    }
    let status = child.wait().context("wait for cargo test")?;
    if !status.success() {
        println!("tests: {} passed, {} failed", totals.passed, totals.failed.max(1));
        bail!("cargo test failed ({status})");
    }
    Ok(totals)
}

/// The number just before `label` in "ok. 9 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.find(label)
        .and_then(|end| text[..end].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
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
    }
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
