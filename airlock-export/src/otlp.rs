//! OCSF events as OTLP logs, over gRPC (`LogsService/Export`) to a collector.
//!
//! OTLP/gRPC rather than OTLP/HTTP: tonic and prost are already the
//! product's RPC stack (one TLS stack, one HTTP/2 client, no new one), and
//! every collector serves both.
//!
//! Each LogRecord's body is the OCSF event's JSON text, byte for byte the
//! line the `ocsf:` file gets: a collector forwards it to a SIEM untouched
//! and it validates against the same schema; a few attributes
//! (`ocsf.class_uid`, `ocsf.activity_id`, `airlock.decision`, ...) let a
//! collector route or filter without parsing the body.
//!
//! Records are batched (up to [`MAX_BATCH`], or what arrived within
//! [`BATCH_DELAY`]). A batch the collector did not take (unreachable,
//! UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is sent again with exponential
//! backoff for up to [`RETRY_WINDOW`] and then dropped and counted; while a
//! batch is retried, new records wait in the bounded queue, and past its
//! capacity they are dropped and counted (see [`crate::Exporter`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::ocsf::{self, Producer};
use crate::target::OtlpEndpoint;
use crate::{Item, Stats};

/// Records in one Export call, at most.
pub const MAX_BATCH: usize = 512;
/// How long a batch waits for more records after its first.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long a batch is retried before it is dropped (and counted).
pub const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// The same while the exporter stops: a stopping daemon does not wait a minute.
pub const STOP_RETRY_WINDOW: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// One Export call (connect included) may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is sending: the OTLP resource.
#[derive(Debug, Clone)]
pub struct ServiceResource {
    pub service_name: String,
    pub service_version: String,
    pub host_name: String,
}

/// The worker: owns its own single-threaded runtime, so the caller (a plain
/// thread, or the gateway's runtime) never waits on the network.
pub(crate) fn run(
    endpoint: OtlpEndpoint,
    resource: ServiceResource,
    producer: Producer,
    mut rx: mpsc::Receiver<Item>,
    stats: Arc<Stats>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the OTLP exporter's runtime")?;
    runtime.block_on(async move {
        let client = client(&endpoint)?;
        let mut exporter = Batches { client, endpoint, resource, producer, stats, logged_drops: crate::DropLog::default() };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let Some(first) = rx.recv().await else { break };
            exporter.push(&first, &mut batch);
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => exporter.push(&item, &mut batch),
                    Ok(None) | Err(_) => break,
                }
            }
            exporter.send(std::mem::take(&mut batch)).await;
            exporter.logged_drops.report(&exporter.stats, &exporter.endpoint.url);
        }
        exporter.logged_drops.report(&exporter.stats, &exporter.endpoint.url);
        Ok(())
    })
}

fn client(endpoint: &OtlpEndpoint) -> Result<LogsServiceClient<Channel>> {
    let mut e = Endpoint::from_shared(endpoint.url.clone())
        .with_context(|| format!("--export otlp:{}: not a URL tonic can connect to", endpoint.url))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if endpoint.tls {
        e = e.tls_config(ClientTlsConfig::new().with_native_roots()).with_context(|| format!("TLS for {}", endpoint.url))?;
    }
    // Lazy: a collector that is down at start is retried like one that went away.
    Ok(LogsServiceClient::new(e.connect_lazy()))
}

struct Batches {
    client: LogsServiceClient<Channel>,
    endpoint: OtlpEndpoint,
    resource: ServiceResource,
    producer: Producer,
    stats: Arc<Stats>,
    logged_drops: crate::DropLog,
}

impl Batches {
    fn push(&self, item: &Item, batch: &mut Vec<LogRecord>) {
        match record(item.decision(), &self.producer) {
            Some(r) => batch.push(r),
            None => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a batch, retrying within the window; counts what was delivered or dropped.
    async fn send(&mut self, batch: Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let request = request(&self.resource, batch);
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self.client.export(request.clone()).await;
            let status = match outcome {
                Ok(response) => {
                    let rejected = response.into_inner().partial_success.map_or(0, |p| p.rejected_log_records.max(0) as u64).min(count);
                    if rejected > 0 {
                        tracing::warn!(collector = %self.endpoint.url, rejected, "the collector rejected OCSF records (partial success); they are dropped");
                        self.stats.dropped_failed.fetch_add(rejected, Ordering::Relaxed);
                    }
                    self.stats.exported.fetch_add(count - rejected, Ordering::Relaxed);
                    if attempts > 1 {
                        tracing::info!(collector = %self.endpoint.url, records = count, attempts, "OTLP export delivered after retries");
                    }
                    return;
                }
                Err(status) => status,
            };
            let window = if self.stats.stopping.load(Ordering::Relaxed) { STOP_RETRY_WINDOW } else { RETRY_WINDOW };
            let retryable = matches!(
                status.code(),
                Code::Unavailable
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::OutOfRange
                    | Code::DataLoss
                    | Code::Unknown
            );
            if !retryable || started.elapsed() + backoff > window {
                tracing::warn!(
                    collector = %self.endpoint.url, records = count, attempts, code = ?status.code(),
                    "OTLP export failed: {}; the batch is dropped (counted)", status.message()
                );
                self.stats.dropped_failed.fetch_add(count, Ordering::Relaxed);
                return;
            }
            if attempts == 1 {
                tracing::warn!(collector = %self.endpoint.url, records = count, code = ?status.code(), "OTLP export failed: {}; retrying for up to {} s", status.message(), window.as_secs());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn string_value(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) })
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue { key: key.to_string(), value, ..Default::default() }
}

fn int_value(i: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::IntValue(i)) })
}

/// The LogRecord of a decision, or None for a kind that is not exported.
pub fn record(d: &airlock_api::v1::Decision, producer: &Producer) -> Option<LogRecord> {
    let event = ocsf::event(d, producer)?;
    let denied = d.decision == airlock_api::decision::DENY;
    let (severity, text) = if denied { (SeverityNumber::Warn, "WARN") } else { (SeverityNumber::Info, "INFO") };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut attributes = vec![
        attribute("ocsf.version", string_value(ocsf::OCSF_VERSION)),
        attribute("ocsf.class_uid", int_value(event["class_uid"].as_i64().unwrap_or_default())),
        attribute("ocsf.activity_id", int_value(event["activity_id"].as_i64().unwrap_or_default())),
        attribute("airlock.kind", string_value(d.kind.clone())),
        attribute("airlock.decision", string_value(d.decision.clone())),
        attribute("airlock.decision_id", int_value(d.id as i64)),
    ];
    if !d.session_id.is_empty() {
        attributes.push(attribute("airlock.session_id", string_value(d.session_id.clone())));
    }
    Some(LogRecord {
        time_unix_nano: d.time_unix_nanos.max(0) as u64,
        observed_time_unix_nano: now,
        severity_number: severity as i32,
        severity_text: text.to_string(),
        body: string_value(event.to_string()),
        attributes,
        ..Default::default()
    })
}

fn request(resource: &ServiceResource, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    let resource = Resource {
        attributes: vec![
            attribute("service.name", string_value(resource.service_name.clone())),
            attribute("service.version", string_value(resource.service_version.clone())),
            attribute("host.name", string_value(resource.host_name.clone())),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope { name: "airlock-export".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs { scope: Some(scope), log_records: records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_api::v1::{decision::Detail, Decision, ExecDetail};

    #[test]
    fn a_record_carries_the_ocsf_line_as_its_body_with_severity_and_time() {
        let producer = Producer { version: "9.9.9".into(), hostname: "h".into() };
        let d = Decision {
            id: 5,
            kind: "exec".into(),
            decision: "deny".into(),
            reason: "rule".into(),
            session_id: "s1".into(),
            time_unix_nanos: 1_700_000_000_123_456_789,
            pid: 10,
            argv: vec!["terraform".into(), "apply".into()],
            detail: Some(Detail::Exec(ExecDetail::default())),
            ..Default::default()
        };
        let r = record(&d, &producer).expect("an exec is exported");
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (SeverityNumber::Warn as i32, "WARN"));
        let Some(any_value::Value::StringValue(body)) = r.body.and_then(|b| b.value) else { panic!("the body is a string") };
        assert_eq!(body, ocsf::event(&d, &producer).unwrap().to_string());
        let class = r.attributes.iter().find(|kv| kv.key == "ocsf.class_uid").and_then(|kv| kv.value.clone()).and_then(|v| v.value);
        assert_eq!(class, Some(any_value::Value::IntValue(1007)));
        assert!(record(&Decision { kind: "approval".into(), ..d }, &producer).is_none());
    }

    #[test]
    fn the_request_names_the_service_and_host() {
        let resource = ServiceResource { service_name: "airlock-agent".into(), service_version: "1".into(), host_name: "build-7".into() };
        let req = request(&resource, vec![LogRecord::default()]);
        let attrs = &req.resource_logs[0].resource.as_ref().unwrap().attributes;
        let get = |k: &str| attrs.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value);
        assert_eq!(get("service.name"), Some(any_value::Value::StringValue("airlock-agent".into())));
        assert_eq!(get("host.name"), Some(any_value::Value::StringValue("build-7".into())));
        assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 1);
    }
}
