//! API tokens (a role in an org) and join tokens (enroll hosts into an org).
//! Only hashes are stored; the caller hashes the secret it was shown.

use crate::db::{now_ns, Value};
use crate::error::StoreError;
use crate::store::GatewayStore;

pub const TOKEN_API: &str = "api";
pub const TOKEN_JOIN: &str = "join";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub org_id: i64,
    /// [`TOKEN_API`] or [`TOKEN_JOIN`].
    pub kind: String,
    /// "admin", "approver" or "viewer" for an API token; "" for a join token.
    pub role: String,
    pub secret_hash: String,
    pub label: String,
    /// -1: unlimited.
    pub uses_left: i64,
    /// 0: never.
    pub expires_ns: i64,
    pub created_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub org_id: i64,
    pub org_name: String,
    pub role: String,
    pub label: String,
}

/// A token as listed: everything but its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub org_id: i64,
    pub kind: String,
    pub role: String,
    pub label: String,
    pub uses_left: i64,
    pub expires_ns: i64,
    pub created_ns: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
    Accepted { org_id: i64, org_name: String },
}

impl GatewayStore {
    /// The token's id; `Conflict` if a token with that hash exists.
    pub async fn insert_token(&self, t: &NewToken) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "INSERT INTO tokens(org_id, kind, role, secret_hash, label, uses_left, expires_ns, created_ns, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) RETURNING id",
                vec![
                    t.org_id.into(),
                    t.kind.as_str().into(),
                    t.role.as_str().into(),
                    t.secret_hash.as_str().into(),
                    t.label.as_str().into(),
                    t.uses_left.into(),
                    t.expires_ns.into(),
                    t.created_ns.into(),
                ],
            )
            .await?;
        row.ok_or_else(|| StoreError::other("inserting a token returned no id"))?.int(0)
    }

    /// The API token with this hash, unless revoked or expired.
    pub async fn api_token(&self, secret_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT t.id, t.org_id, o.name, t.role, t.label, t.expires_ns FROM tokens AS t JOIN orgs AS o ON o.id = t.org_id
                 WHERE t.secret_hash = $1 AND t.kind = $2 AND t.revoked = 0",
                vec![secret_hash.into(), TOKEN_API.into()],
            )
            .await?;
        let Some(mut r) = row else { return Ok(None) };
        let token = ApiToken { id: r.int(0)?, org_id: r.int(1)?, org_name: r.text(2)?, role: r.text(3)?, label: r.text(4)? };
        let expires = r.int(5)?;
        if expires != 0 && expires <= now_ns() {
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// Takes one use of a join token, atomically: of two replicas racing for
    /// the last use, exactly one is accepted.
    pub async fn consume_join_token(&self, secret_hash: &str, now_ns: i64) -> Result<JoinOutcome, StoreError> {
        let taken = self
            .db
            .query_opt(
                "UPDATE tokens SET uses_left = CASE WHEN uses_left > 0 THEN uses_left - 1 ELSE uses_left END
                 WHERE secret_hash = $1 AND kind = $2 AND revoked = 0 AND (expires_ns = 0 OR expires_ns > $3) AND uses_left <> 0
                 RETURNING org_id",
                vec![secret_hash.into(), TOKEN_JOIN.into(), now_ns.into()],
            )
            .await?;
        if let Some(mut r) = taken {
            let org_id = r.int(0)?;
            let org = self.org_by_id(org_id).await?.ok_or_else(|| StoreError::NotFound(format!("the join token's org {org_id} does not exist")))?;
            return Ok(JoinOutcome::Accepted { org_id, org_name: org.name });
        }
        let why = self
            .db
            .query_opt("SELECT revoked, expires_ns, uses_left FROM tokens WHERE secret_hash = $1 AND kind = $2", vec![secret_hash.into(), TOKEN_JOIN.into()])
            .await?;
        let Some(mut r) = why else {
            return Ok(JoinOutcome::Unknown);
        };
        let (revoked, expires_ns, uses_left) = (r.flag(0)?, r.int(1)?, r.int(2)?);
        Ok(if revoked {
            JoinOutcome::Revoked
        } else if expires_ns != 0 && expires_ns <= now_ns {
            JoinOutcome::Expired
        } else {
            // uses_left is 0, or was when the update ran and a concurrent change has added uses since.
            let _ = uses_left;
            JoinOutcome::UsedUp
        })
    }

    /// An org's tokens, oldest first.
    pub async fn list_tokens(&self, org_id: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id, org_id, kind, role, label, uses_left, expires_ns, created_ns, revoked FROM tokens WHERE org_id = $1 ORDER BY id",
                vec![Value::Int(org_id)],
            )
            .await?;
        rows.into_iter()
            .map(|mut r| {
                Ok(TokenInfo {
                    id: r.int(0)?,
                    org_id: r.int(1)?,
                    kind: r.text(2)?,
                    role: r.text(3)?,
                    label: r.text(4)?,
                    uses_left: r.int(5)?,
                    expires_ns: r.int(6)?,
                    created_ns: r.int(7)?,
                    revoked: r.flag(8)?,
                })
            })
            .collect()
    }

    /// Revokes one of an org's tokens; false if it has no such token.
    pub async fn revoke_token(&self, org_id: i64, token_id: i64) -> Result<bool, StoreError> {
        let n = self.db.execute("UPDATE tokens SET revoked = 1 WHERE org_id = $1 AND id = $2", vec![org_id.into(), token_id.into()]).await?;
        Ok(n > 0)
    }
}
