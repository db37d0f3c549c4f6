//! Security monitoring on the facade: the detection runs, the blocks they (or
//! the gateway) place, applied to the kernel's `session_blocks`, the launch
//! refusal, and the operations the API and the gateway link ask for.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use airlock_api::decision::{ALLOW, DENY};
use airlock_api::v1 as pb;
use airlock_common::abi;
use anyhow::Result;

use super::agent::{lock, Agent};
use crate::security::{self, detection, HARD};
use crate::sessions::format_session_id;

/// The kind of the decisions that record a block's steps.
pub const SECURITY: &str = "security";

impl Agent {
    /// Every watcher tick: ends blocks whose time is up, then makes the
    /// kernel's session_blocks match the blocks in force for the live sessions.
    pub fn security_tick(&self) {
        let now = crate::clock::now_unix_nanos();
        let expired = {
            let mut security = lock(&self.security);
            let expired = security.expire(now);
            if !expired.is_empty() {
                security.save();
            }
            expired
        };
        for block in &expired {
            tracing::info!(block = %block.id, subject = %block.subject, "security block expired");
            self.record_block_step("block_expired", block, "");
        }
        if let Err(e) = self.apply_blocks_in_kernel(now) {
            tracing::error!("security blocks: {e:#}");
        }
    }

    /// The session_blocks entries every live session needs, written; the rest removed.
    fn apply_blocks_in_kernel(&self, now: i64) -> Result<()> {
        let sessions = lock(&self.sessions).list();
        let mut wanted: HashMap<u64, abi::SessionBlock> = HashMap::new();
        {
            let mut security = lock(&self.security);
            for s in sessions.iter().filter(|s| s.state.is_active()) {
                let Ok(id) = u64::from_str_radix(&s.id, 16) else {
                    continue;
                };
                let Some(block) = security.block_for(&s.id, &s.user, now).cloned() else {
                    continue;
                };
                let kind = if block.kind == HARD { abi::BLOCK_HARD } else { abi::BLOCK_SOFT };
                wanted.insert(id, abi::SessionBlock { kind, block_number: security.number_of(&block.id) });
            }
        }
        let maps = self.kernel.maps();
        for (session, entry) in maps.session_blocks() {
            if !wanted.contains_key(&session) {
                maps.clear_session_block(session);
                tracing::info!(session = %format_session_id(session), "security block no longer applies to the session");
            } else if wanted.get(&session) == Some(&entry) {
                wanted.remove(&session);
            }
        }
        for (session, entry) in wanted {
            maps.set_session_block(session, &entry)?;
            tracing::info!(session = %format_session_id(session), kind = entry.kind, "security block applied to the session");
        }
        Ok(())
    }

    /// The detectors over this host's store, every `--detect-interval`, until shutdown.
    pub fn detect_loop(&self, config: detection::DetectionConfig) -> Result<()> {
        tracing::info!(interval_secs = config.interval.as_secs(), settings = %config.source, "security detection runs on this host");
        let mut next = Instant::now() + config.interval;
        while !self.shutdown.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(200).min(next - Instant::now()));
                continue;
            }
            next = Instant::now() + config.interval;
            if let Err(e) = self.detect_once(&config.settings) {
                tracing::error!("security detection: {e:#}");
            }
        }
        Ok(())
    }

    /// One run: findings recorded, blocks placed and applied at once.
    pub fn detect_once(&self, settings: &airlock_detect::Settings) -> Result<usize> {
        let now = crate::clock::now_unix_nanos();
        let window = detection::longest_window_ns(settings);
        let (decisions, capped) = detection::decisions_in_window(&self.store, window, now)?;
        if capped {
            tracing::warn!(read = decisions.len(), "security detection judged only the newest decisions of its window");
        }
        let baseline = lock(&self.security).state.baseline.clone();
        let input = airlock_detect::Input { decisions: &decisions, token_uses: &[], baseline: &baseline, now_ns: now };
        let findings = airlock_detect::detect(settings, &input)?;
        let count = findings.len();
        tracing::info!(decisions = decisions.len(), findings = count, "security detection run");
        let placed = {
            let mut security = lock(&self.security);
            security.state.baseline.record(settings, &decisions, now);
            for f in &findings {
                tracing::warn!(rule = f.rule.as_str(), severity = f.severity.as_str(), subject = %f.subject, "security finding: {}", f.summary);
            }
            let placed = security.record_findings(findings, settings, now);
            security.save();
            placed
        };
        for block in &placed {
            tracing::warn!(block = %block.id, kind = %block.kind, subject = %block.subject, "security block placed: {}", block.summary);
            self.record_block_step("block_placed", block, "");
        }
        if !placed.is_empty() {
            self.apply_blocks_in_kernel(now)?;
        }
        Ok(count)
    }

    /// The gateway's blocks in force, whole: they replace the gateway's blocks held here.
    pub fn security_blocks_from_gateway(&self, set: Vec<pb::SecurityBlock>) -> Result<usize> {
        let now = crate::clock::now_unix_nanos();
        let count = set.len();
        let (new, gone) = {
            let mut security = lock(&self.security);
            let changes = security.replace_gateway_blocks(set);
            security.save();
            changes
        };
        for block in &new {
            self.record_block_step("block_placed", block, "the gateway");
        }
        for block in &gone {
            self.record_block_step("block_lifted", block, "the gateway");
        }
        self.apply_blocks_in_kernel(now)?;
        Ok(count)
    }

    /// Acknowledges (`lift` false) or lifts a local block; a lift ends it in the kernel at once.
    pub fn security_act(&self, id: &str, lift: bool, by: &str, reason: &str) -> Result<pb::SecurityBlock> {
        let now = crate::clock::now_unix_nanos();
        let block = {
            let mut security = lock(&self.security);
            let block = security.act(id, lift, by, now)?;
            security.save();
            block
        };
        self.record_block_step(if lift { "block_lifted" } else { "block_acknowledged" }, &block, reason);
        if lift {
            self.apply_blocks_in_kernel(now)?;
        }
        Ok(block)
    }

    pub fn security_blocks(&self, status: &str, limit: usize) -> Vec<pb::SecurityBlock> {
        lock(&self.security).blocks(status, limit)
    }

    pub fn security_findings(&self, limit: usize) -> Vec<pb::SecurityFinding> {
        lock(&self.security).findings(limit)
    }

    /// Why a new session of `user` may not start, if a block in force covers the user.
    pub fn launch_refusal(&self, user: &str) -> Option<String> {
        let now = crate::clock::now_unix_nanos();
        let security = lock(&self.security);
        let block = security.in_force(now).find(|b| b.subject_kind == "user" && b.subject == user)?;
        let until = crate::clock::rfc3339_from_unix_nanos(block.expires_unix_nanos.into());
        let lift = if block.origin == security::GATEWAY { "airlock-gateway security lift" } else { "airlock-agent security lift" };
        Some(format!(
            "security block {} ({} block, rule {}) covers user {user} until {until}: new sessions are refused; an administrator can lift it ({lift} {})",
            block.id, block.kind, block.rule, block.id
        ))
    }

    /// Names the block behind a `security_block` decision.
    pub fn name_security_block(&self, decision: &mut pb::Decision) {
        if let Some(block) = lock(&self.security).last_block_for(&decision.session_id, &decision.user) {
            decision.security_block = block.id.clone();
            decision.rule = Some(format!("{} block {} ({})", block.kind, block.id, block.rule));
        }
    }

    /// One step of a block (placed, acknowledged, lifted, expired) as a decision of kind `security`.
    fn record_block_step(&self, event: &str, block: &pb::SecurityBlock, reason: &str) {
        let now = crate::clock::now_unix_nanos();
        let (session_id, user) = match block.subject_kind.as_str() {
            "session" => (block.subject.clone(), String::new()),
            _ => (String::new(), block.subject.clone()),
        };
        let by = match event {
            "block_acknowledged" => block.acknowledged_by.clone(),
            "block_lifted" => block.lifted_by.clone(),
            _ => String::new(),
        };
        let mut note = String::new();
        if !by.is_empty() {
            note.push_str(&format!(" by {by}"));
        }
        if !reason.is_empty() {
            note.push_str(&format!(": {reason}"));
        }
        self.record(pb::Decision {
            time: crate::clock::rfc3339_from_unix_nanos(now.into()),
            time_unix_nanos: now,
            host: crate::events::enrich::host_name(),
            kind: SECURITY.to_string(),
            decision: if event == "block_placed" { DENY } else { ALLOW }.to_string(),
            reason: event.to_string(),
            security_block: block.id.clone(),
            session_id,
            user,
            rule: Some(format!("{} block {} ({}, {}){note}", block.kind, block.id, block.rule, block.summary)),
            backend: self.kernel.backend().to_string(),
            ..Default::default()
        });
    }
}
