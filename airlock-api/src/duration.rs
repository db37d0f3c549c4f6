//! Durations as people type them on command lines and in config: a whole
//! number and a unit, `90s`, `30m`, `2h`, `7d`. One parser, so every flag of
//! every binary accepts the same forms and says the same thing when it cannot.

use std::time::Duration;

/// Parses `90s`, `30m`, `2h`, `7d`. The error names the text and the forms;
/// clap puts the flag's name in front of it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a duration (use a whole number and a unit: 90s, 30m, 2h, 7d)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("{text:?}: a duration must be longer than zero"));
    }
    n.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(bad)
}

/// The inverse for whole units: 1800 s is "30m".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("0m").unwrap_err().contains("longer than zero"));
        for bad in ["", "3x", "m", "30", "-5m", "1.5h", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration") && e.contains("30m"), "{bad}: {e}");
        }
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }
}
