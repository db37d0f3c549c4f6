use airlock_detect::{Measure, RuleName, Settings, Severity};

use super::*;

const MINUTE: i64 = 60_000_000_000;

fn finding(rule: RuleName, severity: Severity, subject: Subject) -> Finding {
    Finding {
        rule,
        severity,
        subject,
        window_start_ns: 0,
        window_end_ns: MINUTE,
        values: vec![Measure { name: "denies".into(), observed: 25, threshold: 20 }],
        evidence: vec![7, 8, 9],
        summary: "25 denies in 300 s (threshold 20)".into(),
    }
}

fn user(name: &str) -> Subject {
    Subject::User(name.into())
}

#[test]
fn high_places_a_soft_block_critical_a_hard_one_and_lower_none() {
    let mut s = Security::open(None);
    let settings = Settings::default();
    let placed = s.record_findings(
        vec![
            finding(RuleName::RepeatedDenials, Severity::High, user("alice")),
            finding(RuleName::EscalationProbing, Severity::Critical, Subject::Session("00000000000000ab".into())),
            finding(RuleName::ErrorStorm, Severity::Medium, user("bob")),
            finding(RuleName::TokenMultiAddress, Severity::High, Subject::Token("ci".into())),
        ],
        &settings,
        MINUTE,
    );
    assert_eq!(placed.len(), 2, "{placed:#?}");
    let soft = &placed[0];
    assert_eq!((soft.kind.as_str(), soft.subject_kind.as_str(), soft.subject.as_str()), (SOFT, "user", "alice"));
    assert_eq!(soft.expires_unix_nanos, MINUTE + 4 * 3600 * 1_000_000_000);
    assert_eq!(soft.values[0].observed, 25);
    assert_eq!(soft.status, ACTIVE);
    assert_eq!(soft.origin, LOCAL);
    let hard = &placed[1];
    assert_eq!((hard.kind.as_str(), hard.subject_kind.as_str()), (HARD, "session"));
    assert_eq!(hard.expires_unix_nanos, MINUTE + 24 * 3600 * 1_000_000_000);
    // Every finding is kept; those that placed a block name it.
    let findings = s.findings(10);
    assert_eq!(findings.len(), 4);
    assert_eq!(findings.iter().filter(|f| !f.block_id.is_empty()).count(), 2);
    assert_eq!(findings.iter().find(|f| f.subject == "alice").map(|f| f.block_id.clone()), Some(soft.id.clone()));
    assert_eq!(findings[0].evidence, vec![7, 8, 9]);
}

#[test]
fn a_subject_already_blocked_as_hard_or_harder_gets_no_second_block() {
    let mut s = Security::open(None);
    let settings = Settings::default();
    let first = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::High, user("alice"))], &settings, MINUTE);
    let again = s.record_findings(vec![finding(RuleName::ToolEnumeration, Severity::High, user("alice"))], &settings, 2 * MINUTE);
    assert!(again.is_empty(), "a second soft block for a soft-blocked user: {again:#?}");
    let harder = s.record_findings(vec![finding(RuleName::EscalationProbing, Severity::Critical, user("alice"))], &settings, 3 * MINUTE);
    assert_eq!(harder.len(), 1, "a critical finding must still harden the block");
    assert_eq!(s.block_for("any", "alice", 3 * MINUTE).map(|b| b.id.clone()), Some(harder[0].id.clone()));
    assert_ne!(first[0].id, harder[0].id);
}

#[test]
fn blocks_cover_their_user_or_session_until_they_expire_or_are_lifted() {
    let mut s = Security::open(None);
    let settings = Settings { soft_block_secs: 60, ..Settings::default() };
    let placed = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::High, user("alice"))], &settings, 0);
    let id = placed[0].id.clone();
    assert!(s.block_for("00000000000000aa", "alice", MINUTE - 1).is_some());
    assert!(s.block_for("00000000000000aa", "bob", MINUTE - 1).is_none());
    let acked = s.act(&id, false, "root", 10).expect("ack");
    assert_eq!((acked.status.as_str(), acked.acknowledged_by.as_str()), (ACKNOWLEDGED, "root"));
    assert!(s.block_for("00000000000000aa", "alice", 11).is_some(), "an acknowledged block stays in force");
    let expired = s.expire(MINUTE);
    assert_eq!(expired.len(), 1);
    assert!(s.block_for("00000000000000aa", "alice", MINUTE).is_none());
    let err = s.act(&id, true, "root", MINUTE).expect_err("an expired block cannot be lifted");
    assert!(err.to_string().contains("is expired"), "{err}");

    // Found again once the rule's window has passed: a new block.
    let again = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::High, user("alice"))], &settings, 6 * MINUTE);
    let lifted = s.act(&again[0].id, true, "root", 6 * MINUTE + 1).expect("lift");
    assert_eq!((lifted.status.as_str(), lifted.lifted_by.as_str()), (LIFTED, "root"));
    assert!(s.block_for("x", "alice", 6 * MINUTE + 2).is_none());
    assert_eq!(s.last_block_for("x", "alice").map(|b| b.id.clone()), Some(again[0].id.clone()));
    assert!(s.act("blk-0000000000000001", true, "root", 0).expect_err("unknown").to_string().contains("no security block"));
}

#[test]
fn the_gateway_set_replaces_the_gateway_blocks_and_they_are_ended_only_there() {
    let mut s = Security::open(None);
    let block = |id: &str, subject: &str| pb::SecurityBlock {
        id: id.into(),
        kind: HARD.into(),
        subject_kind: "user".into(),
        subject: subject.into(),
        status: ACTIVE.into(),
        expires_unix_nanos: i64::MAX,
        ..Default::default()
    };
    let (new, gone) = s.replace_gateway_blocks(vec![block("blk-00000000000000a1", "alice"), block("blk-00000000000000a2", "bob")]);
    assert_eq!((new.len(), gone.len()), (2, 0));
    assert!(s.state.blocks.iter().all(|b| b.origin == GATEWAY));
    let err = s.act("blk-00000000000000a1", true, "root", 0).expect_err("a gateway block is the gateway's to lift");
    assert!(err.to_string().contains("airlock-gateway security lift blk-00000000000000a1"), "{err}");
    // The next set no longer holds alice's block: it ends here too.
    let (new, gone) = s.replace_gateway_blocks(vec![block("blk-00000000000000a2", "bob")]);
    assert_eq!(new.len(), 0);
    assert_eq!(gone.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["blk-00000000000000a1"]);
    assert!(s.block_for("x", "alice", 0).is_none());
    assert!(s.block_for("x", "bob", 0).is_some());
}

#[test]
fn numbers_are_stable_and_the_state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("airlock-security-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("security.json");
    let mut s = Security::open(Some(file.clone()));
    let placed = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::High, user("alice"))], &Settings::default(), MINUTE);
    let n = s.number_of(&placed[0].id);
    assert_eq!(s.number_of(&placed[0].id), n);
    s.save();
    let mut back = Security::open(Some(file.clone()));
    assert_eq!(back.blocks("", 10), s.blocks("", 10));
    assert_eq!(back.number_of(&placed[0].id), n);
    std::fs::write(&file, b"{ not json").expect("damage");
    assert!(Security::open(Some(file)).blocks("", 10).is_empty(), "a damaged file starts empty");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lifted_block_is_not_placed_again_from_the_evidence_a_person_reviewed() {
    let mut s = Security::open(None);
    let settings = Settings::default();
    let first = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::High, user("alice"))], &settings, MINUTE);
    s.act(&first[0].id, true, "root", MINUTE + 5).expect("lift");
    // The next run's window (0, 2 min] still holds the reviewed denials.
    let again = finding(RuleName::RepeatedDenials, Severity::High, user("alice"));
    assert!(s.record_findings(vec![again], &settings, 2 * MINUTE).is_empty());
    // Another rule, or a window that starts after the lift, still blocks.
    let other = s.record_findings(vec![finding(RuleName::ToolEnumeration, Severity::High, user("alice"))], &settings, 2 * MINUTE);
    assert_eq!(other.len(), 1);
    s.act(&other[0].id, true, "root", 2 * MINUTE + 1).expect("lift");
    let later = Finding { window_start_ns: 3 * MINUTE, window_end_ns: 8 * MINUTE, ..finding(RuleName::RepeatedDenials, Severity::High, user("alice")) };
    assert_eq!(s.record_findings(vec![later], &settings, 8 * MINUTE).len(), 1);
}

#[test]
fn a_finding_found_again_is_recorded_once_until_its_window_has_passed() {
    let mut s = Security::open(None);
    let settings = Settings::default();
    let first = s.record_findings(vec![finding(RuleName::ErrorStorm, Severity::Medium, user("bob"))], &settings, MINUTE);
    assert!(first.is_empty(), "medium places no block");
    s.record_findings(vec![finding(RuleName::ErrorStorm, Severity::Medium, user("bob"))], &settings, 2 * MINUTE);
    assert_eq!(s.findings(10).len(), 1, "the same evidence found again a minute later is no new finding");
    // The rule's window (300 s) passed is news; so is more severe.
    s.record_findings(vec![finding(RuleName::ErrorStorm, Severity::Medium, user("bob"))], &settings, 7 * MINUTE);
    assert_eq!(s.findings(10).len(), 2);
    let harder = s.record_findings(vec![finding(RuleName::ErrorStorm, Severity::High, user("bob"))], &settings, 8 * MINUTE);
    assert_eq!((s.findings(10).len(), harder.len()), (3, 1));
    // While its block is in force, a blocked subject's rule finds nothing new.
    let placed = s.record_findings(vec![finding(RuleName::RepeatedDenials, Severity::Critical, user("eve"))], &settings, MINUTE);
    assert_eq!(placed.len(), 1);
    let before = s.findings(100).len();
    let late = Finding { window_start_ns: 10 * MINUTE, window_end_ns: 20 * MINUTE, ..finding(RuleName::RepeatedDenials, Severity::Critical, user("eve")) };
    s.record_findings(vec![late], &settings, 20 * MINUTE);
    assert_eq!(s.findings(100).len(), before);
}
