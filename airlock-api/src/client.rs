//! Clients of the agent API: over the daemon's Unix socket (root and the
//! `airlock` group), and over TCP with mutual TLS.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::v1::airlock_client::AirlockClient;

pub type Client = AirlockClient<Channel>;

/// Connects to the API on a Unix socket. The URI is a placeholder: every
/// connection goes to `socket`.
pub async fn connect_unix(socket: &Path) -> Result<Client> {
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://airlock.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| {
            format!(
                "the Airlock API is not answering on {} (is the daemon running? the API is for root and the `airlock` group)",
                socket.display()
            )
        })?;
    Ok(AirlockClient::new(channel))
}

/// PEM files for a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct TlsClientFiles {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// This client's certificate and key, signed by the CA the server trusts.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Connects to the API over TCP with mutual TLS. `url` is
/// `https://HOST:PORT`; HOST must be a name (or address) the server's
/// certificate carries.
pub async fn connect_tls(url: &str, files: &TlsClientFiles) -> Result<Client> {
    let read = |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("read the {what} {}", p.display()));
    let ca = read(&files.ca, "CA certificate (--tls-ca)")?;
    let cert = read(&files.cert, "client certificate (--tls-cert)")?;
    let key = read(&files.key, "client key (--tls-key)")?;
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL like https://host:7443"))?;
    let domain = uri.host().with_context(|| format!("{url:?} names no host"))?.trim_matches(['[', ']']).to_string();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(domain);
    let channel = Endpoint::from(uri)
        .tls_config(tls)
        .context("configure TLS")?
        .connect()
        .await
        .with_context(|| format!("the Airlock API is not answering on {url} (or refused this client's certificate)"))?;
    Ok(AirlockClient::new(channel))
}

/// A status from the API as an error with its message.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}
