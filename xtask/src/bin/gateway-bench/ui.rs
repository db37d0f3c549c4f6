//! The Control Room as a browser reaches it: one HTTP/2 connection over TLS
//! (the gateway's certificate, trusted through its `ca.pem`), signed in once
//! with a password, the session cookie sent with every GET. Each GET reads
//! the whole response body before it counts as done.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SESSION_COOKIE: &str = "__Host-airlock-session";
const SIGNIN_COOKIE: &str = "__Host-airlock-signin";

pub struct UiClient {
    /// `https://127.0.0.1:PORT`, no trailing slash: HTTP/2 wants absolute URIs.
    origin: String,
    send: SendRequest<Full<Bytes>>,
    cookie: String,
}

/// One GET's answer: its status and its whole body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

impl UiClient {
    /// Connects to the UI at `url` (its `ui-url` file), trusting only `ca_pem`.
    pub async fn connect(url: &str, ca_pem: &[u8]) -> Result<UiClient> {
        let origin = url.trim().trim_end_matches('/').to_string();
        let authority = origin.strip_prefix("https://").with_context(|| format!("the UI URL {url:?} is not https://"))?.to_string();
        let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority).trim_start_matches('[').trim_end_matches(']').to_string();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.context("the gateway's CA (PEM)")?).context("the gateway's CA is not a usable root")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(&authority).await.with_context(|| format!("connect to the UI at {authority}"))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let name = ServerName::try_from(host.clone()).with_context(|| format!("{host:?} as a TLS server name"))?;
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.with_context(|| format!("TLS handshake with the UI at {authority}"))?;
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.context("HTTP/2 handshake with the UI")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("gateway-bench: the UI connection ended: {e}");
            }
        });
        Ok(UiClient { origin, send, cookie: String::new() })
    }

    /// GET `path` (with the session cookie, once signed in); the whole body.
    pub async fn get(&mut self, path: &str) -> Result<Answer> {
        let request = Request::get(format!("{}{path}", self.origin));
        let (status, _, body) = self.send(request, Bytes::new()).await.with_context(|| format!("GET {path}"))?;
        Ok(Answer { status, body })
    }

    /// GET that must answer 200.
    pub async fn get_ok(&mut self, path: &str) -> Result<Answer> {
        let answer = self.get(path).await?;
        if answer.status != StatusCode::OK {
            let text = answer.text();
            bail!("GET {path}: HTTP {}: {}", answer.status, &text[..text.len().min(300)]);
        }
        Ok(answer)
    }

    /// The sign-in form's token (and its cookie), then the form POST; keeps
    /// the session cookie the answer sets.
    pub async fn sign_in(&mut self, username: &str, password: &str) -> Result<()> {
        let (status, headers, body) = self.send(Request::get(format!("{}/signin", self.origin)), Bytes::new()).await.context("GET /signin")?;
        if status != StatusCode::OK {
            bail!("GET /signin: HTTP {status}");
        }
        let form_cookie = set_cookie(&headers, SIGNIN_COOKIE).context("GET /signin set no sign-in cookie")?;
        let token = hidden_input(&String::from_utf8_lossy(&body), "token").context("the sign-in form has no token")?;
        let form = format!("username={}&password={}&token={}&next=%2F", urlencode(username), urlencode(password), urlencode(&token));
        let request = Request::post(format!("{}/signin", self.origin))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(COOKIE, format!("{SIGNIN_COOKIE}={form_cookie}"));
        let (status, headers, body) = self.send(request, Bytes::from(form)).await.context("POST /signin")?;
        if !status.is_redirection() {
            bail!("POST /signin: HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        let session = set_cookie(&headers, SESSION_COOKIE).filter(|v| !v.is_empty()).context("POST /signin set no session cookie")?;
        self.cookie = format!("{SESSION_COOKIE}={session}");
        let to = headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        if to != "/" {
            bail!("POST /signin went to {to:?}, not /");
        }
        Ok(())
    }

    async fn send(&mut self, mut request: hyper::http::request::Builder, body: Bytes) -> Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        if !self.cookie.is_empty() && request.headers_ref().is_some_and(|h| !h.contains_key(COOKIE)) {
            request = request.header(COOKIE, &self.cookie);
        }
        let request = request.body(Full::new(body)).context("build the request")?;
        self.send.ready().await.context("the UI connection")?;
        let response = self.send.send_request(request).await.context("send the request")?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("read the response body")?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// The value a `Set-Cookie` of the answer gives `name`.
fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let (pair, _) = v.split_once(';').unwrap_or((v, ""));
        let (k, value) = pair.split_once('=')?;
        (k.trim() == name).then(|| value.trim().to_string())
    })
}

/// `<input type="hidden" name="NAME" value="...">`'s value.
fn hidden_input(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[at..];
    let start = rest.find("value=\"")? + "value=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

/// Percent-encoding for a query string or a form field.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The decision rows of a decisions page.
pub fn decision_rows(html: &str) -> usize {
    html.matches("<tr class=\"allow\">").count() + html.matches("<tr class=\"deny\">").count()
}

/// The page token of a decisions page's "Older" link.
pub fn older_page(html: &str) -> Option<String> {
    let link = html.find("rel=\"next\"").map(|i| &html[..i])?;
    let at = link.rfind("page=")? + "page=".len();
    let token: String = link[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    (!token.is_empty()).then_some(token)
}

/// The overview chart's decisions: (denied, allowed) summed over its bars.
pub fn chart_counts(html: &str) -> (u64, u64) {
    let mut totals = (0, 0);
    for title in html.split("<title>").skip(1) {
        let title = title.split("</title>").next().unwrap_or("");
        let mut words = title.split_whitespace();
        if let (Some(d), Some("denied,"), Some(a), Some("allowed")) = (words.next(), words.next(), words.next(), words.next()) {
            totals.0 += d.parse::<u64>().unwrap_or(0);
            totals.1 += a.parse::<u64>().unwrap_or(0);
        }
    }
    totals
}

/// An instant as RFC 3339 in UTC with nanoseconds (what the UI's since and until take).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_764_288_000_000_000_123), "2025-11-28T00:00:00.000000123Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn pages_are_read() {
        let html = "<a href=\"/decisions?user=u&amp;page=12345\" rel=\"next\">Older</a>";
        assert_eq!(older_page(html).as_deref(), Some("12345"));
        assert_eq!(chart_counts("<title>3 denied, 40 allowed</title><title>2 denied, 1 allowed</title>"), (5, 41));
        assert_eq!(hidden_input("<input type=\"hidden\" name=\"token\" value=\"abc\">", "token").as_deref(), Some("abc"));
    }
}
