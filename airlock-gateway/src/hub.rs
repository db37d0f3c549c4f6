//! What one gateway replica shares between its connections: the store, the
//! CA, the org's latest policy versions (polled from the store, so a push
//! made through another replica reaches this one's agents within a second or
//! two), the agents connected here (to hand them commands and security
//! blocks), and a signal that decisions were stored (for live tails).

use crate::approvals::Notifiers;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_api::gateway::v1::command::Body as CommandBody;
use airlock_api::gateway::v1::{gateway_message, ApprovalCommand, Command, GatewayMessage};
use airlock_gateway_store::{Command as StoredCommand, GatewayStore, HostBatch, IncomingDecision};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::metrics::GatewayMetrics;
use crate::pki::Authority;

/// The command kind a session revocation is queued as.
pub const REVOKE_SESSION: &str = "revoke_session";
/// The command kind a verdict on an approval request is queued as.
pub const DECIDE_APPROVAL: &str = "decide_approval";

/// How often a replica looks for what other replicas changed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub type HostKey = (i64, String);

/// Entries a group commit takes at most (batches of many hosts together).
const MAX_GROUP_ROWS: usize = 10_000;

/// A host's batch on its way to the group commit, and where its answer goes.
pub struct IngestRequest {
    pub org_id: i64,
    pub host_id: String,
    pub rows: Vec<IncomingDecision>,
    pub lost: i64,
    pub done: oneshot::Sender<Result<(), tonic::Status>>,
}

pub struct Hub {
    pub store: GatewayStore,
    pub authority: Authority,
    /// This replica's name, recorded with the hosts connected to it.
    pub replica: String,
    /// org id -> its latest policy version.
    latest: watch::Sender<HashMap<i64, i64>>,
    connected: Mutex<HashMap<HostKey, Connection>>,
    next_connection: std::sync::atomic::AtomicU64,
    /// Decisions were stored through this replica.
    pub stored: Notify,
    /// A command was queued through this replica.
    commands_queued: Notify,
    /// The replica is stopping: connections end UNAVAILABLE and agents reconnect elsewhere or later.
    pub stopping: std::sync::atomic::AtomicBool,
    ingest: mpsc::Sender<IngestRequest>,
    ingest_queue: Mutex<Option<mpsc::Receiver<IngestRequest>>>,
    /// Who is told of approval requests and decisions, per org.
    pub notifiers: Notifiers,
    /// A block was placed, acknowledged or lifted through this replica.
    pub blocks_changed: Notify,
    /// The SIEM export (`run --export`), set once at start when asked for.
    export: std::sync::OnceLock<Arc<airlock_export::Exporter>>,
    /// What this replica counts for Prometheus.
    pub metrics: GatewayMetrics,
}

struct Connection {
    id: u64,
    sender: mpsc::Sender<Result<GatewayMessage, tonic::Status>>,
    /// Ends the connection now (its host was revoked through this replica).
    kick: Arc<Notify>,
}

impl Hub {
    pub fn new(store: GatewayStore, authority: Authority, replica: String, notifiers: Notifiers) -> Arc<Hub> {
        let (ingest, queue) = mpsc::channel(4096);
        Arc::new(Hub {
            notifiers,
            ingest,
            ingest_queue: Mutex::new(Some(queue)),
            store,
            authority,
            replica,
            latest: watch::channel(HashMap::new()).0,
            connected: Mutex::new(HashMap::new()),
            next_connection: Default::default(),
            stored: Notify::new(),
            commands_queued: Notify::new(),
            stopping: Default::default(),
            blocks_changed: Notify::new(),
            export: std::sync::OnceLock::new(),
            metrics: GatewayMetrics::new(),
        })
    }

    /// Every decision this replica stores from now on is also exported.
    pub fn set_export(&self, exporter: Arc<airlock_export::Exporter>) {
        if self.export.set(exporter).is_err() {
            tracing::warn!("the SIEM export was already set; the second is ignored");
        }
    }

    pub fn policy_versions(&self) -> watch::Receiver<HashMap<i64, i64>> {
        self.latest.subscribe()
    }

    /// Called right after this replica wrote a version, so its own agents
    /// do not wait for the next poll.
    pub fn policy_written(&self, org_id: i64, version: i64) {
        self.latest.send_if_modified(|map| {
            let entry = map.entry(org_id).or_default();
            let newer = *entry < version;
            if newer {
                *entry = version;
            }
            newer
        });
    }

    /// Registers an agent's stream; an older stream of the same host is
    /// forgotten (it ends when its agent notices).
    pub fn connect(&self, key: HostKey, sender: mpsc::Sender<Result<GatewayMessage, tonic::Status>>) -> (u64, Arc<Notify>) {
        let id = self.next_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let mut connected = lock(&self.connected);
        connected.insert(key, Connection { id, sender, kick: kick.clone() });
        self.metrics.connected_agents.set(connected.len() as i64);
        drop(connected);
        self.commands_queued.notify_one();
        (id, kick)
    }

    /// Ends the host's stream if it is connected here. Streams on other
    /// replicas notice at their next check of the host's record.
    pub fn kick(&self, key: &HostKey) {
        if let Some(c) = lock(&self.connected).get(key) {
            c.kick.notify_one();
        }
    }

    pub fn disconnect(&self, key: &HostKey, id: u64) {
        let mut connected = lock(&self.connected);
        if connected.get(key).is_some_and(|c| c.id == id) {
            connected.remove(key);
        }
        self.metrics.connected_agents.set(connected.len() as i64);
    }

    /// Ends every agent stream of this replica: it is stopping.
    pub fn stop_all(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in lock(&self.connected).values() {
            c.kick.notify_one();
        }
    }

    pub fn connected_count(&self) -> usize {
        lock(&self.connected).len()
    }

    /// The streams of the org's agents connected here, by host.
    pub fn senders_of_org(&self, org_id: i64) -> Vec<(String, mpsc::Sender<Result<GatewayMessage, tonic::Status>>)> {
        lock(&self.connected).iter().filter(|((org, _), _)| *org == org_id).map(|((_, host), c)| (host.clone(), c.sender.clone())).collect()
    }

    /// Security blocks changed here: push the new sets now, not at the next poll.
    pub fn security_blocks_changed(&self) {
        self.blocks_changed.notify_one();
    }

    pub fn queued_command(&self) {
        self.commands_queued.notify_one();
    }

    /// Stores a host's batch through the group commit; returns once it is
    /// committed (then, and only then, the batch may be acked).
    pub async fn ingest(&self, org_id: i64, host_id: &str, rows: Vec<IncomingDecision>, lost: i64) -> Result<(), tonic::Status> {
        let (done, answer) = oneshot::channel();
        let request = IngestRequest { org_id, host_id: host_id.to_string(), rows, lost, done };
        self.ingest.send(request).await.map_err(|_| tonic::Status::unavailable("the gateway is stopping"))?;
        answer.await.map_err(|_| tonic::Status::unavailable("the gateway is stopping"))?
    }

    /// The group commit, forever: whatever batches are waiting when the
    /// previous commit ends go into the next transaction together, so the
    /// store sees one transaction per turn, not one per host batch.
    pub async fn write_batches(self: Arc<Hub>) {
        let Some(mut queue) = lock(&self.ingest_queue).take() else {
            return;
        };
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            let mut rows = group[0].rows.len();
            while rows < MAX_GROUP_ROWS {
                let Ok(next) = queue.try_recv() else { break };
                rows += next.rows.len();
                group.push(next);
            }
            let batches: Vec<HostBatch<'_>> =
                group.iter().map(|r| HostBatch { org_id: r.org_id, host_id: &r.host_id, rows: &r.rows, lost: r.lost }).collect();
            let (outcome, approvals, new) = match self.store.insert_decision_batches(&batches).await {
                Ok(ingested) => {
                    self.count_ingested(&group, &ingested.new);
                    (Ok(()), ingested.approvals, ingested.new)
                }
                Err(e) => {
                    self.metrics.ingest_failed_batches.inc_by(group.len() as u64);
                    (Err(crate::auth::store_status(e)), Vec::new(), Vec::new())
                }
            };
            drop(batches);
            for (n, mut request) in group.into_iter().enumerate() {
                let _ = request.done.send(outcome.clone());
                if let (Some(exporter), Some(&stored)) = (self.export.get(), new.get(n)) {
                    export_new(exporter, std::mem::take(&mut request.rows), stored);
                }
            }
            if outcome.is_ok() {
                self.stored.notify_waiters();
            }
            if !approvals.is_empty() {
                // Off the commit loop: the next turn does not wait for the news.
                tokio::spawn(crate::approvals::ingested(self.store.clone(), self.notifiers.clone(), approvals));
            }
        }
    }

    /// A group commit's figures: per host batch, its new decisions and its redeliveries.
    fn count_ingested(&self, group: &[IngestRequest], new: &[u64]) {
        let m = &self.metrics;
        m.ingest_commits.inc();
        m.ingest_batches.inc_by(group.len() as u64);
        for (request, &fresh) in group.iter().zip(new) {
            m.ingested_decisions.inc_by(fresh);
            m.redelivered_decisions.inc_by((request.rows.len() as u64).saturating_sub(fresh));
            m.shipping_lost_decisions.inc_by(request.lost.max(0) as u64);
        }
    }

    /// Polls the store for the latest policy versions, forever.
    pub async fn watch_policies(self: Arc<Hub>) {
        loop {
            match self.store.latest_policy_versions().await {
                Ok(rows) => {
                    let fresh: HashMap<i64, i64> = rows.into_iter().collect();
                    self.latest.send_if_modified(|map| {
                        let changed = *map != fresh;
                        if changed {
                            *map = fresh;
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!("poll the policy versions: {e}"),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Hands queued commands to the agents connected here, forever. A command
    /// is taken from the queue by one replica only (the store marks it sent).
    pub async fn deliver_commands(self: Arc<Hub>) {
        loop {
            if let Err(e) = self.deliver_once().await {
                tracing::warn!("deliver queued commands: {e}");
            }
            let _ = tokio::time::timeout(POLL_INTERVAL, self.commands_queued.notified()).await;
        }
    }

    async fn deliver_once(&self) -> Result<(), airlock_gateway_store::StoreError> {
        let waiting = self.store.pending_command_hosts().await?;
        for key in waiting {
            let Some(sender) = lock(&self.connected).get(&key).map(|c| c.sender.clone()) else {
                continue;
            };
            let now = crate::now_ns();
            for command in self.store.take_pending_commands(key.0, &key.1, now).await? {
                let message = match command.kind.as_str() {
                    REVOKE_SESSION => airlock_api::v1::RevokeSessionRequest::decode(command.payload.as_slice())
                        .map(|r| Command { id: command.id, body: Some(CommandBody::RevokeSession(r)) }),
                    DECIDE_APPROVAL => ApprovalCommand::decode(command.payload.as_slice())
                        .map(|a| Command { id: command.id, body: Some(CommandBody::DecideApproval(a)) }),
                    other => {
                        self.fail_command(&command, &format!("unknown command kind {other:?}"), now).await;
                        continue;
                    }
                };
                let Ok(command_message) = message else {
                    self.fail_command(&command, "the queued command could not be decoded", now).await;
                    continue;
                };
                let sent = sender.send(Ok(GatewayMessage { body: Some(gateway_message::Body::Command(command_message)) })).await;
                if sent.is_err() {
                    self.fail_command(&command, "the host disconnected before the command was sent", now).await;
                }
            }
        }
        Ok(())
    }

    /// A command that will not reach its host: failed, and if it carried a
    /// verdict, the request says so.
    async fn fail_command(&self, command: &StoredCommand, error: &str, now: i64) {
        if let Err(e) = self.store.finish_command(command.id, &[], error, now).await {
            tracing::warn!(command = command.id, "record that a command failed ({error}): {e}");
        }
        if command.kind == DECIDE_APPROVAL {
            crate::approvals::command_undelivered(&self.store, &self.notifiers, command, error, now).await;
        }
    }
}

/// Hands the decisions a batch newly stored to the export. A batch is a run
/// of its host's sequence numbers and a resend repeats only a run's start
/// (the agent resends from its ack watermark), so the `stored` new ones are
/// the highest: what the store skipped as duplicates is not exported twice.
fn export_new(exporter: &airlock_export::Exporter, mut rows: Vec<IncomingDecision>, stored: u64) {
    rows.sort_by_key(|r| r.seq);
    let skip = rows.len().saturating_sub(usize::try_from(stored).unwrap_or(usize::MAX));
    for row in rows.into_iter().skip(skip) {
        let item: airlock_export::Item = Arc::new(row.decision);
        exporter.offer(&item);
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
