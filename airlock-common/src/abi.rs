//! The kernel ABI, mirrored field for field from `airlock-ebpf/src/bpf/airlock_abi.h`.
//!
//! The tests at the bottom compare every size and offset here with the BTF of
//! the compiled BPF object, so the two sides cannot drift apart silently.

pub const ARGV_MAX: usize = 4096;
pub const MAX_WORDS: usize = 64;
pub const MAX_ACTIVE: usize = 16;
pub const PATH_MAX: usize = 512;
pub const FILENAME_MAX: usize = 256;
/// Directory levels the kernel walks when it rebuilds a path.
pub const PATH_DEPTH: usize = 32;
pub const COMM_LEN: usize = 16;
pub const MAX_ROLES: u32 = 1024;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The hash the kernel computes over program names and argument words.
pub fn word_hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// `word_hash(b"runpy")`: `python3 -m runpy MODULE` runs MODULE.
pub const RUNPY_HASH: u64 = 0x797f_b36a_3311_93b5;

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_CONNECT: u32 = 2;
pub const EVENT_SENDMSG: u32 = 3;
pub const EVENT_TAG_FAILURE: u32 = 4;
// Tamper resistance and protected files (30-39)
pub const EVENT_TAMPER: u32 = 30;
pub const EVENT_FILE_OPEN: u32 = 31;

pub const ALLOW: u32 = 0;
pub const DENY: u32 = 1;

pub const REASON_NONE: u32 = 0;
pub const REASON_RULE: u32 = 1;
pub const REASON_ARGV_TOO_LONG: u32 = 2;
pub const REASON_MATCH_OVERFLOW: u32 = 3;
pub const REASON_QUARANTINE: u32 = 4;
pub const REASON_ROLE_GONE: u32 = 5;
/// The session was revoked through the API.
pub const REASON_REVOKED: u32 = 40;
/// A security block covers the session.
pub const REASON_SECURITY_BLOCK: u32 = 41;
// guard (30-39)
pub const REASON_TAMPER_BPF: u32 = 30;
pub const REASON_TAMPER_SIGNAL: u32 = 31;
pub const REASON_TAMPER_PTRACE: u32 = 32;
pub const REASON_TAMPER_KERNEL_CODE: u32 = 33;
pub const REASON_TAMPER_CONTROL_FS: u32 = 34;
pub const REASON_PROTECTED_FILE: u32 = 35;
pub const REASON_FILELESS: u32 = 10;
pub const REASON_LOADER: u32 = 11;
/// An approval rule names the exec and the session holds no grant for it.
pub const REASON_APPROVAL_REQUIRED: u32 = 12;
/// A rate limit of the session is spent.
pub const REASON_RATE_LIMITED: u32 = 13;
/// The command's time window is closed now.
pub const REASON_OUTSIDE_TIME_WINDOW: u32 = 14;
/// The role denies session-written files and the session wrote the executed
/// file (or its written set overflowed and it can no longer tell).
pub const REASON_SESSION_WRITTEN: u32 = 15;
pub const REASON_TAMPER_AIRLOCK_FILES: u32 = 36;

pub const BACKEND_COMPAT: u32 = 1;
pub const BACKEND_LSM: u32 = 2;

pub const VIA_EXECUTABLE: u32 = 1;
pub const VIA_ARGV0: u32 = 2;
pub const VIA_SCRIPT: u32 = 3;
pub const VIA_IDENTITY: u32 = 4;
// guard (12-15): compat, the call ran and the offender was killed on its way back.
pub const FLAG_KILLED_AFTER: u32 = 1 << 12;
pub const VIA_INTERPRETER: u32 = 5;
pub const VIA_LOADED: u32 = 6;

pub const FLAG_ARGV_TRUNCATED: u32 = 1 << 0;
pub const FLAG_PATH_TRUNCATED: u32 = 1 << 1;
pub const FLAG_SCRIPT: u32 = 1 << 2;
pub const FLAG_EARLY_CHECK: u32 = 1 << 3;
pub const FLAG_FILELESS: u32 = 1 << 4;
pub const FLAG_LOADER: u32 = 1 << 5;
pub const FLAG_INTERPRETER: u32 = 1 << 6;
pub const FLAG_IDENTITY: u32 = 1 << 7;
/// The content is already known as the protected program the file's own name is.
pub const FLAG_CONTENT_IS_NAME: u32 = 1 << 11;
/// An approval rule named the exec and a grant let it run.
pub const FLAG_GRANTED: u32 = 1 << 10;

pub const ROLE_DENY_ALL: u32 = 1 << 0;
pub const ROLE_ALLOW_FILELESS: u32 = 1 << 1;
pub const ROLE_ALLOW_LOADER: u32 = 1 << 2;

/// Prefix bits of an egress key that are always matched in full: set id and port.
pub const EGRESS_FIXED_BITS: u32 = 48;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcTag {
    pub session_id: u64,
    pub role_slot: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSet {
    pub set_id: u32,
    pub flags: u32,
    /// The rule set of the role's `approval_commands`; 0: none.
    pub approval_set_id: u32,
    /// The rule set of the role's rate limits and time windows; 0: none.
    pub limit_set_id: u32,
    /// The limit on every exec of a session (pattern `*`); 0: none.
    pub every_exec_rule: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramKey {
    pub set_id: u32,
    pub pad: u32,
    pub name_hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramValue {
    pub root_node: u32,
    pub block_all_rule: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrieKey {
    pub node: u32,
    pub pad: u32,
    pub word_hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrieValue {
    pub next_node: u32,
    pub rule_id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Egress4Key {
    pub prefixlen: u32,
    pub set_id: u32,
    pub port: [u8; 2],
    pub addr: [u8; 4],
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Egress6Key {
    pub prefixlen: u32,
    pub set_id: u32,
    pub port: [u8; 2],
    pub addr: [u8; 16],
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressValue {
    pub rule_id: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub decisions: u64,
    pub denies: u64,
    pub ringbuf_drops: u64,
    pub tag_failures: u64,
    pub tamper: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub backend: u32,
    pub policy_generation: u32,
    pub daemon_tgid: u32,
    pub pad: u32,
    pub daemon_pgid: u32,
    pub guard_pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub decision: u32,
    pub reason: u32,
    pub rule_id: u32,
    pub session_id: u64,
    pub ktime_ns: u64,
    pub role_slot: u32,
    pub policy_generation: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub backend: u32,
    pub flags: u32,
    pub pad: u32,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub match_via: u32,
    pub argc: u32,
    pub argv_len: u32,
    pub filename_len: u32,
    pub exe_len: u32,
    pub cwd_len: u32,
    pub argv_hash: u64,
    pub exe_identity: u64,
    pub grant_request: u64,
    pub filename: [u8; FILENAME_MAX],
    pub exe: [u8; PATH_MAX],
    pub cwd: [u8; PATH_MAX],
    pub argv: [u8; ARGV_MAX],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NetEvent {
    pub hdr: EventHeader,
    pub family: u16,
    pub port: u16,
    pub protocol: u32,
    pub addr: [u8; 16],
}

// What an executable is, beyond its name.
pub const HEAD_LEN: usize = 256;
pub const IDENTITY_NAMES: usize = 4;
pub const OPERAND_WORDS: usize = 8;

pub const IDKEY_NAME: u32 = 1;
pub const IDKEY_CONTENT: u32 = 2;
pub const IDKEY_SIZE: u32 = 3;

pub const ID_INTERPRETER: u32 = 1 << 0;
pub const ID_LOADER: u32 = 1 << 1;
pub const ID_PROGRAM: u32 = 1 << 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub kind: u32,
    pub pad: u32,
    pub hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityValue {
    pub flags: u32,
    pub nnames: u32,
    pub names: [u64; IDENTITY_NAMES],
}

// Unix socket rules (broker escapes).
pub const EVENT_UNIX_CONNECT: u32 = 20;
pub const EVENT_UNIX_SENDMSG: u32 = 21;
pub const REASON_UNIX_PATH_UNCLEAR: u32 = 20;
pub const FLAG_UNIX_RESOLVED: u32 = 1 << 8;
pub const FLAG_UNIX_ABSTRACT: u32 = 1 << 9;
pub const ROLE_UNIX_RULES: u32 = 1 << 4;
// Per-role egress default.
pub const ROLE_EGRESS_DEFAULT_DENY: u32 = 1 << 5;
pub const REASON_EGRESS_DEFAULT: u32 = 21;
pub const UNIX_PATH_MAX: usize = 128;
/// Prefix bits of a Unix key that are always matched in full: the set id.
pub const UNIX_FIXED_BITS: u32 = 32;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixKey {
    pub prefixlen: u32,
    pub set_id: u32,
    pub path: [u8; UNIX_PATH_MAX],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnixEvent {
    pub hdr: EventHeader,
    pub path_len: u32,
    pub sock_type: u32,
    pub path: [u8; UNIX_PATH_MAX],
}

// What a governed process tried (GuardEvent::op).
pub const OP_BPF: u32 = 1;
pub const OP_KILL: u32 = 2;
pub const OP_TKILL: u32 = 3;
pub const OP_TGKILL: u32 = 4;
pub const OP_SIGQUEUE: u32 = 5;
pub const OP_PIDFD_SIGNAL: u32 = 6;
pub const OP_SIGIO: u32 = 7;
pub const OP_PTRACE: u32 = 8;
pub const OP_VM_WRITEV: u32 = 9;
pub const OP_VM_READV: u32 = 10;
pub const OP_PIDFD_GETFD: u32 = 11;
pub const OP_INIT_MODULE: u32 = 12;
pub const OP_FINIT_MODULE: u32 = 13;
pub const OP_MODULE_REQUEST: u32 = 14;
pub const OP_KEXEC: u32 = 15;
pub const OP_KERNEL_READ_FILE: u32 = 16;
pub const OP_OPEN: u32 = 17;
pub const OP_UNLINK: u32 = 18;
pub const OP_RENAME: u32 = 19;
pub const OP_RMDIR: u32 = 20;
pub const OP_UMOUNT: u32 = 21;
pub const OP_CREATE: u32 = 22;
pub const OP_LINK: u32 = 23;
pub const OP_TRUNCATE: u32 = 24;
/// The protected_inodes class of Airlock's own files and directories.
pub const CLASS_SELF: u64 = 1;

/// A protected file's identity (kernel device encoding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub dev: u32,
    pub pad: u32,
    pub ino: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InodeValue {
    pub class_hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileRuleKey {
    pub set_id: u32,
    pub pad: u32,
    pub class_hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileRuleValue {
    pub rule_id: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileAllowKey {
    pub set_id: u32,
    pub pad: u32,
    pub class_hash: u64,
    pub name_hash: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GuardEvent {
    pub hdr: EventHeader,
    pub op: u32,
    pub target: u32,
    pub arg: u64,
    pub dev: u32,
    pub path_len: u32,
    pub ino: u64,
    pub exe_uid: u32,
    pub name_len: u32,
    pub name: [u8; FILENAME_MAX],
    pub path: [u8; PATH_MAX],
}

/// Types that are plain old data: any byte pattern of their size is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs made of integers and byte arrays.
pub unsafe trait Pod: Copy + 'static {}

unsafe impl Pod for ProcTag {}
unsafe impl Pod for RoleSet {}
unsafe impl Pod for ProgramKey {}
unsafe impl Pod for ProgramValue {}
unsafe impl Pod for TrieKey {}
unsafe impl Pod for TrieValue {}
unsafe impl Pod for Egress4Key {}
unsafe impl Pod for Egress6Key {}
unsafe impl Pod for EgressValue {}
unsafe impl Pod for Counters {}
unsafe impl Pod for Config {}
unsafe impl Pod for EventHeader {}
unsafe impl Pod for ExecEvent {}
unsafe impl Pod for NetEvent {}
unsafe impl Pod for InodeKey {}
unsafe impl Pod for InodeValue {}
unsafe impl Pod for FileRuleKey {}
unsafe impl Pod for FileRuleValue {}
unsafe impl Pod for FileAllowKey {}
unsafe impl Pod for GuardEvent {}
unsafe impl Pod for IdentityKey {}
unsafe impl Pod for IdentityValue {}
unsafe impl Pod for UnixKey {}
unsafe impl Pod for UnixEvent {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}

/// The bytes of a value, as a map update wants them.
pub fn as_bytes<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod (repr(C), no pointers); reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Reads a value from the start of `bytes`; `None` when there are too few.
/// Shorter buffers are accepted for variable-length events: missing tail bytes read as zero.
pub fn from_bytes<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod, the source holds size_of::<T>() bytes, and read_unaligned
    // copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Variable-length records (their tails may be cut short, and missing bytes
/// read as zero) read one after another into one buffer. An exec event is
/// kilobytes: a fresh allocation that large per event made glibc merge all its
/// freed small blocks each time, about a microsecond of the event thread.
pub struct PrefixBuffer<T: Pod> {
    value: Box<T>,
    /// How many bytes from the start the last record wrote (the rest are zero).
    written: usize,
}

impl<T: Pod> Default for PrefixBuffer<T> {
    fn default() -> Self {
        // SAFETY: T is Pod, so all zeros is a valid T.
        PrefixBuffer { value: unsafe { Box::<T>::new_zeroed().assume_init() }, written: 0 }
    }
}

impl<T: Pod> PrefixBuffer<T> {
    /// `bytes` read as a T, zero past their end; `None` when they are longer than one.
    pub fn read(&mut self, bytes: &[u8]) -> Option<&T> {
        let size = std::mem::size_of::<T>();
        if bytes.len() > size {
            return None;
        }
        // SAFETY: T is Pod, so any byte pattern written over it is a valid T,
        // and the slice covers exactly its size_of::<T>() bytes.
        let raw = unsafe { std::slice::from_raw_parts_mut((&mut *self.value as *mut T).cast::<u8>(), size) };
        raw[..bytes.len()].copy_from_slice(bytes);
        if self.written > bytes.len() {
            raw[bytes.len()..self.written].fill(0);
        }
        self.written = bytes.len();
        Some(&*self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_buffer_reads_each_record_alone_zero_past_its_end() {
        let mut buffer = PrefixBuffer::<NetEvent>::default();
        let mut full = NetEvent { port: 443, family: 2, protocol: 6, ..Default::default() };
        full.addr = [0xab; 16];
        let long = buffer.read(as_bytes(&full)).copied().expect("a whole record");
        assert_eq!((long.port, long.addr), (443, [0xab; 16]));
        // A shorter record after it: nothing of the longer one shows through.
        let cut = std::mem::size_of::<NetEvent>() - 16 + 4;
        let mut short = NetEvent { port: 80, family: 2, ..Default::default() };
        short.addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let read = buffer.read(&as_bytes(&short)[..cut]).copied().expect("a cut record");
        assert_eq!((read.port, read.protocol), (80, 0));
        assert_eq!(read.addr, [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(buffer.read(&[0u8; std::mem::size_of::<NetEvent>() + 1]).is_none(), "a record longer than the type is refused");
        assert_eq!(buffer.read(&[]).copied().expect("an empty record").port, 0);
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(word_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(word_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(word_hash(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(word_hash(b"runpy"), RUNPY_HASH);
    }
}

// Approval grants (see struct airlock_grant_key).
pub const GRANT_ONCE: u32 = 1;
pub const GRANT_RULE: u32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub session_id: u64,
    pub kind: u32,
    pub rule_id: u32,
    pub argv_hash: u64,
    pub exe_identity: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantValue {
    /// CLOCK_BOOTTIME nanoseconds.
    pub expires_ns: u64,
    pub request: u64,
}

unsafe impl Pod for GrantKey {}
unsafe impl Pod for GrantValue {}

// Rate limits and time windows (see struct airlock_rule_limit).
pub const LIMIT_CLOSED: u32 = 1 << 0;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleLimit {
    /// period / count; 0: no rate limit.
    pub interval_ns: u64,
    /// period - interval_ns: how far ahead of now the bucket may run.
    pub burst_ns: u64,
    /// [`LIMIT_CLOSED`].
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub session_id: u64,
    pub rule_id: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateValue {
    /// CLOCK_BOOTTIME nanoseconds.
    pub tat_ns: u64,
}

unsafe impl Pod for RuleLimit {}
unsafe impl Pod for RateKey {}
unsafe impl Pod for RateValue {}

// Security blocks (see struct airlock_session_block).
pub const BLOCK_HARD: u32 = 1;
pub const BLOCK_SOFT: u32 = 2;
/// Never in role_sets: the kernel's own mark for a soft-blocked session.
pub const ROLE_SOFT_BLOCKED: u32 = 1 << 6;
/// Role flag: the role's sessions cannot execute a file they wrote (`exec.deny_session_written`).
pub const ROLE_DENY_SESSION_WRITTEN: u32 = 1 << 7;

// Raw and packet sockets (see struct airlock_raw_socket_event).
pub const EVENT_RAW_SOCKET: u32 = 22;
pub const REASON_RAW_SOCKET: u32 = 22;
/// Role flag: every active policy of the role says `egress.raw_sockets: "allow"`.
pub const ROLE_ALLOW_RAW_SOCKETS: u32 = 1 << 8;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawSocketEvent {
    pub hdr: EventHeader,
    pub family: u32,
    /// Without SOCK_NONBLOCK / SOCK_CLOEXEC.
    pub sock_type: u32,
    pub protocol: u32,
    pub pad: u32,
}

unsafe impl Pod for RawSocketEvent {}

/// A file a strict session opened for writing (map `session_written`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WrittenKey {
    pub session_id: u64,
    pub dev: u64,
    pub ino: u64,
}

unsafe impl Pod for WrittenKey {}

/// Capacity of `session_written`; a session whose file it cannot take executes nothing more.
pub const WRITTEN_MAX: u32 = 131072;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionBlock {
    /// [`BLOCK_HARD`] or [`BLOCK_SOFT`].
    pub kind: u32,
    pub block_number: u32,
}

unsafe impl Pod for SessionBlock {}
