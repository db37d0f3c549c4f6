//! The gRPC API (`airlock.v1`): served on its own Unix socket (root and the
//! `airlock` group) and, when configured, on TCP with TLS and client
//! certificates (plain TCP only with `--api-insecure`).
//!
//! The daemon's other socket (`agent.sock`, JSON lines, mode 0666) stays the
//! narrow door `launch` uses; everything an operator or a platform team's
//! tooling needs is here, behind file permissions or mutual TLS.
//!
//! The server runs on one thread with a single-threaded tokio runtime; the
//! store queries it makes run on tokio's blocking pool (a few threads at most).

pub mod convert;
pub mod ops;
mod service;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_api::v1::airlock_server::AirlockServer;
use anyhow::{bail, Context, Result};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use ops::AgentOps;

/// Where and how the API is served.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    pub socket: PathBuf,
    /// TCP address to serve on as well (`--api-listen`).
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// Plain TCP without TLS (`--api-insecure`): for a trusted network only.
    pub insecure: bool,
}

/// PEM files: the server's certificate and key, and the CA that signs client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ApiOptions {
    /// Refuses a TCP listener that would be open to anyone by mistake.
    pub fn validate(&self) -> Result<()> {
        match (&self.listen, &self.tls, self.insecure) {
            (None, Some(_), _) => {
                bail!("--tls-cert/--tls-key/--tls-client-ca need --api-listen ADDR")
            }
            (None, None, true) => bail!("--api-insecure needs --api-listen ADDR"),
            (Some(_), Some(_), true) => {
                bail!("--api-insecure and TLS files contradict each other: choose one")
            }
            (Some(addr), None, false) => bail!(
                "--api-listen {addr} needs --tls-cert, --tls-key and --tls-client-ca (mutual TLS); \
                 plain TCP only with --api-insecure"
            ),
            _ => Ok(()),
        }
    }
}

/// The API server's thread; stopping it ends every connection and stream.
pub struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
}

impl ApiServer {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds every listener now (so a bad address or file fails the start), then
/// serves on a thread of its own.
pub fn start(agent: Arc<dyn AgentOps>, opts: &ApiOptions) -> Result<ApiServer> {
    opts.validate()?;
    let unix = bind_unix(&opts.socket)?;
    let tls = match &opts.tls {
        Some(files) => Some(tls_config(files)?),
        None => None,
    };
    let tcp = match opts.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("listen on {addr} for the API"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tcp_desc = opts.listen.map(|a| format!("{a} ({})", if tls.is_some() { "mutual TLS" } else { "INSECURE plain TCP" }));
    let thread = std::thread::Builder::new()
        .name("airlock-api".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("start the API runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = serve(agent, unix, tcp, tls, stop_rx).await {
                    tracing::error!("API server: {e:#}");
                }
            });
            // Streams still open are cut here rather than waited for.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        })
        .context("start the API thread")?;
    tracing::info!(socket = %opts.socket.display(), tcp = tcp_desc.as_deref().unwrap_or("off"), "API (airlock.v1) serving");
    Ok(ApiServer { stop: Some(stop_tx), thread: Some(thread), socket: opts.socket.clone() })
}

async fn serve(
    agent: Arc<dyn AgentOps>,
    unix: std::os::unix::net::UnixListener,
    tcp: Option<std::net::TcpListener>,
    tls: Option<ServerTlsConfig>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let service = service::ApiService::new(agent);
    let unix = tokio::net::UnixListener::from_std(unix).context("register the API socket")?;
    let unix_server = Server::builder()
        .add_service(AirlockServer::new(service.clone()))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(unix));
    let tcp_server = async {
        let Some(tcp) = tcp else {
            return std::future::pending::<Result<()>>().await;
        };
        let tcp = tokio::net::TcpListener::from_std(tcp).context("register the API TCP listener")?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(tcp);
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).context("configure TLS")?;
        }
        builder.add_service(AirlockServer::new(service.clone())).serve_with_incoming(incoming).await.context("serve the API on TCP")
    };
    tokio::select! {
        r = unix_server => r.context("serve the API socket")?,
        r = tcp_server => r?,
        _ = stop => {}
    }
    Ok(())
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig> {
    let read = |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("read the API's {what} {}", p.display()));
    let cert = read(&files.cert, "TLS certificate (--tls-cert)")?;
    let key = read(&files.key, "TLS key (--tls-key)")?;
    let ca = read(&files.client_ca, "client CA (--tls-client-ca)")?;
    // A client CA makes the certificate mandatory: no certificate, no connection.
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).client_ca_root(Certificate::from_pem(ca)))
}

/// The API socket: root and the `airlock` group (0660). Without that group,
/// root only.
fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("another Airlock daemon is already serving its API on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    let group = nix::unistd::Group::from_name("airlock").ok().flatten();
    match &group {
        Some(g) => nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(g.gid))
            .with_context(|| format!("give {} to the airlock group", path.display()))?,
        None => {
            tracing::info!(socket = %path.display(), "no `airlock` group: the API socket is root's only")
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("set the permissions of {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The API socket that goes with a control socket: `api.sock` beside it.
pub fn api_socket_beside(control_socket: &Path) -> PathBuf {
    control_socket.with_file_name("api.sock")
}
