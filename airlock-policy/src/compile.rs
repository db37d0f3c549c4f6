//! Turning loaded policies into per-role rule sets and the kernel table
//! entries that enforce them.

use std::collections::BTreeMap;

use airlock_common::abi::{
    word_hash, EgressValue, FileAllowKey, FileRuleKey, FileRuleValue, ProgramKey, ProgramValue, RoleSet, RuleLimit, TrieKey,
    TrieValue, ROLE_ALLOW_FILELESS, ROLE_ALLOW_LOADER, ROLE_ALLOW_RAW_SOCKETS, ROLE_DENY_SESSION_WRITTEN, ROLE_EGRESS_DEFAULT_DENY, ROLE_UNIX_RULES,
};
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::egress::{unix_key, EgressSink};
use crate::exec_limits::{self, LimitRuleCompiled};
use crate::launch_forms::{launched_words, link_launchers, ProgramAliases};
use crate::load::LoadedPolicies;
use crate::model::{EgressDefault, HomePattern, LimitPattern, Policy, RawSockets, Status};
use crate::tables::PolicyTables;

/// Hands out set, trie node and rule ids. Ids are never 0 (the kernel reads 0
/// as "none") and never reused while the allocator lives, so a reload can
/// install its entries beside the ones in force and then switch role sets
/// atomically, without a window where an old id means something new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAllocator {
    next_set: u32,
    next_node: u32,
    next_rule: u32,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdAllocator {
    pub fn new() -> Self {
        IdAllocator {
            next_set: 1,
            next_node: 1,
            next_rule: 1,
        }
    }

    /// Panics after 2^32 - 1 ids of one kind: reusing one would let a stale
    /// kernel entry speak for a new rule, which is worse than stopping.
    fn take(counter: &mut u32, what: &str) -> u32 {
        let id = *counter;
        match counter.checked_add(1) {
            Some(next) => *counter = next,
            None => panic!("{what} ids exhausted; restart the agent to start a fresh id space"),
        }
        id
    }

    pub fn set_id(&mut self) -> u32 {
        Self::take(&mut self.next_set, "rule set")
    }

    pub fn node_id(&mut self) -> u32 {
        Self::take(&mut self.next_node, "trie node")
    }

    pub fn rule_id(&mut self) -> u32 {
        Self::take(&mut self.next_rule, "rule")
    }

    /// Restart: an allocator whose ids are all above those a previous daemon
    /// left live in the pinned maps, so new entries never collide with them.
    pub fn starting_after(max_set: u32, max_node: u32, max_rule: u32) -> Self {
        let next = |max: u32| max.checked_add(1).expect("the pinned maps hold the largest possible id");
        IdAllocator {
            next_set: next(max_set),
            next_node: next(max_node),
            next_rule: next(max_rule),
        }
    }
}

/// A blocked command as enforced for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    pub rule_id: u32,
    pub policy_id: String,
    pub program: String,
    pub words: Vec<String>,
    pub text: String,
}

/// An egress deny rule as enforced for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRuleCompiled {
    pub rule_id: u32,
    pub policy_id: String,
    pub net: IpNet,
    /// Empty means every port.
    pub ports: Vec<u16>,
    pub text: String,
}

/// A hostname rule as enforced for one role: the daemon resolves `host` and
/// installs its addresses under `rule_id` in the role's deny (or allow) tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRuleCompiled {
    pub rule_id: u32,
    pub policy_id: String,
    pub host: String,
    /// Empty means every port.
    pub ports: Vec<u16>,
    pub text: String,
    /// True for an `egress.allow` entry.
    pub allow: bool,
}

/// A Unix socket rule as enforced for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixRuleCompiled {
    pub rule_id: u32,
    pub policy_id: String,
    /// The bytes matched (`@` and the name for abstract sockets).
    pub path: Vec<u8>,
    pub prefix: bool,
    pub text: String,
}

/// A protected file as enforced for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRuleCompiled {
    pub rule_id: u32,
    /// The first active policy of the role that protects the file.
    pub policy_id: String,
    pub pattern: HomePattern,
    /// The kernel's name for the file class: FNV-1a of the pattern text.
    pub class_hash: u64,
    /// Programs every policy protecting the file allows (the intersection).
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRole {
    pub set_id: u32,
    /// The rule set of the role's approval rules (0: it has none).
    pub approval_set_id: u32,
    /// The rule set of the role's command rate limits and time windows (0: none).
    pub limit_set_id: u32,
    /// The active policies the role enforces, in the role's order.
    pub policies: Vec<String>,
    pub commands: Vec<CommandRule>,
    /// `approval_commands`: held until a person approves them.
    pub approvals: Vec<CommandRule>,
    /// `rate_limits` and `time_windows`, one rule per pattern.
    pub limits: Vec<LimitRuleCompiled>,
    pub egress: Vec<EgressRuleCompiled>,
    /// Unix socket rules (broker escapes).
    pub unix: Vec<UnixRuleCompiled>,
    /// Hostname rules (deny and allow), resolved by the daemon.
    pub hosts: Vec<HostRuleCompiled>,
    /// `egress.allow` address rules (in force when `egress_default_deny`).
    pub allow: Vec<EgressRuleCompiled>,
    /// The role's `egress_default` is `deny`.
    pub egress_default_deny: bool,
    /// The role's `exec.deny_session_written`: its sessions cannot execute files they wrote.
    pub deny_session_written: bool,
    /// Protected files.
    pub files: Vec<FileRuleCompiled>,
    /// The other names (Python modules) of the programs the rules name.
    pub aliases: ProgramAliases,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Command { text: String },
    /// An `approval_commands` entry.
    Approval { text: String },
    /// A `rate_limits` or `time_windows` pattern (text: the pattern).
    Limit { text: String },
    Egress { text: String },
    /// An `egress.unix_deny` pattern.
    Unix { text: String },
    /// A protected file pattern.
    File { text: String },
}

impl RuleKind {
    /// The rule as the policy wrote it.
    pub fn text(&self) -> &str {
        match self {
            RuleKind::Command { text }
            | RuleKind::Approval { text }
            | RuleKind::Limit { text }
            | RuleKind::Egress { text } | RuleKind::Unix { text } | RuleKind::File { text } => text,
        }
    }
}

/// What a rule id in a kernel event stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub policy_id: String,
    pub role_id: String,
    pub kind: RuleKind,
}

/// Everything the daemon installs for one policy generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Fingerprint of the policy content (see [`LoadedPolicies::version`]).
    pub version: String,
    pub roles: BTreeMap<String, CompiledRole>,
    pub rules: BTreeMap<u32, RuleRef>,
    /// The kernel table entries of every role's rule set.
    pub tables: PolicyTables,
    pub role_sets: Vec<(String, RoleSet)>,
    /// Every protected pattern of any role, by class: what the daemon resolves in homes.
    pub protected: BTreeMap<u64, HomePattern>,
}

impl CompiledPolicy {
    pub fn role(&self, id: &str) -> Option<&CompiledRole> {
        self.roles.get(id)
    }

    pub fn rule(&self, rule_id: u32) -> Option<&RuleRef> {
        self.rules.get(&rule_id)
    }
}

/// Compiles every role into its own rule set with the shipped program
/// aliases and the policies' own (see [`compile_with_aliases`]).
pub fn compile(loaded: &LoadedPolicies, ids: &mut IdAllocator) -> CompiledPolicy {
    compile_with_aliases(loaded, ids, &ProgramAliases::default())
}

/// Compiles every role into its own rule set. Only active policies count;
/// every key maps to the first rule that produced it, in role, policy and
/// rule order, so the same input always yields the same tables. `found` are
/// aliases the caller found on the host (console scripts), added to the
/// shipped ones and the policies' `programs`.
pub fn compile_with_aliases(loaded: &LoadedPolicies, ids: &mut IdAllocator, found: &ProgramAliases) -> CompiledPolicy {
    let mut aliases = ProgramAliases::shipped();
    aliases.extend(found);
    aliases.add_policies(&loaded.policies);
    let mut out = CompiledPolicy {
        version: loaded.version(),
        roles: BTreeMap::new(),
        rules: BTreeMap::new(),
        tables: PolicyTables::default(),
        role_sets: Vec::new(),
        protected: BTreeMap::new(),
    };
    let by_id: BTreeMap<&str, &Policy> =
        loaded.policies.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut roles: Vec<_> = loaded.roles.iter().collect();
    roles.sort_by(|a, b| a.id.cmp(&b.id));

    let mut programs = BTreeMap::new();
    let mut trie = BTreeMap::new();
    let mut egress4 = BTreeMap::new();
    let mut egress6 = BTreeMap::new();
    let mut unix = BTreeMap::new();
    let mut allow4 = BTreeMap::new();
    let mut allow6 = BTreeMap::new();

    for role in roles {
        let role_id = role.id.to_string();
        let set_id = ids.set_id();
        let mut compiled = CompiledRole {
            set_id,
            approval_set_id: 0,
            limit_set_id: 0,
            policies: Vec::new(),
            commands: Vec::new(),
            approvals: Vec::new(),
            limits: Vec::new(),
            egress: Vec::new(),
            unix: Vec::new(),
            hosts: Vec::new(),
            allow: Vec::new(),
            egress_default_deny: role.egress_default == EgressDefault::Deny,
            deny_session_written: role.exec.deny_session_written,
            files: Vec::new(),
            aliases: ProgramAliases::default(),
        };
        let mut listed = std::collections::BTreeSet::new();
        for pid in &role.policies {
            let Some(policy) = by_id.get(pid.as_str()) else {
                continue;
            };
            if policy.status != Status::Active || !listed.insert(pid.as_str()) {
                continue;
            }
            compiled.policies.push(pid.to_string());
            // Every rule gets a fresh id and an entry events can be named by.
            let mut new_rule = |kind: RuleKind| {
                let rule_id = ids.rule_id();
                out.rules.insert(rule_id, RuleRef { policy_id: pid.to_string(), role_id: role_id.clone(), kind });
                rule_id
            };
            for cmd in &policy.blocked_commands {
                let rule_id = new_rule(RuleKind::Command { text: cmd.text.clone() });
                compiled.commands.push(CommandRule {
                    rule_id,
                    policy_id: pid.to_string(),
                    program: cmd.program.clone(),
                    words: cmd.words.clone(),
                    text: cmd.text.clone(),
                });
            }
            for cmd in &policy.approval_commands {
                let rule_id = new_rule(RuleKind::Approval { text: cmd.text.clone() });
                compiled.approvals.push(CommandRule {
                    rule_id,
                    policy_id: pid.to_string(),
                    program: cmd.program.clone(),
                    words: cmd.words.clone(),
                    text: cmd.text.clone(),
                });
            }
            exec_limits::collect(policy, &mut compiled.limits, |pattern| {
                new_rule(RuleKind::Limit { text: pattern.text().to_string() })
            });
            for rule in &policy.egress.deny {
                let rule_id = new_rule(RuleKind::Egress { text: rule.text.clone() });
                compiled.egress.push(EgressRuleCompiled {
                    rule_id,
                    policy_id: pid.to_string(),
                    net: rule.net,
                    ports: rule.ports.clone(),
                    text: rule.text.clone(),
                });
            }
            for (rules, allow) in [(&policy.egress.deny_hosts, false), (&policy.egress.allow_hosts, true)] {
                for rule in rules {
                    let text = if allow { format!("allow {}", rule.text) } else { rule.text.clone() };
                    let rule_id = new_rule(RuleKind::Egress { text: text.clone() });
                    compiled.hosts.push(HostRuleCompiled {
                        rule_id,
                        policy_id: pid.to_string(),
                        host: rule.host.clone(),
                        ports: rule.ports.clone(),
                        text,
                        allow,
                    });
                }
            }
            for rule in &policy.egress.allow {
                let text = format!("allow {}", rule.text);
                let rule_id = new_rule(RuleKind::Egress { text: text.clone() });
                compiled.allow.push(EgressRuleCompiled {
                    rule_id,
                    policy_id: pid.to_string(),
                    net: rule.net,
                    ports: rule.ports.clone(),
                    text,
                });
            }
            for rule in &policy.egress.unix_deny {
                let rule_id = new_rule(RuleKind::Unix { text: rule.text.clone() });
                compiled.unix.push(UnixRuleCompiled {
                    rule_id,
                    policy_id: pid.to_string(),
                    path: rule.path.clone(),
                    prefix: rule.prefix,
                    text: rule.text.clone(),
                });
            }
            // Each policy protecting a file must allow a program for the role to allow it.
            for file in &policy.protected_files {
                let allow: Vec<String> = file.allow.iter().map(|a| a.0.clone()).collect();
                if let Some(existing) = compiled.files.iter_mut().find(|f| f.pattern.text == file.path.text) {
                    existing.allow.retain(|a| allow.contains(a));
                    continue;
                }
                let rule_id = new_rule(RuleKind::File { text: file.path.text.clone() });
                compiled.files.push(FileRuleCompiled {
                    rule_id,
                    policy_id: pid.to_string(),
                    pattern: file.path.clone(),
                    class_hash: word_hash(file.path.text.as_bytes()),
                    allow,
                });
            }
        }
        // A limit rule is named by everything the role's policies give its pattern.
        for limit in &compiled.limits {
            if let Some(rule) = out.rules.get_mut(&limit.rule_id) {
                rule.kind = RuleKind::Limit { text: limit.describe() };
            }
        }
        for file in &compiled.files {
            out.protected.insert(file.class_hash, file.pattern.clone());
            out.tables.file_rules.push((
                FileRuleKey { set_id, pad: 0, class_hash: file.class_hash },
                FileRuleValue { rule_id: file.rule_id, pad: 0 },
            ));
            for program in &file.allow {
                out.tables.file_allow.push((
                    FileAllowKey {
                        set_id,
                        pad: 0,
                        class_hash: file.class_hash,
                        name_hash: word_hash(program.as_bytes()),
                    },
                    1,
                ));
            }
        }

        for cmd in &compiled.commands {
            for alias in aliases.of(&cmd.program) {
                compiled.aliases.add(&cmd.program, alias);
            }
        }
        let block_rules = with_aliases(&compiled.commands, &aliases);
        for cmd in &block_rules {
            add_command(set_id, cmd, ids, &mut programs, &mut trie);
        }
        let names: Vec<&str> = block_rules.iter().map(|c| c.program.as_str()).collect();
        let conflicts = link_launchers(set_id, &names, || ids.node_id(), &mut programs, &mut trie);
        for conflict in &conflicts {
            for cmd in block_rules.iter().filter(|c| c.program == conflict.program) {
                let launched = CommandRule {
                    program: conflict.launcher.to_string(),
                    words: launched_words(conflict.subcommand, &cmd.program, &cmd.words),
                    ..cmd.clone()
                };
                add_command(set_id, &launched, ids, &mut programs, &mut trie);
            }
        }
        // Approval rules are a rule set of their own, judged after the block
        // rules: a command both name is blocked.
        if !compiled.approvals.is_empty() {
            compiled.approval_set_id = ids.set_id();
            for cmd in &with_aliases(&compiled.approvals, &aliases) {
                add_command(compiled.approval_set_id, cmd, ids, &mut programs, &mut trie);
            }
        }
        // Limits likewise: a blocked command stays blocked, whatever its limits.
        let mut every_exec_rule = 0;
        let limited: Vec<CommandRule> = compiled
            .limits
            .iter()
            .filter_map(|l| {
                let (program, words, text) = l.command()?;
                Some(CommandRule {
                    rule_id: l.rule_id,
                    policy_id: l.policy_id.clone(),
                    program: program.to_string(),
                    words: words.to_vec(),
                    text: text.to_string(),
                })
            })
            .collect();
        if !limited.is_empty() {
            compiled.limit_set_id = ids.set_id();
            for cmd in &with_aliases(&limited, &aliases) {
                add_command(compiled.limit_set_id, cmd, ids, &mut programs, &mut trie);
            }
        }
        for limit in &compiled.limits {
            if limit.pattern == LimitPattern::EveryExec {
                every_exec_rule = limit.rule_id;
            }
            // The daemon sets each window from the clock before installing (limit_entries_at).
            out.tables.rule_limits.push((limit.rule_id, limit.entry_unclocked()));
        }
        for rule in &compiled.egress {
            let mut sink = EgressSink {
                set_id,
                rule_id: rule.rule_id,
                v4: &mut egress4,
                v6: &mut egress6,
            };
            let ports: &[u16] = if rule.ports.is_empty() {
                &[0]
            } else {
                &rule.ports
            };
            for &port in ports {
                sink.add(rule.net, port);
            }
        }

        // Deny wins across a role's policies: a switch is off for the role only
        // when it has active policies and every one of them turns it off.
        let active: Vec<&Policy> = compiled
            .policies
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .collect();
        let mut flags = 0;
        if !active.is_empty() && active.iter().all(|p| !p.exec.deny_fileless) {
            flags |= ROLE_ALLOW_FILELESS;
        }
        if !active.is_empty() && active.iter().all(|p| p.egress.raw_sockets == RawSockets::Allow) {
            flags |= ROLE_ALLOW_RAW_SOCKETS;
        }
        // A strict role never lets the loader run a program directly: ld.so
        // maps the file it loads, no exec of that file takes place, so a file
        // the session wrote would run unseen.
        if !compiled.deny_session_written && !active.is_empty() && active.iter().all(|p| !p.exec.deny_direct_loader) {
            flags |= ROLE_ALLOW_LOADER;
        }
        for rule in &compiled.allow {
            let mut sink = EgressSink {
                set_id,
                rule_id: rule.rule_id,
                v4: &mut allow4,
                v6: &mut allow6,
            };
            let ports: &[u16] = if rule.ports.is_empty() { &[0] } else { &rule.ports };
            for &port in ports {
                sink.add(rule.net, port);
            }
        }
        for rule in &compiled.unix {
            unix.entry(unix_key(set_id, &rule.path, rule.prefix))
                .or_insert(EgressValue {
                    rule_id: rule.rule_id,
                    pad: 0,
                });
        }
        if !compiled.unix.is_empty() {
            flags |= ROLE_UNIX_RULES;
        }
        if compiled.egress_default_deny {
            flags |= ROLE_EGRESS_DEFAULT_DENY;
        }
        if compiled.deny_session_written {
            flags |= ROLE_DENY_SESSION_WRITTEN;
        }
        out.role_sets
            .push((role_id.clone(), RoleSet {
                set_id,
                flags,
                approval_set_id: compiled.approval_set_id,
                limit_set_id: compiled.limit_set_id,
                every_exec_rule,
                pad: 0,
            }));
        out.roles.insert(role_id, compiled);
    }

    out.tables.programs = programs.into_iter().collect();
    out.tables.trie = trie.into_iter().collect();
    out.tables.egress4 = egress4.into_iter().collect();
    out.tables.egress6 = egress6.into_iter().collect();
    out.tables.unix = unix.into_iter().collect();
    out.tables.allow4 = allow4.into_iter().collect();
    out.tables.allow6 = allow6.into_iter().collect();
    out
}

/// The rules, each followed by the same rule under every alias of its program.
fn with_aliases(rules: &[CommandRule], aliases: &ProgramAliases) -> Vec<CommandRule> {
    rules
        .iter()
        .flat_map(|cmd| std::iter::once(cmd.clone()).chain(aliases.of(&cmd.program).map(|a| CommandRule { program: a.to_string(), ..cmd.clone() })))
        .collect()
}

fn add_command(
    set_id: u32,
    cmd: &CommandRule,
    ids: &mut IdAllocator,
    programs: &mut BTreeMap<ProgramKey, ProgramValue>,
    trie: &mut BTreeMap<TrieKey, TrieValue>,
) {
    // Keyed by hash, not name: two names the kernel cannot tell apart must
    // share one entry, or the later insert would overwrite the earlier.
    let key = ProgramKey {
        set_id,
        pad: 0,
        name_hash: word_hash(cmd.program.as_bytes()),
    };
    let prog = programs.entry(key).or_insert_with(|| ProgramValue {
        root_node: ids.node_id(),
        block_all_rule: 0,
    });
    let Some((last, init)) = cmd.words.split_last() else {
        if prog.block_all_rule == 0 {
            prog.block_all_rule = cmd.rule_id;
        }
        return;
    };
    let mut node = prog.root_node;
    for word in init {
        let entry = trie
            .entry(TrieKey {
                node,
                pad: 0,
                word_hash: word_hash(word.as_bytes()),
            })
            .or_default();
        if entry.next_node == 0 {
            entry.next_node = ids.node_id();
        }
        node = entry.next_node;
    }
    let entry = trie
        .entry(TrieKey {
            node,
            pad: 0,
            word_hash: word_hash(last.as_bytes()),
        })
        .or_default();
    if entry.rule_id == 0 {
        entry.rule_id = cmd.rule_id;
    }
}

/// Rate limits and time windows as the kernel must hold them at a given time.
impl CompiledPolicy {
    /// Every limit rule of every role.
    pub fn limit_rules(&self) -> impl Iterator<Item = &LimitRuleCompiled> {
        self.roles.values().flat_map(|r| r.limits.iter())
    }

    /// The `rule_limits` entries as they must be at `now`: each time window
    /// open or closed by the clock.
    pub fn limit_entries_at(&self, now: DateTime<Utc>) -> Vec<(u32, RuleLimit)> {
        self.limit_rules().map(|l| (l.rule_id, l.entry_at(now))).collect()
    }

    /// The next instant after `after` at which some window opens or closes.
    pub fn next_window_change(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.limit_rules().flat_map(|l| l.windows.iter()).map(|w| w.next_change(after)).min()
    }
}
