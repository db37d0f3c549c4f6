//! Airlock's anomaly detectors: from a window of decisions (and of API token
//! uses), findings about the sessions, users and tokens that behave like an
//! attack. Pure and deterministic: no I/O, no clock; the caller passes `now`.
//!
//! The caller runs [`detect`] every minute or so, over all hosts of an org on
//! the gateway or over its own store on an agent, turns findings into alerts
//! and, by [`Severity::block_kind`], into blocks lasting
//! [`Settings::soft_block_secs`] or [`Settings::hard_block_secs`]; then it
//! folds the run into the [`Baseline`] with [`Baseline::record`] and keeps it.
//!
//! # Rules and their defaults
//!
//! Every rule looks at the decisions with `time_unix_nanos` in
//! `(now - window_secs, now]` and fires when the observed value is **at or
//! above** its threshold (`>=`).
//!
//! | rule | signal | subjects | default threshold | window | severity |
//! |---|---|---|---|---|---|
//! | `request_rate_spike` | execs and connections ([`REQUEST_KINDS`]) | session, user | 1500; or 5 × the subject's usual count, once it has 60 runs of history, and at least 300 | 60 s | high |
//! | `repeated_denials` | denied actions ([`ACTION_KINDS`]) | session, user | 20 | 300 s | high |
//! | `error_storm` | execs and connections with a reason of [`FAILURE_REASONS`] | session, user | 30 | 300 s | medium |
//! | `tool_enumeration` | distinct programs executed; distinct denied programs | session | 60 programs, or 5 denied | 300 s | high |
//! | `multi_host` | distinct hosts with a session of the user | user | 5 | 3600 s | high |
//! | `token_multi_address` | distinct source addresses of an API token | token | 5 | 3600 s | high |
//! | `escalation_probing` | execs of a [`sensitive_family`], at least one denied; any `tamper` decision | session, user | 3 execs with a deny; 1 tamper | 600 s | high; **critical** with a tamper |
//!
//! A high finding calls for a soft block (4 hours by default), a critical one
//! for a hard block (a day).
//!
//! # What error_storm counts
//!
//! A decision carries no errno or exit status. error_storm counts the exec,
//! connect, sendmsg, unix_connect and unix_sendmsg decisions, allowed or
//! denied, whose `reason` is one of [`FAILURE_REASONS`]: today the refusals
//! that are not a rule naming the action (`egress_default`,
//! `unix_path_unclear`, `argv_too_long`, `match_overflow`, `role_gone`), and
//! the lowercase errno names (`enoent`, `eacces`, `eperm`, `econnrefused`,
//! `ehostunreach`, `enetunreach`, `etimedout`) for an integrator that records
//! such outcomes as a decision's reason. [`is_failure`] is the test.
//!
//! # Findings
//!
//! At most one finding per (rule, subject) per run, carrying the measured
//! values against their thresholds and the ids of the first
//! [`EVIDENCE_LIMIT`] decisions behind it. Findings come sorted by severity
//! (critical first), then rule, then subject.

mod baseline;
mod detectors;
mod finding;
mod settings;
mod tally;
mod window;

use airlock_api::v1::Decision;
use serde::{Deserialize, Serialize};

pub use baseline::{Baseline, History, FORGET_BELOW, SMOOTHING};
pub use detectors::error_storm::{is_failure, FAILURE_KINDS, FAILURE_REASONS};
pub use detectors::escalation_probing::{sensitive_family, FIREWALL_PREFIXES, SENSITIVE_PROGRAMS};
pub use detectors::{program_of, ACTION_KINDS};
pub use finding::{Finding, Measure, Subject, EVIDENCE_LIMIT};
pub use settings::{
    BaselineSettings, BlockKind, RuleName, RuleSettings, Settings, SettingsError, Severity, DEFAULT_HARD_BLOCK_SECS,
    DEFAULT_SOFT_BLOCK_SECS, MAX_WINDOW_SECS,
};
pub use tally::REQUEST_KINDS;
pub use window::Window;

/// One use of an API token, as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUse {
    /// The token's name or id: it ends up in findings, so never its secret.
    pub token: String,
    /// The source address the token was presented from.
    pub address: String,
    pub time_unix_nanos: i64,
}

/// What a run looks at. Decisions and token uses may come in any order and
/// may reach outside the windows (those outside are ignored).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub decisions: &'a [Decision],
    pub token_uses: &'a [TokenUse],
    pub baseline: &'a Baseline,
    pub now_ns: i64,
}

/// The findings of every enabled rule; none when detection is disabled.
/// Enabled settings that do not pass [`Settings::validate`] are refused rather than
/// run (a zero threshold would flag every subject).
pub fn detect(settings: &Settings, input: &Input<'_>) -> Result<Vec<Finding>, SettingsError> {
    if !settings.enabled {
        return Ok(Vec::new());
    }
    settings.validate()?;
    let run = detectors::Run {
        decisions: window::sorted_by_time(input.decisions),
        token_uses: input.token_uses,
        baseline: input.baseline,
        now_ns: input.now_ns,
    };
    let mut findings: Vec<Finding> = RuleName::ALL
        .into_iter()
        .map(|rule| (rule, settings.rule(rule)))
        .filter(|(_, rule_settings)| rule_settings.enabled)
        .flat_map(|(rule, rule_settings)| detectors::run(rule, &run, &rule_settings))
        .collect();
    // Each rule reports a subject once; this keeps the promise if one ever does not.
    findings.sort_by(|a, b| (a.rule, &a.subject, b.severity).cmp(&(b.rule, &b.subject, a.severity)));
    findings.dedup_by(|later, earlier| later.rule == earlier.rule && later.subject == earlier.subject);
    findings.sort_by(|a, b| (b.severity, a.rule, &a.subject).cmp(&(a.severity, b.rule, &b.subject)));
    Ok(findings)
}
