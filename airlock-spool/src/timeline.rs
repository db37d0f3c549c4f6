//! When entries were appended, to the second: how long the oldest entry the
//! reader has not had acked yet has waited (the shipping lag).
//!
//! A mark `(seq, at)` is taken at the first append of each second; every
//! entry with a seq at or past a mark and before the next one was appended
//! at or after the mark's instant, and less than a second after it. The age
//! of the oldest unacked entry is then the age of the last mark at or before
//! it, over by less than a second. Marks at or below the watermark are
//! dropped on every ack, so the list holds only the unacked stretch.
//!
//! The list is bounded: past [`MAX_MARKS`] (a day and a half of seconds with
//! appends) no new mark is taken and later entries count from the last mark,
//! so the lag can only read high, never low. Entries recovered from disk on
//! open carry no time; they count from the open.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most this many marks (16 bytes each).
pub(crate) const MAX_MARKS: usize = 1 << 17;
const RESOLUTION: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Timeline {
    marks: VecDeque<(u64, Instant)>,
}

impl Timeline {
    /// Entry `seq` was appended at `now`.
    pub fn appended(&mut self, seq: u64, now: Instant) {
        let fresh = match self.marks.back() {
            Some(&(_, at)) => now.saturating_duration_since(at) >= RESOLUTION,
            None => true,
        };
        if fresh && self.marks.len() < MAX_MARKS {
            self.marks.push_back((seq, now));
        }
    }

    /// Everything up to `acked` was acked: marks no unacked entry counts from go.
    pub fn acked(&mut self, acked: u64) {
        let oldest_unacked = acked.saturating_add(1);
        // The last mark at or before the oldest unacked entry stays: it dates it.
        while self
            .marks
            .get(1)
            .is_some_and(|&(seq, _)| seq <= oldest_unacked)
        {
            self.marks.pop_front();
        }
    }

    /// How long entry `oldest_unacked` has waited, as of `now`; zero when it
    /// does not exist yet (`next_seq` is the seq the next append gets).
    pub fn age(&self, oldest_unacked: u64, next_seq: u64, now: Instant) -> Duration {
        if oldest_unacked >= next_seq {
            return Duration::ZERO;
        }
        let covering = self
            .marks
            .iter()
            .take_while(|&&(seq, _)| seq <= oldest_unacked)
            .last();
        covering
            .map(|&(_, at)| now.saturating_duration_since(at))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_the_oldest_unacked_entrys_to_the_second() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        t.appended(1, t0);
        t.appended(2, t0 + Duration::from_millis(400)); // same second: no mark
        t.appended(3, t0 + Duration::from_secs(2));
        t.appended(4, t0 + Duration::from_secs(5));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(t.age(1, 5, now), Duration::from_secs(10));
        t.acked(1);
        // Entry 2 shares entry 1's mark: appended in the same second.
        assert_eq!(t.age(2, 5, now), Duration::from_secs(10));
        t.acked(2);
        assert_eq!(t.age(3, 5, now), Duration::from_secs(8));
        t.acked(3);
        assert_eq!(t.age(4, 5, now), Duration::from_secs(5));
        t.acked(4);
        assert_eq!(t.age(5, 5, now), Duration::ZERO, "nothing is waiting");
        assert_eq!(
            t.marks.len(),
            1,
            "only the mark of the last entry stays: {:?}",
            t.marks
        );
        t.appended(5, now);
        assert_eq!(
            t.age(5, 6, now + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // An append within a second of a mark counts from it: over by less than a second.
        t.appended(6, now + Duration::from_millis(500));
        t.acked(5);
        assert_eq!(
            t.age(6, 7, now + Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn a_full_timeline_only_reads_high() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        for i in 0..MAX_MARKS as u64 + 10 {
            t.appended(i + 1, t0 + Duration::from_secs(i));
        }
        assert_eq!(t.marks.len(), MAX_MARKS);
        let last = MAX_MARKS as u64 + 10;
        let now = t0 + Duration::from_secs(last);
        // The last entries count from the last mark, older than they are.
        assert!(t.age(last, last + 1, now) > Duration::from_secs(1));
    }
}
