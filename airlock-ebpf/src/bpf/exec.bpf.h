/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Exec hooks.
 *
 * sched_process_exec (both backends): the decision that no race defeats. The
 * new image is in place, its argv lives in memory no other thread can touch
 * (the exec killed every other thread and the mm is new), and the task has
 * not run one instruction of it. A denied exec is killed here.
 *
 * bprm_check_security (LSM backend): the early, clean refusal (-EPERM to the
 * caller) from argv as execve() was called. It can be raced by a thread that
 * rewrites argv after the syscall began; the re-check above catches that.
 */
#ifndef AIRLOCK_EXEC_BPF_H
#define AIRLOCK_EXEC_BPF_H

#include "common.h"
#include "path.h"
#include "exec_match.h"
#include "exec_identity.h"
#include "session_written.h"

/* One exec's names and facts, as every rule set is judged against them. */
struct exec_names {
	__u64 exe_hash; /* the executed file's name */
	struct name_hashes script_name;
	struct exec_identity_facts id;
	__u32 role_flags;
	__u32 script;   /* the exec is a #! script's (its name in script_name) */
	__u32 operands; /* an interpreter's operands may name the program */
	__u32 via;      /* out: how the rule that matched found the program */
};

/*
 * Judges the names the program goes by against one rule set. Returns the
 * deny reason (AIRLOCK_REASON_NONE: no rule of the set names it); the rule
 * that matched is left in s->words.rule_id. A global function: the verifier
 * checks it once, however many rule sets (block, limit, approval) a role has.
 */
AIRLOCK_GLOBAL int judge_names(__u32 set_id, struct exec_scratch *s, struct exec_names *n)
{
	if (!s || !n)
		return AIRLOCK_REASON_NONE;
	struct exec_words *words = &s->words;
	__u64 exe_hash = n->exe_hash;
	__u32 reason = judge_program(set_id, exe_hash, 1, words);
	if (reason) {
		n->via = AIRLOCK_VIA_EXECUTABLE;
		return reason;
	}
	if (s->argv0_base_hash != exe_hash) {
		reason = judge_program(set_id, s->argv0_base_hash, 1, words);
		if (reason) {
			n->via = AIRLOCK_VIA_ARGV0;
			return reason;
		}
	}
	if (n->script) {
		/* The #! handler put the script's path after the interpreter (and its
		 * optional argument); the script's own arguments follow it. */
		__u32 idx = word_index(words, n->script_name.hash);
		reason = judge_program(set_id, n->script_name.base_hash, idx ? idx + 1 : 1, words);
		if (reason) {
			n->via = AIRLOCK_VIA_SCRIPT;
			return reason;
		}
	}
	/* The content is a protected program's, whatever the file is called. */
	if (n->id.id_flags & AIRLOCK_ID_PROGRAM) {
#pragma unroll
		for (int i = 0; i < AIRLOCK_IDENTITY_NAMES; i++) {
			__u64 name = n->id.names[i];
			if (!name || name == exe_hash || name == s->argv0_base_hash)
				continue;
			reason = judge_program(set_id, name, 1, words);
			if (reason) {
				n->via = AIRLOCK_VIA_IDENTITY;
				return reason;
			}
		}
	}
	if (n->id.id_flags & AIRLOCK_ID_LOADER) {
		/* Agents never need to run ld.so themselves; where a role allows it,
		 * the program it loads is judged by name with its arguments. */
		if (!(n->role_flags & AIRLOCK_ROLE_ALLOW_LOADER))
			return AIRLOCK_REASON_LOADER;
		reason = judge_operands(set_id, s);
		if (reason) {
			n->via = AIRLOCK_VIA_LOADED;
			return reason;
		}
	}
	if (n->operands && (n->id.id_flags & AIRLOCK_ID_INTERPRETER)) {
		/* python3 /x/aws iam create-role: the script is the program. */
		reason = judge_operands(set_id, s);
		/* python3 -mawscli, -m awscli.clidriver, -m runpy awscli: the module
		 * is a name of the program it runs, by its package and its full name. */
		if (!reason && find_module(s)) {
			reason = judge_program(set_id, s->module.top, s->module.args, words);
			if (!reason && s->module.full != s->module.top)
				reason = judge_program(set_id, s->module.full, s->module.args, words);
		}
		if (reason) {
			n->via = AIRLOCK_VIA_INTERPRETER;
			return reason;
		}
	}
	return AIRLOCK_REASON_NONE;
}

/*
 * One rate limit: admits the exec while the session's bucket for the rule
 * holds a token (GCRA, see struct airlock_rule_limit). `consume` takes the
 * token (sched_process_exec); the early LSM check only looks, because the exec
 * it lets through is judged again. The update is a compare-and-swap, so racing
 * execs cannot share one token; one that keeps losing the race is refused.
 */
static __always_inline bool rate_admit(__u64 session_id, __u32 rule_id, const struct airlock_rule_limit *lim,
				       bool consume)
{
	struct airlock_rate_key key = { .session_id = session_id, .rule_id = rule_id };
	__u64 now = bpf_ktime_get_boot_ns();
	struct airlock_rate_value *v = bpf_map_lookup_elem(&rate_state, &key);
	if (!v) {
		if (!consume)
			return true;
		/* A full bucket: this exec takes its first token. */
		struct airlock_rate_value first = { .tat_ns = now + lim->interval_ns };
		if (bpf_map_update_elem(&rate_state, &key, &first, BPF_NOEXIST) == 0)
			return true;
		v = bpf_map_lookup_elem(&rate_state, &key);
		if (!v)
			return false;
	}
#pragma unroll
	for (int attempt = 0; attempt < 4; attempt++) {
		__u64 tat = *(volatile __u64 *)&v->tat_ns;
		__u64 base = tat > now ? tat : now;
		if (base - now > lim->burst_ns)
			return false;
		if (!consume)
			return true;
		if (__sync_val_compare_and_swap(&v->tat_ns, tat, base + lim->interval_ns) == tat)
			return true;
	}
	return false;
}

/* A limit rule's verdict: its time window, then its rate. */
static __always_inline __u32 limit_verdict(__u64 session_id, __u32 rule_id, bool consume)
{
	struct airlock_rule_limit *lim = bpf_map_lookup_elem(&rule_limits, &rule_id);
	/* Written before any role set names the rule: a missing entry fails closed. */
	if (!lim)
		return AIRLOCK_REASON_RATE_LIMITED;
	if (lim->flags & AIRLOCK_LIMIT_CLOSED)
		return AIRLOCK_REASON_OUTSIDE_TIME_WINDOW;
	if (lim->interval_ns && !rate_admit(session_id, rule_id, lim, consume))
		return AIRLOCK_REASON_RATE_LIMITED;
	return AIRLOCK_REASON_NONE;
}

/*
 * Decides an exec from the hashed argv in s->words and the names the program
 * goes by. Block rules first: a command a block rule names is blocked whatever
 * other rule also names it. Then the limits: the session's limit on every
 * exec, and the first limit rule that names the command. Returns the deny
 * reason (AIRLOCK_REASON_NONE: allowed; AIRLOCK_REASON_APPROVAL_REQUIRED: an
 * approval rule names it and the caller still has to look for a grant); the
 * rule is left in s->words.rule_id. `consume`: take rate-limit tokens.
 */
static __always_inline __u32 judge_exec(const struct airlock_proc_tag *tag, struct exec_scratch *s,
					struct exec_names *n, struct file *file, bool consume)
{
	struct airlock_role_set rs;
	__u32 reason = role_set_of(tag, &rs);
	if (reason != AIRLOCK_REASON_NONE ||
	    (rs.set_id == 0 && rs.approval_set_id == 0 && rs.limit_set_id == 0 && rs.every_exec_rule == 0 &&
	     !(rs.flags & AIRLOCK_ROLE_DENY_SESSION_WRITTEN)))
		return reason;
	n->role_flags = rs.flags;
	n->via = 0;

	/* A file with no name on disk cannot be told apart by name: refused unless the role allows it. */
	if (n->id.fileless && !(rs.flags & AIRLOCK_ROLE_ALLOW_FILELESS))
		return AIRLOCK_REASON_FILELESS;
	/* A strict role: nothing the session wrote runs, whatever it is called or contains. */
	if ((rs.flags & AIRLOCK_ROLE_DENY_SESSION_WRITTEN) && written_by_session(&s->written_key, tag->session_id, file))
		return AIRLOCK_REASON_SESSION_WRITTEN;

	if (rs.set_id) {
		reason = judge_names(rs.set_id, s, n);
		if (reason)
			return reason;
	}
	if (rs.every_exec_rule) {
		reason = limit_verdict(tag->session_id, rs.every_exec_rule, consume);
		if (reason) {
			s->words.rule_id = rs.every_exec_rule;
			return reason;
		}
	}
	if (rs.limit_set_id) {
		reason = judge_names(rs.limit_set_id, s, n);
		if (reason == AIRLOCK_REASON_RULE) {
			reason = limit_verdict(tag->session_id, s->words.rule_id, consume);
			/* Under a soft security block, what the policies name needs a person's approval. */
			if (!reason && (rs.flags & AIRLOCK_ROLE_SOFT_BLOCKED))
				return AIRLOCK_REASON_APPROVAL_REQUIRED;
		}
		if (reason)
			return reason;
		/* Within its limits: no rule decided this exec. */
		n->via = 0;
		s->words.rule_id = 0;
	}
	if (rs.approval_set_id) {
		reason = judge_names(rs.approval_set_id, s, n);
		/* An argv too long to inspect under an approval rule stays refused: no grant can name it. */
		if (reason == AIRLOCK_REASON_RULE)
			return AIRLOCK_REASON_APPROVAL_REQUIRED;
		return reason;
	}
	return AIRLOCK_REASON_NONE;
}

/*
 * What a ONCE grant is bound to, computed alike by every exec hook on every
 * pass, so that a grant written from one hook's event serves the others:
 * - a program run directly: all of argv, and the executed file (FNV-1a of its
 *   device, inode number and size);
 * - a #! script: its arguments (after argv[0] as the caller wrote it; after
 *   the script's path in the interpreter's argv the new image gets), and the
 *   script's path as execve was given it. The kernel keeps no handle on the
 *   script file once its interpreter took over, so its path names it.
 * `script` is whether the exec is a script's; `start` the first argument word.
 */
static __always_inline void grant_binding(struct exec_scratch *s, struct linux_binprm *bprm, bool script,
					  const struct name_hashes *filename, __u32 start)
{
	struct airlock_exec_event *e = &s->evt;
	args_hash(s, start);
	e->argv_hash = s->argv_hash;
	if (script) {
		e->exe_identity = filename->hash;
		return;
	}
	struct inode *inode = BPF_CORE_READ(bprm, file, f_inode);
	__u64 dev = BPF_CORE_READ(inode, i_sb, s_dev);
	__u64 ino = BPF_CORE_READ(inode, i_ino);
	__u64 size = BPF_CORE_READ(inode, i_size);
	__u64 h = AIRLOCK_FNV_OFFSET;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		h = fnv_step(h, (dev >> (8 * i)) & 0xff);
		h = fnv_step(h, (ino >> (8 * i)) & 0xff);
		h = fnv_step(h, (size >> (8 * i)) & 0xff);
	}
	e->exe_identity = h;
}

/*
 * An exec an approval rule holds: is there a grant? A ONCE grant (these
 * arguments, this file, this session) is consumed when `consume`
 * (sched_process_exec): the hash map's delete is atomic, so of two execs
 * racing for one grant only the one whose delete succeeds runs. The early LSM
 * check only looks: the exec it lets through is judged again, and consumes,
 * at sched_process_exec. Needs grant_binding first. Returns
 * AIRLOCK_REASON_NONE when a grant allows the exec.
 */
static __always_inline __u32 approval_grant(struct exec_scratch *s, const struct airlock_proc_tag *tag, bool consume)
{
	struct airlock_exec_event *e = &s->evt;
	struct airlock_grant_key *key = &s->grant_key;
	__u64 now = bpf_ktime_get_boot_ns();
	key->session_id = tag->session_id;
	key->kind = AIRLOCK_GRANT_ONCE;
	key->rule_id = 0;
	key->argv_hash = e->argv_hash;
	key->exe_identity = e->exe_identity;
	struct airlock_grant_value *g = bpf_map_lookup_elem(&approval_grants, key);
	if (g && g->expires_ns > now) {
		__u64 request = g->request;
		if (!consume || bpf_map_delete_elem(&approval_grants, key) == 0) {
			e->grant_request = request;
			return AIRLOCK_REASON_NONE;
		}
	}
	key->kind = AIRLOCK_GRANT_RULE;
	key->rule_id = s->words.rule_id;
	key->argv_hash = 0;
	key->exe_identity = 0;
	g = bpf_map_lookup_elem(&approval_grants, key);
	if (g && g->expires_ns > now) {
		e->grant_request = g->request;
		return AIRLOCK_REASON_NONE;
	}
	return AIRLOCK_REASON_APPROVAL_REQUIRED;
}

/* A #! script's first bytes (bprm->buf holds the file's head before any handler runs). */
static __always_inline bool head_is_script(struct linux_binprm *bprm)
{
	char head[2] = {};
	bpf_probe_read_kernel(head, sizeof(head), __builtin_preserve_access_index(&bprm->buf));
	return head[0] == '#' && head[1] == '!';
}

/* Event flags for what the identity lookup found. */
static __always_inline __u32 identity_event_flags(const struct exec_identity_facts *id)
{
	__u32 flags = 0;
	if (id->id_flags & ID_FACT_CONTENT_IS_NAME)
		flags |= AIRLOCK_FLAG_CONTENT_IS_NAME;
	if (id->fileless)
		flags |= AIRLOCK_FLAG_FILELESS;
	if (id->id_flags & AIRLOCK_ID_LOADER)
		flags |= AIRLOCK_FLAG_LOADER;
	if (id->id_flags & AIRLOCK_ID_INTERPRETER)
		flags |= AIRLOCK_FLAG_INTERPRETER;
	if (id->id_flags & AIRLOCK_ID_PROGRAM)
		flags |= AIRLOCK_FLAG_IDENTITY;
	return flags;
}

/* True when execve's filename is "/dev/fd/N": execveat(fd, "", AT_EMPTY_PATH) of a #! script. */
static __always_inline bool filename_is_dev_fd(const char *f)
{
	return f[0] == '/' && f[1] == 'd' && f[2] == 'e' && f[3] == 'v' && f[4] == '/' && f[5] == 'f' &&
	       f[6] == 'd' && f[7] == '/';
}

static __always_inline struct exec_scratch *exec_scratch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&exec_scratch, &zero);
}

static __always_inline void exec_finish(struct exec_scratch *s, __u32 reason, __u32 via)
{
	struct airlock_exec_event *e = &s->evt;
	__u32 decision = reason ? AIRLOCK_DENY : AIRLOCK_ALLOW;
	e->hdr.decision = decision;
	e->hdr.reason = reason;
	e->hdr.rule_id = (reason || (e->hdr.flags & AIRLOCK_FLAG_GRANTED)) ? s->words.rule_id : 0;
	e->match_via = via;

	__u64 size = offsetof(struct airlock_exec_event, argv) + (e->argv_len & (AIRLOCK_ARGV_MAX - 1));
	if (e->argv_len >= AIRLOCK_ARGV_MAX)
		size = sizeof(struct airlock_exec_event);
	/* A deny wakes the daemon at once: its block message must reach the caller promptly. */
	long err = bpf_ringbuf_output(&events, e, size, reason ? BPF_RB_FORCE_WAKEUP : events_wakeup_flag());
	account(decision, err);
}

/* Fills the parts of the event both exec hooks share: who, where, what file. */
static __always_inline __u32 exec_describe(struct exec_scratch *s, const struct airlock_proc_tag *tag,
					   struct task_struct *task, struct linux_binprm *bprm)
{
	struct airlock_exec_event *e = &s->evt;
	__u32 flags = 0;
	header_fill(&e->hdr, AIRLOCK_EVENT_EXEC, tag);
	e->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->argc = BPF_CORE_READ(bprm, argc);
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	e->filename_len = n > 0 ? n : 0;
	struct file *file = BPF_CORE_READ(bprm, file);
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	const struct path *root = __builtin_preserve_access_index(&fs->root);
	e->exe_len = path_into(__builtin_preserve_access_index(&file->f_path), root, e->exe, &flags);
	e->cwd_len = path_into(__builtin_preserve_access_index(&fs->pwd), root, e->cwd, &flags);
	s->words.nwords = 0;
	s->words.too_long = 0;
	s->words.rule_id = 0;
	e->argv_hash = 0;
	e->exe_identity = 0;
	e->grant_request = 0;
	return flags;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(airlock_sched_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = task->tgid;
	struct airlock_proc_tag tag;
	if (!tag_of(tgid, &tag))
		return 0;
	struct exec_scratch *s = exec_scratch_get();
	if (!s) {
		/* Cannot happen (a one-slot per-CPU array); never let it open a hole. */
		bpf_send_signal(SIGKILL);
		return 0;
	}
	struct airlock_exec_event *e = &s->evt;
	__u32 flags = exec_describe(s, &tag, task, bprm);

	/* The new image's own copy of argv: no other thread exists to change it. */
	struct mm_struct *mm = task->mm;
	__u64 arg_start = BPF_CORE_READ(mm, arg_start);
	__u64 len = BPF_CORE_READ(mm, arg_end) - arg_start;
	if (len > AIRLOCK_ARGV_MAX) {
		len = AIRLOCK_ARGV_MAX;
		s->words.too_long = 1;
		flags |= AIRLOCK_FLAG_ARGV_TRUNCATED;
	}
	if (bpf_probe_read_user(e->argv, len, (void *)arg_start) != 0) {
		len = 0;
		s->words.too_long = 1;
		flags |= AIRLOCK_FLAG_ARGV_TRUNCATED;
	}
	e->argv_len = len;
	tokenize(s);

	bool script = BPF_CORE_READ(bprm, interp) != BPF_CORE_READ(bprm, filename);
	if (script)
		flags |= AIRLOCK_FLAG_SCRIPT;
	struct exec_names n = {};
	struct name_hashes exe_name = {};
	/* The leaf component of the executable's path is its name. */
	name_hash((struct name_buf *)e->exe, &exe_name);
	n.exe_hash = exe_name.hash;
	n.script = script;
	n.operands = 1;
	if (script)
		name_hash((struct name_buf *)e->filename, &n.script_name);

	identity_of(s, bprm, exe_name.hash, &n.id);
	/* The #! script itself is out of reach here (bprm->file is its
	 * interpreter): one passed as an open file descriptor has no name to judge. */
	if (script && filename_is_dev_fd(e->filename))
		n.id.fileless = 1;
	flags |= identity_event_flags(&n.id);

	__u32 reason = judge_exec(&tag, s, &n, BPF_CORE_READ(bprm, file), true);
	if (reason == AIRLOCK_REASON_APPROVAL_REQUIRED) {
		/* The #! handler put the script's path after the interpreter (and its optional argument). */
		__u32 start = 0;
		if (script) {
			__u32 idx = word_index(&s->words, n.script_name.hash);
			start = idx ? idx + 1 : 1;
		}
		grant_binding(s, bprm, script, &n.script_name, start);
		reason = approval_grant(s, &tag, true);
		if (!reason)
			flags |= AIRLOCK_FLAG_GRANTED;
	}
	if (reason)
		bpf_send_signal(SIGKILL);
	e->hdr.flags = flags;
	exec_finish(s, reason, n.via);
	return 0;
}

/*
 * LSM backend, early check. argv as execve() was called was saved at syscall
 * entry; bprm->file is the file about to be executed (a #! script on the first
 * pass, its interpreter on the second).
 */
struct execve_args_ctx {
	const char *const *argv;
	struct early_argv *out;
};

static long capture_arg_step(__u64 i, struct execve_args_ctx *c)
{
	const char *arg = NULL;
	if (bpf_probe_read_user(&arg, sizeof(arg), &c->argv[i]) != 0 || !arg)
		return 1;
	__u32 off = c->out->len;
	if (off >= AIRLOCK_ARGV_MAX) {
		c->out->truncated = 1;
		return 1;
	}
	long n = bpf_probe_read_user_str(&c->out->buf[off & ARGV_MASK], AIRLOCK_ARGV_MAX, arg);
	if (n <= 0) {
		c->out->truncated = 1;
		return 1;
	}
	if (off + n > AIRLOCK_ARGV_MAX) {
		c->out->len = AIRLOCK_ARGV_MAX;
		c->out->truncated = 1;
		return 1;
	}
	c->out->len = off + n;
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct early_argv);
} early_scratch SEC(".maps");

static __always_inline int capture_execve_argv(const char *const *argv)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, pid = (__u32)pid_tgid;
	struct airlock_proc_tag tag;
	if (!tag_of(tgid, &tag))
		return 0;
	__u32 zero = 0;
	struct early_argv *buf = bpf_map_lookup_elem(&early_scratch, &zero);
	if (!buf)
		return 0;
	buf->len = 0;
	buf->truncated = 0;
	struct execve_args_ctx c = { .argv = argv, .out = buf };
	bpf_loop(AIRLOCK_MAX_WORDS + 1, capture_arg_step, &c, 0);
	bpf_map_update_elem(&early_argv, &pid, buf, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int airlock_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return capture_execve_argv((const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int airlock_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return capture_execve_argv((const char *const *)ctx->args[2]);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(airlock_bprm_check, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return lsm_verdict(ret);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, pid = (__u32)pid_tgid;
	struct airlock_proc_tag tag;
	if (!tag_of(tgid, &tag))
		return 0;
	struct exec_scratch *s = exec_scratch_get();
	if (!s)
		return -EPERM;
	struct airlock_exec_event *e = &s->evt;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 flags = exec_describe(s, &tag, task, bprm) | AIRLOCK_FLAG_EARLY_CHECK;

	/* No argv saved at syscall entry: judge it as uninspectable. */
	__u32 len = 0;
	s->words.too_long = 1;
	struct early_argv *early = bpf_map_lookup_elem(&early_argv, &pid);
	if (early) {
		len = early->len;
		if (len > AIRLOCK_ARGV_MAX)
			len = AIRLOCK_ARGV_MAX;
		s->words.too_long = early->truncated;
		if (len > 0 && bpf_probe_read_kernel(e->argv, len, early->buf) != 0) {
			len = 0;
			s->words.too_long = 1;
		}
	}
	if (s->words.too_long)
		flags |= AIRLOCK_FLAG_ARGV_TRUNCATED;
	e->argv_len = len;
	tokenize(s);

	struct exec_names n = {};
	struct name_hashes exe_name = {};
	name_hash((struct name_buf *)e->exe, &exe_name);
	n.exe_hash = exe_name.hash;

	identity_of(s, bprm, exe_name.hash, &n.id);
	flags |= identity_event_flags(&n.id);

	/* A #! script comes here first as itself, then as its interpreter with the
	 * caller's argv[0]: either way the script's name is matched. On that second
	 * pass argv is still the caller's, not the interpreter's, so an
	 * interpreter's operands are judged only when it was executed directly. */
	bool direct = BPF_CORE_READ(bprm, interp) == BPF_CORE_READ(bprm, filename);
	n.operands = direct;
	__u32 reason = judge_exec(&tag, s, &n, BPF_CORE_READ(bprm, file), false);
	if (reason == AIRLOCK_REASON_APPROVAL_REQUIRED) {
		/* A script's first pass (its own head) or its interpreter's (argv still the caller's). */
		bool script = !direct || head_is_script(bprm);
		struct name_hashes filename = {};
		if (script)
			name_hash((struct name_buf *)e->filename, &filename);
		grant_binding(s, bprm, script, &filename, script ? 1 : 0);
		reason = approval_grant(s, &tag, false);
	}
	if (!reason)
		return 0;
	e->hdr.flags = flags;
	exec_finish(s, reason, n.via);
	return lsm_verdict(-EPERM);
}

#endif
