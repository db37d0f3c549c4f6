//! `cargo xtask ...`: the project's own build and test helpers.
//!
//! `cargo xtask test` runs every test (unit, ABI layout, policy, kernel tests
//! as root) and then checks that nothing was left in the kernel.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test     build everything, run every test (kernel tests need root), check the kernel is left clean
  clean-check   only check that no Airlock programs or pins are left in the kernel";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("clean-check") => clean_check(),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn test(extra: &[String]) -> Result<()> {
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

fn clean_check() -> Result<()> {
    let left = leftovers()?;
    if !left.is_empty() {
        bail!("left in the kernel:\n  {}", left.join("\n  "));
    }
    println!("no Airlock programs or pins are loaded");
    Ok(())
}

/// Airlock programs still loaded and pins under bpffs.
fn leftovers() -> Result<Vec<String>> {
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
