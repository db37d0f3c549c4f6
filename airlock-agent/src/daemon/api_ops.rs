//! The agent's side of the API: [`AgentOps`] over the facade.

use std::sync::Arc;

use airlock_api::v1 as pb;
use anyhow::{Context, Result};
use tokio::sync::broadcast;

use super::agent::{lock, Agent};
use crate::api::ops::{AgentOps, RevokeError, RevokeOutcome};
use crate::approvals::{ApprovalError, Decider, Verdict};
use crate::pipeline::Record;
use crate::policy::effective::effective_policy;

impl AgentOps for Agent {
    fn status(&self) -> Result<pb::StatusResponse> {
        self.api_status()
    }

    fn sessions(&self) -> Vec<pb::Session> {
        self.api_sessions()
    }

    fn revoke(&self, id: &str, by: &str, reason: &str) -> Result<RevokeOutcome, RevokeError> {
        Agent::revoke(self, id, by, reason)
    }

    fn query(&self, filter: &pb::DecisionFilter, before: u64, page: usize) -> Result<(Vec<pb::Decision>, Option<u64>)> {
        self.store.query(filter, before, page)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.live.subscribe()
    }

    fn effective_policy(&self, role: &str) -> Result<pb::EffectivePolicy> {
        let role = if role.trim().is_empty() { self.default_role() } else { role.trim().to_string() };
        let store = lock(&self.policy);
        let current = store.current().context("no policy is in force")?;
        effective_policy(current, store.generation(), &role, &store.host_status())
    }

    fn reload(&self) -> Result<(String, u32)> {
        self.reload_now()
    }

    fn approvals(&self, state: &str, session: &str, limit: usize) -> Vec<pb::ApprovalRequest> {
        self.approvals_list(state, session, limit)
    }

    fn approval(&self, id: &str) -> Option<pb::ApprovalRequest> {
        Agent::approval(self, id)
    }

    fn decide_approval(&self, id: &str, verdict: Verdict, decider: Decider) -> Result<pb::ApprovalRequest, ApprovalError> {
        Agent::decide_approval(self, id, verdict, decider)
    }

    fn security_findings(&self, limit: usize) -> Vec<pb::SecurityFinding> {
        Agent::security_findings(self, limit)
    }

    fn security_blocks(&self, status: &str, limit: usize) -> Vec<pb::SecurityBlock> {
        Agent::security_blocks(self, status, limit)
    }

    fn security_act(&self, id: &str, lift: bool, by: &str, caller_pid: Option<u32>, reason: &str) -> anyhow::Result<pb::SecurityBlock> {
        // A governed session never ends or signs off its own block.
        if let Some(tag) = caller_pid.and_then(|pid| self.kernel.maps().tag_of(pid)) {
            anyhow::bail!(
                "{by} runs inside governed session {}: a governed process cannot acknowledge or lift security blocks",
                crate::sessions::format_session_id(tag.session_id)
            );
        }
        Agent::security_act(self, id, lift, by, reason)
    }
}
