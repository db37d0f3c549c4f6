//! The Control Room: the gateway's web UI, served by the gateway itself over
//! HTTPS with its certificate (`--ui-listen`). Pages are rendered on the
//! server from askama templates, with vendored htmx for the few live parts,
//! so building the gateway needs no JavaScript toolchain.
//!
//! Every page acts through the same fleet facade as the gRPC API
//! ([`crate::fleet`]), as a [`crate::auth::Caller`] made from the signed-in
//! user, so a role the API refuses is refused here too, whatever the browser
//! posts. Map: [`tls`] serves; [`session`] signs users in and out and checks
//! each form's CSRF token; [`headers`] sets the Content Security Policy;
//! [`view`] and [`error`] are what every page shares; [`pages`] are the pages.

mod assets;
mod error;
mod headers;
pub mod oidc;
mod pages;
mod session;
mod signin;
mod tls;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use serde::Deserialize;

use crate::hub::Hub;

/// Where the UI's URL is written, beside the gRPC one.
pub const UI_URL_FILE: &str = "ui-url";
const DEFAULT_SESSION_HOURS: u64 = 12;

/// The `[ui]` table of gateway.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiFileConfig {
    /// Where the Control Room listens (HTTPS); unset: no UI.
    pub listen: Option<String>,
    /// How long a sign-in lasts.
    pub session_hours: Option<u64>,
    /// Sign-in through an OpenID Connect provider, beside passwords.
    pub oidc: Option<oidc::OidcSettings>,
}

#[derive(Debug, Clone)]
pub struct UiConfig {
    pub listen: SocketAddr,
    pub session_ttl: Duration,
    pub oidc: Option<oidc::OidcSettings>,
}

impl UiConfig {
    /// The UI's settings from the flag (which wins) and the file's table;
    /// `None` when neither asks for a listen address.
    pub fn resolve(flag: Option<String>, file: Option<UiFileConfig>, from: &dyn Fn(&str) -> String) -> Result<Option<UiConfig>> {
        let file = file.unwrap_or_default();
        let Some(text) = flag.or(file.listen) else {
            if file.oidc.is_some() {
                anyhow::bail!("{}: OpenID Connect is set but the UI has no listen address (--ui-listen, or ui.listen)", from("ui.oidc"));
            }
            return Ok(None);
        };
        let listen = text.parse().with_context(|| format!("{}: {text:?} is not an address like 127.0.0.1:8443", from("--ui-listen")))?;
        let hours = file.session_hours.unwrap_or(DEFAULT_SESSION_HOURS);
        if hours == 0 || hours > 24 * 30 {
            anyhow::bail!("{}: 1 to 720 hours (got {hours})", from("ui.session_hours"));
        }
        Ok(Some(UiConfig { listen, session_ttl: Duration::from_secs(hours * 3600), oidc: file.oidc }))
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub session_ttl: Duration,
    pub oidc: Option<Arc<oidc::OidcClient>>,
}

/// Binds the UI's listener and serves it until `stop` fires. Returns the
/// bound address at once; the serving runs on its own task.
pub async fn start(hub: Arc<Hub>, config: UiConfig, cert_pem: &[u8], key_pem: &[u8], data_dir: PathBuf, stop: tokio::sync::watch::Receiver<bool>) -> Result<SocketAddr> {
    let oidc = match &config.oidc {
        Some(settings) => Some(Arc::new(oidc::OidcClient::discover(settings.clone()).await.context("ui.oidc: discover the OpenID provider")?)),
        None => None,
    };
    let state = AppState { hub, session_ttl: config.session_ttl, oidc };
    let app = router(state);
    let tls = tls::server_config(cert_pem, key_pem)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("--ui-listen {}", config.listen))?;
    let bound = listener.local_addr().context("the UI listener's address")?;
    let url = format!("https://{}/", crate::display_addr(bound));
    let url_file = data_dir.join(UI_URL_FILE);
    std::fs::write(&url_file, format!("{url}\n")).with_context(|| format!("write {}", url_file.display()))?;
    tracing::info!(%url, "Control Room ready");
    tokio::spawn(tls::serve(listener, tls, app, stop));
    Ok(bound)
}

fn router(state: AppState) -> Router {
    Router::new()
        .merge(signin::routes())
        .merge(pages::routes())
        .merge(assets::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::require_csrf))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .with_state(state)
}
