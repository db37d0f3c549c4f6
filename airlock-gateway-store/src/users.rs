//! The web UI's users (a role in one org, signed in by password or OIDC) and
//! their sessions. A session is stored under the SHA-256 of its cookie
//! secret, so a copy of the database opens no session; the caller hashes.
//!
//! Usernames are unique across the installation (a login form names no
//! org). A change that takes away an org's last enabled admin user is
//! refused in the same statement that would make it, so two admins
//! demoting each other at once cannot both succeed.

use crate::db::{Dialect, Row, Stmt, Value};
use crate::error::StoreError;
use crate::filter::Query;
use crate::store::GatewayStore;

pub const USER_VIEWER: &str = "viewer";
pub const USER_APPROVER: &str = "approver";
pub const USER_ADMIN: &str = "admin";
/// Every role a user can have, least first.
pub const USER_ROLES: [&str; 3] = [USER_VIEWER, USER_APPROVER, USER_ADMIN];

/// The lock user changes take on PostgreSQL (any fixed number, the same on
/// every replica): the last-admin check and the change are then one step.
const PG_USERS_LOCK: i64 = 0x6169_726c_6f63_6b33;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub org_id: i64,
    pub username: String,
    /// An argon2id PHC string; empty for an OIDC user.
    pub password_hash: String,
    /// One of [`USER_ROLES`].
    pub role: String,
    /// "issuer|sub"; empty for a password user.
    pub oidc_subject: String,
    pub created_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub org_id: i64,
    pub org_name: String,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub oidc_subject: String,
    pub disabled: bool,
    pub created_ns: i64,
    /// 0: never.
    pub last_login_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    pub user: User,
    pub csrf_token: String,
    pub created_ns: i64,
    pub expires_ns: i64,
}

const USER_COLUMNS: &str =
    "u.id, u.org_id, o.name, u.username, u.password_hash, u.role, u.oidc_subject, u.disabled, u.created_ns, u.last_login_ns";
const USERS: &str = "ui_users AS u JOIN orgs AS o ON o.id = u.org_id";

/// The user in the row's first ten columns (`USER_COLUMNS`).
fn user(r: &mut Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.int(0)?,
        org_id: r.int(1)?,
        org_name: r.text(2)?,
        username: r.text(3)?,
        password_hash: r.text(4)?,
        role: r.text(5)?,
        oidc_subject: r.text(6)?,
        disabled: r.flag(7)?,
        created_ns: r.int(8)?,
        last_login_ns: r.int(9)?,
    })
}

fn check_role(role: &str) -> Result<(), StoreError> {
    if USER_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(StoreError::Refused(format!("role {role:?} is not one of {}", USER_ROLES.join(", "))))
    }
}

impl GatewayStore {
    /// The user's id; `Conflict` if the username, or the OIDC subject, has a user already.
    pub async fn insert_user(&self, u: &NewUser) -> Result<i64, StoreError> {
        check_role(&u.role)?;
        let row = self
            .db
            .query_opt(
                "INSERT INTO ui_users(org_id, username, password_hash, role, oidc_subject, disabled, created_ns, last_login_ns)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, 0) RETURNING id",
                vec![
                    u.org_id.into(),
                    u.username.as_str().into(),
                    u.password_hash.as_str().into(),
                    u.role.as_str().into(),
                    u.oidc_subject.as_str().into(),
                    u.created_ns.into(),
                ],
            )
            .await;
        match row {
            Ok(row) => row.ok_or_else(|| StoreError::other("inserting a user returned no id"))?.int(0),
            // Say which of the two unique values is taken, not the database's wording.
            Err(StoreError::Conflict(raw)) => Err(StoreError::Conflict(if self.user_by_name(&u.username).await?.is_some() {
                format!("username {:?} is taken", u.username)
            } else if !u.oidc_subject.is_empty() && self.user_by_oidc_subject(&u.oidc_subject).await?.is_some() {
                format!("the OIDC identity {:?} has a user already", u.oidc_subject)
            } else {
                raw
            })),
            Err(e) => Err(e),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = self.db.query_opt(&format!("SELECT {USER_COLUMNS} FROM {USERS} WHERE u.username = $1"), vec![username.into()]).await?;
        row.map(|mut r| user(&mut r)).transpose()
    }

    /// The user of an OIDC identity ("issuer|sub"); never a password user.
    pub async fn user_by_oidc_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        if subject.is_empty() {
            return Ok(None);
        }
        let row = self.db.query_opt(&format!("SELECT {USER_COLUMNS} FROM {USERS} WHERE u.oidc_subject = $1"), vec![subject.into()]).await?;
        row.map(|mut r| user(&mut r)).transpose()
    }

    /// An org's users, by username.
    pub async fn list_users(&self, org_id: i64) -> Result<Vec<User>, StoreError> {
        let rows = self.db.query(&format!("SELECT {USER_COLUMNS} FROM {USERS} WHERE u.org_id = $1 ORDER BY u.username"), vec![org_id.into()]).await?;
        rows.into_iter().map(|mut r| user(&mut r)).collect()
    }

    /// Changes what is given of a user of the org; `None` if the org has no
    /// such user. Disabling it or a new password also ends its sessions, in
    /// the same transaction. `Refused` if the change would demote or
    /// disable the org's last enabled admin user.
    pub async fn update_user(
        &self,
        org_id: i64,
        username: &str,
        role: Option<&str>,
        disabled: Option<bool>,
        password_hash: Option<&str>,
    ) -> Result<Option<User>, StoreError> {
        if let Some(role) = role {
            check_role(role)?;
        }
        let in_org = |u: Option<User>| u.filter(|u| u.org_id == org_id);
        if role.is_none() && disabled.is_none() && password_hash.is_none() {
            return Ok(in_org(self.user_by_name(username).await?));
        }
        let mut update = Query::new("UPDATE ui_users SET ");
        let org = update.param(org_id);
        let name = update.param(username);
        let mut sets = Vec::new();
        if let Some(role) = role {
            sets.push(format!("role = {}", update.param(role)));
        }
        if let Some(disabled) = disabled {
            sets.push(format!("disabled = {}", update.param(i64::from(disabled))));
        }
        if let Some(hash) = password_hash {
            sets.push(format!("password_hash = {}", update.param(hash)));
        }
        update.push(&sets.join(", "));
        update.push(&format!(" WHERE org_id = {org} AND username = {name}"));
        let removes_admin = role.is_some_and(|r| r != USER_ADMIN) || disabled == Some(true);
        if removes_admin {
            update.push(&format!(
                " AND (role <> '{USER_ADMIN}' OR disabled <> 0 OR EXISTS (SELECT 1 FROM ui_users AS other
                   WHERE other.org_id = {org} AND other.role = '{USER_ADMIN}' AND other.disabled = 0 AND other.username <> {name}))"
            ));
        }
        let mut stmts = Vec::new();
        if self.db.dialect() == Dialect::Postgres {
            stmts.push(Stmt::new("SELECT 1 FROM pg_advisory_xact_lock($1)", vec![Value::Int(PG_USERS_LOCK)]));
        }
        let update_at = stmts.len();
        stmts.push(Stmt::new(update.sql, update.params));
        // Only if the update applied: the row then holds what was asked.
        let mut ended = Vec::new();
        let mut end_params: Vec<Value> = vec![org_id.into(), username.into()];
        if disabled == Some(true) {
            ended.push("disabled = 1".to_string());
        }
        if let Some(hash) = password_hash {
            end_params.push(hash.into());
            ended.push(format!("password_hash = ${}", end_params.len()));
        }
        if !ended.is_empty() {
            stmts.push(Stmt::new(
                format!(
                    "DELETE FROM ui_sessions WHERE user_id IN (SELECT id FROM ui_users WHERE org_id = $1 AND username = $2 AND ({}))",
                    ended.join(" OR ")
                ),
                end_params,
            ));
        }
        let outcomes = self.db.transaction(stmts).await?;
        let applied = outcomes.get(update_at).map(|o| o.affected).unwrap_or(0) > 0;
        let current = in_org(self.user_by_name(username).await?);
        match current {
            Some(u) if !applied => {
                Err(StoreError::Refused(format!("{:?} is the last enabled admin user of org {}: make another user admin first", u.username, u.org_name)))
            }
            other => Ok(other),
        }
    }

    /// Records a successful sign-in.
    pub async fn record_login(&self, user_id: i64, now_ns: i64) -> Result<(), StoreError> {
        self.db.execute("UPDATE ui_users SET last_login_ns = $2 WHERE id = $1", vec![user_id.into(), now_ns.into()]).await?;
        Ok(())
    }

    /// A new session, found later by `id_hash` (the SHA-256 hex of the cookie's secret).
    pub async fn insert_ui_session(&self, id_hash: &str, user_id: i64, csrf_token: &str, created_ns: i64, expires_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO ui_sessions(id_hash, user_id, csrf_token, created_ns, expires_ns, last_seen_ns) VALUES ($1, $2, $3, $4, $5, $4)",
                vec![id_hash.into(), user_id.into(), csrf_token.into(), created_ns.into(), expires_ns.into()],
            )
            .await?;
        Ok(())
    }

    /// The session and its user, its last use set to `now_ns`; `None` if
    /// it is unknown, expired, or its user is disabled.
    pub async fn ui_session(&self, id_hash: &str, now_ns: i64) -> Result<Option<UiSession>, StoreError> {
        let stmts = vec![
            Stmt::new("UPDATE ui_sessions SET last_seen_ns = $2 WHERE id_hash = $1 AND expires_ns > $2", vec![id_hash.into(), now_ns.into()]),
            Stmt::new(
                format!(
                    "SELECT {USER_COLUMNS}, s.csrf_token, s.created_ns, s.expires_ns FROM ui_sessions AS s
                     JOIN ui_users AS u ON u.id = s.user_id JOIN orgs AS o ON o.id = u.org_id
                     WHERE s.id_hash = $1 AND s.expires_ns > $2 AND u.disabled = 0"
                ),
                vec![id_hash.into(), now_ns.into()],
            ),
        ];
        let mut outcomes = self.db.transaction(stmts).await?;
        let Some(mut r) = outcomes.pop().and_then(|o| o.rows.into_iter().next()) else {
            return Ok(None);
        };
        let user = user(&mut r)?;
        Ok(Some(UiSession { user, csrf_token: r.text(10)?, created_ns: r.int(11)?, expires_ns: r.int(12)? }))
    }

    /// Ends a session (signing out); false if there was none.
    pub async fn delete_ui_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM ui_sessions WHERE id_hash = $1", vec![id_hash.into()]).await? > 0)
    }

    /// Removes the sessions expired at `now_ns`; how many.
    pub async fn delete_expired_ui_sessions(&self, now_ns: i64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM ui_sessions WHERE expires_ns <= $1", vec![now_ns.into()]).await
    }
}
