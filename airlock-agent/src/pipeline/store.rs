//! The decision store sink: collects a drain's decisions and hands them to the
//! store's writer thread as one batch (one transaction), never waiting on it.

use std::sync::Arc;

use airlock_store::{Row, Store, MAX_BATCH};
use anyhow::Result;

use super::{Record, Sink};

pub struct StoreSink {
    store: Arc<Store>,
    batch: Vec<Row>,
}

impl StoreSink {
    pub fn new(store: Arc<Store>) -> StoreSink {
        StoreSink { store, batch: Vec::new() }
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
        self.batch.push(Row::new(&record.decision, record.encoded.clone()));
        if self.batch.len() >= MAX_BATCH {
            // A long drain must not hold all of it in memory.
            self.store.submit(std::mem::take(&mut self.batch));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.store.submit(std::mem::take(&mut self.batch));
        Ok(())
    }
}
