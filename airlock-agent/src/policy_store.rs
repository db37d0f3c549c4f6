//! The policy in force: loads it (a directory or the embedded default),
//! compiles it, and installs it into the kernel maps without a gap.
//!
//! A reload installs the new rule sets beside the old ones (fresh set, node
//! and rule ids), switches each role's slot in one map write, then removes the
//! old entries. An invalid policy never reaches the kernel: the last good set
//! stays in force and the error is kept for `status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use airlock_common::abi::{self, as_bytes, from_bytes, RoleSet};
use airlock_common::policy::{self, CompiledPolicy, IdAllocator, LoadedPolicies, PolicyErrors};
use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use crate::identity::Identities;
use crate::dns::{Answer, DnsClient};
use crate::hostnames::{HostStatus, HostTable};
use crate::kernel::{delete_all, update_all, Kernel};

/// Where policies come from.
#[derive(Debug, Clone)]
pub enum PolicyOrigin {
    Dir(PathBuf),
    Embedded,
}

impl PolicyOrigin {
    pub fn describe(&self) -> String {
        match self {
            PolicyOrigin::Dir(dir) => dir.display().to_string(),
            PolicyOrigin::Embedded => "embedded default (policies/ shipped with the agent)".into(),
        }
    }

    pub fn load(&self) -> Result<LoadedPolicies, PolicyErrors> {
        match self {
            PolicyOrigin::Dir(dir) => policy::load_dir(dir),
            PolicyOrigin::Embedded => policy::load_sources(policy::default_sources()),
        }
    }

    /// Names, sizes and modification times of the policy files: changes when they do.
    pub fn fingerprint(&self) -> Option<Vec<(PathBuf, u64, SystemTime)>> {
        let PolicyOrigin::Dir(dir) = self else { return None };
        let mut files = Vec::new();
        for sub in ["policies", "roles"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    files.push((entry.path(), meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                }
            }
        }
        files.sort();
        Some(files)
    }
}

/// Role names are given kernel slots once and keep them for as long as the
/// pinned maps live (across daemon restarts, through policy-state.json), so a
/// tagged process's slot always means the same role.
#[derive(Default)]
struct RoleSlots {
    by_name: BTreeMap<String, u32>,
    /// Highest slot in use (by a name, or by a pinned tag whose name is unknown).
    highest: u32,
    /// Slots found in the pinned maps that no saved name explains: deny-all.
    orphans: Vec<u32>,
}

impl RoleSlots {
    fn slot(&mut self, role: &str) -> Result<u32> {
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

    fn name(&self, slot: u32) -> Option<&str> {
        self.by_name.iter().find(|(_, s)| **s == slot).map(|(n, _)| n.as_str())
    }
}

pub struct PolicyStore {
    origin: PolicyOrigin,
    ids: IdAllocator,
    slots: RoleSlots,
    current: Option<Arc<CompiledPolicy>>,
    /// Kept so events decided just before a reload still resolve their rule.
    previous: Option<Arc<CompiledPolicy>>,
    generation: u32,
    loaded_at: Option<SystemTime>,
    last_error: Option<String>,
    fingerprint: Option<Vec<(PathBuf, u64, SystemTime)>>,
    /// `<state-dir>/policy-state.json`: role slots and rule texts, for a restart.
    state_file: Option<PathBuf>,
    /// Rules of the policy a previous daemon left in the pinned maps.
    adopted_rules: BTreeMap<u32, SavedRule>,
    /// After adopting: entries the previous daemon installed are unknown here,
    /// so the first install removes everything that is not its own.
    sweep: bool,
    /// net: hostname rules' answers and the entries they put in the kernel.
    hosts: HostTable,
    /// exec identity: the protected programs' contents, refreshed with each load.
    identities: Identities,
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

/// A policy compiled by [`PolicyStore::begin_reload`], not yet in force.
pub struct PendingPolicy {
    compiled: CompiledPolicy,
    /// Hostnames it names that have no answer yet, and the client to ask.
    pub unresolved: Vec<String>,
    pub client: DnsClient,
}

/// What a rule id or role slot in an event stands for.
pub struct RuleLookup {
    pub policy: String,
    pub rule: String,
}

impl PolicyStore {
    pub fn new(origin: PolicyOrigin, dns: DnsClient) -> Self {
        PolicyStore {
            hosts: HostTable::new(dns),
            origin,
            ids: IdAllocator::new(),
            slots: RoleSlots::default(),
            current: None,
            previous: None,
            generation: 0,
            loaded_at: None,
            last_error: None,
            fingerprint: None,
            state_file: None,
            adopted_rules: BTreeMap::new(),
            sweep: false,
            identities: Identities::default(),
        }
    }

    /// A store that saves its role slots and rules to `file` before each switch.
    pub fn persistent(origin: PolicyOrigin, dns: DnsClient, file: PathBuf) -> Self {
        PolicyStore { state_file: Some(file), ..PolicyStore::new(origin, dns) }
    }

    /// Takes over the maps a previous daemon filled: its role slots (by name,
    /// from the saved state), its rule texts (for events it decided), its
    /// generation, and ids above every id live in the maps. Slots in use that
    /// the saved state does not name become deny-all at the next install.
    pub fn restore(&mut self, kernel: &Kernel) -> Result<()> {
        let saved: SavedPolicyState = match &self.state_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                    tracing::error!(file = %file.display(), "the saved policy state is unreadable ({e}): role slots in the pinned maps are unknown and will deny everything");
                    SavedPolicyState::default()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %file.display(), "no saved policy state: role slots in the pinned maps are unknown and will deny everything");
                    SavedPolicyState::default()
                }
                Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
            },
            None => SavedPolicyState::default(),
        };
        let maps = kernel.maps();
        let live = LiveIds::scan(kernel);
        let named: std::collections::BTreeSet<u32> = saved.role_slots.values().copied().collect();
        self.slots.highest = live.slots.iter().chain(named.iter()).copied().max().unwrap_or(0);
        self.slots.orphans = live.slots.iter().copied().filter(|s| !named.contains(s)).collect();
        if !self.slots.orphans.is_empty() {
            tracing::warn!(slots = ?self.slots.orphans, "role slots in the pinned maps have no saved name: their sessions are denied everything");
        }
        self.slots.by_name = saved.role_slots;
        let max_rule = live.max_rule.max(saved.rules.keys().copied().max().unwrap_or(0));
        self.ids = IdAllocator::starting_after(live.max_set, live.max_node, max_rule);
        self.adopted_rules = saved.rules;
        self.generation = maps
            .config
            .lookup(as_bytes(&0u32), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|b| from_bytes::<abi::Config>(&b))
            .map_or(0, |c| c.policy_generation);
        self.sweep = true;
        Ok(())
    }


    /// Extra directories where protected programs are looked for (exec identity).
    pub fn set_program_paths(&mut self, paths: Vec<PathBuf>) {
        self.identities = Identities::new(paths);
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    pub fn origin(&self) -> &PolicyOrigin {
        &self.origin
    }

    pub fn current(&self) -> Option<&Arc<CompiledPolicy>> {
        self.current.as_ref()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn loaded_at(&self) -> Option<SystemTime> {
        self.loaded_at
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn role_slot(&self, role: &str) -> Option<u32> {
        self.slots.by_name.get(role).copied()
    }

    pub fn role_name(&self, slot: u32) -> Option<&str> {
        self.slots.name(slot)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.current.as_ref().is_some_and(|c| c.roles.contains_key(role))
    }

    /// The rule an event names, looked up in the set that decided it.
    pub fn rule(&self, rule_id: u32) -> Option<RuleLookup> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find_map(|c| {
                c.rule(rule_id).map(|r| RuleLookup {
                    policy: r.policy_id.clone(),
                    rule: match &r.kind {
                        policy::RuleKind::Command { text }
                        | policy::RuleKind::Egress { text }
                        | policy::RuleKind::Unix { text }
                        | policy::RuleKind::File { text } => text.clone(),
                    },
                })
            })
            .or_else(|| self.adopted_rules.get(&rule_id).map(|r| RuleLookup { policy: r.policy.clone(), rule: r.rule.clone() }))
    }

    /// net: hostnames whose answer expired, and the client to ask with (the
    /// caller resolves without holding the store).
    pub fn hosts_due(&self) -> (Vec<String>, DnsClient, Option<std::time::Duration>) {
        (self.hosts.due(), self.hosts.client().clone(), self.hosts.next_due_in())
    }

    /// net: takes fresh answers and brings the kernel's hostname entries up to
    /// date: new entries first, then the ones no longer wanted are removed.
    pub fn refresh_hosts(&mut self, kernel: &Kernel, answers: Vec<(String, Result<Answer>)>) -> Result<()> {
        for (host, answer) in answers {
            self.hosts.record(&host, answer);
        }
        let Some(current) = self.current.clone() else { return Ok(()) };
        let wanted = self.hosts.wanted(&current);
        self.hosts.add(kernel, &wanted)?;
        self.hosts.finish(kernel, wanted);
        Ok(())
    }

    pub fn host_status(&self) -> Vec<HostStatus> {
        self.hosts.status()
    }

    /// True when the policy files changed since the last load attempt.
    pub fn changed_on_disk(&self) -> bool {
        let now = self.origin.fingerprint();
        now.is_some() && now != self.fingerprint
    }

    /// A reload's first half: loads and compiles the policy. The hostnames it
    /// names without an answer yet are then resolved by the caller without
    /// holding the store (a dead DNS server must not stall the event thread's
    /// rule lookups), and [`PolicyStore::finish_reload`] installs it.
    pub fn begin_reload(&mut self) -> Result<PendingPolicy> {
        self.fingerprint = self.origin.fingerprint();
        let begun = self.compile_from_origin().map(|compiled| PendingPolicy {
            unresolved: self.hosts.unresolved(&compiled),
            client: self.hosts.client().clone(),
            compiled,
        });
        self.keep_error(begun)
    }

    /// A reload's second half: takes the hostnames' answers, then installs and
    /// switches. On any error the set in force is untouched.
    pub fn finish_reload(&mut self, kernel: &Kernel, pending: PendingPolicy, answers: Vec<(String, Result<Answer>)>) -> Result<String> {
        for (host, answer) in answers {
            self.hosts.record(&host, answer);
        }
        let installed = self.install_compiled(kernel, pending.compiled);
        let installed = self.keep_error(installed);
        if installed.is_ok() {
            self.last_error = None;
        }
        installed
    }

    /// Keeps a failed reload's message for `status`.
    fn keep_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.last_error = Some(format!("{e:#}"));
        }
        result
    }

    fn compile_from_origin(&mut self) -> Result<CompiledPolicy> {
        let loaded = self
            .origin
            .load()
            .map_err(|errors| anyhow::anyhow!("{errors}"))
            .with_context(|| format!("policy from {} refused; the previous policy stays in force", self.origin.describe()))?;
        for warning in &loaded.warnings {
            tracing::warn!("policy: {warning}");
        }
        Ok(policy::compile(&loaded, &mut self.ids))
    }

    fn install_compiled(&mut self, kernel: &Kernel, compiled: CompiledPolicy) -> Result<String> {
        self.check_capacity(kernel, &compiled)?;
        // Identities before the rules that use them, so a new rule is never in
        // force without the contents of the program it names.
        self.identities
            .refresh(kernel, &compiled)
            .context("install the exec identities of the protected programs")?;
        self.install(kernel, &compiled)?;
        self.hosts.forget_unnamed(&compiled);
        let version = compiled.version.clone();
        if self.previous.is_some() || self.current.is_some() {
            // Two generations back: no event in flight can name the adopted rules now.
            self.adopted_rules.clear();
        }
        self.previous = self.current.replace(Arc::new(compiled));
        self.loaded_at = Some(SystemTime::now());
        Ok(version)
    }

    /// Old and new sets live side by side during a switch: both must fit.
    fn check_capacity(&self, kernel: &Kernel, next: &CompiledPolicy) -> Result<()> {
        let sizes = kernel.sizes();
        let live = self.current.as_deref();
        let maps = kernel.maps();
        // After adopting, the old entries are known only by what the maps hold.
        let adopted = |map: &MapHandle| if self.sweep { map.keys().count() } else { 0 };
        let need = |f: fn(&CompiledPolicy) -> usize, map: &MapHandle| f(next) + live.map_or(0, f) + adopted(map);
        // Hostname entries of the new sets and the installed ones, at most.
        let (host4, host6) = self.hosts.wanted(next).len();
        let (live4, live6) = self.hosts.installed_len();
        let checks = [
            ("blocked programs", need(|c| c.programs.len(), &maps.programs), sizes.programs),
            ("command words", need(|c| c.trie.len(), &maps.trie), sizes.trie),
            ("IPv4 egress entries", need(|c| c.egress4.len() + c.allow4.len(), &maps.egress4) + adopted(&maps.egress_allow4) + host4 + live4, sizes.egress),
            ("IPv6 egress entries", need(|c| c.egress6.len() + c.allow6.len(), &maps.egress6) + adopted(&maps.egress_allow6) + host6 + live6, sizes.egress),
            ("Unix socket rules", need(|c| c.unix.len(), &maps.unix_rules), crate::kernel::UNIX_RULES_CAPACITY),
            // guard
            ("protected-file rules", need(|c| c.file_rules.len(), &maps.file_rules), crate::kernel::FILE_RULES_CAPACITY),
            ("protected-file programs", need(|c| c.file_allow.len(), &maps.file_allow), crate::kernel::FILE_ALLOW_CAPACITY),
        ];
        for (what, needed, capacity) in checks {
            if needed > capacity as usize {
                bail!("the policy needs {needed} kernel map entries for {what} during the switch; the map holds {capacity}");
            }
        }
        Ok(())
    }

    fn install(&mut self, kernel: &Kernel, next: &CompiledPolicy) -> Result<()> {
        let maps = kernel.maps();
        let rollback = |next: &CompiledPolicy| {
            delete_all(&maps.programs, &next.programs);
            delete_all(&maps.trie, &next.trie);
            delete_all(&maps.egress4, &next.egress4);
            delete_all(&maps.egress6, &next.egress6);
            delete_all(&maps.unix_rules, &next.unix);
            delete_all(&maps.egress_allow4, &next.allow4);
            delete_all(&maps.egress_allow6, &next.allow6);
            delete_all(&maps.file_rules, &next.file_rules);
            delete_all(&maps.file_allow, &next.file_allow);
        };
        // Children before parents: the trie before the programs that lead into it.
        let added = update_all(&maps.trie, &next.trie, "command trie")
            .and_then(|_| update_all(&maps.egress4, &next.egress4, "IPv4 egress"))
            .and_then(|_| update_all(&maps.egress6, &next.egress6, "IPv6 egress"))
            .and_then(|_| update_all(&maps.unix_rules, &next.unix, "Unix socket rules"))
            .and_then(|_| update_all(&maps.egress_allow4, &next.allow4, "IPv4 egress allow"))
            .and_then(|_| update_all(&maps.egress_allow6, &next.allow6, "IPv6 egress allow"))
            .and_then(|_| update_all(&maps.programs, &next.programs, "blocked programs"))
            .and_then(|_| update_all(&maps.file_allow, &next.file_allow, "protected-file programs"))
            .and_then(|_| update_all(&maps.file_rules, &next.file_rules, "protected-file rules"));
        // Hostname entries of the new sets, beside everything in force.
        let host_wanted = self.hosts.wanted(next);
        let added = added.and_then(|_| self.hosts.add(kernel, &host_wanted));
        if let Err(e) = added {
            rollback(next);
            return Err(e);
        }

        // Assign every slot first, so a failure cannot leave half the roles switched.
        let mut switches = Vec::new();
        for (role, set) in &next.role_sets {
            switches.push((self.slots.slot(role)?, *set));
        }
        for (role, slot) in &self.slots.by_name {
            if !next.roles.contains_key(role) {
                // Sessions of a role that is gone are refused everything, never let loose.
                switches.push((*slot, RoleSet { set_id: 0, flags: abi::ROLE_DENY_ALL }));
            }
        }
        for slot in &self.slots.orphans {
            switches.push((*slot, RoleSet { set_id: 0, flags: abi::ROLE_DENY_ALL }));
        }
        // Saved before the switch: a daemon killed after it still finds every
        // slot it may meet in a tag, and the rules of every event in the ring.
        self.save_state(next);
        for (slot, set) in &switches {
            maps.role_sets
                .update(as_bytes(slot), as_bytes(set), MapFlags::ANY)
                .with_context(|| format!("switch role slot {slot}"))?;
        }
        self.generation += 1;
        kernel.set_config(self.generation)?;

        if let Some(old) = &self.current {
            delete_all(&maps.programs, &old.programs);
            delete_all(&maps.trie, &old.trie);
            delete_all(&maps.egress4, &old.egress4);
            delete_all(&maps.egress6, &old.egress6);
            delete_all(&maps.unix_rules, &old.unix);
            delete_all(&maps.egress_allow4, &old.allow4);
            delete_all(&maps.egress_allow6, &old.allow6);
            delete_all(&maps.file_rules, &old.file_rules);
            delete_all(&maps.file_allow, &old.file_allow);
        }
        if std::mem::take(&mut self.sweep) {
            // Hostname entries are written beside the compiled ones: they stay.
            let keep4: Vec<_> = next.egress4.iter().copied().chain(host_wanted.deny4.iter().map(|(k, v)| (*k, *v))).collect();
            let keep6: Vec<_> = next.egress6.iter().copied().chain(host_wanted.deny6.iter().map(|(k, v)| (*k, *v))).collect();
            let keep_allow4: Vec<_> = next.allow4.iter().copied().chain(host_wanted.allow4.iter().map(|(k, v)| (*k, *v))).collect();
            let keep_allow6: Vec<_> = next.allow6.iter().copied().chain(host_wanted.allow6.iter().map(|(k, v)| (*k, *v))).collect();
            let removed = sweep(&maps.programs, &next.programs)
                + sweep(&maps.trie, &next.trie)
                + sweep(&maps.egress4, &keep4)
                + sweep(&maps.egress6, &keep6)
                + sweep(&maps.egress_allow4, &keep_allow4)
                + sweep(&maps.egress_allow6, &keep_allow6)
                + sweep(&maps.unix_rules, &next.unix)
                + sweep(&maps.file_rules, &next.file_rules)
                + sweep(&maps.file_allow, &next.file_allow);
            tracing::info!(removed, "removed the previous daemon's policy entries");
        }
        // The old sets' hostname entries go last, like their address entries.
        self.hosts.finish(kernel, host_wanted);
        Ok(())
    }

    fn save_state(&self, next: &CompiledPolicy) {
        let Some(file) = &self.state_file else { return };
        let mut rules = self.adopted_rules.clone();
        for compiled in [self.current.as_deref(), Some(next)].into_iter().flatten() {
            for (id, r) in &compiled.rules {
                let rule = match &r.kind {
                    policy::RuleKind::Command { text }
                    | policy::RuleKind::Egress { text }
                    | policy::RuleKind::Unix { text }
                    | policy::RuleKind::File { text } => text.clone(),
                };
                rules.insert(*id, SavedRule { policy: r.policy_id.clone(), rule });
            }
        }
        let state = SavedPolicyState { role_slots: self.slots.by_name.clone(), rules };
        if let Err(e) = crate::sessions::write_atomically(file, &state) {
            tracing::error!("could not save the policy state (a restart would deny the sessions of new roles): {e:#}");
        }
    }
}

/// Deletes every entry of `map` whose key is not among `keep`; returns how many.
fn sweep<K: abi::Pod, V>(map: &MapHandle, keep: &[(K, V)]) -> usize {
    let keep: std::collections::BTreeSet<Vec<u8>> = keep.iter().map(|(k, _)| as_bytes(k).to_vec()).collect();
    let stale: Vec<Vec<u8>> = map.keys().filter(|k| !keep.contains(k)).collect();
    for key in &stale {
        let _ = map.delete(key);
    }
    stale.len()
}

/// The ids a previous daemon left live in the maps.
#[derive(Default)]
struct LiveIds {
    max_set: u32,
    max_node: u32,
    max_rule: u32,
    /// Role slots that a rule set or a tagged process refers to.
    slots: std::collections::BTreeSet<u32>,
}

impl LiveIds {
    fn scan(kernel: &Kernel) -> LiveIds {
        let maps = kernel.maps();
        let mut ids = LiveIds::default();
        let entries = |map: &MapHandle| -> Vec<(Vec<u8>, Vec<u8>)> {
            map.keys().filter_map(|k| map.lookup(&k, MapFlags::ANY).ok().flatten().map(|v| (k, v))).collect()
        };
        for (k, v) in entries(&maps.programs) {
            if let (Some(k), Some(v)) = (from_bytes::<abi::ProgramKey>(&k), from_bytes::<abi::ProgramValue>(&v)) {
                ids.max_set = ids.max_set.max(k.set_id);
                ids.max_node = ids.max_node.max(v.root_node);
                ids.max_rule = ids.max_rule.max(v.block_all_rule);
            }
        }
        for (k, v) in entries(&maps.trie) {
            if let (Some(k), Some(v)) = (from_bytes::<abi::TrieKey>(&k), from_bytes::<abi::TrieValue>(&v)) {
                ids.max_node = ids.max_node.max(k.node).max(v.next_node);
                ids.max_rule = ids.max_rule.max(v.rule_id);
            }
        }
        for (k, v) in entries(&maps.egress4) {
            if let (Some(k), Some(v)) = (from_bytes::<abi::Egress4Key>(&k), from_bytes::<abi::EgressValue>(&v)) {
                ids.max_set = ids.max_set.max(k.set_id);
                ids.max_rule = ids.max_rule.max(v.rule_id);
            }
        }
        for (k, v) in entries(&maps.egress6) {
            if let (Some(k), Some(v)) = (from_bytes::<abi::Egress6Key>(&k), from_bytes::<abi::EgressValue>(&v)) {
                ids.max_set = ids.max_set.max(k.set_id);
                ids.max_rule = ids.max_rule.max(v.rule_id);
            }
        }
        // Rule ids of the other tables (their set ids are in role_sets below).
        let egress_rule = |v: &[u8]| from_bytes::<abi::EgressValue>(v).map_or(0, |v| v.rule_id);
        for map in [&maps.unix_rules, &maps.egress_allow4, &maps.egress_allow6] {
            for (_, v) in entries(map) {
                ids.max_rule = ids.max_rule.max(egress_rule(&v));
            }
        }
        for (_, v) in entries(&maps.file_rules) {
            ids.max_rule = ids.max_rule.max(from_bytes::<abi::FileRuleValue>(&v).map_or(0, |v| v.rule_id));
        }
        for slot in 1..abi::MAX_ROLES {
            let set = maps.role_sets.lookup(as_bytes(&slot), MapFlags::ANY).ok().flatten().and_then(|b| from_bytes::<RoleSet>(&b));
            if let Some(set) = set {
                if set.set_id != 0 || set.flags != 0 {
                    ids.max_set = ids.max_set.max(set.set_id);
                    ids.slots.insert(slot);
                }
            }
        }
        for (_, tag) in kernel.tagged() {
            if tag.role_slot != 0 {
                ids.slots.insert(tag.role_slot);
            }
        }
        ids
    }
}

/// The directory the daemon uses when none is given: the system install's, else
/// the checkout's `./policies`, else the embedded default.
pub fn default_origin(explicit: Option<&Path>) -> Result<PolicyOrigin> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            bail!("policy directory {} does not exist", dir.display());
        }
        return Ok(PolicyOrigin::Dir(dir.to_path_buf()));
    }
    for candidate in ["/etc/airlock/policies", "./policies"] {
        let dir = Path::new(candidate);
        if dir.join("roles").is_dir() && dir.join("policies").is_dir() {
            return Ok(PolicyOrigin::Dir(dir.to_path_buf()));
        }
    }
    Ok(PolicyOrigin::Embedded)
}
