//! Settings: defaults, validation naming the field, serde both ways.

use airlock_detect::{BaselineSettings, BlockKind, RuleName, RuleSettings, Settings, Severity};

fn with_rule(rule: RuleName, change: impl FnOnce(&mut RuleSettings)) -> Settings {
    let mut settings = Settings::default();
    if let Some(rule_settings) = settings.rules.get_mut(&rule) {
        change(rule_settings);
    }
    settings
}

#[test]
fn the_defaults_validate_and_cover_every_rule() {
    let settings = Settings::default();
    assert_eq!(settings.validate(), Ok(()));
    assert!(settings.enabled);
    assert_eq!((settings.hard_block_secs, settings.soft_block_secs), (86_400, 14_400));
    assert_eq!(settings.rules.keys().copied().collect::<Vec<_>>(), RuleName::ALL);
    let table: Vec<(RuleName, u64, u64, Severity)> = RuleName::ALL
        .into_iter()
        .map(|rule| {
            let r = settings.rule(rule);
            (rule, r.threshold, r.window_secs, r.severity)
        })
        .collect();
    assert_eq!(
        table,
        [
            (RuleName::RequestRateSpike, 1500, 60, Severity::High),
            (RuleName::RepeatedDenials, 20, 300, Severity::High),
            (RuleName::ErrorStorm, 30, 300, Severity::Medium),
            (RuleName::ToolEnumeration, 60, 300, Severity::High),
            (RuleName::MultiHost, 5, 3600, Severity::High),
            (RuleName::TokenMultiAddress, 5, 3600, Severity::High),
            (RuleName::EscalationProbing, 3, 600, Severity::High),
        ]
    );
    let spike = settings.rule(RuleName::RequestRateSpike);
    assert_eq!(spike.baseline, Some(BaselineSettings { factor: 5.0, min_runs: 60, min_count: 300 }));
    assert_eq!(settings.rule(RuleName::ToolEnumeration).denied_threshold, Some(5));
}

#[test]
fn severities_map_to_blocks() {
    let table = [
        (Severity::Low, None),
        (Severity::Medium, None),
        (Severity::High, Some(BlockKind::Soft)),
        (Severity::Critical, Some(BlockKind::Hard)),
    ];
    for (severity, block) in table {
        assert_eq!(severity.block_kind(), block, "{severity:?}");
    }
    let settings = Settings::default();
    assert_eq!((settings.block_secs(BlockKind::Soft), settings.block_secs(BlockKind::Hard)), (14_400, 86_400));
}

#[test]
fn validation_names_the_field_at_fault() {
    let table: Vec<(Settings, &str)> = vec![
        (
            with_rule(RuleName::RepeatedDenials, |r| r.threshold = 0),
            "rules.repeated_denials.threshold: must be at least 1",
        ),
        (with_rule(RuleName::MultiHost, |r| r.window_secs = 0), "rules.multi_host.window_secs: must be at least 1"),
        (
            with_rule(RuleName::ErrorStorm, |r| r.window_secs = 7 * 86_400 + 1),
            "rules.error_storm.window_secs: must be at most 604800 (a week)",
        ),
        (
            with_rule(RuleName::RequestRateSpike, |r| r.baseline = None),
            "rules.request_rate_spike.baseline: is required by this rule",
        ),
        (
            with_rule(RuleName::RequestRateSpike, |r| {
                r.baseline = Some(BaselineSettings { factor: 1.0, min_runs: 60, min_count: 300 })
            }),
            "rules.request_rate_spike.baseline.factor: must be a number above 1 (is 1)",
        ),
        (
            with_rule(RuleName::RequestRateSpike, |r| {
                r.baseline = Some(BaselineSettings { factor: f64::NAN, min_runs: 60, min_count: 300 })
            }),
            "rules.request_rate_spike.baseline.factor: must be a number above 1 (is NaN)",
        ),
        (
            with_rule(RuleName::RequestRateSpike, |r| {
                r.baseline = Some(BaselineSettings { factor: 3.0, min_runs: 0, min_count: 300 })
            }),
            "rules.request_rate_spike.baseline.min_runs: must be at least 1",
        ),
        (
            with_rule(RuleName::RequestRateSpike, |r| {
                r.baseline = Some(BaselineSettings { factor: 3.0, min_runs: 1, min_count: 0 })
            }),
            "rules.request_rate_spike.baseline.min_count: must be at least 1",
        ),
        (
            with_rule(RuleName::RepeatedDenials, |r| {
                r.baseline = Some(BaselineSettings { factor: 3.0, min_runs: 1, min_count: 1 })
            }),
            "rules.repeated_denials.baseline: only request_rate_spike compares with a baseline",
        ),
        (
            with_rule(RuleName::ToolEnumeration, |r| r.denied_threshold = Some(0)),
            "rules.tool_enumeration.denied_threshold: must be at least 1",
        ),
        (
            with_rule(RuleName::ToolEnumeration, |r| r.denied_threshold = None),
            "rules.tool_enumeration.denied_threshold: is required by this rule",
        ),
        (
            with_rule(RuleName::MultiHost, |r| r.denied_threshold = Some(3)),
            "rules.multi_host.denied_threshold: only tool_enumeration counts denied programs",
        ),
        (Settings { hard_block_secs: 0, ..Settings::default() }, "hard_block_secs: must be at least 1"),
        (Settings { soft_block_secs: 0, ..Settings::default() }, "soft_block_secs: must be at least 1"),
        (
            Settings { soft_block_secs: 90_000, ..Settings::default() },
            "soft_block_secs: must not exceed hard_block_secs (86400)",
        ),
    ];
    for (settings, expected) in table {
        let error = settings.validate().err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some(expected));
    }
}

#[test]
fn settings_survive_a_json_and_a_toml_round_trip() {
    let settings = with_rule(RuleName::MultiHost, |r| {
        r.enabled = false;
        r.threshold = 9;
        r.severity = Severity::Critical;
    });
    let json = serde_json::to_string(&settings).unwrap_or_default();
    assert!(
        json.contains(r#""multi_host":{"enabled":false,"threshold":9,"window_secs":3600,"severity":"critical"}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Settings>(&json).ok(), Some(settings.clone()));
    let toml_text = toml::to_string(&settings).unwrap_or_default();
    assert!(toml_text.contains("[rules.request_rate_spike.baseline]"), "{toml_text}");
    assert_eq!(toml::from_str::<Settings>(&toml_text).ok(), Some(settings));
}

#[test]
fn a_file_names_only_what_it_changes() {
    let text = r#"
        soft_block_secs = 3600

        [rules.repeated_denials]
        threshold = 5

        [rules.request_rate_spike.baseline]
        factor = 8.0
    "#;
    let parsed: Result<Settings, _> = toml::from_str(text);
    let Ok(settings) = parsed else { panic!("{parsed:?}") };
    let mut expected = Settings { soft_block_secs: 3600, ..Settings::default() };
    if let Some(rule) = expected.rules.get_mut(&RuleName::RepeatedDenials) {
        rule.threshold = 5;
    }
    if let Some(baseline) = expected.rules.get_mut(&RuleName::RequestRateSpike).and_then(|r| r.baseline.as_mut()) {
        baseline.factor = 8.0;
    }
    assert_eq!(settings, expected);
    assert_eq!(settings.validate(), Ok(()));
}

#[test]
fn a_baseline_on_the_wrong_rule_is_read_and_then_refused_by_name() {
    let parsed: Result<Settings, _> =
        serde_json::from_str(r#"{"rules": {"error_storm": {"baseline": {"factor": 2.0}}}}"#);
    let Ok(settings) = parsed else { panic!("{parsed:?}") };
    let error = settings.validate().err().map(|e| e.field);
    assert_eq!(error.as_deref(), Some("rules.error_storm.baseline"));
}

#[test]
fn unknown_fields_and_rules_are_refused() {
    let table = [
        (r#"{"enabled": true, "treshold": 3}"#, "unknown field `treshold`"),
        (r#"{"rules": {"repeated_denials": {"threshhold": 3}}}"#, "unknown field `threshhold`"),
        (r#"{"rules": {"request_rate_spike": {"baseline": {"factr": 3.0}}}}"#, "unknown field `factr`"),
        (r#"{"rules": {"port_scan": {"threshold": 3}}}"#, "unknown variant `port_scan`"),
        (r#"{"rules": {"repeated_denials": {"severity": "urgent"}}}"#, "unknown variant `urgent`"),
    ];
    for (json, expected) in table {
        let error = serde_json::from_str::<Settings>(json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains(expected), "{json}: {error:?}");
    }
}

#[test]
fn rule_names_are_stable_snake_case() {
    let names: Vec<String> = RuleName::ALL.iter().map(|rule| rule.to_string()).collect();
    assert_eq!(
        names,
        [
            "request_rate_spike",
            "repeated_denials",
            "error_storm",
            "tool_enumeration",
            "multi_host",
            "token_multi_address",
            "escalation_probing"
        ]
    );
    for rule in RuleName::ALL {
        assert_eq!(rule.as_str().parse::<RuleName>(), Ok(rule));
        assert_eq!(serde_json::to_value(rule).ok(), Some(serde_json::Value::from(rule.as_str())));
    }
    assert!("port_scan".parse::<RuleName>().is_err());
}
