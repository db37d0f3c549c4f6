//! The ack watermark: `DIR/acked`, one decimal seq and a newline, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory) so that
//! a crash leaves either the old or the new value, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const CURSOR: &str = "acked";
const CURSOR_TMP: &str = "acked.tmp";

fn cursor_path(dir: &Path) -> PathBuf {
    dir.join(CURSOR)
}

/// The persisted watermark, 0 when nothing was ever acked. A file that does
/// not parse is an error: guessing low would resend (duplicates at the
/// gateway), guessing high would skip records.
pub(crate) fn load(dir: &Path) -> Result<u64> {
    let tmp = dir.join(CURSOR_TMP);
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::debug!(path = %tmp.display(), "spool: removed an unfinished cursor update")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let path = cursor_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the ack cursor {}", path.display()))
        }
    };
    let Some(digits) = text.strip_suffix('\n') else {
        bail!(
            "the ack cursor {} is not newline-terminated: {text:?}",
            path.display()
        );
    };
    digits
        .parse()
        .with_context(|| format!("parsing the ack cursor {} ({digits:?})", path.display()))
}

pub(crate) fn store(dir: &Path, seq: u64) -> Result<()> {
    let tmp = dir.join(CURSOR_TMP);
    let path = cursor_path(dir);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(format!("{seq}\n").as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(file);
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cursor_loads_back_and_garbage_is_refused() {
        let dir = crate::tests::TempDir::new("cursor");
        assert_eq!(load(dir.path()).expect("no cursor yet"), 0);
        store(dir.path(), 42).expect("store");
        assert_eq!(load(dir.path()).expect("load"), 42);
        fs::write(dir.path().join(CURSOR_TMP), "7\n").expect("write tmp");
        assert_eq!(load(dir.path()).expect("load ignores a leftover temp"), 42);
        assert!(!dir.path().join(CURSOR_TMP).exists());
        fs::write(cursor_path(dir.path()), "4x\n").expect("write garbage");
        assert!(load(dir.path()).is_err());
    }
}
