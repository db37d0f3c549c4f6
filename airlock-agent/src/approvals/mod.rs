//! Approval requests: commands an `approval_commands` rule holds until a
//! person decides.
//!
//! The kernel refuses such an exec (reason `approval_required`) unless the
//! session holds a grant in the `approval_grants` map. This module keeps the
//! requests the refusals open, and turns a verdict into a grant:
//! - approved once: the exact argv of the same file, one exec; the kernel
//!   deletes the grant at the exec it allows;
//! - approved for a duration: every command the rule matches in the session,
//!   until the grant expires.
//!
//! A pending request expires (a rejection) after its time to live; a session
//! that ends cancels its pending requests and loses its grants.

pub mod binding;
pub mod id;
pub mod notify;
mod persist;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use airlock_api::v1 as pb;
use airlock_common::abi::{GrantKey, GrantValue, GRANT_ONCE, GRANT_RULE};
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use id::{format_request_id, parse_request_id};

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const REJECTED: &str = "rejected";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";
pub const STATES: [&str; 5] = [PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED];

/// Finished requests kept for `list` and `show` (the audit trail keeps them all).
const KEEP_FINISHED: usize = 5000;

/// How requests and grants are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalSettings {
    /// A pending request expires after this long.
    pub ttl: Duration,
    /// Pending requests a session may have at once; more are refused (a flood).
    pub max_pending_per_session: usize,
    /// A one-shot grant not used within this long lapses.
    pub once_grant_ttl: Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings { ttl: Duration::from_secs(3600), max_pending_per_session: 5, once_grant_ttl: Duration::from_secs(3600) }
    }
}

/// The kernel's grant map, as this module needs it.
pub trait GrantTable {
    fn put(&self, key: &GrantKey, value: &GrantValue) -> Result<()>;
    /// Deletes a grant; false when it was not there (used, or never written).
    fn delete(&self, key: &GrantKey) -> Result<bool>;
}

/// An exec the kernel held for approval, as the daemon saw it.
pub struct HeldExec<'a> {
    pub decision: &'a pb::Decision,
    pub session: u64,
    pub rule_id: u32,
    pub argv_hash: u64,
    pub exe_identity: u64,
}

/// What a held exec did to the requests.
pub enum Opened {
    /// A new request.
    New(pb::ApprovalRequest),
    /// The same argv in the same session while a request is pending.
    Reused(pb::ApprovalRequest),
    /// The session already has this many pending requests: no new one.
    Flood { pending: usize },
}

/// A person's (or the gateway's) answer.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub approve: bool,
    /// Approve only: None for once, else how long the rule's command is granted.
    pub grant_for: Option<Duration>,
    pub reason: String,
    pub decided_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval request {0} on this host")]
    NotFound(String),
    #[error("approval request {id} is not pending: it was {state}{by}")]
    NotPending { id: String, state: String, by: String },
    #[error("approval request {id}: session {session} has ended, so a grant would have nothing to serve; the request is cancelled")]
    SessionGone { id: String, session: String },
    #[error("approval request {id}: the grant could not be written to the kernel: {error}")]
    Kernel { id: String, error: String },
}

/// Who asks to decide, as the kernel says.
pub enum Decider {
    /// A process on this host (the API socket: SO_PEERCRED).
    Process { pid: u32, label: String },
    /// Someone whose process cannot be known: a TLS client, the gateway.
    Remote { label: String },
}

impl Decider {
    pub fn label(&self) -> &str {
        match self {
            Decider::Process { label, .. } | Decider::Remote { label } => label,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The caller may not decide (a governed process).
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    request: pb::ApprovalRequest,
    session: u64,
    rule_id: u32,
    argv_hash: u64,
    exe_identity: u64,
    grant: Option<Grant>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Grant {
    kind: u32,
    rule_id: u32,
    /// CLOCK_BOOTTIME nanoseconds, as the kernel compares.
    expires_boot_ns: u64,
    /// Gone from the kernel map: used (once), expired, or its session ended.
    ended: bool,
}

impl Entry {
    fn number(&self) -> u64 {
        parse_request_id(&self.request.id).unwrap_or(0)
    }

    fn grant_key(&self, g: &Grant) -> GrantKey {
        if g.kind == GRANT_ONCE {
            GrantKey { session_id: self.session, kind: GRANT_ONCE, rule_id: 0, argv_hash: self.argv_hash, exe_identity: self.exe_identity }
        } else {
            GrantKey { session_id: self.session, kind: GRANT_RULE, rule_id: g.rule_id, argv_hash: 0, exe_identity: 0 }
        }
    }
}

/// Every request this host holds, pending and finished.
pub struct Approvals {
    settings: ApprovalSettings,
    entries: BTreeMap<u64, Entry>,
    file: Option<PathBuf>,
}

impl Approvals {
    /// Requests kept in `file` across restarts (grants live on in the pinned kernel map).
    pub fn persistent(settings: ApprovalSettings, file: PathBuf) -> Approvals {
        let entries = persist::load(&file);
        Approvals { settings, entries, file: Some(file) }
    }

    pub fn in_memory(settings: ApprovalSettings) -> Approvals {
        Approvals { settings, entries: BTreeMap::new(), file: None }
    }

    pub fn settings(&self) -> ApprovalSettings {
        self.settings
    }

    /// Opens (or reuses) the request for a held exec.
    pub fn open(&mut self, held: HeldExec<'_>, now_ns: i64) -> Opened {
        let d = held.decision;
        let same = self.entries.values_mut().find(|e| {
            e.request.state == PENDING && e.session == held.session && e.argv_hash == held.argv_hash && e.exe_identity == held.exe_identity
        });
        if let Some(entry) = same {
            entry.request.attempts += 1;
            let request = entry.request.clone();
            self.save();
            return Opened::Reused(request);
        }
        let pending = self.entries.values().filter(|e| e.session == held.session && e.request.state == PENDING).count();
        if pending >= self.settings.max_pending_per_session {
            return Opened::Flood { pending };
        }
        let number = id::new_request_number(|n| self.entries.contains_key(&n));
        let request = pb::ApprovalRequest {
            id: format_request_id(number),
            state: PENDING.to_string(),
            session_id: d.session_id.clone(),
            host: d.host.clone(),
            uid: d.uid,
            user: d.user.clone(),
            role: d.role.clone(),
            agent: d.agent.clone(),
            argv: d.argv.clone(),
            cwd: d.cwd.clone(),
            executable: d.executable.clone(),
            policy: d.policy.clone().unwrap_or_default(),
            rule: d.rule.clone().unwrap_or_default(),
            created_unix_nanos: now_ns,
            expires_unix_nanos: now_ns.saturating_add(self.settings.ttl.as_nanos() as i64),
            attempts: 1,
            decision_id: d.id,
            verdict: None,
            justification: String::new(),
        };
        self.entries.insert(
            number,
            Entry { request: request.clone(), session: held.session, rule_id: held.rule_id, argv_hash: held.argv_hash, exe_identity: held.exe_identity, grant: None },
        );
        self.trim();
        self.save();
        Opened::New(request)
    }

    /// Decides a pending request; an approval writes the grant to the kernel.
    pub fn decide(
        &mut self,
        id: &str,
        verdict: &Verdict,
        session_active: bool,
        clocks: Clocks,
        grants: &dyn GrantTable,
    ) -> Result<pb::ApprovalRequest, DecideError> {
        let number = parse_request_id(id).map_err(|_| DecideError::NotFound(id.to_string()))?;
        let settings = self.settings;
        let entry = self.entries.get_mut(&number).ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        if entry.request.state != PENDING {
            let by = entry.request.verdict.as_ref().map(|v| format!(" by {}", v.decided_by)).unwrap_or_default();
            return Err(DecideError::NotPending { id: id.to_string(), state: entry.request.state.clone(), by });
        }
        if clocks.unix_ns >= entry.request.expires_unix_nanos {
            finish(entry, EXPIRED, "expiry", "no decision before the request expired", clocks.unix_ns);
            self.save();
            return Err(DecideError::NotPending { id: id.to_string(), state: EXPIRED.to_string(), by: String::new() });
        }
        if !session_active {
            finish(entry, CANCELLED, "session end", "the session ended", clocks.unix_ns);
            let session = entry.request.session_id.clone();
            self.save();
            return Err(DecideError::SessionGone { id: id.to_string(), session });
        }
        if !verdict.approve {
            finish(entry, REJECTED, &verdict.decided_by, &verdict.reason, clocks.unix_ns);
            let request = entry.request.clone();
            self.save();
            return Ok(request);
        }
        let (kind, lasts) = match verdict.grant_for {
            None => (GRANT_ONCE, settings.once_grant_ttl),
            Some(d) => (GRANT_RULE, d),
        };
        let grant = Grant { kind, rule_id: entry.rule_id, expires_boot_ns: clocks.boot_ns.saturating_add(lasts.as_nanos() as u64), ended: false };
        let key = entry.grant_key(&grant);
        // Two requests of one rule approved for a while share the key: the later expiry serves.
        let expires_boot_ns = if kind == GRANT_RULE {
            self_rule_expiry(&self.entries, &key, grant.expires_boot_ns)
        } else {
            grant.expires_boot_ns
        };
        let entry = self.entries.get_mut(&number).ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        grants
            .put(&key, &GrantValue { expires_ns: expires_boot_ns, request: number })
            .map_err(|e| DecideError::Kernel { id: id.to_string(), error: format!("{e:#}") })?;
        entry.grant = Some(grant);
        finish(entry, APPROVED, &verdict.decided_by, &verdict.reason, clocks.unix_ns);
        if let Some(v) = entry.request.verdict.as_mut() {
            v.grant = if kind == GRANT_ONCE { "once" } else { "for" }.to_string();
            v.grant_seconds = lasts.as_secs() as i64;
            v.grant_expires_unix_nanos = clocks.unix_ns.saturating_add(lasts.as_nanos() as i64);
        }
        let request = entry.request.clone();
        self.save();
        Ok(request)
    }

    /// A ONCE grant the kernel consumed at the exec it allowed.
    pub fn grant_used(&mut self, number: u64) -> Option<pb::ApprovalRequest> {
        let entry = self.entries.get_mut(&number)?;
        let grant = entry.grant.as_mut()?;
        if grant.kind != GRANT_ONCE || grant.ended {
            return None;
        }
        grant.ended = true;
        let request = entry.request.clone();
        self.save();
        Some(request)
    }

    /// Expires pending requests past their time, cancels those of sessions
    /// that ended, and removes grants that expired or whose session ended.
    /// Returns the requests whose state changed, with the event's name.
    pub fn tick(&mut self, clocks: Clocks, active: impl Fn(u64) -> bool, grants: &dyn GrantTable) -> Vec<(&'static str, pb::ApprovalRequest)> {
        let mut changed = Vec::new();
        let mut ended_grants = Vec::new();
        for entry in self.entries.values_mut() {
            let alive = active(entry.session);
            if entry.request.state == PENDING {
                if !alive {
                    finish(entry, CANCELLED, "session end", "the session ended", clocks.unix_ns);
                    changed.push(("cancelled", entry.request.clone()));
                } else if clocks.unix_ns >= entry.request.expires_unix_nanos {
                    finish(entry, EXPIRED, "expiry", "no decision before the request expired", clocks.unix_ns);
                    changed.push(("expired", entry.request.clone()));
                }
            }
            if let Some(mut g) = entry.grant {
                if !g.ended && (!alive || clocks.boot_ns >= g.expires_boot_ns) {
                    g.ended = true;
                    ended_grants.push(entry.grant_key(&g));
                    entry.grant = Some(g);
                }
            }
        }
        for key in ended_grants {
            // A RULE key another live grant still serves stays.
            let still_served = self.entries.values().any(|e| e.grant.as_ref().is_some_and(|g| !g.ended && e.grant_key(g) == key));
            if !still_served {
                if let Err(e) = grants.delete(&key) {
                    tracing::warn!("remove an ended approval grant: {e:#}");
                }
            }
        }
        if !changed.is_empty() {
            self.save();
        }
        changed
    }

    /// After a reload rule ids change: a grant for a while follows its rule
    /// (same role, same text) to its new id, or ends when the rule is gone.
    pub fn rekey(&mut self, new_rule_id: impl Fn(&str, &str) -> Option<u32>, grants: &dyn GrantTable) {
        let mut moved = false;
        for entry in self.entries.values_mut() {
            let Some(g) = entry.grant else { continue };
            let renamed = new_rule_id(&entry.request.role, &entry.request.rule);
            if g.ended || g.kind != GRANT_RULE || renamed == Some(g.rule_id) {
                if let Some(id) = renamed {
                    entry.rule_id = id;
                }
                continue;
            }
            let old = entry.grant_key(&g);
            let _ = grants.delete(&old);
            match renamed {
                Some(id) => {
                    let grant = Grant { rule_id: id, ..g };
                    let number = entry.number();
                    if let Err(e) = grants.put(&entry.grant_key(&grant), &GrantValue { expires_ns: g.expires_boot_ns, request: number }) {
                        tracing::error!(request = %entry.request.id, "move an approval grant to its rule's new id: {e:#}");
                    }
                    entry.grant = Some(grant);
                    entry.rule_id = id;
                }
                None => {
                    tracing::warn!(request = %entry.request.id, rule = %entry.request.rule, "the approval rule is gone from the policy: its grant ends");
                    entry.grant = Some(Grant { ended: true, ..g });
                }
            }
            moved = true;
        }
        if moved {
            self.save();
        }
    }

    /// Newest first.
    pub fn list(&self, state: &str, session: &str, limit: usize) -> Vec<pb::ApprovalRequest> {
        let mut out: Vec<_> = self
            .entries
            .values()
            .filter(|e| state.is_empty() || e.request.state == state)
            .filter(|e| session.is_empty() || e.request.session_id == session)
            .map(|e| e.request.clone())
            .collect();
        out.sort_by(|a, b| b.created_unix_nanos.cmp(&a.created_unix_nanos).then_with(|| b.id.cmp(&a.id)));
        out.truncate(limit);
        out
    }

    pub fn get(&self, id: &str) -> Option<pb::ApprovalRequest> {
        let number = parse_request_id(id).ok()?;
        self.entries.get(&number).map(|e| e.request.clone())
    }

    /// The pending request of a session for a binding, if there is one.
    pub fn pending_for(&self, session: u64, argv_hash: u64, exe_identity: u64) -> Option<String> {
        self.entries
            .values()
            .find(|e| e.request.state == PENDING && e.session == session && e.argv_hash == argv_hash && e.exe_identity == exe_identity)
            .map(|e| e.request.id.clone())
    }

    /// Records why the agent asked (a request opened before the command ran).
    pub fn set_justification(&mut self, id: &str, justification: &str) -> Option<pb::ApprovalRequest> {
        let number = parse_request_id(id).ok()?;
        let entry = self.entries.get_mut(&number)?;
        entry.request.justification = justification.to_string();
        let request = entry.request.clone();
        self.save();
        Some(request)
    }

    /// The id of the decision that opened the request, once it is recorded.
    pub fn link_decision(&mut self, id: &str, decision_id: u64) -> Option<pb::ApprovalRequest> {
        let number = parse_request_id(id).ok()?;
        let entry = self.entries.get_mut(&number)?;
        entry.request.decision_id = decision_id;
        let request = entry.request.clone();
        self.save();
        Some(request)
    }

    /// The session a request belongs to (the kernel's number).
    pub fn session_of(&self, id: &str) -> Option<u64> {
        let number = parse_request_id(id).ok()?;
        self.entries.get(&number).map(|e| e.session)
    }

    fn trim(&mut self) {
        let finished: Vec<u64> = self.entries.iter().filter(|(_, e)| e.request.state != PENDING).map(|(n, _)| *n).collect();
        if finished.len() <= KEEP_FINISHED {
            return;
        }
        let mut by_age: Vec<(i64, u64)> = finished.iter().map(|n| (self.entries[n].request.created_unix_nanos, *n)).collect();
        by_age.sort();
        for (_, n) in by_age.into_iter().take(finished.len() - KEEP_FINISHED) {
            self.entries.remove(&n);
        }
    }

    fn save(&self) {
        if let Some(file) = &self.file {
            if let Err(e) = persist::save(file, &self.entries) {
                tracing::error!("save the approval requests: {e:#}");
            }
        }
    }
}

/// The latest expiry among live grants with `key`, and `candidate`.
fn self_rule_expiry(entries: &BTreeMap<u64, Entry>, key: &GrantKey, candidate: u64) -> u64 {
    entries
        .values()
        .filter_map(|e| e.grant.as_ref().filter(|g| !g.ended && e.grant_key(g) == *key).map(|g| g.expires_boot_ns))
        .fold(candidate, u64::max)
}

fn finish(entry: &mut Entry, state: &str, by: &str, reason: &str, now_ns: i64) {
    entry.request.state = state.to_string();
    entry.request.verdict = Some(pb::ApprovalVerdict {
        decided_by: by.to_string(),
        reason: reason.to_string(),
        grant: String::new(),
        grant_seconds: 0,
        decided_unix_nanos: now_ns,
        grant_expires_unix_nanos: 0,
    });
}

/// The two clocks a decision needs: wall time for records, boot time for the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub unix_ns: i64,
    pub boot_ns: u64,
}

impl Clocks {
    pub fn now() -> Clocks {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec for the kernel to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        Clocks { unix_ns: crate::clock::now_unix_nanos(), boot_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 }
    }
}

#[cfg(test)]
mod tests;
