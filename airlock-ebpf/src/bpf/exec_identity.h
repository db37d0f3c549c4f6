/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Exec identity: what the executed file is, beyond what it is called.
 *
 * - Content: a fingerprint of the file's first bytes (the kernel's own
 *   bprm->buf, already read for the binary format handlers) and its size. The
 *   daemon computes the same for the protected programs it finds, so a hard
 *   link or a copy under any name, anywhere, is the program it copies.
 * - Kind: names and contents the daemon marked as interpreters (their first
 *   operand is the program) or as the dynamic loader.
 * - Fileless: a file with no link left (memfd, deleted, O_TMPFILE) has no
 *   name anyone can vouch for.
 */
#ifndef AIRLOCK_EXEC_IDENTITY_H
#define AIRLOCK_EXEC_IDENTITY_H

#include "common.h"
#include "exec_match.h"

#define HEAD_MASK (AIRLOCK_HEAD_LEN - 1)

/*
 * Not an AIRLOCK_ID_* flag of the daemon's: set in id_flags when the content
 * is already known as the program the file's own name is. Kept in id_flags,
 * not in a field or a loop of its own, because the LSM exec check's combined
 * stack is within a few bytes of Debian 6.1's 512-byte bound.
 */
#define ID_FACT_CONTENT_IS_NAME (1U << 31)

/* What the exec hooks learned about the executed file besides its name. */
struct exec_identity_facts {
	__u32 id_flags; /* AIRLOCK_ID_* of the file's name, argv[0]'s basename and the content */
	__u32 fileless;
	__u64 names[AIRLOCK_IDENTITY_NAMES]; /* the protected programs the content is */
};

/* FNV-1a over len bytes of the head from off (len a constant, off bounded by the mask). */
static __always_inline __u64 fnv_head(__u64 h, const __u8 *head, __u32 off, const int len)
{
#pragma unroll
	for (int j = 0; j < len; j++)
		h = fnv_step(h, head[(off + j) & HEAD_MASK]);
	return h;
}

/*
 * The content fingerprint of s->head and the file size, into s->content_hash.
 * Mirrored byte for byte by airlock_common::identity::fingerprint. For an ELF64
 * little-endian file only the fields the kernel and ld.so act on are hashed, so
 * flipping padding, section-header or p_paddr bytes makes no other identity.
 */
AIRLOCK_GLOBAL int content_fingerprint(struct exec_scratch *s, __u64 size)
{
	if (!s)
		return 0;
	const __u8 *b = s->head;
	__u64 h = AIRLOCK_FNV_OFFSET;
	if (b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F' && b[4] == 2 && b[5] == 1) {
		h = fnv_step(h, 'E');
		h = fnv_head(h, b, 16, 4);  /* e_type, e_machine */
		h = fnv_head(h, b, 24, 16); /* e_entry, e_phoff */
		h = fnv_head(h, b, 54, 4);  /* e_phentsize, e_phnum */
		__u64 phoff = 0;
#pragma unroll
		for (int j = 7; j >= 0; j--)
			phoff = (phoff << 8) | b[32 + j];
		__u32 phentsize = b[54] | ((__u32)b[55] << 8);
		__u32 phnum = b[56] | ((__u32)b[57] << 8);
		if (phentsize == 56) {
			/* A loop, not unrolled: unrolled, clang spills enough registers
			 * to push the LSM program's combined stack past 512 bytes. */
#pragma nounroll
			for (int i = 0; i < 4; i++) {
				__u64 off = phoff + i * 56;
				if (i >= phnum || off > AIRLOCK_HEAD_LEN - 56)
					break;
				h = fnv_head(h, b, off, 24);      /* p_type, p_flags, p_offset, p_vaddr */
				h = fnv_head(h, b, off + 32, 16); /* p_filesz, p_memsz */
			}
		}
	} else {
		h = fnv_step(h, 'R');
		for (int i = 0; i < AIRLOCK_HEAD_LEN; i++)
			h = fnv_step(h, b[i]);
	}
#pragma unroll
	for (int i = 0; i < 8; i++)
		h = fnv_step(h, (size >> (8 * i)) & 0xff);
	s->content_hash = h;
	return 0;
}

static __always_inline struct airlock_identity_value *identity_get(__u32 kind, __u64 hash)
{
	struct airlock_identity_key key = { .kind = kind, .hash = hash };
	return bpf_map_lookup_elem(&exec_identity, &key);
}

/*
 * Fills the facts for the file being executed. Needs s->argv0_base_hash, so it
 * runs after tokenize().
 */
static __always_inline void identity_of(struct exec_scratch *s, struct linux_binprm *bprm, __u64 exe_hash,
					struct exec_identity_facts *f)
{
	struct inode *inode = BPF_CORE_READ(bprm, file, f_inode);
	__u64 size = BPF_CORE_READ(inode, i_size);
	f->fileless = BPF_CORE_READ(inode, i_nlink) == 0;
	/* The size is part of every identity: a file of no known size is none of
	 * them, and most execs skip the hashing with this one lookup. */
	struct airlock_identity_value *v = NULL;
	s->content_hash = 0;
	if (identity_get(AIRLOCK_IDKEY_SIZE, size)) {
		if (bpf_probe_read_kernel(s->head, AIRLOCK_HEAD_LEN, __builtin_preserve_access_index(&bprm->buf)) != 0)
			__builtin_memset(s->head, 0, AIRLOCK_HEAD_LEN);
		content_fingerprint(s, size);
		v = identity_get(AIRLOCK_IDKEY_CONTENT, s->content_hash);
	}
	if (v) {
		f->id_flags |= v->flags & ~ID_FACT_CONTENT_IS_NAME;
#pragma unroll
		for (int i = 0; i < AIRLOCK_IDENTITY_NAMES; i++) {
			f->names[i] = v->names[i];
			if (v->names[i] == exe_hash)
				f->id_flags |= ID_FACT_CONTENT_IS_NAME;
		}
	}
	v = identity_get(AIRLOCK_IDKEY_NAME, exe_hash);
	if (v)
		f->id_flags |= v->flags & (AIRLOCK_ID_INTERPRETER | AIRLOCK_ID_LOADER);
	if (s->argv0_base_hash != exe_hash) {
		/* A multi-call binary (busybox sh) is the interpreter argv[0] names. */
		v = identity_get(AIRLOCK_IDKEY_NAME, s->argv0_base_hash);
		if (v)
			f->id_flags |= v->flags & AIRLOCK_ID_INTERPRETER;
	}
}

/* The role's exec switches (AIRLOCK_ROLE_ALLOW_*). */
static __always_inline __u32 exec_role_flags(const struct airlock_proc_tag *tag)
{
	__u32 slot = tag->role_slot;
	struct airlock_role_set *rs = bpf_map_lookup_elem(&role_sets, &slot);
	return rs ? rs->flags : 0;
}

#endif
