//! Hostname egress rules: the daemon resolves every hostname the policy in
//! force names, installs the addresses in the same per-rule-set LPM tables as
//! address rules (under the hostname rule's own id), and asks again when the
//! answer's TTL runs out. A changed answer is applied without a gap: new
//! entries are written before the ones no longer wanted are deleted.
//!
//! The table of wanted entries is always recomputed whole from the policy and
//! the cached answers, then diffed with what is installed. So two hostnames
//! that share an address, or a hostname whose address an address rule already
//! covers, never delete each other's entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use airlock_common::abi::{Egress4Key, Egress6Key, EgressValue};
use airlock_policy::{host_entries, CompiledPolicy, PolicyTables, RawEntry, Table};
use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::dns::{Answer, DnsClient};
use crate::kernel::Kernel;

/// Answers are trusted at least this long (a TTL of 0 would mean asking in a loop)...
const MIN_TTL: Duration = Duration::from_secs(1);
/// ...and at most this long, whatever the record says.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// A failed lookup keeps the last good addresses and is retried after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The tables hostname rules write: deny and allow, both families.
const HOST_TABLES: [Table; 4] = [Table::Egress4, Table::Egress6, Table::EgressAllow4, Table::EgressAllow6];

#[derive(Debug, Clone)]
struct HostState {
    addrs: Vec<IpAddr>,
    ttl: u32,
    resolved_at: SystemTime,
    due: Instant,
    error: Option<String>,
}

/// What `status` shows for one hostname.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub addresses: Vec<String>,
    pub ttl: u32,
    pub resolved_at: String,
    pub error: Option<String>,
}

pub struct HostTable {
    client: DnsClient,
    cache: BTreeMap<String, HostState>,
    /// What is in the kernel now (only the egress tables are filled).
    installed: PolicyTables,
}

impl HostTable {
    pub fn new(client: DnsClient) -> Self {
        HostTable { client, cache: BTreeMap::new(), installed: PolicyTables::default() }
    }

    pub fn client(&self) -> &DnsClient {
        &self.client
    }

    /// Every hostname a compiled policy names.
    pub fn hosts_of(policy: &CompiledPolicy) -> BTreeSet<String> {
        policy.roles.values().flat_map(|r| r.hosts.iter().map(|h| h.host.clone())).collect()
    }

    /// Hostnames the policy names that have no answer yet: a reload resolves
    /// them (without holding the policy store) before its rule sets switch in.
    pub fn unresolved(&self, policy: &CompiledPolicy) -> Vec<String> {
        Self::hosts_of(policy).into_iter().filter(|h| !self.cache.contains_key(h)).collect()
    }

    /// Forgets the answers of hostnames `policy` no longer names. Only once
    /// that policy is in force: until then the previous one still needs them.
    pub fn forget_unnamed(&mut self, policy: &CompiledPolicy) {
        let named = Self::hosts_of(policy);
        self.cache.retain(|h, _| named.contains(h));
    }

    /// Hostnames whose answer has expired.
    pub fn due(&self) -> Vec<String> {
        let now = Instant::now();
        self.cache.iter().filter(|(_, s)| s.due <= now).map(|(h, _)| h.clone()).collect()
    }

    /// How long until the next answer expires (for the refresh thread's sleep).
    pub fn next_due_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.cache.values().map(|s| s.due.saturating_duration_since(now)).min()
    }

    /// Takes a lookup's result into the cache. A failure keeps the last good
    /// addresses (for deny rules, forgetting them would open the door).
    pub fn record(&mut self, host: &str, answer: Result<Answer>) {
        let now = Instant::now();
        match answer {
            Ok(a) => {
                let ttl = Duration::from_secs(u64::from(a.ttl)).clamp(MIN_TTL, MAX_TTL);
                if a.addrs.is_empty() {
                    tracing::warn!(%host, "hostname rule: the name has no addresses; nothing to match");
                }
                let changed = self.cache.get(host).is_none_or(|s| s.addrs != a.addrs);
                if changed {
                    tracing::info!(%host, addrs = ?a.addrs, ttl = a.ttl, "hostname rule resolved");
                }
                self.cache.insert(
                    host.to_string(),
                    HostState { addrs: a.addrs, ttl: a.ttl, resolved_at: SystemTime::now(), due: now + ttl, error: None },
                );
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(%host, "hostname rule: lookup failed, keeping the last answer: {message}");
                let state = self.cache.entry(host.to_string()).or_insert_with(|| HostState {
                    addrs: Vec::new(),
                    ttl: 0,
                    resolved_at: SystemTime::UNIX_EPOCH,
                    due: now,
                    error: None,
                });
                state.due = now + RETRY_AFTER;
                state.error = Some(message);
            }
        }
    }

    /// The entries the hostname rules of `policy` want now. Keys an address
    /// rule of the policy already holds are left to it.
    pub fn wanted(&self, policy: &CompiledPolicy) -> PolicyTables {
        let mut deny4: BTreeMap<Egress4Key, EgressValue> = BTreeMap::new();
        let mut deny6: BTreeMap<Egress6Key, EgressValue> = BTreeMap::new();
        let mut allow4: BTreeMap<Egress4Key, EgressValue> = BTreeMap::new();
        let mut allow6: BTreeMap<Egress6Key, EgressValue> = BTreeMap::new();
        // Rules in id order, so the first rule of a shared address keeps it.
        let mut rules: Vec<_> = policy.roles.values().flat_map(|r| r.hosts.iter().map(move |h| (r.set_id, h))).collect();
        rules.sort_by_key(|(_, h)| h.rule_id);
        for (set_id, rule) in rules {
            let Some(state) = self.cache.get(&rule.host) else {
                continue;
            };
            let (v4, v6) = if rule.allow { (&mut allow4, &mut allow6) } else { (&mut deny4, &mut deny6) };
            host_entries(set_id, rule.rule_id, &state.addrs, &rule.ports, v4, v6);
        }
        let compiled = &policy.tables;
        let taken4: BTreeSet<&Egress4Key> = compiled.egress4.iter().map(|(k, _)| k).collect();
        let taken6: BTreeSet<&Egress6Key> = compiled.egress6.iter().map(|(k, _)| k).collect();
        let taken_allow4: BTreeSet<&Egress4Key> = compiled.allow4.iter().map(|(k, _)| k).collect();
        let taken_allow6: BTreeSet<&Egress6Key> = compiled.allow6.iter().map(|(k, _)| k).collect();
        PolicyTables {
            egress4: deny4.into_iter().filter(|(k, _)| !taken4.contains(k)).collect(),
            egress6: deny6.into_iter().filter(|(k, _)| !taken6.contains(k)).collect(),
            allow4: allow4.into_iter().filter(|(k, _)| !taken_allow4.contains(k)).collect(),
            allow6: allow6.into_iter().filter(|(k, _)| !taken_allow6.contains(k)).collect(),
            ..PolicyTables::default()
        }
    }

    /// Step 1 of a change: writes the new and changed keys of `wanted`. On
    /// failure the keys this call added are removed again.
    pub fn add(&self, kernel: &Kernel, wanted: &PolicyTables) -> Result<()> {
        let tables = kernel.maps().policy();
        for (n, table) in HOST_TABLES.iter().enumerate() {
            if let Err(e) = tables.write(*table, &changed(wanted, &self.installed, *table)) {
                for undo in &HOST_TABLES[..=n] {
                    tables.delete(*undo, &changed(wanted, &self.installed, *undo));
                }
                return Err(e.context("hostname egress entries"));
            }
        }
        Ok(())
    }

    /// Step 2, once nothing needs the old entries: deletes what is installed
    /// but not wanted; `wanted` becomes the installed set.
    pub fn finish(&mut self, kernel: &Kernel, wanted: PolicyTables) {
        let tables = kernel.maps().policy();
        for table in HOST_TABLES {
            tables.delete(table, &unwanted(&self.installed, &wanted, table));
        }
        self.installed = wanted;
    }

    /// Entries installed now, per table.
    pub fn installed(&self) -> &PolicyTables {
        &self.installed
    }

    pub fn status(&self) -> Vec<HostStatus> {
        self.cache
            .iter()
            .map(|(host, s)| HostStatus {
                host: host.clone(),
                addresses: s.addrs.iter().map(IpAddr::to_string).collect(),
                ttl: s.ttl,
                resolved_at: time::OffsetDateTime::from(s.resolved_at)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                error: s.error.clone(),
            })
            .collect()
    }
}

/// Entries of `wanted` that are not installed with the same value.
fn changed<'a>(wanted: &'a PolicyTables, installed: &PolicyTables, table: Table) -> Vec<RawEntry<'a>> {
    let have: std::collections::HashMap<&[u8], &[u8]> = installed.entries(table).into_iter().collect();
    wanted.entries(table).into_iter().filter(|(k, v)| have.get(k) != Some(v)).collect()
}

/// Entries of `installed` whose key `wanted` no longer has.
fn unwanted<'a>(installed: &'a PolicyTables, wanted: &PolicyTables, table: Table) -> Vec<RawEntry<'a>> {
    let keep: BTreeSet<&[u8]> = wanted.entries(table).into_iter().map(|(k, _)| k).collect();
    installed.entries(table).into_iter().filter(|(k, _)| !keep.contains(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_policy::{compile, load_sources, IdAllocator, PolicySource};

    fn policy(json: &str) -> CompiledPolicy {
        let loaded = load_sources(vec![
            PolicySource::policy("policies/p.json", json),
            PolicySource::role("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
        ])
        .expect("loads");
        compile(&loaded, &mut IdAllocator::new())
    }

    fn table() -> HostTable {
        // Never asked: the tests feed answers with record().
        HostTable::new(DnsClient::with_server("127.0.0.1:9".parse().unwrap()))
    }

    fn answer(addrs: &[&str], ttl: u32) -> Result<Answer> {
        Ok(Answer { addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(), ttl })
    }

    fn rule_of(c: &CompiledPolicy, text: &str) -> u32 {
        c.roles["r"].hosts.iter().find(|h| h.text == text).map(|h| h.rule_id).or_else(|| c.roles["r"].egress.iter().find(|e| e.text == text).map(|e| e.rule_id)).unwrap()
    }

    fn v4_rule(e: &PolicyTables, addr: [u8; 4]) -> Option<u32> {
        e.egress4.iter().find(|(k, _)| k.addr == addr && u16::from_be_bytes(k.port) == 0).map(|(_, v)| v.rule_id)
    }

    #[test]
    fn shared_addresses_and_address_rules_keep_their_owner() {
        let c = policy(r#"{"id":"p","name":"P","egress":{"deny":["a.test","b.test","192.0.2.9/32"]}}"#);
        let mut t = table();
        t.record("a.test", answer(&["192.0.2.1", "192.0.2.9"], 30));
        t.record("b.test", answer(&["192.0.2.1", "192.0.2.2"], 30));
        let w = t.wanted(&c);
        // The first hostname rule keeps a shared address; the address rule keeps its own key.
        assert_eq!(v4_rule(&w, [192, 0, 2, 1]), Some(rule_of(&c, "a.test")));
        assert_eq!(v4_rule(&w, [192, 0, 2, 2]), Some(rule_of(&c, "b.test")));
        assert_eq!(v4_rule(&w, [192, 0, 2, 9]), None, "left to the address rule");
        assert!(c.tables.egress4.iter().any(|(k, v)| k.addr == [192, 0, 2, 9] && v.rule_id == rule_of(&c, "192.0.2.9/32")));
    }

    #[test]
    fn a_changed_answer_replaces_and_a_failed_lookup_keeps() {
        let c = policy(r#"{"id":"p","name":"P","egress":{"deny":["a.test"]}}"#);
        let mut t = table();
        t.record("a.test", answer(&["192.0.2.1"], 0));
        assert_eq!(t.due(), Vec::<String>::new(), "a TTL of 0 is trusted for the minimum, not re-asked at once");
        t.record("a.test", answer(&["192.0.2.2"], 30));
        let w = t.wanted(&c);
        assert_eq!(v4_rule(&w, [192, 0, 2, 1]), None);
        assert!(v4_rule(&w, [192, 0, 2, 2]).is_some());
        t.record("a.test", Err(anyhow::anyhow!("timeout")));
        assert!(v4_rule(&t.wanted(&c), [192, 0, 2, 2]).is_some(), "the last good answer stays");
        assert_eq!(t.status()[0].error.as_deref(), Some("timeout"));
    }
}
