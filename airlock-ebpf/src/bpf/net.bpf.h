/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Egress hooks. The compat backend attaches cgroup/connect{4,6} and
 * cgroup/sendmsg{4,6} to the root cgroup2, which sees every socket on the
 * host (io_uring's connect included); the LSM backend uses socket_connect and
 * socket_sendmsg. Both judge with egress_judge().
 */
#ifndef AIRLOCK_NET_BPF_H
#define AIRLOCK_NET_BPF_H

#include "common.h"

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Looks the destination up for the exact port, then for "any port" (0). */
static __always_inline __u32 egress_lookup4_in(void *map, __u32 set_id, __u32 addr_be, __u16 port_be)
{
	struct airlock_egress4_key key = { .prefixlen = 48 + 32, .set_id = set_id };
	__builtin_memcpy(key.addr, &addr_be, 4);
	__builtin_memcpy(key.port, &port_be, 2);
	struct airlock_egress_value *v = bpf_map_lookup_elem(map, &key);
	if (v)
		return v->rule_id;
	key.port[0] = 0;
	key.port[1] = 0;
	v = bpf_map_lookup_elem(map, &key);
	return v ? v->rule_id : 0;
}

static __always_inline __u32 egress_lookup4(__u32 set_id, __u32 addr_be, __u16 port_be)
{
	return egress_lookup4_in(&egress4, set_id, addr_be, port_be);
}

static __always_inline __u32 egress_lookup6_in(void *map, __u32 set_id, const __u32 *addr_be, __u16 port_be)
{
	struct airlock_egress6_key key = { .prefixlen = 48 + 128, .set_id = set_id };
	__builtin_memcpy(key.addr, addr_be, 16);
	__builtin_memcpy(key.port, &port_be, 2);
	struct airlock_egress_value *v = bpf_map_lookup_elem(map, &key);
	if (v)
		return v->rule_id;
	key.port[0] = 0;
	key.port[1] = 0;
	v = bpf_map_lookup_elem(map, &key);
	return v ? v->rule_id : 0;
}

static __always_inline __u32 egress_lookup6(__u32 set_id, const __u32 *addr_be, __u16 port_be)
{
	return egress_lookup6_in(&egress6, set_id, addr_be, port_be);
}

/*
 * The allow rule covering the destination (0: none). Read only for a role
 * whose egress default is deny, or a session under a soft security block, and
 * only when no deny rule matched: deny rules always win.
 */
static __always_inline __u32 egress_allow_rule(__u32 set_id, __u16 family, __u32 addr4_be, const __u32 *addr6_be,
					       __u16 port_be)
{
	return family == AF_INET ? egress_lookup4_in(&egress_allow4, set_id, addr4_be, port_be)
				 : egress_lookup6_in(&egress_allow6, set_id, addr6_be, port_be);
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: what a soft security block leaves reachable. */
static __always_inline bool is_loopback(__u16 family, __u32 addr4_be, const __u32 *addr6_be)
{
	if (family == AF_INET)
		return (bpf_ntohl(addr4_be) >> 24) == 127;
	if (!addr6_be || addr6_be[0] != 0 || addr6_be[1] != 0)
		return false;
	if (addr6_be[2] == 0)
		return addr6_be[3] == bpf_htonl(1);
	return addr6_be[2] == bpf_htonl(0xffff) && (bpf_ntohl(addr6_be[3]) >> 24) == 127;
}

/*
 * The reason a governed process may not reach the destination
 * (AIRLOCK_REASON_NONE: it may), and in *rule_id the rule that decided.
 * addr6_be is NULL for IPv4.
 */
static __always_inline __u32 egress_decide(const struct airlock_proc_tag *tag, __u16 family, __u32 addr4_be,
					   const __u32 *addr6_be, __u16 port_be, __u32 *rule_id)
{
	*rule_id = 0;
	struct airlock_role_set rs;
	__u32 reason = role_set_of(tag, &rs);
	__u32 set_id = rs.set_id;
	if (reason != AIRLOCK_REASON_NONE || !set_id)
		return reason;
	*rule_id = family == AF_INET ? egress_lookup4(set_id, addr4_be, port_be) : egress_lookup6(set_id, addr6_be, port_be);
	if (*rule_id)
		return AIRLOCK_REASON_RULE;
	bool default_deny = rs.flags & AIRLOCK_ROLE_EGRESS_DEFAULT_DENY;
	bool soft_blocked = rs.flags & AIRLOCK_ROLE_SOFT_BLOCKED;
	if (!default_deny && !soft_blocked)
		return AIRLOCK_REASON_NONE;
	/* An allow decision names the allow rule that let it through. */
	*rule_id = egress_allow_rule(set_id, family, addr4_be, addr6_be, port_be);
	if (!*rule_id && default_deny)
		return AIRLOCK_REASON_EGRESS_DEFAULT;
	if (!*rule_id && !is_loopback(family, addr4_be, addr6_be))
		return AIRLOCK_REASON_SECURITY_BLOCK;
	return AIRLOCK_REASON_NONE;
}

/* The decision and destination of a network event whose header is filled. */
static __always_inline void net_event_fill(struct airlock_net_event *e, __u32 reason, __u32 rule_id, __u16 family,
					   __u32 addr4_be, const __u32 *addr6_be, __u16 port_be, __u32 protocol)
{
	e->hdr.decision = reason ? AIRLOCK_DENY : AIRLOCK_ALLOW;
	e->hdr.reason = reason;
	e->hdr.rule_id = rule_id;
	e->family = family;
	e->port = bpf_ntohs(port_be);
	e->protocol = protocol;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (family == AF_INET)
		__builtin_memcpy(e->addr, &addr4_be, 4);
	else if (addr6_be)
		__builtin_memcpy(e->addr, addr6_be, 16);
}

/*
 * Decides one connection of the current process. addr6 is NULL for IPv4.
 * Returns AIRLOCK_ALLOW or AIRLOCK_DENY and writes the audit event.
 */
static __always_inline __u32 egress_judge(__u32 kind, __u16 family, __u32 addr4_be, const __u32 *addr6_be,
					  __u16 port_be, __u32 protocol)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct airlock_proc_tag tag;
	if (!tag_of(tgid, &tag))
		return AIRLOCK_ALLOW;

	__u32 rule_id;
	__u32 reason = egress_decide(&tag, family, addr4_be, addr6_be, port_be, &rule_id);
	__u32 decision = reason ? AIRLOCK_DENY : AIRLOCK_ALLOW;

	struct airlock_net_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		account(decision, -1);
		return decision;
	}
	header_fill(&e->hdr, kind, &tag);
	net_event_fill(e, reason, rule_id, family, addr4_be, addr6_be, port_be, protocol);
	bpf_ringbuf_submit(e, events_wakeup_flag());
	account(decision, 0);
	return decision;
}

static __always_inline int sock_addr_verdict4(struct bpf_sock_addr *ctx, __u32 kind)
{
	__u32 decision = egress_judge(kind, AF_INET, ctx->user_ip4, NULL, (__u16)ctx->user_port, ctx->protocol);
	return decision == AIRLOCK_DENY ? 0 : 1;
}

static __always_inline int sock_addr_verdict6(struct bpf_sock_addr *ctx, __u32 kind)
{
	__u32 addr[4];
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	__u32 decision = egress_judge(kind, AF_INET6, 0, addr, (__u16)ctx->user_port, ctx->protocol);
	return decision == AIRLOCK_DENY ? 0 : 1;
}

SEC("cgroup/connect4")
int airlock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_addr_verdict4(ctx, AIRLOCK_EVENT_CONNECT);
}

SEC("cgroup/connect6")
int airlock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_addr_verdict6(ctx, AIRLOCK_EVENT_CONNECT);
}

SEC("cgroup/sendmsg4")
int airlock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr_verdict4(ctx, AIRLOCK_EVENT_SENDMSG);
}

SEC("cgroup/sendmsg6")
int airlock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr_verdict6(ctx, AIRLOCK_EVENT_SENDMSG);
}

/* LSM backend: the same decision from the socket hooks. */
static __always_inline int lsm_sockaddr_verdict(struct socket *sock, struct sockaddr *address, __u32 kind)
{
	if (!address)
		return 0;
	__u16 family = BPF_CORE_READ(address, sa_family);
	__u32 protocol = BPF_CORE_READ(sock, sk, sk_protocol);
	__u32 decision = AIRLOCK_ALLOW;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)address;
		decision = egress_judge(kind, AF_INET, BPF_CORE_READ(sin, sin_addr.s_addr), NULL,
					BPF_CORE_READ(sin, sin_port), protocol);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)address;
		__u32 addr[4];
		bpf_probe_read_kernel(addr, sizeof(addr), __builtin_preserve_access_index(&sin6->sin6_addr));
		decision = egress_judge(kind, AF_INET6, 0, addr, BPF_CORE_READ(sin6, sin6_port), protocol);
	}
	return decision == AIRLOCK_DENY ? -EPERM : 0;
}

SEC("lsm/socket_connect")
int BPF_PROG(airlock_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	return lsm_verdict(lsm_sockaddr_verdict(sock, address, AIRLOCK_EVENT_CONNECT));
}

SEC("lsm/socket_sendmsg")
int BPF_PROG(airlock_socket_sendmsg, struct socket *sock, struct msghdr *msg, int size, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	struct sockaddr *name = BPF_CORE_READ(msg, msg_name);
	return lsm_verdict(lsm_sockaddr_verdict(sock, name, AIRLOCK_EVENT_SENDMSG));
}

#endif
