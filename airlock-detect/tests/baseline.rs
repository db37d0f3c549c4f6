//! request_rate_spike against a subject's own history, and the history itself.

mod common;

use std::collections::BTreeMap;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;
use airlock_detect::{Baseline, RuleName, Settings, Subject, FORGET_BELOW, SMOOTHING};
use common::*;

fn session() -> Subject {
    Subject::Session("s1".into())
}

/// A baseline in which session s1 (and only it) usually makes `mean` requests.
fn usual(mean: u64, runs: u32) -> Baseline {
    let mut baseline = Baseline::new();
    for _ in 0..runs {
        baseline.fold(BTreeMap::from([(session(), mean)]));
    }
    baseline
}

fn requests(n: u64) -> Vec<Decision> {
    (1..=n).map(|id| exec(id, "make", kind::ALLOW)).collect()
}

fn session_findings(baseline: &Baseline, n: u64) -> Vec<airlock_detect::Finding> {
    let findings = run_with(&only(RuleName::RequestRateSpike), &requests(n), &[], baseline);
    findings.into_iter().filter(|f| f.subject == session()).collect()
}

#[test]
fn a_spike_against_the_subjects_own_history_fires_below_the_absolute_threshold() {
    // Usually 100 a window; the default factor 5 makes 500 a spike.
    let baseline = usual(100, 60);
    let table: [(u64, bool); 3] = [(499, false), (500, true), (700, true)];
    for (count, fires) in table {
        let findings = session_findings(&baseline, count);
        assert_eq!(findings.len(), usize::from(fires), "{count} requests: {findings:#?}");
        if let Some(finding) = findings.first() {
            assert_eq!(measure(finding, "requests"), (count, 1500));
            assert_eq!(measure(finding, "requests_vs_baseline"), (count, 500));
            assert!(finding.summary.contains("usually 100.0"), "{}", finding.summary);
        }
    }
}

#[test]
fn a_short_history_is_not_trusted() {
    assert_eq!(session_findings(&usual(100, 59), 700), []);
    assert_eq!(session_findings(&usual(100, 60), 700).len(), 1);
}

#[test]
fn a_quiet_subject_needs_the_minimum_count_to_spike() {
    // 5 x 10 is 50, but the baseline alone never fires below min_count (300).
    let baseline = usual(10, 60);
    assert_eq!(session_findings(&baseline, 299), []);
    let findings = session_findings(&baseline, 300);
    assert_eq!(measure(&findings[0], "requests_vs_baseline"), (300, 300));
}

#[test]
fn the_user_without_history_is_held_to_the_absolute_threshold_only() {
    let findings = run_with(&only(RuleName::RequestRateSpike), &requests(700), &[], &usual(100, 60));
    let alice = Subject::User("alice".into());
    assert!(findings.iter().all(|f| f.subject != alice), "{findings:#?}");
}

#[test]
fn record_folds_the_windows_counts_into_a_moving_average() {
    let settings = Settings::default();
    let mut baseline = Baseline::new();
    // 30 requests in request_rate_spike's 60 s window, 10 more outside it.
    let mut decisions = requests(30);
    decisions.extend((31..=40).map(|id| secs_ago(exec(id, "make", kind::ALLOW), 61)));
    baseline.record(&settings, &decisions, NOW);
    let first = baseline.history(&session()).map(|h| (h.mean, h.runs));
    assert_eq!(first, Some((30.0, 1)));
    assert_eq!(baseline.history(&Subject::User("alice".into())).map(|h| h.mean), Some(30.0));

    baseline.record(&settings, &[], NOW + 60 * SEC);
    let second = baseline.history(&session()).map(|h| (h.mean, h.runs));
    assert_eq!(second, Some((30.0 - SMOOTHING * 30.0, 2)));
}

#[test]
fn an_idle_subject_is_forgotten() {
    let mut baseline = usual(1, 1);
    let mut runs = 0;
    while baseline.history(&session()).is_some() {
        baseline.fold(BTreeMap::new());
        runs += 1;
        assert!(runs < 1000, "never forgotten");
    }
    // (1 - 1/30)^n < 0.01 first at n = 136.
    let expected = (FORGET_BELOW.ln() / (1.0 - SMOOTHING).ln()).ceil() as u32;
    assert_eq!(runs, expected);
    assert!(baseline.is_empty());
}

#[test]
fn a_baseline_survives_a_json_round_trip() {
    let mut baseline = usual(100, 3);
    baseline.fold(BTreeMap::from([(Subject::User("alice".into()), 7)]));
    let json = serde_json::to_value(&baseline).unwrap_or_default();
    assert_eq!(json["subjects"][0]["subject"], serde_json::json!({"kind": "user", "id": "alice"}));
    assert_eq!(json["subjects"][1]["runs"], 4);
    let back: Baseline = serde_json::from_value(json).unwrap_or_default();
    assert_eq!(back, baseline);
    assert_eq!(back.len(), 2);
}
