//! Each subject's usual request count, so that request_rate_spike can tell a
//! busy subject from one that suddenly became busy.
//!
//! The caller keeps a [`Baseline`] between runs (it serializes), passes it to
//! [`crate::detect`], then folds the run's counts in with [`Baseline::record`]:
//! the history a run is judged against never includes the run itself.

use std::collections::BTreeMap;

use airlock_api::v1::Decision;
use serde::{Deserialize, Serialize};

use crate::finding::Subject;
use crate::settings::{RuleName, Settings};
use crate::tally::requests_by_subject;
use crate::window::{sorted_by_time, Window};

/// The weight of a run's count in the moving average: about the last 30 runs
/// (half an hour at one run a minute) make up the usual rate.
pub const SMOOTHING: f64 = 1.0 / 30.0;
/// A history whose average has decayed below this is dropped: the subject
/// has been idle long enough (about two hours of runs from one request a
/// run) that it starts again, and ended sessions do not pile up.
pub const FORGET_BELOW: f64 = 0.01;

/// One subject's history: the moving average of its request count per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub subject: Subject,
    pub mean: f64,
    /// Runs folded in, counting the idle ones since the subject was first seen.
    pub runs: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "BaselineFile", into = "BaselineFile")]
pub struct Baseline {
    histories: BTreeMap<Subject, History>,
}

/// Serialized as a list: JSON map keys must be strings, and a subject is not one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    subjects: Vec<History>,
}

impl From<BaselineFile> for Baseline {
    fn from(file: BaselineFile) -> Self {
        Baseline { histories: file.subjects.into_iter().map(|h| (h.subject.clone(), h)).collect() }
    }
}

impl From<Baseline> for BaselineFile {
    fn from(baseline: Baseline) -> Self {
        BaselineFile { subjects: baseline.histories.into_values().collect() }
    }
}

impl Baseline {
    pub fn new() -> Baseline {
        Baseline::default()
    }

    pub fn history(&self, subject: &Subject) -> Option<&History> {
        self.histories.get(subject)
    }

    pub fn len(&self) -> usize {
        self.histories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histories.is_empty()
    }

    /// Folds one run's counts in: each subject's request count in
    /// request_rate_spike's window ending at `now_ns`, and zero for the known
    /// subjects that made no request.
    pub fn record(&mut self, settings: &Settings, decisions: &[Decision], now_ns: i64) {
        let rule = settings.rule(RuleName::RequestRateSpike);
        let window = Window::ending_at(now_ns, rule.window_ns());
        let in_window = window.select(&sorted_by_time(decisions));
        let counts = requests_by_subject(&in_window);
        self.fold(counts.into_iter().map(|(subject, tally)| (subject, tally.count)).collect());
    }

    /// Folds counts in directly, e.g. counts the caller computed itself.
    pub fn fold(&mut self, counts: BTreeMap<Subject, u64>) {
        for history in self.histories.values_mut() {
            let count = counts.get(&history.subject).copied().unwrap_or(0) as f64;
            history.mean += SMOOTHING * (count - history.mean);
            history.runs = history.runs.saturating_add(1);
        }
        self.histories.retain(|_, history| history.mean >= FORGET_BELOW);
        for (subject, count) in counts {
            self.histories.entry(subject.clone()).or_insert(History { subject, mean: count as f64, runs: 1 });
        }
    }
}
