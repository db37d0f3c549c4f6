//! `cargo xtask ...`: the project's own build, test and benchmark helpers.

mod bench;
mod modgraph;
mod package;
mod test;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test          build everything, run every test (kernel tests need root), check the kernel is left clean
  clean-check   only check that no Airlock programs or pins are left in the kernel
  vm-test       run the kernel tests inside Debian kernels under qemu, both backends
                (vm-tests/matrix.toml) [--kernel K|all] [--backend B|both] [--suite S]... [--filter NAME]
                [--all-suites] [--jobs N]
  bench         measure what Airlock costs against no agent, side by side [--quick]
  bench gateway the fleet gateway under 1,000 simulated agents, on SQLite and PostgreSQL [--quick]
  modules       print every crate's module graph; fails on an import loop [WORKSPACE_DIR]
  package       the airlock-agent and airlock-gateway .deb packages [--profile release|dev] [--out DIR]
                [--check] (lintian; docs/packaging.md)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::test(&args[1..]),
        Some("clean-check") => test::clean_check(),
        Some("vm-test") => vm::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("package") => package::run(&args[1..]),
        Some("modules") => match args.get(1) {
            Some(dir) => modgraph::print(std::path::Path::new(dir)),
            None => modgraph::print(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(std::path::Path::new("."))),
        },
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

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Prints how long a phase took, and appends it to `$AIRLOCK_PHASES_FILE`
/// when set (`scripts/test.sh` prints the file at the end of a CI run).
pub fn phase(name: &str, took: std::time::Duration) {
    let line = format!("{name}\t{:.0}", took.as_secs_f64());
    eprintln!("==> phase: {name}: {:.0} s", took.as_secs_f64());
    if let Some(file) = std::env::var_os("AIRLOCK_PHASES_FILE") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new().create(true).append(true).open(&file).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("xtask: could not record the phase in {}: {e}", std::path::Path::new(&file).display());
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

