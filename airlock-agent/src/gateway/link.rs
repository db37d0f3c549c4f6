//! The link thread: one stream to the gateway, reconnected with backoff for
//! as long as the daemon runs. It ships the spool from the ack watermark in
//! batches (a window of unacked entries in flight; after a reconnect it
//! resends from the watermark and the gateway stores each (host, seq) once),
//! applies the policy bundles it receives, answers commands, and reports the
//! host's sessions when they change.

use crate::approvals::{Decider, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_api::gateway::v1::agent_link_client::AgentLinkClient;
use airlock_api::gateway::v1::{
    agent_message, command, gateway_message, shipped_entry, AgentMessage, CommandResult, DecisionBatch, GatewayMessage, Hello, PolicyBundle,
    PolicyReport, SessionReport, ShippedEntry,
};
use airlock_api::v1 as pb;
use airlock_spool::{Entry, Spool};
use anyhow::{Context, Result};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::enrollment::Enrolled;
use super::{GatewayOps, LinkState};
use crate::api::ops::RevokeError;
use crate::policy::bundle_file::BundleFile;

/// Entries per batch, and bytes, at most.
const BATCH_ENTRIES: usize = 500;
const BATCH_BYTES: usize = 1 << 20;
/// Entries sent and not yet acked, at most.
const WINDOW: u64 = 5000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An empty batch after this much silence keeps the stream (and the host's last contact) alive.
const HEARTBEAT: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(2);

pub struct Link {
    pub enrolled: Enrolled,
    pub spool: Spool,
    pub state: Arc<LinkState>,
    pub ops: Arc<dyn GatewayOps>,
    pub bundle_file: std::path::PathBuf,
    pub backend: String,
    pub shutdown: Arc<AtomicBool>,
}

impl Link {
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("airlock-gateway".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!("the gateway link could not start its runtime: {e}"),
                };
                runtime.block_on(self.forever());
            })
            .context("start the gateway link thread")
    }

    async fn forever(self) {
        let mut backoff = Duration::from_secs(1);
        let mut lost_reported = self.spool.stats().lost_total;
        while !self.shutdown.load(Ordering::SeqCst) {
            let started = Instant::now();
            // A stop never waits for a connect or a stream to time out.
            let result = tokio::select! {
                result = self.session(&mut lost_reported) => result,
                _ = self.stopped() => return,
            };
            self.state.set_connected(false, result.as_ref().err().map(|e| format!("{e:#}")));
            match result {
                Ok(()) => tracing::info!("the gateway closed the stream; reconnecting"),
                Err(e) => tracing::warn!(retry_in = ?backoff, "gateway link: {e:#}"),
            }
            if started.elapsed() > MAX_BACKOFF {
                backoff = Duration::from_secs(1);
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.shutdown.load(Ordering::SeqCst) {
                self.report_loss(&mut lost_reported);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stopped(&self) {
        while !self.shutdown.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A spool that dropped decisions since the last look is recorded as a
    /// decision of its own, in the audit trail and the store.
    fn report_loss(&self, reported: &mut u64) {
        let total = self.spool.stats().lost_total;
        if total > *reported {
            self.ops.record_shipping_loss(total - *reported, total);
            *reported = total;
        }
    }

    async fn session(&self, lost_reported: &mut u64) -> Result<()> {
        let mut client = AgentLinkClient::new(self.enrolled.channel()?).max_decoding_message_size(64 << 20).max_encoding_message_size(16 << 20);
        let (tx, rx) = mpsc::channel::<AgentMessage>(8);
        let bundle = BundleFile::read(&self.bundle_file).ok().flatten().unwrap_or_default();
        let hello = Hello {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            backend: self.backend.clone(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            enforced_version: bundle.version,
            enforced_hash: bundle.content_hash,
        };
        send(&tx, agent_message::Body::Hello(hello)).await?;
        let mut inbound = client
            .exchange(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow::anyhow!("the gateway refused the stream: {} ({:?})", s.message(), s.code()))?
            .into_inner();
        self.state.set_connected(true, None);
        tracing::info!(gateway = %self.enrolled.url, host = %self.enrolled.host_id, "connected to the gateway");
        let mut sent = self.spool.acked();
        let mut last_sessions = Vec::new();
        let mut last_send = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        // One blocking wait for new spool entries at a time, kept across turns of the loop.
        let mut waiter: Option<tokio::task::JoinHandle<bool>> = None;
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return Ok(());
            }
            while sent.saturating_sub(self.spool.acked()) < WINDOW {
                let entries = self.spool.read(sent, BATCH_ENTRIES, BATCH_BYTES)?;
                let Some(last) = entries.last().map(Entry::seq) else {
                    break;
                };
                send(&tx, agent_message::Body::Batch(batch(entries))).await?;
                sent = last;
                last_send = Instant::now();
            }
            let window_open = sent.saturating_sub(self.spool.acked()) < WINDOW;
            if waiter.is_none() && window_open {
                let spool = self.spool.clone();
                waiter = Some(tokio::task::spawn_blocking(move || spool.wait(sent, Duration::from_millis(500))));
            }
            let more = async {
                match waiter.as_mut() {
                    Some(handle) => {
                        let _ = handle.await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let mut woke = false;
            tokio::select! {
                message = inbound.message() => {
                    let message = message.map_err(|s| anyhow::anyhow!("the gateway ended the stream: {} ({:?})", s.message(), s.code()))?;
                    let Some(message) = message else { return Ok(()) };
                    self.handle(message, &tx).await?;
                }
                _ = tick.tick() => {
                    self.report_loss(lost_reported);
                    let ops = self.ops.clone();
                    let sessions = tokio::task::spawn_blocking(move || ops.sessions()).await.context("list the sessions")?;
                    let encoded = SessionReport { sessions: sessions.clone() }.encode_to_vec();
                    if encoded != last_sessions {
                        send(&tx, agent_message::Body::Sessions(SessionReport { sessions })).await?;
                        last_sessions = encoded;
                    }
                    if last_send.elapsed() > HEARTBEAT {
                        send(&tx, agent_message::Body::Batch(DecisionBatch::default())).await?;
                        last_send = Instant::now();
                    }
                }
                _ = more => woke = true,
            }
            if woke {
                waiter = None;
            }
        }
    }

    async fn handle(&self, message: GatewayMessage, tx: &mpsc::Sender<AgentMessage>) -> Result<()> {
        match message.body {
            Some(gateway_message::Body::Ack(ack)) => self.spool.ack(ack.seq).with_context(|| format!("the gateway acked seq {}", ack.seq)),
            Some(gateway_message::Body::Policy(bundle)) => {
                let report = self.apply(bundle).await;
                send(tx, agent_message::Body::Policy(report)).await
            }
            Some(gateway_message::Body::Command(c)) => {
                let result = match c.body {
                    Some(command::Body::RevokeSession(r)) => self.revoke(c.id, r).await,
                    Some(command::Body::DecideApproval(a)) => self.decide_approval(c.id, a).await,
                    Some(command::Body::SecurityBlocks(set)) => self.security_blocks(c.id, set.blocks, set.masking_strategy).await,
                    None => CommandResult { id: c.id, error: "this agent does not know the command".into(), ..Default::default() },
                };
                send(tx, agent_message::Body::CommandResult(result)).await
            }
            None => Ok(()),
        }
    }

    async fn apply(&self, bundle: PolicyBundle) -> PolicyReport {
        let file = BundleFile {
            org: bundle.org,
            version: bundle.version,
            content_hash: bundle.content_hash.clone(),
            files: bundle.files.into_iter().map(|f| (f.path, f.content)).collect(),
        };
        let ops = self.ops.clone();
        let outcome = tokio::task::spawn_blocking(move || ops.apply_bundle(&file)).await.unwrap_or_else(|e| Err(format!("the reload panicked: {e}")));
        match outcome {
            Ok(hash) => {
                self.state.set_bundle_error(None);
                tracing::info!(version = bundle.version, %hash, "policy bundle from the gateway in force");
                PolicyReport { version: bundle.version, content_hash: hash, error: String::new() }
            }
            Err(error) => {
                self.state.set_bundle_error(Some(error.clone()));
                tracing::error!(version = bundle.version, "policy bundle refused; the policy in force stays: {error}");
                PolicyReport { version: bundle.version, content_hash: bundle.content_hash, error }
            }
        }
    }

    /// The org's blocks in force, from the gateway's detectors.
    async fn security_blocks(&self, id: i64, blocks: Vec<airlock_api::v1::SecurityBlock>, masking: String) -> CommandResult {
        let ops = self.ops.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            // A masking strategy this host cannot use is reported; the blocks apply all the same.
            let masked = ops.apply_org_masking(&masking);
            let applied = ops.apply_security_blocks(blocks);
            match (applied, masked) {
                (Ok(count), Ok(())) => Ok(count),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        })
        .await;
        match outcome {
            Ok(Ok(count)) => {
                tracing::info!(blocks = count, "security blocks from the gateway in force");
                CommandResult { id, ..Default::default() }
            }
            Ok(Err(error)) => CommandResult { id, error, ..Default::default() },
            Err(e) => CommandResult { id, error: format!("applying the security blocks panicked: {e}"), ..Default::default() },
        }
    }

    /// An approver's verdict given at the gateway.
    async fn decide_approval(&self, id: i64, command: airlock_api::gateway::v1::ApprovalCommand) -> CommandResult {
        let Some(ask) = command.decide else {
            return CommandResult { id, error: "the approval command carries no verdict".into(), ..Default::default() };
        };
        let verdict = Verdict {
            approve: ask.approve,
            grant_for: (ask.approve && ask.grant_seconds > 0).then(|| std::time::Duration::from_secs(ask.grant_seconds)),
            reason: ask.reason,
            decided_by: String::new(),
        };
        let label = if command.decided_by.trim().is_empty() { "the gateway".to_string() } else { command.decided_by };
        let ops = self.ops.clone();
        let outcome = tokio::task::spawn_blocking(move || ops.decide_approval(&ask.id, verdict, Decider::Remote { label }).map_err(|e| e.to_string())).await;
        match outcome {
            Ok(Ok(request)) => CommandResult { id, approval: Some(request), ..Default::default() },
            Ok(Err(error)) => CommandResult { id, error, ..Default::default() },
            Err(e) => CommandResult { id, error: format!("the approval panicked: {e}"), ..Default::default() },
        }
    }

    async fn revoke(&self, id: i64, request: pb::RevokeSessionRequest) -> CommandResult {
        let ops = self.ops.clone();
        let session = request.id.clone();
        let outcome = tokio::task::spawn_blocking(move || ops.revoke(&request.id, "gateway", &request.reason)).await;
        match outcome {
            Ok(Ok(o)) => CommandResult {
                id,
                error: String::new(),
                revoke_session: Some(pb::RevokeSessionResponse {
                    session: Some(crate::api::convert::session_of(&o.session, o.remaining)),
                    killed: o.killed,
                    rounds: o.rounds,
                }),
                approval: None,
            },
            Ok(Err(RevokeError::NotFound)) => CommandResult { id, error: format!("no session {session:?} on this host"), ..Default::default() },
            Ok(Err(RevokeError::Failed(e))) => CommandResult { id, error: format!("{e:#}"), ..Default::default() },
            Err(e) => CommandResult { id, error: format!("the revocation panicked: {e}"), ..Default::default() },
        }
    }
}

fn batch(entries: Vec<Entry>) -> DecisionBatch {
    let entries = entries
        .into_iter()
        .map(|e| match e {
            Entry::Record { seq, payload } => match pb::Decision::decode(payload.as_slice()) {
                Ok(d) => ShippedEntry { seq, entry: Some(shipped_entry::Entry::Decision(d)) },
                // Written by this agent, so never expected; counted rather than stalling the spool.
                Err(e) => {
                    tracing::error!(seq, "an unreadable spool record is shipped as lost: {e}");
                    ShippedEntry { seq, entry: Some(shipped_entry::Entry::Lost(1)) }
                }
            },
            Entry::Loss { seq, count } => ShippedEntry { seq, entry: Some(shipped_entry::Entry::Lost(count)) },
        })
        .collect();
    DecisionBatch { entries }
}

async fn send(tx: &mpsc::Sender<AgentMessage>, body: agent_message::Body) -> Result<()> {
    tx.send(AgentMessage { body: Some(body) }).await.map_err(|_| anyhow::anyhow!("the stream to the gateway closed"))
}
