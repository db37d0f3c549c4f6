//! Approval notifications: when an agent's command waits for a human's
//! approval, and when it is decided, the approvers are told by signed
//! webhooks and by email.
//!
//! ```no_run
//! use airlock_notify::{Notification, Notifier, NotifyConfig};
//! # fn main() -> anyhow::Result<()> {
//! let config: NotifyConfig = toml::from_str(r#"
//!     [[webhooks]]
//!     url = "https://hooks.example.com/airlock"
//!     secret_file = "/etc/airlock/webhook.secret"
//! "#)?;
//! let notifier = Notifier::start(config)?;
//! notifier.send(Notification {
//!     event: "approval.requested".into(),
//!     id: "req-42:approval.requested".into(),
//!     subject: "Approval needed: rm -rf build/".into(),
//!     text: "An agent on host-1 asks to run rm -rf build/.".into(),
//!     payload: serde_json::json!({"request_id": "req-42"}),
//! });
//! # Ok(()) }
//! ```
//!
//! # Delivery
//!
//! [`Notifier::send`] never blocks: it puts the notification on a bounded
//! queue, or drops it (counted in [`NotifyStats::dropped`], logged) when the
//! queue is full. One background thread delivers each notification to every
//! destination concurrently, retrying connection errors, timeouts, HTTP 5xx
//! and 429 and transient SMTP replies with exponential backoff (doubling
//! from `initial_backoff_ms`, at most 60 s, with jitter), up to
//! `max_attempts`. Every failure is logged with `tracing` (the channel, the
//! destination, the delivery id and the error) and counted; none reaches
//! the caller.
//!
//! Delivery is at least once per destination while the process runs: the
//! queue is in memory, so what is queued when the process exits is lost
//! unless [`Notifier::flush`] waited for it. Notifications are delivered
//! concurrently, so their order is not kept: receivers should order by the
//! body's `sent_at` and the request's own state. See [`webhook`] for the
//! request format and how to verify its signature.

pub mod approval;
mod config;
mod email;
mod retry;
mod stats;
mod target;
pub mod webhook;
mod worker;

pub use config::{ConfigError, EmailConfig, NotifyConfig, StartTls, WebhookConfig};
pub use stats::{ChannelStats, NotifyStats};
pub use worker::{Notifier, NotifierOptions};

/// One event for the approvers.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `approval.requested` or `approval.decided`.
    pub event: String,
    /// Stable across retries, so that receivers can drop duplicates, e.g.
    /// `<request id>:<event>`.
    pub id: String,
    /// The email's subject.
    pub subject: String,
    /// The email's plain-text body.
    pub text: String,
    /// The webhook body's `data`.
    pub payload: serde_json::Value,
}
