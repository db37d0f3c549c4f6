//! `cargo xtask vm-test`: being written (issue 3).

use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("cargo xtask vm-test is not built yet")
}
