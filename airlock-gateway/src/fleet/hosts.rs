//! Enrolled hosts: the rollout status (the policy version each enforces),
//! and revoking a host's certificate.

use airlock_api::gateway::v1::{Host, ListHostsRequest, ListHostsResponse, RevokeHostRequest};
use tonic::Status;

use crate::auth::{store_status, Caller};
use crate::hub::Hub;
use crate::tokens::Role;

/// A host whose last contact is older than this is shown as disconnected.
const CONNECTED_WITHIN_NS: i64 = 30_000_000_000;

pub async fn list(hub: &Hub, caller: &Caller, ask: ListHostsRequest) -> Result<ListHostsResponse, Status> {
    let _timer = hub.metrics.time_query("list_hosts");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let latest = hub.store.policy_version(org.id, None).await.map_err(store_status)?.map(|v| v.version).unwrap_or(0);
    let now = crate::now_ns();
    let hosts = hub.store.list_hosts(org.id).await.map_err(store_status)?;
    Ok(ListHostsResponse { hosts: hosts.into_iter().map(|h| host_message(&org.name, h, latest, now)).collect() })
}

pub async fn revoke(hub: &Hub, caller: &Caller, ask: RevokeHostRequest) -> Result<Host, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    if !hub.store.revoke_host(org.id, &ask.host_id).await.map_err(store_status)? {
        return Err(Status::not_found(format!("host {:?} not found", ask.host_id)));
    }
    hub.kick(&(org.id, ask.host_id.clone()));
    tracing::warn!(org = %org.name, host = %ask.host_id, by = %caller.label, "host revoked: its certificate is refused from now on");
    let host = hub.store.host(org.id, &ask.host_id).await.map_err(store_status)?.ok_or_else(|| Status::not_found("host vanished"))?;
    Ok(host_message(&org.name, host, 0, crate::now_ns()))
}

fn host_message(org: &str, h: airlock_gateway_store::Host, latest: i64, now: i64) -> Host {
    Host {
        org: org.to_string(),
        connected: !h.revoked && !h.connected_replica.is_empty() && now - h.last_contact_ns < CONNECTED_WITHIN_NS,
        host_id: h.host_id,
        revoked: h.revoked,
        enrolled_unix_nanos: h.enrolled_ns,
        last_contact_unix_nanos: h.last_contact_ns,
        backend: h.backend,
        kernel: h.kernel,
        agent_version: h.agent_version,
        enforced_version: h.enforced_version.max(0) as u64,
        enforced_hash: h.enforced_hash,
        policy_error: h.policy_error,
        shipped_seq: h.shipped_seq.max(0) as u64,
        lost: h.lost_total.max(0) as u64,
        latest_version: latest.max(0) as u64,
    }
}

