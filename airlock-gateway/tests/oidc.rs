//! Sign-in with OpenID Connect against a real provider: the certified
//! `oidc-provider` npm package (tests/oidc/provider.mjs, installed by
//! scripts/setup.sh under target/oidc-provider) on 127.0.0.1. The test plays
//! the browser: it follows the authorization URL, fills the provider's login
//! and consent pages, and stops at the redirect to the gateway's callback.
//!
//! Without node or the package the tests print "SKIPPED" and pass, unless
//! AIRLOCK_REQUIRE_OIDC=1 (scripts/test.sh), where that is a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_gateway::tokens::Role;
use airlock_gateway::ui::oidc::{OidcClient, OidcError, OidcSettings, PendingSignIn};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::Request;
use hyper_util::rt::TokioIo;
use url::Url;

/// Never contacted: the browser stops at the redirect to it.
const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
const SECRET: &str = "a test-only client secret";

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
struct Provider {
    child: Child,
    _stdin: ChildStdin,
    issuer: String,
    log: PathBuf,
}

impl Provider {
    /// None (after printing SKIPPED) when node or the package is missing.
    fn start(test: &str) -> Option<Provider> {
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
            .args([REDIRECT, SECRET])
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
        let port = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("READY ") {
                        break port.trim().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the provider did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        };
        Some(Provider { child, _stdin: stdin, issuer: format!("http://127.0.0.1:{port}"), log })
    }

    fn settings(&self, client_id: &str, secret: bool) -> OidcSettings {
        let secret_file = secret.then(|| {
            let path = scratch(&format!("{client_id}.secret"));
            std::fs::write(&path, format!("{SECRET}\n")).expect("secret file");
            path
        });
        OidcSettings {
            issuer: self.issuer.clone(),
            client_id: client_id.into(),
            client_secret_file: secret_file,
            redirect_url: REDIRECT.into(),
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

fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(format!("{}-{}-{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// A browser as far as the provider's pages need: cookies (by path), forms,
/// redirects.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<(String, String), String>,
}

struct Page {
    status: hyper::StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    async fn send(&mut self, url: &Url, form: Option<&[(String, String)]>) -> Page {
        let host = url.host_str().expect("host");
        assert!(host.starts_with("127."), "the browser goes to loopback only, not {url}");
        let port = url.port().expect("port");
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let cookie = self
            .cookies
            .iter()
            .filter(|((_, path), _)| url.path().starts_with(path.as_str()))
            .map(|((name, _), value)| format!("{name}={value}"))
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
        let tcp = tokio::net::TcpStream::connect((host, port)).await.expect("connect to the provider");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await.expect("HTTP exchange");
        for value in response.headers().get_all(SET_COOKIE) {
            self.set_cookie(value.to_str().unwrap_or_default());
        }
        let status = response.status();
        let location = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_string);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        driver.abort();
        Page { status, location, body: String::from_utf8_lossy(&body).into_owned() }
    }

    fn set_cookie(&mut self, header: &str) {
        let mut parts = header.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { return };
        let mut path = "/".to_string();
        let mut gone = value.is_empty();
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.to_ascii_lowercase().as_str() {
                "path" => path = val.to_string(),
                "max-age" => gone |= val.starts_with('0') || val.starts_with('-'),
                "expires" => gone |= val.contains("1970"),
                _ => {}
            }
        }
        let key = (name.to_string(), path);
        if gone {
            self.cookies.remove(&key);
        } else {
            self.cookies.insert(key, value.to_string());
        }
    }

    /// From the authorization URL to the redirect to the callback, signing
    /// in as `login`; returns the callback URL (state, code, iss).
    async fn sign_in(&mut self, authorization: &str, login: &str) -> Url {
        let mut url = Url::parse(authorization).expect("authorization URL");
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let page = self.send(&url, form.as_deref()).await;
            if let Some(location) = page.location.filter(|_| page.status.is_redirection()) {
                let next = url.join(&location).expect("Location");
                if next.as_str().starts_with(REDIRECT) {
                    return next;
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
            (url, form) = (url.join(&action).expect("form action"), Some(fields));
        }
        panic!("no redirect to {REDIRECT} after 20 pages");
    }
}

/// The first form's action and its inputs (name, value).
fn first_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
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

fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let value = &tag[at..at + tag[at..].find('"')?];
    Some(value.replace("&#x2F;", "/").replace("&#47;", "/").replace("&quot;", "\"").replace("&amp;", "&"))
}

fn query(url: &Url, name: &str) -> String {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// begin, the browser's round trip as `login`, and the callback's (state, code).
async fn round_trip(client: &OidcClient, login: &str) -> (PendingSignIn, String, String) {
    let (authorization, pending) = client.begin().expect("begin");
    let callback = Browser::default().sign_in(&authorization, login).await;
    (pending, query(&callback, "state"), query(&callback, "code"))
}

#[tokio::test]
async fn alice_signs_in_as_approver_with_her_username() {
    let Some(provider) = Provider::start("alice") else { return };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (authorization, pending) = client.begin().expect("begin");
    let auth = Url::parse(&authorization).expect("URL");
    assert_eq!(query(&auth, "code_challenge_method"), "S256");
    assert_eq!(query(&auth, "scope"), "openid profile email");
    let callback = Browser::default().sign_in(&authorization, "alice").await;
    let (state, code) = (query(&callback, "state"), query(&callback, "code"));
    let me = client.finish(&pending, &state, &code).await.expect("alice signs in");
    assert_eq!((me.username.as_str(), me.subject.as_str(), me.role), ("alice", "alice", Role::Approver));
    assert_eq!((me.issuer.as_str(), me.org.as_str()), (provider.issuer.as_str(), "default"));

    // The issuer must be the provider's own, to the character.
    let mut wrong = provider.settings("gw-confidential", true);
    wrong.issuer.push('/');
    let err = OidcClient::discover(wrong).await.err().expect("issuer with a slash refused").to_string();
    assert!(err.contains("issuer"), "{err}");
}

#[tokio::test]
async fn bob_without_the_role_claim_is_refused_unless_a_default_role_is_set() {
    let Some(provider) = Provider::start("bob") else { return };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "bob").await;
    let err = client.finish(&pending, &state, &code).await.expect_err("bob has no role");
    assert!(matches!(err, OidcError::NoRole { .. }), "{err}");
    assert!(err.to_string().contains("\"airlock_role\""), "{err}");

    let mut settings = provider.settings("gw-confidential", true);
    settings.default_role = Some("viewer".into());
    settings.org = Some("acme".into());
    let client = OidcClient::discover(settings).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "bob").await;
    let bob = client.finish(&pending, &state, &code).await.expect("bob as viewer");
    assert_eq!((bob.username.as_str(), bob.role, bob.org.as_str()), ("bob", Role::Viewer, "acme"));
}

#[tokio::test]
async fn a_wrong_state_and_a_reused_code_are_refused() {
    let Some(provider) = Provider::start("replay") else { return };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let err = client.finish(&pending, "not-the-state", &code).await.expect_err("wrong state");
    assert!(matches!(err, OidcError::StateMismatch), "{err}");
    client.finish(&pending, &state, &code).await.expect("first use of the code");
    let err = client.finish(&pending, &state, &code).await.expect_err("code used twice");
    assert!(matches!(&err, OidcError::TokenRefused { error, .. } if error == "invalid_grant"), "{err}");
}

#[tokio::test]
async fn another_nonce_an_old_sign_in_and_a_wrong_secret_are_refused() {
    let Some(provider) = Provider::start("nonce") else { return };
    let client = OidcClient::discover(provider.settings("gw-confidential", true)).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let other = PendingSignIn { nonce: "another-nonce".into(), ..pending.clone() };
    let err = client.finish(&other, &state, &code).await.expect_err("nonce");
    assert!(matches!(&err, OidcError::IdToken(why) if why.contains("nonce")), "{err}");

    let (pending, state, code) = round_trip(&client, "alice").await;
    let old = PendingSignIn { created_ns: pending.created_ns - 11 * 60 * 1_000_000_000, ..pending.clone() };
    let err = client.finish(&old, &state, &code).await.expect_err("eleven minutes old");
    assert!(matches!(err, OidcError::Expired), "{err}");

    let settings = provider.settings("gw-confidential", true);
    if let Some(path) = &settings.client_secret_file {
        std::fs::write(path, "not the secret").expect("secret file");
    }
    let client = OidcClient::discover(settings).await.expect("discover");
    let (pending, state, code) = round_trip(&client, "alice").await;
    let err = client.finish(&pending, &state, &code).await.expect_err("wrong secret");
    assert!(matches!(&err, OidcError::TokenRefused { error, .. } if error == "invalid_client"), "{err}");
}

#[tokio::test]
async fn a_public_client_verifies_es256_and_reads_claims_from_userinfo() {
    let Some(provider) = Provider::start("public") else { return };
    let client = OidcClient::discover(provider.settings("gw-public", false)).await.expect("discover");
    // carol: airlock_role ["ops", "sec"] (viewer and admin: admin wins), no preferred_username.
    let (authorization, pending) = client.begin().expect("begin");
    let callback = Browser::default().sign_in(&authorization, "carol").await;
    let carol = client.finish_callback(&pending, callback.query().unwrap_or("")).await.expect("carol signs in");
    assert_eq!((carol.username.as_str(), carol.role), ("carol@example.test", Role::Admin));

    // An error the provider sends back is reported with its description.
    let (_, pending) = client.begin().expect("begin");
    let query = format!("error=access_denied&error_description=the+user+said+no&state={}", pending.state);
    let err = client.finish_callback(&pending, &query).await.expect_err("denied");
    assert!(err.to_string().contains("access_denied") && err.to_string().contains("the user said no"), "{err}");
}
