/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the guard hooks share. Tamper resistance (tamper_lsm.bpf.h,
 * tamper_compat.bpf.h) and protected files (protected_files.bpf.h) recognise
 * the same daemon and the same Airlock files, and report through one guard
 * event, refused on the LSM backend or punished on the compat backend.
 *
 * Every hook looks the caller's tag up first (or a cheaper test that rules
 * out nearly every call), so untagged processes pay one lookup.
 */
#ifndef AIRLOCK_GUARD_COMMON_H
#define AIRLOCK_GUARD_COMMON_H

#include "common.h"
#include "path.h"

#define BPF_FS_MAGIC 0xcafe4a11
#define PROC_SUPER_MAGIC 0x9fa0

/* What a guard hook does to a governed offender. */
#define GUARD_REFUSE 0 /* LSM: -EPERM */
#define GUARD_KILL 1   /* compat: SIGKILL on the way back to user space */

static __always_inline bool current_tag(struct airlock_proc_tag *tag)
{
	return tag_of(bpf_get_current_pid_tgid() >> 32, tag);
}

/* Signals and ptrace name a thread: any of the daemon's threads counts. */
static __always_inline bool is_daemon_tid(__s32 tid)
{
	if (tid <= 0)
		return false;
	__u32 key = tid;
	return bpf_map_lookup_elem(&guarded_tids, &key) != NULL;
}

static __always_inline __u32 pid_nr(struct pid *pid)
{
	if (!pid)
		return 0;
	return BPF_CORE_READ(pid, numbers[0].nr);
}

/* The pid a /proc/PID/... inode belongs to (0 for other proc files). */
static __always_inline __u32 proc_inode_pid(struct inode *inode)
{
	struct proc_inode *pi = (struct proc_inode *)((char *)inode - bpf_core_field_offset(struct proc_inode, vfs_inode));
	return pid_nr(BPF_CORE_READ(pi, pid));
}

/* Whether a dentry's name is the literal `want`, `len` (at most 15) characters. */
static __always_inline bool dentry_named(struct dentry *d, const char *want, __u32 len)
{
	char name[16] = {};
	if (!d || BPF_CORE_READ(d, d_name.len) != len)
		return false;
	if (bpf_probe_read_kernel(name, len & 15, BPF_CORE_READ(d, d_name.name)) != 0)
		return false;
#pragma unroll
	for (__u32 i = 0; i < 15; i++) {
		if (i < len && name[i] != want[i])
			return false;
	}
	return true;
}

/*
 * /proc/sys/kernel/ftrace_enabled (a procfs file, by its name and its
 * directory's, so a bind mount or a procfs of its own is the same file).
 * Writing 0 turns every ftrace call site into a no-op, and with them the BPF
 * trampolines the LSM programs run on: the LSM backend's hooks stop running.
 */
static __always_inline bool is_ftrace_switch(struct file *file)
{
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	return dentry_named(d, "ftrace_enabled", 14) && dentry_named(BPF_CORE_READ(d, d_parent), "kernel", 6);
}

/* Whether an inode is one of Airlock's own files or directories. */
static __always_inline bool is_self_inode(struct inode *inode)
{
	if (!inode)
		return false;
	struct airlock_inode_key key = { .dev = BPF_CORE_READ(inode, i_sb, s_dev), .ino = BPF_CORE_READ(inode, i_ino) };
	struct airlock_inode_value *v = bpf_map_lookup_elem(&protected_inodes, &key);
	return v && v->class_hash == AIRLOCK_CLASS_SELF;
}

static __always_inline struct guard_scratch *guard_scratch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&guard_scratch, &zero);
}

/* Starts a guard event: header, caller, what was tried. */
static __always_inline struct guard_scratch *guard_begin(const struct airlock_proc_tag *tag, __u32 kind, __u32 op,
							 __u32 target, __u64 arg)
{
	struct guard_scratch *s = guard_scratch_get();
	if (!s)
		return NULL;
	struct airlock_guard_event *e = &s->evt;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	header_fill(&e->hdr, kind, tag);
	e->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->op = op;
	e->target = target;
	e->arg = arg;
	e->dev = 0;
	e->ino = 0;
	e->path_len = 0;
	e->exe_uid = 0;
	e->name_len = 0;
	e->name[0] = 0;
	return s;
}

static __always_inline void guard_send(struct guard_scratch *s, __u32 decision, __u32 reason, __u32 rule_id,
				       __u32 flags)
{
	struct airlock_guard_event *e = &s->evt;
	e->hdr.decision = decision;
	e->hdr.reason = reason;
	e->hdr.rule_id = rule_id;
	e->hdr.flags |= flags;
	__u64 size = offsetof(struct airlock_guard_event, path) + (e->path_len & (AIRLOCK_PATH_MAX - 1));
	if (e->path_len >= AIRLOCK_PATH_MAX)
		size = sizeof(*e);
	/* A deny wakes the daemon at once; allowed opens ride the normal drain. */
	long err = bpf_ringbuf_output(&events, e, size,
				      decision == AIRLOCK_DENY ? BPF_RB_FORCE_WAKEUP : events_wakeup_flag());
	account(decision, err);
}

/* The file's identity and path, as the opener sees it. */
static __always_inline void guard_describe_file(struct guard_scratch *s, struct file *file)
{
	struct airlock_guard_event *e = &s->evt;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 flags = 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	e->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	e->ino = BPF_CORE_READ(inode, i_ino);
	e->path_len = path_into(__builtin_preserve_access_index(&file->f_path),
				__builtin_preserve_access_index(&fs->root), e->path, &flags);
	e->hdr.flags |= flags;
}

/*
 * A tamper attempt by a governed process: counted, reported, and refused
 * (LSM) or punished (compat). Returns the LSM verdict.
 */
static __always_inline int guard_tamper(const struct airlock_proc_tag *tag, __u32 reason, __u32 op, __u32 target,
					__u64 arg, struct file *file, int mode)
{
	if (mode == GUARD_KILL)
		bpf_send_signal(SIGKILL);
	struct airlock_counters *c = counters_get();
	if (c)
		c->tamper++;
	struct guard_scratch *s = guard_begin(tag, AIRLOCK_EVENT_TAMPER, op, target, arg);
	if (!s)
		return -EPERM;
	if (file)
		guard_describe_file(s, file);
	guard_send(s, AIRLOCK_DENY, reason, 0, mode == GUARD_KILL ? AIRLOCK_FLAG_KILLED_AFTER : 0);
	return -EPERM;
}

/*
 * An LSM hook's pointer argument as a plain address. The verifier types the
 * argument as a trusted pointer, which global functions (the path walk) do not
 * accept; read from the context it is a scalar, used only through CO-RE reads.
 */
static __always_inline void *lsm_arg_addr(unsigned long long *ctx, int i)
{
	__u64 addr = 0;
	bpf_probe_read_kernel(&addr, sizeof(addr), &ctx[i]);
	return (void *)addr;
}

/* The struct file behind one of the current process's descriptors. */
static __always_inline struct file *current_fd_file(__s64 fd)
{
	if (fd < 0)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if ((__u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

#endif
