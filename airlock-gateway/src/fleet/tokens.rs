//! The org's tokens as admins see them (never a secret or a hash), and
//! revocation. Each call checks the admin role itself, since the web UI
//! calls these functions directly.

use airlock_api::gateway::v1::{ListTokensRequest, ListTokensResponse, RevokeTokenRequest, TokenInfo};
use tonic::Status;

use crate::auth::{store_status, Caller};
use crate::hub::Hub;
use crate::tokens::Role;

fn token_message(org: &str, t: airlock_gateway_store::TokenInfo) -> TokenInfo {
    TokenInfo {
        org: org.to_string(),
        id: t.id,
        kind: t.kind,
        role: t.role,
        label: t.label,
        uses_left: t.uses_left,
        expires_unix_nanos: t.expires_ns,
        created_unix_nanos: t.created_ns,
        revoked: t.revoked,
    }
}

/// Admin: the org's API and join tokens, oldest first, revoked ones too.
pub async fn list(hub: &Hub, caller: &Caller, ask: ListTokensRequest) -> Result<ListTokensResponse, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let tokens = hub.store.list_tokens(org.id).await.map_err(store_status)?;
    Ok(ListTokensResponse { tokens: tokens.into_iter().map(|t| token_message(&org.name, t)).collect() })
}

/// Admin: the token is refused from its next use on. Revoking a revoked
/// token changes nothing and answers it as it is.
pub async fn revoke(hub: &Hub, caller: &Caller, ask: RevokeTokenRequest) -> Result<TokenInfo, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    if ask.id <= 0 {
        return Err(Status::invalid_argument(format!("id: {} is not a token id (see `airlock-gateway token list`)", ask.id)));
    }
    let not_found = || Status::not_found(format!("token {} not found in org {}", ask.id, org.name));
    if !hub.store.revoke_token(org.id, ask.id).await.map_err(store_status)? {
        return Err(not_found());
    }
    let token = hub.store.list_tokens(org.id).await.map_err(store_status)?.into_iter().find(|t| t.id == ask.id).ok_or_else(not_found)?;
    tracing::warn!(org = %org.name, token = ask.id, kind = %token.kind, label = %token.label, by = %caller.label, "token revoked");
    Ok(token_message(&org.name, token))
}
