//! The export sink (`run --export`): every decision to the SIEM targets
//! (OCSF JSON lines, OTLP logs). It hands the record over to the targets'
//! own threads and never waits: a full queue drops and counts.

use std::sync::Arc;

use airlock_api::v1::Decision;
use airlock_export::{Exportable, Exporter, Item};
use anyhow::Result;

use super::{Record, Sink};

impl Exportable for Record {
    fn decision(&self) -> &Decision {
        &self.decision
    }
}

pub struct ExportSink {
    exporter: Exporter,
}

impl ExportSink {
    pub fn new(exporter: Exporter) -> ExportSink {
        ExportSink { exporter }
    }
}

impl Sink for ExportSink {
    fn name(&self) -> &'static str {
        "export"
    }

    fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
        let item: Item = record.clone();
        self.exporter.offer(&item);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        // The targets' threads write and send as records arrive.
        Ok(())
    }
}

/// The sink for `targets` (None when there are none): every target opened
/// now, so a file that cannot be written refuses the start.
pub fn start(targets: &[airlock_export::Target]) -> Result<Option<ExportSink>> {
    if targets.is_empty() {
        return Ok(None);
    }
    let identity = airlock_export::Identity {
        service_name: "airlock-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        host_name: crate::events::enrich::host_name(),
    };
    Ok(Some(ExportSink::new(Exporter::start(targets, &identity)?)))
}
