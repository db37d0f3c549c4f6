//! The fleet's security monitoring: findings and blocks listed to viewers,
//! blocks acknowledged by approvers and admins, lifted by admins (every
//! agent of the org gets the new set at once), and the detector settings,
//! versioned like policy, read by viewers and set by admins.

use airlock_api::gateway::v1::{
    FleetBlockActionRequest, GetSecuritySettingsRequest, ListFleetBlocksRequest, ListFleetFindingsRequest, SecuritySettingsHistoryRequest,
    SecuritySettingsHistoryResponse, SecuritySettingsVersion, SetSecuritySettingsRequest,
};
use airlock_api::v1::{ListBlocksResponse, ListFindingsResponse, SecurityBlock};
use airlock_gateway_store::{is_block_id, BLOCK_STATUSES};
use tonic::Status;

use crate::tokens::Role;
use crate::auth::{store_status, Caller};
use crate::hub::Hub;
use crate::security::{parse_settings, settings_in_force, settings_message, stored_settings, MAX_SETTINGS_BYTES};

const MAX_REASON_BYTES: usize = 1024;

pub async fn list_findings(hub: &Hub, caller: &Caller, ask: ListFleetFindingsRequest) -> Result<ListFindingsResponse, Status> {
    let _timer = hub.metrics.time_query("list_findings");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let findings = hub.store.list_findings(org.id, ask.limit).await.map_err(store_status)?;
    Ok(ListFindingsResponse { findings })
}

pub async fn list_blocks(hub: &Hub, caller: &Caller, ask: ListFleetBlocksRequest) -> Result<ListBlocksResponse, Status> {
    let _timer = hub.metrics.time_query("list_blocks");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let status = ask.status.trim();
    if !status.is_empty() && !BLOCK_STATUSES.contains(&status) {
        return Err(Status::invalid_argument(format!("status: {status:?} is not one of {}", BLOCK_STATUSES.join(", "))));
    }
    let blocks = hub.store.list_blocks(org.id, status, ask.limit, crate::now_ns()).await.map_err(store_status)?;
    Ok(ListBlocksResponse { blocks })
}

/// Approver or admin (checked by the caller): the block stays in force.
pub async fn acknowledge(hub: &Hub, caller: &Caller, ask: FleetBlockActionRequest) -> Result<SecurityBlock, Status> {
    caller.require(Role::Approver)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let (id, reason) = checked(&ask)?;
    let block = hub.store.acknowledge_block(org.id, id, &caller.label, reason, crate::now_ns()).await.map_err(store_status)?;
    tracing::info!(org = %org.name, block = %id, by = %caller.label, %reason, "security block acknowledged; it stays in force");
    hub.security_blocks_changed();
    Ok(block)
}

/// Admin (checked by the caller): the block ends now, on every agent.
pub async fn lift(hub: &Hub, caller: &Caller, ask: FleetBlockActionRequest) -> Result<SecurityBlock, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let (id, reason) = checked(&ask)?;
    let block = hub.store.lift_block(org.id, id, &caller.label, reason, crate::now_ns()).await.map_err(store_status)?;
    tracing::warn!(org = %org.name, block = %id, subject = %format!("{} {}", block.subject_kind, block.subject), by = %caller.label, %reason, "security block lifted");
    hub.security_blocks_changed();
    Ok(block)
}

pub async fn get_settings(hub: &Hub, caller: &Caller, ask: GetSecuritySettingsRequest) -> Result<SecuritySettingsVersion, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    if ask.version == 0 {
        let (settings, stored) = settings_in_force(hub, org.id).await?;
        return settings_message(&org.name, &settings, stored);
    }
    let version = i64::try_from(ask.version).map_err(|_| Status::invalid_argument("version: too large"))?;
    let stored = hub
        .store
        .security_settings(org.id, Some(version))
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("org {} has no security settings version {version}", org.name)))?;
    let settings = stored_settings(&stored).map_err(Status::internal)?;
    settings_message(&org.name, &settings, Some(stored))
}

/// Admin (checked by the caller). A document that does not parse or
/// validate is refused naming the field; the version in force stays.
pub async fn set_settings(hub: &Hub, caller: &Caller, ask: SetSecuritySettingsRequest) -> Result<SecuritySettingsVersion, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    if ask.document.len() > MAX_SETTINGS_BYTES {
        return Err(Status::invalid_argument(format!("document: at most {MAX_SETTINGS_BYTES} bytes; got {}", ask.document.len())));
    }
    let settings = parse_settings(&ask.document).map_err(|e| {
        tracing::info!(org = %org.name, by = %caller.label, "security settings refused: {e}");
        Status::invalid_argument(e.to_string())
    })?;
    let document = settings.document().map_err(|e| Status::internal(format!("encode the settings: {e}")))?;
    let now = crate::now_ns();
    let version = hub.store.insert_security_settings(org.id, &document, &caller.label, ask.comment.trim(), now).await.map_err(store_status)?;
    tracing::info!(org = %org.name, version, enabled = settings.detect.enabled, masking = ?settings.masking, by = %caller.label, "security settings set");
    let stored = hub.store.security_settings(org.id, Some(version)).await.map_err(store_status)?;
    // The agents learn the org's masking strategy at once, with the blocks in force.
    let blocks = hub.store.blocks_in_force(org.id, now).await.map_err(store_status)?;
    crate::security::push_to_org(hub, org.id, &blocks).await;
    settings_message(&org.name, &settings, stored)
}

pub async fn history(hub: &Hub, caller: &Caller, ask: SecuritySettingsHistoryRequest) -> Result<SecuritySettingsHistoryResponse, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let mut versions = Vec::new();
    for stored in hub.store.security_settings_history(org.id).await.map_err(store_status)? {
        let settings = stored_settings(&stored).map_err(Status::internal)?;
        versions.push(settings_message(&org.name, &settings, Some(stored))?);
    }
    Ok(SecuritySettingsHistoryResponse { versions })
}

fn checked(ask: &FleetBlockActionRequest) -> Result<(&str, &str), Status> {
    let id = ask.id.trim();
    if !is_block_id(id) {
        return Err(Status::invalid_argument(format!("id: {id:?} is not a block id (\"blk-\" and 16 hex digits)")));
    }
    let reason = ask.reason.trim();
    if reason.len() > MAX_REASON_BYTES {
        return Err(Status::invalid_argument(format!("reason: at most {MAX_REASON_BYTES} bytes; got {}", reason.len())));
    }
    Ok((id, reason))
}
