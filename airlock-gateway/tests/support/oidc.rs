//! What the OpenID Connect tests share: a real provider, the certified
//! `oidc-provider` npm package (tests/oidc/provider.mjs, installed by
//! scripts/setup.sh under target/oidc-provider) on 127.0.0.1, and a browser
//! to go through its pages with.
//!
//! Without node or the package, [`Provider::start`] prints "SKIPPED" and the
//! test returns, unless AIRLOCK_REQUIRE_OIDC=1 (scripts/test.sh), where that
//! is a failure.
//!
//! The browser keeps cookies as browsers do where it matters to a sign-in
//! over two sites: `Secure` cookies only over https, and `SameSite`
//! (Lax when unset, as Chromium): a navigation another site started
//! (the provider's redirect back, and the redirects after it) carries no
//! `Strict` cookie, and only `Lax` ones on a GET. Sites are schemeful: the
//! plain-http provider and the HTTPS Control Room on 127.0.0.1 are two sites,
//! as an identity provider and the gateway are in production.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use airlock_gateway::ui::oidc::OidcSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

/// The confidential client's secret (the provider is told it at start).
pub const SECRET: &str = "a test-only client secret";

fn provider_dir() -> PathBuf {
    match std::env::var_os("AIRLOCK_OIDC_PROVIDER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/oidc-provider"),
    }
}

/// Why the provider cannot run here, if it cannot.
fn missing() -> Option<String> {
    if Command::new("node").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Some("node is not installed".into());
    }
    let package = provider_dir().join("node_modules/oidc-provider/package.json");
    (!package.exists()).then(|| format!("{} is missing (scripts/setup.sh installs oidc-provider there)", package.display()))
}

/// The provider process, killed (by its pid) when dropped.
pub struct Provider {
    child: Child,
    stdin: ChildStdin,
    stdout: Receiver<String>,
    pub issuer: String,
    /// The one redirect URI its clients accept.
    pub redirect: String,
    log: PathBuf,
}

impl Provider {
    /// The provider, its clients accepting `redirect` only; None (after
    /// printing SKIPPED) when node or the package is missing.
    pub fn start(test: &str, redirect: &str) -> Option<Provider> {
        if let Some(why) = missing() {
            if std::env::var("AIRLOCK_REQUIRE_OIDC").as_deref() == Ok("1") {
                panic!("AIRLOCK_REQUIRE_OIDC=1 but the OpenID provider cannot run: {why}");
            }
            println!("SKIPPED {test}: {why}");
            return None;
        }
        let log = scratch(&format!("{test}.provider.log"));
        let mut child = Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs"))
            .arg(provider_dir())
            .args([redirect, SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("provider log"))
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut provider = Provider { child, stdin, stdout: rx, issuer: String::new(), redirect: redirect.into(), log };
        let port = provider.expect_line("READY ");
        provider.issuer = format!("http://127.0.0.1:{}", port.trim());
        Some(provider)
    }

    /// The rest of the next stdout line that starts with `prefix`.
    fn expect_line(&mut self, prefix: &str) -> String {
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                    assert!(!line.starts_with("ERROR"), "the provider: {line}");
                }
                Err(_) => panic!("the provider never said {prefix:?}: {}", std::fs::read_to_string(&self.log).unwrap_or_default()),
            }
        }
    }

    /// The claims `account` has from now on (sign-ins already made keep theirs).
    pub fn set_claims(&mut self, account: &str, claims: serde_json::Value) {
        writeln!(self.stdin, "CLAIMS {account} {claims}").expect("write to the provider");
        self.stdin.flush().expect("write to the provider");
        self.expect_line(&format!("OK CLAIMS {account}"));
    }

    /// A file holding the confidential client's secret.
    pub fn secret_file(&self, name: &str) -> PathBuf {
        let path = scratch(&format!("{name}.secret"));
        std::fs::write(&path, format!("{SECRET}\n")).expect("secret file");
        path
    }

    /// The relying party's settings for `client_id` (`gw-confidential` with
    /// the secret, or `gw-public` without).
    pub fn settings(&self, client_id: &str, secret: bool) -> OidcSettings {
        OidcSettings {
            issuer: self.issuer.clone(),
            client_id: client_id.into(),
            client_secret_file: secret.then(|| self.secret_file(client_id)),
            redirect_url: self.redirect.clone(),
            scopes: vec!["profile".into(), "email".into()],
            role_claim: "airlock_role".into(),
            roles: [("approver", "approver"), ("admin", "admin"), ("ops", "viewer"), ("sec", "admin")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default_role: None,
            username_claim: "preferred_username".into(),
            org: None,
            ca_file: None,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("provider log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(format!("{}-{}-{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SameSite {
    Strict,
    Lax,
    None,
}

struct StoredCookie {
    value: String,
    secure: bool,
    same_site: SameSite,
}

/// A browser as far as a sign-in needs: cookies, forms, redirects and a
/// `<meta http-equiv="refresh">`, over http and (trusting one CA) https,
/// to loopback only.
#[derive(Default)]
pub struct Browser {
    /// By (name, path); every site here is on 127.0.0.1, and cookies do
    /// not tell ports apart.
    cookies: BTreeMap<(String, String), StoredCookie>,
    tls: Option<tokio_rustls::TlsConnector>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    /// The names of the cookies this response set (not those it cleared).
    pub set_cookies: Vec<String>,
}

fn site(url: &Url) -> (String, String) {
    (url.scheme().to_string(), url.host_str().unwrap_or_default().to_string())
}

impl Browser {
    /// A browser that trusts `ca_pem` (besides nothing else) for https.
    pub fn trusting(ca_pem: &[u8]) -> Browser {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.expect("the CA's PEM")).expect("the CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Browser { cookies: BTreeMap::new(), tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))) }
    }

    /// A cookie's value, whatever its path.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|((n, _), _)| n == name).map(|(_, c)| c.value.as_str())
    }

    /// Drops a cookie (as a user clearing it, or another browser would lack it).
    pub fn forget(&mut self, name: &str) {
        self.cookies.retain(|(n, _), _| n != name);
    }

    /// One request: a GET, or a POST of `form`. `from` is the page whose
    /// link, form or redirect chain this is (None: the address bar).
    pub async fn send(&mut self, url: &Url, form: Option<&[(String, String)]>, from: Option<&Url>) -> Page {
        let host = url.host_str().expect("host").to_string();
        assert!(host.starts_with("127."), "the browser goes to loopback only, not {url}");
        let port = url.port_or_known_default().expect("port");
        let https = url.scheme() == "https";
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let cross_site = from.is_some_and(|from| site(from) != site(url));
        let cookie = self
            .cookies
            .iter()
            .filter(|((_, path), c)| {
                url.path().starts_with(path.as_str())
                    && (https || !c.secure)
                    && match c.same_site {
                        SameSite::Strict => !cross_site,
                        SameSite::Lax => !cross_site || form.is_none(),
                        SameSite::None => true,
                    }
            })
            .map(|((name, _), c)| format!("{name}={}", c.value))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = Request::builder().uri(target).header(HOST, format!("{host}:{port}"));
        if !cookie.is_empty() {
            request = request.header(COOKIE, cookie);
        }
        let body = match form {
            Some(fields) => {
                request = request.method("POST").header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
            }
            None => String::new(),
        };
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let response = if https {
            let tls = self.tls.as_ref().unwrap_or_else(|| panic!("{url}: this browser trusts no CA for https"));
            let name = ServerName::try_from(host.clone()).expect("a server name");
            exchange(tls.connect(name, tcp).await.unwrap_or_else(|e| panic!("TLS to {url}: {e}")), request).await
        } else {
            exchange(tcp, request).await
        };
        let (status, location, set_cookie, body) = response;
        let set_cookies = set_cookie.iter().filter_map(|header| self.set_cookie(header, https)).collect();
        Page { status, location, body, set_cookies }
    }

    /// Keeps (or clears) a cookie; its name if it was set.
    fn set_cookie(&mut self, header: &str, https: bool) -> Option<String> {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts.next().and_then(|p| p.split_once('='))?;
        let mut path = "/".to_string();
        let mut gone = value.is_empty();
        let mut secure = false;
        let mut same_site = SameSite::Lax;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.to_ascii_lowercase().as_str() {
                "path" => path = val.to_string(),
                "max-age" => gone |= val.starts_with('0') || val.starts_with('-'),
                "expires" => gone |= val.contains("1970"),
                "secure" => secure = true,
                "samesite" => {
                    same_site = match val.to_ascii_lowercase().as_str() {
                        "strict" => SameSite::Strict,
                        "none" => SameSite::None,
                        _ => SameSite::Lax,
                    }
                }
                _ => {}
            }
        }
        if secure && !https {
            return None;
        }
        let key = (name.to_string(), path);
        if gone {
            self.cookies.remove(&key);
            return None;
        }
        self.cookies.insert(key, StoredCookie { value: value.to_string(), secure, same_site });
        Some(name.to_string())
    }

    /// From `start` (reached from `from`) through the provider's pages,
    /// signing in as `login` at its login form and submitting every other
    /// form it shows (consent), to the first redirect to a URL `stop`
    /// accepts; returns that URL and the page its navigation came from.
    pub async fn sign_in(&mut self, start: &Url, from: Option<&Url>, login: &str, stop: impl Fn(&Url) -> bool) -> (Url, Option<Url>) {
        let (mut url, mut from) = (start.clone(), from.cloned());
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let page = self.send(&url, form.as_deref(), from.as_ref()).await;
            if let Some(location) = page.location.filter(|_| page.status.is_redirection()) {
                let next = url.join(&location).expect("Location");
                if stop(&next) {
                    return (next, from);
                }
                (url, form) = (next, None);
                continue;
            }
            assert!(page.status.is_success(), "{} at {url}: {}", page.status, page.body);
            let (action, mut fields) = first_form(&page.body).unwrap_or_else(|| panic!("no form at {url}: {}", page.body));
            if fields.iter().any(|(name, _)| name == "login") {
                fields.retain(|(name, _)| name != "login" && name != "password");
                fields.push(("login".into(), login.into()));
                fields.push(("password".into(), "any password".into()));
            }
            (url, from, form) = (url.join(&action).expect("form action"), Some(url), Some(fields));
        }
        panic!("no redirect to the expected URL after 20 pages");
    }

    /// GET `url` (reached from `from`) and follow redirects and meta
    /// refreshes to the page that stays; returns its URL and the page.
    pub async fn follow(&mut self, url: &Url, from: Option<&Url>) -> (Url, Page) {
        let (mut url, mut from) = (url.clone(), from.cloned());
        for _ in 0..10 {
            let page = self.send(&url, None, from.as_ref()).await;
            if let Some(location) = page.location.as_deref().filter(|_| page.status.is_redirection()) {
                url = url.join(location).expect("Location");
                continue;
            }
            if let Some(target) = meta_refresh(&page.body) {
                (url, from) = (url.join(&target).expect("refresh URL"), Some(url));
                continue;
            }
            return (url, page);
        }
        panic!("more than 10 redirects from {url}");
    }
}

/// One HTTP/1.1 exchange: status, Location, the Set-Cookie headers, body.
async fn exchange<S>(io: S, request: Request<Full<Bytes>>) -> (StatusCode, Option<String>, Vec<String>, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("handshake");
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("HTTP exchange");
    let set_cookie = response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap_or_default().to_string()).collect();
    let status = response.status();
    let location = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_string);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    driver.abort();
    (status, location, set_cookie, String::from_utf8_lossy(&body).into_owned())
}

/// The URL of a `<meta http-equiv="refresh" content="N;url=...">`.
fn meta_refresh(html: &str) -> Option<String> {
    let at = html.find("http-equiv=\"refresh\"")?;
    let start = html[..at].rfind("<meta")?;
    let tag = &html[start..start + html[start..].find('>')?];
    let content = attribute(tag, "content")?;
    let (_, url) = content.split_once(';')?;
    let url = url.trim();
    let url = url.strip_prefix("url=").or_else(|| url.strip_prefix("URL=")).unwrap_or(url);
    Some(url.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// The first form's action and its inputs (name, value).
pub fn first_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let end = start + html[start..].find("</form>")?;
    let form = &html[start..end];
    let action = attribute(&form[..form.find('>')?], "action")?;
    let inputs = form
        .split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = &tag[..tag.find('>')?];
            Some((attribute(tag, "name")?, attribute(tag, "value").unwrap_or_default()))
        })
        .collect();
    Some((action, inputs))
}

pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let value = &tag[at..at + tag[at..].find('"')?];
    Some(
        value
            .replace("&#x2F;", "/")
            .replace("&#x2f;", "/")
            .replace("&#47;", "/")
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&#x3D;", "=")
            .replace("&#61;", "=")
            .replace("&amp;", "&"),
    )
}

/// A query parameter of `url` ("" when absent).
pub fn query(url: &Url, name: &str) -> String {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
}
