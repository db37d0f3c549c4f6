//! What the detectors look for and how loudly they report it.
//!
//! Settings read from a file may name only what they change: a rule left out,
//! or a field left out of a rule, keeps its default (see [`RuleSettings::default_for`]).
//! An unknown field or rule name is refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A day: how long a hard block lasts by default.
pub const DEFAULT_HARD_BLOCK_SECS: u64 = 86_400;
/// Four hours: how long a soft block lasts by default.
pub const DEFAULT_SOFT_BLOCK_SECS: u64 = 14_400;
/// The longest window a rule may look back over (a week): a longer one would
/// make every run scan most of the store.
pub const MAX_WINDOW_SECS: u64 = 7 * 86_400;

/// The detectors, by their stable names (serde, CLI, stored findings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    RequestRateSpike,
    RepeatedDenials,
    ErrorStorm,
    ToolEnumeration,
    MultiHost,
    TokenMultiAddress,
    EscalationProbing,
}

impl RuleName {
    pub const ALL: [RuleName; 7] = [
        RuleName::RequestRateSpike,
        RuleName::RepeatedDenials,
        RuleName::ErrorStorm,
        RuleName::ToolEnumeration,
        RuleName::MultiHost,
        RuleName::TokenMultiAddress,
        RuleName::EscalationProbing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::RequestRateSpike => "request_rate_spike",
            RuleName::RepeatedDenials => "repeated_denials",
            RuleName::ErrorStorm => "error_storm",
            RuleName::ToolEnumeration => "tool_enumeration",
            RuleName::MultiHost => "multi_host",
            RuleName::TokenMultiAddress => "token_multi_address",
            RuleName::EscalationProbing => "escalation_probing",
        }
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuleName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleName::ALL.into_iter().find(|rule| rule.as_str() == s).ok_or_else(|| format!("unknown rule {s:?}"))
    }
}

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// The block a severity calls for; the caller decides whether to apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// For [`Settings::soft_block_secs`].
    Soft,
    /// For [`Settings::hard_block_secs`].
    Hard,
}

impl Severity {
    /// High calls for a soft block, Critical for a hard one; below High, none.
    pub fn block_kind(self) -> Option<BlockKind> {
        match self {
            Severity::Low | Severity::Medium => None,
            Severity::High => Some(BlockKind::Soft),
            Severity::Critical => Some(BlockKind::Hard),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// request_rate_spike's comparison of a subject with its own history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    /// Fires when the window's count is at least `factor` × the subject's usual count.
    pub factor: f64,
    /// Runs of history a subject needs before its baseline is trusted.
    pub min_runs: u32,
    /// A count below this never fires on the baseline alone: a quiet subject
    /// going from 1 to 4 requests is not a spike.
    pub min_count: u64,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings { factor: 5.0, min_runs: 60, min_count: 300 }
    }
}

/// One rule's settings. A finding fires when the observed value is **at or
/// above** `threshold` (`>=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub enabled: bool,
    pub threshold: u64,
    /// The rule looks at what happened in `(now - window_secs, now]`.
    pub window_secs: u64,
    pub severity: Severity,
    /// request_rate_spike only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSettings>,
    /// tool_enumeration only: distinct denied programs that fire on their own,
    /// below `threshold` distinct programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_threshold: Option<u64>,
}

impl RuleSettings {
    /// The defaults, the table of the crate's documentation.
    pub fn default_for(rule: RuleName) -> RuleSettings {
        let plain = |threshold, window_secs, severity| RuleSettings {
            enabled: true,
            threshold,
            window_secs,
            severity,
            baseline: None,
            denied_threshold: None,
        };
        match rule {
            RuleName::RequestRateSpike => {
                RuleSettings { baseline: Some(BaselineSettings::default()), ..plain(1500, 60, Severity::High) }
            }
            RuleName::RepeatedDenials => plain(20, 300, Severity::High),
            RuleName::ErrorStorm => plain(30, 300, Severity::Medium),
            RuleName::ToolEnumeration => RuleSettings { denied_threshold: Some(5), ..plain(60, 300, Severity::High) },
            RuleName::MultiHost => plain(5, 3600, Severity::High),
            RuleName::TokenMultiAddress => plain(5, 3600, Severity::High),
            RuleName::EscalationProbing => plain(3, 600, Severity::High),
        }
    }

    pub fn window_ns(&self) -> i64 {
        i64::try_from(self.window_secs.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX)
    }
}

/// All of the detectors' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    /// False: [`crate::detect`] finds nothing.
    pub enabled: bool,
    /// A rule missing from the map runs with its defaults.
    pub rules: BTreeMap<RuleName, RuleSettings>,
    pub hard_block_secs: u64,
    pub soft_block_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            rules: RuleName::ALL.into_iter().map(|rule| (rule, RuleSettings::default_for(rule))).collect(),
            hard_block_secs: DEFAULT_HARD_BLOCK_SECS,
            soft_block_secs: DEFAULT_SOFT_BLOCK_SECS,
        }
    }
}

/// A setting that cannot be used, named by its path (`rules.repeated_denials.threshold`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SettingsError {
    pub field: String,
    pub problem: String,
}

impl Settings {
    /// A rule's settings: the configured ones, else its defaults.
    pub fn rule(&self, rule: RuleName) -> RuleSettings {
        self.rules.get(&rule).cloned().unwrap_or_else(|| RuleSettings::default_for(rule))
    }

    /// How long a block of this kind lasts.
    pub fn block_secs(&self, kind: BlockKind) -> u64 {
        match kind {
            BlockKind::Soft => self.soft_block_secs,
            BlockKind::Hard => self.hard_block_secs,
        }
    }

    /// The first setting that cannot be used, if any.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |field: String, problem: String| Err(SettingsError { field, problem });
        if self.hard_block_secs == 0 {
            return fail("hard_block_secs".into(), "must be at least 1".into());
        }
        if self.soft_block_secs == 0 {
            return fail("soft_block_secs".into(), "must be at least 1".into());
        }
        if self.soft_block_secs > self.hard_block_secs {
            return fail(
                "soft_block_secs".into(),
                format!("must not exceed hard_block_secs ({})", self.hard_block_secs),
            );
        }
        for (rule, settings) in &self.rules {
            validate_rule(*rule, settings)?;
        }
        Ok(())
    }
}

fn validate_rule(rule: RuleName, settings: &RuleSettings) -> Result<(), SettingsError> {
    let fail = |field: &str, problem: String| Err(SettingsError { field: format!("rules.{rule}.{field}"), problem });
    if settings.threshold == 0 {
        return fail("threshold", "must be at least 1".into());
    }
    if settings.window_secs == 0 {
        return fail("window_secs", "must be at least 1".into());
    }
    if settings.window_secs > MAX_WINDOW_SECS {
        return fail("window_secs", format!("must be at most {MAX_WINDOW_SECS} (a week)"));
    }
    match (&settings.baseline, rule) {
        (None, RuleName::RequestRateSpike) => return fail("baseline", "is required by this rule".into()),
        (Some(_), r) if r != RuleName::RequestRateSpike => {
            return fail("baseline", "only request_rate_spike compares with a baseline".into())
        }
        (Some(baseline), _) => {
            if !baseline.factor.is_finite() || baseline.factor <= 1.0 {
                return fail("baseline.factor", format!("must be a number above 1 (is {})", baseline.factor));
            }
            if baseline.min_runs == 0 {
                return fail("baseline.min_runs", "must be at least 1".into());
            }
            if baseline.min_count == 0 {
                return fail("baseline.min_count", "must be at least 1".into());
            }
        }
        (None, _) => {}
    }
    match (settings.denied_threshold, rule) {
        (None, RuleName::ToolEnumeration) => fail("denied_threshold", "is required by this rule".into()),
        (Some(_), r) if r != RuleName::ToolEnumeration => {
            fail("denied_threshold", "only tool_enumeration counts denied programs".into())
        }
        (Some(0), _) => fail("denied_threshold", "must be at least 1".into()),
        _ => Ok(()),
    }
}

/// Settings as a file writes them: anything left out keeps its default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    enabled: Option<bool>,
    #[serde(default)]
    rules: BTreeMap<RuleName, RuleSettingsFile>,
    hard_block_secs: Option<u64>,
    soft_block_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSettingsFile {
    enabled: Option<bool>,
    threshold: Option<u64>,
    window_secs: Option<u64>,
    severity: Option<Severity>,
    baseline: Option<BaselineSettingsFile>,
    denied_threshold: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineSettingsFile {
    factor: Option<f64>,
    min_runs: Option<u32>,
    min_count: Option<u64>,
}

impl From<SettingsFile> for Settings {
    fn from(file: SettingsFile) -> Self {
        let mut settings = Settings::default();
        settings.enabled = file.enabled.unwrap_or(settings.enabled);
        settings.hard_block_secs = file.hard_block_secs.unwrap_or(settings.hard_block_secs);
        settings.soft_block_secs = file.soft_block_secs.unwrap_or(settings.soft_block_secs);
        for (rule, given) in file.rules {
            settings.rules.insert(rule, given.over(RuleSettings::default_for(rule)));
        }
        settings
    }
}

impl RuleSettingsFile {
    fn over(self, default: RuleSettings) -> RuleSettings {
        // A baseline given for a rule without one is kept, its gaps filled
        // with the defaults, so that validate() can refuse it by name.
        let baseline = match self.baseline {
            None => default.baseline,
            Some(given) => {
                let fallback = default.baseline.unwrap_or_default();
                Some(BaselineSettings {
                    factor: given.factor.unwrap_or(fallback.factor),
                    min_runs: given.min_runs.unwrap_or(fallback.min_runs),
                    min_count: given.min_count.unwrap_or(fallback.min_count),
                })
            }
        };
        RuleSettings {
            enabled: self.enabled.unwrap_or(default.enabled),
            threshold: self.threshold.unwrap_or(default.threshold),
            window_secs: self.window_secs.unwrap_or(default.window_secs),
            severity: self.severity.unwrap_or(default.severity),
            baseline,
            denied_threshold: self.denied_threshold.or(default.denied_threshold),
        }
    }
}
