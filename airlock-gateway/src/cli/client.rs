//! The fleet API client the CLI uses: TLS to the gateway, the token as a
//! bearer header on every call.

use std::path::{Path, PathBuf};

use airlock_api::gateway::v1::fleet_client::FleetClient;
use anyhow::{bail, Context, Result};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use super::Conn;
use crate::pki::CA_FILE;
use crate::server::{ADMIN_TOKEN_FILE, URL_FILE};

pub type Fleet = FleetClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Connects as `conn` says; `--data-dir` fills in what is not given.
pub async fn connect(conn: &Conn) -> Result<Fleet> {
    let from_dir = |name: &str| -> Result<Option<String>> {
        let Some(dir) = &conn.data_dir else {
            return Ok(None);
        };
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {} (is {} a gateway's data directory, and are you its owner?)", path.display(), dir.display()))?;
        Ok(Some(text.trim().to_string()))
    };
    let server = match &conn.server {
        Some(s) => s.clone(),
        None => from_dir(URL_FILE)?.context("say which gateway: --server https://HOST:PORT (or --data-dir on its machine)")?,
    };
    let token = match &conn.token {
        Some(t) => t.trim().to_string(),
        None => from_dir(ADMIN_TOKEN_FILE)?.context("an API token is needed: --token T or AIRLOCK_TOKEN (or --data-dir on the gateway's machine)")?,
    };
    let ca: Option<PathBuf> = conn.ca.clone().or_else(|| conn.data_dir.as_ref().map(|d| d.join(CA_FILE)));
    let header = MetadataValue::try_from(format!("Bearer {token}")).context("the token has characters a header cannot carry")?;
    let channel = channel(&server, ca.as_deref()).await?;
    Ok(FleetClient::with_interceptor(channel, Bearer(header)).max_decoding_message_size(64 * 1024 * 1024))
}

/// A TLS channel to `url`, trusting `ca` (or the system's roots when none is given).
pub async fn channel(url: &str, ca: Option<&Path>) -> Result<Channel> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL like https://gateway:7443"))?;
    if uri.scheme_str() != Some("https") {
        bail!("{url:?}: the gateway is served over TLS only (https://)");
    }
    let domain = uri.host().with_context(|| format!("{url:?} names no host"))?.trim_matches(['[', ']']).to_string();
    let mut tls = ClientTlsConfig::new().domain_name(domain);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("read the gateway's CA {}", ca.display()))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Endpoint::from(uri)
        .tls_config(tls)
        .context("configure TLS")?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("the gateway is not answering on {url}"))
}
