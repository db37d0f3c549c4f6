//! Delivery counts. A delivery is one notification to one destination: a
//! notification sent to two webhooks and an email relay is three deliveries.

use std::sync::atomic::{AtomicU64, Ordering};

/// The counts of one channel since the notifier started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Deliveries the destination accepted (HTTP 2xx, SMTP 250).
    pub sent: u64,
    /// Deliveries given up: refused for good, or every attempt used up.
    pub failed: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
}

/// The counts since the notifier started: totals, then per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    /// Notifications not queued because the queue was full (each would have
    /// gone to every destination).
    pub dropped: u64,
    pub webhook: ChannelStats,
    pub email: ChannelStats,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

impl Counters {
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ChannelStats {
        ChannelStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }
}

impl NotifyStats {
    pub(crate) fn new(webhook: ChannelStats, email: ChannelStats, dropped: u64) -> Self {
        NotifyStats {
            sent: webhook.sent + email.sent,
            failed: webhook.failed + email.failed,
            retried: webhook.retried + email.retried,
            dropped,
            webhook,
            email,
        }
    }
}
