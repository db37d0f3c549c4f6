//! The live stream sink: decisions as they are made, for `StreamDecisions`
//! followers. Bounded: a follower too slow to keep up is cut off with the
//! count it missed (the API reports it), never a silent gap.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::broadcast;

use super::{Record, Sink};

/// Decisions the stream holds for a slow follower before it is cut off
/// (bounded: the daemon's memory budget is ~30 MB).
pub const LIVE_CAPACITY: usize = 4096;

pub struct LiveSink {
    sender: broadcast::Sender<Arc<Record>>,
}

impl LiveSink {
    pub fn new() -> LiveSink {
        LiveSink { sender: broadcast::channel(LIVE_CAPACITY).0 }
    }

    /// Where followers subscribe.
    pub fn sender(&self) -> broadcast::Sender<Arc<Record>> {
        self.sender.clone()
    }
}

impl Default for LiveSink {
    fn default() -> Self {
        LiveSink::new()
    }
}

impl Sink for LiveSink {
    fn name(&self) -> &'static str {
        "live"
    }

    fn accept(&mut self, record: &Arc<Record>) -> Result<()> {
        if self.sender.receiver_count() > 0 {
            // An error only means the last follower just left.
            let _ = self.sender.send(record.clone());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
