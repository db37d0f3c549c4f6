//! The engine around the rules: switches, windows, tamper, dedup and order.

mod common;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;
use airlock_detect::{detect, Baseline, BlockKind, Input, RuleName, Settings, Severity, Subject};
use common::*;

/// Denies of distinct programs, sudo among them, and a tamper: enough for
/// repeated_denials, tool_enumeration and escalation_probing at once.
fn noisy_session() -> Vec<Decision> {
    let mut decisions: Vec<Decision> = (1..=25).map(|id| exec(id, &format!("probe{}", id % 6), kind::DENY)).collect();
    decisions.extend((26..=28).map(|id| exec_argv(id, &["sudo", "-n", "true"], kind::DENY)));
    decisions.push(tamper(29));
    decisions
}

fn rules_of(findings: &[airlock_detect::Finding]) -> Vec<(RuleName, Subject)> {
    findings.iter().map(|f| (f.rule, f.subject.clone())).collect()
}

#[test]
fn a_noisy_session_fires_several_rules_once_per_subject_most_severe_first() {
    let findings = run(&Settings::default(), &noisy_session(), &[]);
    let session = Subject::Session("s1".into());
    let alice = Subject::User("alice".into());
    assert_eq!(
        rules_of(&findings),
        [
            (RuleName::EscalationProbing, alice.clone()),
            (RuleName::EscalationProbing, session.clone()),
            (RuleName::RepeatedDenials, alice),
            (RuleName::RepeatedDenials, session.clone()),
            (RuleName::ToolEnumeration, session),
        ]
    );
    assert!(findings[..2].iter().all(|f| f.severity == Severity::Critical), "{findings:#?}");
    assert!(findings[2..].iter().all(|f| f.severity == Severity::High), "{findings:#?}");
}

#[test]
fn disabled_detection_finds_nothing() {
    let settings = Settings { enabled: false, ..Settings::default() };
    assert!(!run(&Settings::default(), &noisy_session(), &[]).is_empty());
    assert_eq!(run(&settings, &noisy_session(), &[]), []);
}

#[test]
fn a_disabled_rule_finds_nothing_and_the_others_still_run() {
    let mut settings = Settings::default();
    if let Some(rule) = settings.rules.get_mut(&RuleName::RepeatedDenials) {
        rule.enabled = false;
    }
    let rules: Vec<RuleName> = run(&settings, &noisy_session(), &[]).iter().map(|f| f.rule).collect();
    assert_eq!(rules, [RuleName::EscalationProbing, RuleName::EscalationProbing, RuleName::ToolEnumeration]);
}

#[test]
fn one_tamper_is_critical_on_its_own_whatever_the_configured_threshold_and_severity() {
    let mut settings = only(RuleName::EscalationProbing);
    if let Some(rule) = settings.rules.get_mut(&RuleName::EscalationProbing) {
        rule.threshold = 100;
        rule.severity = Severity::Low;
    }
    let findings = run(&settings, &[tamper(7)], &[]);
    assert_eq!(rules_of(&findings).len(), 2, "{findings:#?}");
    for subject in [Subject::Session("s1".into()), Subject::User("alice".into())] {
        let finding = the_finding(&findings, RuleName::EscalationProbing, &subject);
        assert_eq!(finding.severity, Severity::Critical);
        assert_eq!(finding.severity.block_kind(), Some(BlockKind::Hard));
        assert_eq!(measure(finding, "tamper"), (1, 1));
        assert_eq!(measure(finding, "sensitive_execs"), (0, 100));
        assert_eq!(finding.evidence, [7]);
    }
}

#[test]
fn decisions_outside_the_window_are_ignored() {
    // repeated_denials looks at (now - 300 s, now].
    let settings = only(RuleName::RepeatedDenials);
    let denies_at =
        |secs: i64| -> Vec<Decision> { (1..=20).map(|id| secs_ago(exec(id, "curl", kind::DENY), secs)).collect() };
    let at_the_start: Vec<Decision> = denies_at(300);
    assert_eq!(run(&settings, &at_the_start, &[]), [], "the window's start is excluded");
    let in_the_future: Vec<Decision> = denies_at(-1);
    assert_eq!(run(&settings, &in_the_future, &[]), [], "decisions after now are excluded");
    let just_inside: Vec<Decision> =
        at_the_start.into_iter().map(|d| Decision { time_unix_nanos: d.time_unix_nanos + 1, ..d }).collect();
    assert_eq!(run(&settings, &just_inside, &[]).len(), 2);
    assert_eq!(run(&settings, &denies_at(0), &[]).len(), 2, "now itself is in");
    let mut straddling = denies_at(299);
    straddling.truncate(19);
    straddling.push(secs_ago(exec(99, "curl", kind::DENY), 301));
    assert_eq!(run(&settings, &straddling, &[]), [], "19 inside and one outside are below 20");
}

#[test]
fn token_uses_outside_the_window_are_ignored() {
    let settings = only(RuleName::TokenMultiAddress);
    let uses: Vec<_> =
        (1..=5).map(|i| token_use("t", &format!("192.0.2.{i}"), if i == 5 { 3600 } else { 60 })).collect();
    assert_eq!(run(&settings, &[], &uses), []);
    let findings =
        run(&settings, &[], &uses[..4].iter().cloned().chain([token_use("t", "192.0.2.9", 3599)]).collect::<Vec<_>>());
    assert_eq!(measure(&findings[0], "distinct_addresses"), (5, 5));
}

#[test]
fn the_input_order_does_not_change_the_output() {
    let mut decisions = noisy_session();
    // Spread the times so that the order matters to anything that depends on it.
    for (i, d) in decisions.iter_mut().enumerate() {
        d.time_unix_nanos = NOW - (i as i64 % 7) * SEC;
    }
    let forward = run(&Settings::default(), &decisions, &[]);
    decisions.reverse();
    assert_eq!(run(&Settings::default(), &decisions, &[]), forward);
    decisions.rotate_left(11);
    assert_eq!(run(&Settings::default(), &decisions, &[]), forward);
}

#[test]
fn evidence_is_capped_and_in_time_order() {
    let settings = only(RuleName::RepeatedDenials);
    // Ids run against time: evidence follows time, then id.
    let decisions: Vec<Decision> = (1..=80).map(|id| secs_ago(exec(id, "curl", kind::DENY), id as i64)).collect();
    let findings = run(&settings, &decisions, &[]);
    let expected: Vec<u64> = (31..=80).rev().collect();
    assert_eq!(findings[0].evidence, expected);
    assert_eq!(measure(&findings[0], "denies"), (80, 20));
}

#[test]
fn a_decision_without_a_session_counts_for_its_user_by_uid_when_it_has_no_name() {
    let settings = only(RuleName::RepeatedDenials);
    let decisions: Vec<Decision> = (1..=20)
        .map(|id| Decision {
            session_id: String::new(),
            user: String::new(),
            uid: 1234,
            ..exec(id, "curl", kind::DENY)
        })
        .collect();
    assert_eq!(
        rules_of(&run(&settings, &decisions, &[])),
        [(RuleName::RepeatedDenials, Subject::User("uid:1234".into()))]
    );
}

#[test]
fn settings_that_do_not_validate_are_refused_rather_than_run() {
    let mut settings = Settings::default();
    if let Some(rule) = settings.rules.get_mut(&RuleName::ErrorStorm) {
        rule.threshold = 0;
    }
    let baseline = Baseline::new();
    let input = Input { decisions: &noisy_session(), token_uses: &[], baseline: &baseline, now_ns: NOW };
    let error = detect(&settings, &input).err().map(|e| e.to_string());
    assert_eq!(error.as_deref(), Some("rules.error_storm.threshold: must be at least 1"));
}
