//! Role slots and what a restart needs to read the maps a previous daemon
//! filled: role names by slot, rule texts by id, and the ids still live.

use std::collections::{BTreeMap, BTreeSet};

use airlock_common::abi::{self, from_bytes, RoleSet};
use airlock_policy::Table;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::kernel::Kernel;

/// Role names are given kernel slots once and keep them for as long as the
/// pinned maps live (across daemon restarts, through policy-state.json), so a
/// tagged process's slot always means the same role.
#[derive(Default)]
pub struct RoleSlots {
    pub by_name: BTreeMap<String, u32>,
    /// Highest slot in use (by a name, or by a pinned tag whose name is unknown).
    pub highest: u32,
    /// Slots found in the pinned maps that no saved name explains: deny-all.
    pub orphans: Vec<u32>,
}

impl RoleSlots {
    pub fn slot(&mut self, role: &str) -> Result<u32> {
        if let Some(slot) = self.by_name.get(role) {
            return Ok(*slot);
        }
        // Slot 0 stays unused: it is what the kernel reads for quarantined processes.
        let next = self.highest + 1;
        if next >= abi::MAX_ROLES {
            bail!("more than {} roles have been defined since the enforcement was loaded", abi::MAX_ROLES - 1);
        }
        self.by_name.insert(role.to_string(), next);
        self.highest = next;
        Ok(next)
    }

    pub fn name(&self, slot: u32) -> Option<&str> {
        self.by_name.iter().find(|(_, s)| **s == slot).map(|(n, _)| n.as_str())
    }
}

/// What a restarted daemon needs to read the maps a previous one filled.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedPolicyState {
    pub role_slots: BTreeMap<String, u32>,
    pub rules: BTreeMap<u32, SavedRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedRule {
    pub policy: String,
    pub rule: String,
}

/// The ids a previous daemon left live in the maps.
#[derive(Default)]
pub struct LiveIds {
    pub max_set: u32,
    pub max_node: u32,
    pub max_rule: u32,
    /// Role slots that a rule set or a tagged process refers to.
    pub slots: BTreeSet<u32>,
}

impl LiveIds {
    pub fn scan(kernel: &Kernel) -> LiveIds {
        let maps = kernel.maps();
        let tables = maps.policy();
        let mut ids = LiveIds::default();
        for table in Table::ALL {
            for (key, value) in tables.entries(table) {
                ids.max_rule = ids.max_rule.max(table.rule_of_value(&value).unwrap_or(0));
                match table {
                    Table::Programs => {
                        if let (Some(k), Some(v)) = (from_bytes::<abi::ProgramKey>(&key), from_bytes::<abi::ProgramValue>(&value)) {
                            ids.max_set = ids.max_set.max(k.set_id);
                            ids.max_node = ids.max_node.max(v.root_node);
                        }
                    }
                    Table::Trie => {
                        if let (Some(k), Some(v)) = (from_bytes::<abi::TrieKey>(&key), from_bytes::<abi::TrieValue>(&value)) {
                            ids.max_node = ids.max_node.max(k.node).max(v.next_node);
                        }
                    }
                    Table::Egress4 => ids.max_set = ids.max_set.max(from_bytes::<abi::Egress4Key>(&key).map_or(0, |k| k.set_id)),
                    Table::Egress6 => ids.max_set = ids.max_set.max(from_bytes::<abi::Egress6Key>(&key).map_or(0, |k| k.set_id)),
                    Table::RuleLimits => ids.max_rule = ids.max_rule.max(from_bytes::<u32>(&key).unwrap_or(0)),
                    // Their set ids are in role_sets below.
                    _ => {}
                }
            }
        }
        for slot in 1..abi::MAX_ROLES {
            if let Some(set) = maps.role_set(slot) {
                if set != RoleSet::default() {
                    ids.max_set = ids.max_set.max(set.set_id).max(set.approval_set_id).max(set.limit_set_id);
                    ids.max_rule = ids.max_rule.max(set.every_exec_rule);
                    ids.slots.insert(slot);
                }
            }
        }
        for (_, tag) in maps.tagged() {
            if tag.role_slot != 0 {
                ids.slots.insert(tag.role_slot);
            }
        }
        ids
    }
}
