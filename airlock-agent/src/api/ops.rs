//! What the API asks of the agent. The daemon implements it; the API knows
//! nothing else about the daemon, so control flows one way: API -> agent
//! facade -> kernel.

use std::sync::Arc;

use airlock_api::v1 as pb;
use anyhow::Result;
use tokio::sync::broadcast;

use crate::approvals::{ApprovalError, Decider, Verdict};
use crate::pipeline::Record;
use crate::sessions::SessionInfo;

pub enum RevokeError {
    NotFound,
    Failed(anyhow::Error),
}

pub struct RevokeOutcome {
    pub session: SessionInfo,
    /// Distinct processes sent SIGKILL.
    pub killed: u32,
    pub rounds: u32,
    /// Processes still tagged when the call returned (0 on success).
    pub remaining: u32,
}

/// The agent's operations the API serves. Calls may block (locks, map
/// syscalls, SQLite): the service runs them on tokio's blocking pool.
pub trait AgentOps: Send + Sync + 'static {
    fn status(&self) -> Result<pb::StatusResponse>;
    /// Every session, newest first.
    fn sessions(&self) -> Vec<pb::Session>;
    fn revoke(&self, id: &str, by: &str, reason: &str) -> Result<RevokeOutcome, RevokeError>;
    /// Stored decisions matching `filter`, newest first, older than `before`.
    fn query(&self, filter: &pb::DecisionFilter, before: u64, page: usize) -> Result<(Vec<pb::Decision>, Option<u64>)>;
    /// Decisions as they are made.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>>;
    /// The rules a role (empty: the default role) is held to now.
    fn effective_policy(&self, role: &str) -> Result<pb::EffectivePolicy>;
    /// Reloads the policy now: the version and generation in force.
    fn reload(&self) -> Result<(String, u32)>;
    /// Approval requests, newest first.
    fn approvals(&self, state: &str, session: &str, limit: usize) -> Vec<pb::ApprovalRequest>;
    fn approval(&self, id: &str) -> Option<pb::ApprovalRequest>;
    fn decide_approval(&self, id: &str, verdict: Verdict, decider: Decider) -> Result<pb::ApprovalRequest, ApprovalError>;
    /// Security findings and blocks, newest first.
    fn security_findings(&self, limit: usize) -> Vec<pb::SecurityFinding>;
    fn security_blocks(&self, status: &str, limit: usize) -> Vec<pb::SecurityBlock>;
    /// Acknowledges or lifts a block. `caller_pid`: the caller's process, when
    /// known; a process inside a governed session is refused.
    fn security_act(&self, id: &str, lift: bool, by: &str, caller_pid: Option<u32>, reason: &str) -> Result<pb::SecurityBlock>;
}
