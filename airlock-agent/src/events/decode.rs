//! Ring-buffer records decoded into kernel events, and the byte layouts they
//! carry (NUL-separated argv, paths sent leaf first).

use airlock_common::abi::{self, from_bytes, EventHeader, ExecEvent, GuardEvent, NetEvent, PrefixBuffer, RawSocketEvent, UnixEvent};

/// A raw event, decoded but not yet enriched. The variable-length ones are
/// borrowed from the [`Decoder`] that read them.
#[derive(Debug, Clone)]
pub enum KernelEvent<'a> {
    Exec(&'a ExecEvent),
    Net(NetEvent),
    /// A connect or datagram to a Unix socket.
    Unix(Box<UnixEvent>),
    /// A tamper attempt or a protected-file open.
    Guard(&'a GuardEvent),
    /// A raw or packet socket.
    RawSocket(RawSocketEvent),
}

impl KernelEvent<'_> {
    pub fn header(&self) -> &EventHeader {
        match self {
            KernelEvent::Exec(e) => &e.hdr,
            KernelEvent::Net(e) => &e.hdr,
            KernelEvent::Unix(e) => &e.hdr,
            KernelEvent::Guard(e) => &e.hdr,
            KernelEvent::RawSocket(e) => &e.hdr,
        }
    }
}

/// Decodes ring-buffer records, one at a time; an event it returns lives
/// until the next record is decoded.
#[derive(Default)]
pub struct Decoder {
    exec: PrefixBuffer<ExecEvent>,
    guard: PrefixBuffer<GuardEvent>,
}

impl Decoder {
    /// One ring-buffer record; `None` for a record of unknown kind or size.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<KernelEvent<'_>> {
        let hdr: EventHeader = from_bytes(bytes)?;
        match hdr.kind {
            abi::EVENT_EXEC => self.exec.read(bytes).map(KernelEvent::Exec),
            abi::EVENT_CONNECT | abi::EVENT_SENDMSG | abi::EVENT_TAG_FAILURE => from_bytes::<NetEvent>(bytes).map(KernelEvent::Net),
            abi::EVENT_UNIX_CONNECT | abi::EVENT_UNIX_SENDMSG => from_bytes::<UnixEvent>(bytes).map(|e| KernelEvent::Unix(Box::new(e))),
            abi::EVENT_TAMPER | abi::EVENT_FILE_OPEN => self.guard.read(bytes).map(KernelEvent::Guard),
            abi::EVENT_RAW_SOCKET => from_bytes::<RawSocketEvent>(bytes).map(KernelEvent::RawSocket),
            _ => None,
        }
    }
}

/// The text of a NUL-terminated (or full) byte array.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// argv as the kernel stores it: words separated (and ended) by NUL.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect()
}

/// Rebuilds a path from components sent leaf first ("tool\0bin\0usr\0").
pub fn path_from_components(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return "/".to_string();
    }
    // In one buffer, walking the components from the last: every exec event carries two paths.
    let mut path = String::with_capacity(bytes.len() + 1);
    for part in bytes.rsplit(|&b| b == 0) {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(part));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebuilt_root_first() {
        assert_eq!(path_from_components(b"terraform\0bin\0usr\0"), "/usr/bin/terraform");
        assert_eq!(path_from_components(b""), "/");
        assert_eq!(path_from_components(b"tmp\0"), "/tmp");
        // A truncated walk has no final NUL; an empty component stays one.
        assert_eq!(path_from_components(b"tool\0bin"), "/bin/tool");
        assert_eq!(path_from_components(b"a\0\0b\0"), "/b//a");
        assert_eq!(path_from_components(b"\0"), "/");
        assert_eq!(path_from_components(b"caf\xc3\xa9\0x\xff\0"), "/x\u{fffd}/caf\u{e9}");
    }

    #[test]
    fn argv_splits_on_nul() {
        assert_eq!(split_argv(b"terraform\0apply\0"), vec!["terraform", "apply"]);
        assert_eq!(split_argv(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_argv(b"").is_empty());
        // A truncated block has no final NUL: the partial word is kept.
        assert_eq!(split_argv(b"ls\0-l"), vec!["ls", "-l"]);
    }

    #[test]
    fn decode_rejects_short_and_unknown_records() {
        let mut decoder = Decoder::default();
        assert!(decoder.decode(&[0u8; 4]).is_none());
        let mut hdr = EventHeader { kind: 99, ..Default::default() };
        assert!(decoder.decode(abi::as_bytes(&hdr)).is_none());
        hdr.kind = abi::EVENT_CONNECT;
        let net = NetEvent { hdr, family: libc::AF_INET as u16, port: 443, protocol: 6, addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] };
        match decoder.decode(abi::as_bytes(&net)) {
            Some(KernelEvent::Net(n)) => assert_eq!((n.port, n.addr[0]), (443, 10)),
            other => panic!("decoded {other:?}"),
        }
        hdr.kind = abi::EVENT_EXEC;
        let too_long = [abi::as_bytes(&hdr), &vec![0u8; std::mem::size_of::<ExecEvent>()]].concat();
        assert!(decoder.decode(&too_long).is_none(), "an exec record longer than the event");
    }

    /// Exec records are read into the decoder's one buffer: a record cut
    /// short after a longer one reads as zero where the longer one had bytes.
    #[test]
    fn exec_records_read_one_after_another_keep_nothing_of_the_last() {
        let record = |argv: &[u8]| {
            let hdr = EventHeader { kind: abi::EVENT_EXEC, tgid: 7, ..Default::default() };
            let at = std::mem::offset_of!(ExecEvent, argv);
            let mut bytes = vec![0u8; at + argv.len()];
            bytes[..std::mem::size_of::<EventHeader>()].copy_from_slice(abi::as_bytes(&hdr));
            let len_at = std::mem::offset_of!(ExecEvent, argv_len);
            bytes[len_at..len_at + 4].copy_from_slice(&(argv.len() as u32).to_ne_bytes());
            bytes[at..].copy_from_slice(argv);
            bytes
        };
        let mut decoder = Decoder::default();
        let long = record(b"terraform\0apply\0-auto-approve\0");
        let Some(KernelEvent::Exec(e)) = decoder.decode(&long) else { panic!("not an exec event") };
        assert_eq!(split_argv(&e.argv[..e.argv_len as usize]), ["terraform", "apply", "-auto-approve"]);
        let short = record(b"ls\0");
        let Some(KernelEvent::Exec(e)) = decoder.decode(&short) else { panic!("not an exec event") };
        assert_eq!((e.hdr.tgid, e.argv_len), (7, 3));
        assert!(e.argv[3..].iter().all(|&b| b == 0), "bytes of the longer record are left past the shorter one's end");
    }
}
