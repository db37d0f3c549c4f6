//! The fleet's sessions, and revoking one on any host through its agent's
//! stream.

use std::time::Duration;

use airlock_api::gateway::v1::{FleetSession, ListSessionsRequest, ListSessionsResponse, RevokeSessionRequest, RevokeSessionResponse};
use prost::Message;
use tonic::Status;

use crate::auth::{store_status, Caller};
use crate::hub::{Hub, REVOKE_SESSION};
use crate::tokens::Role;

/// How long a revocation waits for the host's agent to answer.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

pub async fn list(hub: &Hub, caller: &Caller, ask: ListSessionsRequest) -> Result<ListSessionsResponse, Status> {
    let _timer = hub.metrics.time_query("list_sessions");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let state = airlock_api::v1::SessionState::try_from(ask.state).unwrap_or(airlock_api::v1::SessionState::Unspecified);
    let rows = hub.store.list_sessions(org.id, ask.host.trim(), state).await.map_err(store_status)?;
    Ok(ListSessionsResponse { sessions: rows.into_iter().map(|(host, session)| FleetSession { host, session: Some(session) }).collect() })
}

pub async fn revoke(hub: &Hub, caller: &Caller, ask: RevokeSessionRequest) -> Result<RevokeSessionResponse, Status> {
    caller.require(Role::Approver)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let store = &hub.store;
    let host = store.host(org.id, &ask.host).await.map_err(store_status)?.ok_or_else(|| Status::not_found(format!("host {:?} not found", ask.host)))?;
    if host.revoked {
        return Err(Status::failed_precondition(format!("host {:?} is revoked: it no longer connects", ask.host)));
    }
    let reason = if ask.reason.trim().is_empty() { "revoked through the gateway".to_string() } else { ask.reason.clone() };
    let payload = airlock_api::v1::RevokeSessionRequest { id: ask.session_id.clone(), reason: format!("{reason} (by {} through the gateway)", caller.label) };
    let id = store.insert_command(org.id, &ask.host, REVOKE_SESSION, &payload.encode_to_vec(), crate::now_ns()).await.map_err(store_status)?;
    hub.queued_command();
    let deadline = tokio::time::Instant::now() + REVOKE_WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let command = store.command(id).await.map_err(store_status)?.ok_or_else(|| Status::internal("the queued command vanished"))?;
        match command.state.as_str() {
            "done" => {
                let result = airlock_api::v1::RevokeSessionResponse::decode(command.result.as_slice())
                    .map_err(|e| Status::internal(format!("the agent's answer: {e}")))?;
                tracing::warn!(org = %org.name, host = %ask.host, session = %ask.session_id, by = %caller.label, "session revoked through the gateway");
                return Ok(RevokeSessionResponse { host: ask.host, result: Some(result) });
            }
            "failed" => return Err(Status::failed_precondition(format!("host {:?}: {}", ask.host, command.error))),
            _ if tokio::time::Instant::now() >= deadline => {
                let error = format!("host {:?} did not answer within {} s (is it connected?); the request was withdrawn", ask.host, REVOKE_WAIT.as_secs());
                store.finish_command(id, &[], &error, crate::now_ns()).await.map_err(store_status)?;
                return Err(Status::deadline_exceeded(error));
            }
            _ => {}
        }
    }
}
