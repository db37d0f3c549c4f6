/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Tamper resistance, compat backend: no hook can refuse. Syscall tracepoints
 * see the same attempts the LSM hooks refuse (bpf(), signals, ptrace,
 * pidfd_getfd and process_vm_* aimed at the daemon, module loading, kexec);
 * the offender is killed (bpf_send_signal) and the attempt audited, but the
 * call itself completes before the kill lands on the way back to user space.
 * docs/security.md states what that does and does not stop.
 */
#ifndef AIRLOCK_TAMPER_COMPAT_BPF_H
#define AIRLOCK_TAMPER_COMPAT_BPF_H

#include "guard_common.h"

#define PID_FS_MAGIC 0x50494446
#define PTRACE_TRACEME 0

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

#endif
