/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The exec matcher: hashes argv words and follows the compiled rule tries.
 * Both backends judge with it; only where argv comes from differs.
 *
 * A rule "P w1 .. wn" matches when program P runs with w1..wn appearing in
 * order among its argument words (not necessarily adjacent). Rule words never
 * start with '-', so option words can never advance a match: they are skipped
 * without a test. The set of trie nodes reachable so far is followed at once,
 * which decides "is some rule a subsequence of argv" exactly.
 */
#ifndef AIRLOCK_EXEC_MATCH_H
#define AIRLOCK_EXEC_MATCH_H

#include "common.h"

#define ARGV_MASK (AIRLOCK_ARGV_MAX - 1)
#define WORDS_MASK (AIRLOCK_MAX_WORDS - 1)
#define ACTIVE_MASK (AIRLOCK_MAX_ACTIVE - 1)

/*
 * The heavy steps are global functions: the verifier checks each once, on its
 * own, instead of once per call site with every caller's state, which keeps
 * the exec program far below the verifier's complexity limit.
 */
#define AIRLOCK_GLOBAL __attribute__((noinline))

struct tokenize_ctx {
	char *argv; /* AIRLOCK_ARGV_MAX bytes */
	__u64 *word_hash;
	__u64 *word_base_hash;
	__u16 *word_off;
	__u64 word_begin; /* offset of the word being read */
	__u32 len;
	__u32 nwords;
	__u64 hash;
	__u64 base_hash;
	__u64 argv0_base_hash;
};

static long tokenize_step(__u64 i, struct tokenize_ctx *c)
{
	if (i >= c->len)
		return 1;
	__u8 ch = c->argv[i & ARGV_MASK];
	if (ch == 0) {
		__u32 n = c->nwords;
		if (n < AIRLOCK_MAX_WORDS) {
			c->word_hash[n & WORDS_MASK] = c->hash;
			c->word_base_hash[n & WORDS_MASK] = c->base_hash;
			c->word_off[n & WORDS_MASK] = c->word_begin;
		}
		if (n == 0)
			c->argv0_base_hash = c->base_hash;
		c->nwords = n + 1;
		c->hash = AIRLOCK_FNV_OFFSET;
		c->base_hash = AIRLOCK_FNV_OFFSET;
		c->word_begin = i + 1;
		return 0;
	}
	c->hash = fnv_step(c->hash, ch);
	c->base_hash = ch == '/' ? AIRLOCK_FNV_OFFSET : fnv_step(c->base_hash, ch);
	return 0;
}

/* Hashes every complete word of argv into s->words; the basename of argv[0] too. */
AIRLOCK_GLOBAL int tokenize(struct exec_scratch *s)
{
	if (!s)
		return 0;
	struct tokenize_ctx c = {
		.argv = s->evt.argv,
		.word_hash = s->words.word_hash,
		.word_base_hash = s->words.base_hash,
		.word_off = s->words.off,
		.len = s->evt.argv_len,
		.word_begin = loop_state_zero,
		.nwords = loop_state_zero,
		.hash = AIRLOCK_FNV_OFFSET,
		.base_hash = AIRLOCK_FNV_OFFSET,
		.argv0_base_hash = AIRLOCK_FNV_OFFSET,
	};
	bpf_loop(AIRLOCK_ARGV_MAX, tokenize_step, &c, 0);
	s->argv0_base_hash = c.argv0_base_hash;
	s->words.nwords = c.nwords;
	if (c.nwords > AIRLOCK_MAX_WORDS)
		s->words.too_long = 1;
	return 0;
}

/* Hash of a NUL-terminated string and of its basename. */
struct name_hash_ctx {
	const char *buf; /* 256 bytes */
	__u64 hash;
	__u64 base_hash;
};

static long name_hash_step(__u64 i, struct name_hash_ctx *c)
{
	__u8 ch = c->buf[i & 255];
	if (ch == 0)
		return 1;
	c->hash = fnv_step(c->hash, ch);
	c->base_hash = ch == '/' ? AIRLOCK_FNV_OFFSET : fnv_step(c->base_hash, ch);
	return 0;
}

struct name_hashes {
	__u64 hash;
	__u64 base_hash;
};

/* Hashes the first component of a 256-byte name buffer. */
AIRLOCK_GLOBAL int name_hash(struct name_buf *name, struct name_hashes *out)
{
	if (!name || !out)
		return 0;
	struct name_hash_ctx c = {
		.buf = name->buf,
		.hash = AIRLOCK_FNV_OFFSET,
		.base_hash = AIRLOCK_FNV_OFFSET,
	};
	bpf_loop(256, name_hash_step, &c, 0);
	out->hash = c.hash;
	out->base_hash = c.base_hash;
	return 0;
}

struct trie_ctx {
	__u64 *word_hash;
	__u32 start;
	__u32 nwords;
	__u32 nactive;
	__u32 rule_id;
	__u32 overflow;
	__u32 nodes_this_word;
	__u64 word;
	/* Unused slots stay 0, which is never a node id. */
	__u32 active[AIRLOCK_MAX_ACTIVE];
};

static __always_inline bool trie_active_has(const struct trie_ctx *c, __u32 node)
{
#pragma unroll
	for (int j = 0; j < AIRLOCK_MAX_ACTIVE; j++) {
		if (c->active[j] == node)
			return true;
	}
	return false;
}

/* Follows the current word from the j-th active node. */
static long trie_node_step(__u64 j, struct trie_ctx *c)
{
	if (j >= c->nodes_this_word)
		return 1;
	struct airlock_trie_key key = { .node = c->active[j & ACTIVE_MASK], .word_hash = c->word };
	struct airlock_trie_value *v = bpf_map_lookup_elem(&trie, &key);
	if (!v)
		return 0;
	if (v->rule_id) {
		c->rule_id = v->rule_id;
		return 1;
	}
	__u32 next = v->next_node;
	if (!next || trie_active_has(c, next))
		return 0;
	if (c->nactive >= AIRLOCK_MAX_ACTIVE) {
		c->overflow = 1;
		return 1;
	}
	c->active[c->nactive & ACTIVE_MASK] = next;
	c->nactive++;
	return 0;
}

static long trie_word_step(__u64 i, struct trie_ctx *c)
{
	__u64 w = c->start + i;
	if (w >= c->nwords || w >= AIRLOCK_MAX_WORDS)
		return 1;
	c->word = c->word_hash[w & WORDS_MASK];
	/* Nodes added for this word must not consume it again. */
	c->nodes_this_word = c->nactive;
	bpf_loop(AIRLOCK_MAX_ACTIVE, trie_node_step, c, 0);
	return c->rule_id || c->overflow;
}

/*
 * Judges one candidate program name against the session's rule set. Returns the
 * deny reason, or AIRLOCK_REASON_NONE when the program's rules let it run.
 */
AIRLOCK_GLOBAL int judge_program(__u32 set_id, __u64 program_hash, __u32 args_start, struct exec_words *words)
{
	if (!words)
		return AIRLOCK_REASON_NONE;
	struct airlock_program_key key = { .set_id = set_id, .name_hash = program_hash };
	struct airlock_program_value *pv = bpf_map_lookup_elem(&programs, &key);
	if (!pv)
		return AIRLOCK_REASON_NONE;
	if (pv->block_all_rule) {
		words->rule_id = pv->block_all_rule;
		return AIRLOCK_REASON_RULE;
	}
	if (words->too_long)
		return AIRLOCK_REASON_ARGV_TOO_LONG;

	struct trie_ctx c = {
		.word_hash = words->word_hash,
		.start = args_start,
		.nwords = words->nwords,
		.nactive = 1 + loop_state_zero,
		.rule_id = loop_state_zero,
		.overflow = loop_state_zero,
	};
	c.active[0] = pv->root_node;
	bpf_loop(AIRLOCK_MAX_WORDS, trie_word_step, &c, 0);
	if (c.rule_id) {
		words->rule_id = c.rule_id;
		return AIRLOCK_REASON_RULE;
	}
	if (c.overflow)
		return AIRLOCK_REASON_MATCH_OVERFLOW;
	return AIRLOCK_REASON_NONE;
}

/*
 * A Python module operand (python3 -m awscli.clidriver): the hash of its
 * top-level package (the bytes up to the first '.') and of the whole name.
 */
struct module_hash_ctx {
	const char *argv;
	__u32 off;
	__u32 dotted;
	__u64 top;
	__u64 full;
};

static long module_hash_step(__u64 i, struct module_hash_ctx *c)
{
	__u8 ch = c->argv[(c->off + i) & ARGV_MASK];
	if (ch == 0)
		return 1;
	if (ch == '.')
		c->dotted = 1;
	if (!c->dotted)
		c->top = fnv_step(c->top, ch);
	c->full = fnv_step(c->full, ch);
	return 0;
}

/* Hashes the module name at argv offset `off` into s->module. */
AIRLOCK_GLOBAL int module_hash(struct exec_scratch *s, __u32 off)
{
	if (!s)
		return 0;
	struct module_hash_ctx c = {
		.argv = s->evt.argv,
		.off = off,
		.dotted = loop_state_zero,
		.top = AIRLOCK_FNV_OFFSET,
		.full = AIRLOCK_FNV_OFFSET,
	};
	bpf_loop(AIRLOCK_FILENAME_MAX, module_hash_step, &c, 0);
	s->module.top = c.top;
	s->module.full = c.full;
	return 0;
}

enum module_option_kind {
	NOT_MODULE_OPTION,
	MODULE_IS_NEXT_WORD,
	VALUE_IS_NEXT_WORD,
	/* Larger values: the module's argv offset, plus MODULE_IN_WORD. */
	MODULE_IN_WORD,
};

/*
 * What an option word says about the module. Python reads "-Im" as "-I -m":
 * flags that take no value may come before the m, and the module may follow
 * in the same word ("-mawscli"). "-W" and "-X" take the next word as their
 * value, which is then no operand.
 */
static __always_inline __u32 module_option(const char *argv, __u32 off)
{
	__u8 first = argv[(off + 1) & ARGV_MASK];
	if ((first == 'W' || first == 'X') && argv[(off + 2) & ARGV_MASK] == 0)
		return VALUE_IS_NEXT_WORD;
	for (__u32 j = 1; j < 8; j++) {
		__u8 ch = argv[(off + j) & ARGV_MASK];
		if (ch == 'm')
			return argv[(off + j + 1) & ARGV_MASK] ? off + j + 1 + MODULE_IN_WORD : MODULE_IS_NEXT_WORD;
		if (!(ch == 'b' || ch == 'B' || ch == 'd' || ch == 'E' || ch == 'i' || ch == 'I' || ch == 'O' ||
		      ch == 'P' || ch == 'q' || ch == 's' || ch == 'S' || ch == 'u' || ch == 'v' || ch == 'x'))
			return NOT_MODULE_OPTION;
	}
	return NOT_MODULE_OPTION;
}

/*
 * The module an interpreter's -m runs, joined to its option or not, after
 * "runpy" (which runs its own module operand). Leaves in s->module the hashes
 * of its top-level package and whole name and the index of its first argument
 * word; returns whether there is one. It judges nothing itself: the exec
 * program's deepest call chain (judge_names, judge_program, the trie steps)
 * already fills Debian 6.1's 512-byte stack bound, so this frame, and
 * module_hash's, must stay off that chain.
 */
AIRLOCK_GLOBAL int find_module(struct exec_scratch *s)
{
	if (!s)
		return 0;
	struct exec_words *words = &s->words;
	const char *argv = s->evt.argv;
	__u32 nwords = words->nwords;
	bool module_next = false;
	bool value_next = false;
	for (__u32 k = 1; k <= AIRLOCK_OPERAND_WORDS; k++) {
		if (k >= nwords)
			break;
		__u32 off = words->off[k & WORDS_MASK];
		__u32 module_off = off;
		if (value_next) {
			value_next = false;
			continue;
		}
		if (argv[off & ARGV_MASK] == '-') {
			__u32 kind = module_option(argv, off);
			if (kind == MODULE_IS_NEXT_WORD)
				module_next = true;
			if (kind == VALUE_IS_NEXT_WORD)
				value_next = true;
			if (kind < MODULE_IN_WORD)
				continue;
			module_off = kind - MODULE_IN_WORD;
		} else if (!module_next) {
			/* The first operand is a script: what follows are its arguments. */
			return 0;
		}
		module_hash(s, module_off);
		module_next = false;
		if (s->module.full == AIRLOCK_RUNPY_HASH) {
			module_next = true;
			continue;
		}
		s->module.args = k + 1;
		return 1;
	}
	return 0;
}

/*
 * The operands of an interpreter or loader. The first word
 * after argv[0] that is not an option is the program it runs (its basename
 * names it; the words after it are its arguments), unless it is the code of a
 * -c option. Later words among the first AIRLOCK_OPERAND_WORDS are tried too
 * when they are paths, so an option that takes a value (python3 -W ignore
 * /x/aws ...) does not hide the program.
 */
/*
 * A plain bounded loop, not bpf_loop: the state carried from word to word
 * ("the first operand was seen") then lives in this function's own frame,
 * where every kernel's verifier follows it exactly; callback state across
 * bpf_loop iterations is where verifiers before 6.7 were not exact.
 */
AIRLOCK_GLOBAL int judge_operands(__u32 set_id, struct exec_scratch *s)
{
	if (!s)
		return AIRLOCK_REASON_NONE;
	struct exec_words *words = &s->words;
	const char *argv = s->evt.argv;
	__u32 nwords = words->nwords;
	bool seen_first = false;
	for (__u32 k = 1; k <= AIRLOCK_OPERAND_WORDS; k++) {
		if (k >= nwords)
			break;
		__u32 off = words->off[k & WORDS_MASK];
		if (argv[off & ARGV_MASK] == '-')
			continue;
		bool first = !seen_first;
		seen_first = true;
		if (first && k >= 2) {
			/* After -c, -lc, -xc ... comes code (sh -c, python3 -c), not a
			 * file: its text after a '/' is no program name. */
			__u32 prev = words->off[(k - 1) & WORDS_MASK];
			__u32 plen = off - prev - 1;
			if (plen >= 2 && plen <= 5 && argv[prev & ARGV_MASK] == '-' &&
			    argv[(prev + 1) & ARGV_MASK] != '-' && argv[(off - 2) & ARGV_MASK] == 'c')
				continue;
		}
		/* A word without '/' has its basename's hash. */
		bool path = words->base_hash[k & WORDS_MASK] != words->word_hash[k & WORDS_MASK];
		if (!first && !path)
			continue;
		int reason = judge_program(set_id, words->base_hash[k & WORDS_MASK], k + 1, words);
		if (reason)
			return reason;
	}
	return AIRLOCK_REASON_NONE;
}

/*
 * The arguments an approval grant is bound to: the hashes of the words from
 * `start` on, folded in order (their count too), into s->argv_hash. Only
 * called when no word was lost (a longer argv under an approval rule is
 * refused before this).
 */
AIRLOCK_GLOBAL int args_hash(struct exec_scratch *s, __u32 start)
{
	if (!s)
		return 0;
	__u64 h = AIRLOCK_FNV_OFFSET;
	__u32 nwords = s->words.nwords;
	for (__u32 i = 0; i < AIRLOCK_MAX_WORDS; i++) {
		if (i >= nwords)
			break;
		if (i < start)
			continue;
		h = (h ^ s->words.word_hash[i & WORDS_MASK]) * AIRLOCK_FNV_PRIME;
	}
	s->argv_hash = (h ^ (nwords > start ? nwords - start : 0)) * AIRLOCK_FNV_PRIME;
	return 0;
}

/* Index of the first word after argv[0] whose hash is `hash`, or 0. */
static __always_inline __u32 word_index(const struct exec_words *words, __u64 hash)
{
	for (__u32 i = 1; i < 12; i++) {
		if (i >= words->nwords)
			break;
		if (words->word_hash[i & WORDS_MASK] == hash)
			return i;
	}
	return 0;
}

#endif
