//! Decisions to sinks. Every decision (from the kernel, or recorded by the
//! daemon: a revocation, a loss marker) is emitted here once: it gets its id,
//! is encoded once, and the same record goes to every [`Sink`] in turn: the
//! audit trail, the decision store, the live stream, the gateway's shipper
//! when there is one, and the SIEM export when it is asked for.

pub mod audit;
pub mod export;
pub mod live;
pub mod store;

use std::sync::Arc;

use airlock_api::v1::Decision;
use anyhow::Result;
use bytes::Bytes;
use prost::Message;

/// One decision, as every sink receives it: the record and its protobuf
/// encoding, made once for all of them.
#[derive(Debug)]
pub struct Record {
    pub decision: Decision,
    /// Shared, not copied, by the sinks that keep it past the call (the store's queue).
    pub encoded: Bytes,
}

impl Record {
    pub fn new(decision: Decision) -> Record {
        let encoded = Bytes::from(decision.encode_to_vec());
        Record { decision, encoded }
    }
}

/// Where decisions go. A sink must never block the event thread on anything
/// slower than a local file write: a slow consumer queues (bounded) or drops
/// and counts, and enforcement never waits for it.
pub trait Sink: Send {
    /// A short name for logs ("audit", "store", "live").
    fn name(&self) -> &'static str;
    fn accept(&mut self, record: &Arc<Record>) -> Result<()>;
    /// The end of a drain: make what was accepted visible (flush a file, hand a batch over).
    fn flush(&mut self) -> Result<()>;
}

/// The sinks, in order, and the id sequence.
pub struct Pipeline {
    sinks: Vec<Box<dyn Sink>>,
    next_id: u64,
}

impl Pipeline {
    /// `next_id`: the id the next decision gets (ids only grow, across restarts too).
    pub fn new(sinks: Vec<Box<dyn Sink>>, next_id: u64) -> Pipeline {
        Pipeline { sinks, next_id: next_id.max(1) }
    }

    /// The id the next decision gets: every lower one was emitted.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Gives `decision` its id and hands it to every sink.
    pub fn emit(&mut self, mut decision: Decision) -> Arc<Record> {
        decision.id = self.next_id;
        self.next_id += 1;
        let record = Arc::new(Record::new(decision));
        for sink in &mut self.sinks {
            if let Err(e) = sink.accept(&record) {
                tracing::error!(sink = sink.name(), id = record.decision.id, "{e:#}");
            }
        }
        record
    }

    pub fn flush(&mut self) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush() {
                tracing::error!(sink = sink.name(), "{e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Collect(Arc<Mutex<Vec<Arc<Record>>>>, &'static str);

    impl Sink for Collect {
        fn name(&self) -> &'static str {
            self.1
        }
        fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
            self.0.lock().unwrap().push(record.clone());
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_sink_gets_the_same_record_with_a_growing_id() {
        let (a, b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let mut p = Pipeline::new(vec![Box::new(Collect(a.clone(), "a")), Box::new(Collect(b.clone(), "b"))], 41);
        let first = p.emit(Decision { kind: "exec".into(), ..Default::default() });
        let second = p.emit(Decision::default());
        assert_eq!((first.decision.id, second.decision.id), (41, 42));
        let a = a.lock().unwrap();
        let b = b.lock().unwrap();
        assert!(Arc::ptr_eq(&a[0], &b[0]), "one record, shared, not a copy per sink");
        assert_eq!(Decision::decode(a[0].encoded.as_ref()).unwrap(), a[0].decision);
    }
}
