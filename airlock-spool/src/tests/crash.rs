//! A writer killed with SIGKILL mid-stream loses nothing it had flushed.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{payload, read_all, TempDir};
use crate::{Appended, Entry, Spool, SpoolOptions};

const CHILD_DIR_ENV: &str = "AIRLOCK_SPOOL_CRASH_CHILD_DIR";
const OPTS: SpoolOptions = SpoolOptions {
    max_bytes: 1 << 30,
    segment_bytes: 256 << 10,
};

/// The child side of `sigkill_mid_stream_loses_no_flushed_record`: does
/// nothing unless started by it. Appends until killed, announcing on stdout
/// every seq whose flush returned.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let spool = Spool::open(&PathBuf::from(dir), OPTS).expect("child: open");
    let mut out = std::io::stdout().lock();
    for i in 1..=10_000_000u64 {
        assert_eq!(
            spool.append(&payload(i)).expect("child: append"),
            Appended::Written { seq: i }
        );
        if i % 50 == 0 {
            spool.flush().expect("child: flush");
            // Written to the descriptor directly, past the test harness's capture.
            writeln!(out, "flushed {i}").expect("child: stdout");
            out.flush().expect("child: stdout");
        }
    }
    // Never reached when the parent works; the abort stands in for its kill.
    std::process::abort();
}

#[test]
fn sigkill_mid_stream_loses_no_flushed_record() {
    let dir = TempDir::new("sigkill");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "tests::crash::crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut flushed = 0u64;
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.expect("child output");
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = flushed.max(n.parse().expect("a seq"));
        }
        if flushed >= 20_000 {
            child.kill().expect("SIGKILL the writer");
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "the writer exited before it was killed (flushed {flushed})"
    );
    // Lines it printed before the signal landed count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = flushed.max(n.parse().expect("a seq"));
        }
    }
    let status = child.wait().expect("reap the writer");
    assert!(!status.success());

    let spool = Spool::open(dir.path(), OPTS).expect("reopen after the kill");
    let entries = read_all(&spool, 0);
    let found = entries.len() as u64;
    assert!(
        found >= flushed,
        "{found} entries on disk, {flushed} were flushed"
    );
    for (i, entry) in entries.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(
            entry,
            &Entry::Record {
                seq,
                payload: payload(seq)
            }
        );
    }
    assert_eq!(
        spool.append(b"after").expect("append"),
        Appended::Written { seq: found + 1 }
    );
}
