//! Signed-in users: a random secret in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict) whose hash names a row of the store, so every replica
//! knows the session and signing out or disabling the user ends it at once.
//! Each session has a CSRF token that every state-changing request must
//! carry (a form field or the `X-CSRF-Token` header htmx sends); the check
//! is one middleware over every route, so no handler can forget it.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};

use super::error::UiError;
use super::AppState;
use crate::auth::Caller;
use crate::tokens::Role;

pub const SESSION_COOKIE: &str = "__Host-airlock-session";
/// The pre-sign-in token of the sign-in form (login CSRF).
pub const SIGNIN_COOKIE: &str = "__Host-airlock-signin";
const CSRF_FIELD: &str = "csrf";
const CSRF_HEADER: &str = "x-csrf-token";
/// A form is never larger than a policy set's files.
const MAX_FORM_BYTES: usize = 4 * 1024 * 1024;

/// The user a request comes from, as the fleet facade sees them.
#[derive(Clone)]
pub struct SignedIn {
    pub username: String,
    pub caller: Caller,
    pub csrf: String,
}

impl SignedIn {
    pub fn can(&self, role: Role) -> bool {
        self.caller.role >= role
    }
}

/// 32 random bytes as hex.
pub fn random_secret() -> Result<String, UiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| UiError::internal(format!("the system's random source: {e}")))?;
    Ok(hex::encode(bytes))
}

pub fn hash(secret: &str) -> String {
    crate::tokens::hash(secret)
}

pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a secure, script-invisible, same-site cookie.
pub fn set_cookie(name: &'static str, value: String, max_age_secs: i64) -> String {
    set_cookie_same_site(name, value, max_age_secs, SameSite::Strict)
}

/// The same, but sent on a top-level GET navigation from another site too
/// (`SameSite=Lax`): for what the identity provider's redirect back to the
/// gateway must bring, which a `Strict` cookie would not.
pub fn set_cross_site_cookie(name: &'static str, value: String, max_age_secs: i64) -> String {
    set_cookie_same_site(name, value, max_age_secs, SameSite::Lax)
}

fn set_cookie_same_site(name: &'static str, value: String, max_age_secs: i64, same_site: SameSite) -> String {
    Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build()
        .to_string()
}

async fn lookup(state: &AppState, headers: &HeaderMap) -> Result<Option<SignedIn>, UiError> {
    let Some(secret) = cookie_value(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.hub.store.ui_session(&hash(secret), crate::now_ns()).await.map_err(UiError::from_store)? else {
        return Ok(None);
    };
    let user = session.user;
    let role = Role::parse(&user.role).map_err(|e| UiError::internal(format!("user {}: {e}", user.username)))?;
    let caller = Caller { org_id: user.org_id, org: user.org_name.clone(), role, label: format!("{} (Control Room)", user.username), through: "user" };
    Ok(Some(SignedIn { username: user.username, caller, csrf: session.csrf_token }))
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedIn, Response> {
        if let Some(signed) = parts.extensions.get::<SignedIn>() {
            return Ok(signed.clone());
        }
        match lookup(state, &parts.headers).await {
            Ok(Some(signed)) => Ok(signed),
            Ok(None) => Err(to_signin(parts)),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// Back to the sign-in page, and from there to where the user was going.
fn to_signin(parts: &Parts) -> Response {
    let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!("/signin?next={}", urlencode(next));
    if parts.headers.contains_key("hx-request") {
        // htmx follows a redirect inside the fragment; this header makes it
        // load the whole page instead.
        return (StatusCode::UNAUTHORIZED, [("hx-redirect", target)]).into_response();
    }
    Redirect::to(&target).into_response()
}

/// Percent-encodes everything but unreserved characters and '/'.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Every request that changes something (any method but GET and HEAD) must
/// carry the session's CSRF token; the sign-in form checks its own
/// pre-session token.
pub async fn require_csrf(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) || request.uri().path() == "/signin" {
        return next.run(request).await;
    }
    let signed = match lookup(&state, request.headers()).await {
        Ok(Some(signed)) => signed,
        Ok(None) => {
            let (parts, _) = request.into_parts();
            return to_signin(&parts);
        }
        Err(e) => return e.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(e) => return UiError::bad_request(format!("the form could not be read (at most {} MB): {e}", MAX_FORM_BYTES >> 20)).into_response(),
    };
    let from_header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let from_form = form_urlencoded_field(&bytes, CSRF_FIELD);
    let presented = from_header.or(from_form).unwrap_or_default();
    if presented.is_empty() || !constant_time_eq(presented.as_bytes(), signed.csrf.as_bytes()) {
        tracing::warn!(user = %signed.username, path = %parts.uri.path(), "Control Room: a request without the session's CSRF token was refused");
        return UiError::new(StatusCode::FORBIDDEN, "The form's security token is missing or stale: reload the page and try again.").into_response();
    }
    parts.extensions.insert(signed);
    let body = Body::from(bytes);
    next.run(Request::from_parts(parts, body)).await
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
