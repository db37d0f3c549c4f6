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

use airlock_common::abi::{as_bytes, Egress4Key, Egress6Key, EgressValue, Pod};
use airlock_common::policy::{host_entries, CompiledPolicy};
use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::{Deserialize, Serialize};

use crate::dns::{Answer, DnsClient};
use crate::kernel::Kernel;

/// Answers are trusted at least this long (a TTL of 0 would mean asking in a loop)...
const MIN_TTL: Duration = Duration::from_secs(1);
/// ...and at most this long, whatever the record says.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// A failed lookup keeps the last good addresses and is retried after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Names resolved at once.
const RESOLVE_PARALLEL: usize = 16;

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

/// The egress entries hostname rules contribute, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEntries {
    pub deny4: BTreeMap<Egress4Key, EgressValue>,
    pub deny6: BTreeMap<Egress6Key, EgressValue>,
    pub allow4: BTreeMap<Egress4Key, EgressValue>,
    pub allow6: BTreeMap<Egress6Key, EgressValue>,
}

impl HostEntries {
    pub fn len(&self) -> (usize, usize) {
        (self.deny4.len() + self.allow4.len(), self.deny6.len() + self.allow6.len())
    }
}

pub struct HostTable {
    client: DnsClient,
    cache: BTreeMap<String, HostState>,
    installed: HostEntries,
}

impl HostTable {
    pub fn new(client: DnsClient) -> Self {
        HostTable { client, cache: BTreeMap::new(), installed: HostEntries::default() }
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
    pub fn wanted(&self, policy: &CompiledPolicy) -> HostEntries {
        let static4: BTreeSet<&Egress4Key> = policy.egress4.iter().map(|(k, _)| k).collect();
        let static6: BTreeSet<&Egress6Key> = policy.egress6.iter().map(|(k, _)| k).collect();
        let allow_static4: BTreeSet<&Egress4Key> = policy.allow4.iter().map(|(k, _)| k).collect();
        let allow_static6: BTreeSet<&Egress6Key> = policy.allow6.iter().map(|(k, _)| k).collect();
        let mut out = HostEntries::default();
        // Rules in id order, so the first rule of a shared address keeps it.
        let mut rules: Vec<_> = policy.roles.values().flat_map(|r| r.hosts.iter().map(move |h| (r.set_id, h))).collect();
        rules.sort_by_key(|(_, h)| h.rule_id);
        for (set_id, rule) in rules {
            let Some(state) = self.cache.get(&rule.host) else { continue };
            let (v4, v6) = if rule.allow { (&mut out.allow4, &mut out.allow6) } else { (&mut out.deny4, &mut out.deny6) };
            host_entries(set_id, rule.rule_id, &state.addrs, &rule.ports, v4, v6);
        }
        out.deny4.retain(|k, _| !static4.contains(k));
        out.deny6.retain(|k, _| !static6.contains(k));
        out.allow4.retain(|k, _| !allow_static4.contains(k));
        out.allow6.retain(|k, _| !allow_static6.contains(k));
        out
    }

    /// Step 1 of a change: writes the new and changed keys of `wanted`. On
    /// failure the keys this call added are removed again.
    pub fn add(&self, kernel: &Kernel, wanted: &HostEntries) -> Result<()> {
        let maps = kernel.maps();
        let i = &self.installed;
        let r = upsert(&maps.egress4, &wanted.deny4, &i.deny4, "IPv4 egress (hostnames)")
            .and_then(|_| upsert(&maps.egress6, &wanted.deny6, &i.deny6, "IPv6 egress (hostnames)"))
            .and_then(|_| upsert(&maps.egress_allow4, &wanted.allow4, &i.allow4, "IPv4 egress allow (hostnames)"))
            .and_then(|_| upsert(&maps.egress_allow6, &wanted.allow6, &i.allow6, "IPv6 egress allow (hostnames)"));
        if r.is_err() {
            remove_unwanted(&maps.egress4, &wanted.deny4, &i.deny4);
            remove_unwanted(&maps.egress6, &wanted.deny6, &i.deny6);
            remove_unwanted(&maps.egress_allow4, &wanted.allow4, &i.allow4);
            remove_unwanted(&maps.egress_allow6, &wanted.allow6, &i.allow6);
        }
        r
    }

    /// Step 2, once nothing needs the old entries: deletes what is installed
    /// but not wanted; `wanted` becomes the installed set.
    pub fn finish(&mut self, kernel: &Kernel, wanted: HostEntries) {
        let maps = kernel.maps();
        remove_unwanted(&maps.egress4, &self.installed.deny4, &wanted.deny4);
        remove_unwanted(&maps.egress6, &self.installed.deny6, &wanted.deny6);
        remove_unwanted(&maps.egress_allow4, &self.installed.allow4, &wanted.allow4);
        remove_unwanted(&maps.egress_allow6, &self.installed.allow6, &wanted.allow6);
        self.installed = wanted;
    }

    pub fn installed_len(&self) -> (usize, usize) {
        self.installed.len()
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

/// Resolves `hosts` in parallel, a batch at a time: a slow or dead server
/// costs one timeout per batch, not one per name. Callers hold no lock.
pub fn resolve_all(client: &DnsClient, hosts: &[String]) -> Vec<(String, Result<Answer>)> {
    let mut answers = Vec::with_capacity(hosts.len());
    for batch in hosts.chunks(RESOLVE_PARALLEL) {
        std::thread::scope(|scope| {
            let lookups: Vec<_> = batch.iter().map(|host| (host, scope.spawn(move || client.resolve(host)))).collect();
            for (host, lookup) in lookups {
                let answer = lookup.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the lookup thread panicked")));
                answers.push((host.clone(), answer));
            }
        });
    }
    answers
}

fn upsert<K: Pod + Ord, V: Pod + PartialEq>(
    map: &MapHandle,
    wanted: &BTreeMap<K, V>,
    installed: &BTreeMap<K, V>,
    what: &str,
) -> Result<()> {
    for (k, v) in wanted {
        if installed.get(k) != Some(v) {
            map.update(as_bytes(k), as_bytes(v), MapFlags::ANY)
                .map_err(|e| anyhow::anyhow!("insert into the {what} map: {e}"))?;
        }
    }
    Ok(())
}

fn remove_unwanted<K: Pod + Ord, V>(map: &MapHandle, installed: &BTreeMap<K, V>, wanted: &BTreeMap<K, V>) {
    for k in installed.keys() {
        if !wanted.contains_key(k) {
            let _ = map.delete(as_bytes(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_common::policy::{compile, load_sources, IdAllocator, PolicySource};

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
        HostTable::new(DnsClient::new("127.0.0.1:9".parse().unwrap()))
    }

    fn answer(addrs: &[&str], ttl: u32) -> Result<Answer> {
        Ok(Answer { addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(), ttl })
    }

    fn rule_of(c: &CompiledPolicy, text: &str) -> u32 {
        c.roles["r"].hosts.iter().find(|h| h.text == text).map(|h| h.rule_id).or_else(|| c.roles["r"].egress.iter().find(|e| e.text == text).map(|e| e.rule_id)).unwrap()
    }

    fn v4_rule(e: &HostEntries, addr: [u8; 4]) -> Option<u32> {
        e.deny4.iter().find(|(k, _)| k.addr == addr && u16::from_be_bytes(k.port) == 0).map(|(_, v)| v.rule_id)
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
        assert!(c.egress4.iter().any(|(k, v)| k.addr == [192, 0, 2, 9] && v.rule_id == rule_of(&c, "192.0.2.9/32")));
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
