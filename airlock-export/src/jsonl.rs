//! OCSF events as JSON lines, appended to a file (mode 0640 when created).
//!
//! Each line is encoded whole and handed to the kernel in one `write(2)` on
//! an `O_APPEND` descriptor: a line never shares a write with another line,
//! and a reader tailing the file sees a line only up to where the kernel has
//! copied it, never two writers' bytes interleaved. (A reader can still see
//! the front of a line whose write is in progress; it ends in no newline, and
//! line readers, `tail -F` and log shippers, wait for the newline.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The file's mode when the writer creates it: the owner writes, its group
/// (the `airlock` group on a host) reads, nobody else.
pub const FILE_MODE: u32 = 0o640;

pub struct JsonlWriter {
    path: PathBuf,
    file: File,
    line: Vec<u8>,
}

impl JsonlWriter {
    /// Opens (or creates) `path` for appending; its directory must exist.
    pub fn open(path: &Path) -> Result<JsonlWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)
            .with_context(|| format!("open the OCSF export file {}", path.display()))?;
        Ok(JsonlWriter { path: path.to_path_buf(), file, line: Vec::with_capacity(2048) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as one line, in one write.
    pub fn append(&mut self, event: &serde_json::Value) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).context("encode an OCSF event")?;
        self.line.push(b'\n');
        // One write_all of the whole line: the kernel takes a regular file's
        // write whole unless the disk is full or a signal interrupts it.
        self.file.write_all(&self.line).with_context(|| format!("append to {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_are_appended_whole_to_a_0640_file() {
        let dir = std::env::temp_dir().join(format!("airlock-export-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ocsf.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut w = JsonlWriter::open(&path).unwrap();
        w.append(&serde_json::json!({ "a": 1 })).unwrap();
        drop(w);
        // A second writer (a restarted daemon) appends; it never truncates.
        let mut w = JsonlWriter::open(&path).unwrap();
        w.append(&serde_json::json!({ "b": "x\ny" })).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // The umask can only take bits away.
        assert_eq!(mode & !FILE_MODE, 0, "mode {mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = JsonlWriter::open(Path::new("/nonexistent-airlock-dir/ocsf.jsonl")).err().expect("no such directory");
        assert!(format!("{err:#}").contains("/nonexistent-airlock-dir/ocsf.jsonl"), "{err:#}");
    }
}
