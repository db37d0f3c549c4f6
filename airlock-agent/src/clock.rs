//! Wall-clock time as the audit trail and the API write it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339 with nanoseconds (UTC).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Nanoseconds since the Unix epoch as RFC 3339 (empty when out of range).
pub fn rfc3339_from_unix_nanos(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
