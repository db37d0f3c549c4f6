//! Sign-in with OpenID Connect: the gateway as a relying party of the
//! organisation's identity provider (authorization code flow with PKCE).
//!
//! [`OidcClient::discover`] reads the provider's metadata once;
//! [`OidcClient::begin`] gives the browser's redirect and a [`PendingSignIn`]
//! for the caller to keep (in a cookie or a server-side session);
//! [`OidcClient::finish`] (or [`OidcClient::finish_callback`] with the raw
//! callback query) redeems the code, checks the ID token and maps the role
//! claim to an Airlock role. The caller then makes its own session.

mod claims;
mod http;
mod id_token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::tokens::Role;
use claims::{claim, claim_values, map_role};
use http::HttpClient;
use id_token::{parse_jwks, Jwks};

/// A sign-in not finished within this long is refused: the user waited at
/// the provider longer than any login takes, or the pending state is replayed.
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(600);
/// Clock difference tolerated between the gateway and the provider.
const LEEWAY_S: u64 = 60;
fn default_username_claim() -> String {
    "preferred_username".to_string()
}

/// The `[ui.oidc]` table of gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// `https://...`; `http://` only on loopback (tests).
    pub issuer: String,
    pub client_id: String,
    /// A confidential client's secret (client_secret_basic); none: a public
    /// client, protected by PKCE alone.
    pub client_secret_file: Option<PathBuf>,
    pub redirect_url: String,
    /// Beyond `openid`, which is always asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim whose value (a string or an array of strings) decides the
    /// role; a dotted name reaches into objects (`realm_access.roles`).
    pub role_claim: String,
    /// Claim value → `viewer`, `approver` or `admin`; the highest matching wins.
    pub roles: BTreeMap<String, String>,
    /// None: a user with no matching claim value is refused.
    pub default_role: Option<String>,
    /// Missing from the user's claims: `email`, then `sub`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The gateway org users sign in to (`default` when unset).
    pub org: Option<String>,
    /// An extra root CA for the issuer's TLS.
    pub ca_file: Option<PathBuf>,
}

/// What the browser's round trip must bring back to; kept by the caller
/// between [`OidcClient::begin`] and [`OidcClient::finish`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingSignIn {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
    pub created_ns: i64,
}

/// A user the provider vouched for, with the role the claims map to.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    pub issuer: String,
    pub subject: String,
    pub username: String,
    pub role: Role,
    pub org: String,
}

/// Why a sign-in was refused. Each is meant for the gateway's log and, in
/// short, for the user's error page.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the sign-in expired or is not from this browser (no pending sign-in, or older than {} minutes): start again", PENDING_MAX_AGE.as_secs() / 60)]
    Expired,
    #[error("state mismatch: the callback does not belong to the sign-in this browser started")]
    StateMismatch,
    #[error("the callback names issuer {got:?}, not {expected:?}")]
    IssuerMismatch { expected: String, got: String },
    #[error("the provider refused the sign-in: {error}{}", describe(.description))]
    Provider { error: String, description: Option<String> },
    #[error("the callback has no authorization code")]
    NoCode,
    #[error("the token endpoint refused the code: {error}{}", describe(.description))]
    TokenRefused { error: String, description: Option<String> },
    #[error("the ID token is invalid: {0}")]
    IdToken(String),
    #[error("no role for this user: claim {claim:?} {}, and none is mapped in [ui.oidc.roles] (no default_role set)", seen(.values))]
    NoRole { claim: String, values: Vec<String> },
    #[error("talking to the provider: {0:#}")]
    Http(anyhow::Error),
}

fn describe(description: &Option<String>) -> String {
    description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
}

fn seen(values: &[String]) -> String {
    if values.is_empty() {
        "is absent or empty".to_string()
    } else {
        format!("has {values:?}")
    }
}

/// The part of the discovery document used.
#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}


pub struct OidcClient {
    settings: OidcSettings,
    secret: Option<String>,
    roles: Vec<(String, Role)>,
    default_role: Option<Role>,
    authorization: Url,
    token: Url,
    jwks_uri: Url,
    userinfo: Option<Url>,
    http: HttpClient,
    jwks: Mutex<Jwks>,
}

/// `https`, or `http` to a loopback host (a provider run by a test).
fn endpoint(text: &str, what: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{what} {text:?} is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => bail!("{what} {text:?} must be https:// (http:// only on a loopback address)"),
    }
}

/// What [`OidcSettings::check`] makes of the settings.
struct Checked {
    roles: Vec<(String, Role)>,
    default_role: Option<Role>,
    secret: Option<String>,
}

impl OidcSettings {
    /// Checks the settings; parses the roles and reads the client secret.
    fn check(&self) -> anyhow::Result<Checked> {
        endpoint(&self.issuer, "[ui.oidc] issuer")?;
        Url::parse(&self.redirect_url).with_context(|| format!("[ui.oidc] redirect_url {:?} is not a URL", self.redirect_url))?;
        if self.client_id.is_empty() || self.role_claim.is_empty() || self.username_claim.is_empty() {
            bail!("[ui.oidc] client_id, role_claim and username_claim must not be empty");
        }
        let roles = self
            .roles
            .iter()
            .map(|(value, role)| Ok((value.clone(), Role::parse(role).with_context(|| format!("[ui.oidc.roles] {value:?}"))?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if roles.is_empty() && self.default_role.is_none() {
            bail!("[ui.oidc] maps no claim value in roles and has no default_role: nobody could sign in");
        }
        let default_role = self.default_role.as_deref().map(Role::parse).transpose().context("[ui.oidc] default_role")?;
        let secret = match &self.client_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("[ui.oidc] client_secret_file {}", path.display()))?;
                let secret = text.trim().to_string();
                if secret.is_empty() {
                    bail!("[ui.oidc] client_secret_file {} is empty", path.display());
                }
                Some(secret)
            }
            None => None,
        };
        Ok(Checked { roles, default_role, secret })
    }
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636's S256: BASE64URL(SHA256(ASCII(code_verifier))).
fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn read_ca_file(path: &std::path::Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("[ui.oidc] ca_file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("[ui.oidc] ca_file {}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("[ui.oidc] ca_file {} holds no certificate", path.display());
    }
    Ok(certs)
}

fn pending_expired(pending: &PendingSignIn, now_ns: i64) -> bool {
    let age = now_ns.saturating_sub(pending.created_ns);
    // A creation time in the future (beyond the leeway) is not ours either.
    age > PENDING_MAX_AGE.as_nanos() as i64 || age < -(LEEWAY_S as i64 * 1_000_000_000)
}

/// The token endpoint's answer, success or error (RFC 6749 5.1 and 5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OidcClient {
    /// Reads `{issuer}/.well-known/openid-configuration` and the JWKS. The
    /// document's issuer must be the configured one exactly.
    pub async fn discover(settings: OidcSettings) -> anyhow::Result<OidcClient> {
        let Checked { roles, default_role, secret } = settings.check()?;
        let extra = match &settings.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let http = HttpClient::new(extra)?;
        let well_known = endpoint(
            &format!("{}/.well-known/openid-configuration", settings.issuer.trim_end_matches('/')),
            "the discovery document",
        )?;
        let metadata: Metadata = http.get(&well_known, None).await?.json("OpenID Connect discovery")?;
        if metadata.issuer != settings.issuer {
            bail!(
                "the provider at {well_known} says its issuer is {:?}, not {:?} as configured: set [ui.oidc] issuer to exactly its value",
                metadata.issuer,
                settings.issuer
            );
        }
        if let Some(methods) = &metadata.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                bail!("the provider does not support PKCE with S256 (code_challenge_methods_supported: {methods:?})");
            }
        }
        let authorization = endpoint(&metadata.authorization_endpoint, "authorization_endpoint")?;
        let token = endpoint(&metadata.token_endpoint, "token_endpoint")?;
        let jwks_uri = endpoint(&metadata.jwks_uri, "jwks_uri")?;
        let userinfo = metadata.userinfo_endpoint.as_deref().map(|u| endpoint(u, "userinfo_endpoint")).transpose()?;
        let jwks_doc: Value = http.get(&jwks_uri, None).await?.json("the provider's JWKS")?;
        let keys = parse_jwks(&jwks_doc);
        if keys.is_empty() {
            bail!("the provider's JWKS ({jwks_uri}) has no signing key the gateway can use");
        }
        Ok(OidcClient {
            settings,
            secret,
            roles,
            default_role,
            authorization,
            token,
            jwks_uri,
            userinfo,
            http,
            jwks: Mutex::new(Jwks { keys, fetched: Instant::now() }),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The URL to send the browser to, and what to keep until it comes back.
    pub fn begin(&self) -> anyhow::Result<(String, PendingSignIn)> {
        let pending = PendingSignIn {
            state: random_token()?,
            nonce: random_token()?,
            code_verifier: random_token()?,
            created_ns: crate::now_ns(),
        };
        let mut scopes = vec!["openid".to_string()];
        scopes.extend(self.settings.scopes.iter().filter(|s| s.as_str() != "openid").cloned());
        let mut url = self.authorization.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_url)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &code_challenge(&pending.code_verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), pending))
    }

    /// [`finish`](Self::finish) from the callback's raw query string: an
    /// error the provider sent back is reported as such, and an `iss`
    /// parameter (RFC 9207) must name this provider.
    pub async fn finish_callback(&self, pending: &PendingSignIn, query: &str) -> Result<OidcIdentity, OidcError> {
        let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let state = params.get("state").map(String::as_str).unwrap_or("");
        if pending_expired(pending, crate::now_ns()) {
            return Err(OidcError::Expired);
        }
        if state != pending.state {
            return Err(OidcError::StateMismatch);
        }
        if let Some(iss) = params.get("iss") {
            if *iss != self.settings.issuer {
                return Err(OidcError::IssuerMismatch { expected: self.settings.issuer.clone(), got: iss.clone() });
            }
        }
        if let Some(error) = params.get("error") {
            return Err(OidcError::Provider { error: error.clone(), description: params.get("error_description").cloned() });
        }
        let code = params.get("code").filter(|c| !c.is_empty()).ok_or(OidcError::NoCode)?;
        self.finish(pending, state, code).await
    }

    /// Redeems the code and checks the ID token it brings.
    pub async fn finish(&self, pending: &PendingSignIn, returned_state: &str, code: &str) -> Result<OidcIdentity, OidcError> {
        if pending_expired(pending, crate::now_ns()) {
            return Err(OidcError::Expired);
        }
        // The state is no secret from the browser that carries it (it ties
        // the callback to this sign-in), so a plain comparison is enough.
        if pending.state.is_empty() || returned_state != pending.state {
            return Err(OidcError::StateMismatch);
        }
        if code.is_empty() {
            return Err(OidcError::NoCode);
        }
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.settings.redirect_url.as_str()),
            ("code_verifier", pending.code_verifier.as_str()),
        ];
        let basic = match &self.secret {
            Some(secret) => Some((self.settings.client_id.as_str(), secret.as_str())),
            None => {
                form.push(("client_id", self.settings.client_id.as_str()));
                None
            }
        };
        let answer = self.http.post_form(&self.token, &form, basic).await.map_err(OidcError::Http)?;
        let parsed: Option<TokenAnswer> = serde_json::from_slice(&answer.body).ok();
        let tokens = match parsed {
            Some(TokenAnswer { error: Some(error), error_description, .. }) => {
                return Err(OidcError::TokenRefused { error, description: error_description })
            }
            Some(tokens) if answer.status.is_success() => tokens,
            _ => {
                return Err(OidcError::TokenRefused {
                    error: format!("HTTP {}", answer.status),
                    description: Some(answer.snippet()).filter(|s| !s.is_empty()),
                })
            }
        };
        let id_token = tokens.id_token.ok_or_else(|| OidcError::IdToken("the token endpoint returned none".into()))?;
        let mut claims = self.verify(&id_token, &pending.nonce).await?;
        self.merge_userinfo(&mut claims, tokens.access_token.as_deref()).await?;
        self.identity(&claims)
    }

    /// Providers that follow the spec strictly send the profile claims from
    /// userinfo only: fetch them when the role or username claim is missing.
    async fn merge_userinfo(&self, claims: &mut Map<String, Value>, access_token: Option<&str>) -> Result<(), OidcError> {
        let wanted = [self.settings.role_claim.as_str(), self.settings.username_claim.as_str()];
        if wanted.iter().all(|name| claim(claims, name).is_some()) {
            return Ok(());
        }
        let (Some(userinfo), Some(token)) = (&self.userinfo, access_token) else {
            return Ok(());
        };
        let info: Map<String, Value> = self
            .http
            .get(userinfo, Some(token))
            .await
            .and_then(|answer| answer.json("the userinfo endpoint"))
            .map_err(OidcError::Http)?;
        // OpenID Connect Core 5.3.2: userinfo about another subject is not to be used.
        if info.get("sub") != claims.get("sub") {
            return Err(OidcError::IdToken("the userinfo endpoint answered for another subject".into()));
        }
        for (name, value) in info {
            claims.entry(name).or_insert(value);
        }
        Ok(())
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<OidcIdentity, OidcError> {
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_string();
        if subject.is_empty() {
            return Err(OidcError::IdToken("sub is empty".into()));
        }
        let username = [self.settings.username_claim.as_str(), "email", "sub"]
            .iter()
            .find_map(|name| claim(claims, name).and_then(Value::as_str).filter(|v| !v.is_empty()))
            .unwrap_or(&subject)
            .to_string();
        let values = claim_values(claim(claims, &self.settings.role_claim));
        let role = map_role(&self.roles, self.default_role, &self.settings.role_claim, &values)?;
        Ok(OidcIdentity {
            issuer: self.settings.issuer.clone(),
            subject,
            username,
            role,
            org: self.settings.org.clone().unwrap_or_else(|| "default".to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn issuer_must_be_https_outside_loopback() {
        assert!(endpoint("https://idp.example", "issuer").is_ok());
        assert!(endpoint("http://127.0.0.1:8080", "issuer").is_ok());
        assert!(endpoint("http://127.9.9.9", "issuer").is_ok());
        assert!(endpoint("http://[::1]:80", "issuer").is_ok());
        assert!(endpoint("http://localhost:80", "issuer").is_ok());
        assert!(endpoint("http://idp.example", "issuer").is_err());
        assert!(endpoint("http://10.0.0.1", "issuer").is_err());
        assert!(endpoint("ftp://idp.example", "issuer").is_err());
    }

    #[test]
    fn pending_sign_ins_expire_after_ten_minutes() {
        let now = 1_800_000_000_000_000_000;
        let pending = |age_s: i64| PendingSignIn {
            state: "s".into(),
            nonce: "n".into(),
            code_verifier: "v".into(),
            created_ns: now - age_s * 1_000_000_000,
        };
        assert!(!pending_expired(&pending(0), now));
        assert!(!pending_expired(&pending(599), now));
        assert!(pending_expired(&pending(601), now));
        assert!(pending_expired(&pending(-3600), now));
    }

    #[test]
    fn settings_are_checked() {
        let toml = r#"
            issuer = "http://127.0.0.1:9"
            client_id = "gw"
            redirect_url = "https://gateway:8443/oidc/callback"
            role_claim = "groups"
            roles = { ops = "viewer", sec = "superuser" }
        "#;
        let settings: OidcSettings = toml::from_str(toml).unwrap();
        assert_eq!(settings.username_claim, "preferred_username");
        let Err(err) = settings.check() else { panic!("an unknown role is accepted") };
        assert!(format!("{err:#}").contains("superuser"), "{err:#}");
        assert!(toml::from_str::<OidcSettings>(&format!("{toml}\nunknown = 1")).is_err());
    }
}
