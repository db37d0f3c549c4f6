//! One session running, or trying to run, many different programs: looking
//! for what is installed, or for the tool the policy forgot.

use std::collections::BTreeMap;

use airlock_api::decision as kind;

use super::{program_of, Draft, Run};
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{RuleName, RuleSettings};
use crate::tally::{session_of, Distinct};

#[derive(Default)]
struct Programs {
    all: Distinct,
    denied: Distinct,
}

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let mut by_session: BTreeMap<Subject, Programs> = BTreeMap::new();
    for d in window.select(&run.decisions) {
        if d.kind != kind::EXEC {
            continue;
        }
        let (Some(session), Some(program)) = (session_of(d), program_of(d)) else { continue };
        let programs = by_session.entry(session).or_default();
        programs.all.add(program, d.id);
        if d.decision == kind::DENY {
            programs.denied.add(program, d.id);
        }
    }
    // validate() requires denied_threshold; without it the distinct count alone decides.
    let denied_threshold = settings.denied_threshold.unwrap_or(u64::MAX);
    let mut findings = Vec::new();
    for (subject, programs) in by_session {
        let values = vec![
            Measure::new("distinct_programs", programs.all.count(), settings.threshold),
            Measure::new("distinct_denied_programs", programs.denied.count(), denied_threshold),
        ];
        if !values.iter().any(Measure::fires) {
            continue;
        }
        let summary = format!(
            "{subject}: {} distinct programs ({} denied) in {} s (thresholds {} and {} denied)",
            programs.all.count(),
            programs.denied.count(),
            window.secs(),
            settings.threshold,
            denied_threshold
        );
        // Every program's first exec; a denied program's first exec is among them.
        let evidence = programs.all.first_seen.evidence;
        let draft = Draft { severity: settings.severity, subject, values, evidence, summary };
        findings.push(draft.into_finding(RuleName::ToolEnumeration, window));
    }
    findings
}
