/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Egress judged packet by packet, for the sockets whose packets no connect or
 * sendmsg check fully describes:
 * - raw IP sockets of a role that allows them: the sender writes the header
 *   (IP_HDRINCL, IPPROTO_RAW), so the address a sendmsg hook saw need not be
 *   where the packet goes, and a connected one sends with no address at all;
 * - on the compat backend, ICMP datagram ("ping") sockets, whose sendto no
 *   cgroup sock_addr hook sees (cgroup/sendmsg4/6 run for UDP only).
 *
 * cgroup/sock_create tags such a socket of a governed process with its
 * creator (socket_owners). cgroup_skb/egress on the root cgroup2 runs for every
 * IPv4 and IPv6 packet the host sends; for a tagged socket it reads the
 * destination from the packet itself and judges it by the creator's egress
 * rules, like a connect. A denied packet is dropped and the sender's call fails
 * with EPERM. Only drops are reported: an allowed packet was already judged at
 * its connect, or is one of a stream no audit trail wants line by line.
 * Every other packet costs a socket-type test.
 */
#ifndef AIRLOCK_PACKET_BPF_H
#define AIRLOCK_PACKET_BPF_H

#include "common.h"
#include "net.bpf.h"

#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define SOCK_TYPE_MASK 0xf
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPV4_FRAG_OFFSET_MASK 0x1fff

/* type carries SOCK_* creation flags above the type proper. */
static __always_inline bool judged_per_packet(__u32 type, __u32 protocol, bool ping_sockets)
{
	type &= SOCK_TYPE_MASK;
	if (type == SOCK_RAW)
		return true;
	return ping_sockets && type == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6);
}

/*
 * Tags a new inet socket of a governed process whose packets are judged one by
 * one. Returns false when the tag could not be stored: the socket must then
 * not be created, or its packets would go unjudged.
 */
static __always_inline bool socket_owner_tag(struct bpf_sock *sk, bool ping_sockets)
{
	if (sk->family != AF_INET && sk->family != AF_INET6)
		return true;
	if (!judged_per_packet(sk->type, sk->protocol, ping_sockets))
		return true;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct socket_owner owner = {};
	if (!tag_of(pid_tgid >> 32, &owner.tag))
		return true;
	__u64 uid_gid = bpf_get_current_uid_gid();
	owner.pid = (__u32)pid_tgid;
	owner.tgid = pid_tgid >> 32;
	owner.uid = (__u32)uid_gid;
	owner.gid = uid_gid >> 32;
	bpf_get_current_comm(owner.comm, sizeof(owner.comm));
	return bpf_sk_storage_get(&socket_owners, sk, &owner, BPF_SK_STORAGE_GET_F_CREATE) != NULL;
}

/* LSM backend: ping sockets are judged at socket_sendmsg; raw sockets are tagged here. */
SEC("cgroup/sock_create")
int airlock_sock_tag(struct bpf_sock *ctx)
{
	return socket_owner_tag(ctx, false) ? 1 : 0;
}

/* Where a packet goes: family, addresses, and the L4 protocol and port when the packet shows them. */
struct packet_destination {
	__u16 family;
	__u16 port_be;
	__u32 protocol;
	__u32 addr4_be;
	__u32 addr6_be[4];
};

/* false: not an IP packet this hook can read; it is dropped, since a tagged socket sent it. */
static __always_inline bool packet_destination_of(struct __sk_buff *skb, struct packet_destination *d)
{
	__u32 l4_offset;
	bool first_fragment = true;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)))
			return false;
		d->family = AF_INET;
		d->protocol = ip[9];
		__builtin_memcpy(&d->addr4_be, &ip[16], 4);
		l4_offset = (ip[0] & 0xf) * 4;
		first_fragment = ((((__u16)ip[6] << 8) | ip[7]) & IPV4_FRAG_OFFSET_MASK) == 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes(skb, 0, ip6, sizeof(ip6)))
			return false;
		d->family = AF_INET6;
		d->protocol = ip6[6];
		__builtin_memcpy(d->addr6_be, &ip6[24], 16);
		l4_offset = 40;
	} else {
		return false;
	}
	/* The port, where the packet carries one; other packets match rules for any port. */
	d->port_be = 0;
	if (first_fragment && (d->protocol == IPPROTO_TCP || d->protocol == IPPROTO_UDP)) {
		__u16 port_be;
		if (bpf_skb_load_bytes(skb, l4_offset + 2, &port_be, sizeof(port_be)) == 0)
			d->port_be = port_be;
	}
	return true;
}

static __always_inline void packet_drop_report(const struct socket_owner *owner, const struct packet_destination *d,
					       __u32 reason, __u32 rule_id)
{
	struct airlock_net_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		account(AIRLOCK_DENY, -1);
		return;
	}
	header_fill_session(&e->hdr, AIRLOCK_EVENT_SENDMSG, &owner->tag);
	e->hdr.pid = owner->pid;
	e->hdr.tgid = owner->tgid;
	e->hdr.uid = owner->uid;
	e->hdr.gid = owner->gid;
	__builtin_memcpy(e->hdr.comm, owner->comm, sizeof(e->hdr.comm));
	net_event_fill(e, reason, rule_id, d->family, d->addr4_be, d->family == AF_INET6 ? d->addr6_be : NULL,
		       d->port_be, d->protocol);
	bpf_ringbuf_submit(e, events_wakeup_flag());
	account(AIRLOCK_DENY, 0);
}

SEC("cgroup_skb/egress")
int airlock_packet_egress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || !judged_per_packet(sk->type, sk->protocol, true))
		return 1;
	struct socket_owner *owner = bpf_sk_storage_get(&socket_owners, sk, NULL, 0);
	if (!owner)
		return 1;
	struct packet_destination d = {};
	if (!packet_destination_of(skb, &d))
		return 0;
	struct airlock_proc_tag tag = owner->tag;
	__u32 rule_id;
	__u32 reason = egress_decide(&tag, d.family, d.addr4_be, d.addr6_be, d.port_be, &rule_id);
	if (reason == AIRLOCK_REASON_NONE)
		return 1;
	packet_drop_report(owner, &d, reason, rule_id);
	return 0;
}

#endif
