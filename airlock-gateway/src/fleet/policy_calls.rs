//! Policy versions: push, history, show, rollback. Versions only go up: a
//! rollback is a new version with an older one's content, so agents, which
//! take any version above the one they enforce, follow it.

use airlock_api::gateway::v1::{GetPolicyRequest, PolicyFile, PolicyHistoryRequest, PolicyHistoryResponse, PolicyVersion, PushPolicyRequest, RollbackPolicyRequest};
use airlock_gateway_store as store;
use tonic::Status;

use super::policy;
use crate::tokens::Role;
use crate::auth::{store_status, Caller, OrgScope};
use crate::hub::Hub;

pub async fn push(hub: &Hub, caller: &Caller, ask: PushPolicyRequest) -> Result<PolicyVersion, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let loaded = policy::validate(&ask.files).map_err(|e| Status::invalid_argument(format!("the policy set is invalid; the version in force stays:\n{e}")))?;
    write(hub, caller, &org, ask.files, loaded.version(), ask.comment, 0).await
}

pub async fn rollback(hub: &Hub, caller: &Caller, ask: RollbackPolicyRequest) -> Result<PolicyVersion, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let old = hub
        .store
        .policy_version(org.id, Some(ask.version as i64))
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("org {:?} has no policy version {}", org.name, ask.version)))?;
    let files: Vec<PolicyFile> = old.files.into_iter().map(|f| PolicyFile { path: f.path, content: f.content }).collect();
    let comment = if ask.comment.is_empty() { format!("rollback to version {}", ask.version) } else { ask.comment };
    write(hub, caller, &org, files, old.content_hash, comment, ask.version as i64).await
}

async fn write(hub: &Hub, caller: &Caller, org: &OrgScope, files: Vec<PolicyFile>, content_hash: String, comment: String, rollback_of: i64) -> Result<PolicyVersion, Status> {
    let previous = hub.store.policy_version(org.id, None).await.map_err(store_status)?;
    let pairs = |files: &[store::PolicyFile]| files.iter().map(|f| (f.path.clone(), f.content.clone())).collect::<Vec<_>>();
    let mut new_files: Vec<store::PolicyFile> = files.into_iter().map(|f| store::PolicyFile { path: f.path, content: f.content }).collect();
    new_files.sort_by(|a, b| a.path.cmp(&b.path));
    let diff = policy::diff(&previous.as_ref().map(|p| pairs(&p.files)).unwrap_or_default(), &pairs(&new_files));
    let version = store::NewPolicyVersion { author: caller.label.clone(), comment, content_hash, files: new_files, diff, rollback_of };
    let number = hub.store.insert_policy_version(org.id, &version).await.map_err(store_status)?;
    hub.policy_written(org.id, number);
    tracing::info!(org = %org.name, version = number, hash = %version.content_hash, by = %caller.label, "policy version written");
    let stored = hub.store.policy_version(org.id, Some(number)).await.map_err(store_status)?.ok_or_else(|| Status::internal("the version just written is missing"))?;
    Ok(message(&org.name, stored, true))
}

pub async fn history(hub: &Hub, caller: &Caller, ask: PolicyHistoryRequest) -> Result<PolicyHistoryResponse, Status> {
    let _timer = hub.metrics.time_query("policy_history");
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let versions = hub.store.policy_history(org.id).await.map_err(store_status)?;
    Ok(PolicyHistoryResponse { versions: versions.into_iter().map(|v| message(&org.name, v, false)).collect() })
}

pub async fn get(hub: &Hub, caller: &Caller, ask: GetPolicyRequest) -> Result<PolicyVersion, Status> {
    caller.require(Role::Viewer)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let version = if ask.version == 0 { None } else { Some(ask.version as i64) };
    let stored = hub.store.policy_version(org.id, version).await.map_err(store_status)?.ok_or_else(|| match version {
        Some(v) => Status::not_found(format!("org {:?} has no policy version {v}", org.name)),
        None => Status::not_found(format!("org {:?} has no policy yet (push one with `airlock-gateway policy push DIR`)", org.name)),
    })?;
    Ok(message(&org.name, stored, true))
}

fn message(org: &str, v: store::PolicyVersion, with_files: bool) -> PolicyVersion {
    PolicyVersion {
        org: org.to_string(),
        version: v.version.max(0) as u64,
        author: v.author,
        comment: v.comment,
        created_unix_nanos: v.created_ns,
        content_hash: v.content_hash,
        files: if with_files { v.files.into_iter().map(|f| PolicyFile { path: f.path, content: f.content }).collect() } else { Vec::new() },
        diff: if with_files { v.diff } else { String::new() },
        rollback_of: v.rollback_of.max(0) as u64,
    }
}
