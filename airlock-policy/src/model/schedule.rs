//! Two values that say when a command may run: a rate limit (`100/minute`)
//! and a time window (`Mon-Fri 09:00-17:00 Europe/Berlin`). Like the other
//! leaf types of the model, each checks itself in its `Deserialize` impl.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, MappedLocalTime, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{Tz, TZ_VARIANTS};
use serde::de::Deserializer;
use serde::Deserialize;

const MINUTE_SECS: u64 = 60;
const HOUR_SECS: u64 = 60 * MINUTE_SECS;
const DAY_SECS: u64 = 24 * HOUR_SECS;
const NANOS_PER_SEC: u64 = 1_000_000_000;

const MAX_RATE_COUNT: u64 = 1_000_000;
const MAX_RATE_PERIOD_DAYS: u64 = 31;
const RATE_EXAMPLE: &str = "e.g. \"100/minute\" or \"10/5m\"";

/// How often something may happen: `count` times per `period_secs`.
///
/// Written `N/UNIT`, UNIT being `second|sec|s`, `minute|min|m`, `hour|h` or
/// `day|d`, or `N/<k><UNIT>` for a period of k units (`10/5m`: ten per five
/// minutes). N is 1..=1_000_000 and the period at most 31 days.
///
/// The text is kept in one canonical spelling (`100/min` becomes
/// `100/minute`, `1/120s` becomes `1/2m`) so that equal rates compare equal.
///
/// # As a GCRA
///
/// A token bucket holding `count` tokens, refilled at `count` per period, is
/// enforced here as the generic cell rate algorithm (see [`gcra_admit`]),
/// which keeps one number per key instead of a token count and a refill time.
/// Let T be [`emission_interval_ns`](Self::emission_interval_ns) (one token's
/// refill time) and TAT the "theoretical arrival time" kept per key. The
/// bucket is full while TAT <= now, and otherwise is short of (TAT - now) / T
/// tokens. A run is admitted when at least one token is left, i.e. when
/// TAT - now <= (count - 1) * T, which is the
/// [`burst_tolerance_ns`](Self::burst_tolerance_ns); taking the token moves
/// TAT one interval on from max(TAT, now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period_secs: u64,
    text: String,
}

impl RateLimit {
    /// The time one token takes to come back: period / count, at least 1 ns.
    pub fn emission_interval_ns(&self) -> u64 {
        let period_ns = self.period_secs.saturating_mul(NANOS_PER_SEC);
        (period_ns / u64::from(self.count.max(1))).max(1)
    }

    /// How far ahead of its schedule a key may run: (count - 1) intervals.
    ///
    /// That is period - interval whenever count divides the period in
    /// nanoseconds. When it does not, the interval is rounded down and this
    /// is smaller than period - interval by the remainder (under `count`
    /// ns): with period - interval, `999999/second` would admit a burst of
    /// 1_000_000, since 1_000_000 intervals of 1000 ns still fit in a second.
    pub fn burst_tolerance_ns(&self) -> u64 {
        let spare_tokens = u64::from(self.count.max(1) - 1);
        self.emission_interval_ns().saturating_mul(spare_tokens)
    }
}

/// One GCRA decision: `Some(new_tat)` when a run arriving at `now_ns` is
/// admitted, `None` when it must be refused (and `tat_ns` stays as it was).
///
/// `tat_ns` is the key's theoretical arrival time as last returned; a key
/// never seen starts at 0 (any value at or before `now_ns` means a full
/// bucket). The clock must be monotonic; see [`RateLimit`] for why this is
/// the token bucket.
pub fn gcra_admit(tat_ns: u64, now_ns: u64, rate: &RateLimit) -> Option<u64> {
    if tat_ns > now_ns.saturating_add(rate.burst_tolerance_ns()) {
        return None;
    }
    Some(tat_ns.max(now_ns).saturating_add(rate.emission_interval_ns()))
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: String| format!("invalid rate {s:?}: {why}");
        let Some((count_text, period_text)) = s.trim().split_once('/') else {
            return Err(invalid(format!(
                "missing the period; write N/second, N/minute, N/hour or N/day ({RATE_EXAMPLE})"
            )));
        };
        let count = parse_rate_count(count_text.trim()).map_err(invalid)?;
        let period_secs = parse_rate_period(period_text.trim()).map_err(invalid)?;
        Ok(RateLimit {
            count,
            period_secs,
            text: canonical_rate_text(count, period_secs),
        })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::deserialize_from_str(deserializer, "a rate such as \"100/minute\"")
    }
}

fn parse_rate_count(text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Err(format!("the count before '/' is missing ({RATE_EXAMPLE})"));
    }
    let not_a_count = || format!("the count {text:?} is not a whole number from 1 to {MAX_RATE_COUNT}");
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_count());
    }
    match text.parse::<u64>() {
        Ok(0) => Err("the count must be at least 1; to forbid a command, block it instead".into()),
        Ok(n) if n <= MAX_RATE_COUNT => u32::try_from(n).map_err(|_| not_a_count()),
        _ => Err(format!("the count {text} is more than {MAX_RATE_COUNT}")),
    }
}

fn parse_rate_period(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err(format!("the period after '/' is missing ({RATE_EXAMPLE})"));
    }
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (multiple_text, unit) = text.split_at(unit_at);
    let unit_secs = match unit {
        "second" | "sec" | "s" => 1,
        "minute" | "min" | "m" => MINUTE_SECS,
        "hour" | "h" => HOUR_SECS,
        "day" | "d" => DAY_SECS,
        "" => return Err(format!("the period {text:?} has no unit ({RATE_EXAMPLE})")),
        _ => return Err(format!("the period must be second, minute, hour or day ({RATE_EXAMPLE})")),
    };
    let multiple = match multiple_text {
        "" => 1,
        digits => digits.parse::<u64>().unwrap_or(u64::MAX),
    };
    if multiple == 0 {
        return Err(format!("the period {text:?} is zero long; use a multiple of at least 1 ({RATE_EXAMPLE})"));
    }
    match multiple.checked_mul(unit_secs) {
        Some(secs) if secs <= MAX_RATE_PERIOD_DAYS * DAY_SECS => Ok(secs),
        _ => Err(format!("the period {text:?} is longer than {MAX_RATE_PERIOD_DAYS} days")),
    }
}

/// The largest unit that divides the period, its full name for one unit.
fn canonical_rate_text(count: u32, period_secs: u64) -> String {
    const UNITS: [(u64, &str, &str); 4] = [
        (DAY_SECS, "day", "d"),
        (HOUR_SECS, "hour", "h"),
        (MINUTE_SECS, "minute", "m"),
        (1, "second", "s"),
    ];
    let (unit_secs, name, short) = UNITS
        .into_iter()
        .find(|(unit_secs, ..)| period_secs.is_multiple_of(*unit_secs))
        .unwrap_or(UNITS[3]);
    match period_secs / unit_secs {
        1 => format!("{count}/{name}"),
        multiple => format!("{count}/{multiple}{short}"),
    }
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAY_NAMES: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const WINDOW_FORM: &str =
    "write \"[DAYS ]HH:MM[:SS]-HH:MM[:SS][ ZONE]\", e.g. \"Mon-Fri 09:00-17:00 Europe/Berlin\"";
/// Far enough to reach the next week's first opening and its close.
const NEXT_CHANGE_SEARCH_DAYS: i64 = 8;

/// Weekdays as bits, Monday first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DaySet(u8);

impl DaySet {
    const EVERY_DAY: DaySet = DaySet(0b111_1111);

    fn contains(self, date: NaiveDate) -> bool {
        self.0 & (1 << date.weekday().num_days_from_monday()) != 0
    }

    fn has(self, day: usize) -> bool {
        self.0 & (1 << (day % 7)) != 0
    }
}

impl fmt::Display for DaySet {
    /// Runs of days in week order, a run over the weekend kept whole
    /// (`Fri-Mon`); two-day runs as lists (`Sat,Sun`), as people write them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        for first in (0..7).filter(|&day| self.has(day) && !self.has(day + 6)) {
            let length = (0..7).take_while(|offset| self.has(first + offset)).count();
            let last = DAY_NAMES[(first + length - 1) % 7];
            match length {
                1 => write!(f, "{separator}{}", DAY_NAMES[first])?,
                2 => write!(f, "{separator}{},{last}", DAY_NAMES[first])?,
                _ => write!(f, "{separator}{}-{last}", DAY_NAMES[first])?,
            }
            separator = ",";
        }
        Ok(())
    }
}

/// Daily hours in a time zone on some days of the week: `[DAYS ]HH:MM[:SS]-HH:MM[:SS][ ZONE]` (seconds mostly for tests and precise cut-overs).
///
/// - DAYS: names or ranges separated by commas (`Mon-Fri`, `Sat,Sun`,
///   `Mon,Wed-Fri`); a range may wrap over the weekend (`Fri-Mon`). Three
///   letters or full names, any case. Omitted: every day.
/// - Times from 00:00 to 24:00; 24:00 only as the end. The start is
///   inclusive, the end exclusive. An end before the start crosses midnight
///   (`22:00-06:00`), and the days name the day the window starts on.
/// - ZONE: an IANA name (`Europe/Berlin`, `America/New_York`, `UTC`), from
///   the tz database compiled into the binary. Omitted: UTC.
///
/// Daylight saving time: a start or end that the clocks skip (spring
/// forward) takes effect at the first instant after the gap, so the window
/// opens as the clocks jump; one that occurs twice (fall back) takes the
/// earlier instant.
///
/// Display gives the canonical text: days as runs in week order (omitted
/// for every day), two-digit times, the zone always written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    days: DaySet,
    /// Seconds after local midnight, 0..86400.
    start_second: u32,
    /// 1..=86400; at or before `start_second` means on the following day.
    end_second: u32,
    zone: Tz,
}

impl TimeWindow {
    /// Whether `at` falls inside one of the window's openings.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Some(local_date) = local_time(self.zone, at).map(|local| local.date()) else {
            return false;
        };
        // The day before holds an opening that crosses midnight; the day
        // after is for clocks set back across midnight.
        (-1..=1)
            .filter_map(|offset| local_date.checked_add_signed(TimeDelta::days(offset)))
            .filter_map(|date| self.opening_on(date))
            .any(|(open, close)| open <= at && at < close)
    }

    /// The first instant strictly after `after` at which [`is_open`](Self::is_open)
    /// changes. A window open at all times (every day 00:00-24:00) never
    /// changes; for it this returns `after` plus 8 days, to be asked again then.
    pub fn next_change(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let open_now = self.is_open(after);
        let local_date = local_time(self.zone, after).map(|local| local.date());
        let mut edges: Vec<DateTime<Utc>> = (-1..=NEXT_CHANGE_SEARCH_DAYS)
            .filter_map(|offset| local_date?.checked_add_signed(TimeDelta::days(offset)))
            .filter_map(|date| self.opening_on(date))
            .flat_map(|(open, close)| [open, close])
            .filter(|&edge| edge > after)
            .collect();
        edges.sort_unstable();
        // An opening that ends as the next begins (Mon,Tue 00:00-24:00) is no change.
        edges
            .into_iter()
            .find(|&edge| self.is_open(edge) != open_now)
            .or_else(|| after.checked_add_signed(TimeDelta::days(NEXT_CHANGE_SEARCH_DAYS)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The opening that starts on local `date`, as [open, close); None on
    /// days the window skips (or past the end of chrono's calendar).
    fn opening_on(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(date) {
            return None;
        }
        let close_date = if self.end_second <= self.start_second {
            date.succ_opt()?
        } else {
            date
        };
        let open = instant_of_local(self.zone, seconds_into(date, self.start_second)?)?;
        let close = instant_of_local(self.zone, seconds_into(close_date, self.end_second)?)?;
        Some((open, close))
    }
}

/// The wall-clock time in `zone` at `instant`; None past the end of chrono's calendar.
fn local_time(zone: Tz, instant: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = zone.offset_from_utc_datetime(&instant.naive_utc()).fix();
    instant.naive_utc().checked_add_offset(offset)
}

/// 24:00 comes out as the next day's midnight.
fn seconds_into(date: NaiveDate, second: u32) -> Option<NaiveDateTime> {
    date.and_hms_opt(0, 0, 0)?.checked_add_signed(TimeDelta::seconds(i64::from(second)))
}

/// A local time as an instant, by the DST rules documented on [`TimeWindow`].
fn instant_of_local(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        MappedLocalTime::Single(instant) => Some(instant.to_utc()),
        MappedLocalTime::Ambiguous(first, second) => Some(first.min(second).to_utc()),
        MappedLocalTime::None => first_instant_reaching(zone, local),
    }
}

/// The first instant whose local time is `local` or later: for a time the
/// clocks skip, the instant they jump.
fn first_instant_reaching(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // No zone's offset (historic local mean times included) comes near two
    // days, so the local time read as UTC, two days either way, brackets it.
    const BRACKET_SECS: i64 = 2 * DAY_SECS as i64;
    let reached = |secs: i64| Some(local_time(zone, DateTime::from_timestamp(secs, 0)?)? >= local);
    let local_as_utc = local.and_utc().timestamp();
    let (mut not_yet, mut already) = (local_as_utc - BRACKET_SECS, local_as_utc + BRACKET_SECS);
    while already - not_yet > 1 {
        let middle = not_yet + (already - not_yet) / 2;
        if reached(middle)? {
            already = middle;
        } else {
            not_yet = middle;
        }
    }
    DateTime::from_timestamp(already, 0)
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != DaySet::EVERY_DAY {
            write!(f, "{} ", self.days)?;
        }
        let clock = |second: u32| match second % 60 {
            0 => format!("{:02}:{:02}", second / 3600, second / 60 % 60),
            s => format!("{:02}:{:02}:{s:02}", second / 3600, second / 60 % 60),
        };
        write!(f, "{}-{} {}", clock(self.start_second), clock(self.end_second), self.zone.name())
    }
}

impl FromStr for TimeWindow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_time_window(s).map_err(|why| format!("invalid time window {s:?}: {why}"))
    }
}

impl<'de> Deserialize<'de> for TimeWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::deserialize_from_str(deserializer, "a time window such as \"Mon-Fri 09:00-17:00 Europe/Berlin\"")
    }
}

fn parse_time_window(s: &str) -> Result<TimeWindow, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() {
        return Err(format!("it is empty; {WINDOW_FORM}"));
    }
    let Some(times_at) = words.iter().position(|word| word.starts_with(|c: char| c.is_ascii_digit())) else {
        return Err(format!("there is no time range; {WINDOW_FORM}"));
    };
    let days = match times_at {
        0 => DaySet::EVERY_DAY,
        _ => parse_days(&words[..times_at].join(" "))?,
    };
    let (start_second, end_second) = parse_time_range(words[times_at])?;
    let zone = match words[times_at + 1..] {
        [] => Tz::UTC,
        [zone] => parse_zone(zone).map_err(|unknown_zone| match parse_days(zone) {
            Ok(_) => format!("the days {zone:?} must come before the time range; {WINDOW_FORM}"),
            Err(_) => unknown_zone,
        })?,
        [zone, extra, ..] => return Err(format!("unexpected {extra:?} after the time zone {zone:?}; {WINDOW_FORM}")),
    };
    Ok(TimeWindow {
        days,
        start_second,
        end_second,
        zone,
    })
}

fn parse_days(list: &str) -> Result<DaySet, String> {
    let mut days = 0u8;
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!("the day list {list:?} has an empty entry"));
        }
        let (first, last) = match entry.split_once('-') {
            Some((first, last)) => (parse_day(first.trim())?, parse_day(last.trim())?),
            None => (parse_day(entry)?, parse_day(entry)?),
        };
        // A range may wrap: Fri-Mon is Fri, Sat, Sun, Mon.
        let length = (last + 7 - first) % 7 + 1;
        for day in first..first + length {
            days |= 1 << (day % 7);
        }
    }
    Ok(DaySet(days))
}

fn parse_day(name: &str) -> Result<usize, String> {
    let lowercase = name.to_ascii_lowercase();
    FULL_DAY_NAMES
        .iter()
        .position(|full| lowercase == *full || (lowercase.len() == 3 && full.starts_with(&lowercase)))
        .ok_or_else(|| format!("unknown day {name:?} (use {})", DAY_NAMES.join(", ")))
}

fn parse_time_range(text: &str) -> Result<(u32, u32), String> {
    let Some((start_text, end_text)) = text.split_once('-') else {
        return Err(format!("bad time range {text:?} (use HH:MM-HH:MM, e.g. \"09:00-17:00\")"));
    };
    let (start, end) = (parse_time(start_text)?, parse_time(end_text)?);
    if start == DAY_SECONDS {
        return Err("24:00 can only end a window, not start it (use 00:00)".into());
    }
    if start == end {
        return Err(format!(
            "the window starts and ends at {start_text}, so it is never open (for a whole day write 00:00-24:00)"
        ));
    }
    Ok((start, end))
}

const DAY_SECONDS: u32 = 24 * 3600;

/// Seconds after midnight, 0..=86400, from `HH:MM` or `HH:MM:SS`.
fn parse_time(text: &str) -> Result<u32, String> {
    let bad_time = || format!("bad time {text:?} (use HH:MM or HH:MM:SS from 00:00 to 24:00)");
    let parts: Vec<&str> = text.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [h, m] => (*h, *m, "00"),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad_time()),
    };
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&hours.len())
        || minutes.len() != 2
        || seconds.len() != 2
        || ![hours, minutes, seconds].into_iter().all(all_digits)
    {
        return Err(bad_time());
    }
    let number = |part: &str| part.parse::<u32>().map_err(|_| bad_time());
    let (hours, minutes, seconds) = (number(hours)?, number(minutes)?, number(seconds)?);
    if minutes > 59 || seconds > 59 || hours > 24 || (hours == 24 && (minutes, seconds) != (0, 0)) {
        return Err(bad_time());
    }
    Ok(hours * 3600 + minutes * 60 + seconds)
}

fn parse_zone(name: &str) -> Result<Tz, String> {
    if let Ok(zone) = name.parse::<Tz>() {
        return Ok(zone);
    }
    let mut message = format!(
        "unknown time zone {name:?} (use an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\")"
    );
    if let Some(zone) = TZ_VARIANTS.iter().find(|zone| zone.name().eq_ignore_ascii_case(name)) {
        message.push_str(&format!("; did you mean {:?}?", zone.name()));
    }
    Err(message)
}

#[cfg(test)]
mod tests;
