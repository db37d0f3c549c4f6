//! Webhooks: each notification is an HTTP POST of JSON, signed with the
//! webhook's shared secret.
//!
//! # The request
//!
//! ```text
//! POST /the/configured/path HTTP/1.1
//! Content-Type: application/json
//! X-Airlock-Event: approval.requested
//! X-Airlock-Delivery: 7f3c…:approval.requested
//! X-Airlock-Signature: t=1767225600,v1=5d41402abc4b2a76b9719d911017c592…
//!
//! {"event":"approval.requested","id":"7f3c…:approval.requested","sent_at":"2026-01-01T00:00:00Z","data":{…}}
//! ```
//!
//! `X-Airlock-Delivery` (equal to the body's `id`) is the same on every retry
//! of a notification, and so is the body; `t` and therefore `v1` are computed
//! anew for each attempt. A delivery can arrive more than once (an answer
//! lost after the receiver acted on the request): drop duplicates by
//! `X-Airlock-Delivery`.
//!
//! # Verifying a request
//!
//! 1. Read the raw body bytes, before any JSON parsing or re-encoding.
//! 2. Split `X-Airlock-Signature` on `,` into `key=value` pairs; take `t` and
//!    `v1`, and ignore keys you do not know (a later version may add `v2`).
//! 3. Compute HMAC-SHA256 keyed with the webhook's secret over the bytes of
//!    `t` as sent (ASCII digits), a `.`, then the body; hex-encode it in
//!    lowercase.
//! 4. Compare it with `v1` in constant time; reject the request if they differ.
//! 5. Reject a `t` more than 5 minutes away from your clock: a replayed
//!    request keeps its old `t`, and a changed `t` breaks the signature.
//! 6. Answer 2xx once the notification is taken. 5xx and 429 are retried
//!    (with backoff, honouring a `Retry-After` in seconds); any other status
//!    (4xx, 3xx: redirects are not followed) fails the delivery at once.
//!
//! In Python:
//!
//! ```python
//! import hashlib, hmac, time
//!
//! def verify(secret: bytes, header: str, body: bytes, tolerance=300) -> bool:
//!     fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
//!     t, v1 = fields.get("t", ""), fields.get("v1", "")
//!     if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
//!         return False
//!     expected = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest(expected, v1)
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::ResolvedWebhook;
use crate::target::Target;
use crate::retry::{Attempt, RetryPolicy};
use crate::Notification;

/// The signature header, `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-airlock-signature";
/// The event, as in the body.
pub const EVENT_HEADER: &str = "x-airlock-event";
/// The delivery id, as in the body and the same on every retry.
pub const DELIVERY_HEADER: &str = "x-airlock-delivery";

/// How much of an error answer's body goes into the log line.
const ERROR_BODY_LIMIT: usize = 256;

/// The `X-Airlock-Signature` value for a body sent at unix time `t`.
pub(crate) fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error arm is unreachable in practice.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of a notification, made once and sent on every attempt.
pub(crate) fn body(n: &Notification, sent_at: OffsetDateTime) -> Bytes {
    let sent_at = sent_at.format(&Rfc3339).unwrap_or_default();
    let body = serde_json::json!({
        "event": n.event,
        "id": n.id,
        "sent_at": sent_at,
        "data": n.payload,
    });
    // Serializing a Value to memory cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

pub(crate) struct Webhook {
    target: Target,
    secret: Vec<u8>,
    tls: Option<TlsConnector>,
    pub(crate) policy: RetryPolicy,
}

impl Webhook {
    /// `system_roots` are the host's trusted CAs, loaded once for all webhooks.
    pub(crate) fn new(
        resolved: ResolvedWebhook,
        system_roots: &[CertificateDer<'static>],
    ) -> anyhow::Result<Webhook> {
        let ResolvedWebhook {
            target,
            secret,
            extra_roots,
            policy,
        } = resolved;
        let tls = if target.https {
            Some(tls_connector(system_roots, extra_roots, &target.display)?)
        } else {
            if !is_loopback(&target.host) {
                tracing::warn!(
                    destination = %target.display,
                    "webhook over plain http: approval details cross the network unencrypted \
                     (the signature still authenticates them)"
                );
            }
            None
        };
        Ok(Webhook {
            target,
            secret,
            tls,
            policy,
        })
    }

    pub(crate) fn destination(&self) -> &str {
        &self.target.display
    }

    pub(crate) async fn attempt(&self, n: &Notification, body: &Bytes) -> Attempt {
        let request = match self.request(n, body) {
            Ok(request) => request,
            // An event or id that cannot be a header value never will be.
            Err(e) => return Attempt::Fail(format!("{e:#}")),
        };
        match self.exchange(request).await {
            Ok(answer) => answer.into_attempt(),
            Err(e) => Attempt::Retry {
                error: format!("{e:#}"),
                after: None,
            },
        }
    }

    fn request(&self, n: &Notification, body: &Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Request::post(self.target.path_and_query.as_str())
            .header(HOST, &self.target.authority)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("airlock-notify/", env!("CARGO_PKG_VERSION")),
            )
            .header(EVENT_HEADER, &n.event)
            .header(DELIVERY_HEADER, &n.id)
            .header(SIGNATURE_HEADER, signature(&self.secret, t, body))
            .body(Full::new(body.clone()))
            .context("building the request (is the event or id a valid header value?)")
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .with_context(|| format!("connecting to {}", self.target.authority))?;
        // One small request and its answer: no reason to wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from(self.target.host.clone()).with_context(|| {
                    format!("{:?} is not a valid TLS server name", self.target.host)
                })?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.target.authority))?;
                send(TokioIo::new(stream), request).await
            }
            None => send(TokioIo::new(tcp), request).await,
        }
    }
}

/// The part of the receiver's answer that decides the outcome.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

impl Answer {
    fn into_attempt(self) -> Attempt {
        let error = || {
            if self.body.is_empty() {
                format!("HTTP {}", self.status)
            } else {
                format!("HTTP {}: {}", self.status, self.body)
            }
        };
        if self.status.is_success() {
            Attempt::Delivered
        } else if self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retry {
                error: error(),
                after: self.retry_after,
            }
        } else {
            Attempt::Fail(error())
        }
    }
}

/// One request on a fresh HTTP/1.1 connection. Notifications are rare: a
/// connection pool would mostly hold sockets that the receiver has closed.
async fn send<I>(io: I, request: Request<Full<Bytes>>) -> anyhow::Result<Answer>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake")?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.context("HTTP request")?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = if status.is_success() {
        String::new()
    } else {
        error_body(response.into_body()).await
    };
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The start of an error answer's body, on one line, for the log.
async fn error_body(mut body: Incoming) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    bytes.truncate(ERROR_BODY_LIMIT);
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.trim().to_string()
}

/// The connection's driver task, stopped with the exchange: the answer's
/// status is all we need, and a receiver that keeps the connection open must
/// not keep a task alive.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tls_connector(
    system_roots: &[CertificateDer<'static>],
    extra_roots: Vec<CertificateDer<'static>>,
    destination: &str,
) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(system_roots.iter().cloned());
    if unusable > 0 {
        tracing::debug!(
            unusable,
            "system CA certificates rustls cannot use, skipped"
        );
    }
    for cert in extra_roots {
        roots.add(cert).with_context(|| {
            format!("{destination}: a certificate of ca_file is not a usable CA")
        })?;
    }
    if roots.is_empty() {
        tracing::warn!(
            destination,
            "no trusted CA certificates (none in the system store, no ca_file): \
             every HTTPS delivery will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // RFC 4231 test case 2's key and an input built the documented way.
        let got = signature(b"Jefe", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(got, format!("t=1700000000,v1={want}"));
        // Known answer: RFC 4231 test case 2 itself (data "what do ya want for nothing?").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_are_classified() {
        let answer = |code: u16| Answer {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
            body: String::new(),
        };
        assert!(matches!(answer(200).into_attempt(), Attempt::Delivered));
        assert!(matches!(answer(204).into_attempt(), Attempt::Delivered));
        assert!(matches!(answer(500).into_attempt(), Attempt::Retry { .. }));
        assert!(matches!(answer(503).into_attempt(), Attempt::Retry { .. }));
        assert!(matches!(answer(429).into_attempt(), Attempt::Retry { .. }));
        assert!(matches!(answer(400).into_attempt(), Attempt::Fail(_)));
        assert!(matches!(answer(404).into_attempt(), Attempt::Fail(_)));
        assert!(matches!(answer(301).into_attempt(), Attempt::Fail(_)));
    }
}
