//! The few HTTP exchanges a relying party makes with its provider (discovery,
//! JWKS, token, userinfo), on the stack airlock-notify already uses: hyper's
//! HTTP/1.1 over rustls with the host's roots, one connection per request.
//! Sign-ins are rare, so a pool would mostly hold sockets the provider closed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

/// A provider answer larger than this is refused: discovery documents and
/// JWKS are a few KiB, and the gateway must not buffer whatever it is sent.
const BODY_LIMIT: usize = 1 << 20;
/// A provider that takes longer than this would leave the user's sign-in
/// hanging; better a clear error.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The answer: status and body (text up to [`BODY_LIMIT`]).
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of a successful answer; otherwise an error naming the
    /// status and the start of the body.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        if !self.status.is_success() {
            bail!("{what}: HTTP {}: {}", self.status, self.snippet());
        }
        serde_json::from_slice(&self.body).with_context(|| format!("{what}: the answer is not the JSON expected"))
    }

    /// The start of the body on one line, for error messages.
    pub fn snippet(&self) -> String {
        let text: String = String::from_utf8_lossy(&self.body[..self.body.len().min(256)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        text.trim().to_string()
    }
}

pub(super) struct HttpClient {
    tls: TlsConnector,
}

impl HttpClient {
    /// The host's trusted CAs, plus `extra_roots` (the settings' ca_file).
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> anyhow::Result<HttpClient> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system CA certificate could not be read");
        }
        let (_, unusable) = roots.add_parsable_certificates(native.certs);
        if unusable > 0 {
            tracing::debug!(unusable, "system CA certificates rustls cannot use, skipped");
        }
        for cert in extra_roots {
            roots.add(cert).context("a certificate of ca_file is not a usable CA")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient { tls: TlsConnector::from(Arc::new(config)) })
    }

    /// GET, asking for JSON; `bearer` is an access token (userinfo).
    pub async fn get(&self, url: &Url, bearer: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = Request::get(target(url)).header(ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(url, request, Bytes::new()).await
    }

    /// POST of an `application/x-www-form-urlencoded` body; `basic` is the
    /// client's (id, secret) for client_secret_basic.
    pub async fn post_form(&self, url: &Url, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> anyhow::Result<Answer> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request = Request::post(target(url))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request = request.header(AUTHORIZATION, basic_authorization(id, secret));
        }
        self.send(url, request, Bytes::from(body)).await
    }

    async fn send(&self, url: &Url, request: hyper::http::request::Builder, body: Bytes) -> anyhow::Result<Answer> {
        let host = url.host_str().context("the URL has no host")?;
        let port = url.port_or_known_default().context("the URL has no port")?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let request = request
            .header(HOST, &authority)
            .header(USER_AGENT, concat!("airlock-gateway/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .context("building the request")?;
        // Url keeps an IPv6 host in brackets; a socket address and a TLS name have none.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let exchange = async {
            let tcp = TcpStream::connect((bare.as_str(), port))
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let _ = tcp.set_nodelay(true);
            match url.scheme() {
                "https" => {
                    let name = ServerName::try_from(bare.clone())
                        .with_context(|| format!("{bare:?} is not a valid TLS server name"))?;
                    let stream = self
                        .tls
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS handshake with {authority}"))?;
                    exchange(TokioIo::new(stream), request).await
                }
                "http" => exchange(TokioIo::new(tcp), request).await,
                other => bail!("unsupported URL scheme {other:?}"),
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| format!("no answer from {authority} within {} s", TIMEOUT.as_secs()))?
            .with_context(|| format!("request to {}", redacted(url)))
    }
}

/// The request target: path and query only (the host goes in Host).
fn target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

/// A URL for messages, without its query (which may hold a code or token).
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// RFC 6749 2.3.1: the id and secret are form-urlencoded before being joined,
/// so a secret with ':' or non-ASCII characters survives.
fn basic_authorization(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> anyhow::Result<Answer>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.context("HTTP handshake")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.context("HTTP request")?;
        let status = response.status();
        let body = Limited::new(response.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer (at most {BODY_LIMIT} bytes): {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    // The answer is all we need; a provider keeping the connection open must not keep a task alive.
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_authorization_encodes_before_joining() {
        // RFC 6749 2.3.1's rule: ':' in the secret is percent-encoded.
        let header = basic_authorization("gw", "a:b c");
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD.decode(header.trim_start_matches("Basic ")).unwrap();
        assert_eq!(decoded, b"gw:a%3Ab+c");
    }

    #[test]
    fn targets_and_redaction() {
        let url = Url::parse("https://idp.example/token?x=1&code=secret").unwrap();
        assert_eq!(target(&url), "/token?x=1&code=secret");
        assert_eq!(redacted(&url), "https://idp.example/token");
    }
}
