//! Instants and ages as people type them (`15m`, `7d`, an RFC 3339 time),
//! for the CLI's flags and the Control Room's filters alike.

use anyhow::{bail, Context, Result};

/// An age (30s, 15m, 2h, 7d) in seconds.
pub fn parse_age(text: &str) -> Result<i64> {
    let t = text.trim();
    let Some(unit) = t.chars().last() else { bail!("an empty age") };
    let n: i64 = t[..t.len() - unit.len_utf8()].parse().with_context(|| format!("{text:?} is not an age like 30m, 24h or 7d"))?;
    let seconds = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        _ => bail!("{text:?}: the unit of an age is s, m, h or d"),
    };
    if seconds <= 0 {
        bail!("{text:?}: an age must be positive");
    }
    Ok(seconds)
}

/// An instant: an age back from now, or an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<i64> {
    if let Ok(age) = parse_age(text) {
        return Ok(crate::now_ns() - age * 1_000_000_000);
    }
    let at = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor an age (15m, 2h, 7d)"))?;
    Ok(at.unix_timestamp_nanos() as i64)
}
