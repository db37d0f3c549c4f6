//! Reference decisions: what the kernel must decide for an exec or a connect.
//!
//! Two exec matchers live here on purpose. [`match_exec_naive`] states the
//! rule semantics over the role's command list; [`TableMatcher`] walks the
//! compiled kernel tables step for step as the BPF program does. Tests run both
//! over the same inputs, so a compiler bug or a semantic drift shows up as a
//! disagreement instead of as a bypass in production.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::compile::{CompiledPolicy, CompiledRole, EgressRuleCompiled};
use crate::launch_forms::{launched_words, LAUNCHERS};
use airlock_common::abi::{
    word_hash, Egress4Key, Egress6Key, ProgramKey, ProgramValue, TrieKey, TrieValue, ARGV_MAX,
    ROLE_EGRESS_DEFAULT_DENY,
    EGRESS_FIXED_BITS, MAX_ACTIVE, MAX_WORDS, REASON_ARGV_TOO_LONG, REASON_MATCH_OVERFLOW,
    REASON_RULE, VIA_ARGV0, VIA_EXECUTABLE, VIA_SCRIPT,
};

/// What the kernel knows about one execve.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecInput {
    /// Basename of the file actually executed, symlinks resolved.
    pub executable_name: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    /// The path execve was given, when it named a `#!` script.
    pub script_filename: Option<Vec<u8>>,
    /// Total argv size including the NUL terminators.
    pub argv_bytes: usize,
}

impl ExecInput {
    /// An exec of `executable_name` with `argv`, sizing `argv_bytes` as the kernel does.
    pub fn new(executable_name: &str, argv: &[&str]) -> Self {
        let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        let argv_bytes = argv.iter().map(|a| a.len() + 1).sum();
        ExecInput {
            executable_name: executable_name.as_bytes().to_vec(),
            argv,
            script_filename: None,
            argv_bytes,
        }
    }

    pub fn with_script(mut self, script_filename: &str) -> Self {
        self.script_filename = Some(script_filename.as_bytes().to_vec());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Rule,
    ArgvTooLong,
    MatchOverflow,
}

impl DenyReason {
    /// The `REASON_*` value the kernel reports.
    pub fn abi(self) -> u32 {
        match self {
            DenyReason::Rule => REASON_RULE,
            DenyReason::ArgvTooLong => REASON_ARGV_TOO_LONG,
            DenyReason::MatchOverflow => REASON_MATCH_OVERFLOW,
        }
    }
}

/// Which name of the program led to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchVia {
    Executable,
    Argv0,
    Script,
}

impl MatchVia {
    /// The `VIA_*` value the kernel reports.
    pub fn abi(self) -> u32 {
        match self {
            MatchVia::Executable => VIA_EXECUTABLE,
            MatchVia::Argv0 => VIA_ARGV0,
            MatchVia::Script => VIA_SCRIPT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `rule_id` is 0 for `ArgvTooLong` and `MatchOverflow`.
    Deny {
        rule_id: u32,
        reason: DenyReason,
        via: MatchVia,
    },
}

impl Decision {
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }
}

/// One name under which the exec is checked, with the words that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub via: MatchVia,
    pub program: &'a [u8],
    pub args: &'a [Vec<u8>],
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The names to check, in order: the executed file, argv[0], and the script.
/// Checking all of them closes the renamed-symlink, multi-call-binary and
/// interpreter routes around a rule.
pub fn candidates(input: &ExecInput) -> Vec<Candidate<'_>> {
    let rest = input.argv.get(1..).unwrap_or(&[]);
    let mut out = vec![Candidate {
        via: MatchVia::Executable,
        program: &input.executable_name,
        args: rest,
    }];
    if let Some(argv0) = input.argv.first() {
        out.push(Candidate {
            via: MatchVia::Argv0,
            program: basename(argv0),
            args: rest,
        });
    }
    if let Some(script) = &input.script_filename {
        // The #! handler puts the interpreter, its optional argument, then the
        // script path in front of the original arguments.
        let args = input
            .argv
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, a)| *a == script)
            .and_then(|(i, _)| input.argv.get(i + 1..))
            .unwrap_or(rest);
        out.push(Candidate {
            via: MatchVia::Script,
            program: basename(script),
            args,
        });
    }
    out
}

fn argv_too_long(input: &ExecInput) -> bool {
    input.argv.len() > MAX_WORDS || input.argv_bytes > ARGV_MAX
}

/// Greedy, earliest completion index of each prefix of `words` in `args`;
/// `None` unless every word appears, in order.
fn completions(words: &[String], args: &[Vec<u8>]) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(words.len());
    let mut from = 0;
    for w in words {
        let at = from
            + args
                .get(from..)?
                .iter()
                .position(|a| a.as_slice() == w.as_bytes())?;
        out.push(at);
        from = at + 1;
    }
    Some(out)
}

/// The rule semantics, stated directly: a rule blocks when its words appear
/// in order (not necessarily adjacent) among the arguments.
///
/// When several rules match, the one reported is the one the kernel's walk
/// meets first: the earliest completing word, then the earliest-reached
/// prefix. Ordering by completion indices from the last word backwards is
/// exactly the order in which the walk appends trie nodes to its active set.
/// Overflow of the active set is a kernel limit, not semantics, and is not
/// modelled here.
pub fn match_exec_naive(role: &CompiledRole, input: &ExecInput) -> Decision {
    for cand in candidates(input) {
        let rules = rules_naming(role, cand.program);
        if rules.is_empty() {
            continue;
        }
        if let Some((rule_id, _)) = rules.iter().find(|(_, words)| words.is_empty()) {
            return Decision::Deny {
                rule_id: *rule_id,
                reason: DenyReason::Rule,
                via: cand.via,
            };
        }
        if argv_too_long(input) {
            return Decision::Deny {
                rule_id: 0,
                reason: DenyReason::ArgvTooLong,
                via: cand.via,
            };
        }
        let best = rules
            .iter()
            .filter_map(|(rule_id, words)| {
                let mut key = completions(words, cand.args)?;
                key.reverse();
                Some((key, *rule_id))
            })
            .min_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, rule_id)) = best {
            return Decision::Deny {
                rule_id,
                reason: DenyReason::Rule,
                via: cand.via,
            };
        }
    }
    Decision::Allow
}

/// The rules that hold for `program`, as (rule, words after the program):
/// its own, those of the programs it is an alias of, and for a launcher,
/// every rule of the role with the launcher's subcommand and the program's
/// name (or alias) in front of its words.
fn rules_naming(role: &CompiledRole, program: &[u8]) -> Vec<(u32, Vec<String>)> {
    let mut out: Vec<(u32, Vec<String>)> = role
        .commands
        .iter()
        .filter(|r| r.program.as_bytes() == program || role.aliases.of(&r.program).any(|a| a.as_bytes() == program))
        .map(|r| (r.rule_id, r.words.clone()))
        .collect();
    let launched = LAUNCHERS.iter().filter(|(launcher, _)| launcher.as_bytes() == program);
    for (_, subcommand) in launched {
        for r in role.commands.iter().filter(|r| !LAUNCHERS.iter().any(|(l, _)| *l == r.program)) {
            for name in std::iter::once(r.program.as_str()).chain(role.aliases.of(&r.program)) {
                out.push((r.rule_id, launched_words(subcommand, name, &r.words)));
            }
        }
    }
    out
}

/// The kernel tables as hash maps, walked the way the BPF programs walk them.
#[derive(Debug, Clone, Default)]
pub struct TableMatcher {
    programs: HashMap<ProgramKey, ProgramValue>,
    trie: HashMap<TrieKey, TrieValue>,
    egress4: Vec<(Egress4Key, u32)>,
    egress6: Vec<(Egress6Key, u32)>,
    allow4: Vec<(Egress4Key, u32)>,
    allow6: Vec<(Egress6Key, u32)>,
    /// `role_sets` flags by rule set.
    set_flags: HashMap<u32, u32>,
}

impl TableMatcher {
    pub fn new(compiled: &CompiledPolicy) -> Self {
        fn rule_ids<K: Copy, V>(table: &[(K, V)], id: impl Fn(&V) -> u32) -> Vec<(K, u32)> {
            table.iter().map(|(k, v)| (*k, id(v))).collect()
        }
        TableMatcher {
            programs: compiled.tables.programs.iter().copied().collect(),
            trie: compiled.tables.trie.iter().copied().collect(),
            egress4: rule_ids(&compiled.tables.egress4, |v| v.rule_id),
            egress6: rule_ids(&compiled.tables.egress6, |v| v.rule_id),
            allow4: rule_ids(&compiled.tables.allow4, |v| v.rule_id),
            allow6: rule_ids(&compiled.tables.allow6, |v| v.rule_id),
            set_flags: compiled
                .role_sets
                .iter()
                .map(|(_, set)| (set.set_id, set.flags))
                .collect(),
        }
    }

    /// The exec decision for a process in rule set `set_id`.
    ///
    /// Within one argument word only the nodes that were active before the
    /// word are visited; a node appended by this word must wait for the next
    /// one, or a single "x" would satisfy a rule "x x".
    pub fn match_exec(&self, set_id: u32, input: &ExecInput) -> Decision {
        for cand in candidates(input) {
            let key = ProgramKey {
                set_id,
                pad: 0,
                name_hash: word_hash(cand.program),
            };
            let Some(prog) = self.programs.get(&key) else {
                continue;
            };
            if prog.block_all_rule != 0 {
                return Decision::Deny {
                    rule_id: prog.block_all_rule,
                    reason: DenyReason::Rule,
                    via: cand.via,
                };
            }
            if argv_too_long(input) {
                return Decision::Deny {
                    rule_id: 0,
                    reason: DenyReason::ArgvTooLong,
                    via: cand.via,
                };
            }
            let mut active = [0u32; MAX_ACTIVE];
            active[0] = prog.root_node;
            let mut len = 1;
            for word in cand.args {
                let hash = word_hash(word);
                let before = len;
                for i in 0..before {
                    let Some(t) = self.trie.get(&TrieKey {
                        node: active[i],
                        pad: 0,
                        word_hash: hash,
                    }) else {
                        continue;
                    };
                    if t.rule_id != 0 {
                        return Decision::Deny {
                            rule_id: t.rule_id,
                            reason: DenyReason::Rule,
                            via: cand.via,
                        };
                    }
                    if t.next_node != 0 && !active[..len].contains(&t.next_node) {
                        if len == MAX_ACTIVE {
                            return Decision::Deny {
                                rule_id: 0,
                                reason: DenyReason::MatchOverflow,
                                via: cand.via,
                            };
                        }
                        active[len] = t.next_node;
                        len += 1;
                    }
                }
            }
        }
        Decision::Allow
    }

    /// The connect decision for a process in rule set `set_id`: longest
    /// prefix for the exact port, and only if none matches, for port 0. A
    /// deny entry wins; then, for a role whose egress default is deny, the
    /// destination needs an allow entry.
    pub fn match_egress(&self, set_id: u32, input: &EgressInput) -> EgressDecision {
        if let Some(rule_id) = lpm_lookup(&self.egress4, &self.egress6, set_id, input) {
            return EgressDecision::Deny { rule_id };
        }
        let default_deny = self
            .set_flags
            .get(&set_id)
            .is_some_and(|flags| flags & ROLE_EGRESS_DEFAULT_DENY != 0);
        if !default_deny {
            return EgressDecision::Allow;
        }
        match lpm_lookup(&self.allow4, &self.allow6, set_id, input) {
            Some(rule_id) => EgressDecision::AllowedBy { rule_id },
            None => EgressDecision::DefaultDeny,
        }
    }
}

/// An LPM entry as the walk compares it: port, prefix length, address bytes, rule.
type LpmEntry<'a> = ([u8; 2], u32, &'a [u8], u32);

/// One table pair's longest-prefix match, the exact port before port 0.
fn lpm_lookup(
    v4: &[(Egress4Key, u32)],
    v6: &[(Egress6Key, u32)],
    set_id: u32,
    input: &EgressInput,
) -> Option<u32> {
    // (port, prefix length, address bytes, rule) of the set's entries in the address's family.
    let (addr, entries): (Vec<u8>, Vec<LpmEntry<'_>>) = match input.addr {
        IpAddr::V4(a) => (
            a.octets().to_vec(),
            v4.iter()
                .filter(|(k, _)| k.set_id == set_id)
                .map(|(k, id)| (k.port, k.prefixlen, &k.addr[..], *id))
                .collect(),
        ),
        IpAddr::V6(a) => (
            a.octets().to_vec(),
            v6.iter()
                .filter(|(k, _)| k.set_id == set_id)
                .map(|(k, id)| (k.port, k.prefixlen, &k.addr[..], *id))
                .collect(),
        ),
    };
    let lookup = |port: u16| {
        lpm(
            entries
                .iter()
                .filter(|(p, ..)| *p == port.to_be_bytes())
                .map(|&(_, plen, key_addr, id)| (plen, key_addr, id)),
            &addr,
        )
    };
    lookup(input.port).or_else(|| lookup(0))
}

fn prefix_matches(entry: &[u8], addr: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    let rem = bits % 8;
    if entry.get(..full) != addr.get(..full) {
        return false;
    }
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    match (entry.get(full), addr.get(full)) {
        (Some(e), Some(a)) => e & mask == a & mask,
        _ => false,
    }
}

fn lpm<'a>(entries: impl Iterator<Item = (u32, &'a [u8], u32)>, addr: &[u8]) -> Option<u32> {
    entries
        .filter(|(plen, key_addr, _)| {
            plen.checked_sub(EGRESS_FIXED_BITS)
                .is_some_and(|bits| prefix_matches(key_addr, addr, bits))
        })
        .max_by_key(|(plen, _, _)| *plen)
        .map(|(_, _, id)| id)
}

/// One connect or sendmsg destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressInput {
    pub addr: IpAddr,
    pub port: u16,
}

impl EgressInput {
    pub fn new(addr: IpAddr, port: u16) -> Self {
        EgressInput { addr, port }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecision {
    /// No deny rule matches, and the role's egress default is allow.
    Allow,
    /// A deny rule matches.
    Deny { rule_id: u32 },
    /// The role's egress default is deny, and this allow entry covers the destination.
    AllowedBy { rule_id: u32 },
    /// The role's egress default is deny, and no allow entry covers the destination.
    DefaultDeny,
}

impl EgressDecision {
    pub fn is_deny(&self) -> bool {
        matches!(self, EgressDecision::Deny { .. } | EgressDecision::DefaultDeny)
    }
}

/// The egress semantics, stated directly over the role's rules: which rules
/// forbid this destination. Unlike the table walk it returns every deciding
/// rule id, since which one wins is an LPM detail, not semantics.
///
/// An IPv4 rule covers its hosts whether reached plainly or as `::ffff:a.b.c.d`;
/// an IPv6 rule inside `::ffff:0:0/96` is such an IPv4 rule. The unspecified
/// address counts as loopback (0.0.0.0 for 127.0.0.0/8, `::` for `::1`).
pub fn egress_denying_rules(role: &CompiledRole, input: &EgressInput) -> Vec<u32> {
    rules_covering(&role.egress, input)
}

/// The `egress.allow` rules that cover this destination, with the same
/// address semantics as [`egress_denying_rules`]. They count only for a role
/// whose egress default is deny, and only when no deny rule matches.
pub fn egress_allowing_rules(role: &CompiledRole, input: &EgressInput) -> Vec<u32> {
    rules_covering(&role.allow, input)
}

fn rules_covering(rules: &[EgressRuleCompiled], input: &EgressInput) -> Vec<u32> {
    let lo4 = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
    let mapped = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
    let v4_rule_hits = |n: &Ipv4Net, a: Ipv4Addr| {
        n.contains(&a)
            || (a.is_unspecified() && (n.contains(&lo4.network()) || lo4.contains(&n.network())))
    };
    let as_v4_rule = |n: &Ipv6Net| {
        if n.prefix_len() >= 96 && mapped.contains(n) {
            n.network()
                .to_ipv4_mapped()
                .and_then(|a| Ipv4Net::new(a, n.prefix_len() - 96).ok())
        } else {
            None
        }
    };
    rules
        .iter()
        .filter(|r| r.ports.is_empty() || r.ports.contains(&input.port))
        .filter(|r| match (r.net, input.addr) {
            (IpNet::V4(n), IpAddr::V4(a)) => v4_rule_hits(&n, a),
            (IpNet::V6(n), IpAddr::V4(a)) => as_v4_rule(&n).is_some_and(|n4| v4_rule_hits(&n4, a)),
            (IpNet::V4(n), IpAddr::V6(a)) => {
                a.to_ipv4_mapped().is_some_and(|b| v4_rule_hits(&n, b))
            }
            (IpNet::V6(n), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(b) => {
                    n.contains(&a)
                        || (b.is_unspecified() && {
                            let mlo = Ipv6Net::new_assert(lo4.network().to_ipv6_mapped(), 104);
                            mlo.contains(&n.network()) || n.contains(&mlo.network())
                        })
                }
                None => n.contains(&a) || (a.is_unspecified() && n.contains(&Ipv6Addr::LOCALHOST)),
            },
        })
        .map(|r| r.rule_id)
        .collect()
}
