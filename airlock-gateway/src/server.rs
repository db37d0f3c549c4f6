//! `airlock-gateway run`: opens the store (migrations), the CA, the
//! default org and its first admin token, then serves the three services on
//! one TLS listener until SIGTERM or SIGINT. Under systemd it says READY=1
//! once the store is open and the listeners are bound (the packaged unit is
//! `Type=notify`).

use std::path::Path;
use std::time::Duration;

use airlock_api::gateway::v1::agent_link_server::AgentLinkServer;
use airlock_api::gateway::v1::enrollment_server::EnrollmentServer;
use airlock_api::gateway::v1::fleet_server::FleetServer;
use airlock_gateway_store::{GatewayStore, NewToken};
use anyhow::{Context, Result};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::DEFAULT_ORG;
use crate::config::RunConfig;
use crate::enroll::EnrollService;
use crate::fleet::FleetService;
use crate::hub::Hub;
use crate::link::LinkService;
use crate::pki::{self, Authority};
use crate::tokens::{self, TokenKind};

pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The URL the gateway serves on, for the CLI's `--data-dir` shortcut.
pub const URL_FILE: &str = "url";
/// Messages larger than this are refused (RESOURCE_EXHAUSTED) before they are decoded.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

pub async fn run(config: RunConfig) -> Result<()> {
    create_private_dir(&config.data_dir)?;
    let store = GatewayStore::open(config.database_url.as_deref(), &config.data_dir).await.context("open the gateway's store")?;
    tracing::info!(store = %store.describe(), "store open, migrations applied");
    let authority = Authority::load_or_create(&config.data_dir)?;
    bootstrap(&store, &config.data_dir).await?;

    let (cert_pem, key_pem) = match &config.tls {
        Some((cert, key)) => {
            let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
            (read(cert)?, read(key)?)
        }
        None => {
            let own = authority.server_identity(&config.data_dir, &server_names(&config))?;
            (own.cert_pem.into_bytes(), own.key_pem.into_bytes())
        }
    };
    let identity = Identity::from_pem(&cert_pem, &key_pem);
    // Client certificates are optional at the TLS layer: enrollment and the
    // fleet API authenticate with tokens; the agent stream demands one.
    let tls = ServerTlsConfig::new().identity(identity).client_ca_root(Certificate::from_pem(authority.ca_pem())).client_auth_optional(true);

    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    let bound = listener.local_addr().context("the listener's address")?;
    let url = format!("https://{}", crate::display_addr(bound));
    std::fs::write(config.data_dir.join(URL_FILE), format!("{url}\n")).with_context(|| format!("write {}", config.data_dir.join(URL_FILE).display()))?;

    let notifiers = crate::approvals::Notifiers::start(&config.notify)?;
    let hub = Hub::new(store, authority, config.replica.clone(), notifiers);
    tokio::spawn(hub.clone().watch_policies());
    tokio::spawn(hub.clone().deliver_commands());
    tokio::spawn(hub.clone().write_batches());
    tokio::spawn(crate::security::watch_blocks(hub.clone()));
    tokio::spawn(crate::detection::run_loop(hub.clone(), config.detect_interval));
    tracing::info!(interval_secs = config.detect_interval.as_secs(), max_decisions = crate::detection::MAX_DECISIONS_PER_RUN, "security detection runs every interval");

    let (stop_ui, ui_stopped) = tokio::sync::watch::channel(false);
    if let Some(ui) = config.ui.clone() {
        crate::ui::start(hub.clone(), ui, &cert_pem, &key_pem, config.data_dir.clone(), ui_stopped).await.context("start the Control Room")?;
    }

    let enroll = EnrollmentServer::new(EnrollService { hub: hub.clone() }).max_decoding_message_size(64 * 1024);
    let link = AgentLinkServer::new(LinkService { hub: hub.clone() }).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let fleet = FleetServer::new(FleetService { hub: hub.clone() }).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(64 * 1024 * 1024);
    tracing::info!(%url, replica = %config.replica, data_dir = %config.data_dir.display(), "gateway ready");
    // The listener is bound: connections made from here on queue until the
    // server below accepts them, so the service manager may start dependents.
    notify_service_manager(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&format!("serving on {url}"))]);
    Server::builder()
        .tls_config(tls)
        .context("configure TLS")?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(enroll)
        .add_service(link)
        .add_service(fleet)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener).map(no_delay), async move {
            stop_signal().await;
            notify_service_manager(&[sd_notify::NotifyState::Stopping]);
            let _ = stop_ui.send(true);
            // Agent streams never end by themselves: end them, so the
            // graceful stop does not wait for them.
            hub.stop_all();
        })
        .await
        .context("serve")?;
    tracing::info!("stopped");
    Ok(())
}

/// The `default` org, and on a data directory's first start an admin token
/// for it in `DIR/admin.token` (mode 0600).
async fn bootstrap(store: &GatewayStore, data_dir: &Path) -> Result<()> {
    let org = store.ensure_org(DEFAULT_ORG).await?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    let secret = tokens::generate(TokenKind::Api)?;
    let token = NewToken {
        org_id: org.id,
        kind: "api".into(),
        role: "admin".into(),
        secret_hash: tokens::hash(&secret),
        label: format!("first admin ({})", path.display()),
        uses_left: -1,
        expires_ns: 0,
        created_ns: crate::now_ns(),
    };
    store.insert_token(&token).await?;
    pki::write_private(&path, &format!("{secret}\n"))?;
    tracing::info!(token = %path.display(), "wrote the first admin token");
    Ok(())
}

/// Replies (an ack, a page) go out at once, not after the peer's delayed ACK.
fn no_delay(accepted: std::io::Result<tokio::net::TcpStream>) -> std::io::Result<tokio::net::TcpStream> {
    if let Ok(stream) = &accepted {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    }
    accepted
}

fn server_names(config: &RunConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = nix::unistd::gethostname() {
        if let Ok(host) = host.into_string() {
            names.push(host);
        }
    }
    let ip = config.listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    names.extend(config.server_names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod 0700 {}", dir.display()))
}

/// READY/STOPPING for a `Type=notify` unit; nothing without `$NOTIFY_SOCKET`.
/// A failure is logged, never fatal: the gateway serves without systemd.
fn notify_service_manager(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(socket = ?std::env::var_os("NOTIFY_SOCKET"), "sd_notify failed: {e}");
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("could not install the signal handlers; stop the gateway with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
