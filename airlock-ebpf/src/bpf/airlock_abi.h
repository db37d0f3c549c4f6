/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel ABI of Airlock: every key, value and event that crosses between
 * the eBPF programs and the daemon. This header is the single definition; the
 * Rust mirror lives in airlock-common/src/abi.rs and its tests compare sizes
 * and offsets against the BTF of the compiled object.
 *
 * Fixed-width fields only, explicit padding, no bitfields: the layout must be
 * identical for clang -target bpf and for rustc on x86_64/aarch64.
 */
#ifndef AIRLOCK_ABI_H
#define AIRLOCK_ABI_H

/* Bytes of a process's argument block the kernel inspects and reports. */
#define AIRLOCK_ARGV_MAX 4096
/* Argument words the exec matcher hashes; a longer argv is "too long". */
#define AIRLOCK_MAX_WORDS 64
/* Trie nodes the subsequence matcher follows at once. */
#define AIRLOCK_MAX_ACTIVE 16
/* Bytes of a path (cwd, executable) and of execve's filename reported. */
#define AIRLOCK_PATH_MAX 512
#define AIRLOCK_FILENAME_MAX 256
/* Directory levels the kernel walks when it rebuilds a path. */
#define AIRLOCK_PATH_DEPTH 32
#define AIRLOCK_COMM_LEN 16
/* Roles the kernel knows at once (slots are stable for the daemon's life). */
#define AIRLOCK_MAX_ROLES 1024

/* 64-bit FNV-1a, the hash of program names and argument words. */
#define AIRLOCK_FNV_OFFSET 0xcbf29ce484222325ULL
#define AIRLOCK_FNV_PRIME 0x100000001b3ULL
/* FNV-1a of "runpy": python3 -m runpy MODULE runs MODULE. */
#define AIRLOCK_RUNPY_HASH 0x797fb36a331193b5ULL

enum airlock_event_kind {
	AIRLOCK_EVENT_EXEC = 1,
	AIRLOCK_EVENT_CONNECT = 2,
	AIRLOCK_EVENT_SENDMSG = 3,
	/* A tagged process forked but its child could not be tagged. */
	AIRLOCK_EVENT_TAG_FAILURE = 4,
	/* Tamper resistance and protected files (30-39) */
	/* A governed process reached for Airlock itself or the kernel's code. */
	AIRLOCK_EVENT_TAMPER = 30,
	/* A governed process opened a protected (credential) file. */
	AIRLOCK_EVENT_FILE_OPEN = 31,
	/* Connects and datagrams to Unix sockets (broker escapes). */
	AIRLOCK_EVENT_UNIX_CONNECT = 20,
	AIRLOCK_EVENT_UNIX_SENDMSG = 21,
	/* A raw (SOCK_RAW) or packet (AF_PACKET) socket a governed process tried to create. */
	AIRLOCK_EVENT_RAW_SOCKET = 22,
};

enum airlock_decision {
	AIRLOCK_ALLOW = 0,
	AIRLOCK_DENY = 1,
};

enum airlock_reason {
	AIRLOCK_REASON_NONE = 0,
	/* A policy rule matched; rule_id names it. */
	AIRLOCK_REASON_RULE = 1,
	/* argv was longer than the kernel can inspect and a rule names the program. */
	AIRLOCK_REASON_ARGV_TOO_LONG = 2,
	/* More partial matches than the matcher can follow at once. */
	AIRLOCK_REASON_MATCH_OVERFLOW = 3,
	/* The process's child could not be tagged: fail closed. */
	/* guard (30-39) */
	AIRLOCK_REASON_TAMPER_BPF = 30,        /* the bpf() system call */
	AIRLOCK_REASON_TAMPER_SIGNAL = 31,     /* a signal to the daemon */
	AIRLOCK_REASON_TAMPER_PTRACE = 32,     /* ptrace, its memory, its fds, its /proc files */
	AIRLOCK_REASON_TAMPER_KERNEL_CODE = 33, /* module loading, kexec */
	AIRLOCK_REASON_TAMPER_CONTROL_FS = 34, /* bpffs, cgroupfs writes, kernel.ftrace_enabled */
	AIRLOCK_REASON_PROTECTED_FILE = 35,    /* a protected file, opened by a program the policy does not allow */
	AIRLOCK_REASON_QUARANTINE = 4,
	/* The session's role is no longer in the policy set: fail closed. */
	AIRLOCK_REASON_ROLE_GONE = 5,
	/* The session was revoked through the API: deny everything. */
	AIRLOCK_REASON_REVOKED = 40,
	/* A security block covers the session (session_blocks): a hard block
	 * denies everything, a soft one egress beyond loopback and the allow list. */
	AIRLOCK_REASON_SECURITY_BLOCK = 41,
	/* The executed file has no name on disk (memfd, deleted, O_TMPFILE). */
	AIRLOCK_REASON_FILELESS = 10,
	/* The dynamic loader was run directly. */
	AIRLOCK_REASON_LOADER = 11,
	/* An approval rule (approval_commands) names the command and the session
	 * holds no grant for it; rule_id names the rule. */
	AIRLOCK_REASON_APPROVAL_REQUIRED = 12,
	/* A rate limit (rate_limits) of the session is spent; rule_id names it. */
	AIRLOCK_REASON_RATE_LIMITED = 13,
	/* The command's time window (time_windows) is closed now; rule_id names it. */
	AIRLOCK_REASON_OUTSIDE_TIME_WINDOW = 14,
	/* The role denies session-written files (exec.deny_session_written) and the
	 * session wrote the executed file, or its written set overflowed. */
	AIRLOCK_REASON_SESSION_WRITTEN = 15,
	/* A Unix socket path the kernel cannot put in canonical form (a ".."
	 * component, or longer than AIRLOCK_UNIX_PATH_MAX) for a role with Unix rules. */
	AIRLOCK_REASON_UNIX_PATH_UNCLEAR = 20,
	/* The role's egress default is deny and no egress.allow entry covers the destination. */
	AIRLOCK_REASON_EGRESS_DEFAULT = 21,
	/* A raw or packet socket, and the role does not allow them (egress.raw_sockets). */
	AIRLOCK_REASON_RAW_SOCKET = 22,
	AIRLOCK_REASON_TAMPER_AIRLOCK_FILES = 36, /* a write to Airlock's policy, state or executable */
};

enum airlock_backend {
	AIRLOCK_BACKEND_COMPAT = 1,
	AIRLOCK_BACKEND_LSM = 2,
};

/* How the exec matcher found the program a rule names. */
enum airlock_match_via {
/* guard (12-15) */
/* Compat: the call was not refused; the offender was killed on its way back to user space. */
#define AIRLOCK_FLAG_KILLED_AFTER (1U << 12)
	AIRLOCK_VIA_EXECUTABLE = 1, /* the file the kernel executes, symlinks resolved */
	AIRLOCK_VIA_ARGV0 = 2,      /* basename of argv[0] (multi-call binaries) */
	AIRLOCK_VIA_SCRIPT = 3,     /* the #! script execve was asked to run */
	/* exec identity */
	AIRLOCK_VIA_IDENTITY = 4,    /* the file's content is a protected program's */
	AIRLOCK_VIA_INTERPRETER = 5, /* a program an interpreter was asked to run */
	AIRLOCK_VIA_LOADED = 6,      /* a program the dynamic loader was asked to load */
};

/* Event flags. */
#define AIRLOCK_FLAG_ARGV_TRUNCATED (1U << 0)
#define AIRLOCK_FLAG_PATH_TRUNCATED (1U << 1)
#define AIRLOCK_FLAG_SCRIPT (1U << 2)
#define AIRLOCK_FLAG_EARLY_CHECK (1U << 3) /* LSM: decided before the exec committed */
/* exec identity */
#define AIRLOCK_FLAG_FILELESS (1U << 4)    /* the executed file has no name on disk */
#define AIRLOCK_FLAG_LOADER (1U << 5)      /* the executed file is the dynamic loader */
#define AIRLOCK_FLAG_INTERPRETER (1U << 6) /* the executed file is an interpreter */
#define AIRLOCK_FLAG_IDENTITY (1U << 7)    /* the content is a protected program's */
/* The content is already known as the protected program the file's own name is:
 * reading the file would teach the daemon nothing. */
#define AIRLOCK_FLAG_CONTENT_IS_NAME (1U << 11)
/* An approval rule named the exec and a grant let it run (grant_request names it). */
#define AIRLOCK_FLAG_GRANTED (1U << 10)

/* Role flags. */
#define AIRLOCK_ROLE_DENY_ALL (1U << 0)
/* Every policy of the role lets fileless executables / the loader run. */
#define AIRLOCK_ROLE_ALLOW_FILELESS (1U << 1)
#define AIRLOCK_ROLE_ALLOW_LOADER (1U << 2)

/* Unix socket rules. */
/* Event flag: the path is the listening socket's own (LSM, symlinks resolved). */
#define AIRLOCK_FLAG_UNIX_RESOLVED (1U << 8)
/* Event flag: an abstract socket; the path is "@" and the name. */
#define AIRLOCK_FLAG_UNIX_ABSTRACT (1U << 9)
/* Role flag: the role's rule set has Unix socket rules (the hooks judge only then). */
#define AIRLOCK_ROLE_UNIX_RULES (1U << 4)
/* Role flag: egress is denied unless an egress.allow entry covers it. */
#define AIRLOCK_ROLE_EGRESS_DEFAULT_DENY (1U << 5)
/* Never in role_sets: role_set_of's answer for a session under a soft security block. */
#define AIRLOCK_ROLE_SOFT_BLOCKED (1U << 6)
/* Role flag: the role's sessions cannot execute a file they wrote (exec.deny_session_written). */
#define AIRLOCK_ROLE_DENY_SESSION_WRITTEN (1U << 7)
/* Role flag: every active policy of the role says egress.raw_sockets "allow". */
#define AIRLOCK_ROLE_ALLOW_RAW_SOCKETS (1U << 8)
/* Bytes of a Unix socket path the kernel matches and reports. */
#define AIRLOCK_UNIX_PATH_MAX 128

/* tagged_procs: tgid -> the session the process belongs to. */
struct airlock_proc_tag {
	__u64 session_id;
	__u32 role_slot;
	__u32 flags;
};

/*
 * session_written: the regular files a session of a strict role opened for
 * writing, by (session, device, inode). Not LRU: an eviction would let the
 * session run what it wrote. When the map is full, the session is put in
 * session_written_full and runs no file at all (fail closed).
 */
struct airlock_written_key {
	__u64 session_id;
	__u64 dev;
	__u64 ino;
};
#define AIRLOCK_WRITTEN_MAX 131072

/* role_sets: role slot -> the compiled rule set now in force for that role. */
struct airlock_role_set {
	__u32 set_id; /* 0: the role has no rules */
	__u32 flags;
	/* The rule set of the role's approval_commands (same tables, own ids); 0: none. */
	__u32 approval_set_id;
	/* The rule set of the role's rate limits and time windows (rule_limits
	 * says which a rule is); 0: none. */
	__u32 limit_set_id;
	/* The limit on every exec of a session (pattern "*"); 0: none. */
	__u32 every_exec_rule;
	__u32 pad;
};

/* programs: (rule set, hash of a program name) -> root of its rule trie. */
struct airlock_program_key {
	__u32 set_id;
	__u32 pad;
	__u64 name_hash;
};

struct airlock_program_value {
	__u32 root_node;
	/* Non-zero: the program is blocked whatever its arguments. */
	__u32 block_all_rule;
};

/* trie: (node, hash of an argument word) -> next node / rule that ends here. */
struct airlock_trie_key {
	__u32 node;
	__u32 pad;
	__u64 word_hash;
};

struct airlock_trie_value {
	__u32 next_node;
	__u32 rule_id; /* non-zero: a blocked command ends at this word */
};

/*
 * Egress LPM keys: set id and destination port (network order; 0 = any port)
 * are always matched in full, the address by prefix. The kernel looks up the
 * exact port first, then port 0.
 */
struct airlock_egress4_key {
	__u32 prefixlen; /* 48 + CIDR length */
	__u32 set_id;
	__u8 port[2];
	__u8 addr[4];
	__u8 pad[2];
};

struct airlock_egress6_key {
	__u32 prefixlen; /* 48 + CIDR length */
	__u32 set_id;
	__u8 port[2];
	__u8 addr[16];
	__u8 pad[2];
};

struct airlock_egress_value {
	__u32 rule_id;
	__u32 pad;
};

/* Counters, one per CPU, summed by the daemon. */
struct airlock_counters {
	__u64 decisions;
	__u64 denies;
	__u64 ringbuf_drops;
	__u64 tag_failures;
	/* Tamper attempts seen (refused on LSM, killed on compat) */
	__u64 tamper;
};

/* Run-time switches the daemon writes before attaching. */
struct airlock_config {
	__u32 backend;
	__u32 policy_generation;
	__u32 daemon_tgid;
	__u32 pad;
	/* The daemon's process group, for kill(0) and kill(-pgrp) on compat */
	__u32 daemon_pgid;
	__u32 guard_pad;
};

struct airlock_event_header {
	__u32 kind;
	__u32 decision;
	__u32 reason;
	__u32 rule_id;
	__u64 session_id;
	__u64 ktime_ns;
	__u32 role_slot;
	__u32 policy_generation;
	__u32 pid;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 backend;
	__u32 flags;
	__u32 pad;
	char comm[AIRLOCK_COMM_LEN];
};

/*
 * Paths are sent as their components from the leaf up, each ending in NUL
 * ("terraform\0bin\0usr\0"); the daemon reverses them. The kernel walks them
 * without string reversal, which the verifier accepts easily.
 */
struct airlock_exec_event {
	struct airlock_event_header hdr;
	__u32 match_via;
	__u32 argc;
	__u32 argv_len;
	__u32 filename_len;
	__u32 exe_len;
	__u32 cwd_len;
	/* Approval rules only: what a one-shot grant is bound to (exec.bpf.h,
	 * grant_binding); 0 on other execs. */
	__u64 argv_hash;
	__u64 exe_identity;
	/* AIRLOCK_FLAG_GRANTED: the grant's request number. */
	__u64 grant_request;
	char filename[AIRLOCK_FILENAME_MAX];
	char exe[AIRLOCK_PATH_MAX];
	char cwd[AIRLOCK_PATH_MAX];
	/* Variable length: only argv_len bytes are sent. */
	char argv[AIRLOCK_ARGV_MAX];
};

struct airlock_net_event {
	struct airlock_event_header hdr;
	__u16 family; /* AF_INET / AF_INET6 */
	__u16 port;   /* host order */
	__u32 protocol;
	__u8 addr[16];
};

/*
 * What an executable is, not what it is called.
 *
 * The kernel fingerprints the first AIRLOCK_HEAD_LEN bytes of every file it
 * executes (the kernel's own bprm->buf, zero-padded) together with the file's
 * size; the daemon computes the same fingerprint for the protected programs,
 * interpreters and loaders it finds and fills exec_identity. For an ELF64
 * little-endian file only the header and program header fields the loader
 * uses are hashed (see airlock-common/src/identity.rs for the exact bytes).
 */
#define AIRLOCK_HEAD_LEN 256 /* BINPRM_BUF_SIZE */
#define AIRLOCK_IDENTITY_NAMES 4
/* Argument words after argv[0] an interpreter's or loader's operands are looked for in. */
#define AIRLOCK_OPERAND_WORDS 8

enum airlock_identity_key_kind {
	AIRLOCK_IDKEY_NAME = 1,    /* hash: FNV-1a of a file name */
	AIRLOCK_IDKEY_CONTENT = 2, /* hash: the content fingerprint */
	AIRLOCK_IDKEY_SIZE = 3,    /* hash: a file size some CONTENT entry has (value unused) */
};

/* What a name or content is. */
#define AIRLOCK_ID_INTERPRETER (1U << 0) /* runs the program its operands name */
#define AIRLOCK_ID_LOADER (1U << 1)      /* the dynamic loader */
#define AIRLOCK_ID_PROGRAM (1U << 2)     /* a protected program: names[] */

struct airlock_identity_key {
	__u32 kind;
	__u32 pad;
	__u64 hash;
};

struct airlock_identity_value {
	__u32 flags;
	__u32 nnames;
	/* Program-name hashes this content is (several when identical binaries
	 * carry several protected names); unused slots are 0. */
	__u64 names[AIRLOCK_IDENTITY_NAMES];
};

/* Unix socket rules. */

/*
 * unix_rules LPM key: the set id is matched in full, the path by prefix. An
 * exact path rule includes its terminating NUL in the prefix; a prefix rule
 * ("/tmp/tmux-*") does not. Lookups use the full length.
 */
struct airlock_unix_key {
	__u32 prefixlen; /* 32 + 8 * bytes of path matched */
	__u32 set_id;
	char path[AIRLOCK_UNIX_PATH_MAX];
};

struct airlock_unix_event {
	struct airlock_event_header hdr;
	__u32 path_len;
	__u32 sock_type; /* SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET; 0 unknown */
	char path[AIRLOCK_UNIX_PATH_MAX];
};

/*
 * A raw or packet socket refused (the AF_*, SOCK_* and protocol numbers of
 * socket(2)). Compat refuses inet raw sockets at creation; an AF_PACKET
 * socket there is created and its process killed (AIRLOCK_FLAG_KILLED_AFTER).
 */
struct airlock_raw_socket_event {
	struct airlock_event_header hdr;
	__u32 family;
	__u32 sock_type; /* without SOCK_NONBLOCK / SOCK_CLOEXEC */
	__u32 protocol;
	__u32 pad;
};

/* What a governed process tried (airlock_guard_event.op). */
enum airlock_guard_op {
	AIRLOCK_OP_BPF = 1,
	AIRLOCK_OP_KILL = 2,
	AIRLOCK_OP_TKILL = 3,
	AIRLOCK_OP_TGKILL = 4,
	AIRLOCK_OP_SIGQUEUE = 5,
	AIRLOCK_OP_PIDFD_SIGNAL = 6,
	AIRLOCK_OP_SIGIO = 7,
	AIRLOCK_OP_PTRACE = 8,
	AIRLOCK_OP_VM_WRITEV = 9,
	AIRLOCK_OP_VM_READV = 10,
	AIRLOCK_OP_PIDFD_GETFD = 11,
	AIRLOCK_OP_INIT_MODULE = 12,
	AIRLOCK_OP_FINIT_MODULE = 13,
	AIRLOCK_OP_MODULE_REQUEST = 14,
	AIRLOCK_OP_KEXEC = 15,
	AIRLOCK_OP_KERNEL_READ_FILE = 16,
	AIRLOCK_OP_OPEN = 17,
	AIRLOCK_OP_UNLINK = 18,
	AIRLOCK_OP_RENAME = 19,
	AIRLOCK_OP_RMDIR = 20,
	AIRLOCK_OP_UMOUNT = 21,
	AIRLOCK_OP_CREATE = 22,
	AIRLOCK_OP_LINK = 23,
	AIRLOCK_OP_TRUNCATE = 24,
};

/*
 * Protected files. The daemon resolves each protected pattern in the
 * homes of the session users to (device, inode); the kernel matches opens by
 * that identity, so hard links, renames, bind mounts and path aliases do not
 * hide a file.
 */
struct airlock_inode_key {
	__u32 dev; /* the superblock's s_dev (kernel encoding: major << 20 | minor) */
	__u32 pad;
	__u64 ino;
};

/*
 * protected_inodes class of Airlock's own files and directories (the policy
 * and state directories, the daemon's executable): readable, never written,
 * created in, renamed or removed by a governed process.
 */
#define AIRLOCK_CLASS_SELF 1ULL

/* protected_inodes value: which pattern ("class") the file belongs to. */
struct airlock_inode_value {
	__u64 class_hash; /* FNV-1a of the pattern text, e.g. "~/.aws/credentials" */
};

/* file_rules: (rule set, class) -> the rule that protects the class in that set. */
struct airlock_file_rule_key {
	__u32 set_id;
	__u32 pad;
	__u64 class_hash;
};

struct airlock_file_rule_value {
	__u32 rule_id;
	__u32 pad;
};

/* file_allow: (rule set, class, program name hash) present = that program may open it. */
struct airlock_file_allow_key {
	__u32 set_id;
	__u32 pad;
	__u64 class_hash;
	__u64 name_hash;
};

struct airlock_guard_event {
	struct airlock_event_header hdr;
	__u32 op;      /* enum airlock_guard_op */
	__u32 target;  /* the pid (or tid) a signal, ptrace or fd grab aimed at; else 0 */
	__u64 arg;     /* bpf command, signal, ptrace request, kernel_read_file id, open flags */
	__u32 dev;     /* file events: the file's identity */
	__u32 path_len;
	__u64 ino;
	__u32 exe_uid; /* owner of the opener's executable */
	__u32 name_len;
	/* The opener's executable name, or the module a request named. */
	char name[AIRLOCK_FILENAME_MAX];
	/* File events: the file's path, components leaf first. */
	char path[AIRLOCK_PATH_MAX];
};

/*
 * Approval grants. A person approved a command an approval rule held; the
 * daemon writes the grant, the exec hooks honour it.
 * - ONCE: the exact arguments (argv_hash) of the same program (exe_identity)
 *   in the session, one exec: sched_process_exec deletes it, and of two execs
 *   racing for it only the one whose delete succeeds runs.
 * - RULE: every command the approval rule (rule_id) matches in the session,
 *   until expires_ns.
 * For a program run directly, argv_hash covers all of argv and exe_identity
 * is FNV-1a over the file's device, inode number and size; for a #! script,
 * argv_hash covers its arguments and exe_identity is the FNV-1a of the
 * script's path as execve was given it (exec.bpf.h, grant_binding).
 */
enum airlock_grant_kind {
	AIRLOCK_GRANT_ONCE = 1,
	AIRLOCK_GRANT_RULE = 2,
};

struct airlock_grant_key {
	__u64 session_id;
	__u32 kind;
	__u32 rule_id;      /* RULE; 0 for ONCE */
	__u64 argv_hash;    /* ONCE; 0 for RULE */
	__u64 exe_identity; /* ONCE; 0 for RULE */
};

struct airlock_grant_value {
	__u64 expires_ns; /* CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) */
	__u64 request;    /* the approval request's number, echoed in the event */
};

/*
 * Rate limits and time windows. A rule of a role's limit set (or its
 * every_exec_rule) is looked up here by its id.
 * - Rate: a token bucket of `count` tokens refilled at count/period, kept per
 *   (session, rule) as GCRA: the bucket's theoretical arrival time in
 *   rate_state; an exec is admitted while tat - now <= burst_ns, and moves
 *   tat on by interval_ns.
 * - Time window: the daemon sets AIRLOCK_LIMIT_CLOSED at the window's edges,
 *   so no exec reads a clock to decide it.
 */
#define AIRLOCK_LIMIT_CLOSED (1U << 0)

struct airlock_rule_limit {
	__u64 interval_ns; /* period / count; 0: no rate limit */
	__u64 burst_ns;    /* period - interval_ns */
	__u32 flags;       /* AIRLOCK_LIMIT_CLOSED */
	__u32 pad;
};

struct airlock_rate_key {
	__u64 session_id;
	__u32 rule_id;
	__u32 pad;
};

struct airlock_rate_value {
	__u64 tat_ns; /* CLOCK_BOOTTIME */
};

/*
 * Security blocks: session id -> the block the daemon applies to it. The
 * daemon keeps the entries of every live session a block covers, and removes
 * them when the block is lifted or expires.
 */
enum airlock_block_kind {
	AIRLOCK_BLOCK_HARD = 1, /* every exec and connect denied */
	AIRLOCK_BLOCK_SOFT = 2, /* egress only to loopback and the role's allow list */
};

struct airlock_session_block {
	__u32 kind;
	__u32 block_number; /* the daemon's number for the block, for a restart */
};

#endif /* AIRLOCK_ABI_H */
