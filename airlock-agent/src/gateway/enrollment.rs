//! Enrollment: once, with a join token, the agent sends a CSR for a key it
//! made itself (the key never leaves the host) and keeps the certificate the
//! gateway signs. From then on it connects with mutual TLS; the join token
//! is not needed again.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use airlock_api::gateway::v1::enrollment_client::EnrollmentClient;
use airlock_api::gateway::v1::EnrollRequest;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::{GatewayOptions, GATEWAY_DIR};

const IDENTITY_FILE: &str = "identity.json";
const CERT_FILE: &str = "client.pem";
const KEY_FILE: &str = "client.key";
const CA_FILE: &str = "ca.pem";

/// Who this host is to the gateway, and its credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub url: String,
    pub host_id: String,
    pub org: String,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Enrolled {
    /// The mutual-TLS channel to the gateway (not connected until first used).
    pub fn channel(&self) -> Result<Channel> {
        let read = |name: &str| std::fs::read(self.dir.join(name)).with_context(|| format!("read {}", self.dir.join(name).display()));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(CA_FILE)?))
            .identity(Identity::from_pem(read(CERT_FILE)?, read(KEY_FILE)?))
            .domain_name(domain(&self.url)?);
        Ok(endpoint(&self.url)?.tls_config(tls).context("configure TLS")?.connect_lazy())
    }
}

/// The host's enrollment with `opts.url`: the one kept in the state
/// directory, or a new one made with the join token.
pub fn ensure(opts: &GatewayOptions, state_dir: &Path) -> Result<Enrolled> {
    let dir = state_dir.join(GATEWAY_DIR);
    if let Some(kept) = read_identity(&dir)? {
        let same_host = opts.host_id.as_ref().is_none_or(|h| *h == kept.host_id);
        if kept.url == opts.url && same_host {
            if opts.join_token.is_some() {
                tracing::info!(host = %kept.host_id, org = %kept.org, "already enrolled with this gateway; the join token is not needed again");
            }
            return Ok(kept);
        }
        if opts.join_token.is_none() {
            bail!(
                "this host is enrolled with {} as {:?}, not with {} as asked: give --join-token to enroll again",
                kept.url,
                kept.host_id,
                opts.url
            );
        }
    }
    let token = opts
        .join_token
        .as_deref()
        .context("this host is not enrolled with the gateway yet: give --join-token (from `airlock-gateway token create --join`)")?;
    let ca_path = opts
        .ca
        .as_deref()
        .context("enrolling needs the gateway's CA: --gateway-ca PEM (the gateway's DATA_DIR/ca.pem)")?;
    let ca = std::fs::read_to_string(ca_path).with_context(|| format!("read the gateway's CA {}", ca_path.display()))?;
    let host_id = match &opts.host_id {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).context("this machine has no host name: give --host-id")?,
    };
    let key = rcgen::KeyPair::generate().context("make this host's key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, host_id.clone());
    let csr = params.serialize_request(&key).context("make the certificate signing request")?.pem().context("encode the CSR")?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start a runtime to enroll")?;
    let answer = runtime.block_on(async {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.as_bytes())).domain_name(domain(&opts.url)?);
        let channel = endpoint(&opts.url)?
            .tls_config(tls)
            .context("configure TLS")?
            .connect()
            .await
            .with_context(|| format!("the gateway is not answering on {} (or its certificate is not from {})", opts.url, ca_path.display()))?;
        let request = EnrollRequest { join_token: token.trim().to_string(), host_id: host_id.clone(), csr_pem: csr };
        EnrollmentClient::new(channel)
            .enroll(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| anyhow::anyhow!("the gateway refused the enrollment: {} ({:?})", s.message(), s.code()))
    })?;

    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    write(&dir.join(KEY_FILE), &key.serialize_pem(), 0o600)?;
    write(&dir.join(CERT_FILE), &answer.certificate_pem, 0o644)?;
    write(&dir.join(CA_FILE), &ca, 0o644)?;
    let enrolled = Enrolled { url: opts.url.clone(), host_id: answer.host_id, org: answer.org, dir: dir.clone() };
    crate::state_file::write_atomically(&dir.join(IDENTITY_FILE), &enrolled)?;
    tracing::info!(host = %enrolled.host_id, org = %enrolled.org, gateway = %enrolled.url, "enrolled with the gateway");
    Ok(enrolled)
}

fn read_identity(dir: &Path) -> Result<Option<Enrolled>> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut enrolled: Enrolled = serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged; remove it and enroll again", path.display()))?;
    for name in [CERT_FILE, KEY_FILE, CA_FILE] {
        if !dir.join(name).exists() {
            bail!("{} is missing; remove {} and enroll again", dir.join(name).display(), path.display());
        }
    }
    enrolled.dir = dir.to_path_buf();
    Ok(Some(enrolled))
}

fn endpoint(url: &str) -> Result<Endpoint> {
    let uri: Uri = url.parse().with_context(|| format!("--gateway {url:?} is not a URL like https://gateway:7443"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--gateway {url:?}: the gateway is reached over TLS only (https://)");
    }
    Ok(Endpoint::from(uri).connect_timeout(std::time::Duration::from_secs(10)).tcp_keepalive(Some(std::time::Duration::from_secs(30))))
}

fn domain(url: &str) -> Result<String> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    Ok(uri.host().with_context(|| format!("{url:?} names no host"))?.trim_matches(['[', ']']).to_string())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}
