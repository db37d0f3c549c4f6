//! Prometheus metrics of one gateway replica (`run --metrics-listen ADDR`
//! or `[metrics] listen`; GET /metrics): agents connected here, decisions
//! ingested (new ones, and redeliveries the store already had), ingest
//! batches and group commits, fleet query latencies by operation, and, read
//! from the store at each scrape ([`fleet`]), hosts by the policy version
//! they enforce and approval requests pending. See docs/metrics.md.
//!
//! Counters are this replica's (sum them over replicas); the store's
//! figures are the whole fleet's, the same from every replica.

pub mod fleet;
pub mod http;

use std::time::Instant;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Every metric name starts with this and `_`.
pub const PREFIX: &str = "airlock_gateway";

/// The OpenMetrics text format's media type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The fleet operations whose latency is measured, as the `op` label has them
/// (the Fleet API's method names; the Control Room calls the same ones).
pub const QUERY_OPS: [&str; 7] = [
    "query_decisions",
    "list_hosts",
    "list_sessions",
    "list_approvals",
    "policy_history",
    "list_findings",
    "list_blocks",
];

type OpLabel = [(&'static str, &'static str); 1];
type OrgVersion = [(&'static str, String); 2];
type Org = [(&'static str, String); 1];

fn query_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct GatewayMetrics {
    registry: Registry,
    pub connected_agents: Gauge,
    pub ingested_decisions: Counter,
    pub redelivered_decisions: Counter,
    pub ingest_batches: Counter,
    pub ingest_commits: Counter,
    pub ingest_failed_batches: Counter,
    pub shipping_lost_decisions: Counter,
    query_duration: Family<OpLabel, Histogram, fn() -> Histogram>,
    pub(crate) hosts_by_policy_version: Family<OrgVersion, Gauge>,
    pub(crate) pending_approvals: Family<Org, Gauge>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The gateway's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = GatewayMetrics {
            connected_agents: Gauge::default(),
            ingested_decisions: Counter::default(),
            redelivered_decisions: Counter::default(),
            ingest_batches: Counter::default(),
            ingest_commits: Counter::default(),
            ingest_failed_batches: Counter::default(),
            shipping_lost_decisions: Counter::default(),
            query_duration: Family::new_with_constructor(query_histogram as fn() -> Histogram),
            hosts_by_policy_version: Family::default(),
            pending_approvals: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connected_agents",
            "Agent streams connected to this replica",
            m.connected_agents.clone(),
        );
        registry.register(
            "ingested_decisions",
            "Decisions stored through this replica (each once: redeliveries are not counted)",
            m.ingested_decisions.clone(),
        );
        registry.register(
            "redelivered_decisions",
            "Decisions an agent resent that the store already had (after a reconnect)",
            m.redelivered_decisions.clone(),
        );
        registry.register(
            "ingest_batches",
            "Agents' decision batches committed through this replica",
            m.ingest_batches.clone(),
        );
        registry.register(
            "ingest_commits",
            "Group commits (one transaction for the batches waiting together)",
            m.ingest_commits.clone(),
        );
        registry.register(
            "ingest_failed_batches",
            "Agents' decision batches whose commit failed (the agent resends them)",
            m.ingest_failed_batches.clone(),
        );
        registry.register(
            "shipping_lost_decisions",
            "Decisions agents report their full spool dropped (from their loss markers)",
            m.shipping_lost_decisions.clone(),
        );
        for op in QUERY_OPS {
            // Present from the start, so a histogram exists before the first call.
            let _ = m.query_duration.get_or_create(&[("op", op)]);
        }
        registry.register_with_unit(
            "query_duration",
            "Fleet query latency by operation",
            Unit::Seconds,
            m.query_duration.clone(),
        );
        registry.register("hosts", "Hosts not revoked, by org and the policy version they enforce (0: none yet); read from the store", m.hosts_by_policy_version.clone());
        registry.register(
            "pending_approvals",
            "Approval requests waiting for a verdict, by org; read from the store",
            m.pending_approvals.clone(),
        );
        GatewayMetrics { registry, ..m }
    }

    /// Measures one fleet query until the returned guard drops (errors included).
    pub fn time_query(&self, op: &'static str) -> QueryTimer<'_> {
        QueryTimer {
            family: &self.query_duration,
            op,
            started: Instant::now(),
        }
    }

    /// A scrape: OpenMetrics when `accept` asks for it, else the Prometheus
    /// text format (0.0.4); the content type and the body.
    pub fn exposition(
        &self,
        accept: Option<&str>,
    ) -> Result<(&'static str, String), std::fmt::Error> {
        let mut body = String::new();
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            text::encode(&mut body, &self.registry)?;
            Ok((OPENMETRICS, body))
        } else {
            prometheus_text::encode(&mut body, &self.registry)?;
            Ok((prometheus_text::CONTENT_TYPE, body))
        }
    }
}

pub struct QueryTimer<'a> {
    family: &'a Family<OpLabel, Histogram, fn() -> Histogram>,
    op: &'static str,
    started: Instant,
}

impl Drop for QueryTimer<'_> {
    fn drop(&mut self) {
        self.family
            .get_or_create(&[("op", self.op)])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_query_lands_in_its_histogram_and_names_follow_the_conventions() {
        let m = GatewayMetrics::new();
        drop(m.time_query("list_hosts"));
        m.ingested_decisions.inc_by(3);
        let (kind, body) = m.exposition(None).unwrap();
        assert!(kind.starts_with("text/plain"), "{kind}");
        assert!(
            body.contains("airlock_gateway_query_duration_seconds_count{op=\"list_hosts\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("airlock_gateway_query_duration_seconds_count{op=\"query_decisions\"} 0"),
            "{body}"
        );
        assert!(
            body.contains("airlock_gateway_ingested_decisions_total 3"),
            "{body}"
        );
        let (kind, body) = m
            .exposition(Some("application/openmetrics-text;version=1.0.0"))
            .unwrap();
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
