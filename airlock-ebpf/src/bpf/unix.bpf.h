/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Unix socket rules: a governed process may not reach the execution brokers
 * outside its session (Docker, tmux/screen servers, systemd, D-Bus) through
 * the sockets its policy names.
 *
 * LSM backend: unix_stream_connect and unix_may_send see the socket the kernel
 * found, so its path is rebuilt from the socket file's own dentry: symlinks,
 * bind mounts, relative paths and "/./" spellings all lead to the same name.
 * Compat backend (kernels >= 6.7): cgroup/connect_unix and cgroup/sendmsg_unix
 * run before the kernel resolves the path, so they see sun_path as the caller
 * wrote it. It is put in canonical form here (relative paths joined to the
 * process's cwd, "//" and "/./" folded); a ".." component cannot be resolved
 * without the file system and is refused for roles with Unix rules. A symlink
 * or bind mount to a broker socket is NOT seen by compat (docs/security.md).
 *
 * Both judge the path with the unix_rules LPM trie of the process's rule set.
 */
#ifndef AIRLOCK_UNIX_BPF_H
#define AIRLOCK_UNIX_BPF_H

#include "common.h"
#include "path.h"

#define UNIX_RAW_LEN (2 * AIRLOCK_UNIX_PATH_MAX)
#define UNIX_RAW_MASK (UNIX_RAW_LEN - 1)
#define UNIX_KEY_MASK (AIRLOCK_UNIX_PATH_MAX - 1)
/*
 * v & mask, with the mask kept: clang drops a mask it can prove redundant from
 * an earlier comparison, but the verifier may not follow that comparison.
 */
#define UNIX_BOUND(v, mask)                          \
	({                                           \
		__u32 __v = (__u32)(v);              \
		asm volatile("" : "+r"(__v));        \
		__v & (mask);                        \
	})

/* offsetof(struct sockaddr_un, sun_path) */
#define UNIX_SUN_PATH_OFF 2

/* Kernels >= 6.2; only the compat Unix programs call it, and they load only on >= 6.7. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

static __always_inline struct unix_scratch *unix_scratch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&unix_scratch, &zero);
}

/*
 * Reverses a leaf-first dentry walk ("sock\0run\0") into raw as a forward
 * path ("/run/sock"). One callback per byte of the walk, scanning backwards
 * for component starts; the scratch map is looked up inside so the context
 * holds only scalars.
 */
struct unix_rev {
	__s32 len; /* bytes of the walk */
	__s32 end; /* index of the NUL ending the component being scanned */
	__u32 out; /* bytes written to raw */
	__u32 full;
};

static long unix_rev_step(__u64 k, struct unix_rev *r)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return 1;
	__s32 i = r->len - 2 - (__s32)k;
	if (i < 0)
		return 1;
	if (i > 0 && s->walk.buf[UNIX_BOUND(i - 1, (AIRLOCK_PATH_MAX - 1))] != 0)
		return 0;
	/* A component starts at i and ends at r->end. */
	__s32 n = r->end - i;
	__u32 out = r->out;
	if (n < 0 || n > AIRLOCK_UNIX_PATH_MAX - 1 || out + 1 + n > UNIX_RAW_LEN - 1) {
		r->full = 1;
		return 1;
	}
	s->raw[UNIX_BOUND(out, UNIX_RAW_MASK)] = '/';
	out++;
	bpf_probe_read_kernel(&s->raw[UNIX_BOUND(out, UNIX_RAW_MASK)], UNIX_BOUND(n, UNIX_KEY_MASK), &s->walk.buf[UNIX_BOUND(i, (AIRLOCK_PATH_MAX - 1))]);
	r->out = out + n;
	r->end = i - 1;
	return 0;
}

/* Writes the forward path of a struct path into raw; returns its length, or -1 when it does not fit. */
static __always_inline int unix_forward_path(const void *path, const void *root)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return -1;
	int r = path_components((__u64)path, (__u64)root, &s->walk);
	if (r & PATH_WALK_TRUNCATED)
		return -1;
	__u32 zero = loop_state_zero;
	struct unix_rev rev = { .len = r & 0xffff, .end = (r & 0xffff) - 1, .out = zero, .full = zero };
	if (rev.len <= 0) {
		/* The root itself. */
		s->raw[0] = '/';
		return 1;
	}
	bpf_loop(AIRLOCK_PATH_MAX, unix_rev_step, &rev, 0);
	return rev.full ? -1 : (int)rev.out;
}

/*
 * Canonical form of the absolute path in raw[0..len) into key.path: "//" and
 * "." components folded, a trailing "/" dropped. ".." or a result too long to
 * match is "unclear". One callback per byte, plus a virtual "/" at the end.
 */
struct unix_canon {
	__u32 len;
	__u32 out;
	__u32 seg; /* where the current component starts in key.path */
	__u32 unclear;
};

static long unix_canon_step(__u64 idx, struct unix_canon *c)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return 1;
	bool end = idx >= c->len;
	char ch = end ? '/' : s->raw[UNIX_BOUND(idx, UNIX_RAW_MASK)];
	__u32 out = c->out;
	if (ch != '/') {
		if (out >= AIRLOCK_UNIX_PATH_MAX - 1) {
			c->unclear = 1;
			return 1;
		}
		s->key.path[UNIX_BOUND(out, UNIX_KEY_MASK)] = ch;
		c->out = out + 1;
		return 0;
	}
	if (out == 0) {
		s->key.path[0] = '/';
		c->out = 1;
		c->seg = 1;
		return end ? 1 : 0;
	}
	__u32 seg = c->seg;
	__u32 n = out - seg;
	if (n == 0) /* "//", or the trailing "/" */
		return end ? 1 : 0;
	char a = s->key.path[UNIX_BOUND(seg, UNIX_KEY_MASK)];
	if (n == 1 && a == '.') {
		c->out = seg;
		return end ? 1 : 0;
	}
	if (n == 2 && a == '.' && s->key.path[UNIX_BOUND(seg + 1, UNIX_KEY_MASK)] == '.') {
		c->unclear = 1;
		return 1;
	}
	if (end)
		return 1;
	if (out >= AIRLOCK_UNIX_PATH_MAX - 1) {
		c->unclear = 1;
		return 1;
	}
	s->key.path[UNIX_BOUND(out, UNIX_KEY_MASK)] = '/';
	c->out = out + 1;
	c->seg = out + 1;
	return 0;
}

/* key.path = canonical raw[0..len); returns its length, or -1 when unclear. */
static __always_inline int unix_canonical(__u32 len)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return -1;
	__u32 zero = loop_state_zero;
	struct unix_canon c = { .len = len, .out = zero, .seg = zero, .unclear = zero };
	bpf_loop(UNIX_RAW_LEN + 1, unix_canon_step, &c, 0);
	if (c.unclear)
		return -1;
	__u32 out = c.out;
	if (out > 1 && s->key.path[UNIX_BOUND(out - 1, UNIX_KEY_MASK)] == '/')
		out--;
	s->key.path[UNIX_BOUND(out, UNIX_KEY_MASK)] = 0;
	return (int)out;
}

/* key.path = "@" + an abstract name of n bytes at kernel address src; returns its length. */
static __always_inline int unix_abstract(const void *src, __u32 n)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return -1;
	if (n > AIRLOCK_UNIX_PATH_MAX - 2)
		n = AIRLOCK_UNIX_PATH_MAX - 2;
	s->key.path[0] = '@';
	bpf_probe_read_kernel(&s->key.path[1], UNIX_BOUND(n, UNIX_KEY_MASK), src);
	s->key.path[UNIX_BOUND(n + 1, UNIX_KEY_MASK)] = 0;
	return (int)(n + 1);
}

/*
 * Judges the path in key.path (len bytes; -1: unclear) for the governed
 * process `tag`, writes the event and returns the decision. Datagram sends
 * are recorded only when denied: a governed process may log through
 * /dev/log thousands of times.
 */
/* The rule covering key.path in rule set set_id, or 0. */
static __always_inline __u32 unix_lookup(__u32 set_id)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return 0;
	s->key.prefixlen = 32 + 8 * AIRLOCK_UNIX_PATH_MAX;
	s->key.set_id = set_id;
	struct airlock_egress_value *v = bpf_map_lookup_elem(&unix_rules, &s->key);
	return v ? v->rule_id : 0;
}

static __always_inline __u32 unix_decide(const struct airlock_proc_tag *tag, __u32 set_id, __u32 reason, int len,
					 __u32 kind, __u32 sock_type, __u32 flags)
{
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return AIRLOCK_ALLOW;
	__u32 rule_id = 0;
	if (reason == AIRLOCK_REASON_NONE) {
		if (len < 0) {
			reason = AIRLOCK_REASON_UNIX_PATH_UNCLEAR;
		} else {
			rule_id = unix_lookup(set_id);
			if (rule_id)
				reason = AIRLOCK_REASON_RULE;
		}
	}
	__u32 decision = reason ? AIRLOCK_DENY : AIRLOCK_ALLOW;
	if (kind == AIRLOCK_EVENT_UNIX_SENDMSG && decision == AIRLOCK_ALLOW)
		return decision;

	struct airlock_unix_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		account(decision, -1);
		return decision;
	}
	header_fill(&e->hdr, kind, tag);
	e->hdr.decision = decision;
	e->hdr.reason = reason;
	e->hdr.rule_id = rule_id;
	e->hdr.flags = flags;
	e->sock_type = sock_type;
	if (len < 0) {
		/* Report what the caller asked for, as far as it was read. */
		bpf_probe_read_kernel(e->path, sizeof(e->path), s->raw);
		e->path[AIRLOCK_UNIX_PATH_MAX - 1] = 0;
		e->path_len = 0;
	} else {
		__builtin_memcpy(e->path, s->key.path, sizeof(e->path));
		e->path_len = len;
	}
	bpf_ringbuf_submit(e, events_wakeup_flag());
	account(decision, 0);
	return decision;
}

/*
 * The governed process's rule set, if Unix sockets are judged for it: true
 * with *set_id and *reason filled (a deny-all reason for quarantine or a role
 * that is gone), false when the role has no Unix rules.
 */
static __always_inline bool unix_judged(const struct airlock_proc_tag *tag, __u32 *set_id, __u32 *reason)
{
	*reason = rule_set_of(tag, set_id);
	if (*reason)
		return true;
	__u32 slot = tag->role_slot;
	struct airlock_role_set *rs = bpf_map_lookup_elem(&role_sets, &slot);
	return rs && (rs->flags & AIRLOCK_ROLE_UNIX_RULES);
}

/* ---- compat: cgroup/connect_unix, cgroup/sendmsg_unix (kernels >= 6.7) ---- */

static __always_inline int unix_sock_addr_verdict(struct bpf_sock_addr *ctx, __u32 kind)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct airlock_proc_tag tag;
	if (!tag_of(tgid, &tag))
		return 1;
	__u32 set_id, reason;
	if (!unix_judged(&tag, &set_id, &reason))
		return 1;
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return 1;
	if (!bpf_cast_to_kern_ctx)
		return 1;
	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	const char *sun_path = (const char *)sa->uaddr + UNIX_SUN_PATH_OFF;
	__u32 alen = sa->uaddrlen;
	__u32 n = alen > UNIX_SUN_PATH_OFF ? alen - UNIX_SUN_PATH_OFF : 0;
	__u32 sock_type = BPF_CORE_READ(sa, sk, sk_type);
	int len = -1;
	__u32 flags = 0;
	char first = 0;
	bpf_probe_read_kernel(&first, 1, sun_path);
	s->raw[0] = 0;
	if (n == 0) {
		/* An unnamed address (autobind): nothing to judge. */
		return 1;
	} else if (first == 0) {
		flags |= AIRLOCK_FLAG_UNIX_ABSTRACT;
		len = unix_abstract(sun_path + 1, n - 1);
	} else if (first == '/') {
		/* Only the caller's n bytes: the kernel NUL-terminates sun_path after this hook. */
		long r = bpf_probe_read_kernel_str(s->raw, UNIX_BOUND(n > UNIX_KEY_MASK ? UNIX_KEY_MASK : n, UNIX_KEY_MASK) + 1, sun_path);
		if (r > 0)
			len = unix_canonical((__u32)r - 1);
	} else {
		/* Relative to the process's cwd, as the kernel will resolve it. */
		struct task_struct *task = bpf_get_current_task_btf();
		struct fs_struct *fs = BPF_CORE_READ(task, fs);
		int off = unix_forward_path(__builtin_preserve_access_index(&fs->pwd),
					    __builtin_preserve_access_index(&fs->root));
		if (off >= 0 && off < AIRLOCK_UNIX_PATH_MAX * 2 - 2) {
			__u32 o = off;
			if (o == 1)
				o = 0; /* cwd is "/": no second slash */
			s->raw[UNIX_BOUND(o, UNIX_RAW_MASK)] = '/';
			o++;
			long r = bpf_probe_read_kernel_str(&s->raw[UNIX_BOUND(o, UNIX_RAW_MASK)],
							   UNIX_BOUND(n > UNIX_KEY_MASK ? UNIX_KEY_MASK : n, UNIX_KEY_MASK) + 1, sun_path);
			if (r > 0 && o + r - 1 < UNIX_RAW_LEN)
				len = unix_canonical(o + (__u32)r - 1);
		}
	}
	__u32 decision = unix_decide(&tag, set_id, reason, len, kind, sock_type, flags);
	return decision == AIRLOCK_DENY ? 0 : 1;
}

SEC("cgroup/connect_unix")
int airlock_connect_unix(struct bpf_sock_addr *ctx)
{
	return unix_sock_addr_verdict(ctx, AIRLOCK_EVENT_UNIX_CONNECT);
}

SEC("cgroup/sendmsg_unix")
int airlock_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return unix_sock_addr_verdict(ctx, AIRLOCK_EVENT_UNIX_SENDMSG);
}

/* ---- LSM: the peer the kernel resolved ---- */

static __always_inline __u32 unix_lsm_judge(struct sock *peer, __u32 sock_type, __u32 kind)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct airlock_proc_tag tag;
	if (!peer || !tag_of(tgid, &tag))
		return AIRLOCK_ALLOW;
	__u32 set_id, reason;
	if (!unix_judged(&tag, &set_id, &reason))
		return AIRLOCK_ALLOW;
	struct unix_scratch *s = unix_scratch_get();
	if (!s)
		return AIRLOCK_ALLOW;
	/*
	 * path_components() is a global function: it takes plain addresses, and
	 * the verifier refuses a trusted BTF pointer (the hook's argument) there.
	 * Copying the pointer through probe_read makes it a plain address.
	 */
	struct unix_sock *u = NULL;
	bpf_probe_read_kernel(&u, sizeof(u), &peer);
	if (!u)
		return AIRLOCK_ALLOW;
	struct dentry *dentry = BPF_CORE_READ(u, path.dentry);
	struct unix_address *addr = BPF_CORE_READ(u, addr);
	int len = -1;
	__u32 flags = 0;
	s->raw[0] = 0;
	if (!dentry && !addr)
		return AIRLOCK_ALLOW; /* unbound peer: no name to judge */

	/* The name the listening socket was bound with (the server's spelling). */
	int alen = addr ? BPF_CORE_READ(addr, len) : 0;
	const char *sun_path = (const char *)__builtin_preserve_access_index(&addr->name[0].sun_path[0]);
	char first = 0;
	if (addr)
		bpf_probe_read_kernel(&first, 1, sun_path);
	if (!dentry) {
		if (alen > UNIX_SUN_PATH_OFF + 1 && first == 0) {
			flags |= AIRLOCK_FLAG_UNIX_ABSTRACT;
			len = unix_abstract(sun_path + 1, alen - UNIX_SUN_PATH_OFF - 1);
			return unix_decide(&tag, set_id, reason, len, kind, sock_type, flags);
		}
		return AIRLOCK_ALLOW; /* unnamed */
	}

	/*
	 * A path socket: judged by the path of the socket file itself, rebuilt
	 * from its dentry (symlinks, bind mounts and the caller's spelling do not
	 * matter), and by the absolute name it was bound with. Either matching a
	 * rule denies. The bound name also covers a socket reached through a bind
	 * mount of it, and kernels whose dentry walk cannot rebuild the path.
	 */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	int n = unix_forward_path(__builtin_preserve_access_index(&u->path), __builtin_preserve_access_index(&fs->root));
	if (n > 1)
		len = unix_canonical(n);
	if (len > 1 && reason == AIRLOCK_REASON_NONE && unix_lookup(set_id))
		return unix_decide(&tag, set_id, reason, len, kind, sock_type, flags | AIRLOCK_FLAG_UNIX_RESOLVED);
	if (addr && first == '/' && alen > UNIX_SUN_PATH_OFF) {
		__u32 bn = alen - UNIX_SUN_PATH_OFF;
		long r = bpf_probe_read_kernel_str(s->raw, UNIX_BOUND(bn > UNIX_KEY_MASK ? UNIX_KEY_MASK : bn, UNIX_KEY_MASK) + 1,
						   sun_path);
		int blen = r > 0 ? unix_canonical((__u32)r - 1) : -1;
		if (blen > 1 && (len <= 1 || (reason == AIRLOCK_REASON_NONE && unix_lookup(set_id))))
			return unix_decide(&tag, set_id, reason, blen, kind, sock_type, flags);
		/* No match by the bound name: report the socket file's own path. */
		if (len > 1) {
			len = unix_forward_path(__builtin_preserve_access_index(&u->path),
						__builtin_preserve_access_index(&fs->root));
			len = len > 1 ? unix_canonical(len) : -1;
		}
	}
	return unix_decide(&tag, set_id, reason, len, kind, sock_type, len > 1 ? flags | AIRLOCK_FLAG_UNIX_RESOLVED : flags);
}

SEC("lsm/unix_stream_connect")
int BPF_PROG(airlock_unix_stream_connect, struct sock *sock, struct sock *other, struct sock *newsk, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	__u32 type = BPF_CORE_READ(sock, sk_type);
	return lsm_verdict(unix_lsm_judge(other, type, AIRLOCK_EVENT_UNIX_CONNECT) == AIRLOCK_DENY ? -EPERM : 0);
}

SEC("lsm/unix_may_send")
int BPF_PROG(airlock_unix_may_send, struct socket *sock, struct socket *other, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	struct sock *peer = BPF_CORE_READ(other, sk);
	__u32 type = BPF_CORE_READ(sock, type);
	return lsm_verdict(unix_lsm_judge(peer, type, AIRLOCK_EVENT_UNIX_SENDMSG) == AIRLOCK_DENY ? -EPERM : 0);
}

#endif
