//! Prometheus metrics (`run --metrics-listen ADDR`, GET /metrics): what the
//! daemon already counts, read at each scrape, in the Prometheus text format
//! or OpenMetrics when the scraper asks for it. See docs/metrics.md.
//!
//! [`decisions`] counts every decision by kind and verdict as a pipeline
//! sink; [`agent`] reads everything else from the daemon through
//! [`agent::MetricsSource`] (the kernel's counters, the store, the spool,
//! the policy in force, sessions); [`http`] serves the scrape. Nothing here
//! is on the enforcement path: a scrape only reads.

pub mod agent;
pub mod decisions;
pub mod http;

use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// Every metric name starts with this and `_`.
pub const PREFIX: &str = "airlock";

/// The OpenMetrics text format's media type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The daemon's registry: the decision counts and the daemon's own figures.
pub fn registry(
    source: Arc<dyn agent::MetricsSource>,
    counts: Arc<decisions::DecisionCounts>,
) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(decisions::Collector(counts)));
    registry.register_collector(Box::new(agent::Collector(source)));
    registry
}

/// One scrape: OpenMetrics when the `Accept` header asks for it, else the
/// Prometheus text format (0.0.4); returns the content type and the body.
pub fn exposition(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::new();
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        text::encode(&mut body, registry)?;
        Ok((OPENMETRICS, body))
    } else {
        prometheus_text::encode(&mut body, registry)?;
        Ok((prometheus_text::CONTENT_TYPE, body))
    }
}
