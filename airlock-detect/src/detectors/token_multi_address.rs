//! One API token used from many source addresses: a token copied off the
//! machine it was issued for.

use std::collections::{BTreeMap, BTreeSet};

use super::{Draft, Run};
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{RuleName, RuleSettings};

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let mut addresses_by_token: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for token_use in run.token_uses {
        if window.contains(token_use.time_unix_nanos) && !token_use.token.is_empty() && !token_use.address.is_empty() {
            addresses_by_token.entry(&token_use.token).or_default().insert(&token_use.address);
        }
    }
    let mut findings = Vec::new();
    for (token, addresses) in addresses_by_token {
        let count = addresses.len() as u64;
        if count < settings.threshold {
            continue;
        }
        let listed: Vec<&str> = addresses.iter().copied().take(10).collect();
        let more = if addresses.len() > listed.len() { ", ..." } else { "" };
        let subject = Subject::Token(token.to_string());
        let summary = format!(
            "{subject}: used from {count} addresses in {} s (threshold {}): {}{more}",
            window.secs(),
            settings.threshold,
            listed.join(", ")
        );
        let values = vec![Measure::new("distinct_addresses", count, settings.threshold)];
        let draft = Draft { severity: settings.severity, subject, values, evidence: Vec::new(), summary };
        findings.push(draft.into_finding(RuleName::TokenMultiAddress, window));
    }
    findings
}
