//! The web UI's users, managed by an org's admins: made with a password or
//! an OIDC identity, listed, given another role, disabled, or a new
//! password. Each call checks the admin role itself, since the web UI calls
//! these functions directly with the Caller of its signed-in user.

use airlock_api::gateway::v1::{CreateUserRequest, ListUsersRequest, ListUsersResponse, UpdateUserRequest, User};
use airlock_gateway_store::NewUser;
use tonic::Status;

use crate::auth::{store_status, Caller};
use crate::hub::Hub;
use crate::passwords;
use crate::tokens::Role;

pub const MAX_USERNAME_CHARS: usize = 64;
/// "issuer|sub": an issuer URL and a subject are short in practice.
const MAX_OIDC_SUBJECT_BYTES: usize = 1024;

/// Why `name` cannot be a username, if it cannot: it appears in logs,
/// audit trails and URLs, so it is kept to a plain alphabet.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_USERNAME_CHARS {
        return Err(format!("username {name:?}: 1 to {MAX_USERNAME_CHARS} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))) {
        return Err(format!("username {name:?}: {c:?} is not allowed (letters, digits, '.', '_', '@' and '-')"));
    }
    Ok(())
}

fn role(text: &str) -> Result<Role, Status> {
    Role::parse(text.trim()).map_err(|e| Status::invalid_argument(format!("role: {e}")))
}

fn check_oidc_subject(subject: &str) -> Result<(), Status> {
    let valid = subject.len() <= MAX_OIDC_SUBJECT_BYTES
        && subject.split_once('|').is_some_and(|(issuer, sub)| !issuer.is_empty() && !sub.is_empty())
        && !subject.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("oidc_subject: {subject:?} is not \"ISSUER|SUBJECT\" (at most {MAX_OIDC_SUBJECT_BYTES} bytes)")))
    }
}

/// The password's hash, made on the blocking pool (argon2 is slow on purpose).
async fn hashed(password: String) -> Result<String, Status> {
    passwords::check(&password).map_err(|e| Status::invalid_argument(format!("password: {e}")))?;
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(|e| Status::internal(format!("hash the password: {e}")))?
        .map_err(|e| Status::internal(format!("{e:#}")))
}

pub fn user_message(u: airlock_gateway_store::User) -> User {
    User {
        org: u.org_name,
        username: u.username,
        role: u.role,
        disabled: u.disabled,
        oidc_subject: u.oidc_subject,
        created_unix_nanos: u.created_ns,
        last_login_unix_nanos: u.last_login_ns,
    }
}

/// Admin: a new user, with a password or an OIDC identity (exactly one).
pub async fn create(hub: &Hub, caller: &Caller, ask: CreateUserRequest) -> Result<User, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    check_username(&ask.username).map_err(Status::invalid_argument)?;
    let role = role(&ask.role)?;
    let oidc_subject = ask.oidc_subject.trim().to_string();
    let password_hash = match (ask.password.is_empty(), oidc_subject.is_empty()) {
        (true, true) => return Err(Status::invalid_argument("password: give a password (at least 12 characters), or an oidc_subject for an OIDC user")),
        (false, false) => return Err(Status::invalid_argument("oidc_subject: an OIDC user signs in through its identity provider and has no password; give one of the two")),
        (false, true) => hashed(ask.password).await?,
        (true, false) => {
            check_oidc_subject(&oidc_subject)?;
            String::new()
        }
    };
    let new = NewUser { org_id: org.id, username: ask.username.clone(), password_hash, role: role.to_string(), oidc_subject, created_ns: crate::now_ns() };
    hub.store.insert_user(&new).await.map_err(store_status)?;
    let sign_in = if new.oidc_subject.is_empty() { "password" } else { "OIDC" };
    tracing::info!(org = %org.name, user = %new.username, role = %role, sign_in, by = %caller.label, "UI user created");
    let made = hub.store.user_by_name(&new.username).await.map_err(store_status)?.ok_or_else(|| Status::internal("the new user vanished"))?;
    Ok(user_message(made))
}

/// Admin: the org's users, by username.
pub async fn list(hub: &Hub, caller: &Caller, ask: ListUsersRequest) -> Result<ListUsersResponse, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let users = hub.store.list_users(org.id).await.map_err(store_status)?;
    Ok(ListUsersResponse { users: users.into_iter().map(user_message).collect() })
}

/// Admin: changes what the request sets (role, disabled, password). The
/// org's last enabled admin user is neither demoted nor disabled, so the
/// web UI always has someone who can administer it.
pub async fn update(hub: &Hub, caller: &Caller, ask: UpdateUserRequest) -> Result<User, Status> {
    caller.require(Role::Admin)?;
    let org = caller.scope(&hub.store, &ask.org).await?;
    let username = ask.username.as_str();
    if username.is_empty() {
        return Err(Status::invalid_argument("username: say which user"));
    }
    let new_role = if ask.role.trim().is_empty() { None } else { Some(role(&ask.role)?) };
    let not_found = || Status::not_found(format!("user {username:?} not found in org {}", org.name));
    let current = hub.store.user_by_name(username).await.map_err(store_status)?.filter(|u| u.org_id == org.id).ok_or_else(not_found)?;
    let password_hash = if ask.password.is_empty() {
        None
    } else if !current.oidc_subject.is_empty() {
        return Err(Status::failed_precondition(format!("user {username:?} signs in through OIDC and has no password")));
    } else {
        Some(hashed(ask.password).await?)
    };
    let updated = hub
        .store
        .update_user(org.id, username, new_role.map(Role::as_str), ask.disabled, password_hash.as_deref())
        .await
        .map_err(|e| {
            let status = store_status(e);
            if status.code() == tonic::Code::FailedPrecondition {
                tracing::info!(org = %org.name, user = %username, by = %caller.label, "UI user change refused: {}", status.message());
            }
            status
        })?
        .ok_or_else(not_found)?;
    tracing::info!(
        org = %org.name,
        user = %username,
        role = ?new_role.map(Role::as_str),
        disabled = ?ask.disabled,
        password_changed = password_hash.is_some(),
        by = %caller.label,
        "UI user updated"
    );
    Ok(user_message(updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_and_plain() {
        for ok in ["ada", "ada.lovelace@example.com", "a_b-c", "A", &"x".repeat(64)] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ada lovelace", "ada/1", "ädä", "ada\n", &"x".repeat(65)] {
            let err = check_username(bad).unwrap_err();
            assert!(err.starts_with("username"), "{err}");
        }
        assert!(check_oidc_subject("https://idp.example|1234").is_ok());
        assert!(check_oidc_subject("nobar").is_err() && check_oidc_subject("|x").is_err() && check_oidc_subject("x|").is_err());
    }
}
