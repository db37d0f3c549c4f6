//! Synthetic decision streams for the detectors' tests.
#![allow(dead_code)]

use airlock_api::decision as kind;
use airlock_api::v1::{decision::Detail, Decision, Destination, GuardDetail};
use airlock_detect::{detect, Baseline, Finding, Input, RuleName, Settings, TokenUse};

pub const SEC: i64 = 1_000_000_000;
/// 2023-11-14T22:13:20Z: any fixed instant well away from zero.
pub const NOW: i64 = 1_700_000_000 * SEC;

/// A decision one second before [`NOW`], in session `s1` of `alice` on `host-a`.
pub fn base(id: u64, kind: &str, verdict: &str) -> Decision {
    Decision {
        id,
        time_unix_nanos: NOW - SEC,
        host: "host-a".into(),
        kind: kind.into(),
        decision: verdict.into(),
        reason: if verdict == kind::DENY { "rule".into() } else { "none".into() },
        session_id: "s1".into(),
        user: "alice".into(),
        uid: 1000,
        ..Default::default()
    }
}

pub fn exec(id: u64, program: &str, verdict: &str) -> Decision {
    let executable = format!("/usr/bin/{program}");
    Decision { executable: executable.clone(), argv: vec![executable], ..base(id, kind::EXEC, verdict) }
}

pub fn exec_argv(id: u64, argv: &[&str], verdict: &str) -> Decision {
    let argv: Vec<String> = argv.iter().map(|word| word.to_string()).collect();
    Decision { executable: format!("/usr/bin/{}", argv[0]), argv, ..base(id, kind::EXEC, verdict) }
}

pub fn connect(id: u64, address: &str, verdict: &str) -> Decision {
    let destination = Destination { address: address.into(), port: 443, protocol: "tcp".into() };
    Decision { detail: Some(Detail::Destination(destination)), ..base(id, kind::CONNECT, verdict) }
}

pub fn tamper(id: u64) -> Decision {
    let guard = GuardDetail { operation: "bpf".into(), enforcement: Some("refused".into()), ..Default::default() };
    Decision { reason: "tamper_bpf".into(), detail: Some(Detail::Guard(guard)), ..base(id, kind::TAMPER, kind::DENY) }
}

pub fn with_reason(d: Decision, reason: &str) -> Decision {
    Decision { reason: reason.into(), ..d }
}

pub fn secs_ago(d: Decision, secs: i64) -> Decision {
    Decision { time_unix_nanos: NOW - secs * SEC, ..d }
}

pub fn token_use(token: &str, address: &str, secs_ago: i64) -> TokenUse {
    TokenUse { token: token.into(), address: address.into(), time_unix_nanos: NOW - secs_ago * SEC }
}

/// Default settings with only `rule` enabled, so a test sees that rule alone.
pub fn only(rule: RuleName) -> Settings {
    let mut settings = Settings::default();
    for (name, rule_settings) in settings.rules.iter_mut() {
        rule_settings.enabled = *name == rule;
    }
    settings
}

pub fn run(settings: &Settings, decisions: &[Decision], token_uses: &[TokenUse]) -> Vec<Finding> {
    run_with(settings, decisions, token_uses, &Baseline::new())
}

pub fn run_with(
    settings: &Settings,
    decisions: &[Decision],
    token_uses: &[TokenUse],
    baseline: &Baseline,
) -> Vec<Finding> {
    let input = Input { decisions, token_uses, baseline, now_ns: NOW };
    match detect(settings, &input) {
        Ok(findings) => findings,
        Err(e) => panic!("settings refused: {e}"),
    }
}

/// The one finding of a rule for a subject; panics when there is none or more.
pub fn the_finding<'a>(findings: &'a [Finding], rule: RuleName, subject: &airlock_detect::Subject) -> &'a Finding {
    let matching: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule && &f.subject == subject).collect();
    assert_eq!(matching.len(), 1, "one {rule} finding for {subject} expected in {findings:#?}");
    matching[0]
}

pub fn measure(finding: &Finding, name: &str) -> (u64, u64) {
    match finding.values.iter().find(|m| m.name == name) {
        Some(m) => (m.observed, m.threshold),
        None => panic!("no measure {name} in {finding:#?}"),
    }
}
