//! One user's sessions on many hosts at once: an agent (or a stolen account)
//! spreading over the fleet. Only the gateway, which sees every host, can
//! fire it.

use std::collections::BTreeMap;

use super::{Draft, Run};
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{RuleName, RuleSettings};
use crate::tally::{user_of, Distinct};

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let mut hosts_by_user: BTreeMap<Subject, Distinct> = BTreeMap::new();
    for d in window.select(&run.decisions) {
        if d.session_id.is_empty() || d.host.is_empty() {
            continue;
        }
        hosts_by_user.entry(user_of(d)).or_default().add(&d.host, d.id);
    }
    let mut findings = Vec::new();
    for (subject, hosts) in hosts_by_user {
        if hosts.count() < settings.threshold {
            continue;
        }
        let listed: Vec<&str> = hosts.values.iter().map(String::as_str).take(10).collect();
        let more = if hosts.values.len() > listed.len() { ", ..." } else { "" };
        let summary = format!(
            "{subject}: sessions on {} hosts in {} s (threshold {}): {}{more}",
            hosts.count(),
            window.secs(),
            settings.threshold,
            listed.join(", ")
        );
        let values = vec![Measure::new("distinct_hosts", hosts.count(), settings.threshold)];
        let draft = Draft { severity: settings.severity, subject, values, evidence: hosts.first_seen.evidence, summary };
        findings.push(draft.into_finding(RuleName::MultiHost, window));
    }
    findings
}
