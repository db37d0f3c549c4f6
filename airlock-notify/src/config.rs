//! The notification settings, as read from TOML (a gateway org's
//! `[notify]` table, the agent's config), and their validation.
//!
//! Validation reads every file the settings name (secrets, passwords, CA
//! bundles), so a config that passes is one the notifier can start with; a
//! file that disappears between the two is caught again by
//! [`Notifier::start`](crate::Notifier::start).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use crate::retry::RetryPolicy;
use crate::target::Target;

/// Where approval notifications go. Nothing configured means no notifier
/// thread and a [`Notifier::send`](crate::Notifier::send) that does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub email: Option<EmailConfig>,
}

/// One webhook receiver: every notification is POSTed to it, signed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC key, inline. Exactly one of `secret` and `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the HMAC key; one trailing newline is not part of it.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// PEM certificates trusted for an `https://` URL besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The bound of one attempt: connect, TLS, request and the answer's status.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_seconds: u64,
    /// Attempts in all, the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles on each further one, up to 60 s.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
}

/// Secrets stay out of logs and panics: `{:?}` of a config shows whether a
/// secret is set, never the secret.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("ca_file", &self.ca_file)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff_ms", &self.initial_backoff_ms)
            .finish()
    }
}

/// Whether the SMTP session is upgraded with STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade when the server offers it, else send in clear text.
    #[default]
    Opportunistic,
    /// Upgrade or do not send: a server that does not offer it fails the delivery.
    Required,
    /// Never upgrade.
    Never,
}

/// One SMTP relay; each notification is one message to all of `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// `approvals@example.com` or `Airlock <approvals@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// SMTP AUTH user; needs `password_file` and `starttls = "required"`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the SMTP password; one trailing newline is not part of it.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub starttls: StartTls,
    /// PEM certificates trusted for the server besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The bound of one attempt: the whole SMTP session.
    #[serde(default = "default_email_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
}

fn default_webhook_timeout() -> u64 {
    10
}

// An SMTP session is several round trips, and some relays delay their
// greeting on purpose.
fn default_email_timeout() -> u64 {
    30
}

fn default_max_attempts() -> u32 {
    6
}

fn default_initial_backoff_ms() -> u64 {
    1000
}

fn default_smtp_port() -> u16 {
    25
}

/// A setting that cannot be used, named by its path in the config
/// (`notify.webhooks[0].url`, `notify.email.to`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl NotifyConfig {
    /// Checks every setting and reads every file named, without keeping the
    /// secrets. The first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    /// Whether anything is configured at all.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.email.is_none()
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        let webhooks = self
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| w.resolve(&format!("notify.webhooks[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let email = self
            .email
            .as_ref()
            .map(|e| e.resolve("notify.email"))
            .transpose()?;
        Ok(Resolved { webhooks, email })
    }
}

/// The settings with files read and addresses parsed: what the notifier runs on.
pub(crate) struct Resolved {
    pub webhooks: Vec<ResolvedWebhook>,
    pub email: Option<ResolvedEmail>,
}

pub(crate) struct ResolvedWebhook {
    pub target: Target,
    pub secret: Vec<u8>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub policy: RetryPolicy,
}

pub(crate) struct ResolvedEmail {
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub credentials: Option<(String, String)>,
    pub starttls: StartTls,
    /// The CA file's PEM, already checked to hold certificates.
    pub extra_roots_pem: Option<Vec<u8>>,
    pub policy: RetryPolicy,
}

impl WebhookConfig {
    fn resolve(&self, at: &str) -> Result<ResolvedWebhook, ConfigError> {
        let target =
            Target::parse(&self.url).map_err(|e| ConfigError::new(format!("{at}.url"), e))?;
        let secret = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.secret"),
                    "set either secret or secret_file, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{at}.secret"),
                    "missing: every webhook is signed; set secret or secret_file",
                ))
            }
            (Some(s), None) if s.is_empty() => {
                return Err(ConfigError::new(format!("{at}.secret"), "empty"))
            }
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(path)) => read_secret(path, &format!("{at}.secret_file"))?.into_bytes(),
        };
        let extra_roots = match &self.ca_file {
            Some(path) => read_certificates(path, &format!("{at}.ca_file"))?.1,
            None => Vec::new(),
        };
        if self.ca_file.is_some() && !target.https {
            return Err(ConfigError::new(
                format!("{at}.ca_file"),
                "set for an http:// URL, which has no certificate to check",
            ));
        }
        let policy = retry_policy(
            at,
            self.timeout_seconds,
            self.max_attempts,
            self.initial_backoff_ms,
        )?;
        Ok(ResolvedWebhook {
            target,
            secret,
            extra_roots,
            policy,
        })
    }
}

impl EmailConfig {
    fn resolve(&self, at: &str) -> Result<ResolvedEmail, ConfigError> {
        let host = self.smtp_host.trim();
        if host.is_empty() {
            return Err(ConfigError::new(format!("{at}.smtp_host"), "empty"));
        }
        if host.contains("://") || host.contains(char::is_whitespace) || host.contains('/') {
            return Err(ConfigError::new(
                format!("{at}.smtp_host"),
                format!("{host:?} is not a host name or IP address (the port goes in smtp_port)"),
            ));
        }
        if self.smtp_port == 0 {
            return Err(ConfigError::new(format!("{at}.smtp_port"), "must not be 0"));
        }
        let from = parse_mailbox(&self.from, &format!("{at}.from"))?;
        if self.to.is_empty() {
            return Err(ConfigError::new(format!("{at}.to"), "empty"));
        }
        let to = self
            .to
            .iter()
            .enumerate()
            .map(|(i, a)| parse_mailbox(a, &format!("{at}.to[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = match (&self.username, &self.password_file) {
            (Some(user), Some(path)) => {
                if user.is_empty() {
                    return Err(ConfigError::new(format!("{at}.username"), "empty"));
                }
                // With "opportunistic" a server (or a man in the middle)
                // that does not offer STARTTLS would get the password in
                // clear text.
                if self.starttls != StartTls::Required {
                    return Err(ConfigError::new(
                        format!("{at}.starttls"),
                        "must be \"required\" with a username: else the password can cross \
                         the network in clear text",
                    ));
                }
                let password = read_secret(path, &format!("{at}.password_file"))?;
                Some((user.clone(), password))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{at}.password_file"),
                    "missing: username is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.username"),
                    "missing: password_file is set",
                ))
            }
            (None, None) => None,
        };
        let extra_roots_pem = match &self.ca_file {
            Some(path) => Some(read_certificates(path, &format!("{at}.ca_file"))?.0),
            None => None,
        };
        let policy = retry_policy(
            at,
            self.timeout_seconds,
            self.max_attempts,
            self.initial_backoff_ms,
        )?;
        Ok(ResolvedEmail {
            host: host.to_string(),
            port: self.smtp_port,
            from,
            to,
            credentials,
            starttls: self.starttls,
            extra_roots_pem,
            policy,
        })
    }
}

fn retry_policy(
    at: &str,
    timeout_seconds: u64,
    max_attempts: u32,
    initial_backoff_ms: u64,
) -> Result<RetryPolicy, ConfigError> {
    if timeout_seconds == 0 {
        return Err(ConfigError::new(
            format!("{at}.timeout_seconds"),
            "must be at least 1",
        ));
    }
    // Past a day a "timeout" is a hang; Duration::from_secs on huge values
    // would also overflow the timer's deadline arithmetic.
    if timeout_seconds > 86_400 {
        return Err(ConfigError::new(
            format!("{at}.timeout_seconds"),
            "must be at most 86400",
        ));
    }
    if max_attempts == 0 {
        return Err(ConfigError::new(
            format!("{at}.max_attempts"),
            "must be at least 1",
        ));
    }
    // Zero would retry in a tight loop against a server that is down.
    if initial_backoff_ms == 0 {
        return Err(ConfigError::new(
            format!("{at}.initial_backoff_ms"),
            "must be at least 1",
        ));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(initial_backoff_ms),
        attempt_timeout: Duration::from_secs(timeout_seconds),
    })
}

fn parse_mailbox(address: &str, field: &str) -> Result<Mailbox, ConfigError> {
    Mailbox::from_str(address.trim())
        .map_err(|e| ConfigError::new(field, format!("unparsable address {address:?}: {e}")))
}

/// A secret file's content: files written by `echo` or an editor end in a
/// newline that is not part of the secret.
fn read_secret(path: &Path, field: &str) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))?;
    let secret = raw.strip_suffix('\n').unwrap_or(&raw);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(secret.to_string())
}

/// A PEM bundle: its bytes and its certificates, at least one.
fn read_certificates(
    path: &Path,
    field: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(field, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok((pem, certs))
}

#[cfg(test)]
mod tests;
