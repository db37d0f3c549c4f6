use std::collections::BTreeMap;

use super::*;

const SECOND_NS: u64 = 1_000_000_000;

/// An instant written as RFC 3339 (`2026-01-05T09:00:00Z`).
fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap_or_else(|e| panic!("test instant {text:?}: {e}"))
}

fn rate(text: &str) -> RateLimit {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn window(text: &str) -> TimeWindow {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// `(instant, is_open)` pairs checked against one window.
fn assert_open_at(window_text: &str, expected: &[(&str, bool)]) {
    let window = window(window_text);
    for &(instant, open) in expected {
        assert_eq!(window.is_open(at(instant)), open, "{window_text} at {instant}");
    }
}

/// The changes after `from`, each found from the one before.
fn changes(window_text: &str, from: &str, count: usize) -> Vec<String> {
    let window = window(window_text);
    let mut after = at(from);
    (0..count)
        .map(|_| {
            after = window.next_change(after);
            after.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
        .collect()
}

#[test]
fn rates_parse_into_count_and_period_with_canonical_text() {
    let cases = [
        ("100/minute", 100, 60, "100/minute"),
        ("7/min", 7, 60, "7/minute"),
        ("3/m", 3, 60, "3/minute"),
        ("5/second", 5, 1, "5/second"),
        ("5/sec", 5, 1, "5/second"),
        ("5/s", 5, 1, "5/second"),
        ("1000/hour", 1000, 3600, "1000/hour"),
        ("2/h", 2, 3600, "2/hour"),
        ("10/day", 10, 86_400, "10/day"),
        ("1/d", 1, 86_400, "1/day"),
        ("10/5m", 10, 300, "10/5m"),
        ("1/120s", 1, 120, "1/2m"),
        ("1/60s", 1, 60, "1/minute"),
        ("5/24h", 5, 86_400, "5/day"),
        ("1/90s", 1, 90, "1/90s"),
        ("4/31d", 4, 31 * 86_400, "4/31d"),
        ("1000000/second", 1_000_000, 1, "1000000/second"),
        ("  100 / minute ", 100, 60, "100/minute"),
    ];
    for (text, count, period_secs, canonical) in cases {
        let parsed = rate(text);
        assert_eq!((parsed.count, parsed.period_secs), (count, period_secs), "{text}");
        assert_eq!(parsed.to_string(), canonical, "{text}");
        assert_eq!(rate(canonical), parsed, "{text} round trip");
    }
}

#[test]
fn bad_rates_say_what_is_wrong() {
    let cases = [
        ("100/fortnight", "the period must be second, minute, hour or day (e.g. \"100/minute\""),
        ("100/Minute", "the period must be second, minute, hour or day"),
        ("0/minute", "the count must be at least 1"),
        ("-5/minute", "the count \"-5\" is not a whole number from 1 to 1000000"),
        ("1.5/minute", "the count \"1.5\" is not a whole number"),
        ("abc/minute", "the count \"abc\" is not a whole number"),
        ("1000001/second", "the count 1000001 is more than 1000000"),
        ("99999999999999999999/second", "is more than 1000000"),
        ("100", "missing the period; write N/second, N/minute, N/hour or N/day"),
        ("junk", "missing the period"),
        ("", "missing the period"),
        ("100/", "the period after '/' is missing"),
        ("/minute", "the count before '/' is missing"),
        ("100/5", "the period \"5\" has no unit"),
        ("10/0m", "the period \"0m\" is zero long"),
        ("1/32d", "the period \"32d\" is longer than 31 days"),
        ("1/99999999999999999999d", "is longer than 31 days"),
        ("1/2/minute", "the period must be second, minute, hour or day"),
    ];
    for (text, expected) in cases {
        let error = text.parse::<RateLimit>().expect_err(text);
        assert!(error.starts_with(&format!("invalid rate {text:?}: ")), "{error}");
        assert!(error.contains(expected), "{text}: {error}");
    }
    assert_eq!(
        "100/fortnight".parse::<RateLimit>(),
        Err("invalid rate \"100/fortnight\": the period must be second, minute, hour or day \
             (e.g. \"100/minute\" or \"10/5m\")"
            .to_owned())
    );
}

#[test]
fn emission_interval_and_burst_tolerance_split_the_period() {
    let cases = [
        ("5/minute", 12 * SECOND_NS, 48 * SECOND_NS),
        ("1000/hour", 3_600_000_000, 3_596_400_000_000),
        ("1/day", 86_400 * SECOND_NS, 0),
        ("10/5m", 30 * SECOND_NS, 270 * SECOND_NS),
        // 1e9 / 3 rounds down; the tolerance is two intervals, not 1e9 - interval.
        ("3/second", 333_333_333, 666_666_666),
        ("1000000/second", 1_000, 999_999_000),
    ];
    for (text, interval, tolerance) in cases {
        let parsed = rate(text);
        assert_eq!(parsed.emission_interval_ns(), interval, "{text}");
        assert_eq!(parsed.burst_tolerance_ns(), tolerance, "{text}");
    }
}

#[test]
fn gcra_admits_a_burst_of_count_then_one_per_interval() {
    let five_a_minute = rate("5/minute");
    let start = 1_000 * SECOND_NS;
    let mut tat = 0;
    for run in 1..=5 {
        tat = gcra_admit(tat, start, &five_a_minute).unwrap_or_else(|| panic!("run {run} refused"));
    }
    assert_eq!(tat, start + 60 * SECOND_NS);
    assert_eq!(gcra_admit(tat, start, &five_a_minute), None, "the 6th run of the burst");
    assert_eq!(gcra_admit(tat, start + 12 * SECOND_NS - 1, &five_a_minute), None, "just before a token is back");

    let after_12s = start + 12 * SECOND_NS;
    let Some(tat) = gcra_admit(tat, after_12s, &five_a_minute) else {
        panic!("refused after 12 s");
    };
    assert_eq!(tat, start + 72 * SECOND_NS);
    assert_eq!(gcra_admit(tat, after_12s, &five_a_minute), None, "only one token came back");
}

#[test]
fn gcra_refills_the_whole_bucket_after_a_quiet_period() {
    let five_a_minute = rate("5/minute");
    let mut tat = 0;
    for _ in 0..5 {
        tat = gcra_admit(tat, 0, &five_a_minute).unwrap_or(u64::MAX);
    }
    assert_eq!(gcra_admit(tat, 0, &five_a_minute), None);
    // A whole period later the bucket holds five tokens again, not more.
    let later = 3_600 * SECOND_NS;
    let mut admitted = 0;
    while let Some(next) = gcra_admit(tat, later, &five_a_minute) {
        tat = next;
        admitted += 1;
    }
    assert_eq!(admitted, 5);
}

#[test]
fn gcra_burst_is_exactly_count_when_the_interval_rounds_down() {
    // 1e9 ns / 999_999 rounds to 1000 ns, and 1_000_000 such intervals fit in a second.
    let rate = rate("999999/second");
    let mut tat = 0;
    let mut admitted = 0;
    while let Some(next) = gcra_admit(tat, 0, &rate) {
        tat = next;
        admitted += 1;
    }
    assert_eq!(admitted, 999_999);
}

#[test]
fn windows_parse_into_canonical_text() {
    let cases = [
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "Mon-Fri 09:00-17:00 Europe/Berlin"),
        ("09:00-17:00", "09:00-17:00 UTC"),
        ("sat,SUN 9:00-12:30", "Sat,Sun 09:00-12:30 UTC"),
        ("Mon,Wed-Fri 08:00-18:00 America/New_York", "Mon,Wed-Fri 08:00-18:00 America/New_York"),
        ("Fri-Mon 22:00-06:00", "Fri-Mon 22:00-06:00 UTC"),
        ("monday,Tuesday 00:00-24:00 UTC", "Mon,Tue 00:00-24:00 UTC"),
        ("Mon-Sun 10:00-11:00", "10:00-11:00 UTC"),
        ("Sun-Sat 10:00-11:00", "10:00-11:00 UTC"),
        ("Mon, Wed - Fri 09:00-17:00", "Mon,Wed-Fri 09:00-17:00 UTC"),
        ("Sun,Mon,Tue 01:00-02:00", "Sun-Tue 01:00-02:00 UTC"),
        ("Wed,Mon,Wed 01:00-02:00", "Mon,Wed 01:00-02:00 UTC"),
        ("Mon,Wed,Thu,Fri,Sun 01:00-02:00", "Wed-Fri,Sun,Mon 01:00-02:00 UTC"),
        ("Thu-Thu 00:00-00:01 Asia/Tokyo", "Thu 00:00-00:01 Asia/Tokyo"),
        ("  Mon-Fri   23:59-24:00   Etc/UTC ", "Mon-Fri 23:59-24:00 Etc/UTC"),
    ];
    for (text, canonical) in cases {
        let parsed = window(text);
        assert_eq!(parsed.to_string(), canonical, "{text}");
        assert_eq!(window(canonical), parsed, "{text} round trip");
    }
}

#[test]
fn bad_windows_name_the_bad_part() {
    let cases = [
        ("Mon-Fry 09:00-17:00", "unknown day \"Fry\" (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
        ("Mo 09:00-17:00", "unknown day \"Mo\""),
        ("Mon Fri 09:00-17:00", "unknown day \"Mon Fri\""),
        ("Mon,,Fri 09:00-17:00", "the day list \"Mon,,Fri\" has an empty entry"),
        ("Mon-Fri 09:00-17:00 Europe/Berln", "unknown time zone \"Europe/Berln\" (use an IANA name"),
        ("09:00-17:00 europe/berlin", "did you mean \"Europe/Berlin\"?"),
        ("09:00-17:00 CEST", "unknown time zone \"CEST\""),
        ("09:00-17:00 Mon-Fri", "the days \"Mon-Fri\" must come before the time range"),
        ("09:00-17:00 UTC Mon", "unexpected \"Mon\" after the time zone \"UTC\""),
        ("25:00-26:00", "bad time \"25:00\" (use HH:MM or HH:MM:SS from 00:00 to 24:00)"),
        ("09:00:60-10:00", "bad time \"09:00:60\""),
        ("09:00:5-10:00", "bad time \"09:00:5\""),
        ("09:60-10:00", "bad time \"09:60\""),
        ("09:00-24:01", "bad time \"24:01\""),
        ("9-17", "bad time \"9\""),
        ("009:00-10:00", "bad time \"009:00\""),
        ("09:0-10:00", "bad time \"09:0\""),
        ("09:00-17:00-18:00", "bad time \"17:00-18:00\""),
        ("09:00", "bad time range \"09:00\" (use HH:MM-HH:MM"),
        ("24:00-06:00", "24:00 can only end a window"),
        ("09:00-09:00", "starts and ends at 09:00, so it is never open"),
        ("Mon-Fri", "there is no time range"),
        ("", "it is empty"),
        ("   ", "it is empty"),
    ];
    for (text, expected) in cases {
        let error = text.parse::<TimeWindow>().expect_err(text);
        assert!(error.starts_with(&format!("invalid time window {text:?}: ")), "{error}");
        assert!(error.contains(expected), "{text}: {error}");
    }
    assert_eq!(
        "Mon-Fry 09:00-17:00".parse::<TimeWindow>(),
        Err("invalid time window \"Mon-Fry 09:00-17:00\": unknown day \"Fry\" \
             (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)"
            .to_owned())
    );
}

#[test]
fn start_is_inclusive_and_end_exclusive() {
    assert_open_at(
        "Mon-Fri 09:00-17:00",
        &[
            ("2026-01-05T08:59:59.999999999Z", false),
            ("2026-01-05T09:00:00Z", true),
            ("2026-01-05T16:59:59.999999999Z", true),
            ("2026-01-05T17:00:00Z", false),
            ("2026-01-09T12:00:00Z", true),
            ("2026-01-10T12:00:00Z", false),
            ("2026-01-11T12:00:00Z", false),
        ],
    );
    assert_open_at(
        "Mon 23:00-24:00",
        &[
            ("2026-01-05T22:59:59Z", false),
            ("2026-01-05T23:00:00Z", true),
            ("2026-01-05T23:59:59Z", true),
            ("2026-01-06T00:00:00Z", false),
        ],
    );
}

#[test]
fn overnight_windows_belong_to_the_day_they_start() {
    assert_open_at(
        "Fri 22:00-06:00",
        &[
            ("2026-01-08T23:00:00Z", false),
            ("2026-01-09T03:00:00Z", false),
            ("2026-01-09T21:59:59Z", false),
            ("2026-01-09T22:00:00Z", true),
            ("2026-01-10T05:59:59Z", true),
            ("2026-01-10T06:00:00Z", false),
            ("2026-01-10T22:00:00Z", false),
        ],
    );
    assert_open_at(
        "22:00-06:00",
        &[
            ("2026-01-05T00:00:00Z", true),
            ("2026-01-05T06:00:00Z", false),
            ("2026-01-05T12:00:00Z", false),
            ("2026-01-05T22:00:00Z", true),
        ],
    );
}

#[test]
fn day_lists_and_wrapping_ranges_pick_the_days() {
    // 2026-01-05 is a Monday; 10:30 on each day of that week.
    let week = |open: [bool; 7]| -> Vec<(String, bool)> {
        (0..7).map(|day| (format!("2026-01-{:02}T10:30:00Z", 5 + day), open[day])).collect()
    };
    let check = |text: &str, open: [bool; 7]| {
        let expected = week(open);
        let pairs: Vec<(&str, bool)> = expected.iter().map(|(t, o)| (t.as_str(), *o)).collect();
        assert_open_at(text, &pairs);
    };
    check("Fri-Mon 10:00-11:00", [true, false, false, false, true, true, true]);
    check("Sat,Sun 10:00-11:00", [false, false, false, false, false, true, true]);
    check("Mon,Wed-Fri 10:00-11:00", [true, false, true, true, true, false, false]);
    check("sunday,Tue 10:00-11:00", [false, true, false, false, false, false, true]);
    check("10:00-11:00", [true; 7]);
}

#[test]
fn zones_shift_the_window_with_their_offset_in_winter_and_summer() {
    assert_open_at(
        "09:00-17:00 Europe/Berlin",
        &[
            ("2026-01-15T07:59:59Z", false),
            ("2026-01-15T08:00:00Z", true),
            ("2026-01-15T15:59:59Z", true),
            ("2026-01-15T16:00:00Z", false),
            ("2026-07-15T06:59:59Z", false),
            ("2026-07-15T07:00:00Z", true),
            ("2026-07-15T14:59:59Z", true),
            ("2026-07-15T15:00:00Z", false),
        ],
    );
    assert_open_at(
        "09:00-17:00 UTC",
        &[
            ("2026-01-15T08:00:00Z", false),
            ("2026-01-15T09:00:00Z", true),
            ("2026-07-15T16:59:59Z", true),
            ("2026-07-15T17:00:00Z", false),
        ],
    );
    assert_open_at(
        "09:00-17:00 America/New_York",
        &[
            ("2026-01-15T13:59:59Z", false),
            ("2026-01-15T14:00:00Z", true),
            ("2026-07-15T13:00:00Z", true),
            ("2026-07-15T21:00:00Z", false),
        ],
    );
    // Thursday in Tokyo starts on Wednesday 15:00 UTC.
    assert_open_at(
        "Thu 00:00-01:00 Asia/Tokyo",
        &[("2026-01-14T15:00:00Z", true), ("2026-01-15T00:00:00Z", false)],
    );
}

#[test]
fn a_start_the_clocks_skip_opens_when_they_jump() {
    // Berlin, Sunday 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
    let skipped_start = window("Sun 02:30-05:00 Europe/Berlin");
    assert!(!skipped_start.is_open(at("2026-03-29T00:59:59Z")));
    assert!(skipped_start.is_open(at("2026-03-29T01:00:00Z")));
    assert!(skipped_start.is_open(at("2026-03-29T02:59:59Z")));
    assert!(!skipped_start.is_open(at("2026-03-29T03:00:00Z")));
    assert_eq!(
        changes("Sun 02:30-05:00 Europe/Berlin", "2026-03-29T00:00:00Z", 3),
        ["2026-03-29T01:00:00Z", "2026-03-29T03:00:00Z", "2026-04-05T00:30:00Z"]
    );
    // 01:00 CET to 03:00 CEST is one real hour.
    assert_open_at(
        "Sun 01:00-03:00 Europe/Berlin",
        &[
            ("2026-03-28T23:59:59Z", false),
            ("2026-03-29T00:00:00Z", true),
            ("2026-03-29T00:59:59Z", true),
            ("2026-03-29T01:00:00Z", false),
        ],
    );
    assert_eq!(
        changes("09:00-17:00 Europe/Berlin", "2026-03-28T12:00:00Z", 4),
        ["2026-03-28T16:00:00Z", "2026-03-29T07:00:00Z", "2026-03-29T15:00:00Z", "2026-03-30T07:00:00Z"]
    );
}

#[test]
fn a_time_the_clocks_repeat_takes_its_first_occurrence() {
    // Berlin, Sunday 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET, so
    // 02:30 is both 00:30 and 01:30 UTC.
    assert_open_at(
        "Sun 02:30-04:00 Europe/Berlin",
        &[
            ("2026-10-25T00:29:59Z", false),
            ("2026-10-25T00:30:00Z", true),
            ("2026-10-25T01:30:00Z", true),
            ("2026-10-25T02:59:59Z", true),
            ("2026-10-25T03:00:00Z", false),
        ],
    );
    // Closing at the first 02:30 leaves the repeated half hour closed.
    assert_open_at(
        "Sun 01:00-02:30 Europe/Berlin",
        &[
            ("2026-10-24T22:59:59Z", false),
            ("2026-10-24T23:00:00Z", true),
            ("2026-10-25T00:29:59Z", true),
            ("2026-10-25T00:30:00Z", false),
            ("2026-10-25T01:15:00Z", false),
        ],
    );
    // The night the clocks go back lasts an hour longer.
    assert_eq!(
        changes("Sat 22:00-06:00 Europe/Berlin", "2026-10-24T12:00:00Z", 3),
        ["2026-10-24T20:00:00Z", "2026-10-25T05:00:00Z", "2026-10-31T21:00:00Z"]
    );
}

#[test]
fn next_change_walks_a_working_week() {
    assert_eq!(
        changes("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-01-05T00:00:00Z", 11),
        [
            "2026-01-05T08:00:00Z",
            "2026-01-05T16:00:00Z",
            "2026-01-06T08:00:00Z",
            "2026-01-06T16:00:00Z",
            "2026-01-07T08:00:00Z",
            "2026-01-07T16:00:00Z",
            "2026-01-08T08:00:00Z",
            "2026-01-08T16:00:00Z",
            "2026-01-09T08:00:00Z",
            "2026-01-09T16:00:00Z",
            "2026-01-12T08:00:00Z",
        ]
    );
}

#[test]
fn next_change_is_strictly_after_and_skips_joined_openings() {
    let office = window("Mon-Fri 09:00-17:00");
    assert_eq!(office.next_change(at("2026-01-05T08:59:59.999999999Z")), at("2026-01-05T09:00:00Z"));
    assert_eq!(office.next_change(at("2026-01-05T09:00:00Z")), at("2026-01-05T17:00:00Z"));
    assert_eq!(office.next_change(at("2026-01-09T17:00:00Z")), at("2026-01-12T09:00:00Z"));

    assert_eq!(
        changes("Mon,Tue 00:00-24:00", "2026-01-04T12:00:00Z", 3),
        ["2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z", "2026-01-12T00:00:00Z"]
    );
    assert_eq!(
        changes("Sun 23:00-01:00", "2026-01-05T12:00:00Z", 3),
        ["2026-01-11T23:00:00Z", "2026-01-12T01:00:00Z", "2026-01-18T23:00:00Z"]
    );
    assert_eq!(
        changes("20:00-08:00", "2026-01-05T12:00:00Z", 3),
        ["2026-01-05T20:00:00Z", "2026-01-06T08:00:00Z", "2026-01-06T20:00:00Z"]
    );
}

#[test]
fn a_window_open_at_all_times_reports_the_search_bound() {
    let always = window("00:00-24:00");
    let start = at("2026-01-05T12:00:00Z");
    assert!(always.is_open(start));
    assert!(always.is_open(at("2026-01-06T00:00:00Z")));
    assert_eq!(always.next_change(start), at("2026-01-13T12:00:00Z"));
}

/// The two fields as a policy will hold them.
#[derive(Debug, Deserialize)]
struct ScheduleFields {
    #[serde(default)]
    rate_limits: BTreeMap<String, RateLimit>,
    #[serde(default)]
    time_windows: BTreeMap<String, TimeWindow>,
}

/// (field path, message, line) of the error in `yaml`.
fn yaml_error(yaml: &str) -> (String, String, Option<usize>) {
    let deserializer = serde_norway::Deserializer::from_str(yaml);
    match serde_path_to_error::deserialize::<_, ScheduleFields>(deserializer) {
        Ok(fields) => panic!("accepted {yaml:?} as {fields:?}"),
        Err(error) => (
            error.path().to_string(),
            error.inner().to_string(),
            error.inner().location().map(|at| at.line()),
        ),
    }
}

#[test]
fn yaml_errors_carry_the_field_path_and_line() {
    // The value's own line: the parse fails inside the string's deserialization.
    let (path, message, line) = yaml_error("rate_limits:\n  kubectl *: 100/minute\n  terraform: 100/fortnight\n");
    assert_eq!(path, "rate_limits.terraform");
    assert!(message.contains("invalid rate \"100/fortnight\": the period must be"), "{message}");
    assert_eq!(line, Some(3));

    let (path, message, line) =
        yaml_error("rate_limits: {}\ntime_windows: {\"terraform apply\": \"Mon-Fry 09:00-17:00\"}\n");
    assert_eq!(path, "time_windows.terraform apply");
    assert!(message.contains("unknown day \"Fry\""), "{message}");
    assert_eq!(line, Some(2));

    let yaml = "rate_limits: {\"kubectl *\": \"100/minute\", \"*\": \"1000/hour\"}\n\
                time_windows: {\"terraform apply\": \"Mon-Fri 09:00-17:00 Europe/Berlin\"}\n";
    let fields: ScheduleFields = serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fields.rate_limits.get("kubectl *"), Some(&rate("100/minute")));
    assert_eq!(fields.rate_limits.get("*"), Some(&rate("1000/hour")));
    assert_eq!(
        fields.time_windows.get("terraform apply"),
        Some(&window("Mon-Fri 09:00-17:00 Europe/Berlin"))
    );
}

#[test]
fn instants_at_the_ends_of_the_calendar_do_not_panic() {
    // Local time in Kiritimati (UTC+14) is past chrono's last day.
    let far_east = window("Fri-Mon 22:00-06:00 Pacific/Kiritimati");
    assert!(!far_east.is_open(DateTime::<Utc>::MAX_UTC));
    assert_eq!(far_east.next_change(DateTime::<Utc>::MAX_UTC), DateTime::<Utc>::MAX_UTC);

    let always = window("00:00-24:00");
    let first = DateTime::<Utc>::MIN_UTC;
    assert!(always.is_open(first));
    assert_eq!(always.next_change(first), first + TimeDelta::days(8));
}

#[test]
fn seconds_in_a_window_are_kept_and_honoured() {
    let w = window("09:00:30-09:01:15");
    assert_eq!(w.to_string(), "09:00:30-09:01:15 UTC");
    assert_eq!(window("09:00:00-17:00").to_string(), "09:00-17:00 UTC");
    assert_open_at(
        "09:00:30-09:01:15",
        &[
            ("2026-11-27T09:00:29Z", false),
            ("2026-11-27T09:00:30Z", true),
            ("2026-11-27T09:01:14Z", true),
            ("2026-11-27T09:01:15Z", false),
        ],
    );
    assert_eq!(changes("09:00:30-09:01:15", "2026-11-27T09:00:00Z", 2), ["2026-11-27T09:00:30Z", "2026-11-27T09:01:15Z"]);
}
