/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Strict sessions (exec.deny_session_written): a session cannot execute a
 * file it wrote. Identity by content cannot tell a copy of a protected program
 * with one byte appended from a new program; "this session wrote it" can.
 *
 * Every regular file a process of such a session opens for writing (create,
 * truncate, append, read-write) is recorded by (session, device, inode). A
 * rename keeps the inode, so a file written and then moved into place stays
 * recorded; a copy is a new inode opened for writing. At exec the executed
 * file's inode is looked up. The open hooks (file_open on the LSM backend, the
 * open syscalls' exit on compat) do the recording, after their own verdict.
 * Roles without the option pay one flag test per open for writing.
 */
#ifndef AIRLOCK_SESSION_WRITTEN_H
#define AIRLOCK_SESSION_WRITTEN_H

#include "common.h"
#include "exec_identity.h"

#define WRITTEN_FMODE_WRITE 0x2
#define WRITTEN_S_IFMT 00170000
#define WRITTEN_S_IFREG 0100000

/*
 * Records a file a governed process opened, when it is open for writing and
 * the session's role asks for it. A file the map cannot take marks the session
 * full (it executes nothing from then on); when even that mark cannot be
 * written the writer is killed (and, on LSM, its open refused), so no written
 * file escapes both records. Returns the LSM verdict.
 */
static __always_inline int written_record(const struct airlock_proc_tag *tag, struct file *file)
{
	__u32 fmode = BPF_CORE_READ(file, f_mode);
	if (!(fmode & WRITTEN_FMODE_WRITE))
		return 0;
	if (!(exec_role_flags(tag) & AIRLOCK_ROLE_DENY_SESSION_WRITTEN))
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	__u16 mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & WRITTEN_S_IFMT) != WRITTEN_S_IFREG)
		return 0;
	struct airlock_written_key key = {
		.session_id = tag->session_id,
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	__u32 one = 1;
	if (bpf_map_update_elem(&session_written, &key, &one, BPF_ANY) == 0)
		return 0;
	__u64 session = tag->session_id;
	if (bpf_map_update_elem(&session_written_full, &session, &one, BPF_ANY) == 0)
		return 0;
	bpf_send_signal(SIGKILL);
	return -EPERM;
}

/*
 * Whether the session wrote the file it is executing (or can no longer tell:
 * its written set overflowed). The key lives in the per-CPU exec scratch: the
 * exec programs' stacks are near the verifier's limit.
 */
static __always_inline bool written_by_session(struct airlock_written_key *key, __u64 session_id, struct file *file)
{
	if (bpf_map_lookup_elem(&session_written_full, &session_id))
		return true;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	key->session_id = session_id;
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key->ino = BPF_CORE_READ(inode, i_ino);
	return bpf_map_lookup_elem(&session_written, key) != NULL;
}

#endif
