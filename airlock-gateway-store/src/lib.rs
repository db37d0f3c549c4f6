//! The gateway's store: orgs, tokens, enrolled hosts, policy versions, the
//! fleet's decisions, sessions and approval requests, commands for agents,
//! security monitoring's findings, blocks and settings, and the web UI's
//! users and sessions. SQLite (one replica) or PostgreSQL (any number of
//! replicas): one schema, applied by versioned migrations, and every query
//! written once for both.

mod approvals;
mod commands;
mod db;
mod decisions;
mod error;
mod filter;
mod fleet_counts;
mod hosts;
mod migrations;
mod orgs;
mod policies;
mod security;
mod security_inputs;
mod sessions;
mod store;
mod tokens;
mod users;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use approvals::{
    is_request_id, AnsweredApproval, Approval, ApprovalAttempt, ApprovalChange, ApprovalQuery, GatewayVerdict, VerdictCommand, APPROVAL_PENDING, APPROVAL_STATES,
    DELIVERY_DELIVERED, DELIVERY_DELIVERING, DELIVERY_FAILED_PREFIX, MAX_APPROVALS_PAGE, VERDICT_APPROVE, VERDICT_REJECT,
};
pub use commands::{Command, COMMAND_DONE, COMMAND_FAILED, COMMAND_PENDING, COMMAND_SENT};
pub use decisions::{FleetQuery, HostBatch, HourCount, IncomingDecision, Ingested, StoredDecision, MAX_HOUR_BUCKETS};
pub use error::StoreError;
pub use hosts::{Host, HostContact};
pub use orgs::Org;
pub use security::{
    effective_status, in_force, is_block_id, is_finding_id, NewFinding, PreparedFinding, BLOCK_ACKNOWLEDGED, BLOCK_ACTIVE, BLOCK_EXPIRED, BLOCK_LIFTED, BLOCK_STATUSES,
    MAX_SECURITY_PAGE,
};
pub use security_inputs::{SecuritySettingsVersion, TokenUseRow};
pub use policies::{NewPolicyVersion, PolicyFile, PolicyVersion};
pub use store::GatewayStore;
pub use tokens::{ApiToken, JoinOutcome, NewToken, TokenInfo, TOKEN_API, TOKEN_JOIN};
pub use users::{NewUser, UiSession, User, USER_ADMIN, USER_APPROVER, USER_ROLES, USER_VIEWER};
