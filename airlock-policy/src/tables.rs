//! The kernel tables a policy fills, named once.
//!
//! [`Table`] lists every BPF map a compiled policy writes, in the order a
//! policy is installed (a trie node before the program entry that leads to
//! it). [`PolicyTables`] holds one policy's entries for all of them as one
//! typed value. Everything that installs, removes, counts or sweeps policy
//! entries walks [`Table::ALL`] instead of naming the maps again, so a new
//! table is added here and nowhere else.

use airlock_common::abi::{
    as_bytes, Egress4Key, Egress6Key, EgressValue, FileAllowKey, FileRuleKey, FileRuleValue, Pod, ProgramKey,
    ProgramValue, RuleLimit, TrieKey, TrieValue, UnixKey,
};

/// One kernel table a policy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Trie,
    Egress4,
    Egress6,
    UnixRules,
    EgressAllow4,
    EgressAllow6,
    Programs,
    FileAllow,
    FileRules,
    RuleLimits,
}

impl Table {
    /// Every table, in install order: children before the entries that lead
    /// to them, so a half-installed policy never points at a missing node.
    pub const ALL: [Table; 10] = [
        // Before the programs whose trie leads to a limit rule.
        Table::RuleLimits,
        Table::Trie,
        Table::Egress4,
        Table::Egress6,
        Table::UnixRules,
        Table::EgressAllow4,
        Table::EgressAllow6,
        Table::Programs,
        Table::FileAllow,
        Table::FileRules,
    ];

    /// The map's name in the BPF object (`maps.h`).
    pub fn map_name(self) -> &'static str {
        match self {
            Table::Trie => "trie",
            Table::Egress4 => "egress4",
            Table::Egress6 => "egress6",
            Table::UnixRules => "unix_rules",
            Table::EgressAllow4 => "egress_allow4",
            Table::EgressAllow6 => "egress_allow6",
            Table::Programs => "programs",
            Table::FileAllow => "file_allow",
            Table::FileRules => "file_rules",
            Table::RuleLimits => "rule_limits",
        }
    }

    /// What the table holds, in words an operator reads in an error.
    pub fn describe(self) -> &'static str {
        match self {
            Table::Trie => "command words",
            Table::Egress4 => "IPv4 egress entries",
            Table::Egress6 => "IPv6 egress entries",
            Table::UnixRules => "Unix socket rules",
            Table::EgressAllow4 => "IPv4 egress allow entries",
            Table::EgressAllow6 => "IPv6 egress allow entries",
            Table::Programs => "blocked programs",
            Table::FileAllow => "protected-file programs",
            Table::FileRules => "protected-file rules",
            Table::RuleLimits => "rate limits and time windows",
        }
    }

    /// The rule id an entry's value names, for tables whose values carry one.
    pub fn rule_of_value(self, value: &[u8]) -> Option<u32> {
        use airlock_common::abi::from_bytes;
        match self {
            Table::Trie => from_bytes::<TrieValue>(value).map(|v| v.rule_id),
            Table::Egress4 | Table::Egress6 | Table::UnixRules | Table::EgressAllow4 | Table::EgressAllow6 => {
                from_bytes::<EgressValue>(value).map(|v| v.rule_id)
            }
            Table::Programs => from_bytes::<ProgramValue>(value).map(|v| v.block_all_rule),
            Table::FileRules => from_bytes::<FileRuleValue>(value).map(|v| v.rule_id),
            Table::FileAllow => None,
            // The rule id is the key.
            Table::RuleLimits => None,
        }
    }
}

/// A key and value as the kernel stores them.
pub type RawEntry<'a> = (&'a [u8], &'a [u8]);

/// One policy's entries for every table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTables {
    pub programs: Vec<(ProgramKey, ProgramValue)>,
    pub trie: Vec<(TrieKey, TrieValue)>,
    pub egress4: Vec<(Egress4Key, EgressValue)>,
    pub egress6: Vec<(Egress6Key, EgressValue)>,
    /// Unix socket rules (broker escapes).
    pub unix: Vec<(UnixKey, EgressValue)>,
    /// `egress.allow` entries, read only for roles whose egress default is deny.
    pub allow4: Vec<(Egress4Key, EgressValue)>,
    pub allow6: Vec<(Egress6Key, EgressValue)>,
    /// Protected files: (set, class) -> rule, and (set, class, program) -> allowed.
    pub file_rules: Vec<(FileRuleKey, FileRuleValue)>,
    pub file_allow: Vec<(FileAllowKey, u32)>,
    /// Rate limits and time windows, by rule id. A time window's
    /// `LIMIT_CLOSED` flag is the daemon's to set from the clock.
    pub rule_limits: Vec<(u32, RuleLimit)>,
}

fn raw<K: Pod, V: Pod>(entries: &[(K, V)]) -> Vec<RawEntry<'_>> {
    entries.iter().map(|(k, v)| (as_bytes(k), as_bytes(v))).collect()
}

impl PolicyTables {
    /// The entries of one table, as the kernel stores them.
    pub fn entries(&self, table: Table) -> Vec<RawEntry<'_>> {
        match table {
            Table::Trie => raw(&self.trie),
            Table::Egress4 => raw(&self.egress4),
            Table::Egress6 => raw(&self.egress6),
            Table::UnixRules => raw(&self.unix),
            Table::EgressAllow4 => raw(&self.allow4),
            Table::EgressAllow6 => raw(&self.allow6),
            Table::Programs => raw(&self.programs),
            Table::FileAllow => raw(&self.file_allow),
            Table::FileRules => raw(&self.file_rules),
            Table::RuleLimits => raw(&self.rule_limits),
        }
    }

    pub fn len(&self, table: Table) -> usize {
        match table {
            Table::Trie => self.trie.len(),
            Table::Egress4 => self.egress4.len(),
            Table::Egress6 => self.egress6.len(),
            Table::UnixRules => self.unix.len(),
            Table::EgressAllow4 => self.allow4.len(),
            Table::EgressAllow6 => self.allow6.len(),
            Table::Programs => self.programs.len(),
            Table::FileAllow => self.file_allow.len(),
            Table::FileRules => self.file_rules.len(),
            Table::RuleLimits => self.rule_limits.len(),
        }
    }

    /// Entries in every table together.
    pub fn total(&self) -> usize {
        Table::ALL.iter().map(|t| self.len(*t)).sum()
    }

    /// Appends `other`'s entries (a policy's and its hostnames' together).
    pub fn extend(&mut self, other: &PolicyTables) {
        self.programs.extend_from_slice(&other.programs);
        self.trie.extend_from_slice(&other.trie);
        self.egress4.extend_from_slice(&other.egress4);
        self.egress6.extend_from_slice(&other.egress6);
        self.unix.extend_from_slice(&other.unix);
        self.allow4.extend_from_slice(&other.allow4);
        self.allow6.extend_from_slice(&other.allow6);
        self.file_rules.extend_from_slice(&other.file_rules);
        self.file_allow.extend_from_slice(&other.file_allow);
        self.rule_limits.extend_from_slice(&other.rule_limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_listed_once_with_its_own_map() {
        let names: std::collections::BTreeSet<&str> = Table::ALL.iter().map(|t| t.map_name()).collect();
        assert_eq!(names.len(), Table::ALL.len());
        // Programs lead into the trie: the trie must be written first.
        let pos = |t| Table::ALL.iter().position(|x| *x == t).expect("listed");
        assert!(pos(Table::Trie) < pos(Table::Programs));
        assert!(pos(Table::FileAllow) < pos(Table::FileRules));
    }

    #[test]
    fn entries_are_the_kernel_bytes_of_each_table() {
        let mut t = PolicyTables::default();
        t.trie.push((TrieKey { node: 1, pad: 0, word_hash: 7 }, TrieValue { next_node: 0, rule_id: 3 }));
        t.unix.push((UnixKey { prefixlen: 1, set_id: 2, path: [0; airlock_common::abi::UNIX_PATH_MAX] }, EgressValue { rule_id: 9, pad: 0 }));
        assert_eq!(t.total(), 2);
        let trie = t.entries(Table::Trie);
        assert_eq!(trie.len(), 1);
        assert_eq!(trie[0].0.len(), std::mem::size_of::<TrieKey>());
        assert_eq!(Table::Trie.rule_of_value(trie[0].1), Some(3));
        assert_eq!(Table::UnixRules.rule_of_value(t.entries(Table::UnixRules)[0].1), Some(9));
        assert!(t.entries(Table::Programs).is_empty());
    }
}
