//! Settings: security detection (on or off, thresholds, history), API and
//! join tokens (a new secret is shown once), hosts (revoke), and the
//! Control Room's users. Admin-only parts are refused by the facade for
//! anyone else; the page says so instead of showing an empty table.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use airlock_api::gateway::v1::{
    CreateTokenRequest, CreateUserRequest, GetSecuritySettingsRequest, ListHostsRequest, ListTokensRequest, ListUsersRequest, RevokeHostRequest, RevokeTokenRequest,
    SecuritySettingsHistoryRequest, SetSecuritySettingsRequest, UpdateUserRequest,
};

use crate::fleet::{hosts, orgs, security, tokens, users};
use crate::tokens::Role;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::SignedIn;
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

pub struct RuleRow {
    pub name: String,
    pub settings: String,
}

pub struct SettingsVersionRow {
    pub version: u64,
    pub author: String,
    pub comment: String,
    pub created: When,
}

pub struct TokenRow {
    pub id: i64,
    pub kind: String,
    pub role: String,
    pub label: String,
    pub uses_left: String,
    pub expires: When,
    pub created: When,
    pub revoked: bool,
}

pub struct HostRow {
    pub host: String,
    pub connected: bool,
    pub revoked: bool,
    pub last_contact: When,
    pub enforced: u64,
}

pub struct UserRow {
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub sign_in: &'static str,
    pub last_login: When,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    notice: String,
    error: String,
    new_secret: String,
    detection_enabled: bool,
    settings_version: u64,
    document: String,
    rules: Vec<RuleRow>,
    history: Vec<SettingsVersionRow>,
    admin: bool,
    tokens: Vec<TokenRow>,
    hosts: Vec<HostRow>,
    users: Vec<UserRow>,
    roles: [&'static str; 3],
}

/// What a form's outcome adds to the page it re-renders.
#[derive(Default)]
struct Outcome {
    notice: String,
    error: String,
    new_secret: String,
    /// The settings document as the user typed it, kept after a refusal.
    document: Option<String>,
}

async fn settings_page(state: &AppState, signed: &SignedIn, outcome: Outcome) -> UiResult<Response> {
    let hub = &state.hub;
    let caller = &signed.caller;
    let current = security::get_settings(hub, caller, GetSecuritySettingsRequest::default()).await?;
    let value: serde_json::Value = serde_json::from_str(&current.document).map_err(|e| UiError::internal(format!("the settings document in force: {e}")))?;
    let detection_enabled = value.get("enabled").and_then(|v| v.as_bool()).unwrap_or(true);
    let rules = value
        .get("rules")
        .and_then(|r| r.as_object())
        .map(|rules| {
            rules
                .iter()
                .map(|(name, s)| RuleRow {
                    name: name.clone(),
                    settings: s.as_object().map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")).unwrap_or_else(|| s.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    let history = security::history(hub, caller, SecuritySettingsHistoryRequest::default())
        .await?
        .versions
        .into_iter()
        .map(|v| SettingsVersionRow { version: v.version, author: v.author, comment: v.comment, created: When(v.created_unix_nanos) })
        .collect();
    let admin = signed.can(Role::Admin);
    let (mut tokens_rows, mut users_rows) = (Vec::new(), Vec::new());
    if admin {
        tokens_rows = tokens::list(hub, caller, ListTokensRequest::default())
            .await?
            .tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                kind: t.kind,
                role: t.role,
                label: t.label,
                uses_left: if t.uses_left < 0 { "unlimited".into() } else { t.uses_left.to_string() },
                expires: When(t.expires_unix_nanos),
                created: When(t.created_unix_nanos),
                revoked: t.revoked,
            })
            .collect();
        users_rows = users::list(hub, caller, ListUsersRequest::default())
            .await?
            .users
            .into_iter()
            .map(|u| UserRow {
                sign_in: if u.oidc_subject.is_empty() { "password" } else { "OpenID Connect" },
                username: u.username,
                role: u.role,
                disabled: u.disabled,
                last_login: When(u.last_login_unix_nanos),
            })
            .collect();
    }
    let hosts_rows = hosts::list(hub, caller, ListHostsRequest::default())
        .await?
        .hosts
        .into_iter()
        .map(|h| HostRow { host: h.host_id, connected: h.connected, revoked: h.revoked, last_contact: When(h.last_contact_unix_nanos), enforced: h.enforced_version })
        .collect();
    let status = if outcome.error.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = SettingsPage {
        chrome: Chrome::new(signed, "settings"),
        notice: outcome.notice,
        error: outcome.error,
        new_secret: outcome.new_secret,
        detection_enabled,
        settings_version: current.version,
        document: outcome.document.unwrap_or(current.document),
        rules,
        history,
        admin,
        tokens: tokens_rows,
        hosts: hosts_rows,
        users: users_rows,
        roles: ["viewer", "approver", "admin"],
    };
    Ok((status, render(page)?).into_response())
}

pub async fn page(State(state): State<AppState>, signed: SignedIn) -> UiResult<Response> {
    settings_page(&state, &signed, Outcome::default()).await
}

/// A refusal for bad input is shown on the page beside the form; any other
/// failure is an error page.
fn inline(e: tonic::Status) -> Result<String, UiError> {
    match e.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists | tonic::Code::NotFound => Ok(e.message().to_string()),
        _ => Err(e.into()),
    }
}

async fn after<T>(state: &AppState, signed: &SignedIn, result: Result<T, tonic::Status>, notice: impl FnOnce(T) -> Outcome) -> UiResult<Response> {
    let outcome = match result {
        Ok(value) => notice(value),
        Err(e) => Outcome { error: inline(e)?, ..Default::default() },
    };
    settings_page(state, signed, outcome).await
}

#[derive(Deserialize)]
pub struct DetectionForm {
    #[serde(default)]
    document: String,
    #[serde(default)]
    comment: String,
    /// "on"/"off": switch detection and keep the rest; else save the document.
    #[serde(default)]
    switch: String,
}

pub async fn detection(State(state): State<AppState>, signed: SignedIn, Form(f): Form<DetectionForm>) -> UiResult<Response> {
    let hub = &state.hub;
    let document = match f.switch.as_str() {
        "on" | "off" => {
            let current = security::get_settings(hub, &signed.caller, GetSecuritySettingsRequest::default()).await?;
            let mut value: serde_json::Value = serde_json::from_str(&current.document).map_err(|e| UiError::internal(format!("the settings document in force: {e}")))?;
            if let Some(map) = value.as_object_mut() {
                map.insert("enabled".into(), serde_json::Value::Bool(f.switch == "on"));
            }
            value.to_string()
        }
        "" => f.document.clone(),
        other => return Err(UiError::bad_request(format!("switch: {other:?} is not on or off"))),
    };
    let comment = if f.comment.trim().is_empty() && !f.switch.is_empty() { format!("detection switched {}", f.switch) } else { f.comment.trim().to_string() };
    let result = security::set_settings(hub, &signed.caller, SetSecuritySettingsRequest { document, comment, ..Default::default() }).await;
    let typed = f.document;
    match result {
        Ok(v) => settings_page(&state, &signed, Outcome { notice: format!("Security settings version {} is in force.", v.version), ..Default::default() }).await,
        Err(e) => {
            let error = format!("The settings were refused; version in force stays. {}", inline(e)?);
            settings_page(&state, &signed, Outcome { error, document: Some(typed).filter(|d| !d.is_empty()), ..Default::default() }).await
        }
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    kind: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    uses: u32,
    #[serde(default)]
    ttl_hours: i64,
}

pub async fn create_token(State(state): State<AppState>, signed: SignedIn, Form(f): Form<TokenForm>) -> UiResult<Response> {
    let join = match f.kind.as_str() {
        "api" => false,
        "join" => true,
        other => return Err(UiError::bad_request(format!("kind: {other:?} is not api or join"))),
    };
    if f.ttl_hours < 0 {
        return Err(UiError::bad_request("ttl_hours: must not be negative"));
    }
    let ask = CreateTokenRequest { join, role: f.role, label: f.label.trim().to_string(), uses: f.uses, ttl_seconds: f.ttl_hours * 3600, ..Default::default() };
    let result = orgs::create_token(&state.hub, &signed.caller, ask).await;
    after(&state, &signed, result, |t| Outcome {
        notice: format!("A new {} token was made. Copy it now: it is not shown again.", if t.join { "join" } else { "API" }),
        new_secret: t.token,
        ..Default::default()
    })
    .await
}

pub async fn revoke_token(State(state): State<AppState>, signed: SignedIn, Path(id): Path<i64>) -> UiResult<Response> {
    let result = tokens::revoke(&state.hub, &signed.caller, RevokeTokenRequest { id, ..Default::default() }).await;
    after(&state, &signed, result, |t| Outcome { notice: format!("Token {} ({}) is revoked.", t.id, t.label), ..Default::default() }).await
}

pub async fn revoke_host(State(state): State<AppState>, signed: SignedIn, Path(host): Path<String>) -> UiResult<Response> {
    let result = hosts::revoke(&state.hub, &signed.caller, RevokeHostRequest { host_id: host, ..Default::default() }).await;
    after(&state, &signed, result, |h| Outcome { notice: format!("Host {} is revoked: its certificate is refused from now on.", h.host_id), ..Default::default() }).await
}

#[derive(Deserialize)]
pub struct NewUserForm {
    username: String,
    role: String,
    password: String,
}

pub async fn create_user(State(state): State<AppState>, signed: SignedIn, Form(f): Form<NewUserForm>) -> UiResult<Response> {
    let ask = CreateUserRequest { username: f.username.trim().to_string(), role: f.role, password: f.password, ..Default::default() };
    let result = users::create(&state.hub, &signed.caller, ask).await;
    after(&state, &signed, result, |u| Outcome { notice: format!("User {} ({}) can sign in now.", u.username, u.role), ..Default::default() }).await
}

#[derive(Deserialize)]
pub struct UpdateUserForm {
    #[serde(default)]
    role: String,
    /// "disable", "enable" or "" (unchanged).
    #[serde(default)]
    access: String,
    #[serde(default)]
    password: String,
}

pub async fn update_user(State(state): State<AppState>, signed: SignedIn, Path(username): Path<String>, Form(f): Form<UpdateUserForm>) -> UiResult<Response> {
    let disabled = match f.access.as_str() {
        "" => None,
        "disable" => Some(true),
        "enable" => Some(false),
        other => return Err(UiError::bad_request(format!("access: {other:?} is not disable or enable"))),
    };
    let ask = UpdateUserRequest { username, role: f.role, disabled, password: f.password, ..Default::default() };
    let result = users::update(&state.hub, &signed.caller, ask).await;
    after(&state, &signed, result, |u| {
        Outcome { notice: format!("User {} is now {}{}.", u.username, u.role, if u.disabled { ", disabled" } else { "" }), ..Default::default() }
    })
    .await
}
