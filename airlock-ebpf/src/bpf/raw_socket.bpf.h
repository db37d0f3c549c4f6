/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Raw and packet sockets. A raw IP socket writes its own IP header and an
 * AF_PACKET socket its own frame: neither passes the connect/sendmsg hooks the
 * egress rules are judged in, so a governed process may create them only when
 * every policy of its role says egress.raw_sockets "allow".
 *
 * LSM backend: socket_create refuses them (-EPERM), whatever the family.
 * Compat backend: cgroup/sock_create on the root cgroup2 refuses SOCK_RAW in
 * AF_INET and AF_INET6 (the kernel runs it from inet_create and inet6_create
 * only). What it does not see (AF_PACKET, SOCK_RAW of other families) the
 * socket() tracepoint punishes: the process is killed on its way back to user
 * space (AIRLOCK_FLAG_KILLED_AFTER), the socket is created before it dies.
 *
 * AF_NETLINK's SOCK_RAW is how every netlink socket is opened (the C library
 * reads the interface addresses through one) and reaches no network; AF_UNIX
 * takes SOCK_RAW as SOCK_DGRAM. Neither is a raw socket here.
 */
#ifndef AIRLOCK_RAW_SOCKET_BPF_H
#define AIRLOCK_RAW_SOCKET_BPF_H

#include "common.h"
#include "packet.bpf.h"

#define AF_UNIX 1
#define AF_NETLINK 16
#define AF_PACKET 17

static __always_inline bool raw_socket_kind(__u32 family, __u32 type)
{
	if (family == AF_PACKET)
		return true;
	return (type & SOCK_TYPE_MASK) == SOCK_RAW && family != AF_NETLINK && family != AF_UNIX;
}

/*
 * Decides a raw or packet socket of the current process and reports it.
 * Returns AIRLOCK_ALLOW for an ungoverned process or a role that allows them.
 */
static __always_inline __u32 raw_socket_judge(__u32 family, __u32 type, __u32 protocol, __u32 flags)
{
	struct airlock_proc_tag tag;
	if (!tag_of(bpf_get_current_pid_tgid() >> 32, &tag))
		return AIRLOCK_ALLOW;
	struct airlock_role_set rs;
	__u32 reason = role_set_of(&tag, &rs);
	if (reason == AIRLOCK_REASON_NONE && !(rs.flags & AIRLOCK_ROLE_ALLOW_RAW_SOCKETS))
		reason = AIRLOCK_REASON_RAW_SOCKET;
	__u32 decision = reason ? AIRLOCK_DENY : AIRLOCK_ALLOW;

	struct airlock_raw_socket_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		account(decision, -1);
		return decision;
	}
	header_fill(&e->hdr, AIRLOCK_EVENT_RAW_SOCKET, &tag);
	e->hdr.decision = decision;
	e->hdr.reason = reason;
	e->hdr.flags = decision == AIRLOCK_DENY ? flags : 0;
	e->family = family;
	e->sock_type = type & SOCK_TYPE_MASK;
	e->protocol = protocol;
	e->pad = 0;
	bpf_ringbuf_submit(e, decision == AIRLOCK_DENY ? BPF_RB_FORCE_WAKEUP : events_wakeup_flag());
	account(decision, 0);
	return decision;
}

SEC("lsm/socket_create")
int BPF_PROG(airlock_socket_create, int family, int type, int protocol, int kern, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	/* The kernel's own sockets are not the caller's. */
	if (kern || !raw_socket_kind(family, type))
		return 0;
	return lsm_verdict(raw_socket_judge(family, type, protocol, 0) == AIRLOCK_DENY ? -EPERM : 0);
}

/*
 * Compat: inet sockets, refused at creation (0 = EPERM). A raw socket it lets
 * through, and a ping socket, is tagged for cgroup_skb/egress (packet.bpf.h).
 */
SEC("cgroup/sock_create")
int airlock_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family;
	__u32 type = ctx->type;
	if (raw_socket_kind(family, type) && raw_socket_judge(family, type, ctx->protocol, 0) == AIRLOCK_DENY)
		return 0;
	return socket_owner_tag(ctx, true) ? 1 : 0;
}

/* Compat: what cgroup/sock_create does not see; the caller is killed. */
SEC("tracepoint/syscalls/sys_enter_socket")
int airlock_compat_socket(struct trace_event_raw_sys_enter *ctx)
{
	__u32 family = ctx->args[0];
	__u32 type = ctx->args[1];
	if (family == AF_INET || family == AF_INET6 || !raw_socket_kind(family, type))
		return 0;
	if (raw_socket_judge(family, type, ctx->args[2], AIRLOCK_FLAG_KILLED_AFTER) == AIRLOCK_DENY)
		bpf_send_signal(SIGKILL);
	return 0;
}

#endif
