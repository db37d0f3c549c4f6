//! One delivery to one destination: attempts, backoff between them, counts
//! and logs. Shared by the webhook and email channels so that both retry and
//! count the same way.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::stats::Counters;

/// No wait between attempts is longer than this, whatever the doubling or a
/// server's Retry-After says.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub attempt_timeout: Duration,
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    Delivered,
    /// Worth another try (connection refused, timeout, HTTP 5xx or 429, a
    /// transient SMTP reply); `after` is the server's Retry-After, if any.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Another try would get the same answer (HTTP 4xx, a permanent SMTP
    /// reply, a server lacking what the config requires).
    Fail(String),
}

/// The wait before retry number `retry` (1 for the first retry): the initial
/// backoff doubled per retry, capped, plus up to a tenth of it as jitter so
/// that notifiers restarted together do not retry in lockstep.
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let doubling = 2u32.saturating_pow(retry.saturating_sub(1));
    let base = policy
        .initial_backoff
        .saturating_mul(doubling)
        .min(MAX_BACKOFF);
    let jitter_range = base.as_millis() as u64 / 10;
    let jitter = if jitter_range == 0 {
        0
    } else {
        random_u64() % (jitter_range + 1)
    };
    (base + Duration::from_millis(jitter)).min(MAX_BACKOFF)
}

/// Randomness good enough for jitter without a dependency: std seeds every
/// RandomState from the OS and hashes with SipHash.
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Runs `attempt` until it delivers, fails for good, or `max_attempts` are
/// used up; each attempt is cut off at the policy's timeout. Counts into
/// `counters` and logs every failure with the channel and destination.
pub(crate) async fn deliver<F, Fut>(
    channel: &'static str,
    destination: &str,
    delivery_id: &str,
    policy: &RetryPolicy,
    counters: &Counters,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut number = 1;
    loop {
        let outcome = match tokio::time::timeout(policy.attempt_timeout, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => Attempt::Retry {
                error: format!("timed out after {} s", policy.attempt_timeout.as_secs()),
                after: None,
            },
        };
        match outcome {
            Attempt::Delivered => {
                counters.sent();
                tracing::debug!(
                    channel,
                    destination,
                    delivery = delivery_id,
                    attempt = number,
                    "notification delivered"
                );
                return;
            }
            Attempt::Fail(error) => {
                counters.failed();
                tracing::error!(
                    channel,
                    destination,
                    delivery = delivery_id,
                    attempt = number,
                    %error,
                    "notification failed, not retried"
                );
                return;
            }
            Attempt::Retry { error, .. } if number >= policy.max_attempts => {
                counters.failed();
                tracing::error!(
                    channel,
                    destination,
                    delivery = delivery_id,
                    attempts = number,
                    %error,
                    "notification failed, giving up"
                );
                return;
            }
            Attempt::Retry { error, after } => {
                let wait = backoff(policy, number)
                    .max(after.unwrap_or_default())
                    .min(MAX_BACKOFF);
                tracing::warn!(
                    channel,
                    destination,
                    delivery = delivery_id,
                    attempt = number,
                    %error,
                    retry_in_ms = wait.as_millis() as u64,
                    "notification attempt failed, will retry"
                );
                counters.retried();
                tokio::time::sleep(wait).await;
                number += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(initial_ms),
            attempt_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_with_at_most_a_tenth_of_jitter() {
        let p = policy(1000);
        for (retry, base_ms) in [(1, 1000u64), (2, 2000), (3, 4000), (4, 8000), (5, 16000)] {
            for _ in 0..50 {
                let ms = backoff(&p, retry).as_millis() as u64;
                assert!(
                    (base_ms..=base_ms + base_ms / 10).contains(&ms),
                    "retry {retry}: {ms} ms"
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped_at_a_minute() {
        let p = policy(1000);
        assert_eq!(backoff(&p, 7), MAX_BACKOFF);
        assert_eq!(backoff(&p, 40), MAX_BACKOFF);
        assert_eq!(backoff(&policy(u64::MAX / 4), 3), MAX_BACKOFF);
    }
}
