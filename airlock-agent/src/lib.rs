//! The Airlock agent: the per-host daemon (`airlock-agent run`), the
//! `launch` command that starts governed sessions, and the operator CLI.
//!
//! Data flows one way: kernel event ([`events::decode`]) -> enrichment
//! ([`events::enrich`]) -> sinks ([`pipeline`]). Control flows one way:
//! CLI / control socket / API ([`api`]) -> the agent facade
//! ([`daemon::agent::Agent`]) -> the kernel ([`kernel`]), the only writer of
//! BPF maps.

pub mod api;
pub mod approvals;
pub mod approvals_client;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod events;
pub mod gateway;
pub mod install;
pub mod kernel;
pub mod launch;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod pipeline;
pub mod policy;
pub mod protected;
pub mod protocol;
pub mod masking;
pub mod security;
pub mod security_client;
pub mod sessions;
pub mod state_file;
pub mod systemd;
