//! Every map the daemon reads and writes, as owned handles, and every
//! operation on them. Nothing outside `kernel/` touches a BPF map: the rest
//! of the daemon asks for a tag, a table write or a counter here.
//!
//! The policy's tables are not listed here by name: [`Table::ALL`] (in
//! `airlock-policy`) is the one list, and [`PolicyMaps`] opens and writes
//! whatever it names.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd};

use airlock_common::abi::{self, as_bytes, from_bytes, IdentityKey, IdentityValue, InodeKey, InodeValue, Pod, RoleSet};
use airlock_policy::{RawEntry, Table};
use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::types::{Backend, CounterTotals};

/// The maps of the policy's tables, in the order of [`Table::ALL`].
pub struct PolicyMaps {
    handles: Vec<(Table, MapHandle)>,
}

impl PolicyMaps {
    fn open(by_name: &impl Fn(&str) -> Result<MapHandle>) -> Result<PolicyMaps> {
        let handles = Table::ALL.iter().map(|t| Ok((*t, by_name(t.map_name())?))).collect::<Result<_>>()?;
        Ok(PolicyMaps { handles })
    }

    fn map(&self, table: Table) -> &MapHandle {
        // Every table was opened by `open`; the list cannot miss one.
        &self.handles.iter().find(|(t, _)| *t == table).expect("every policy table is open").1
    }

    /// Writes entries; stops at the first failure.
    pub fn write(&self, table: Table, entries: &[RawEntry<'_>]) -> Result<()> {
        let map = self.map(table);
        for (key, value) in entries {
            map.update(key, value, MapFlags::ANY)
                .with_context(|| format!("insert into the {} map ({} entries in this batch)", table.map_name(), entries.len()))?;
        }
        Ok(())
    }

    /// Removes entries; missing ones are ignored.
    pub fn delete(&self, table: Table, entries: &[RawEntry<'_>]) {
        let map = self.map(table);
        for (key, _) in entries {
            let _ = map.delete(key);
        }
    }

    /// Removes every entry whose key is not among `keep`; returns how many.
    pub fn sweep(&self, table: Table, keep: &[RawEntry<'_>]) -> usize {
        let map = self.map(table);
        let keep: BTreeSet<&[u8]> = keep.iter().map(|(k, _)| *k).collect();
        let stale: Vec<Vec<u8>> = map.keys().filter(|k| !keep.contains(k.as_slice())).collect();
        for key in &stale {
            let _ = map.delete(key);
        }
        stale.len()
    }

    /// How many entries the table holds now.
    pub fn count(&self, table: Table) -> usize {
        self.map(table).keys().count()
    }

    /// Every entry the table holds now (a restart reads what a previous daemon left).
    pub fn entries(&self, table: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
        let map = self.map(table);
        map.keys().filter_map(|k| map.lookup(&k, MapFlags::ANY).ok().flatten().map(|v| (k, v))).collect()
    }
}

/// The maps the daemon uses, as owned handles.
pub struct Maps {
    tagged_procs: MapHandle,
    quarantine: MapHandle,
    role_sets: MapHandle,
    counters: MapHandle,
    config: MapHandle,
    events: MapHandle,
    revoked_sessions: MapHandle,
    exec_identity: MapHandle,
    guarded_tids: MapHandle,
    tamper_senders: MapHandle,
    protected_inodes: MapHandle,
    approval_grants: MapHandle,
    session_blocks: MapHandle,
    session_written: MapHandle,
    session_written_full: MapHandle,
    policy: PolicyMaps,
}

impl Maps {
    /// Opens every map the daemon uses, by its name in the object.
    pub fn open(by_name: impl Fn(&str) -> Result<MapHandle>) -> Result<Maps> {
        Ok(Maps {
            tagged_procs: by_name("tagged_procs")?,
            quarantine: by_name("quarantine")?,
            role_sets: by_name("role_sets")?,
            counters: by_name("counters")?,
            config: by_name("airlock_config")?,
            events: by_name("events")?,
            revoked_sessions: by_name("revoked_sessions")?,
            exec_identity: by_name("exec_identity")?,
            guarded_tids: by_name("guarded_tids")?,
            tamper_senders: by_name("tamper_senders")?,
            protected_inodes: by_name("protected_inodes")?,
            approval_grants: by_name("approval_grants")?,
            session_blocks: by_name("session_blocks")?,
            session_written: by_name("session_written")?,
            session_written_full: by_name("session_written_full")?,
            policy: PolicyMaps::open(&by_name)?,
        })
    }

    /// The policy's tables.
    pub fn policy(&self) -> &PolicyMaps {
        &self.policy
    }

    // ---- sessions -------------------------------------------------------------

    /// Tags a process (by tgid) as a member of a session.
    pub fn tag(&self, tgid: u32, tag: &abi::ProcTag) -> Result<()> {
        self.tagged_procs.update(as_bytes(&tgid), as_bytes(tag), MapFlags::ANY).with_context(|| format!("tag process {tgid}"))
    }

    /// The session a process belongs to, if it is governed.
    pub fn tag_of(&self, tgid: u32) -> Option<abi::ProcTag> {
        let value = self.tagged_procs.lookup(as_bytes(&tgid), MapFlags::ANY).ok()??;
        from_bytes(&value)
    }

    /// Whether any process is tagged or quarantined (one key read per map).
    /// Only the kernel's "no key" (ENOENT) counts as none: any other error
    /// answers yes, which keeps the hooks that govern them attached.
    pub fn any_governed(&self) -> bool {
        [&self.tagged_procs, &self.quarantine].into_iter().any(|map| {
            let mut key = [0u8; 4];
            // SAFETY: a valid map descriptor; the key buffer fits the maps' 4-byte keys.
            let rc = unsafe { libbpf_rs::libbpf_sys::bpf_map_get_next_key(map.as_fd().as_raw_fd(), std::ptr::null(), key.as_mut_ptr().cast()) };
            if rc != 0 && rc != -libc::ENOENT {
                tracing::warn!(map = %map.name().to_string_lossy(), "read the first key: {}", std::io::Error::from_raw_os_error(-rc));
            }
            rc != -libc::ENOENT
        })
    }

    /// Every tagged process.
    pub fn tagged(&self) -> Vec<(u32, abi::ProcTag)> {
        self.tagged_procs
            .keys()
            .filter_map(|key| {
                let tgid: u32 = from_bytes(&key)?;
                let value = self.tagged_procs.lookup(&key, MapFlags::ANY).ok()??;
                Some((tgid, from_bytes(&value)?))
            })
            .collect()
    }

    /// From now on the kernel refuses every exec and connect of the session's
    /// processes (and kills those that fork).
    pub fn mark_revoked(&self, session_id: u64) -> Result<()> {
        self.revoked_sessions
            .update(as_bytes(&session_id), as_bytes(&1u32), MapFlags::ANY)
            .context("record the revocation in the kernel")
    }

    // ---- security blocks --------------------------------------------------------

    /// Every session the kernel holds a security block for.
    pub fn session_blocks(&self) -> Vec<(u64, abi::SessionBlock)> {
        let map = &self.session_blocks;
        map.keys()
            .filter_map(|k| {
                let value = map.lookup(&k, MapFlags::ANY).ok().flatten()?;
                Some((from_bytes::<u64>(&k)?, from_bytes::<abi::SessionBlock>(&value)?))
            })
            .collect()
    }

    /// From now on the kernel holds the session to the block (hard: nothing; soft: egress narrowed).
    pub fn set_session_block(&self, session_id: u64, block: &abi::SessionBlock) -> Result<()> {
        self.session_blocks
            .update(as_bytes(&session_id), as_bytes(block), MapFlags::ANY)
            .context("write the security block to the kernel")
    }

    pub fn clear_session_block(&self, session_id: u64) {
        let _ = self.session_blocks.delete(as_bytes(&session_id));
    }

    // ---- approvals --------------------------------------------------------------

    /// Writes an approval grant the exec hooks honour.
    pub fn put_grant(&self, key: &abi::GrantKey, value: &abi::GrantValue) -> Result<()> {
        self.approval_grants.update(as_bytes(key), as_bytes(value), MapFlags::ANY).context("write the approval grant to the kernel")
    }

    /// Removes a grant; false when it was not there (the kernel consumed it).
    pub fn delete_grant(&self, key: &abi::GrantKey) -> Result<bool> {
        match self.approval_grants.delete(as_bytes(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).context("remove an approval grant from the kernel"),
        }
    }

    /// Every process the kernel counts as a member of the session: tagged, or
    /// quarantined under its id.
    pub fn session_processes(&self, session_id: u64) -> Vec<u32> {
        let mut pids: Vec<u32> = self.tagged().into_iter().filter(|(_, t)| t.session_id == session_id).map(|(pid, _)| pid).collect();
        for key in self.quarantine.keys() {
            let Some(pid) = from_bytes::<u32>(&key) else {
                continue;
            };
            let session = self.quarantine.lookup(&key, MapFlags::ANY).ok().flatten().and_then(|v| from_bytes::<u64>(&v));
            if session == Some(session_id) {
                pids.push(pid);
            }
        }
        pids
    }

    /// How many processes each session has now.
    pub fn processes_per_session(&self) -> HashMap<u64, u32> {
        let mut counts = HashMap::new();
        for (_, tag) in self.tagged() {
            *counts.entry(tag.session_id).or_insert(0) += 1;
        }
        counts
    }

    // ---- strict sessions ---------------------------------------------------------

    /// Forgets the files written by sessions that have no process left (they
    /// can execute nothing more), and their overflow marks. The keys are read
    /// before the live sessions: a session that writes after the key snapshot
    /// is not in it, and one that wrote before it was tagged before its first
    /// write, so it is seen live. Session ids are random and never reused.
    /// Returns how many entries went.
    pub fn forget_written_of_ended(&self) -> usize {
        let written: Vec<Vec<u8>> = self.session_written.keys().collect();
        let full: Vec<Vec<u8>> = self.session_written_full.keys().collect();
        if written.is_empty() && full.is_empty() {
            return 0;
        }
        let live = self.processes_per_session();
        let mut gone = 0;
        for key in &written {
            let Some(k) = from_bytes::<abi::WrittenKey>(key) else {
                continue;
            };
            if !live.contains_key(&k.session_id) && self.session_written.delete(key).is_ok() {
                gone += 1;
            }
        }
        for key in &full {
            let Some(session) = from_bytes::<u64>(key) else {
                continue;
            };
            if !live.contains_key(&session) && self.session_written_full.delete(key).is_ok() {
                gone += 1;
            }
        }
        gone
    }

    /// Marks a session (its id's bytes) as one whose written files are not all known.
    pub(super) fn mark_written_full(&self, session: &[u8]) {
        if let Err(e) = self.session_written_full.update(session, as_bytes(&1u32), MapFlags::ANY) {
            tracing::error!("a strict session's overflow mark could not be written: {e}");
        }
    }

    /// Copies another set's strict-session records into these maps; a record
    /// that does not fit marks its session overflowed. Returns (records copied,
    /// sessions marked).
    pub(super) fn copy_written_from(&self, written: &MapHandle, full: &MapHandle) -> (usize, usize) {
        let (mut copied, mut overflowed) = (0, 0);
        for key in written.keys() {
            if self.session_written.update(&key, as_bytes(&1u32), MapFlags::ANY).is_ok() {
                copied += 1;
            } else if let Some(session) = key.get(..8) {
                self.mark_written_full(session);
                overflowed += 1;
            }
        }
        for key in full.keys() {
            self.mark_written_full(&key);
            overflowed += 1;
        }
        (copied, overflowed)
    }

    // ---- policy switch ----------------------------------------------------------

    /// Points a role slot at a rule set, in one map write.
    pub fn switch_role(&self, slot: u32, set: &RoleSet) -> Result<()> {
        self.role_sets.update(as_bytes(&slot), as_bytes(set), MapFlags::ANY).with_context(|| format!("switch role slot {slot}"))
    }

    pub fn role_set(&self, slot: u32) -> Option<RoleSet> {
        self.role_sets.lookup(as_bytes(&slot), MapFlags::ANY).ok().flatten().and_then(|b| from_bytes::<RoleSet>(&b))
    }

    pub fn set_config(&self, backend: Backend, policy_generation: u32) -> Result<()> {
        let config = abi::Config {
            backend: backend.abi_value(),
            policy_generation,
            daemon_tgid: std::process::id(),
            pad: 0,
            daemon_pgid: nix::unistd::getpgrp().as_raw() as u32,
            guard_pad: 0,
        };
        self.config.update(as_bytes(&0u32), as_bytes(&config), MapFlags::ANY).context("write the config map")
    }

    pub fn config(&self) -> Option<abi::Config> {
        self.config.lookup(as_bytes(&0u32), MapFlags::ANY).ok().flatten().and_then(|b| from_bytes::<abi::Config>(&b))
    }

    // ---- exec identity and protected files ----------------------------------------

    /// Writes exec identities, then removes the stale ones.
    pub fn update_identities(&self, entries: &[(IdentityKey, IdentityValue)], stale: &[IdentityKey]) -> Result<()> {
        update_all(&self.exec_identity, entries, "exec identity")?;
        for key in stale {
            let _ = self.exec_identity.delete(as_bytes(key));
        }
        Ok(())
    }

    pub fn protect_inode(&self, key: &InodeKey, class_hash: u64) -> Result<()> {
        self.protected_inodes
            .update(as_bytes(key), as_bytes(&InodeValue { class_hash }), MapFlags::ANY)
            .with_context(|| format!("protect inode {} on device {:#x}", key.ino, key.dev))
    }

    pub fn release_inode(&self, key: &InodeKey) {
        let _ = self.protected_inodes.delete(as_bytes(key));
    }

    // ---- guard ----------------------------------------------------------------------

    /// The daemon's threads, which signals and ptrace may name (compat hooks
    /// compare thread ids; the LSM hooks compare the process).
    pub fn guard_threads(&self) -> Result<usize> {
        // An adopted set still lists the previous daemon's threads: those ids
        // may belong to anyone now.
        for key in self.guarded_tids.keys().collect::<Vec<_>>() {
            let _ = self.guarded_tids.delete(&key);
        }
        let tasks = procfs::process::Process::myself().and_then(|p| p.tasks()).context("list the daemon's threads in /proc")?;
        let mut n = 0;
        for task in tasks.flatten() {
            let tid = task.tid as u32;
            self.guarded_tids.update(as_bytes(&tid), as_bytes(&1u32), MapFlags::ANY).with_context(|| format!("guard thread {tid}"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Whether this process was recorded (compat) sending the daemon a signal
    /// from inside a session. The entry is taken, so each signal counts once.
    pub fn take_tamper_sender(&self, tgid: u32) -> bool {
        let found = matches!(self.tamper_senders.lookup(as_bytes(&tgid), MapFlags::ANY), Ok(Some(_)));
        if found {
            let _ = self.tamper_senders.delete(as_bytes(&tgid));
        }
        found
    }

    // ---- counters and events --------------------------------------------------------

    pub fn counters(&self) -> Result<CounterTotals> {
        let per_cpu = self.counters.lookup_percpu(as_bytes(&0u32), MapFlags::ANY).context("read the counters map")?.unwrap_or_default();
        let mut totals = CounterTotals::default();
        for bytes in per_cpu {
            if let Some(c) = from_bytes::<abi::Counters>(&bytes) {
                totals.decisions += c.decisions;
                totals.denies += c.denies;
                totals.ringbuf_drops += c.ringbuf_drops;
                totals.tag_failures += c.tag_failures;
                totals.tamper += c.tamper;
            }
        }
        Ok(totals)
    }

    /// A new handle on the event ring buffer, for its consumer.
    pub fn events_handle(&self) -> Result<MapHandle> {
        MapHandle::try_from(&self.events).context("duplicate the events map handle")
    }

    /// The handles a replacement copies tags into.
    pub(super) fn tag_maps(&self) -> (&MapHandle, &MapHandle) {
        (&self.tagged_procs, &self.quarantine)
    }
}

fn update_all<K: Pod, V: Pod>(map: &MapHandle, entries: &[(K, V)], what: &str) -> Result<()> {
    for (key, value) in entries {
        map.update(as_bytes(key), as_bytes(value), MapFlags::ANY)
            .with_context(|| format!("insert into the {what} map ({} entries in this batch)", entries.len()))?;
    }
    Ok(())
}

impl crate::approvals::GrantTable for Maps {
    fn put(&self, key: &abi::GrantKey, value: &abi::GrantValue) -> Result<()> {
        self.put_grant(key, value)
    }

    fn delete(&self, key: &abi::GrantKey) -> Result<bool> {
        self.delete_grant(key)
    }
}
