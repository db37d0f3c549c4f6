//! The queue between the event thread and the learning thread
//! ([`super::learn_ops`]): bounded, and the event thread never waits on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

use crate::policy::dir_names::DirNameCache;

/// Execs waiting to be fingerprinted; more are dropped (and counted).
pub const LEARN_QUEUE: usize = 256;

/// An exec whose file carries a protected program's name.
pub struct LearnJob {
    pub program: String,
    pub executable: String,
    pub pid: u32,
}

/// The event thread's side of the learning queue.
pub struct LearnQueue {
    tx: SyncSender<LearnJob>,
    /// Jobs dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Execs not queued because the kernel already knew their content as their name.
    pub already_known: AtomicU64,
    /// The protected names found in the directories of launching sessions' PATHs.
    pub path_dirs: Mutex<DirNameCache>,
}

impl LearnQueue {
    pub fn new() -> (LearnQueue, Receiver<LearnJob>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(LEARN_QUEUE);
        (LearnQueue { tx, dropped: AtomicU64::new(0), already_known: AtomicU64::new(0), path_dirs: Mutex::default() }, rx)
    }

    /// Never blocks: a full queue drops the job.
    pub fn offer(&self, job: LearnJob) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

