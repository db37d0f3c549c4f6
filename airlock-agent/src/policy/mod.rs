//! The policy in force: loads it (a directory or the embedded default),
//! compiles it, and installs it into the kernel's tables without a gap.
//!
//! A reload installs the new rule sets beside the old ones (fresh set, node
//! and rule ids), switches each role's slot in one map write, then removes the
//! old entries. An invalid policy never reaches the kernel: the last good set
//! stays in force and the error is kept for `status`.

pub mod bundle_file;
mod console_scripts;
pub mod dir_names;
pub mod dns;
pub mod effective;
pub mod hostnames;
pub mod identity;
pub mod learned;
pub mod origin;
mod slots;
mod windows;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use airlock_common::abi::{self, RoleSet};
use airlock_policy::{CompiledPolicy, IdAllocator, Table};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use crate::kernel::Kernel;
use dns::{Answer, DnsClient};
use hostnames::{HostStatus, HostTable};
use learned::Identities;
use origin::{Fingerprint, PolicyOrigin};
use slots::{LiveIds, RoleSlots, SavedPolicyState, SavedRule};

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
    fingerprint: Option<Fingerprint>,
    /// `<state-dir>/restart/policy-state.json`: role slots and rule texts, for a restart.
    state_file: Option<PathBuf>,
    /// Rules of the policy a previous daemon left in the pinned maps.
    adopted_rules: BTreeMap<u32, SavedRule>,
    /// After adopting: entries the previous daemon installed are unknown here,
    /// so the first install removes everything that is not its own.
    sweep: bool,
    /// Hostname rules' answers and the entries they put in the kernel.
    hosts: HostTable,
    /// Exec identity: the protected programs' contents, refreshed with each load.
    identities: Identities,
    /// When the next time window of the policy in force opens or closes.
    next_window_change: Option<DateTime<Utc>>,
}

/// A policy compiled by [`PolicyStore::begin_reload`], not yet in force.
pub struct PendingPolicy {
    compiled: CompiledPolicy,
    /// Hostnames it names that have no answer yet, and the client to ask.
    pub unresolved: Vec<String>,
    pub client: DnsClient,
}

/// What a rule id in an event stands for.
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
            next_window_change: None,
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
        self.generation = kernel.maps().config().map_or(0, |c| c.policy_generation);
        self.sweep = true;
        Ok(())
    }

    /// Extra directories where protected programs are looked for, and the
    /// contents learned so far (exec identity).
    pub fn set_identity_sources(&mut self, paths: Vec<PathBuf>, learned: learned::LearnedStore) {
        self.identities = Identities::new(paths, learned);
    }

    /// Adds learned contents of protected programs to the kernel's identities; returns how many were new.
    pub fn learn_identities(&mut self, kernel: &Kernel, found: Vec<learned::LearnedEntry>) -> Result<usize> {
        self.identities.learn(kernel, found)
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
            .find_map(|c| c.rule(rule_id).map(|r| RuleLookup { policy: r.policy_id.clone(), rule: r.kind.text().to_string() }))
            .or_else(|| self.adopted_rules.get(&rule_id).map(|r| RuleLookup { policy: r.policy.clone(), rule: r.rule.clone() }))
    }

    /// Hostnames whose answer expired, the client to ask with, and how long
    /// until the next expires (the caller resolves without holding the store).
    pub fn hosts_due(&self) -> (Vec<String>, DnsClient, Option<std::time::Duration>) {
        (self.hosts.due(), self.hosts.client().clone(), self.hosts.next_due_in())
    }

    /// Takes fresh answers and brings the kernel's hostname entries up to
    /// date: new entries first, then the ones no longer wanted are removed.
    pub fn refresh_hosts(&mut self, kernel: &Kernel, answers: Vec<(String, Result<Answer>)>) -> Result<()> {
        for (host, answer) in answers {
            self.hosts.record(&host, answer);
        }
        let Some(current) = self.current.clone() else {
            return Ok(());
        };
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
        let found = console_scripts::find(&loaded, &self.identities.dirs());
        Ok(airlock_policy::compile_with_aliases(&loaded, &mut self.ids, &found))
    }

    fn install_compiled(&mut self, kernel: &Kernel, mut compiled: CompiledPolicy) -> Result<String> {
        self.check_capacity(kernel, &compiled)?;
        // Each time window goes in open or closed as the clock says now.
        let now = Utc::now();
        compiled.tables.rule_limits = compiled.limit_entries_at(now);
        // Identities before the rules that use them, so a new rule is never in
        // force without the contents of the program it names.
        self.identities.refresh(kernel, &compiled).context("install the exec identities of the protected programs")?;
        self.install(kernel, &compiled)?;
        self.hosts.forget_unnamed(&compiled);
        let version = compiled.version.clone();
        if self.previous.is_some() || self.current.is_some() {
            // Two generations back: no event in flight can name the adopted rules now.
            self.adopted_rules.clear();
        }
        self.next_window_change = compiled.next_window_change(now);
        self.previous = self.current.replace(Arc::new(compiled));
        self.loaded_at = Some(SystemTime::now());
        Ok(version)
    }

    /// Old and new sets live side by side during a switch: both must fit.
    fn check_capacity(&self, kernel: &Kernel, next: &CompiledPolicy) -> Result<()> {
        let tables = kernel.maps().policy();
        let host_wanted = self.hosts.wanted(next);
        for table in Table::ALL {
            // After adopting, the old entries are known only by what the maps hold.
            let adopted = if self.sweep { tables.count(table) } else { 0 };
            let live = self.current.as_ref().map_or(0, |c| c.tables.len(table));
            let needed = next.tables.len(table) + live + adopted + host_wanted.len(table) + self.hosts.installed().len(table);
            let capacity = kernel.capacity(table);
            if needed > capacity {
                bail!(
                    "the policy needs {needed} kernel map entries for {} (map {}) during the switch; the map holds {capacity}",
                    table.describe(),
                    table.map_name()
                );
            }
        }
        Ok(())
    }

    fn install(&mut self, kernel: &Kernel, next: &CompiledPolicy) -> Result<()> {
        let tables = kernel.maps().policy();
        // Table::ALL is in install order: children before the entries that lead to them.
        let written = Table::ALL.iter().try_for_each(|t| tables.write(*t, &next.tables.entries(*t)));
        // Hostname entries of the new sets, beside everything in force.
        let host_wanted = self.hosts.wanted(next);
        if let Err(e) = written.and_then(|_| self.hosts.add(kernel, &host_wanted)) {
            for table in Table::ALL {
                tables.delete(table, &next.tables.entries(table));
            }
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
                switches.push((*slot, RoleSet { flags: abi::ROLE_DENY_ALL, ..RoleSet::default() }));
            }
        }
        for slot in &self.slots.orphans {
            switches.push((*slot, RoleSet { flags: abi::ROLE_DENY_ALL, ..RoleSet::default() }));
        }
        // Saved before the switch: a daemon killed after it still finds every
        // slot it may meet in a tag, and the rules of every event in the ring.
        self.save_state(next);
        for (slot, set) in &switches {
            kernel.maps().switch_role(*slot, set)?;
        }
        self.generation += 1;
        kernel.set_config(self.generation)?;

        if let Some(old) = &self.current {
            for table in Table::ALL {
                tables.delete(table, &old.tables.entries(table));
            }
        }
        if std::mem::take(&mut self.sweep) {
            // Hostname entries are written beside the compiled ones: they stay.
            let mut keep = next.tables.clone();
            keep.extend(&host_wanted);
            let removed: usize = Table::ALL.iter().map(|t| tables.sweep(*t, &keep.entries(*t))).sum();
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
                rules.insert(*id, SavedRule { policy: r.policy_id.clone(), rule: r.kind.text().to_string() });
            }
        }
        let state = SavedPolicyState { role_slots: self.slots.by_name.clone(), rules };
        if let Err(e) = crate::state_file::write_atomically(file, &state) {
            tracing::error!("could not save the policy state (a restart would deny the sessions of new roles): {e:#}");
        }
    }
}
