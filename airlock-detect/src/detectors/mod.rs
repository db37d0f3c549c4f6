//! One module per rule. Each looks at its own window of the run's decisions
//! and reports at most one finding per subject.

pub mod error_storm;
pub mod escalation_probing;
pub mod multi_host;
pub mod repeated_denials;
pub mod request_rate_spike;
pub mod token_multi_address;
pub mod tool_enumeration;

use std::collections::BTreeMap;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;

use crate::baseline::Baseline;
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{RuleName, RuleSettings, Severity};
use crate::tally::Tally;
use crate::window::Window;
use crate::TokenUse;

/// A run's input, the decisions sorted once for every rule.
pub struct Run<'a> {
    pub decisions: Vec<&'a Decision>,
    pub token_uses: &'a [TokenUse],
    pub baseline: &'a Baseline,
    pub now_ns: i64,
}

impl Run<'_> {
    pub fn window(&self, settings: &RuleSettings) -> Window {
        Window::ending_at(self.now_ns, settings.window_ns())
    }
}

pub fn run(rule: RuleName, run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    match rule {
        RuleName::RequestRateSpike => request_rate_spike::detect(run, settings),
        RuleName::RepeatedDenials => repeated_denials::detect(run, settings),
        RuleName::ErrorStorm => error_storm::detect(run, settings),
        RuleName::ToolEnumeration => tool_enumeration::detect(run, settings),
        RuleName::MultiHost => multi_host::detect(run, settings),
        RuleName::TokenMultiAddress => token_multi_address::detect(run, settings),
        RuleName::EscalationProbing => escalation_probing::detect(run, settings),
    }
}

/// The kinds that are something a governed process did (as opposed to the
/// daemon's own bookkeeping: revoke, events_lost, shipping_lost, tag_failure,
/// approval steps).
pub const ACTION_KINDS: [&str; 7] =
    [kind::EXEC, kind::CONNECT, kind::SENDMSG, kind::UNIX_CONNECT, kind::UNIX_SENDMSG, kind::FILE_OPEN, kind::TAMPER];

/// The program an exec ran: the executable's file name, else argv\[0\]'s.
pub fn program_of(d: &Decision) -> Option<&str> {
    file_name(&d.executable).or_else(|| d.argv.first().and_then(|argv0| file_name(argv0)))
}

fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|name| !name.is_empty())
}

pub struct Draft {
    pub severity: Severity,
    pub subject: Subject,
    pub values: Vec<Measure>,
    pub evidence: Vec<u64>,
    pub summary: String,
}

impl Draft {
    pub fn into_finding(self, rule: RuleName, window: Window) -> Finding {
        Finding {
            rule,
            severity: self.severity,
            subject: self.subject,
            window_start_ns: window.start_ns,
            window_end_ns: window.end_ns,
            values: self.values,
            evidence: self.evidence,
            summary: self.summary,
        }
    }
}

/// The findings of a rule that counts matching decisions per subject: one
/// for each subject whose count is at or above the threshold.
pub fn count_findings(
    rule: RuleName,
    settings: &RuleSettings,
    window: Window,
    tallies: BTreeMap<Subject, Tally>,
    measure: &str,
    what: &str,
) -> Vec<Finding> {
    tallies
        .into_iter()
        .filter(|(_, tally)| tally.count >= settings.threshold)
        .map(|(subject, tally)| {
            let summary =
                format!("{subject}: {} {what} in {} s (threshold {})", tally.count, window.secs(), settings.threshold);
            Draft {
                severity: settings.severity,
                subject,
                values: vec![Measure::new(measure, tally.count, settings.threshold)],
                evidence: tally.evidence,
                summary,
            }
            .into_finding(rule, window)
        })
        .collect()
}
