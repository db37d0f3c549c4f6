//! The reader's side: entries from a snapshot of the segment list, resuming
//! from where the previous read stopped when the caller continues from the
//! last seq it got (the common case), so that following the spool costs only
//! the new bytes.

use std::path::Path;

use anyhow::Result;

use crate::segment::{self, SegmentReader, KIND_LOSS};
use crate::state::SegMeta;
use crate::Entry;

/// A position between two entries: every entry before `offset` in segment
/// `first_seq` has seq <= `after`, every entry from it on has a larger one.
pub(crate) struct ReadPos {
    first_seq: u64,
    offset: u64,
    after: u64,
    reader: SegmentReader,
}

/// `snapshot` is the segment list from the one that holds `after_seq + 1`
/// on, with lengths covering only flushed entries (whole entries that the
/// writer never touches again).
pub(crate) fn read(
    dir: &Path,
    pos: &mut Option<ReadPos>,
    snapshot: &[SegMeta],
    after_seq: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Vec<Entry>> {
    let mut idx = 0;
    let mut offset = 0;
    let mut current = None;
    if let Some(p) = pos.take() {
        if p.after == after_seq {
            if let Some(i) = snapshot.iter().position(|s| s.first_seq == p.first_seq) {
                idx = i;
                offset = p.offset;
                current = Some(p.reader);
            }
        }
    }

    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last = after_seq;
    'segments: while idx < snapshot.len() {
        let seg = snapshot[idx];
        let reader = match &mut current {
            Some(reader) => reader,
            None => match SegmentReader::open(segment::segment_path(dir, seg.first_seq))? {
                Some(reader) => current.insert(reader),
                None => {
                    // Deleted by an ack since the snapshot: all of it was acked.
                    idx += 1;
                    offset = 0;
                    continue;
                }
            },
        };
        while offset < seg.len {
            let (header, payload) = reader.entry_at(offset, seg.len)?;
            if header.seq > after_seq {
                if !out.is_empty() && bytes.saturating_add(header.len) > max_bytes {
                    break 'segments;
                }
                bytes += header.len;
                last = header.seq;
                out.push(if header.kind == KIND_LOSS {
                    Entry::Loss {
                        seq: header.seq,
                        count: segment::loss_count(payload),
                    }
                } else {
                    Entry::Record {
                        seq: header.seq,
                        payload: payload.to_vec(),
                    }
                });
            }
            offset += header.entry_len() as u64;
            if out.len() >= max_entries {
                break 'segments;
            }
        }
        if idx + 1 == snapshot.len() {
            break;
        }
        idx += 1;
        offset = 0;
        current = None;
    }

    if let (Some(reader), Some(seg)) = (current, snapshot.get(idx)) {
        *pos = Some(ReadPos {
            first_seq: seg.first_seq,
            offset,
            after: last,
            reader,
        });
    }
    Ok(out)
}
