//! The writer's side: the segment list, the append buffer, loss accounting,
//! and the recovery that rebuilds all of it from the directory on open.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::segment::{self, KIND_LOSS, LOSS_ENTRY_LEN, OVERHEAD};
use crate::timeline::Timeline;
use crate::SpoolOptions;

/// Loss markers may go this far past `max_bytes`, so that a full spool can
/// still say how much it dropped.
pub(crate) const MARKER_HEADROOM: u64 = 64 << 10;
/// Appends collect in memory up to this size before one write(2).
const WRITE_THRESHOLD: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SegMeta {
    pub first_seq: u64,
    /// The last seq in the file (not counting the append buffer);
    /// `first_seq - 1` while it holds none.
    pub last_seq: u64,
    /// Bytes in the file, all of them whole entries.
    pub len: u64,
}

impl SegMeta {
    fn has_entries(&self) -> bool {
        self.last_seq >= self.first_seq
    }
}

/// The segment being appended to: always the last of `State::segments`.
struct Active {
    file: File,
    buf: Vec<u8>,
    buf_last_seq: u64,
}

pub(crate) struct State {
    dir: PathBuf,
    opts: SpoolOptions,
    pub segments: VecDeque<SegMeta>,
    active: Option<Active>,
    pub next_seq: u64,
    pub acked: u64,
    /// The last seq that is in a file, where readers can see it.
    pub flushed_seq: u64,
    /// Segment bytes in files plus the append buffer.
    pub bytes: u64,
    pub lost_total: u64,
    pub lost_unwritten: u64,
    /// Loss markers written since open.
    pub markers_written: u64,
    /// When the entries past the watermark were appended (the shipping lag).
    pub timeline: Timeline,
    /// Sealed segments not yet fdatasynced.
    unsynced: Vec<File>,
    dir_dirty: bool,
    /// Set when a failed write could not be undone: the file may hold a
    /// partial entry, and anything appended after it would be unreadable.
    broken: Option<String>,
    /// Whether the last write of the buffer failed: warn once per outage,
    /// not once per append.
    write_failing: bool,
}

impl State {
    pub fn recover(dir: &Path, opts: SpoolOptions, acked: u64) -> Result<State> {
        let mut found = Vec::new();
        for dirent in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let dirent = dirent.with_context(|| format!("listing {}", dir.display()))?;
            if let Some(first) = dirent
                .file_name()
                .to_str()
                .and_then(segment::parse_segment_name)
            {
                found.push(first);
            }
        }
        found.sort_unstable();

        let mut segments: VecDeque<SegMeta> = VecDeque::new();
        let mut last_seen = 0u64;
        for first in found {
            let path = segment::segment_path(dir, first);
            if first == 0 || first <= last_seen {
                bail!(
                    "segment {} overlaps the one before it (which ends at seq {last_seen})",
                    path.display()
                );
            }
            let scanned = segment::recover(&path, first)?;
            let Some(last) = scanned.last_seq else {
                remove(&path)?;
                continue;
            };
            if last <= acked {
                remove(&path)?;
                last_seen = last;
                continue;
            }
            if last_seen != 0 && first != last_seen + 1 {
                tracing::warn!(
                    segment = %path.display(),
                    missing = first - last_seen - 1,
                    "spool: seqs {}..={} are missing between segments",
                    last_seen + 1,
                    first - 1
                );
            }
            last_seen = last;
            segments.push_back(SegMeta {
                first_seq: first,
                last_seq: last,
                len: scanned.len,
            });
        }

        let last_written = last_seen.max(acked);
        let mut state = State {
            dir: dir.to_path_buf(),
            opts,
            bytes: segments.iter().map(|s| s.len).sum(),
            segments,
            active: None,
            next_seq: last_written + 1,
            acked,
            flushed_seq: last_written,
            lost_total: 0,
            lost_unwritten: 0,
            markers_written: 0,
            timeline: Timeline::default(),
            unsynced: Vec::new(),
            dir_dirty: false,
            broken: None,
            write_failing: false,
        };
        if let Some(last) = state.segments.back() {
            let path = segment::segment_path(dir, last.first_seq);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening segment {} for appending", path.display()))?;
            state.active = Some(Active {
                file,
                buf: Vec::new(),
                buf_last_seq: last.last_seq,
            });
        }
        // Recovered entries carry no time: they count from the open.
        state.timeline.appended(acked + 1, std::time::Instant::now());
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn record_fits(&self, payload_len: usize) -> bool {
        self.bytes.saturating_add((OVERHEAD + payload_len) as u64) <= self.opts.max_bytes
    }

    pub fn count_lost(&mut self) {
        self.lost_total += 1;
        self.lost_unwritten += 1;
    }

    /// Writes the pending loss marker if there is one and it fits in the
    /// headroom; false when it does not (the count stays pending).
    pub fn write_marker(&mut self) -> Result<bool> {
        if self.lost_unwritten == 0 {
            return Ok(true);
        }
        if self.bytes + LOSS_ENTRY_LEN > self.opts.max_bytes.saturating_add(MARKER_HEADROOM) {
            return Ok(false);
        }
        let count = self.lost_unwritten;
        self.write_entry(KIND_LOSS, &count.to_le_bytes())?;
        self.lost_unwritten = 0;
        self.markers_written += 1;
        Ok(true)
    }

    /// Frames one entry into the append buffer under the next seq; an error
    /// leaves the seq unused.
    pub fn write_entry(&mut self, kind: u8, payload: &[u8]) -> Result<u64> {
        if let Some(why) = &self.broken {
            bail!(
                "the spool in {} stopped writing after an earlier failure: {why}",
                self.dir.display()
            );
        }
        let size = (OVERHEAD + payload.len()) as u64;
        let seq = self.next_seq;
        if let (Some(active), Some(meta)) = (&self.active, self.segments.back()) {
            let current = meta.len + active.buf.len() as u64;
            if current > 0 && current + size > self.opts.segment_bytes {
                self.seal()?;
            }
        }
        if self.active.is_none() {
            self.create_segment(seq)?;
        }
        let Some(active) = self.active.as_mut() else {
            bail!("no segment to append to in {}", self.dir.display());
        };
        segment::encode(&mut active.buf, kind, seq, payload);
        active.buf_last_seq = seq;
        self.timeline.appended(seq, std::time::Instant::now());
        let buffered = active.buf.len();
        self.bytes += size;
        self.next_seq += 1;
        if buffered >= WRITE_THRESHOLD {
            // The entry is already accepted; a failed write keeps it
            // buffered for the next attempt, and flush() reports the error.
            if let Err(e) = self.write_buffer() {
                if !std::mem::replace(&mut self.write_failing, true) {
                    tracing::warn!(
                        "spool: writing buffered entries failed, keeping them buffered: {e:#}"
                    );
                }
            }
        }
        Ok(seq)
    }

    /// Moves the append buffer into the active segment's file (write(2), no
    /// fsync). True when readers have something new.
    pub fn write_buffer(&mut self) -> Result<bool> {
        if let Some(why) = &self.broken {
            bail!(
                "the spool in {} stopped writing after an earlier failure: {why}",
                self.dir.display()
            );
        }
        let (Some(active), Some(meta)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Ok(false);
        };
        if active.buf.is_empty() {
            return Ok(false);
        }
        if let Err(e) = active.file.write_all(&active.buf) {
            let path = segment::segment_path(&self.dir, meta.first_seq);
            // A partial write would sit between whole entries; cut it off so
            // that the retry (the file is in append mode) lands on a boundary.
            if let Err(undo) = active.file.set_len(meta.len) {
                self.broken = Some(format!(
                    "writing {} failed ({e}) and truncating it back to {} bytes failed too ({undo})",
                    path.display(),
                    meta.len
                ));
            }
            return Err(e).with_context(|| format!("writing to segment {}", path.display()));
        }
        if std::mem::take(&mut self.write_failing) {
            tracing::info!(dir = %self.dir.display(), "spool: writing works again");
        }
        meta.len += active.buf.len() as u64;
        meta.last_seq = active.buf_last_seq;
        self.flushed_seq = active.buf_last_seq;
        active.buf.clear();
        if active.buf.capacity() > 4 * WRITE_THRESHOLD {
            active.buf.shrink_to(WRITE_THRESHOLD);
        }
        Ok(true)
    }

    /// Writes what `flush` promises: the pending loss marker (if it fits) and
    /// the append buffer.
    pub fn flush(&mut self) -> Result<bool> {
        let marker = self.write_marker();
        let wrote = self.write_buffer()?;
        marker?;
        Ok(wrote)
    }

    fn seal(&mut self) -> Result<()> {
        self.write_buffer()?;
        if let Some(active) = self.active.take() {
            self.unsynced.push(active.file);
        }
        Ok(())
    }

    fn create_segment(&mut self, first_seq: u64) -> Result<()> {
        let path = segment::segment_path(&self.dir, first_seq);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating segment {}", path.display()))?;
        self.segments.push_back(SegMeta {
            first_seq,
            last_seq: first_seq - 1,
            len: 0,
        });
        self.active = Some(Active {
            file,
            buf: Vec::new(),
            buf_last_seq: first_seq - 1,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// The files that `sync` must fdatasync, and whether the directory needs
    /// an fsync too (a segment was created since the last sync).
    pub fn take_unsynced(&mut self) -> Result<(Vec<File>, bool)> {
        let mut files = std::mem::take(&mut self.unsynced);
        if let (Some(active), Some(meta)) = (&self.active, self.segments.back()) {
            let clone = active.file.try_clone().with_context(|| {
                format!(
                    "duplicating the handle of {}",
                    segment::segment_path(&self.dir, meta.first_seq).display()
                )
            })?;
            files.push(clone);
        }
        Ok((files, std::mem::take(&mut self.dir_dirty)))
    }

    /// Drops the segments whose every entry is at or below the watermark and
    /// returns their paths for the caller to delete. Segments without entries
    /// are kept: a new segment may be created under the same name.
    pub fn release_acked(&mut self) -> Vec<PathBuf> {
        let mut freed = Vec::new();
        while let Some(front) = self.segments.front().copied() {
            if !front.has_entries() || front.last_seq > self.acked {
                break;
            }
            if self.segments.len() == 1 {
                match &self.active {
                    // Unflushed entries in the buffer belong to this segment.
                    Some(active) if !active.buf.is_empty() => break,
                    Some(_) => self.active = None,
                    None => {}
                }
            }
            self.segments.pop_front();
            self.bytes -= front.len;
            freed.push(segment::segment_path(&self.dir, front.first_seq));
        }
        freed
    }

    /// Index of the segment that holds `seq` (or would: the first one when
    /// `seq` precedes every segment).
    pub fn segment_index(&self, seq: u64) -> usize {
        self.segments
            .partition_point(|s| s.first_seq <= seq)
            .saturating_sub(1)
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing segment {}", path.display())),
    }
}

pub(crate) fn remove_freed(paths: &[PathBuf]) {
    for path in paths {
        // The watermark is already persisted: a file left behind here is
        // removed by the next open, so this is not worth failing the ack.
        if let Err(e) = remove(path) {
            tracing::warn!("spool: {e:#}");
        }
    }
}
