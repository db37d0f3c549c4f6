//! Decisions the writer could not take in time, kept in a file beside the
//! database until it can: `<dir>/decisions.spill`.
//!
//! A burst (one ring-buffer drain at tens of thousands of decisions a second)
//! can outrun the writer for a moment. Holding it in memory would cost the
//! daemon megabytes; dropping it would leave the store short. The spill is an
//! append-only file of `id (u64 LE) | length (u32 LE) | protobuf body` records:
//! the event thread appends, the writer reads from the front once its queue is
//! empty, and the file is emptied when the writer has caught up. What is still
//! there when the daemon stops is stored at the next start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use airlock_api::v1::Decision;
use anyhow::{Context, Result};
use bytes::Bytes;
use prost::Message;

use crate::Row;

/// The spill's file in the store's directory.
pub const SPILL_FILE: &str = "decisions.spill";
/// Beyond this the store drops (and counts) instead: the disk is not unbounded either.
pub const MAX_SPILL_BYTES: u64 = 256 << 20;
/// The most the writer reads back in one go.
const READ_CHUNK: u64 = 1 << 20;
const HEADER: usize = 12;

/// The event thread appends and the writer thread alone takes and discards.
/// Positioned reads and writes need no lock on the file: the lock guards the
/// offsets, and the writer reads and decodes a chunk without it, because
/// appends only ever write past the end it saw.
pub struct Spill {
    path: PathBuf,
    file: File,
    offsets: Mutex<Offsets>,
    /// Decisions in the file and not yet read back.
    rows: AtomicU64,
}

struct Offsets {
    /// Where the next record is appended.
    end: u64,
    /// Where the writer reads next.
    start: u64,
}

/// What opening found in a spill left by an earlier run.
pub struct Recovered {
    pub rows: u64,
    pub max_id: u64,
    /// Bytes of a record cut short (the daemon died mid-append), cut off.
    pub torn_bytes: u64,
}

impl Spill {
    /// Opens `<dir>/decisions.spill`, keeping the whole records an earlier run left.
    pub fn open(dir: &Path) -> Result<(Spill, Recovered)> {
        let path = dir.join(SPILL_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("stat {}", path.display()))?.len();
        let mut recovered = Recovered { rows: 0, max_id: 0, torn_bytes: 0 };
        let mut at = 0u64;
        let mut header = [0u8; HEADER];
        while at + HEADER as u64 <= len {
            file.read_exact_at(&mut header, at).with_context(|| format!("read {}", path.display()))?;
            let (id, body_len) = parse_header(&header);
            if at + HEADER as u64 + body_len > len {
                break;
            }
            recovered.rows += 1;
            recovered.max_id = recovered.max_id.max(id);
            at += HEADER as u64 + body_len;
        }
        if at < len {
            recovered.torn_bytes = len - at;
            file.set_len(at).with_context(|| format!("cut the torn tail of {}", path.display()))?;
        }
        let spill = Spill { path, file, offsets: Mutex::new(Offsets { end: at, start: 0 }), rows: AtomicU64::new(recovered.rows) };
        Ok((spill, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decisions waiting in the file.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Appends a batch whole, or not at all (false: it would pass the size
    /// bound, or the write failed).
    pub fn append(&self, batch: &[Row]) -> bool {
        let mut bytes = Vec::with_capacity(batch.iter().map(|r| HEADER + r.body.len()).sum());
        for row in batch {
            bytes.extend_from_slice(&(row.id as u64).to_le_bytes());
            bytes.extend_from_slice(&(row.body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&row.body);
        }
        let mut f = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        if f.end + bytes.len() as u64 > MAX_SPILL_BYTES {
            return false;
        }
        if let Err(e) = self.file.write_all_at(&bytes, f.end) {
            tracing::error!(path = %self.path.display(), "could not append to the decision store's spill: {e}");
            // A partial write is overwritten by the next append, which starts at the same place.
            return false;
        }
        f.end += bytes.len() as u64;
        self.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        true
    }

    /// Takes the oldest records (about a megabyte of them) out of the file;
    /// empties the file once everything was taken. A record that cannot be
    /// decoded is skipped and counted in the second value. Only the writer
    /// thread calls it.
    pub fn take(&self) -> Result<(Vec<Row>, u64)> {
        let (start, end) = {
            let f = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
            if f.start >= f.end {
                // Counted under the same lock as the appends: nothing is waiting.
                self.rows.store(0, Ordering::Relaxed);
                return Ok((Vec::new(), 0));
            }
            (f.start, f.end)
        };
        let mut header = [0u8; HEADER];
        self.file.read_exact_at(&mut header, start).with_context(|| format!("read {}", self.path.display()))?;
        // At least one whole record, however long.
        let want = (end - start).min(READ_CHUNK.max(HEADER as u64 + parse_header(&header).1));
        let mut chunk = vec![0u8; want as usize];
        self.file.read_exact_at(&mut chunk, start).with_context(|| format!("read {}", self.path.display()))?;
        let mut rows = Vec::new();
        let mut unreadable = 0;
        let mut at = 0usize;
        while at + HEADER <= chunk.len() {
            let (id, body_len) = parse_header(&chunk[at..at + HEADER]);
            let record_end = at + HEADER + body_len as usize;
            if record_end > chunk.len() {
                break;
            }
            let body = Bytes::copy_from_slice(&chunk[at + HEADER..record_end]);
            match Decision::decode(body.as_ref()) {
                Ok(mut d) => {
                    d.id = id;
                    rows.push(Row::new(&d, body));
                }
                Err(e) => {
                    unreadable += 1;
                    tracing::error!(id, "a spilled decision is not readable, skipped: {e}");
                }
            }
            at = record_end;
        }
        if at == 0 {
            // Appends write whole records, so a record that does not fit what is left is damage.
            anyhow::bail!("{} holds a record longer than the file at offset {start}", self.path.display());
        }
        let mut f = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        f.start = start + at as u64;
        self.rows.fetch_sub(rows.len() as u64 + unreadable, Ordering::Relaxed);
        if f.start >= f.end {
            // Caught up: the next burst starts an empty file.
            self.file.set_len(0).with_context(|| format!("empty {}", self.path.display()))?;
            f.start = 0;
            f.end = 0;
        }
        Ok((rows, unreadable))
    }
}

impl Spill {
    /// Empties the file whatever it holds; returns how many decisions that was.
    pub fn discard(&self) -> u64 {
        let mut f = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.file.set_len(0) {
            tracing::error!(path = %self.path.display(), "could not empty the decision store's spill: {e}");
        }
        f.start = 0;
        f.end = 0;
        self.rows.swap(0, Ordering::Relaxed)
    }
}

fn parse_header(h: &[u8]) -> (u64, u64) {
    let mut id = [0u8; 8];
    let mut len = [0u8; 4];
    id.copy_from_slice(&h[..8]);
    len.copy_from_slice(&h[8..HEADER]);
    (u64::from_le_bytes(id), u32::from_le_bytes(len) as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rusqlite::Connection;

    use super::*;
    use crate::{Retention, Store, MAX_BATCH, MAX_PENDING};

    fn decision(id: u64) -> Decision {
        Decision { id, time_unix_nanos: id as i64, kind: "connect".into(), decision: "allow".into(), session_id: "s1".into(), ..Default::default() }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-spill-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make a scratch directory");
        dir
    }

    fn stored(store: &Store) -> u64 {
        store.stats().map(|s| s.0).unwrap_or(0)
    }

    fn wait_stored(store: &Store, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(store) < n {
            assert!(Instant::now() < deadline, "the writer stored {} of {n} decisions", stored(store));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_burst_the_writer_cannot_take_is_spilled_and_stored_in_full() {
        let dir = temp_dir("burst");
        let store = Store::open(&dir, Retention::default()).expect("open the store");
        // Another connection holds the write lock, so the writer waits inside its first batch.
        let blocker = Connection::open(dir.join(crate::FILE_NAME)).expect("open a second connection");
        blocker.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        let total = 4 * MAX_PENDING as u64;
        let mut next = 0;
        while next < total {
            let batch: Vec<Row> = (0..MAX_BATCH as u64).map(|_| Row::of(&decision(store.next_id()))).collect();
            next += batch.len() as u64;
            store.submit(batch);
        }
        let spilled = store.spill.rows();
        assert!(spilled >= total - MAX_PENDING as u64 - MAX_BATCH as u64, "only {spilled} of {total} decisions were spilled");
        assert!(std::fs::metadata(dir.join(SPILL_FILE)).expect("the spill file").len() > 0);
        assert_eq!(store.queued().1 as u64, total - stored(&store), "the queue and the spill account for every decision");
        blocker.execute_batch("COMMIT").expect("release the write lock");

        wait_stored(&store, total);
        assert_eq!(store.dropped(), 0);
        assert_eq!(store.spill.rows(), 0);
        let (newest, _) = store.query(&Default::default(), 0, 1).expect("query");
        assert_eq!(newest[0].id, total, "the newest decision is the last one submitted");
        // Caught up: the file is empty again, and later batches go through the queue.
        assert_eq!(std::fs::metadata(dir.join(SPILL_FILE)).expect("the spill file").len(), 0);
        store.submit(vec![Row::of(&decision(store.next_id()))]);
        wait_stored(&store, total + 1);
        assert!(store.wait_written(total + 1, std::time::Duration::from_secs(30)), "the writer's mark did not reach the last decision");
        assert_eq!(store.queued(), (0, 0), "the queue's counts outlived what they counted");
        assert_eq!(store.spill.rows(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_spill_left_by_the_last_run_is_stored_at_the_next_start() {
        let dir = temp_dir("restart");
        {
            let (spill, found) = Spill::open(&dir).expect("open an empty spill");
            assert_eq!(found.rows, 0);
            let rows: Vec<Row> = (1..=300).map(|id| Row::of(&decision(id))).collect();
            assert!(spill.append(&rows));
        }
        // A daemon killed in the middle of an append leaves a torn record.
        let path = dir.join(SPILL_FILE);
        let mut bytes = std::fs::read(&path).expect("read the spill");
        bytes.extend_from_slice(&301u64.to_le_bytes());
        bytes.extend_from_slice(&500u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 17]);
        std::fs::write(&path, bytes).expect("write the torn spill");

        let store = Store::open(&dir, Retention::default()).expect("open the store");
        assert!(store.next_id() > 300, "a new decision would reuse a spilled id");
        wait_stored(&store, 300);
        assert!(store.wait_written(300, std::time::Duration::from_secs(30)), "the spill's decisions never counted as written");
        let (page, _) = store.query(&Default::default(), 0, 1000).expect("query");
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), (1..=300).rev().collect::<Vec<_>>());
        assert_eq!(store.dropped(), 0);
        drop(store);
        assert_eq!(std::fs::metadata(&path).expect("the spill file").len(), 0, "the spill was not emptied");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_racing_takes_lose_and_repeat_nothing() {
        let dir = temp_dir("race");
        let (spill, _) = Spill::open(&dir).expect("open an empty spill");
        let spill = std::sync::Arc::new(spill);
        const BATCHES: u64 = 400;
        const PER_BATCH: u64 = 250;
        let appender = {
            let spill = spill.clone();
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let rows: Vec<Row> = (1..=PER_BATCH).map(|i| Row::of(&decision(b * PER_BATCH + i))).collect();
                    assert!(spill.append(&rows), "batch {b} was refused");
                }
            })
        };
        let mut taken = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while taken.len() < (BATCHES * PER_BATCH) as usize {
            assert!(Instant::now() < deadline, "took {} of {} decisions", taken.len(), BATCHES * PER_BATCH);
            let (rows, unreadable) = spill.take().expect("take");
            assert_eq!(unreadable, 0);
            taken.extend(rows.iter().map(|r| r.id as u64));
        }
        appender.join().expect("the appender");
        assert_eq!(taken, (1..=BATCHES * PER_BATCH).collect::<Vec<_>>(), "decisions were lost, repeated or reordered");
        assert_eq!(spill.take().expect("take").0.len(), 0);
        assert_eq!(spill.rows(), 0);
        assert_eq!(std::fs::metadata(dir.join(SPILL_FILE)).expect("the spill file").len(), 0, "caught up, the file is emptied");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
