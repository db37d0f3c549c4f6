//! Signing in (a password kept by the gateway, or an OpenID Connect
//! provider) and out. A wrong password and an unknown user get the same
//! answer after the same work, so the form does not tell which names exist.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::error::{UiError, UiResult};
use super::oidc::{OidcIdentity, PendingSignIn};
use super::session::{self, cookie_value, set_cookie, SESSION_COOKIE, SIGNIN_COOKIE};
use super::AppState;

const OIDC_COOKIE: &str = "__Host-airlock-oidc";
/// The pre-sign-in token and a pending OpenID sign-in last this long.
const SIGNIN_FORM_SECS: i64 = 15 * 60;

pub fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/signin", get(form).post(password_signin))
        .route("/signout", post(signout))
        .route("/signin/oidc", get(oidc_begin))
        .route("/oidc/callback", get(oidc_callback))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    token: String,
    next: String,
    error: String,
    oidc: bool,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only a path on this site: never an absolute URL (an open redirect).
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/".to_string()
    }
}

async fn form(State(state): State<AppState>, Query(q): Query<NextQuery>) -> UiResult<Response> {
    signin_page(&state, StatusCode::OK, &q.next, "")
}

fn signin_page(state: &AppState, status: StatusCode, next: &str, error: &str) -> UiResult<Response> {
    let token = session::random_secret()?;
    let page = SigninPage { token: token.clone(), next: safe_next(next), error: error.to_string(), oidc: state.oidc.is_some() };
    let html = page.render()?;
    Ok((status, [(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, token, SIGNIN_FORM_SECS))], axum::response::Html(html)).into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    username: String,
    password: String,
    token: String,
    #[serde(default)]
    next: String,
}

async fn password_signin(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<PasswordForm>) -> UiResult<Response> {
    let expected = cookie_value(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::constant_time_eq(expected.as_bytes(), f.token.as_bytes()) {
        return signin_page(&state, StatusCode::FORBIDDEN, &f.next, "The sign-in form expired: try again.");
    }
    let user = state.hub.store.user_by_name(f.username.trim()).await.map_err(UiError::from_store)?;
    let phc = user.as_ref().filter(|u| !u.disabled && !u.password_hash.is_empty()).map(|u| u.password_hash.clone());
    let password = f.password.clone();
    // argon2 takes tens of milliseconds of CPU: off the async threads.
    let accepted = tokio::task::spawn_blocking(move || crate::passwords::verify_user(&password, phc.as_deref()))
        .await
        .map_err(|e| UiError::internal(format!("check a password: {e}")))?;
    let Some(user) = user.filter(|_| accepted) else {
        tracing::warn!(username = %f.username.trim(), "Control Room: a sign-in was refused (unknown user, wrong password or disabled)");
        return signin_page(&state, StatusCode::UNAUTHORIZED, &f.next, "Wrong username or password.");
    };
    start_session(&state, user.id, &user.username, &safe_next(&f.next)).await
}

/// A new session for the user; the response sets its cookie and goes on.
async fn start_session(state: &AppState, user_id: i64, username: &str, next: &str) -> UiResult<Response> {
    let secret = session::random_secret()?;
    let csrf = session::random_secret()?;
    let now = crate::now_ns();
    let ttl = state.session_ttl.as_secs() as i64;
    let store = &state.hub.store;
    store.insert_ui_session(&session::hash(&secret), user_id, &csrf, now, now + ttl * 1_000_000_000).await.map_err(UiError::from_store)?;
    store.record_login(user_id, now).await.map_err(UiError::from_store)?;
    tracing::info!(user = %username, "Control Room: signed in");
    // Two cookies: AppendHeaders, as a plain array would keep only the last.
    let cookies = AppendHeaders([(header::SET_COOKIE, set_cookie(SESSION_COOKIE, secret, ttl)), (header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, String::new(), 0))]);
    Ok((cookies, Redirect::to(next)).into_response())
}

async fn signout(State(state): State<AppState>, headers: HeaderMap) -> UiResult<Response> {
    if let Some(secret) = cookie_value(&headers, SESSION_COOKIE) {
        state.hub.store.delete_ui_session(&session::hash(secret)).await.map_err(UiError::from_store)?;
    }
    Ok(([(header::SET_COOKIE, set_cookie(SESSION_COOKIE, String::new(), 0))], Redirect::to("/signin")).into_response())
}

async fn oidc_begin(State(state): State<AppState>, Query(q): Query<NextQuery>) -> UiResult<Response> {
    let client = state.oidc.as_ref().ok_or_else(|| UiError::not_found("OpenID Connect sign-in is not configured (ui.oidc)"))?;
    let (url, pending) = client.begin().map_err(|e| UiError::internal(format!("begin an OpenID sign-in: {e:#}")))?;
    let carried = PendingCookie { pending, next: safe_next(&q.next) };
    let value = hex::encode(serde_json::to_vec(&carried).map_err(|e| UiError::internal(e.to_string()))?);
    Ok(([(header::SET_COOKIE, set_cookie(OIDC_COOKIE, value, SIGNIN_FORM_SECS))], Redirect::to(&url)).into_response())
}

#[derive(serde::Serialize, Deserialize)]
struct PendingCookie {
    pending: PendingSignIn,
    next: String,
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

async fn oidc_callback(State(state): State<AppState>, headers: HeaderMap, Query(cb): Query<Callback>) -> UiResult<Response> {
    let client = state.oidc.as_ref().ok_or_else(|| UiError::not_found("OpenID Connect sign-in is not configured (ui.oidc)"))?;
    if !cb.error.is_empty() {
        return signin_page(&state, StatusCode::UNAUTHORIZED, "/", &format!("The identity provider refused the sign-in: {} {}", cb.error, cb.error_description));
    }
    let carried: PendingCookie = cookie_value(&headers, OIDC_COOKIE)
        .and_then(|v| hex::decode(v).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| UiError::bad_request("This sign-in was not started here, or it expired: start again from the sign-in page."))?;
    let identity = match client.finish(&carried.pending, &cb.state, &cb.code).await {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!("Control Room: an OpenID sign-in was refused: {e}");
            return signin_page(&state, StatusCode::UNAUTHORIZED, &carried.next, &format!("The sign-in was refused: {e}"));
        }
    };
    let user_id = oidc_user(&state, &identity).await?;
    let mut response = start_session(&state, user_id, &identity.username, &carried.next).await?;
    if let Ok(clear) = set_cookie(OIDC_COOKIE, String::new(), 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// The gateway's user for an OpenID identity: made on the first sign-in,
/// and given the role the provider's claim maps to at every sign-in.
async fn oidc_user(state: &AppState, identity: &OidcIdentity) -> UiResult<i64> {
    let store = &state.hub.store;
    let subject = format!("{}|{}", identity.issuer, identity.subject);
    let role = identity.role.to_string();
    if let Some(user) = store.user_by_oidc_subject(&subject).await.map_err(UiError::from_store)? {
        if user.disabled {
            return Err(UiError::new(StatusCode::FORBIDDEN, format!("The user {} is disabled in the gateway.", user.username)));
        }
        if user.role != role {
            store.update_user(user.org_id, &user.username, Some(&role), None, None).await.map_err(UiError::from_store)?;
            tracing::info!(user = %user.username, from = %user.role, to = %role, "Control Room: the identity provider changed a user's role");
        }
        return Ok(user.id);
    }
    let org = store
        .org_by_name(&identity.org)
        .await
        .map_err(UiError::from_store)?
        .ok_or_else(|| UiError::internal(format!("ui.oidc.org: the org {:?} does not exist", identity.org)))?;
    let new = airlock_gateway_store::NewUser {
        org_id: org.id,
        username: identity.username.clone(),
        password_hash: String::new(),
        role,
        oidc_subject: subject,
        created_ns: crate::now_ns(),
    };
    store.insert_user(&new).await.map_err(|e| match e {
        airlock_gateway_store::StoreError::Conflict(_) => {
            UiError::new(StatusCode::CONFLICT, format!("The username {:?} is taken by another gateway user: ask an admin.", identity.username))
        }
        other => UiError::from_store(other),
    })
}
