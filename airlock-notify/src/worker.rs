//! The notifier: a bounded queue in front of one background thread that
//! delivers to every destination.
//!
//! Callers are the agent's synchronous threads and the gateway's tokio
//! tasks, and an approval must never wait on a mail relay: `send` only
//! tries to enqueue. The thread owns a current-thread tokio runtime of its
//! own, so the notifier works the same whether or not the caller runs in a
//! runtime, and a slow destination cannot take the caller's workers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::config::{NotifyConfig, Resolved};
use crate::email::Mailer;
use crate::retry;
use crate::stats::{Counters, NotifyStats};
use crate::webhook::{self, Webhook};
use crate::Notification;

/// Sizes of the notifier's queue and of its concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierOptions {
    /// Notifications waiting for the thread; past this `send` drops.
    pub queue_capacity: usize,
    /// Notifications being delivered at once (each to every destination).
    /// While all are retrying against a dead destination the queue fills,
    /// rather than memory.
    pub max_in_flight: usize,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 1024,
            max_in_flight: 32,
        }
    }
}

/// Sends notifications in the background. Cheap to clone; when the last
/// clone is dropped the thread delivers what is queued and in flight, then
/// ends (a process that exits first loses it: `flush` before exiting).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// None: nothing is configured and `send` does nothing.
    queue: Option<mpsc::Sender<Notification>>,
    shared: Arc<Shared>,
}

/// What the caller's side and the thread both see.
#[derive(Default)]
struct Shared {
    webhook: Counters,
    email: Counters,
    dropped: AtomicU64,
    /// Notifications queued or in flight; `flush` waits for zero.
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, usize> {
        // The count stays meaningful even if a holder panicked.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self) {
        let mut pending = self.pending();
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.idle.notify_all();
        }
    }
}

/// Marks a notification finished however its task ends, a panic included,
/// so that `flush` cannot wait on a notification that is gone.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// Every destination, built from the resolved config.
struct Channels {
    webhooks: Vec<Webhook>,
    mailer: Option<Mailer>,
}

impl Notifier {
    /// Validates the config, reads the secret files and starts the thread
    /// with the default queue sizes. With nothing configured no thread is
    /// started and the notifier does nothing.
    pub fn start(config: NotifyConfig) -> anyhow::Result<Notifier> {
        Notifier::start_with(config, NotifierOptions::default())
    }

    /// [`Notifier::start`] with other queue sizes.
    pub fn start_with(config: NotifyConfig, options: NotifierOptions) -> anyhow::Result<Notifier> {
        let resolved = config.resolve().context("notification settings")?;
        if resolved.webhooks.is_empty() && resolved.email.is_none() {
            return Ok(Notifier::disabled());
        }
        let channels = Arc::new(Channels::new(resolved)?);
        let (queue, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        // Bounded so the shutdown wait can take every slot in one acquire_many.
        let max_in_flight = options.max_in_flight.clamp(1, 65_536);
        // The runtime is made on its own thread: a runtime dropped on the
        // caller's (a failed start inside the gateway's async code) panics.
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("airlock-notify".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = ready.send(Ok(()));
                        runtime.block_on(run(receiver, channels, thread_shared, max_in_flight));
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
            .context("starting the notifier thread")?;
        started
            .recv()
            .context("the notifier thread ended at its start")?
            .context("creating the notifier's runtime")?;
        tracing::info!(
            webhooks = config.webhooks.len(),
            email = config.email.is_some(),
            "approval notifications enabled"
        );
        Ok(Notifier {
            inner: Arc::new(Inner {
                queue: Some(queue),
                shared,
            }),
        })
    }

    /// A notifier that sends nothing, for when notifications are not configured.
    pub fn disabled() -> Notifier {
        Notifier {
            inner: Arc::new(Inner {
                queue: None,
                shared: Arc::default(),
            }),
        }
    }

    /// Whether anything is configured (else `send` does nothing).
    pub fn is_enabled(&self) -> bool {
        self.inner.queue.is_some()
    }

    /// Queues `n` for every destination and returns at once. When the queue
    /// is full the notification is dropped, counted and logged.
    pub fn send(&self, n: Notification) {
        let Some(queue) = &self.inner.queue else {
            return;
        };
        let shared = &self.inner.shared;
        // Counted before it is queued: the thread may finish it before
        // try_send returns.
        *shared.pending() += 1;
        if let Err(e) = queue.try_send(n) {
            shared.finished();
            let (n, reason) = match e {
                mpsc::error::TrySendError::Full(n) => (n, "queue full"),
                mpsc::error::TrySendError::Closed(n) => (n, "notifier thread gone"),
            };
            let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // A flood of drops would otherwise flood the log too: 1st, 2nd, 4th, 8th...
            if dropped.is_power_of_two() {
                tracing::warn!(
                    event = %n.event,
                    delivery = %n.id,
                    dropped_total = dropped,
                    reason,
                    "approval notification dropped"
                );
            }
        }
    }

    pub fn stats(&self) -> NotifyStats {
        let shared = &self.inner.shared;
        NotifyStats::new(
            shared.webhook.snapshot(),
            shared.email.snapshot(),
            shared.dropped.load(Ordering::Relaxed),
        )
    }

    /// Waits until every queued notification has been delivered or given up,
    /// at most `timeout`. True when nothing is left.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let deadline = Instant::now() + timeout;
        let mut pending = shared.pending();
        while *pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = shared
                .idle
                .wait_timeout(pending, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.is_enabled())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Channels {
    fn new(resolved: Resolved) -> anyhow::Result<Channels> {
        let system_roots = if resolved.webhooks.iter().any(|w| w.target.https) {
            system_roots()
        } else {
            Vec::new()
        };
        let webhooks = resolved
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Webhook::new(w, &system_roots).with_context(|| format!("notify.webhooks[{i}]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mailer = resolved
            .email
            .map(Mailer::new)
            .transpose()
            .context("notify.email")?;
        Ok(Channels { webhooks, mailer })
    }

    /// One notification to every destination, concurrently: a dead webhook
    /// must not hold up the email.
    async fn deliver(self: &Arc<Self>, n: Notification, shared: &Arc<Shared>) {
        let n = Arc::new(n);
        let mut tasks = JoinSet::new();
        if !self.webhooks.is_empty() {
            let body = webhook::body(&n, OffsetDateTime::now_utc());
            for i in 0..self.webhooks.len() {
                let (channels, n, body, shared) = (
                    Arc::clone(self),
                    Arc::clone(&n),
                    body.clone(),
                    Arc::clone(shared),
                );
                tasks.spawn(async move {
                    let hook = &channels.webhooks[i];
                    retry::deliver(
                        "webhook",
                        hook.destination(),
                        &n.id,
                        &hook.policy,
                        &shared.webhook,
                        || hook.attempt(&n, &body),
                    )
                    .await;
                });
            }
        }
        if let Some(mailer) = &self.mailer {
            match mailer.message(&n) {
                Ok(message) => {
                    let (channels, n, shared) =
                        (Arc::clone(self), Arc::clone(&n), Arc::clone(shared));
                    tasks.spawn(async move {
                        let Some(mailer) = &channels.mailer else {
                            return;
                        };
                        retry::deliver(
                            "email",
                            mailer.destination(),
                            &n.id,
                            &mailer.policy,
                            &shared.email,
                            || mailer.attempt(&message),
                        )
                        .await;
                    });
                }
                Err(e) => {
                    shared.email.failed();
                    tracing::error!(
                        channel = "email",
                        destination = mailer.destination(),
                        delivery = %n.id,
                        error = %format!("{e:#}"),
                        "notification failed, not retried"
                    );
                }
            }
        }
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "notification delivery task ended abnormally");
            }
        }
    }
}

/// The host's trusted CAs for HTTPS webhooks, read once.
fn system_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    loaded.certs
}

async fn run(
    mut queue: mpsc::Receiver<Notification>,
    channels: Arc<Channels>,
    shared: Arc<Shared>,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        // A slot first: while every slot is busy notifications stay in the
        // bounded queue, where `send` sees it full.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(n) = queue.recv().await else { break };
        let (channels, shared) = (Arc::clone(&channels), Arc::clone(&shared));
        tokio::spawn(async move {
            let _finished = Finished(Arc::clone(&shared));
            channels.deliver(n, &shared).await;
            drop(slot);
        });
    }
    // Every Notifier is dropped: finish what is in flight (bounded by the
    // retry policies) before the runtime goes.
    let _ = slots.acquire_many(max_in_flight as u32).await;
}
