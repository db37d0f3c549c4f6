//! The requests survive a daemon restart in one JSON file, rewritten whole.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::Entry;

pub(super) fn load(file: &Path) -> BTreeMap<u64, Entry> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::error!("read the approval requests {}: {e}; starting with none", file.display());
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<Vec<Entry>>(&text) {
        Ok(entries) => entries.into_iter().map(|e| (e.number(), e)).filter(|(n, _)| *n != 0).collect(),
        Err(e) => {
            tracing::error!("the approval requests in {} are unreadable ({e}); starting with none", file.display());
            BTreeMap::new()
        }
    }
}

pub(super) fn save(file: &Path, entries: &BTreeMap<u64, Entry>) -> Result<()> {
    let list: Vec<&Entry> = entries.values().collect();
    crate::state_file::write_atomically(file, &list)
}
