//! The stretch of time a rule looks at, and the decisions in it.

use airlock_api::v1::Decision;

/// `(start_ns, end_ns]`: a decision exactly `window_secs` old is out, one
/// stamped `now` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Window {
    pub fn ending_at(now_ns: i64, length_ns: i64) -> Window {
        Window { start_ns: now_ns.saturating_sub(length_ns), end_ns: now_ns }
    }

    pub fn contains(&self, time_unix_nanos: i64) -> bool {
        time_unix_nanos > self.start_ns && time_unix_nanos <= self.end_ns
    }

    /// The decisions of `sorted` (by time) that fall in the window.
    pub fn select<'a>(&self, sorted: &[&'a Decision]) -> Vec<&'a Decision> {
        let from = sorted.partition_point(|d| d.time_unix_nanos <= self.start_ns);
        let to = sorted.partition_point(|d| d.time_unix_nanos <= self.end_ns);
        sorted.get(from..to).unwrap_or_default().to_vec()
    }

    pub fn secs(&self) -> i64 {
        (self.end_ns.saturating_sub(self.start_ns)) / 1_000_000_000
    }
}

/// The decisions in (time, id) order, so that every rule sees them, and
/// reports its evidence, the same way whatever order the caller had them in.
pub fn sorted_by_time(decisions: &[Decision]) -> Vec<&Decision> {
    let mut sorted: Vec<&Decision> = decisions.iter().collect();
    sorted.sort_by_key(|d| (d.time_unix_nanos, d.id));
    sorted
}
