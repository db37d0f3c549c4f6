//! Turning loaded policies into per-role rule sets and the kernel table
//! entries that enforce them.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::load::LoadedPolicies;
use super::model::{Policy, Status};
use crate::abi::{
    word_hash, Egress4Key, Egress6Key, EgressValue, ProgramKey, ProgramValue, RoleSet, TrieKey,
    TrieValue, EGRESS_FIXED_BITS,
};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRole {
    pub set_id: u32,
    /// The active policies the role enforces, in the role's order.
    pub policies: Vec<String>,
    pub commands: Vec<CommandRule>,
    pub egress: Vec<EgressRuleCompiled>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Command { text: String },
    Egress { text: String },
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
    pub programs: Vec<(ProgramKey, ProgramValue)>,
    pub trie: Vec<(TrieKey, TrieValue)>,
    pub egress4: Vec<(Egress4Key, EgressValue)>,
    pub egress6: Vec<(Egress6Key, EgressValue)>,
    pub role_sets: Vec<(String, RoleSet)>,
}

impl CompiledPolicy {
    pub fn role(&self, id: &str) -> Option<&CompiledRole> {
        self.roles.get(id)
    }

    pub fn rule(&self, rule_id: u32) -> Option<&RuleRef> {
        self.rules.get(&rule_id)
    }
}

/// Compiles every role into its own rule set. Only active policies count;
/// every key maps to the first rule that produced it, in role, policy and
/// rule order, so the same input always yields the same tables.
pub fn compile(loaded: &LoadedPolicies, ids: &mut IdAllocator) -> CompiledPolicy {
    let mut out = CompiledPolicy {
        version: loaded.version(),
        roles: BTreeMap::new(),
        rules: BTreeMap::new(),
        programs: Vec::new(),
        trie: Vec::new(),
        egress4: Vec::new(),
        egress6: Vec::new(),
        role_sets: Vec::new(),
    };
    let by_id: BTreeMap<&str, &Policy> =
        loaded.policies.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut roles: Vec<_> = loaded.roles.iter().collect();
    roles.sort_by(|a, b| a.id.cmp(&b.id));

    let mut programs = BTreeMap::new();
    let mut trie = BTreeMap::new();
    let mut egress4 = BTreeMap::new();
    let mut egress6 = BTreeMap::new();

    for role in roles {
        let role_id = role.id.to_string();
        let set_id = ids.set_id();
        let mut compiled = CompiledRole {
            set_id,
            policies: Vec::new(),
            commands: Vec::new(),
            egress: Vec::new(),
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
            for cmd in &policy.blocked_commands {
                let rule_id = ids.rule_id();
                out.rules.insert(
                    rule_id,
                    RuleRef {
                        policy_id: pid.to_string(),
                        role_id: role_id.clone(),
                        kind: RuleKind::Command {
                            text: cmd.text.clone(),
                        },
                    },
                );
                compiled.commands.push(CommandRule {
                    rule_id,
                    policy_id: pid.to_string(),
                    program: cmd.program.clone(),
                    words: cmd.words.clone(),
                    text: cmd.text.clone(),
                });
            }
            for rule in &policy.egress.deny {
                let rule_id = ids.rule_id();
                out.rules.insert(
                    rule_id,
                    RuleRef {
                        policy_id: pid.to_string(),
                        role_id: role_id.clone(),
                        kind: RuleKind::Egress {
                            text: rule.text.clone(),
                        },
                    },
                );
                compiled.egress.push(EgressRuleCompiled {
                    rule_id,
                    policy_id: pid.to_string(),
                    net: rule.net,
                    ports: rule.ports.clone(),
                    text: rule.text.clone(),
                });
            }
        }

        for cmd in &compiled.commands {
            add_command(set_id, cmd, ids, &mut programs, &mut trie);
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

        out.role_sets
            .push((role_id.clone(), RoleSet { set_id, flags: 0 }));
        out.roles.insert(role_id, compiled);
    }

    out.programs = programs.into_iter().collect();
    out.trie = trie.into_iter().collect();
    out.egress4 = egress4.into_iter().collect();
    out.egress6 = egress6.into_iter().collect();
    out
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

struct EgressSink<'a> {
    set_id: u32,
    rule_id: u32,
    v4: &'a mut BTreeMap<Egress4Key, EgressValue>,
    v6: &'a mut BTreeMap<Egress6Key, EgressValue>,
}

const LOOPBACK4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
const MAPPED_LOOPBACK: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 0), 104);

fn overlaps4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl EgressSink<'_> {
    fn add(&mut self, net: IpNet, port: u16) {
        match net {
            IpNet::V4(n) => self.add4(n, port),
            IpNet::V6(n) => {
                self.put6(n.network(), n.prefix_len(), port);
                if n.contains(&Ipv6Addr::LOCALHOST) {
                    // connect(::) reaches the local host just like ::1.
                    self.put6(Ipv6Addr::UNSPECIFIED, 128, port);
                }
                if n.prefix_len() >= 96 && MAPPED.contains(&n) {
                    // A rule written in mapped form also covers plain AF_INET
                    // sockets: both reach the same IPv4 host.
                    let v4 = n
                        .network()
                        .to_ipv4_mapped()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED);
                    if let Ok(n4) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                        self.add4(n4, port);
                    }
                } else if overlaps6_mapped_loopback(&n) {
                    self.put6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 128, port);
                }
            }
        }
    }

    fn add4(&mut self, n: Ipv4Net, port: u16) {
        self.put4(n.network(), n.prefix_len(), port);
        // Dual-stack sockets reach IPv4 hosts through ::ffff:a.b.c.d.
        self.put6(n.network().to_ipv6_mapped(), 96 + n.prefix_len(), port);
        if overlaps4(&n, &LOOPBACK4) {
            // connect(0.0.0.0) reaches the local host, so it must not be a way
            // around a loopback rule.
            self.put4(Ipv4Addr::UNSPECIFIED, 32, port);
            self.put6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 128, port);
        }
    }

    fn put4(&mut self, addr: Ipv4Addr, len: u8, port: u16) {
        let key = Egress4Key {
            prefixlen: EGRESS_FIXED_BITS + u32::from(len),
            set_id: self.set_id,
            port: port.to_be_bytes(),
            addr: addr.octets(),
            pad: [0; 2],
        };
        if let Entry::Vacant(v) = self.v4.entry(key) {
            v.insert(EgressValue {
                rule_id: self.rule_id,
                pad: 0,
            });
        }
    }

    fn put6(&mut self, addr: Ipv6Addr, len: u8, port: u16) {
        let key = Egress6Key {
            prefixlen: EGRESS_FIXED_BITS + u32::from(len),
            set_id: self.set_id,
            port: port.to_be_bytes(),
            addr: addr.octets(),
            pad: [0; 2],
        };
        if let Entry::Vacant(v) = self.v6.entry(key) {
            v.insert(EgressValue {
                rule_id: self.rule_id,
                pad: 0,
            });
        }
    }
}

fn overlaps6_mapped_loopback(n: &Ipv6Net) -> bool {
    MAPPED_LOOPBACK.contains(&n.network()) || n.contains(&MAPPED_LOOPBACK.network())
}
