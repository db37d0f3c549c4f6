//! Security monitoring: findings and the blocks they place, acknowledged,
//! lifted (of two lifts exactly one wins), expired at read time; settings
//! versions; API token uses kept one row per (token, address).

use airlock_api::v1::{Measure, SecurityFinding};
use airlock_gateway_store::{is_block_id, is_finding_id, GatewayStore, NewFinding, PreparedFinding, StoreError};

use crate::common::Ctx;

both_backends!(
    a_finding_places_a_block_that_is_acknowledged_then_lifted,
    a_detection_pass_is_stored_whole_or_not_at_all,
    of_two_concurrent_lifts_exactly_one_wins,
    blocks_expire_at_read_time,
    settings_are_versioned_and_token_uses_bounded,
);

const SEC: i64 = 1_000_000_000;

fn finding(subject: &str) -> SecurityFinding {
    SecurityFinding {
        rule: "repeated_denials".into(),
        severity: "high".into(),
        subject_kind: "session".into(),
        subject: subject.into(),
        values: vec![Measure { name: "denies".into(), observed: 25, threshold: 20 }],
        evidence: vec![7, 8],
        evidence_hosts: vec!["h1".into(), "h2".into()],
        summary: "25 denies".into(),
        ..Default::default()
    }
}

async fn org(s: &GatewayStore, name: &str) -> i64 {
    s.create_org(name).await.expect("an org").id
}

async fn a_finding_places_a_block_that_is_acknowledged_then_lifted(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let now = 1_000 * SEC;
    let new = NewFinding { finding: finding("s1"), block_kind: Some("soft".into()), block_secs: 3600 };
    let (f, b) = s.insert_finding(acme, &new, now).await.unwrap();
    let b = b.expect("a block");
    assert!(is_finding_id(&f.id) && is_block_id(&b.id), "{} {}", f.id, b.id);
    assert_eq!((f.block_id.as_str(), b.finding_id.as_str()), (b.id.as_str(), f.id.as_str()));
    assert_eq!((b.kind.as_str(), b.status.as_str(), b.expires_unix_nanos), ("soft", "active", now + 3600 * SEC));
    let (plain, none) = s.insert_finding(acme, &NewFinding { finding: finding("s2"), ..Default::default() }, now + 1).await.unwrap();
    assert!(none.is_none() && plain.block_id.is_empty());

    let listed = s.list_findings(acme, 0).await.unwrap();
    assert_eq!(listed.iter().map(|f| f.subject.as_str()).collect::<Vec<_>>(), ["s2", "s1"], "newest first");
    assert_eq!((listed[1].evidence.clone(), listed[1].evidence_hosts.clone()), (vec![7, 8], vec!["h1".to_string(), "h2".to_string()]));
    assert_eq!(s.blocks_in_force(acme, now).await.unwrap().len(), 1);
    let other = org(s, "other").await;
    assert!(s.list_findings(other, 0).await.unwrap().is_empty(), "another org sees nothing");
    let hidden = s.lift_block(other, &b.id, "x", "", now).await.unwrap_err();
    assert!(matches!(hidden, StoreError::NotFound(_)), "{hidden:?}");

    let acked = s.acknowledge_block(acme, &b.id, "ops", "looking", now + SEC).await.unwrap();
    assert_eq!((acked.status.as_str(), acked.acknowledged_by.as_str(), acked.acknowledged_unix_nanos), ("acknowledged", "ops", now + SEC));
    assert_eq!(s.blocks_in_force(acme, now + SEC).await.unwrap().len(), 1, "an acknowledged block stays in force");
    let twice = s.acknowledge_block(acme, &b.id, "ops", "", now + SEC).await.unwrap_err();
    assert!(matches!(&twice, StoreError::Refused(m) if m.contains("it is acknowledged by ops")), "{twice:?}");
    assert_eq!(s.list_blocks(acme, "acknowledged", 0, now + SEC).await.unwrap().len(), 1);

    let lifted = s.lift_block(acme, &b.id, "admin", "false positive", now + 2 * SEC).await.unwrap();
    assert_eq!((lifted.status.as_str(), lifted.lifted_by.as_str()), ("lifted", "admin"));
    assert!(s.blocks_in_force(acme, now + 2 * SEC).await.unwrap().is_empty());
    assert!(s.all_blocks_in_force(now + 2 * SEC).await.unwrap().is_empty());
    assert_eq!(s.list_blocks(acme, "lifted", 0, now + 2 * SEC).await.unwrap().len(), 1);
    let refused = s.acknowledge_block(acme, &b.id, "ops", "", now + 3 * SEC).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Refused(m) if m.contains("lifted by admin")), "{refused:?}");
    assert!(matches!(s.list_blocks(acme, "maybe", 0, now).await, Err(StoreError::Refused(_))));
}

/// One pass blocks a user and a session: both findings and both blocks are
/// written in one transaction, and a pass that fails part-way leaves nothing.
async fn a_detection_pass_is_stored_whole_or_not_at_all(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let now = 1_000 * SEC;
    let user = NewFinding { finding: SecurityFinding { subject_kind: "user".into(), ..finding("alice") }, block_kind: Some("hard".into()), block_secs: 60 };
    let session = NewFinding { finding: finding("s1"), block_kind: Some("hard".into()), block_secs: 60 };
    let pass: Vec<PreparedFinding> = [&user, &session].iter().map(|n| n.prepare(now).unwrap()).collect();
    assert!(pass.iter().all(|p| p.block.as_ref().is_some_and(|b| b.finding_id == p.finding.id)), "{pass:?}");
    s.insert_findings(acme, &pass).await.unwrap();
    let mut blocked: Vec<String> = s.blocks_in_force(acme, now).await.unwrap().into_iter().map(|b| format!("{} {}", b.subject_kind, b.subject)).collect();
    blocked.sort();
    assert_eq!(blocked, ["session s1", "user alice"]);
    assert_eq!(s.list_findings(acme, 0).await.unwrap().len(), 2);

    // The second finding of this pass repeats the first's id: the database refuses it, and the first is not kept either.
    let other = org(s, "other").await;
    let first = session.prepare(now).unwrap();
    let refused = s.insert_findings(other, &[first.clone(), first]).await;
    assert!(refused.is_err(), "a duplicate finding id was stored");
    assert!(s.list_findings(other, 0).await.unwrap().is_empty(), "half a pass was stored");
    assert!(s.blocks_in_force(other, now).await.unwrap().is_empty(), "half a pass's blocks were stored");
    assert!(s.insert_findings(other, &[]).await.is_ok(), "an empty pass writes nothing and succeeds");
}

async fn of_two_concurrent_lifts_exactly_one_wins(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let now = 1_000 * SEC;
    for round in 0..5 {
        let new = NewFinding { finding: finding(&format!("s{round}")), block_kind: Some("hard".into()), block_secs: 60 };
        let b = s.insert_finding(acme, &new, now).await.unwrap().1.expect("a block");
        let (a, c) = tokio::join!(s.lift_block(acme, &b.id, "alice", "", now + 1), s.lift_block(acme, &b.id, "carol", "", now + 1));
        let wins = [&a, &c].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {a:?} {c:?}");
        let loser = if a.is_ok() { c } else { a };
        assert!(matches!(&loser, Err(StoreError::Refused(m)) if m.contains("it is lifted by")), "{loser:?}");
    }
}

async fn blocks_expire_at_read_time(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let now = 1_000 * SEC;
    let b = s.insert_finding(acme, &NewFinding { finding: finding("s1"), block_kind: Some("soft".into()), block_secs: 10 }, now).await.unwrap().1.unwrap();
    assert_eq!(s.security_block(acme, &b.id, now + 9 * SEC).await.unwrap().unwrap().status, "active");
    let later = now + 10 * SEC;
    assert_eq!(s.security_block(acme, &b.id, later).await.unwrap().unwrap().status, "expired");
    assert!(s.blocks_in_force(acme, later).await.unwrap().is_empty());
    assert_eq!(s.list_blocks(acme, "expired", 0, later).await.unwrap().len(), 1);
    assert!(s.list_blocks(acme, "active", 0, later).await.unwrap().is_empty());
    let late = s.lift_block(acme, &b.id, "admin", "", later).await.unwrap_err();
    assert!(matches!(&late, StoreError::Refused(m) if m.contains("it is expired")), "{late:?}");
}

async fn settings_are_versioned_and_token_uses_bounded(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    assert!(s.security_settings(acme, None).await.unwrap().is_none());
    assert_eq!(s.insert_security_settings(acme, "{\"enabled\":true}", "admin", "first", 1).await.unwrap(), 1);
    assert_eq!(s.insert_security_settings(acme, "{\"enabled\":false}", "admin", "off", 2).await.unwrap(), 2);
    let latest = s.security_settings(acme, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.document.as_str(), latest.comment.as_str()), (2, "{\"enabled\":false}", "off"));
    assert_eq!(s.security_settings(acme, Some(1)).await.unwrap().unwrap().comment, "first");
    assert_eq!(s.security_settings_history(acme).await.unwrap().iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);

    for i in 0..50 {
        s.record_token_use(acme, 7, "ci (token 7)", if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" }, 100 + i).await.unwrap();
    }
    let uses = s.token_uses(acme, 0).await.unwrap();
    assert_eq!(uses.len(), 2, "one row per (token, address): {uses:?}");
    assert_eq!((uses[0].address.as_str(), uses[0].uses, uses[0].first_ns, uses[0].last_ns), ("10.0.0.1", 25, 100, 148));
    assert_eq!(s.token_uses(acme, 149).await.unwrap().len(), 1, "only the address seen since");

    assert!(s.security_baseline(acme).await.unwrap().is_none());
    s.save_security_baseline(acme, "{\"subjects\":[]}", 1).await.unwrap();
    s.save_security_baseline(acme, "{\"subjects\":[1]}", 2).await.unwrap();
    assert_eq!(s.security_baseline(acme).await.unwrap().as_deref(), Some("{\"subjects\":[1]}"));

    assert!(s.claim_detection_run(acme, "r1", 1_000, 500).await.unwrap());
    assert!(!s.claim_detection_run(acme, "r2", 1_200, 500).await.unwrap(), "too soon after r1's pass");
    assert!(s.claim_detection_run(acme, "r2", 1_500, 500).await.unwrap());
}
