//! Who is calling the fleet API, and what it may see: an API token names one
//! org and a role. Another org's objects are answered NOT_FOUND, exactly as
//! if they did not exist; only an admin of the installation's first org may
//! name another org.

use airlock_gateway_store::{GatewayStore, StoreError};
use tonic::{Request, Status};

use crate::tokens::{self, Role, TokenKind};

/// The installation's first org, made on first start. Its admins administer
/// the installation (make orgs, and tokens in any org).
pub const DEFAULT_ORG: &str = "default";

#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: i64,
    pub org: String,
    pub role: Role,
    /// Recorded as the author of what the caller changes.
    pub label: String,
    /// What the caller signed in with: "token" (the API) or "user" (the
    /// Control Room), as audit trails name it.
    pub through: &'static str,
}

/// An org a request acts in, after the scope check.
#[derive(Debug, Clone)]
pub struct OrgScope {
    pub id: i64,
    pub name: String,
}

impl Caller {
    /// The caller of a fleet request, from its `authorization: Bearer` header.
    pub async fn of<T>(store: &GatewayStore, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("no API token: send the header `authorization: Bearer TOKEN`"))?;
        let text = header.to_str().map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let secret = text
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer TOKEN`"))?;
        tokens::check_kind(secret, TokenKind::Api).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let token = store
            .api_token(&tokens::hash(secret))
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::unauthenticated("unknown or revoked API token"))?;
        let role = Role::parse(&token.role).map_err(|e| Status::internal(format!("token {}: {e}", token.id)))?;
        let label = if token.label.is_empty() { format!("token {} ({role})", token.id) } else { token.label.clone() };
        record_use(store, &token, &label, request);
        Ok(Caller { org_id: token.org_id, org: token.org_name, role, label, through: "token" })
    }

    /// Refuses a caller whose role is below `needed`.
    pub fn require(&self, needed: Role) -> Result<(), Status> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("this needs the {needed} role; the token is a {} token", self.role)))
        }
    }

    pub fn administers_installation(&self) -> bool {
        self.role == Role::Admin && self.org == DEFAULT_ORG
    }

    /// The org a request names (empty: the caller's own). Another org is
    /// NOT_FOUND unless the caller administers the installation.
    pub async fn scope(&self, store: &GatewayStore, requested: &str) -> Result<OrgScope, Status> {
        let requested = requested.trim();
        if requested.is_empty() || requested == self.org {
            return Ok(OrgScope { id: self.org_id, name: self.org.clone() });
        }
        let not_found = || Status::not_found(format!("org {requested:?} not found"));
        if !self.administers_installation() {
            return Err(not_found());
        }
        let org = store.org_by_name(requested).await.map_err(store_status)?.ok_or_else(not_found)?;
        Ok(OrgScope { id: org.id, name: org.name })
    }
}

/// The address a token use is recorded from when the connection has none
/// (not a TCP peer).
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// How security monitoring names a token: its label and id, never its secret.
pub fn token_name(id: i64, label: &str) -> String {
    format!("{label} (token {id})")
}

/// Counts the token's use from the caller's IP address (not its port: a
/// client's every connection has a new one), off the call's path: a call
/// never waits for, or fails on, the count.
fn record_use<T>(store: &GatewayStore, token: &airlock_gateway_store::ApiToken, label: &str, request: &Request<T>) {
    let address = request.remote_addr().map(|a| a.ip().to_canonical().to_string()).unwrap_or_else(|| UNKNOWN_ADDRESS.to_string());
    let (store, org_id, token_id, name) = (store.clone(), token.org_id, token.id, token_name(token.id, label));
    tokio::spawn(async move {
        if let Err(e) = store.record_token_use(org_id, token_id, &name, &address, crate::now_ns()).await {
            tracing::warn!(token = token_id, %address, "record an API token use: {e}");
        }
    });
}

/// A store error as the status a client sees: a database that is down is
/// UNAVAILABLE (the client may retry), never an opaque internal error.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(format!("the database is unavailable: {m}")),
        StoreError::Conflict(m) => Status::already_exists(m),
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::Refused(m) => Status::failed_precondition(m),
        StoreError::Other(e) => {
            tracing::error!("store: {e:#}");
            Status::internal(format!("{e:#}"))
        }
    }
}
