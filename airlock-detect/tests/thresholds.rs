//! Every rule at its default threshold: one below is quiet, at it fires
//! (`>=`), above it fires with the observed value and its evidence.

mod common;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;
use airlock_detect::{RuleName, RuleSettings, Severity, Subject, TokenUse, EVIDENCE_LIMIT};
use common::*;

/// A stream with `n` units of one rule's signal, and what a finding must show.
struct Stream {
    decisions: Vec<Decision>,
    token_uses: Vec<TokenUse>,
    /// The decision ids a finding must cite (before the evidence cap).
    evidence: Vec<u64>,
}

struct Case {
    rule: RuleName,
    subjects: Vec<Subject>,
    measure: &'static str,
    /// The threshold `measure` is held to, by default.
    threshold: u64,
    stream: fn(u64) -> Stream,
}

fn session() -> Subject {
    Subject::Session("s1".into())
}

fn alice() -> Subject {
    Subject::User("alice".into())
}

fn decisions_only(decisions: Vec<Decision>, evidence: Vec<u64>) -> Stream {
    Stream { decisions, token_uses: Vec::new(), evidence }
}

fn requests(n: u64) -> Stream {
    let decisions: Vec<Decision> = (1..=n)
        .map(|id| if id % 2 == 0 { connect(id, "10.0.0.1", kind::ALLOW) } else { exec(id, "ls", kind::ALLOW) })
        .chain([tamper(n + 1), base(n + 2, kind::FILE_OPEN, kind::ALLOW)])
        .collect();
    decisions_only(decisions, (1..=n).collect())
}

fn denials(n: u64) -> Stream {
    // Allowed execs and a denied approval step around the denies: neither counts.
    let denies = (1..=n).map(|id| exec(id, "curl", kind::DENY));
    let noise =
        (n + 1..=2 * n).map(|id| exec(id, "ls", kind::ALLOW)).chain([base(2 * n + 1, kind::APPROVAL, kind::DENY)]);
    decisions_only(denies.chain(noise).collect(), (1..=n).collect())
}

fn failures(n: u64) -> Stream {
    let reasons = ["egress_default", "enoent", "unix_path_unclear", "econnrefused"];
    let failed =
        (1..=n).map(|id| with_reason(connect(id, "10.0.0.9", kind::DENY), reasons[id as usize % reasons.len()]));
    // A plain rule deny is repeated_denials' signal, not a failure.
    let rule_denies = (n + 1..=n + 5).map(|id| exec(id, "curl", kind::DENY));
    decisions_only(failed.chain(rule_denies).collect(), (1..=n).collect())
}

fn distinct_programs(n: u64) -> Stream {
    // Each program twice: the second run of a program adds nothing.
    let first = (1..=n).map(|id| exec(id, &format!("tool{id}"), kind::ALLOW));
    let again = (1..=n).map(|id| exec(n + id, &format!("tool{id}"), kind::ALLOW));
    decisions_only(first.chain(again).collect(), (1..=n).collect())
}

fn distinct_denied_programs(n: u64) -> Stream {
    let denied = (1..=n).map(|id| exec(id, &format!("scanner{id}"), kind::DENY));
    let repeated = (1..=3).map(|i| exec(n + i, "scanner1", kind::DENY));
    decisions_only(denied.chain(repeated).collect(), (1..=n).collect())
}

fn hosts(n: u64) -> Stream {
    let decisions = (1..=n)
        .flat_map(|h| {
            let on_host = |id: u64| Decision {
                host: format!("host-{h}"),
                session_id: format!("s{h}"),
                ..exec(id, "ls", kind::ALLOW)
            };
            [on_host(2 * h - 1), on_host(2 * h)]
        })
        .collect();
    decisions_only(decisions, (1..=n).map(|h| 2 * h - 1).collect())
}

fn token_addresses(n: u64) -> Stream {
    let uses = (1..=n).flat_map(|i| {
        let address = format!("198.51.100.{i}");
        [token_use("ci-token", &address, 10), token_use("ci-token", &address, 20)]
    });
    Stream { decisions: Vec::new(), token_uses: uses.collect(), evidence: Vec::new() }
}

fn sensitive_execs(n: u64) -> Stream {
    let programs: [&[&str]; 4] =
        [&["sudo", "-i"], &["chmod", "u+s", "/tmp/sh"], &["chown", "root:root", "/tmp/sh"], &["modprobe", "dummy"]];
    let decisions = (1..=n)
        .map(|id| {
            let verdict = if id == 1 { kind::DENY } else { kind::ALLOW };
            exec_argv(id, programs[id as usize % programs.len()], verdict)
        })
        .chain([exec_argv(n + 1, &["chmod", "755", "/tmp/sh"], kind::DENY)])
        .collect();
    decisions_only(decisions, (1..=n).collect())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: RuleName::RequestRateSpike,
            subjects: vec![session(), alice()],
            measure: "requests",
            threshold: 1500,
            stream: requests,
        },
        Case {
            rule: RuleName::RepeatedDenials,
            subjects: vec![session(), alice()],
            measure: "denies",
            threshold: 20,
            stream: denials,
        },
        Case {
            rule: RuleName::ErrorStorm,
            subjects: vec![session(), alice()],
            measure: "failures",
            threshold: 30,
            stream: failures,
        },
        Case {
            rule: RuleName::ToolEnumeration,
            subjects: vec![session()],
            measure: "distinct_programs",
            threshold: 60,
            stream: distinct_programs,
        },
        Case {
            rule: RuleName::ToolEnumeration,
            subjects: vec![session()],
            measure: "distinct_denied_programs",
            threshold: 5,
            stream: distinct_denied_programs,
        },
        Case {
            rule: RuleName::MultiHost,
            subjects: vec![alice()],
            measure: "distinct_hosts",
            threshold: 5,
            stream: hosts,
        },
        Case {
            rule: RuleName::TokenMultiAddress,
            subjects: vec![Subject::Token("ci-token".into())],
            measure: "distinct_addresses",
            threshold: 5,
            stream: token_addresses,
        },
        Case {
            rule: RuleName::EscalationProbing,
            subjects: vec![session(), alice()],
            measure: "sensitive_execs",
            threshold: 3,
            stream: sensitive_execs,
        },
    ]
}

#[test]
fn the_default_thresholds_are_the_documented_ones() {
    for case in cases() {
        let defaults = RuleSettings::default_for(case.rule);
        let threshold = match case.measure {
            "distinct_denied_programs" => defaults.denied_threshold,
            _ => Some(defaults.threshold),
        };
        assert_eq!(threshold, Some(case.threshold), "{} {}", case.rule, case.measure);
    }
}

#[test]
fn one_below_the_threshold_is_quiet() {
    for case in cases() {
        let stream = (case.stream)(case.threshold - 1);
        let findings = run(&only(case.rule), &stream.decisions, &stream.token_uses);
        assert!(findings.is_empty(), "{} {} at {}: {findings:#?}", case.rule, case.measure, case.threshold - 1);
    }
}

#[test]
fn at_and_above_the_threshold_fire_with_the_values_and_the_evidence() {
    for case in cases() {
        for observed in [case.threshold, case.threshold + 3] {
            let stream = (case.stream)(observed);
            let findings = run(&only(case.rule), &stream.decisions, &stream.token_uses);
            let label = format!("{} {} at {observed}", case.rule, case.measure);
            assert_eq!(findings.len(), case.subjects.len(), "{label}: {findings:#?}");
            let mut expected_evidence = stream.evidence.clone();
            expected_evidence.truncate(EVIDENCE_LIMIT);
            for subject in &case.subjects {
                let finding = the_finding(&findings, case.rule, subject);
                assert_eq!(measure(finding, case.measure), (observed, case.threshold), "{label}");
                assert_eq!(finding.evidence, expected_evidence, "{label}");
                assert_eq!(finding.severity, RuleSettings::default_for(case.rule).severity, "{label}");
                assert_eq!(finding.window_end_ns, NOW, "{label}");
                let window_secs = RuleSettings::default_for(case.rule).window_secs as i64;
                assert_eq!(finding.window_start_ns, NOW - window_secs * SEC, "{label}");
                assert!(finding.summary.contains(&observed.to_string()), "{label}: {}", finding.summary);
            }
        }
    }
}

#[test]
fn error_storm_is_medium_by_default() {
    let stream = failures(30);
    let findings = run(&only(RuleName::ErrorStorm), &stream.decisions, &[]);
    assert_eq!(findings.iter().map(|f| f.severity).collect::<Vec<_>>(), [Severity::Medium, Severity::Medium]);
}

#[test]
fn sensitive_execs_that_were_all_allowed_are_an_administrator_at_work() {
    let decisions: Vec<Decision> = (1..=10).map(|id| exec_argv(id, &["sudo", "apt", "update"], kind::ALLOW)).collect();
    assert!(run(&only(RuleName::EscalationProbing), &decisions, &[]).is_empty());
}

#[test]
fn a_configured_threshold_moves_the_line() {
    let mut settings = only(RuleName::RepeatedDenials);
    if let Some(rule) = settings.rules.get_mut(&RuleName::RepeatedDenials) {
        rule.threshold = 4;
    }
    assert!(run(&settings, &denials(3).decisions, &[]).is_empty());
    let findings = run(&settings, &denials(4).decisions, &[]);
    assert_eq!(measure(the_finding(&findings, RuleName::RepeatedDenials, &session()), "denies"), (4, 4));
}
