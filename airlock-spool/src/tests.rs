//! Tests on real files in a temporary directory.

mod crash;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Appended, Entry, Spool, SpoolOptions};

pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "airlock-spool-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A payload that differs in length and content for every `i`.
pub(crate) fn payload(i: u64) -> Vec<u8> {
    let len = 16 + (i.wrapping_mul(7919) % 300) as usize;
    (0..len)
        .map(|k| (i as usize).wrapping_mul(31).wrapping_add(k) as u8)
        .collect()
}

pub(crate) fn read_all(spool: &Spool, mut after: u64) -> Vec<Entry> {
    let mut all = Vec::new();
    loop {
        let batch = spool.read(after, 97, 8 << 10).expect("read");
        let Some(last) = batch.last() else { return all };
        after = last.seq();
        all.extend(batch);
    }
}

fn append_n(spool: &Spool, from: u64, n: u64) {
    for i in from..from + n {
        assert_eq!(
            spool.append(&payload(i)).expect("append"),
            Appended::Written { seq: i }
        );
    }
}

fn assert_records(entries: &[Entry], seqs: std::ops::RangeInclusive<u64>) {
    let expected: Vec<Entry> = seqs
        .map(|seq| Entry::Record {
            seq,
            payload: payload(seq),
        })
        .collect();
    assert_eq!(entries.len(), expected.len(), "entry count");
    for (got, want) in entries.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

fn last_segment(dir: &Path) -> PathBuf {
    dir.join(segment_files(dir).last().expect("a segment"))
}

/// Record entries with 100-byte payloads are 118 bytes on disk.
const ENTRY: u64 = 118;

fn small(max_entries: u64, per_segment: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes: ENTRY * max_entries,
        segment_bytes: ENTRY * per_segment,
    }
}

#[test]
fn append_flush_read_returns_everything_in_order_and_reopen_continues() {
    let dir = TempDir::new("roundtrip");
    let opts = SpoolOptions {
        max_bytes: 1 << 30,
        segment_bytes: 4096,
    };
    {
        let spool = Spool::open(dir.path(), opts).expect("open");
        assert!(spool.read(0, 10, 1 << 20).expect("read empty").is_empty());
        append_n(&spool, 1, 500);
        spool.flush().expect("flush");
        assert_records(&read_all(&spool, 0), 1..=500);
        assert_eq!(spool.stats().next_seq, 501);
        assert_eq!(spool.stats().pending_entries, 500);
    }
    assert!(
        segment_files(dir.path()).len() > 1,
        "rotation at segment_bytes"
    );
    let spool = Spool::open(dir.path(), opts).expect("reopen");
    assert_records(&read_all(&spool, 0), 1..=500);
    assert_eq!(
        spool.append(&payload(501)).expect("append"),
        Appended::Written { seq: 501 }
    );
    spool.flush().expect("flush");
    assert_records(&read_all(&spool, 0), 1..=501);
}

#[test]
fn unflushed_appends_are_invisible_until_flush_and_written_on_close() {
    let dir = TempDir::new("close");
    let opts = SpoolOptions::default();
    {
        let spool = Spool::open(dir.path(), opts).expect("open");
        append_n(&spool, 1, 3);
        assert!(spool.read(0, 10, 1 << 20).expect("read").is_empty());
        assert!(!spool.wait(0, Duration::from_millis(1)));
    }
    let spool = Spool::open(dir.path(), opts).expect("reopen");
    assert_records(&read_all(&spool, 0), 1..=3);
}

#[test]
fn reads_honour_limits_resume_and_resend_from_an_older_seq() {
    let dir = TempDir::new("limits");
    let spool = Spool::open(
        dir.path(),
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 2048,
        },
    )
    .expect("open");
    append_n(&spool, 1, 200);
    spool.flush().expect("flush");

    let batch = spool.read(0, 7, 1 << 20).expect("read");
    assert_records(&batch, 1..=7);
    let batch = spool.read(7, 1000, 1).expect("read one over max_bytes");
    assert_records(&batch, 8..=8);
    let budget = payload(9).len() + payload(10).len();
    assert_records(&spool.read(8, 1000, budget).expect("read"), 9..=10);
    let short = payload(11).len() + payload(12).len() - 1;
    assert_records(&spool.read(10, 1000, short).expect("read"), 11..=11);
    // A resend after a reconnect starts again from an older seq.
    assert_records(&spool.read(3, 5, 1 << 20).expect("resend"), 4..=8);
    assert_records(&read_all(&spool, 150), 151..=200);
    // Following the writer from the end sees new entries as they are flushed.
    append_n(&spool, 201, 2);
    spool.flush().expect("flush");
    assert_records(&spool.read(200, 10, 1 << 20).expect("read"), 201..=202);
    assert_records(&read_all(&spool, 0), 1..=202);
}

#[test]
fn ack_deletes_fully_acked_segments_and_the_sequence_survives_deleting_all() {
    let dir = TempDir::new("ack");
    let opts = small(1000, 3);
    let big = |i: u64| vec![i as u8; 100];
    {
        let spool = Spool::open(dir.path(), opts).expect("open");
        for i in 1..=10 {
            assert_eq!(
                spool.append(&big(i)).expect("append"),
                Appended::Written { seq: i }
            );
        }
        spool.flush().expect("flush");
        assert_eq!(segment_files(dir.path()).len(), 4, "3 entries per segment");
        spool.ack(5).expect("ack");
        assert_eq!(spool.acked(), 5);
        // 1..=3 is wholly acked; 4..=6 still holds 6.
        let names = segment_files(dir.path());
        assert_eq!(
            names.first().map(String::as_str),
            Some("00000000000000000004.seg")
        );
        assert_eq!(names.len(), 3);
        assert_eq!(spool.stats().pending_entries, 5);
        assert_eq!(spool.stats().bytes_on_disk, 7 * ENTRY);
    }
    {
        let spool = Spool::open(dir.path(), opts).expect("reopen");
        assert_eq!(spool.acked(), 5);
        let unacked: Vec<u64> = read_all(&spool, spool.acked())
            .iter()
            .map(Entry::seq)
            .collect();
        assert_eq!(unacked, (6..=10).collect::<Vec<_>>());
        spool.ack(10).expect("ack everything");
        assert!(
            segment_files(dir.path()).is_empty(),
            "every segment deleted"
        );
        assert_eq!(spool.stats().bytes_on_disk, 0);
    }
    let spool = Spool::open(dir.path(), opts).expect("reopen empty");
    assert_eq!(spool.stats().next_seq, 11);
    assert_eq!(
        spool.append(&big(11)).expect("append"),
        Appended::Written { seq: 11 }
    );
    spool.flush().expect("flush");
    let entries = read_all(&spool, 0);
    assert_eq!(
        entries,
        vec![Entry::Record {
            seq: 11,
            payload: big(11)
        }]
    );
}

#[test]
fn ack_beyond_the_last_flushed_seq_is_an_error_and_below_the_watermark_a_no_op() {
    let dir = TempDir::new("badack");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    append_n(&spool, 1, 5);
    assert!(spool.ack(1).is_err(), "nothing is flushed yet");
    spool.flush().expect("flush");
    assert!(spool.ack(6).is_err());
    spool.ack(4).expect("ack");
    spool.ack(2).expect("an older ack");
    assert_eq!(spool.acked(), 4);
    assert_eq!(
        fs::read_to_string(dir.path().join("acked")).expect("cursor"),
        "4\n"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    assert!(Spool::open(dir.path(), SpoolOptions::default()).is_err());
    drop(spool);
    Spool::open(dir.path(), SpoolOptions::default()).expect("open after close");
}

fn write_ten_and_close(dir: &Path) {
    let spool = Spool::open(dir, small(1000, 1000)).expect("open");
    append_n(&spool, 1, 10);
    spool.flush().expect("flush");
}

fn reopen_expecting(dir: &Path, last_good: u64) {
    let spool = Spool::open(dir, small(1000, 1000)).expect("reopen");
    assert_records(&read_all(&spool, 0), 1..=last_good);
    assert_eq!(
        spool.append(&payload(last_good + 1)).expect("append"),
        Appended::Written { seq: last_good + 1 }
    );
    spool.flush().expect("flush");
    assert_records(&read_all(&spool, 0), 1..=last_good + 1);
    drop(spool);
    let spool = Spool::open(dir, small(1000, 1000)).expect("reopen after recovery");
    assert_records(&read_all(&spool, 0), 1..=last_good + 1);
}

#[test]
fn torn_tail_a_truncated_last_entry_is_dropped() {
    let dir = TempDir::new("torn-trunc");
    write_ten_and_close(dir.path());
    let seg = last_segment(dir.path());
    let len = fs::metadata(&seg).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 3)
        .expect("truncate");
    reopen_expecting(dir.path(), 9);
}

#[test]
fn torn_tail_garbage_after_the_last_entry_is_cut_off() {
    let dir = TempDir::new("torn-garbage");
    write_ten_and_close(dir.path());
    let seg = last_segment(dir.path());
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&[0xA1, 1, 11, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 9, 9, 9])
        .expect("garbage");
    drop(f);
    reopen_expecting(dir.path(), 10);
}

#[test]
fn torn_tail_a_last_entry_with_a_bad_checksum_is_dropped() {
    let dir = TempDir::new("torn-crc");
    write_ten_and_close(dir.path());
    let seg = last_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("read");
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    fs::write(&seg, &bytes).expect("write");
    reopen_expecting(dir.path(), 9);
}

fn loss_total(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| {
            if let Entry::Loss { count, .. } = e {
                *count
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn size_limit_drops_are_counted_in_one_loss_marker_per_flush() {
    let dir = TempDir::new("limit");
    let spool = Spool::open(dir.path(), small(10, 3)).expect("open");
    let big = |i: u64| vec![i as u8; 100];
    let mut dropped = 0;
    for i in 1..=15 {
        match spool.append(&big(i)).expect("append") {
            Appended::Written { seq } => assert_eq!(seq, i),
            Appended::Dropped => {
                assert!(i > 10, "record {i} fits");
                dropped += 1;
            }
        }
    }
    assert_eq!(dropped, 5);
    assert_eq!(spool.stats().lost_unwritten, 5);
    spool.flush().expect("flush");
    spool
        .flush()
        .expect("a second flush writes no second marker");
    let entries = read_all(&spool, 0);
    assert_eq!(entries.len(), 11);
    assert_eq!(entries[10], Entry::Loss { seq: 11, count: 5 });
    assert!(entries[..10]
        .iter()
        .all(|e| matches!(e, Entry::Record { .. })));
    assert_eq!(spool.stats().lost_total, 5);
    assert_eq!(spool.stats().lost_unwritten, 0);
    assert_eq!(spool.stats().loss_markers, 1);

    // Still full: three more drops, pending until space is freed.
    for i in 0..3 {
        assert_eq!(
            spool.append(&big(20 + i)).expect("append"),
            Appended::Dropped
        );
    }
    dropped += 3;
    spool.ack(11).expect("ack frees every segment");
    // The ack wrote the pending marker as soon as it freed space.
    assert_eq!(spool.stats().lost_unwritten, 0);
    assert_eq!(
        spool.append(&big(30)).expect("append"),
        Appended::Written { seq: 13 }
    );
    spool.flush().expect("flush");
    let entries = read_all(&spool, 11);
    assert_eq!(
        entries,
        vec![
            Entry::Loss { seq: 12, count: 3 },
            Entry::Record {
                seq: 13,
                payload: big(30)
            }
        ]
    );

    let all_markers = loss_total(&read_all(&spool, 0)) + 5;
    assert_eq!(all_markers, dropped);
    assert_eq!(spool.stats().lost_total, dropped);
    assert_eq!(spool.stats().loss_markers, 2);
}

#[test]
fn the_unacked_age_is_zero_once_everything_is_acked() {
    let dir = TempDir::new("age");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    assert_eq!(spool.stats().unacked_age, Duration::ZERO, "an empty spool waits for nothing");
    append_n(&spool, 1, 3);
    spool.flush().expect("flush");
    let before = spool.stats().unacked_age;
    std::thread::sleep(Duration::from_millis(20));
    assert!(spool.stats().unacked_age > before, "the oldest unacked entry ages");
    spool.ack(3).expect("ack");
    assert_eq!(spool.stats().unacked_age, Duration::ZERO);
}

#[test]
fn a_pending_loss_marker_precedes_the_next_record_without_a_flush() {
    let dir = TempDir::new("marker-order");
    let spool = Spool::open(dir.path(), small(10, 3)).expect("open");
    append_n(&spool, 1, 2);
    assert_eq!(
        spool.append(&vec![0; 2000]).expect("append"),
        Appended::Dropped
    );
    assert_eq!(
        spool.append(&vec![0; 2000]).expect("append"),
        Appended::Dropped
    );
    assert_eq!(
        spool.append(&payload(4)).expect("append"),
        Appended::Written { seq: 4 }
    );
    spool.flush().expect("flush");
    let entries = read_all(&spool, 0);
    assert_eq!(entries[2], Entry::Loss { seq: 3, count: 2 });
    assert_eq!(
        entries[3],
        Entry::Record {
            seq: 4,
            payload: payload(4)
        }
    );
    assert_eq!(entries.len(), 4);
}

#[test]
fn loss_markers_past_the_headroom_wait_in_memory_for_an_ack() {
    let dir = TempDir::new("headroom");
    let opts = SpoolOptions {
        max_bytes: 1000,
        segment_bytes: 4096,
    };
    let spool = Spool::open(dir.path(), opts).expect("open");
    let mut written = 0;
    while spool.append(&[7; 100]).expect("append") != Appended::Dropped {
        written += 1;
    }
    let mut dropped = 1;
    loop {
        spool.flush().expect("flush");
        if spool.stats().lost_unwritten > 0 {
            break;
        }
        assert_eq!(spool.append(&[7; 100]).expect("append"), Appended::Dropped);
        dropped += 1;
        assert!(dropped < 10_000, "the headroom never ran out");
    }
    // The headroom is used up: further drops only count.
    for _ in 0..2 {
        assert_eq!(spool.append(&[7; 100]).expect("append"), Appended::Dropped);
        dropped += 1;
    }
    spool.flush().expect("flush");
    assert_eq!(spool.stats().lost_unwritten, 3);
    let stats = spool.stats();
    assert!(stats.bytes_on_disk <= opts.max_bytes + crate::state::MARKER_HEADROOM);
    assert_eq!(stats.lost_total, dropped);
    let before_ack = read_all(&spool, 0);
    let last = before_ack.last().expect("entries").seq();
    assert_eq!(before_ack.len() as u64, stats.next_seq - 1);
    assert_eq!(loss_total(&before_ack) + stats.lost_unwritten, dropped);

    spool.ack(last).expect("ack");
    assert_eq!(spool.stats().lost_unwritten, 0);
    let after_ack = read_all(&spool, last);
    assert_eq!(
        after_ack,
        vec![Entry::Loss {
            seq: last + 1,
            count: stats.lost_unwritten
        }]
    );
    assert_eq!(loss_total(&before_ack) + loss_total(&after_ack), dropped);
    assert!(written > 0);
    assert!(matches!(
        spool.append(&[7; 100]).expect("append"),
        Appended::Written { .. }
    ));
}

#[test]
fn wait_times_out_and_wakes_when_entries_are_flushed() {
    let dir = TempDir::new("wait");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    assert!(!spool.wait(0, Duration::from_millis(20)));
    let writer = spool.clone();
    let handle = std::thread::spawn(move || {
        writer.append(b"x").expect("append");
        writer.flush().expect("flush");
    });
    // Only the flush can end this wait in the test's lifetime: a missing
    // wakeup hangs the test instead of being measured against a clock.
    assert!(spool.wait(0, Duration::from_secs(24 * 3600)));
    handle.join().expect("writer thread");
    assert!(!spool.wait(1, Duration::from_millis(1)));
}

#[test]
fn a_concurrent_acking_reader_sees_every_seq_exactly_once_in_order() {
    const N: u64 = 100_000;
    let dir = TempDir::new("concurrent");
    let spool = Spool::open(
        dir.path(),
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 10,
        },
    )
    .expect("open");
    let small_payload = |i: u64| i.to_le_bytes().repeat(1 + (i % 5) as usize);
    let writer = spool.clone();
    let handle = std::thread::spawn(move || {
        for i in 1..=N {
            assert_eq!(
                writer.append(&small_payload(i)).expect("append"),
                Appended::Written { seq: i }
            );
            if i % 64 == 0 {
                writer.flush().expect("flush");
            }
        }
        writer.flush().expect("flush");
    });
    let mut after = 0;
    let mut batches = 0;
    while after < N {
        assert!(
            spool.wait(after, Duration::from_secs(120)),
            "the writer stalled at {after}"
        );
        let batch = spool
            .read(after, 1 + batches % 700, 16 << 10)
            .expect("read");
        for entry in batch {
            assert_eq!(
                entry,
                Entry::Record {
                    seq: after + 1,
                    payload: small_payload(after + 1)
                }
            );
            after += 1;
        }
        batches += 1;
        if batches % 3 == 0 {
            spool.ack(after).expect("ack");
        }
    }
    handle.join().expect("writer thread");
    spool.ack(N).expect("ack");
    assert!(spool.read(N, 10, 1 << 20).expect("read").is_empty());
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(spool.stats().pending_entries, 0);
}
