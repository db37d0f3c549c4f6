//! Failed execs and refused connections per session and per user.
//!
//! A decision carries no errno or exit status, so a failure is known by its
//! `reason`: see [`FAILURE_REASONS`].

use airlock_api::decision as kind;
use airlock_api::v1::Decision;

use super::{count_findings, Run};
use crate::finding::Finding;
use crate::settings::{RuleName, RuleSettings};
use crate::tally::{count_by_subject, session_and_user};

/// The reasons that make an exec or connection a failure for error_storm,
/// whatever its verdict.
///
/// Today's reasons are the refusals that are not a rule naming the action: the
/// role's egress default refusing an address no rule allows (`egress_default`),
/// a Unix socket path that cannot be judged (`unix_path_unclear`), a command
/// line too long or too tangled to judge (`argv_too_long`, `match_overflow`),
/// and a session whose role was removed (`role_gone`). A plain `rule` deny is
/// repeated_denials' business, not this rule's.
///
/// The errno names are for outcomes an integrator records as the reason of an
/// exec or connect that failed (ENOENT for a program that is not there, EACCES
/// and EPERM, ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT): lowercase,
/// as written here.
pub const FAILURE_REASONS: [&str; 12] = [
    "egress_default",
    "unix_path_unclear",
    "argv_too_long",
    "match_overflow",
    "role_gone",
    "enoent",
    "eacces",
    "eperm",
    "econnrefused",
    "ehostunreach",
    "enetunreach",
    "etimedout",
];

/// The kinds whose failures count: execs and outgoing connections.
pub const FAILURE_KINDS: [&str; 5] = [kind::EXEC, kind::CONNECT, kind::SENDMSG, kind::UNIX_CONNECT, kind::UNIX_SENDMSG];

/// Does error_storm count this decision as a failure?
pub fn is_failure(d: &Decision) -> bool {
    FAILURE_KINDS.contains(&d.kind.as_str()) && FAILURE_REASONS.contains(&d.reason.as_str())
}

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let failures = count_by_subject(&window.select(&run.decisions), is_failure, session_and_user);
    count_findings(RuleName::ErrorStorm, settings, window, failures, "failures", "failed execs and connections")
}
