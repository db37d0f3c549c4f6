//! The audit trail sink: one JSON object per line in `<state-dir>/audit.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use serde::Serialize;

pub struct AuditLog {
    path: PathBuf,
    out: BufWriter<File>,
    lines: u64,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open the audit trail {}", path.display()))?;
        Ok(AuditLog { path: path.to_path_buf(), out: BufWriter::new(file), lines: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends one record. The line is encoded whole first, so the buffer never
    /// splits a record across two writes: a reader tailing the file sees whole lines.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).context("encode an audit record")?;
        line.push(b'\n');
        self.out.write_all(&line).context("write the audit trail")?;
        self.lines += 1;
        Ok(())
    }

    /// Called when the ring buffer has been drained: readers see whole batches promptly.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("flush {}", self.path.display()))
    }
}
