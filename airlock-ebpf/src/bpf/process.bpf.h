/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Session membership follows the process tree. The fork tracepoint fires in the
 * parent after the child is fully built and before it is woken, so the child
 * is tagged before it can run a single instruction: double forks, setsid,
 * nohup and re-parenting to init change nothing.
 */
#ifndef AIRLOCK_PROCESS_BPF_H
#define AIRLOCK_PROCESS_BPF_H

#include "common.h"

static __always_inline void report_tag_failure(const struct airlock_proc_tag *tag, __u32 child_tgid)
{
	struct airlock_net_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	struct airlock_counters *c = counters_get();
	if (c)
		c->tag_failures++;
	if (!e) {
		account(AIRLOCK_DENY, -1);
		return;
	}
	header_fill(&e->hdr, AIRLOCK_EVENT_TAG_FAILURE, tag);
	e->hdr.decision = AIRLOCK_DENY;
	e->hdr.reason = AIRLOCK_REASON_QUARANTINE;
	e->hdr.ppid = e->hdr.tgid;
	e->hdr.tgid = child_tgid;
	e->family = 0;
	e->port = 0;
	e->protocol = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	/* Rare and urgent: wake the daemon now. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	account(AIRLOCK_DENY, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(airlock_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid;
	__u32 child_tgid = child->tgid;
	if (child_tgid == parent_tgid)
		return 0; /* a new thread: the process is already tagged */

	struct airlock_proc_tag tag;
	if (!tag_of(parent_tgid, &tag))
		return 0;
	/* A revoked session's process that still forks dies; its
	 * child stays tagged, so the daemon's kill rounds find it. */
	__u64 session_id = tag.session_id;
	if (bpf_map_lookup_elem(&revoked_sessions, &session_id))
		bpf_send_signal(SIGKILL);
	if (!(tag.flags & TAG_QUARANTINED) &&
	    bpf_map_update_elem(&tagged_procs, &child_tgid, &tag, BPF_ANY) == 0)
		return 0;

	/* Fail closed: the child is governed by deny-all, or the parent dies. */
	__u64 session = tag.session_id;
	if (bpf_map_update_elem(&quarantine, &child_tgid, &session, BPF_NOEXIST) == 0) {
		__sync_fetch_and_add(&quarantined_count, 1);
	} else if (!bpf_map_lookup_elem(&quarantine, &child_tgid)) {
		bpf_send_signal(SIGKILL);
	}
	if (!(tag.flags & TAG_QUARANTINED))
		report_tag_failure(&tag, child_tgid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(airlock_exit, struct task_struct *task)
{
	/* Threads exit one by one; the tag leaves with the last of them. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	__u32 tgid = task->tgid;
	/* A lookup first: most exits are of untagged processes, and a delete takes the bucket lock. */
	if (bpf_map_lookup_elem(&tagged_procs, &tgid))
		bpf_map_delete_elem(&tagged_procs, &tgid);
	if (quarantined_count && bpf_map_delete_elem(&quarantine, &tgid) == 0)
		__sync_fetch_and_add(&quarantined_count, -1);
	return 0;
}

#endif
