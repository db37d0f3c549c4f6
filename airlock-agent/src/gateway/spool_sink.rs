//! Every decision into the spool, on the event thread: an append to a
//! buffered local file, like the audit trail's line. A full spool drops and
//! counts (its loss marker is written at the next flush); it never blocks.

use std::sync::Arc;

use airlock_spool::{Appended, Spool};
use anyhow::Result;

use crate::pipeline::{Record, Sink};

pub struct SpoolSink {
    spool: Spool,
}

impl SpoolSink {
    pub fn new(spool: Spool) -> SpoolSink {
        SpoolSink { spool }
    }
}

impl Sink for SpoolSink {
    fn name(&self) -> &'static str {
        "gateway spool"
    }

    fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
        match self.spool.append(&record.encoded)? {
            Appended::Written { .. } => {}
            Appended::Dropped => tracing::debug!(id = record.decision.id, "the gateway spool is full: decision counted as lost to the gateway"),
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.spool.flush()
    }
}
