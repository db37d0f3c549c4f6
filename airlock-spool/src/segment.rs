//! Entry framing, segment file names and the recovery scan of a segment.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The first byte of every entry: a magic value that is also the format version.
pub(crate) const MAGIC: u8 = 0xA1;
pub(crate) const KIND_RECORD: u8 = 1;
pub(crate) const KIND_LOSS: u8 = 2;
/// magic (1) + kind (1) + seq (8) + payload length (4).
pub(crate) const HEADER_LEN: usize = 14;
pub(crate) const CRC_LEN: usize = 4;
pub(crate) const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// A length above this in a header is garbage, not a record: the recovery scan
/// stops there instead of trusting it, and `append` refuses larger payloads.
pub(crate) const MAX_PAYLOAD: usize = 16 << 20;
pub(crate) const LOSS_PAYLOAD_LEN: usize = 8;
pub(crate) const LOSS_ENTRY_LEN: u64 = (OVERHEAD + LOSS_PAYLOAD_LEN) as u64;

const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_DIGITS: usize = 20;

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}"))
}

/// The first seq of a segment from its file name, or None for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode(buf: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.push(MAGIC);
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    // The caller has bounded payload.len() by MAX_PAYLOAD, far below u32::MAX.
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub kind: u8,
    pub seq: u64,
    pub len: usize,
}

impl Header {
    pub fn entry_len(&self) -> usize {
        OVERHEAD + self.len
    }
}

pub(crate) fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, String> {
    if h[0] != MAGIC {
        return Err(format!("bad magic byte {:#04x}", h[0]));
    }
    let kind = h[1];
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[2..10]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&h[10..14]);
    let seq = u64::from_le_bytes(seq);
    let len = u32::from_le_bytes(len) as usize;
    match kind {
        KIND_RECORD if len <= MAX_PAYLOAD => {}
        KIND_LOSS if len == LOSS_PAYLOAD_LEN => {}
        KIND_RECORD | KIND_LOSS => return Err(format!("implausible length {len} for kind {kind}")),
        _ => return Err(format!("unknown entry kind {kind}")),
    }
    Ok(Header { kind, seq, len })
}

/// Checks the checksum of a whole entry (header, payload, crc) and returns its payload.
pub(crate) fn verify<'a>(header: &Header, entry: &'a [u8]) -> Result<&'a [u8], String> {
    let body_len = HEADER_LEN + header.len;
    if entry.len() != body_len + CRC_LEN {
        return Err(format!(
            "entry of {} bytes, header says {}",
            entry.len(),
            body_len + CRC_LEN
        ));
    }
    let mut stored = [0u8; CRC_LEN];
    stored.copy_from_slice(&entry[body_len..]);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(&entry[..body_len]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(&entry[HEADER_LEN..body_len])
}

pub(crate) fn loss_count(payload: &[u8]) -> u64 {
    let mut count = [0u8; 8];
    count.copy_from_slice(&payload[..LOSS_PAYLOAD_LEN]);
    u64::from_le_bytes(count)
}

/// What the recovery scan kept of a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanned {
    /// The seq of its last good entry; None when no entry survived.
    pub last_seq: Option<u64>,
    /// Its length after any truncation.
    pub len: u64,
}

/// Validates every entry of a segment and truncates the file at the first one
/// that is incomplete, fails its checksum or breaks the seq chain (a crash
/// mid-write leaves such a tail; what follows it cannot be trusted).
pub(crate) fn recover(path: &Path, first_seq: u64) -> Result<Scanned> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening segment {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("reading the size of segment {}", path.display()))?
        .len();
    let mut reader = BufReader::with_capacity(256 << 10, &file);
    let mut good: u64 = 0;
    let mut expected = first_seq;
    let mut last_seq = None;
    let mut entry = Vec::new();
    let problem = loop {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut reader, &mut header)
            .with_context(|| format!("reading segment {}", path.display()))?;
        if got == 0 {
            break None;
        }
        if got < HEADER_LEN {
            break Some("an incomplete entry header".to_string());
        }
        let parsed = match parse_header(&header) {
            Ok(h) => h,
            Err(e) => break Some(e),
        };
        if parsed.seq != expected {
            break Some(format!("seq {} where {expected} was expected", parsed.seq));
        }
        entry.clear();
        entry.extend_from_slice(&header);
        entry.resize(parsed.entry_len(), 0);
        let got = read_full(&mut reader, &mut entry[HEADER_LEN..])
            .with_context(|| format!("reading segment {}", path.display()))?;
        if got < parsed.entry_len() - HEADER_LEN {
            break Some(format!("an incomplete entry (seq {})", parsed.seq));
        }
        if let Err(e) = verify(&parsed, &entry) {
            break Some(format!("seq {}: {e}", parsed.seq));
        }
        good += parsed.entry_len() as u64;
        last_seq = Some(parsed.seq);
        expected = parsed.seq.saturating_add(1);
    };
    drop(reader);
    if let Some(problem) = problem {
        tracing::warn!(
            segment = %path.display(),
            offset = good,
            file_len,
            dropped_bytes = file_len - good,
            last_good_seq = ?last_seq,
            "spool: truncating a torn segment tail: {problem}"
        );
        file.set_len(good)
            .with_context(|| format!("truncating segment {} to {good} bytes", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing truncated segment {}", path.display()))?;
    }
    Ok(Scanned {
        last_seq,
        len: good,
    })
}

/// Like read_exact, but a short read at end of file is a count, not an error.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads entries of one segment at given offsets, with pread so that the
/// handle can be kept between calls and a position survives the writer's
/// appends to the same file.
pub(crate) struct SegmentReader {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    buf_offset: u64,
}

const READ_CHUNK: usize = 256 << 10;

impl SegmentReader {
    /// None when the file is gone: an ack deleted it after the caller listed it.
    pub fn open(path: PathBuf) -> Result<Option<SegmentReader>> {
        match File::open(&path) {
            Ok(file) => Ok(Some(SegmentReader {
                file,
                path,
                buf: Vec::new(),
                buf_offset: 0,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("opening segment {}", path.display())),
        }
    }

    /// The entry at `offset`, which must lie wholly below `limit` (the
    /// segment's flushed length, a region the writer never changes again).
    pub fn entry_at(&mut self, offset: u64, limit: u64) -> Result<(Header, &[u8])> {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(self.window(offset, HEADER_LEN, limit)?);
        let parsed = parse_header(&header).map_err(|e| self.corrupt(offset, &e))?;
        let whole = self.window(offset, parsed.entry_len(), limit)?.len();
        debug_assert_eq!(whole, parsed.entry_len());
        let start = (offset - self.buf_offset) as usize;
        let entry = &self.buf[start..start + parsed.entry_len()];
        match verify(&parsed, entry) {
            Ok(payload) => Ok((parsed, payload)),
            Err(e) => Err(corrupt(&self.path, offset, &e)),
        }
    }

    fn window(&mut self, offset: u64, len: usize, limit: u64) -> Result<&[u8]> {
        if offset.saturating_add(len as u64) > limit {
            return Err(self.corrupt(offset, "an entry runs past the flushed end of the segment"));
        }
        let cached_end = self.buf_offset + self.buf.len() as u64;
        if offset < self.buf_offset || offset + len as u64 > cached_end {
            let want = len.max(READ_CHUNK).min((limit - offset) as usize);
            self.buf.clear();
            self.buf.resize(want, 0);
            self.buf_offset = offset;
            use std::os::unix::fs::FileExt;
            if let Err(e) = self.file.read_exact_at(&mut self.buf, offset) {
                self.buf.clear();
                return Err(e).with_context(|| {
                    format!(
                        "reading {want} bytes at offset {offset} of segment {}",
                        self.path.display()
                    )
                });
            }
        }
        let start = (offset - self.buf_offset) as usize;
        Ok(&self.buf[start..start + len])
    }

    fn corrupt(&self, offset: u64, problem: &str) -> anyhow::Error {
        corrupt(&self.path, offset, problem)
    }
}

fn corrupt(path: &Path, offset: u64, problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "segment {} is corrupt at offset {offset}: {problem}",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse_back() {
        let dir = Path::new("/x");
        let a = segment_path(dir, 9);
        let b = segment_path(dir, 10);
        assert!(a < b);
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(name, "00000000000000000010.seg");
        assert_eq!(parse_segment_name(name), Some(10));
        assert_eq!(parse_segment_name("10.seg"), None);
        assert_eq!(parse_segment_name("acked"), None);
    }

    #[test]
    fn a_flipped_payload_bit_fails_the_checksum() {
        let mut buf = Vec::new();
        encode(&mut buf, KIND_RECORD, 7, b"hello");
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&buf[..HEADER_LEN]);
        let parsed = parse_header(&header).expect("a valid header");
        assert_eq!((parsed.kind, parsed.seq, parsed.len), (KIND_RECORD, 7, 5));
        assert_eq!(verify(&parsed, &buf).expect("a valid entry"), b"hello");
        buf[HEADER_LEN + 1] ^= 1;
        assert!(verify(&parsed, &buf).is_err());
    }
}
