//! `kernel.ftrace_enabled`. At 0 the kernel skips every ftrace call site, and
//! the BPF trampolines the LSM backend's programs run on are among them: every
//! LSM hook stops running, without an error anywhere. A governed process
//! cannot write the switch (the guard refuses the open, `guard_common.h`);
//! whoever else turns it off, the daemon turns it back on at its next tick.

use std::path::Path;

use anyhow::{Context, Result};

const SWITCH: &str = "/proc/sys/kernel/ftrace_enabled";

/// Turns function tracing back on if it is off; returns whether it was off.
/// A kernel without the switch (built without ftrace) has no trampolines on it.
pub fn keep_on() -> Result<bool> {
    keep_on_at(Path::new(SWITCH))
}

fn keep_on_at(switch: &Path) -> Result<bool> {
    let value = match std::fs::read_to_string(switch) {
        Ok(value) => value,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("read {}", switch.display())),
    };
    if value.trim() != "0" {
        return Ok(false);
    }
    std::fs::write(switch, "1").with_context(|| format!("turn {} back on", switch.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_switch_that_is_off_is_written() {
        let dir = std::env::temp_dir().join(format!("airlock-ftrace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let switch = dir.join("ftrace_enabled");
        std::fs::write(&switch, "1\n").expect("write");
        assert!(!keep_on_at(&switch).expect("read"));
        std::fs::write(&switch, "0\n").expect("write");
        assert!(keep_on_at(&switch).expect("turned on"));
        assert_eq!(std::fs::read_to_string(&switch).expect("read"), "1");
        assert!(!keep_on_at(&dir.join("missing")).expect("a kernel without ftrace"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
