/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map the programs share. Sizes marked "runtime" are set by the daemon before load. */
#ifndef AIRLOCK_MAPS_H
#define AIRLOCK_MAPS_H

#include "airlock_abi.h"

/*
 * tgid -> session. Not preallocated and sized by the daemon to pid_max, so it
 * can hold every process the kernel can have: "full" cannot happen, and an
 * allocation failure falls back to the quarantine map (fail closed).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct airlock_proc_tag);
} tagged_procs SEC(".maps");

/* Preallocated, so an insert cannot fail for want of memory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} quarantine SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIRLOCK_MAX_ROLES);
	__type(key, __u32);
	__type(value, struct airlock_role_set);
} role_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_program_key);
	__type(value, struct airlock_program_value);
} programs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_trie_key);
	__type(value, struct airlock_trie_value);
} trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 131072); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_egress4_key);
	__type(value, struct airlock_egress_value);
} egress4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 131072); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_egress6_key);
	__type(value, struct airlock_egress_value);
} egress6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct airlock_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct airlock_config);
} airlock_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* runtime */
} events SEC(".maps");

/* Approval grants (struct airlock_grant_key); the daemon bounds them per session. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_grant_key);
	__type(value, struct airlock_grant_value);
} approval_grants SEC(".maps");

/* Rate limits and time windows, by rule id: written with the policy. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct airlock_rule_limit);
} rule_limits SEC(".maps");

/*
 * Token buckets, per (session, rule). LRU: the least recently used bucket
 * goes when the map is full, and comes back full: 65536 buckets are far
 * more than the live sessions times their limit rules.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct airlock_rate_key);
	__type(value, struct airlock_rate_value);
} rate_state SEC(".maps");

/* Files strict sessions wrote (struct airlock_written_key). Not preallocated:
 * only sessions of roles with exec.deny_session_written fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIRLOCK_WRITTEN_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_written_key);
	__type(value, __u32);
} session_written SEC(".maps");

/* Sessions whose written set could not take a file: they execute nothing.
 * Preallocated, so the mark itself cannot fail for want of memory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} session_written_full SEC(".maps");

/* Hashed argument words of one exec, and the matcher's result. */
struct exec_words {
	__u64 word_hash[AIRLOCK_MAX_WORDS];
	__u32 nwords;
	__u32 too_long;
	__u32 rule_id;
	__u32 pad;
	/* Basename hash and argv offset of each word. */
	__u64 base_hash[AIRLOCK_MAX_WORDS];
	__u16 off[AIRLOCK_MAX_WORDS];
};

/* A NUL-terminated name (a path component or execve's filename), sized for the hashers. */
struct name_buf {
	char buf[256];
};

/* A path's components, leaf first, sized like the event's path fields. */
struct path_buf {
	char buf[AIRLOCK_PATH_MAX];
};

/* Per-CPU working memory of the exec matcher: too large for the BPF stack. */
struct exec_scratch {
	struct airlock_exec_event evt;
	struct exec_words words;
	__u64 argv0_base_hash;
	/* The module an interpreter's -m runs (find_module). */
	struct {
		__u64 top;
		__u64 full;
		__u32 args;
		__u32 pad;
	} module;
	/* The executed file's first bytes (bprm->buf) and fingerprint. */
	__u8 head[AIRLOCK_HEAD_LEN];
	__u64 content_hash;
	/* The ONCE grant's argument hash (args_hash). */
	__u64 argv_hash;
	struct airlock_grant_key grant_key;
	/* The executed file, as session_written knows it. */
	struct airlock_written_key written_key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} exec_scratch SEC(".maps");

/*
 * LSM backend only: argv as execve() was called, per thread, for the early
 * check in bprm_check_security. The re-check at sched_process_exec reads the
 * new image's own copy, so a thread that rewrites argv afterwards gains nothing.
 */
struct early_argv {
	__u32 len; /* at most AIRLOCK_ARGV_MAX */
	__u32 truncated;
	/* Twice the used size: any offset below AIRLOCK_ARGV_MAX plus a read of
	 * AIRLOCK_ARGV_MAX bytes stays inside, which is what the verifier needs. */
	char buf[2 * AIRLOCK_ARGV_MAX];
};

/* One per thread inside execve; an evicted entry fails closed (argv unknown). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct early_argv);
} early_argv SEC(".maps");

/* Egress.allow entries, for roles whose egress default is deny (same keys as egress4/6). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 131072); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_egress4_key);
	__type(value, struct airlock_egress_value);
} egress_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 131072); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_egress6_key);
	__type(value, struct airlock_egress_value);
} egress_allow6 SEC(".maps");

/* Names and contents of protected programs, interpreters and loaders. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_identity_key);
	__type(value, struct airlock_identity_value);
} exec_identity SEC(".maps");
/* Unix socket rules, per rule set (see struct airlock_unix_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384); /* runtime */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_unix_key);
	__type(value, struct airlock_egress_value);
} unix_rules SEC(".maps");

/* Per-CPU working memory of the Unix socket hooks (too large for the stack). */
struct unix_scratch {
	struct path_buf walk;          /* a dentry walk, components leaf first */
	char raw[2 * AIRLOCK_UNIX_PATH_MAX]; /* the path before canonical form */
	struct airlock_unix_key key;
	char pad[AIRLOCK_UNIX_PATH_MAX]; /* room for masked writes past key.path */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unix_scratch);
} unix_scratch SEC(".maps");

/* Count of quarantined processes: the common case (zero) skips the lookup. */
volatile __u32 quarantined_count;

/*
 * Sessions revoked through the API -> 1. Every hook that judges
 * a governed process denies a revoked session's processes outright, so a
 * process the daemon has not killed yet can neither exec nor connect.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32);
} revoked_sessions SEC(".maps");

/* Sessions under a security block (struct airlock_session_block). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct airlock_session_block);
} session_blocks SEC(".maps");

/* Tamper resistance and protected files */

/* The daemon's thread ids (compat: signals and ptrace name a thread, not a process). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} guarded_tids SEC(".maps");

/*
 * Compat: governed processes that sent the daemon a signal. Written before the
 * signal is sent, so the daemon can tell a governed sender's SIGTERM from the
 * operator's even after the sender was killed and its tag is gone.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} tamper_senders SEC(".maps");

/* Protected files by identity, resolved by the daemon in the session users' homes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_inode_key);
	__type(value, struct airlock_inode_value);
} protected_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_file_rule_key);
	__type(value, struct airlock_file_rule_value);
} file_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct airlock_file_allow_key);
	__type(value, __u32);
} file_allow SEC(".maps");

/*
 * The governed process that created a socket whose packets are judged one by
 * one (packet.bpf.h). Kept with the socket, so it goes when the socket does.
 * cgroup_skb/egress cannot always ask who is sending (the current task helpers
 * reach cgroup_skb programs only in newer kernels than Debian's 6.1), and the
 * creator's session is the one the socket answers to.
 */
struct socket_owner {
	struct airlock_proc_tag tag;
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	char comm[AIRLOCK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct socket_owner);
} socket_owners SEC(".maps");

/* Working memory of the guard hooks: the event is too large for the BPF stack. */
struct guard_scratch {
	struct airlock_guard_event evt;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_scratch);
} guard_scratch SEC(".maps");

#endif
