//! The audit trail sink: one JSON object per line in `<state-dir>/audit.jsonl`,
//! the decision's own JSON form (the same as `decisions --json`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Record, Sink};

/// What `status` reports of the trail.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub path: PathBuf,
    pub lines: AtomicU64,
}

pub struct AuditSink {
    out: BufWriter<File>,
    stats: Arc<AuditStats>,
    /// One line's encoding, reused from line to line.
    line: Vec<u8>,
}

impl AuditSink {
    pub fn open(path: &Path) -> Result<AuditSink> {
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("open the audit trail {}", path.display()))?;
        Ok(AuditSink {
            // One write(2) per 64 KiB of lines rather than per 8 KiB: the trail is flushed after every drain anyway.
            out: BufWriter::with_capacity(64 * 1024, file),
            stats: Arc::new(AuditStats { path: path.to_path_buf(), lines: AtomicU64::new(0) }),
            line: Vec::with_capacity(1024),
        })
    }

    pub fn stats(&self) -> Arc<AuditStats> {
        self.stats.clone()
    }
}

impl Sink for AuditSink {
    fn name(&self) -> &'static str {
        "audit"
    }

    /// The line is encoded whole first, so the buffer never splits a record
    /// across two writes: a reader tailing the file sees whole lines.
    fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &record.decision).context("encode an audit record")?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).context("write the audit trail")?;
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("flush {}", self.stats.path.display()))
    }
}
