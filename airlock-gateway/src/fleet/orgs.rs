//! Orgs and tokens: who the caller is, making orgs (installation admins
//! only), and making API and join tokens.

use airlock_api::gateway::v1::{CreateOrgRequest, CreateTokenRequest, CreateTokenResponse, ListOrgsResponse, Org, WhoAmIResponse};
use airlock_gateway_store::NewToken;
use tonic::Status;

use crate::auth::{store_status, Caller};
use crate::hub::Hub;
use crate::tokens::{self, Role, TokenKind};

/// A join token lasts this long unless told otherwise.
const DEFAULT_JOIN_TTL_SECS: i64 = 24 * 3600;

pub fn who_am_i(caller: &Caller) -> WhoAmIResponse {
    WhoAmIResponse { org: caller.org.clone(), role: caller.role.to_string(), label: caller.label.clone() }
}

pub async fn create_org(hub: &Hub, caller: &Caller, ask: CreateOrgRequest) -> Result<Org, Status> {
    caller.require(Role::Admin)?;
    if !caller.administers_installation() {
        return Err(Status::permission_denied(format!("only an admin of the {:?} org makes orgs", crate::auth::DEFAULT_ORG)));
    }
    check_org_name(&ask.name).map_err(Status::invalid_argument)?;
    let org = hub.store.create_org(&ask.name).await.map_err(store_status)?;
    tracing::info!(org = %org.name, by = %caller.label, "org created");
    Ok(Org { name: org.name, created_unix_nanos: org.created_ns })
}

pub async fn list_orgs(hub: &Hub, caller: &Caller) -> Result<ListOrgsResponse, Status> {
    caller.require(Role::Viewer)?;
    let orgs = if caller.administers_installation() {
        hub.store.list_orgs().await.map_err(store_status)?
    } else {
        hub.store.org_by_name(&caller.org).await.map_err(store_status)?.into_iter().collect()
    };
    Ok(ListOrgsResponse { orgs: orgs.into_iter().map(|o| Org { name: o.name, created_unix_nanos: o.created_ns }).collect() })
}

pub async fn create_token(hub: &Hub, caller: &Caller, ask: CreateTokenRequest) -> Result<CreateTokenResponse, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let now = crate::now_ns();
    let (kind, role, uses, expires) = if ask.join {
        let ttl = if ask.ttl_seconds > 0 { ask.ttl_seconds } else { DEFAULT_JOIN_TTL_SECS };
        let uses = if ask.uses == 0 { -1 } else { i64::from(ask.uses) };
        (TokenKind::Join, String::new(), uses, now.saturating_add(ttl.saturating_mul(1_000_000_000)))
    } else {
        let role = Role::parse(if ask.role.is_empty() { "viewer" } else { &ask.role }).map_err(|e| Status::invalid_argument(e.to_string()))?;
        (TokenKind::Api, role.to_string(), -1, 0)
    };
    let secret = tokens::generate(kind).map_err(|e| Status::internal(format!("{e:#}")))?;
    let token = NewToken {
        org_id: org.id,
        kind: if ask.join { "join".into() } else { "api".into() },
        role: role.clone(),
        secret_hash: tokens::hash(&secret),
        label: if ask.label.is_empty() { format!("made by {}", caller.label) } else { ask.label },
        uses_left: uses,
        expires_ns: expires,
        created_ns: now,
    };
    hub.store.insert_token(&token).await.map_err(store_status)?;
    tracing::info!(org = %org.name, join = ask.join, role = %role, by = %caller.label, "token created");
    Ok(CreateTokenResponse { token: secret, org: org.name, role, join: ask.join, expires_unix_nanos: expires, uses: ask.uses })
}

/// Org names appear in certificates and URLs: a plain lowercase name.
pub fn check_org_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("org name {name:?}: 1 to 63 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || name.starts_with('-') {
        return Err(format!("org name {name:?}: lowercase letters, digits and '-', not starting with '-'"));
    }
    Ok(())
}
