/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Opens by governed processes, both backends. A protected (credential) file
 * opens only for a program the session's policy allows; an open that reaches
 * for Airlock's controls (any access to bpffs, writes to cgroupfs,
 * binfmt_misc, the daemon's /proc files, or Airlock's own files) is a tamper
 * attempt. The LSM backend refuses in file_open, before the open returns; the
 * compat backend judges the descriptor an open returned and kills the opener
 * on its way back to user space.
 */
#ifndef AIRLOCK_PROTECTED_FILES_BPF_H
#define AIRLOCK_PROTECTED_FILES_BPF_H

#include "guard_common.h"
#include "exec_match.h"
#include "session_written.h"

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define BINFMTFS_MAGIC 0x42494e4d
#define GUARD_FMODE_WRITE 0x2

/*
 * A protected file opened by a governed process: allowed only when the
 * session's rule set lets the opener's program read it. The program is the
 * executable's file name (symlinks resolved), and only a root-owned
 * executable counts: a copy or rename made by a non-root session is its own.
 */
static __always_inline int guard_protected(const struct airlock_proc_tag *tag, struct file *file, __u64 class_hash,
					   __u32 fmode, int mode)
{
	__u32 set_id = 0, rule_id = 0;
	__u32 reason = rule_set_of(tag, &set_id);
	if (reason == AIRLOCK_REASON_NONE) {
		if (!set_id)
			return 0;
		struct airlock_file_rule_key rk = { .set_id = set_id, .class_hash = class_hash };
		struct airlock_file_rule_value *rv = bpf_map_lookup_elem(&file_rules, &rk);
		if (!rv)
			return 0; /* this role does not protect the file */
		rule_id = rv->rule_id;
	}
	struct guard_scratch *s = guard_begin(tag, AIRLOCK_EVENT_FILE_OPEN, AIRLOCK_OP_OPEN, 0, fmode);
	if (!s)
		return -EPERM;
	struct airlock_guard_event *e = &s->evt;
	guard_describe_file(s, file);

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	long n = bpf_probe_read_kernel_str(e->name, sizeof(e->name), BPF_CORE_READ(exe, f_path.dentry, d_name.name));
	e->name_len = n > 0 ? n : 0;
	e->exe_uid = BPF_CORE_READ(exe, f_inode, i_uid.val);
	struct name_hashes h = {};
	name_hash((struct name_buf *)e->name, &h);

	bool allowed = false;
	if (reason == AIRLOCK_REASON_NONE) {
		if (n > 0 && e->exe_uid == 0) {
			struct airlock_file_allow_key ak = { .set_id = set_id, .class_hash = class_hash, .name_hash = h.hash };
			allowed = bpf_map_lookup_elem(&file_allow, &ak) != NULL;
		}
		if (!allowed)
			reason = AIRLOCK_REASON_PROTECTED_FILE;
	}
	__u32 flags = 0;
	if (!allowed && mode == GUARD_KILL) {
		bpf_send_signal(SIGKILL);
		flags = AIRLOCK_FLAG_KILLED_AFTER;
	}
	guard_send(s, allowed ? AIRLOCK_ALLOW : AIRLOCK_DENY, allowed ? AIRLOCK_REASON_NONE : reason, rule_id, flags);
	return allowed ? 0 : -EPERM;
}

/* Judges a governed process's open of `file` (both backends). Returns the LSM verdict. */
static __always_inline int guard_file_open(const struct airlock_proc_tag *tag, struct file *file, int mode)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);
	unsigned long magic = BPF_CORE_READ(sb, s_magic);
	__u32 fmode = BPF_CORE_READ(file, f_mode);

	/* Pins, maps and programs in bpffs: no access at all. */
	if (magic == BPF_FS_MAGIC)
		return guard_tamper(tag, AIRLOCK_REASON_TAMPER_CONTROL_FS, AIRLOCK_OP_OPEN, 0, fmode, file, mode);
	/*
	 * cgroup.kill, cgroup.freeze, cgroup.procs, memory.max could stop the daemon;
	 * a binfmt_misc handler with the 'O' flag would hand an interpreter an open
	 * descriptor of a protected file without an open of its own.
	 */
	if ((magic == CGROUP2_SUPER_MAGIC || magic == CGROUP_SUPER_MAGIC || magic == BINFMTFS_MAGIC) &&
	    (fmode & GUARD_FMODE_WRITE))
		return guard_tamper(tag, AIRLOCK_REASON_TAMPER_CONTROL_FS, AIRLOCK_OP_OPEN, 0, fmode, file, mode);
	/* /proc/<daemon>/mem, oom_score_adj and the like, opened for writing. */
	if (magic == PROC_SUPER_MAGIC && (fmode & GUARD_FMODE_WRITE)) {
		__u32 pid = proc_inode_pid(inode);
		if (is_daemon_tid(pid))
			return guard_tamper(tag, AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_OPEN, pid, fmode, file, mode);
		/* The switch that would stop every LSM hook (guard_common.h). */
		if (is_ftrace_switch(file))
			return guard_tamper(tag, AIRLOCK_REASON_TAMPER_CONTROL_FS, AIRLOCK_OP_OPEN, 0, fmode, file, mode);
	}
	/* Writing into Airlock's policy or state directory (an existing file or a new one). */
	if ((fmode & GUARD_FMODE_WRITE) && is_self_inode(BPF_CORE_READ(file, f_path.dentry, d_parent, d_inode)))
		return guard_tamper(tag, AIRLOCK_REASON_TAMPER_AIRLOCK_FILES, AIRLOCK_OP_OPEN, 0, fmode, file, mode);
	struct airlock_inode_key key = { .dev = BPF_CORE_READ(sb, s_dev), .ino = BPF_CORE_READ(inode, i_ino) };
	struct airlock_inode_value *pv = bpf_map_lookup_elem(&protected_inodes, &key);
	if (!pv)
		return 0;
	if (pv->class_hash == AIRLOCK_CLASS_SELF) {
		if (fmode & GUARD_FMODE_WRITE)
			return guard_tamper(tag, AIRLOCK_REASON_TAMPER_AIRLOCK_FILES, AIRLOCK_OP_OPEN, 0, fmode, file, mode);
		return 0; /* reading the policy or the audit trail is fine */
	}
	return guard_protected(tag, file, pv->class_hash, fmode, mode);
}

SEC("lsm/file_open")
int BPF_PROG(airlock_guard_file_open, struct file *file)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	struct file *opened = lsm_arg_addr(ctx, 0);
	int verdict = guard_file_open(&tag, opened, GUARD_REFUSE);
	if (verdict == 0)
		verdict = written_record(&tag, opened);
	return lsm_verdict(verdict);
}

/*
 * Opens, judged on the descriptor the call returns: the file itself, not the
 * name it was reached by. A denied open kills the opener before it returns
 * to user space, so it never reads through the descriptor (a sibling thread
 * racing a read on it in that window is the gap security.md names).
 */
static __always_inline int compat_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;
	if (fd < 0)
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	struct file *file = current_fd_file(fd);
	if (!file)
		return 0;
	if (guard_file_open(&tag, file, GUARD_KILL) == 0)
		written_record(&tag, file);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int airlock_compat_openat(struct trace_event_raw_sys_exit *ctx)
{
	return compat_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int airlock_compat_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return compat_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_open")
int airlock_compat_open(struct trace_event_raw_sys_exit *ctx)
{
	return compat_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int airlock_compat_open_by_handle(struct trace_event_raw_sys_exit *ctx)
{
	return compat_open_exit(ctx);
}

/* creat(): an open for writing by another name (what strict sessions record). */
SEC("tracepoint/syscalls/sys_exit_creat")
int airlock_compat_creat(struct trace_event_raw_sys_exit *ctx)
{
	return compat_open_exit(ctx);
}

#endif
