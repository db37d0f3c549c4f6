/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Guard hooks: tamper resistance and protected (credential) files.
 *
 * LSM backend: the hooks refuse with -EPERM before anything happens, whoever
 * the governed process is (root included): bpf() at all, signals and ptrace
 * (and everything that needs ptrace access: /proc/PID/mem, pidfd_getfd,
 * process_vm_*) aimed at the daemon, module loading and kexec, any access to
 * bpffs, writes to cgroupfs and to the daemon's /proc files, unlink, rename
 * and unmount in bpffs, and opens of protected files by programs the policy
 * does not allow.
 *
 * Compat backend: no hook can refuse. Syscall tracepoints see the same
 * attempts; the offender is killed (bpf_send_signal) and the attempt audited,
 * but the call itself completes before the kill lands on the way back to user
 * space. docs/security.md states what that does and does not stop.
 *
 * Every hook looks the caller's tag up first (or a cheaper test that rules
 * out nearly every call), so untagged processes pay one lookup.
 */
#ifndef AIRLOCK_GUARD_BPF_H
#define AIRLOCK_GUARD_BPF_H

#include "common.h"
#include "path.h"
#include "exec_match.h"

#define BPF_FS_MAGIC 0xcafe4a11
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define PROC_SUPER_MAGIC 0x9fa0
#define PID_FS_MAGIC 0x50494446
#define BINFMTFS_MAGIC 0x42494e4d
#define GUARD_FMODE_WRITE 0x2
#define PTRACE_MODE_NOAUDIT 0x04
#define PTRACE_TRACEME 0

/* What a guard hook does to a governed offender. */
#define GUARD_REFUSE 0 /* LSM: -EPERM */
#define GUARD_KILL 1   /* compat: SIGKILL on the way back to user space */

static __always_inline bool current_tag(struct airlock_proc_tag *tag)
{
	return tag_of(bpf_get_current_pid_tgid() >> 32, tag);
}

static __always_inline bool is_daemon_tgid(__u32 tgid)
{
	struct airlock_config *cfg = config_get();
	return cfg && cfg->daemon_tgid && tgid == cfg->daemon_tgid;
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

/* ---------------------------------------------------------------- LSM backend */

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

SEC("lsm/bpf")
int BPF_PROG(airlock_guard_bpf, int cmd)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	/* Agents never need bpf(); refusing all of it needs no list of Airlock's objects. */
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_BPF, AIRLOCK_OP_BPF, 0, cmd, NULL, GUARD_REFUSE));
}

SEC("lsm/task_kill")
int BPF_PROG(airlock_guard_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig)
{
	/* Per target task: kill(-1), kill(0) and process groups reach the daemon one by one. */
	if (sig == 0 || !is_daemon_tgid(BPF_CORE_READ(p, tgid)))
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_SIGNAL, AIRLOCK_OP_KILL, BPF_CORE_READ(p, pid),
					sig, NULL, GUARD_REFUSE));
}

/*
 * SIGIO/SIGURG (or any F_SETSIG signal, SIGKILL included) to a process that
 * set itself as a file's owner. The daemon never does, so any such signal to
 * it was arranged by someone else (F_SETOWN by a root process): refused,
 * whoever triggers the I/O.
 */
SEC("lsm/file_send_sigiotask")
int BPF_PROG(airlock_guard_sigio, struct task_struct *tsk, struct fown_struct *fown, int sig)
{
	if (!is_daemon_tgid(BPF_CORE_READ(tsk, tgid)))
		return 0;
	struct airlock_counters *c = counters_get();
	if (c)
		c->tamper++;
	return -EPERM;
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(airlock_guard_ptrace, struct task_struct *child, unsigned int mode)
{
	if (!is_daemon_tgid(BPF_CORE_READ(child, tgid)))
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	/* NOAUDIT probes (ps reading /proc/PID/stat) are refused quietly: not an attack. */
	if (mode & PTRACE_MODE_NOAUDIT)
		return -EPERM;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_PTRACE,
					BPF_CORE_READ(child, pid), mode, NULL, GUARD_REFUSE));
}

/* finit_module, kexec_file_load, and other kernel reads of a file meant to run or rule. */
SEC("lsm/kernel_read_file")
int BPF_PROG(airlock_guard_kernel_read_file, struct file *file, enum kernel_read_file_id id)
{
	if (id == READING_FIRMWARE)
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_KERNEL_READ_FILE, 0, id,
					lsm_arg_addr(ctx, 0), GUARD_REFUSE));
}

/* init_module and kexec_load: code handed over in memory. */
SEC("lsm/kernel_load_data")
int BPF_PROG(airlock_guard_kernel_load_data, enum kernel_load_data_id id)
{
	if (id == LOADING_FIRMWARE)
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_INIT_MODULE, 0, id, NULL,
					GUARD_REFUSE));
}

/* Module autoloading on behalf of a governed process (modprobe would load a planted module). */
SEC("lsm/kernel_module_request")
int BPF_PROG(airlock_guard_module_request, char *kmod_name)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	struct guard_scratch *s = guard_begin(&tag, AIRLOCK_EVENT_TAMPER, AIRLOCK_OP_MODULE_REQUEST, 0, 0);
	if (s) {
		long n = bpf_probe_read_kernel_str(s->evt.name, sizeof(s->evt.name), kmod_name);
		s->evt.name_len = n > 0 ? n : 0;
		struct airlock_counters *c = counters_get();
		if (c)
			c->tamper++;
		guard_send(s, AIRLOCK_DENY, AIRLOCK_REASON_TAMPER_KERNEL_CODE, 0, 0);
	}
	return -EPERM;
}

SEC("lsm/file_open")
int BPF_PROG(airlock_guard_file_open, struct file *file)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	return lsm_verdict(guard_file_open(&tag, lsm_arg_addr(ctx, 0), GUARD_REFUSE));
}

static __always_inline bool in_bpffs(struct inode *dir)
{
	return BPF_CORE_READ(dir, i_sb, s_magic) == BPF_FS_MAGIC;
}

/*
 * A change to a directory entry: refused in bpffs (pins) and in Airlock's own
 * directories, and for Airlock's own files wherever they are linked.
 */
static __always_inline int guard_dir_change(__u32 op, struct inode *dir, struct dentry *dentry, struct inode *dir2)
{
	bool bpffs = in_bpffs(dir) || (dir2 && in_bpffs(dir2));
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	if (bpffs)
		return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_CONTROL_FS, op, 0, 0, NULL, GUARD_REFUSE));
	if (is_self_inode(dir) || (dir2 && is_self_inode(dir2)) || (dentry && is_self_inode(BPF_CORE_READ(dentry, d_inode))))
		return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_AIRLOCK_FILES, op, 0, 0, NULL, GUARD_REFUSE));
	return 0;
}

SEC("lsm/inode_unlink")
int BPF_PROG(airlock_guard_unlink, struct inode *dir, struct dentry *dentry)
{
	return guard_dir_change(AIRLOCK_OP_UNLINK, dir, dentry, NULL);
}

SEC("lsm/inode_rmdir")
int BPF_PROG(airlock_guard_rmdir, struct inode *dir, struct dentry *dentry)
{
	return guard_dir_change(AIRLOCK_OP_RMDIR, dir, dentry, NULL);
}

SEC("lsm/inode_rename")
int BPF_PROG(airlock_guard_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir)
{
	return guard_dir_change(AIRLOCK_OP_RENAME, old_dir, old_dentry, new_dir);
}

SEC("lsm/inode_create")
int BPF_PROG(airlock_guard_create, struct inode *dir)
{
	return guard_dir_change(AIRLOCK_OP_CREATE, dir, NULL, NULL);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(airlock_guard_mkdir, struct inode *dir)
{
	return guard_dir_change(AIRLOCK_OP_CREATE, dir, NULL, NULL);
}

SEC("lsm/inode_symlink")
int BPF_PROG(airlock_guard_symlink, struct inode *dir)
{
	return guard_dir_change(AIRLOCK_OP_CREATE, dir, NULL, NULL);
}

/* A hard link into Airlock's directories, or of one of its files elsewhere. */
SEC("lsm/inode_link")
int BPF_PROG(airlock_guard_link, struct dentry *old_dentry, struct inode *dir)
{
	return guard_dir_change(AIRLOCK_OP_LINK, dir, old_dentry, NULL);
}

/* truncate(2) changes a file without opening it. */
SEC("lsm/path_truncate")
int BPF_PROG(airlock_guard_truncate, const struct path *path)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	if (!is_self_inode(BPF_CORE_READ(path, dentry, d_inode)))
		return 0;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_AIRLOCK_FILES, AIRLOCK_OP_TRUNCATE, 0, 0, NULL,
					GUARD_REFUSE));
}

/* Unmounting bpffs drops every pin in it. */
SEC("lsm/sb_umount")
int BPF_PROG(airlock_guard_umount, struct vfsmount *mnt, int flags)
{
	if (BPF_CORE_READ(mnt, mnt_sb, s_magic) != BPF_FS_MAGIC)
		return 0;
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	return lsm_verdict(guard_tamper(&tag, AIRLOCK_REASON_TAMPER_CONTROL_FS, AIRLOCK_OP_UMOUNT, 0, 0, NULL,
					GUARD_REFUSE));
}

/* ------------------------------------------------------------- compat backend */

/* Compat: the offender dies on its way back to user space; the call itself ran. */
static __always_inline int compat_tamper(__u32 reason, __u32 op, __u32 target, __u64 arg)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	guard_tamper(&tag, reason, op, target, arg, NULL, GUARD_KILL);
	return 0;
}

/* A signal from a governed process that reaches the daemon. */
static __always_inline int compat_signal(__u32 op, __u32 target, __u64 sig)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	/* Before the signal is sent: the daemon refuses a stop request from this sender. */
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&tamper_senders, &tgid, &now, BPF_ANY);
	guard_tamper(&tag, AIRLOCK_REASON_TAMPER_SIGNAL, op, target, sig, NULL, GUARD_KILL);
	return 0;
}

/* kill(2)'s targets: a pid, -1 (everything), 0 (own group), -pgrp. */
static __always_inline bool kill_hits_daemon(__s32 pid)
{
	if (pid > 0)
		return is_daemon_tid(pid);
	if (pid == -1)
		return true;
	struct airlock_config *cfg = config_get();
	if (!cfg || !cfg->daemon_pgid)
		return false;
	if (pid == 0) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		return pid_nr(BPF_CORE_READ(task, signal, pids[PIDTYPE_PGID])) == cfg->daemon_pgid;
	}
	return (__u32)(-pid) == cfg->daemon_pgid;
}

SEC("tracepoint/syscalls/sys_enter_bpf")
int airlock_compat_bpf(struct trace_event_raw_sys_enter *ctx)
{
	return compat_tamper(AIRLOCK_REASON_TAMPER_BPF, AIRLOCK_OP_BPF, 0, ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_kill")
int airlock_compat_kill(struct trace_event_raw_sys_enter *ctx)
{
	__s32 pid = ctx->args[0];
	__u64 sig = ctx->args[1];
	if (sig == 0 || !kill_hits_daemon(pid))
		return 0;
	return compat_signal(AIRLOCK_OP_KILL, pid, sig);
}

SEC("tracepoint/syscalls/sys_enter_tkill")
int airlock_compat_tkill(struct trace_event_raw_sys_enter *ctx)
{
	__s32 tid = ctx->args[0];
	if (ctx->args[1] == 0 || !is_daemon_tid(tid))
		return 0;
	return compat_signal(AIRLOCK_OP_TKILL, tid, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_tgkill")
int airlock_compat_tgkill(struct trace_event_raw_sys_enter *ctx)
{
	__s32 tid = ctx->args[1];
	if (ctx->args[2] == 0 || !is_daemon_tid(tid))
		return 0;
	return compat_signal(AIRLOCK_OP_TGKILL, tid, ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_rt_sigqueueinfo")
int airlock_compat_sigqueue(struct trace_event_raw_sys_enter *ctx)
{
	__s32 pid = ctx->args[0];
	if (ctx->args[1] == 0 || !is_daemon_tid(pid))
		return 0;
	return compat_signal(AIRLOCK_OP_SIGQUEUE, pid, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_rt_tgsigqueueinfo")
int airlock_compat_tgsigqueue(struct trace_event_raw_sys_enter *ctx)
{
	__s32 tid = ctx->args[1];
	if (ctx->args[2] == 0 || !is_daemon_tid(tid))
		return 0;
	return compat_signal(AIRLOCK_OP_SIGQUEUE, tid, ctx->args[2]);
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

/* The process a pidfd (or an open /proc/PID directory) stands for. */
static __always_inline __u32 pidfd_target(__s64 fd)
{
	struct file *file = current_fd_file(fd);
	if (!file)
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	unsigned long magic = BPF_CORE_READ(inode, i_sb, s_magic);
	if (magic == PROC_SUPER_MAGIC)
		return proc_inode_pid(inode);
	/* pidfs (6.9+) keeps the struct pid in the inode; older anon-inode pidfds in the file. */
	if (magic == PID_FS_MAGIC)
		return pid_nr((struct pid *)BPF_CORE_READ(inode, i_private));
	return pid_nr((struct pid *)BPF_CORE_READ(file, private_data));
}

SEC("tracepoint/syscalls/sys_enter_pidfd_send_signal")
int airlock_compat_pidfd_signal(struct trace_event_raw_sys_enter *ctx)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag) || ctx->args[1] == 0)
		return 0;
	__u32 target = pidfd_target(ctx->args[0]);
	if (!is_daemon_tid(target))
		return 0;
	return compat_signal(AIRLOCK_OP_PIDFD_SIGNAL, target, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_pidfd_getfd")
int airlock_compat_pidfd_getfd(struct trace_event_raw_sys_enter *ctx)
{
	struct airlock_proc_tag tag;
	if (!current_tag(&tag))
		return 0;
	__u32 target = pidfd_target(ctx->args[0]);
	if (!is_daemon_tid(target))
		return 0;
	return compat_tamper(AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_PIDFD_GETFD, target, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int airlock_compat_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	__s32 pid = ctx->args[1];
	if (ctx->args[0] == PTRACE_TRACEME || !is_daemon_tid(pid))
		return 0;
	return compat_tamper(AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_PTRACE, pid, ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int airlock_compat_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	__s32 pid = ctx->args[0];
	if (!is_daemon_tid(pid))
		return 0;
	return compat_tamper(AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_VM_WRITEV, pid, 0);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int airlock_compat_vm_readv(struct trace_event_raw_sys_enter *ctx)
{
	__s32 pid = ctx->args[0];
	if (!is_daemon_tid(pid))
		return 0;
	return compat_tamper(AIRLOCK_REASON_TAMPER_PTRACE, AIRLOCK_OP_VM_READV, pid, 0);
}

SEC("tracepoint/syscalls/sys_enter_init_module")
int airlock_compat_init_module(struct trace_event_raw_sys_enter *ctx)
{
	return compat_tamper(AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_INIT_MODULE, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_finit_module")
int airlock_compat_finit_module(struct trace_event_raw_sys_enter *ctx)
{
	return compat_tamper(AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_FINIT_MODULE, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_kexec_load")
int airlock_compat_kexec_load(struct trace_event_raw_sys_enter *ctx)
{
	return compat_tamper(AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_KEXEC, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_kexec_file_load")
int airlock_compat_kexec_file_load(struct trace_event_raw_sys_enter *ctx)
{
	return compat_tamper(AIRLOCK_REASON_TAMPER_KERNEL_CODE, AIRLOCK_OP_KEXEC, 0, 0);
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
	guard_file_open(&tag, file, GUARD_KILL);
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

#endif
