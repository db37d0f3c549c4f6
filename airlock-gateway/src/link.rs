//! The agents' stream (`AgentLink.Exchange`): mutual TLS with the
//! certificate the gateway issued, checked against the host's record on
//! every connection (a revoked or superseded certificate is refused).
//!
//! Per connection: the agent's Hello is recorded (backend, kernel, version
//! enforced); decision batches are stored, idempotently on (host, seq), and
//! acked only once stored; a database failure ends the stream UNAVAILABLE,
//! and the agent resends from its last ack when it reconnects. Policy
//! versions reach the agent as bundles as soon as this replica sees them;
//! the org's security blocks in force right after the Hello, then on each
//! change (see [`crate::security`]).

use std::sync::Arc;
use std::time::Duration;

use airlock_api::gateway::v1::agent_link_server::AgentLink;
use airlock_api::gateway::v1::{
    agent_message, gateway_message, shipped_entry, Ack, AgentMessage, DecisionBatch, GatewayMessage, Hello, PolicyBundle, PolicyFile,
};
use airlock_api::v1::{Decision, EventsLost};
use airlock_gateway_store::{HostContact, IncomingDecision};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::store_status;
use crate::hub::{HostKey, Hub};
use crate::pki;

/// Entries in one batch, at most.
pub const MAX_BATCH: usize = 2000;
/// An agent that says nothing for this long is cut off (it sends a Hello or a
/// heartbeat batch well within it).
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// How often the host's last contact is written while it is connected.
const CONTACT_INTERVAL: Duration = Duration::from_secs(5);

pub struct LinkService {
    pub hub: Arc<Hub>,
}

/// The host a connection is from, after the certificate check.
struct Peer {
    key: HostKey,
    org: String,
    serial: String,
}

type Outbox = mpsc::Sender<Result<GatewayMessage, Status>>;

#[tonic::async_trait]
impl AgentLink for LinkService {
    type ExchangeStream = ReceiverStream<Result<GatewayMessage, Status>>;

    async fn exchange(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<Self::ExchangeStream>, Status> {
        let peer = authenticate(&self.hub, &request).await?;
        let inbound = request.into_inner();
        let (outbox, rx) = mpsc::channel(64);
        let hub = self.hub.clone();
        let (connection, kick) = hub.connect(peer.key.clone(), outbox.clone());
        tracing::info!(org = %peer.org, host = %peer.key.1, "agent connected");
        tokio::spawn(async move {
            let key = peer.key.clone();
            let result = tokio::select! {
                result = serve(&hub, &peer, inbound, &outbox) => result,
                _ = kick.notified() => Err(if hub.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    Status::unavailable("the gateway is stopping")
                } else {
                    Status::permission_denied(format!("host {:?}: certificate refused (the host was revoked)", key.1))
                }),
            };
            hub.disconnect(&key, connection);
            if let Err(e) = hub.store.record_disconnect(key.0, &key.1, &hub.replica, crate::now_ns()).await {
                tracing::warn!(host = %key.1, "record the disconnect: {e}");
            }
            match result {
                Ok(()) => tracing::info!(org = %peer.org, host = %key.1, "agent disconnected"),
                Err(status) => {
                    tracing::warn!(org = %peer.org, host = %key.1, "agent stream ended: {}", status.message());
                    let _ = outbox.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn authenticate<T>(hub: &Hub, request: &Request<T>) -> Result<Peer, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("the agent stream needs the client certificate issued at enrollment"))?;
    let first = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let who = pki::peer_identity(first.as_ref()).map_err(|e| Status::unauthenticated(format!("{e:#}")))?;
    let refused = || Status::permission_denied(format!("host {:?} of org {:?}: certificate refused (revoked, or replaced by a later enrollment)", who.host_id, who.org));
    let org = hub.store.org_by_name(&who.org).await.map_err(store_status)?.ok_or_else(refused)?;
    let host = hub.store.host(org.id, &who.host_id).await.map_err(store_status)?.ok_or_else(refused)?;
    if host.revoked || host.cert_serial != who.serial {
        return Err(refused());
    }
    Ok(Peer { key: (org.id, who.host_id), org: org.name, serial: who.serial })
}

async fn serve(hub: &Hub, peer: &Peer, mut inbound: Streaming<AgentMessage>, outbox: &Outbox) -> Result<(), Status> {
    let (org_id, host_id) = (&peer.key.0, peer.key.1.as_str());
    let hello = match tokio::time::timeout(IDLE_LIMIT, inbound.next()).await {
        Ok(Some(Ok(AgentMessage { body: Some(agent_message::Body::Hello(hello)) }))) => hello,
        Ok(Some(Ok(_))) => return Err(Status::invalid_argument("the first message on the agent stream must be Hello")),
        Ok(Some(Err(status))) => return Err(status),
        Ok(None) => return Ok(()),
        Err(_) => return Err(Status::deadline_exceeded("no Hello from the agent")),
    };
    record_hello(hub, peer, &hello).await?;
    let mut versions = hub.policy_versions();
    let mut sent_version = hello.enforced_version as i64;
    let mut contact = tokio::time::interval(CONTACT_INTERVAL);
    contact.tick().await;
    // The version in force now, if the agent does not have it.
    let latest = versions.borrow_and_update().get(org_id).copied();
    let latest = match latest {
        Some(v) => Some(v),
        None => hub.store.policy_version(*org_id, None).await.map_err(store_status)?.map(|v| v.version),
    };
    if let Some(version) = latest {
        send_bundle_if_newer(hub, peer, version, &mut sent_version, outbox).await?;
    }
    // The org's blocks in force, whole: the agent replaces what it had.
    let blocks = crate::security::blocks_for_new_connection(hub, *org_id).await?;
    outbox.send(Ok(blocks)).await.map_err(|_| Status::cancelled("the agent went away"))?;
    loop {
        tokio::select! {
            message = tokio::time::timeout(IDLE_LIMIT, inbound.next()) => {
                let message = match message {
                    Err(_) => return Err(Status::deadline_exceeded(format!("nothing from the agent in {} s", IDLE_LIMIT.as_secs()))),
                    Ok(None) => return Ok(()),
                    Ok(Some(Err(status))) => return Err(status),
                    Ok(Some(Ok(m))) => m,
                };
                handle(hub, peer, message, outbox).await?;
            }
            changed = versions.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let latest = versions.borrow_and_update().get(org_id).copied();
                if let Some(version) = latest {
                    send_bundle_if_newer(hub, peer, version, &mut sent_version, outbox).await?;
                }
            }
            _ = contact.tick() => {
                // A revocation (or a new enrollment) through another replica ends this stream here.
                let host = hub.store.host(*org_id, host_id).await.map_err(store_status)?;
                if host.as_ref().is_none_or(|h| h.revoked || h.cert_serial != peer.serial) {
                    return Err(Status::permission_denied(format!("host {host_id:?}: certificate refused (revoked, or replaced by a later enrollment)")));
                }
                let c = HostContact { now_ns: crate::now_ns(), replica: hub.replica.clone(), ..Default::default() };
                hub.store.record_contact(*org_id, host_id, &c).await.map_err(store_status)?;
            }
        }
    }
}

async fn record_hello(hub: &Hub, peer: &Peer, hello: &Hello) -> Result<(), Status> {
    let (org_id, host_id) = (peer.key.0, peer.key.1.as_str());
    let contact = HostContact {
        now_ns: crate::now_ns(),
        replica: hub.replica.clone(),
        backend: hello.backend.clone(),
        kernel: hello.kernel.clone(),
        agent_version: hello.agent_version.clone(),
    };
    hub.store.record_contact(org_id, host_id, &contact).await.map_err(store_status)?;
    if hello.enforced_version > 0 {
        hub.store
            .record_enforced(org_id, host_id, hello.enforced_version as i64, &hello.enforced_hash, "", contact.now_ns)
            .await
            .map_err(store_status)?;
    }
    Ok(())
}

/// Sends the org's policy `version` unless the agent has it (or a later one)
/// already. Rollbacks are new versions, so versions only go up.
async fn send_bundle_if_newer(hub: &Hub, peer: &Peer, version: i64, sent: &mut i64, outbox: &Outbox) -> Result<(), Status> {
    if version <= *sent {
        return Ok(());
    }
    let Some(stored) = hub.store.policy_version(peer.key.0, Some(version)).await.map_err(store_status)? else {
        return Ok(());
    };
    let bundle = PolicyBundle {
        org: peer.org.clone(),
        version: stored.version as u64,
        content_hash: stored.content_hash.clone(),
        files: stored.files.iter().map(|f| PolicyFile { path: f.path.clone(), content: f.content.clone() }).collect(),
    };
    send(outbox, gateway_message::Body::Policy(bundle)).await?;
    *sent = version;
    tracing::info!(org = %peer.org, host = %peer.key.1, version, "policy bundle sent");
    Ok(())
}

async fn handle(hub: &Hub, peer: &Peer, message: AgentMessage, outbox: &Outbox) -> Result<(), Status> {
    let (org_id, host_id) = (peer.key.0, peer.key.1.as_str());
    let now = crate::now_ns();
    match message.body {
        None => Err(Status::invalid_argument("an empty message on the agent stream")),
        Some(agent_message::Body::Hello(_)) => Err(Status::invalid_argument("Hello is only the first message")),
        Some(agent_message::Body::Batch(batch)) => {
            let acked = store_batch(hub, peer, batch).await?;
            if acked > 0 {
                send(outbox, gateway_message::Body::Ack(Ack { seq: acked })).await?;
            }
            Ok(())
        }
        Some(agent_message::Body::Policy(report)) => {
            if report.error.is_empty() {
                tracing::info!(org = %peer.org, host = host_id, version = report.version, "host enforces the policy version");
            } else {
                tracing::warn!(org = %peer.org, host = host_id, version = report.version, "host refused the policy version: {}", report.error);
            }
            hub.store
                .record_enforced(org_id, host_id, report.version as i64, &report.content_hash, &report.error, now)
                .await
                .map_err(store_status)
        }
        Some(agent_message::Body::Sessions(report)) => hub.store.upsert_sessions(org_id, host_id, &report.sessions, now).await.map_err(store_status),
        Some(agent_message::Body::CommandResult(result)) if result.id == crate::security::UNQUEUED_COMMAND_ID => {
            // An answer to a security_blocks command: nothing is queued to settle.
            if !result.error.is_empty() {
                tracing::warn!(org = %peer.org, host = host_id, "the host could not apply the security blocks: {}", result.error);
            }
            Ok(())
        }
        Some(agent_message::Body::CommandResult(result)) => {
            let body = match (&result.revoke_session, &result.approval) {
                (Some(r), _) => r.encode_to_vec(),
                (None, Some(a)) => a.encode_to_vec(),
                (None, None) => Vec::new(),
            };
            hub.store.finish_command(result.id, &body, &result.error, now).await.map_err(store_status)?;
            crate::approvals::command_answered(&hub.store, &hub.notifiers, (org_id, &peer.org), host_id, &result, now).await;
            Ok(())
        }
    }
}

/// Stores a batch and returns the seq to ack (its highest), 0 for an empty
/// batch (a heartbeat). A loss marker is stored as a decision of its own, so
/// the gap it explains shows wherever decisions are queried.
async fn store_batch(hub: &Hub, peer: &Peer, batch: DecisionBatch) -> Result<u64, Status> {
    let (org_id, host_id) = (peer.key.0, peer.key.1.as_str());
    if batch.entries.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!("a batch holds at most {MAX_BATCH} entries; this one had {}", batch.entries.len())));
    }
    let mut rows = Vec::with_capacity(batch.entries.len());
    let mut lost = 0i64;
    let mut highest = 0;
    for (index, entry) in batch.entries.into_iter().enumerate() {
        if entry.seq == 0 {
            return Err(Status::invalid_argument(format!("batch entry {index}: seq must be 1 or more")));
        }
        highest = highest.max(entry.seq);
        let mut decision = match entry.entry {
            Some(shipped_entry::Entry::Decision(d)) => d,
            Some(shipped_entry::Entry::Lost(count)) => {
                lost += count as i64;
                loss_marker(host_id, count)
            }
            None => return Err(Status::invalid_argument(format!("batch entry {index} (seq {}): neither a decision nor a loss marker", entry.seq))),
        };
        decision.host = host_id.to_string();
        let body = decision.encode_to_vec();
        rows.push(IncomingDecision { seq: entry.seq as i64, decision, body });
    }
    if rows.is_empty() {
        return Ok(0);
    }
    if lost > 0 {
        tracing::warn!(org = %peer.org, host = host_id, lost, "the host's spool was full: decisions were dropped (recorded)");
    }
    hub.ingest(org_id, host_id, rows, lost).await?;
    Ok(highest)
}

fn loss_marker(host_id: &str, count: u64) -> Decision {
    let now = crate::now_ns();
    Decision {
        time_unix_nanos: now,
        time: crate::rfc3339(now),
        host: host_id.to_string(),
        kind: "shipping_lost".into(),
        decision: "allow".into(),
        reason: format!("the agent's spool was full: {count} decision(s) were dropped before they could be shipped (they were enforced and are in the host's audit trail)"),
        detail: Some(airlock_api::v1::decision::Detail::EventsLost(EventsLost { count, total: 0, decisions: 0 })),
        ..Default::default()
    }
}

async fn send(outbox: &Outbox, body: gateway_message::Body) -> Result<(), Status> {
    outbox.send(Ok(GatewayMessage { body: Some(body) })).await.map_err(|_| Status::cancelled("the agent went away"))
}
