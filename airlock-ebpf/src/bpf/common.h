/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers every hook family uses: session lookup, counters, event headers. */
#ifndef AIRLOCK_COMMON_H
#define AIRLOCK_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#define SIGKILL 9
#define EPERM 1
#define AF_INET 2
#define AF_INET6 10

/* Internal tag flag: the process is governed by quarantine, not by a session. */
#define TAG_QUARANTINED (1U << 31)

/*
 * What an LSM program returns: 0 or -EPERM, literal constants the verifier can
 * bound. (A refusal by an earlier BPF program on the hook stays a refusal.) The
 * empty asm keeps clang from folding the choice into arithmetic such as
 * -decision, whose 64-bit range the verifier cannot follow.
 */
static __always_inline int lsm_verdict(int ret)
{
	asm volatile("" : "+r"(ret));
	if (ret)
		return -EPERM;
	return 0;
}

/*
 * Zero, as a value the verifier cannot know (a global in .bss that nothing
 * writes). Kernels before 6.7 verify a bpf_loop callback once, with the loop
 * state as it was at the call: a field that starts as a known constant (a
 * count of 0) makes the branches only later iterations take look unreachable,
 * and the verifier rewrites them away as dead code. On Debian 6.1 that cost the
 * Unix path canonicaliser its "/" handling and would have cost the trie walk
 * its overflow check. Loop state that steers branches starts from this.
 */
volatile __u32 loop_state_zero;

static __always_inline struct airlock_counters *counters_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline struct airlock_config *config_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&airlock_config, &zero);
}

/*
 * The session a process belongs to, or NULL when it is not governed. A process
 * whose tag could not be stored is quarantined: governed by a deny-all rule.
 */
static __always_inline bool tag_of(__u32 tgid, struct airlock_proc_tag *out)
{
	struct airlock_proc_tag *tag = bpf_map_lookup_elem(&tagged_procs, &tgid);
	if (tag) {
		*out = *tag;
		return true;
	}
	if (quarantined_count == 0)
		return false;
	__u64 *session = bpf_map_lookup_elem(&quarantine, &tgid);
	if (!session)
		return false;
	out->session_id = *session;
	out->role_slot = 0;
	out->flags = TAG_QUARANTINED;
	return true;
}

/*
 * The rule set a governed process is judged by. Returns a deny reason when the
 * process must be refused everything (quarantine, or a role that is gone), else
 * AIRLOCK_REASON_NONE with *set_id filled (0: the role has no rules).
 */
static __always_inline __u32 role_set_of(const struct airlock_proc_tag *tag, struct airlock_role_set *out)
{
	out->set_id = 0;
	out->flags = 0;
	out->approval_set_id = 0;
	out->limit_set_id = 0;
	out->every_exec_rule = 0;
	if (tag->flags & TAG_QUARANTINED)
		return AIRLOCK_REASON_QUARANTINE;
	/* A revoked session is refused everything. */
	__u64 session = tag->session_id;
	if (bpf_map_lookup_elem(&revoked_sessions, &session))
		return AIRLOCK_REASON_REVOKED;
	struct airlock_session_block *block = bpf_map_lookup_elem(&session_blocks, &session);
	if (block && block->kind == AIRLOCK_BLOCK_HARD)
		return AIRLOCK_REASON_SECURITY_BLOCK;
	__u32 slot = tag->role_slot;
	struct airlock_role_set *rs = bpf_map_lookup_elem(&role_sets, &slot);
	if (!rs || (rs->flags & AIRLOCK_ROLE_DENY_ALL))
		return AIRLOCK_REASON_ROLE_GONE;
	out->set_id = rs->set_id;
	out->flags = rs->flags;
	out->approval_set_id = rs->approval_set_id;
	out->limit_set_id = rs->limit_set_id;
	out->every_exec_rule = rs->every_exec_rule;
	if (block && block->kind == AIRLOCK_BLOCK_SOFT)
		out->flags |= AIRLOCK_ROLE_SOFT_BLOCKED;
	return AIRLOCK_REASON_NONE;
}

static __always_inline __u32 rule_set_of(const struct airlock_proc_tag *tag, __u32 *set_id)
{
	struct airlock_role_set rs;
	__u32 reason = role_set_of(tag, &rs);
	*set_id = rs.set_id;
	return reason;
}

/* The header fields that do not depend on which task the hook runs in. */
static __always_inline void header_fill_session(struct airlock_event_header *hdr, __u32 kind,
						const struct airlock_proc_tag *tag)
{
	struct airlock_config *cfg = config_get();

	hdr->kind = kind;
	hdr->decision = AIRLOCK_ALLOW;
	hdr->reason = AIRLOCK_REASON_NONE;
	hdr->rule_id = 0;
	hdr->session_id = tag->session_id;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->role_slot = tag->role_slot;
	hdr->policy_generation = cfg ? cfg->policy_generation : 0;
	hdr->ppid = 0;
	hdr->backend = cfg ? cfg->backend : 0;
	hdr->flags = 0;
	hdr->pad = 0;
}

static __always_inline void header_fill(struct airlock_event_header *hdr, __u32 kind,
					const struct airlock_proc_tag *tag)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	header_fill_session(hdr, kind, tag);
	hdr->pid = (__u32)pid_tgid;
	hdr->tgid = pid_tgid >> 32;
	hdr->uid = (__u32)uid_gid;
	hdr->gid = uid_gid >> 32;
	bpf_get_current_comm(hdr->comm, sizeof(hdr->comm));
}

/*
 * Events do not wake the daemon one by one: a wakeup costs the hooked task
 * far more than the decision (measured: ~21 us per governed exec, ~10 us per
 * connect). The daemon drains on a short timer; only a ring filling up wakes
 * it early, so a burst cannot outrun it.
 */
#define EVENTS_WAKEUP_BYTES (512 * 1024)

static __always_inline __u64 events_wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= EVENTS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
										   : BPF_RB_NO_WAKEUP;
}

/* Counts the decision and the event's loss, if the ring buffer was full. */
static __always_inline void account(__u32 decision, long output_err)
{
	struct airlock_counters *c = counters_get();
	if (!c)
		return;
	c->decisions++;
	if (decision == AIRLOCK_DENY)
		c->denies++;
	if (output_err)
		c->ringbuf_drops++;
}

static __always_inline __u64 fnv_step(__u64 h, __u8 byte)
{
	return (h ^ byte) * AIRLOCK_FNV_PRIME;
}

#endif
