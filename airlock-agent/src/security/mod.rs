//! Security monitoring on one host: the detectors' findings, and the blocks
//! they place, kept across restarts.
//!
//! Blocks come from two places. Without a gateway, this agent runs the
//! detectors over its own decision store (`--detect-interval`) and places its
//! own blocks ("local"). With a gateway, the gateway runs them over the whole
//! org and sends the org's blocks in force ("gateway"), which replace every
//! gateway block held before. Either way the daemon applies them in the
//! kernel (`session_blocks`) to every live session they cover, and refuses
//! new sessions of a blocked user.

pub mod detection;
mod ids;

use std::collections::VecDeque;
use std::path::PathBuf;

use airlock_api::v1 as pb;
use airlock_detect::{BlockKind, Finding, Subject};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub use ids::{check_block_id, new_block_id, new_finding_id};

pub const ACTIVE: &str = "active";
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const LIFTED: &str = "lifted";
pub const EXPIRED: &str = "expired";
pub const HARD: &str = "hard";
pub const SOFT: &str = "soft";
pub const LOCAL: &str = "local";
pub const GATEWAY: &str = "gateway";

/// Findings kept for `security findings` (the oldest go first).
const FINDINGS_KEPT: usize = 1000;
/// Blocks that ended (lifted, expired) kept for `security blocks`.
const ENDED_BLOCKS_KEPT: usize = 1000;

/// A block is in force while active or acknowledged and not past its expiry.
pub fn in_force(block: &pb::SecurityBlock, now_ns: i64) -> bool {
    (block.status == ACTIVE || block.status == ACKNOWLEDGED) && block.expires_unix_nanos > now_ns
}

/// Does `block` cover a session of `user` with id `session_id`?
pub fn covers(block: &pb::SecurityBlock, session_id: &str, user: &str) -> bool {
    match block.subject_kind.as_str() {
        "session" => block.subject == session_id,
        "user" => block.subject == user,
        _ => false,
    }
}

/// The state on disk and in memory.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SecurityState {
    pub findings: VecDeque<pb::SecurityFinding>,
    pub blocks: Vec<pb::SecurityBlock>,
    /// Each block's number in the kernel's session_blocks entries.
    pub numbers: Vec<(String, u32)>,
    pub next_number: u32,
    pub baseline: airlock_detect::Baseline,
}

/// The state and where it is saved.
pub struct Security {
    pub state: SecurityState,
    file: Option<PathBuf>,
}

impl Security {
    /// Reads the saved state; a missing file is a fresh start, a damaged one is
    /// reported and replaced (the blocks it held are logged as lost).
    pub fn open(file: Option<PathBuf>) -> Security {
        let state = file
            .as_ref()
            .and_then(|f| match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(state) => Some(state),
                    Err(e) => {
                        tracing::error!(file = %f.display(), "the security state is damaged and starts empty: {e}");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::error!(file = %f.display(), "cannot read the security state; it starts empty: {e}");
                    None
                }
            })
            .unwrap_or_default();
        Security { state, file }
    }

    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        if let Err(e) = crate::state_file::write_atomically(file, &self.state) {
            tracing::error!("could not save the security state: {e:#}");
        }
    }

    /// The kernel's number for a block, given once.
    pub fn number_of(&mut self, block_id: &str) -> u32 {
        if let Some((_, n)) = self.state.numbers.iter().find(|(id, _)| id == block_id) {
            return *n;
        }
        self.state.next_number = self.state.next_number.wrapping_add(1).max(1);
        let n = self.state.next_number;
        self.state.numbers.push((block_id.to_string(), n));
        n
    }

    /// Blocks in force now.
    pub fn in_force(&self, now_ns: i64) -> impl Iterator<Item = &pb::SecurityBlock> {
        self.state.blocks.iter().filter(move |b| in_force(b, now_ns))
    }

    /// The hardest block in force that covers a session, if any.
    pub fn block_for(&self, session_id: &str, user: &str, now_ns: i64) -> Option<&pb::SecurityBlock> {
        self.in_force(now_ns).filter(|b| covers(b, session_id, user)).max_by_key(|b| (b.kind == HARD, b.created_unix_nanos))
    }

    /// The newest block (in force or not) that covered a session: names the block behind a decision.
    pub fn last_block_for(&self, session_id: &str, user: &str) -> Option<&pb::SecurityBlock> {
        self.state.blocks.iter().filter(|b| covers(b, session_id, user)).max_by_key(|b| b.created_unix_nanos)
    }

    /// Marks expired blocks; returns them.
    pub fn expire(&mut self, now_ns: i64) -> Vec<pb::SecurityBlock> {
        let mut ended = Vec::new();
        for b in &mut self.state.blocks {
            if (b.status == ACTIVE || b.status == ACKNOWLEDGED) && b.expires_unix_nanos <= now_ns {
                b.status = EXPIRED.to_string();
                ended.push(b.clone());
            }
        }
        self.trim();
        ended
    }

    /// Records a run's findings; places a block for each finding of high or
    /// critical severity about a user or a session, unless a block in force
    /// already covers that subject as hard or harder. A finding that repeats
    /// one is dropped: while a block of the same rule and subject is in force,
    /// or while an earlier finding of the same rule and subject, as severe or
    /// more, is younger than the rule's window (the same evidence, found
    /// again). So is one whose window still reaches back before a person
    /// lifted a block of the same rule and subject: the evidence they
    /// reviewed does not block again. Returns the new blocks.
    pub fn record_findings(&mut self, findings: Vec<Finding>, settings: &airlock_detect::Settings, now_ns: i64) -> Vec<pb::SecurityBlock> {
        let mut placed = Vec::new();
        for finding in findings {
            let (kind, subject) = (finding.subject.kind(), finding.subject.name());
            let reviewed = self.state.blocks.iter().any(|b| {
                b.status == LIFTED
                    && b.rule == finding.rule.as_str()
                    && b.subject_kind == kind
                    && b.subject == subject
                    && b.lifted_unix_nanos > finding.window_start_ns
            });
            let blocked = self.in_force(now_ns).any(|b| b.rule == finding.rule.as_str() && b.subject_kind == kind && b.subject == subject);
            let since = now_ns.saturating_sub(settings.rule(finding.rule).window_ns());
            let repeated = self.state.findings.iter().any(|f| {
                f.rule == finding.rule.as_str()
                    && f.subject_kind == kind
                    && f.subject == subject
                    && f.created_unix_nanos > since
                    && severity_rank(&f.severity) >= severity_rank(finding.severity.as_str())
            });
            if reviewed || blocked || repeated {
                continue;
            }
            let mut record = finding_record(&finding, now_ns);
            if let Some(kind) = finding.severity.block_kind() {
                if let Some((subject_kind, subject)) = blockable(&finding.subject) {
                    let hard = kind == BlockKind::Hard;
                    let covered = self
                        .in_force(now_ns)
                        .any(|b| b.subject_kind == subject_kind && b.subject == subject && (b.kind == HARD || !hard));
                    if !covered {
                        let block = pb::SecurityBlock {
                            id: new_block_id(),
                            kind: if hard { HARD } else { SOFT }.to_string(),
                            subject_kind: subject_kind.to_string(),
                            subject: subject.to_string(),
                            rule: finding.rule.as_str().to_string(),
                            severity: finding.severity.as_str().to_string(),
                            values: record.values.clone(),
                            finding_id: record.id.clone(),
                            summary: finding.summary.clone(),
                            created_unix_nanos: now_ns,
                            expires_unix_nanos: now_ns.saturating_add(seconds_ns(settings.block_secs(kind))),
                            status: ACTIVE.to_string(),
                            origin: LOCAL.to_string(),
                            ..Default::default()
                        };
                        record.block_id = block.id.clone();
                        self.state.blocks.push(block.clone());
                        placed.push(block);
                    }
                }
            }
            self.state.findings.push_back(record);
        }
        while self.state.findings.len() > FINDINGS_KEPT {
            self.state.findings.pop_front();
        }
        placed
    }

    /// Replaces every gateway block with the gateway's set in force; returns
    /// (blocks new to this host, gateway blocks that are gone from the set).
    pub fn replace_gateway_blocks(&mut self, set: Vec<pb::SecurityBlock>) -> (Vec<pb::SecurityBlock>, Vec<pb::SecurityBlock>) {
        let known: Vec<String> = self.state.blocks.iter().filter(|b| b.origin == GATEWAY).map(|b| b.id.clone()).collect();
        let incoming: Vec<String> = set.iter().map(|b| b.id.clone()).collect();
        let mut gone = Vec::new();
        for b in &mut self.state.blocks {
            if b.origin == GATEWAY && !incoming.contains(&b.id) && (b.status == ACTIVE || b.status == ACKNOWLEDGED) {
                // Lifted at the gateway (or expired there): it ends here too.
                b.status = LIFTED.to_string();
                b.lifted_by = "the gateway".to_string();
                gone.push(b.clone());
            }
        }
        let mut new = Vec::new();
        for mut block in set {
            block.origin = GATEWAY.to_string();
            match self.state.blocks.iter_mut().find(|b| b.id == block.id) {
                Some(existing) => *existing = block,
                None => {
                    if !known.contains(&block.id) {
                        new.push(block.clone());
                    }
                    self.state.blocks.push(block);
                }
            }
        }
        self.trim();
        (new, gone)
    }

    /// Acknowledges or lifts a local block. A gateway's block is the gateway's to end.
    pub fn act(&mut self, id: &str, lift: bool, by: &str, now_ns: i64) -> Result<pb::SecurityBlock> {
        let Some(block) = self.state.blocks.iter_mut().find(|b| b.id == id) else {
            bail!("no security block {id}");
        };
        if block.origin == GATEWAY {
            bail!("block {id} comes from the gateway; acknowledge or lift it there (airlock-gateway security {} {id})", if lift { "lift" } else { "ack" });
        }
        if !in_force(block, now_ns) {
            bail!("block {id} is {}; only a block in force can be {}", block.status, if lift { "lifted" } else { "acknowledged" });
        }
        if lift {
            block.status = LIFTED.to_string();
            block.lifted_by = by.to_string();
            block.lifted_unix_nanos = now_ns;
        } else {
            block.status = ACKNOWLEDGED.to_string();
            block.acknowledged_by = by.to_string();
            block.acknowledged_unix_nanos = now_ns;
        }
        Ok(block.clone())
    }

    /// Newest first.
    pub fn blocks(&self, status: &str, limit: usize) -> Vec<pb::SecurityBlock> {
        let mut all: Vec<pb::SecurityBlock> =
            self.state.blocks.iter().filter(|b| status.is_empty() || b.status == status).cloned().collect();
        all.sort_by(|a, b| b.created_unix_nanos.cmp(&a.created_unix_nanos).then(b.id.cmp(&a.id)));
        all.truncate(limit);
        all
    }

    /// Newest first.
    pub fn findings(&self, limit: usize) -> Vec<pb::SecurityFinding> {
        self.state.findings.iter().rev().take(limit).cloned().collect()
    }

    /// Keeps the ended blocks bounded (and the numbers of blocks still held).
    fn trim(&mut self) {
        let ended: Vec<usize> = (0..self.state.blocks.len())
            .filter(|&i| {
                let b = &self.state.blocks[i];
                b.status == LIFTED || b.status == EXPIRED
            })
            .collect();
        if ended.len() > ENDED_BLOCKS_KEPT {
            let drop: Vec<usize> = ended[..ended.len() - ENDED_BLOCKS_KEPT].to_vec();
            let mut i = 0;
            self.state.blocks.retain(|_| {
                let keep = !drop.contains(&i);
                i += 1;
                keep
            });
        }
        let held: Vec<String> = self.state.blocks.iter().map(|b| b.id.clone()).collect();
        self.state.numbers.retain(|(id, _)| held.contains(id));
    }
}

/// Low, medium, high, critical: 0 to 3 (an unknown name ranks lowest).
fn severity_rank(name: &str) -> usize {
    ["low", "medium", "high", "critical"].iter().position(|s| *s == name).unwrap_or(0)
}

fn seconds_ns(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1_000_000_000)
}

/// The subjects a kernel block can hold: users and sessions (never a token).
fn blockable(subject: &Subject) -> Option<(&'static str, &str)> {
    match subject {
        Subject::User(user) => Some(("user", user)),
        Subject::Session(session) => Some(("session", session)),
        Subject::Token(_) => None,
    }
}

/// A finding as the API and the state file carry it.
pub fn finding_record(finding: &Finding, now_ns: i64) -> pb::SecurityFinding {
    pb::SecurityFinding { id: new_finding_id(), created_unix_nanos: now_ns, ..finding.to_message() }
}

#[cfg(test)]
mod tests;
