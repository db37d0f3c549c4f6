//! `cargo xtask bench`: being written (issue 6).

use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("cargo xtask bench is not built yet")
}
