/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Rebuilds a path from its dentries, crossing mount points. bpf_d_path() is
 * not allowed from tracepoints, so the walk is done by hand. Components are
 * written leaf first, each NUL-terminated; the daemon reverses them.
 */
#ifndef AIRLOCK_PATH_H
#define AIRLOCK_PATH_H

#include "common.h"

/* The longest component copied; longer names are cut and flagged. */
#define PATH_COMPONENT_MAX 256

struct path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	/* The process's root (chroot, container): paths are reported as it sees them. */
	struct dentry *root_dentry;
	struct vfsmount *root_vfsmnt;
	char *buf;
	__u32 off;
	__u32 truncated;
};

static __always_inline struct mount *real_mount_of(struct vfsmount *vfsmnt)
{
	return (struct mount *)((char *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

static long path_walk_step(__u64 index, struct path_walk *w)
{
	/* Plain locals: CO-RE relocates kernel types, not this walker's own struct. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	if (dentry == w->root_dentry && vfsmnt == w->root_vfsmnt)
		return 1;
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);

	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent)
			return 1; /* the root of the namespace: done */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = (struct vfsmount *)((char *)mnt_parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}

	__u32 off = w->off;
	if (off > AIRLOCK_PATH_MAX - PATH_COMPONENT_MAX) {
		w->truncated = 1;
		return 1;
	}
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(w->buf + (off & (AIRLOCK_PATH_MAX - 1)), PATH_COMPONENT_MAX, name);
	if (n <= 0)
		return 1;
	if (n == PATH_COMPONENT_MAX)
		w->truncated = 1;
	w->off = off + n;
	w->dentry = parent;
	return 0;
}

#define PATH_WALK_TRUNCATED (1 << 16)

/*
 * Writes the components of the struct path at kernel address `path_addr`,
 * up to the root at `root_addr`, into out; returns the bytes used, with
 * PATH_WALK_TRUNCATED set when cut short.
 */
__attribute__((noinline)) int path_components(__u64 path_addr, __u64 root_addr, struct path_buf *out)
{
	if (!out)
		return 0;
	const struct path *path = (const struct path *)path_addr;
	const struct path *root = (const struct path *)root_addr;
	struct path_walk w = {};
	w.dentry = BPF_CORE_READ(path, dentry);
	w.vfsmnt = BPF_CORE_READ(path, mnt);
	w.mnt = real_mount_of(w.vfsmnt);
	w.root_dentry = BPF_CORE_READ(root, dentry);
	w.root_vfsmnt = BPF_CORE_READ(root, mnt);
	w.buf = out->buf;
	w.off = loop_state_zero;
	w.truncated = loop_state_zero;
	bpf_loop(AIRLOCK_PATH_DEPTH, path_walk_step, &w, 0);
	return (int)(w.off | (w.truncated ? PATH_WALK_TRUNCATED : 0));
}

static __always_inline __u32 path_into(const void *path, const void *root, char *field, __u32 *flags)
{
	int r = path_components((__u64)path, (__u64)root, (struct path_buf *)field);
	if (r & PATH_WALK_TRUNCATED)
		*flags |= AIRLOCK_FLAG_PATH_TRUNCATED;
	return r & 0xffff;
}

#endif
