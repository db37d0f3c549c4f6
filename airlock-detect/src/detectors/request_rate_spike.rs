//! Execs and connections per session and per user, against a fixed ceiling
//! and against the subject's own usual rate.

use super::{Draft, Run};
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{BaselineSettings, RuleName, RuleSettings};
use crate::tally::requests_by_subject;

/// The count at which a subject's history makes its count a spike, if the
/// history is long enough to judge by: `factor` × its usual count rounded
/// up, and never below `min_count`.
fn baseline_threshold(baseline: &BaselineSettings, run: &Run<'_>, subject: &Subject) -> Option<(u64, f64)> {
    let history = run.baseline.history(subject)?;
    if history.runs < baseline.min_runs {
        return None;
    }
    let scaled = (baseline.factor * history.mean).ceil();
    // A float too large for u64 saturates; a threshold that large never fires.
    let scaled = if scaled >= u64::MAX as f64 { u64::MAX } else { scaled as u64 };
    Some((scaled.max(baseline.min_count), history.mean))
}

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let mut findings = Vec::new();
    for (subject, tally) in requests_by_subject(&window.select(&run.decisions)) {
        let mut values = vec![Measure::new("requests", tally.count, settings.threshold)];
        let mut usual = None;
        if let Some((threshold, mean)) = settings.baseline.as_ref().and_then(|b| baseline_threshold(b, run, &subject)) {
            values.push(Measure::new("requests_vs_baseline", tally.count, threshold));
            usual = Some(mean);
        }
        if !values.iter().any(Measure::fires) {
            continue;
        }
        let against = match usual {
            Some(mean) => format!("threshold {}, usually {mean:.1}", settings.threshold),
            None => format!("threshold {}", settings.threshold),
        };
        let summary = format!("{subject}: {} execs and connections in {} s ({against})", tally.count, window.secs());
        let draft = Draft { severity: settings.severity, subject, values, evidence: tally.evidence, summary };
        findings.push(draft.into_finding(RuleName::RequestRateSpike, window));
    }
    findings
}
