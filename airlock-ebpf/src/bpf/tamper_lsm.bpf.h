/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Tamper resistance, LSM backend: the hooks refuse with -EPERM before anything
 * happens, whoever the governed process is (root included): bpf() at all,
 * signals and ptrace (and everything that needs ptrace access: /proc/PID/mem,
 * pidfd_getfd, process_vm_*) aimed at the daemon, module loading and kexec,
 * unlink, rename and unmount in bpffs, and changes to the entries of
 * Airlock's own files and directories. (Opens are judged in
 * protected_files.bpf.h.)
 */
#ifndef AIRLOCK_TAMPER_LSM_BPF_H
#define AIRLOCK_TAMPER_LSM_BPF_H

#include "guard_common.h"

#define PTRACE_MODE_NOAUDIT 0x04

static __always_inline bool is_daemon_tgid(__u32 tgid)
{
	struct airlock_config *cfg = config_get();
	return cfg && cfg->daemon_tgid && tgid == cfg->daemon_tgid;
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

#endif
