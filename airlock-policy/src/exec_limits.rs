//! Rate limits and time windows as one role enforces them.
//!
//! Every pattern of a role becomes one limit rule, whatever mix of policies
//! named it: its rate is the strictest any of them gives, and its time windows
//! are all of theirs (the command runs only while every one is open). The
//! kernel reads a rule's limit from `rule_limits` by rule id; whether a window
//! is open now is the daemon's to say (`CompiledPolicy::limit_entries_at`),
//! so no exec reads a clock.

use airlock_common::abi::{RuleLimit, LIMIT_CLOSED};
use chrono::{DateTime, Utc};

use crate::model::{LimitPattern, Policy, RateLimit, TimeWindow};

/// One pattern's limits in one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRuleCompiled {
    pub rule_id: u32,
    /// The first policy of the role that limits the pattern.
    pub policy_id: String,
    pub pattern: LimitPattern,
    /// The strictest rate any policy of the role gives the pattern.
    pub rate: Option<RateLimit>,
    /// Every window the role's policies give it; all must be open.
    pub windows: Vec<TimeWindow>,
}

impl LimitRuleCompiled {
    /// The rule as an operator reads it: `kubectl * 100/minute; Mon-Fri 09:00-17:00 UTC`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.rate.iter().map(ToString::to_string).collect();
        parts.extend(self.windows.iter().map(ToString::to_string));
        format!("{} {}", self.pattern.text(), parts.join("; "))
    }

    /// The command the limit set's tries match, if the pattern names one:
    /// (program, words, text).
    pub fn command(&self) -> Option<(&str, &[String], &str)> {
        match &self.pattern {
            LimitPattern::EveryExec => None,
            LimitPattern::Command { command, text } => Some((&command.program, &command.words, text)),
        }
    }

    /// Open now: no window, or every window open.
    pub fn open_at(&self, now: DateTime<Utc>) -> bool {
        self.windows.iter().all(|w| w.is_open(now))
    }

    /// The kernel's entry for the rule at `now`.
    pub fn entry_at(&self, now: DateTime<Utc>) -> RuleLimit {
        self.entry(self.open_at(now))
    }

    /// The kernel's entry before any clock was read: a rule with a time
    /// window is closed until the daemon says otherwise.
    pub fn entry_unclocked(&self) -> RuleLimit {
        self.entry(self.windows.is_empty())
    }

    fn entry(&self, open: bool) -> RuleLimit {
        let (interval_ns, burst_ns) = self.rate.as_ref().map_or((0, 0), |r| (r.emission_interval_ns(), r.burst_tolerance_ns()));
        RuleLimit { interval_ns, burst_ns, flags: if open { 0 } else { LIMIT_CLOSED }, pad: 0 }
    }
}

/// Stricter: the longer wait between tokens, then the smaller bucket.
fn stricter(a: RateLimit, b: RateLimit) -> RateLimit {
    let key = |r: &RateLimit| (r.emission_interval_ns(), std::cmp::Reverse(r.count));
    if key(&b) > key(&a) {
        b
    } else {
        a
    }
}

/// Adds one policy's rate limits and time windows to a role's limit rules;
/// `new_rule` hands out the id (and names the rule) of a pattern seen first.
pub fn collect(policy: &Policy, limits: &mut Vec<LimitRuleCompiled>, mut new_rule: impl FnMut(&LimitPattern) -> u32) {
    let mut entry = |pattern: &LimitPattern, limits: &mut Vec<LimitRuleCompiled>| -> usize {
        let same = |p: &LimitPattern| match (p, pattern) {
            (LimitPattern::EveryExec, LimitPattern::EveryExec) => true,
            (LimitPattern::Command { command: a, .. }, LimitPattern::Command { command: b, .. }) => a.text == b.text,
            _ => false,
        };
        if let Some(i) = limits.iter().position(|l| same(&l.pattern)) {
            return i;
        }
        limits.push(LimitRuleCompiled {
            rule_id: new_rule(pattern),
            policy_id: policy.id.to_string(),
            pattern: pattern.clone(),
            rate: None,
            windows: Vec::new(),
        });
        limits.len() - 1
    };
    for (pattern, rate) in policy.rate_limits.iter() {
        let i = entry(pattern, limits);
        let rule = &mut limits[i];
        rule.rate = Some(match rule.rate.take() {
            Some(old) => stricter(old, rate.clone()),
            None => rate.clone(),
        });
    }
    for (pattern, window) in policy.time_windows.iter() {
        let i = entry(pattern, limits);
        if !limits[i].windows.contains(window) {
            limits[i].windows.push(window.clone());
        }
    }
}
