//! Airlock's gateway: the fleet control plane. Agents enroll with a join
//! token, load versioned policy bundles from it over one stream, and ship
//! every decision to it; platform teams query the fleet through its API.
//!
//! Map: [`server`] starts everything; [`enroll`], [`link`] and [`fleet`] are
//! the three gRPC services; [`hub`] is what one replica shares between
//! connections; [`pki`] and [`tokens`] are the credentials; [`auth`] scopes a
//! caller to its org; [`passwords`] hashes the web UI users' passwords;
//! [`approvals`] follows approval requests between
//! agents and approvers; [`detection`] runs the detectors over each org's
//! decisions and [`security`] pushes the blocks they place to the agents;
//! [`health`] answers Kubernetes' probes;
//! the store is the `airlock-gateway-store` crate; [`ui`] is the web
//! Control Room, a second front over the same fleet facade; [`metrics`]
//! serves this replica's Prometheus metrics.

pub mod approvals;
pub mod auth;
pub mod cli;
pub mod config;
pub mod detection;
pub mod enroll;
pub mod fleet;
pub mod health;
pub mod hub;
pub mod instants;
pub mod link;
pub mod metrics;
pub mod passwords;
pub mod pki;
pub mod security;
pub mod server;
pub mod tokens;
pub mod ui;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// An instant as RFC 3339 text (UTC).
pub fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A socket address as the host part of a URL (an unspecified address as
/// `localhost`, IPv6 in brackets).
pub fn display_addr(addr: std::net::SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("{host}:{}", addr.port())
}
