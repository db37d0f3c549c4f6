//! A durable, size-bounded, acknowledged on-disk queue.
//!
//! The agent appends every enforcement decision (an encoded record) on its
//! event thread; a shipper reads them in order, sends them to the gateway and
//! acks what the gateway confirmed. Every entry gets a sequence number that
//! never repeats and never goes backwards, across restarts too.
//!
//! # Durability
//!
//! `append` frames the record into a memory buffer; the buffer goes to the
//! segment file with write(2) when it grows past 64 KiB and on every `flush`.
//! Nothing is fsynced on that path: it never waits for the disk, the reader
//! or the network. What a returned-Ok `flush` wrote is in the page cache and
//! survives the agent being killed (SIGKILL, abort, a crash). It does **not**
//! survive a power loss or a kernel crash: the unsynced tail of the spool can
//! be lost then. `sync` fdatasyncs everything written so far (and the
//! directory when segments were created); call it periodically to bound that
//! window. The ack cursor is always replaced atomically and synced.
//!
//! # Size bound and loss markers
//!
//! The segment files (plus the append buffer) never exceed `max_bytes`,
//! except by loss markers: an append that would go over is not written,
//! returns [`Appended::Dropped`] and is counted. The count is written as a
//! [`Entry::Loss`] marker, with its own seq, at the next `flush` or before the
//! next record that fits, whichever comes first, so a marker always precedes
//! the records appended after the drops it counts. Markers may use 64 KiB of
//! headroom over `max_bytes`; when even that is used up the count waits in
//! memory until an ack frees a segment. Space is freed a whole segment at a
//! time, when every entry in it is acked. A record whose payload is over
//! 16 MiB is dropped the same way. An append that fails with an I/O error is
//! counted as lost too.
//!
//! # On-disk format
//!
//! `DIR/NNNNNNNNNNNNNNNNNNNN.seg`: segments named by the first seq they
//! hold, zero-padded to 20 digits so that they sort; a new one is started
//! when the current one would pass `segment_bytes`. A segment is a sequence
//! of entries with consecutive seqs, each framed as (integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | magic and format version, `0xA1` |
//! | 1 | kind: 1 = record, 2 = loss marker |
//! | 8 | seq |
//! | 4 | payload length n (a loss marker's is 8) |
//! | n | payload: the record, or the marker's count of dropped records as a u64 |
//! | 4 | CRC-32 (IEEE) of all the bytes above |
//!
//! `DIR/acked`: the ack watermark, a decimal seq and a newline.
//! `DIR/lock`: held with flock(2) while a [`Spool`] is open, so that two
//! processes never append to the same spool.
//!
//! On open every segment is scanned; at the first entry that is incomplete,
//! fails its checksum or breaks the seq chain the file is truncated (a torn
//! tail from a crash) and a warning logged. Segments wholly at or below the
//! watermark are deleted. The next seq is one past the larger of the last seq
//! found and the watermark, so it continues even when every segment was acked
//! and deleted.

mod cursor;
mod reader;
mod segment;
mod state;
#[cfg(test)]
mod tests;
mod timeline;

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use reader::ReadPos;
use state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The bound on the segment files' total size (see the module doc).
    pub max_bytes: u64,
    /// A segment is closed and a new one started when it would pass this.
    pub segment_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Written {
        seq: u64,
    },
    /// Over the size bound: not written, counted in the next loss marker.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Record {
        seq: u64,
        payload: Vec<u8>,
    },
    /// `count` records were dropped between the previous entry and this one.
    Loss {
        seq: u64,
        count: u64,
    },
}

impl Entry {
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Record { seq, .. } | Entry::Loss { seq, .. } => *seq,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// The seq the next entry will get.
    pub next_seq: u64,
    /// The ack watermark.
    pub acked: u64,
    /// Entries appended but not acked yet (markers included).
    pub pending_entries: u64,
    pub bytes_on_disk: u64,
    /// Records dropped since open, whether or not a marker counts them yet.
    pub lost_total: u64,
    /// Records dropped that no marker counts yet.
    pub lost_unwritten: u64,
    /// Loss markers written since open.
    pub loss_markers: u64,
    /// How long the oldest entry not yet acked has waited, to the second
    /// (over by less than one; zero when every entry is acked). Entries
    /// recovered on open count from the open.
    pub unacked_age: Duration,
}

/// A handle on an open spool; clones share it.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled whenever entries reach a file.
    flushed: Condvar,
    /// Serializes acks, whose cursor fsync runs outside the state lock so
    /// that appends do not wait for it.
    ack_lock: Mutex<()>,
    /// Where the last read stopped; held during a read's file I/O, which
    /// thereby stays off the state lock.
    read_pos: Mutex<Option<ReadPos>>,
    _lock_file: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic (every mutation is
    // completed or not started), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Spool {
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool> {
        if opts.max_bytes == 0 || opts.segment_bytes == 0 {
            bail!("spool options need a non-zero max_bytes and segment_bytes: {opts:?}");
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the spool directory {}", dir.display()))?;
        let lock_file = lock_dir(dir)?;
        let acked = cursor::load(dir)?;
        let state = State::recover(dir, opts, acked)
            .with_context(|| format!("recovering the spool in {}", dir.display()))?;
        tracing::debug!(
            dir = %dir.display(),
            next_seq = state.next_seq,
            acked,
            segments = state.segments.len(),
            bytes = state.bytes,
            "spool: opened"
        );
        Ok(Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                state: Mutex::new(state),
                flushed: Condvar::new(),
                ack_lock: Mutex::new(()),
                read_pos: Mutex::new(None),
                _lock_file: lock_file,
            }),
        })
    }

    /// Buffers one record; never waits for the disk or the reader.
    pub fn append(&self, payload: &[u8]) -> Result<Appended> {
        let mut st = lock(&self.inner.state);
        if payload.len() > segment::MAX_PAYLOAD {
            tracing::warn!(
                len = payload.len(),
                "spool: dropping a record over the 16 MiB limit"
            );
            st.count_lost();
            return Ok(Appended::Dropped);
        }
        if !st.record_fits(payload.len()) {
            st.count_lost();
            return Ok(Appended::Dropped);
        }
        let before = st.flushed_seq;
        let result = (|| {
            // The marker must precede this record; it always fits when the
            // record does (the headroom is larger than a marker).
            if !st.write_marker()? {
                return Ok(None);
            }
            st.write_entry(segment::KIND_RECORD, payload).map(Some)
        })();
        if st.flushed_seq != before {
            self.inner.flushed.notify_all();
        }
        match result {
            Ok(Some(seq)) => Ok(Appended::Written { seq }),
            Ok(None) => {
                st.count_lost();
                Ok(Appended::Dropped)
            }
            Err(e) => {
                st.count_lost();
                Err(e)
            }
        }
    }

    /// Writes the append buffer and any pending loss marker to the segment
    /// file (the page cache) and wakes readers.
    pub fn flush(&self) -> Result<()> {
        let mut st = lock(&self.inner.state);
        let result = st.flush();
        self.inner.flushed.notify_all();
        result.map(|_| ())
    }

    /// `flush`, then fdatasync every segment written since the last sync.
    pub fn sync(&self) -> Result<()> {
        let (files, dir_dirty) = {
            let mut st = lock(&self.inner.state);
            let result = st.flush();
            self.inner.flushed.notify_all();
            result?;
            st.take_unsynced()?
        };
        for file in files {
            file.sync_data()
                .with_context(|| format!("syncing a segment in {}", self.inner.dir.display()))?;
        }
        if dir_dirty {
            cursor::sync_dir(&self.inner.dir)?;
        }
        Ok(())
    }

    /// Entries with seq > `after_seq`, in order: at most `max_entries`, and
    /// payloads totalling at most `max_bytes` except that the first entry is
    /// always returned whatever its size. Only flushed entries are visible.
    /// Entries at or below the watermark may already be deleted; the read
    /// then starts at the oldest one still on disk.
    pub fn read(&self, after_seq: u64, max_entries: usize, max_bytes: usize) -> Result<Vec<Entry>> {
        let mut pos = lock(&self.inner.read_pos);
        let snapshot = {
            let st = lock(&self.inner.state);
            if max_entries == 0 || st.flushed_seq <= after_seq {
                return Ok(Vec::new());
            }
            let start = st.segment_index(after_seq.saturating_add(1));
            st.segments.range(start..).copied().collect::<Vec<_>>()
        };
        reader::read(
            &self.inner.dir,
            &mut pos,
            &snapshot,
            after_seq,
            max_entries,
            max_bytes,
        )
    }

    /// Waits until an entry with seq > `after_seq` is readable; false when
    /// the timeout passed first.
    pub fn wait(&self, after_seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = lock(&self.inner.state);
        loop {
            if st.flushed_seq > after_seq {
                return true;
            }
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => Duration::from_secs(3600),
            };
            st = self
                .inner
                .flushed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Persists the watermark and deletes the segments it wholly covers.
    /// An ack past the last flushed seq is an error (the peer acks what it
    /// was never sent); one at or below the watermark does nothing.
    pub fn ack(&self, up_to_seq: u64) -> Result<()> {
        let _serial = lock(&self.inner.ack_lock);
        {
            let st = lock(&self.inner.state);
            if up_to_seq <= st.acked {
                return Ok(());
            }
            if up_to_seq > st.flushed_seq {
                bail!(
                    "ack of seq {up_to_seq} beyond the last flushed seq {} of the spool in {}",
                    st.flushed_seq,
                    self.inner.dir.display()
                );
            }
        }
        cursor::store(&self.inner.dir, up_to_seq)?;
        let freed = {
            let mut st = lock(&self.inner.state);
            st.acked = up_to_seq;
            st.timeline.acked(up_to_seq);
            st.release_acked()
        };
        state::remove_freed(&freed);
        if !freed.is_empty() {
            let mut st = lock(&self.inner.state);
            if st.lost_unwritten > 0 {
                let result = st.flush();
                self.inner.flushed.notify_all();
                result.context("writing a pending loss marker after an ack")?;
            }
        }
        Ok(())
    }

    pub fn acked(&self) -> u64 {
        lock(&self.inner.state).acked
    }

    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.inner.state);
        SpoolStats {
            next_seq: st.next_seq,
            acked: st.acked,
            pending_entries: (st.next_seq - 1).saturating_sub(st.acked),
            bytes_on_disk: st.bytes,
            lost_total: st.lost_total,
            lost_unwritten: st.lost_unwritten,
            loss_markers: st.markers_written,
            unacked_age: st.timeline.age(st.acked + 1, st.next_seq, Instant::now()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = st.flush() {
            tracing::warn!(dir = %st.dir().display(), "spool: flushing on close failed: {e:#}");
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "the spool in {} is open in another process (or handle)",
                dir.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}
