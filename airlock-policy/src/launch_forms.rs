//! The forms a protected program runs in besides its own name, so that a
//! rule on the program holds for them too:
//!
//! - Python modules: `python3 -m awscli iam create-role` is `aws iam
//!   create-role`. A module is one more name of the program, installed with
//!   the program's own rules; the kernel judges the module operand of `-m`
//!   (and `runpy`) as a program name.
//! - Launchers: `npx cdk deploy`, `npm exec cdk deploy`, `pnpm dlx`, `yarn
//!   dlx`, `pipx run`, `uvx`, `uv run`, `uv tool run`. In the block rule set,
//!   the launcher's trie (after its subcommand words) leads to the trie of
//!   every program the set names, so `npx --yes cdk deploy` completes the rule
//!   `cdk deploy`. Linking shares the program's nodes instead of copying its
//!   rules under every launcher, which would multiply the tables.
//!
//! Launchers are linked in the block set only: an approval or a rate limit on
//! the launcher would be asked or counted a second time for the program the
//! launcher then starts, which is judged by its own name anyway.

use std::collections::{BTreeMap, BTreeSet};

use airlock_common::abi::{word_hash, ProgramKey, ProgramValue, TrieKey, TrieValue};

use crate::model::{Policy, Status};

/// Modules that Airlock knows run a program, as (program, module).
pub const SHIPPED_PYTHON_MODULES: &[(&str, &str)] = &[("aws", "awscli")];

/// Programs that run the program a later word names, with the subcommand
/// words that make them do so.
pub const LAUNCHERS: &[(&str, &[&str])] = &[
    ("npx", &[]),
    ("pnpx", &[]),
    ("bunx", &[]),
    ("uvx", &[]),
    ("npm", &["exec"]),
    ("npm", &["x"]),
    ("pnpm", &["dlx"]),
    ("pnpm", &["exec"]),
    ("yarn", &["dlx"]),
    ("yarn", &["exec"]),
    ("bun", &["x"]),
    ("pipx", &["run"]),
    ("uv", &["run"]),
    ("uv", &["tool", "run"]),
];

fn is_launcher(name: &str) -> bool {
    LAUNCHERS.iter().any(|(launcher, _)| *launcher == name)
}

/// Program name → the other names (Python modules) it runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramAliases(BTreeMap<String, BTreeSet<String>>);

impl ProgramAliases {
    /// The shipped table.
    pub fn shipped() -> Self {
        let mut out = ProgramAliases::default();
        for (program, module) in SHIPPED_PYTHON_MODULES {
            out.add(program, module);
        }
        out
    }

    pub fn add(&mut self, program: &str, alias: &str) {
        if program != alias {
            self.0.entry(program.to_string()).or_default().insert(alias.to_string());
        }
    }

    pub fn extend(&mut self, other: &ProgramAliases) {
        for (program, aliases) in &other.0 {
            for alias in aliases {
                self.add(program, alias);
            }
        }
    }

    /// The `programs` entries of the active policies: an alias is a fact about
    /// the host, so it holds for every role.
    pub fn add_policies<'a>(&mut self, policies: impl IntoIterator<Item = &'a Policy>) {
        for policy in policies.into_iter().filter(|p| p.status == Status::Active) {
            for (program, forms) in &policy.programs {
                for module in &forms.python_modules {
                    self.add(&program.0, &module.0);
                }
            }
        }
    }

    /// The other names of `program`.
    pub fn of<'a>(&'a self, program: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.get(program).into_iter().flatten().map(String::as_str)
    }
}

/// The words a launched form of a rule must show after the launcher: the
/// launcher's subcommand, the program's name (or an alias), then the rule's words.
pub fn launched_words(subcommand: &[&str], name: &str, words: &[String]) -> Vec<String> {
    subcommand.iter().map(|w| (*w).to_string()).chain(std::iter::once(name.to_string())).chain(words.iter().cloned()).collect()
}

/// A launcher whose trie already leads elsewhere after a program's name: the
/// policy has rules of its own under the launcher for that program.
pub(crate) struct LauncherConflict {
    pub launcher: &'static str,
    pub subcommand: &'static [&'static str],
    pub program: String,
}

/// Links every launcher of [`LAUNCHERS`] to the programs rule set `set_id`
/// names (`names`: the set's program names, aliases included), in place.
/// Where the policy has rules of its own under a launcher for a program, the
/// link is not made, so the policy's own nodes never lead into another
/// program's trie; those are returned, for the caller to add the program's
/// rules under the launcher instead.
pub(crate) fn link_launchers(
    set_id: u32,
    names: &[&str],
    mut node_id: impl FnMut() -> u32,
    programs: &mut BTreeMap<ProgramKey, ProgramValue>,
    trie: &mut BTreeMap<TrieKey, TrieValue>,
) -> Vec<LauncherConflict> {
    let mut named: BTreeMap<u64, (&str, ProgramValue)> = BTreeMap::new();
    for name in names.iter().filter(|n| !is_launcher(n)) {
        let key = ProgramKey { set_id, pad: 0, name_hash: word_hash(name.as_bytes()) };
        if let Some(value) = programs.get(&key) {
            named.entry(key.name_hash).or_insert((name, *value));
        }
    }
    let mut conflicts = Vec::new();
    if named.is_empty() {
        return conflicts;
    }
    for (launcher, subcommand) in LAUNCHERS {
        let key = ProgramKey { set_id, pad: 0, name_hash: word_hash(launcher.as_bytes()) };
        let root = *programs.entry(key).or_insert_with(|| ProgramValue { root_node: node_id(), block_all_rule: 0 });
        if root.block_all_rule != 0 {
            continue;
        }
        let mut node = root.root_node;
        for word in *subcommand {
            let entry = trie.entry(TrieKey { node, pad: 0, word_hash: word_hash(word.as_bytes()) }).or_default();
            if entry.next_node == 0 {
                entry.next_node = node_id();
            }
            node = entry.next_node;
        }
        for (&name_hash, (name, program)) in &named {
            let entry = trie.entry(TrieKey { node, pad: 0, word_hash: name_hash }).or_default();
            if entry.next_node != 0 && entry.next_node != program.root_node {
                conflicts.push(LauncherConflict { launcher, subcommand, program: name.to_string() });
                continue;
            }
            entry.next_node = program.root_node;
            if entry.rule_id == 0 {
                entry.rule_id = program.block_all_rule;
            }
        }
    }
    conflicts
}
