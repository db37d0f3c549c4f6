//! Time windows: the daemon opens and closes them in the kernel at their
//! edges, so that no exec reads a clock. The watcher calls this every tick;
//! between edges it costs one comparison.

use airlock_common::abi::as_bytes;
use airlock_policy::Table;
use anyhow::{Context, Result};
use chrono::Utc;

use super::PolicyStore;
use crate::kernel::Kernel;

impl PolicyStore {
    /// Writes the rate-limit entries of the policy in force again, each
    /// window as the clock now says, once an edge has passed. Returns how many
    /// rules changed state.
    pub fn apply_time_windows(&mut self, kernel: &Kernel) -> Result<usize> {
        let now = Utc::now();
        let (Some(due), Some(current)) = (self.next_window_change, self.current.as_ref()) else {
            return Ok(0);
        };
        if now < due {
            return Ok(0);
        }
        let tables = kernel.maps().policy();
        let live = tables.entries(Table::RuleLimits);
        let mut changed = 0;
        for (rule_id, entry) in current.limit_entries_at(now) {
            let key = as_bytes(&rule_id);
            if live.iter().any(|(k, v)| k.as_slice() == key && v.as_slice() == as_bytes(&entry)) {
                continue;
            }
            tables
                .write(Table::RuleLimits, &[(key, as_bytes(&entry))])
                .with_context(|| format!("switch the time window of rule {rule_id}"))?;
            tracing::info!(rule_id, closed = entry.flags != 0, "time window edge");
            changed += 1;
        }
        self.next_window_change = current.next_window_change(now);
        Ok(changed)
    }
}
