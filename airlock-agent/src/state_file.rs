//! State files the daemon rewrites whole (sessions, policy state): a reader,
//! or a crash, sees the old content or the new, never a mix.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Replaces `file` with `value` as JSON so that a reader (or a crash) sees the
/// old or the new content, never a mix.
pub fn write_atomically<T: Serialize + ?Sized>(file: &Path, value: &T) -> Result<()> {
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        // Encoded whole before the file is touched: the encoder writes a token
        // at a time, a system call each on an unbuffered file.
        let mut encoded = serde_json::to_vec_pretty(value).context("encode the state")?;
        encoded.push(b'\n');
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&encoded).with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
        std::fs::rename(&tmp, file).with_context(|| format!("rename {} to {}", tmp.display(), file.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

