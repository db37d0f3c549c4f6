use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

/// The kernel map's behaviour for these tests: put overwrites, delete says whether it was there.
#[derive(Default)]
struct Map(RefCell<HashMap<GrantKey, GrantValue>>);

impl GrantTable for Map {
    fn put(&self, key: &GrantKey, value: &GrantValue) -> Result<()> {
        self.0.borrow_mut().insert(*key, *value);
        Ok(())
    }
    fn delete(&self, key: &GrantKey) -> Result<bool> {
        Ok(self.0.borrow_mut().remove(key).is_some())
    }
}

fn decision(argv: &[&str]) -> pb::Decision {
    pb::Decision {
        id: 7,
        session_id: "00000000000000aa".into(),
        user: "dev".into(),
        role: "default".into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        rule: Some("terraform apply".into()),
        policy: Some("infra".into()),
        ..Default::default()
    }
}

fn hold(approvals: &mut Approvals, argv: &[&str], session: u64, now: i64) -> Opened {
    let d = decision(argv);
    let held = HeldExec { decision: &d, session, rule_id: 3, argv_hash: airlock_common::abi::word_hash(argv.join(" ").as_bytes()), exe_identity: 11 };
    approvals.open(held, now)
}

fn new_id(o: Opened) -> String {
    match o {
        Opened::New(r) => r.id,
        Opened::Reused(r) => panic!("reused {}", r.id),
        Opened::Flood { pending } => panic!("flood at {pending}"),
    }
}

const T0: Clocks = Clocks { unix_ns: 1_000_000_000_000, boot_ns: 5_000_000_000 };

fn approve(grant_for: Option<Duration>) -> Verdict {
    Verdict { approve: true, grant_for, reason: "ok".into(), decided_by: "root".into() }
}

#[test]
fn the_same_argv_reuses_the_pending_request_and_a_flood_is_refused() {
    let mut a = Approvals::in_memory(ApprovalSettings { max_pending_per_session: 2, ..Default::default() });
    let id = new_id(hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns));
    match hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns) {
        Opened::Reused(r) => assert_eq!((r.id.as_str(), r.attempts), (id.as_str(), 2)),
        _ => panic!("the same argv opened another request"),
    }
    new_id(hold(&mut a, &["terraform", "apply", "-auto-approve"], 1, T0.unix_ns));
    assert!(matches!(hold(&mut a, &["terraform", "apply", "x"], 1, T0.unix_ns), Opened::Flood { pending: 2 }));
    // Another session has its own cap.
    new_id(hold(&mut a, &["terraform", "apply", "x"], 2, T0.unix_ns));
}

#[test]
fn approving_once_writes_a_grant_for_that_argv_and_a_decision_is_final() {
    let map = Map::default();
    let mut a = Approvals::in_memory(ApprovalSettings::default());
    let id = new_id(hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns));
    let r = a.decide(&id, &approve(None), true, T0, &map).expect("approve");
    assert_eq!((r.state.as_str(), r.verdict.as_ref().map(|v| v.grant.as_str())), (APPROVED, Some("once")));
    let key = GrantKey { session_id: 1, kind: GRANT_ONCE, rule_id: 0, argv_hash: airlock_common::abi::word_hash(b"terraform apply"), exe_identity: 11 };
    assert_eq!(map.0.borrow().get(&key).map(|v| v.request), Some(parse_request_id(&id).unwrap()));
    let again = a.decide(&id, &Verdict { approve: false, grant_for: None, reason: String::new(), decided_by: "bob".into() }, true, T0, &map);
    assert!(matches!(&again, Err(DecideError::NotPending { state, .. }) if state == APPROVED), "{again:?}");
    assert!(a.grant_used(parse_request_id(&id).unwrap()).is_some());
    assert!(a.grant_used(parse_request_id(&id).unwrap()).is_none(), "a one-shot grant is used once");
}

#[test]
fn unknown_ids_rejections_and_ended_sessions() {
    let map = Map::default();
    let mut a = Approvals::in_memory(ApprovalSettings::default());
    assert!(matches!(a.decide("apr-00000000000000ff", &approve(None), true, T0, &map), Err(DecideError::NotFound(_))));
    let id = new_id(hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns));
    let r = a.decide(&id, &Verdict { approve: false, grant_for: None, reason: "no".into(), decided_by: "root".into() }, true, T0, &map).unwrap();
    assert_eq!(r.state, REJECTED);
    assert!(map.0.borrow().is_empty());
    let id = new_id(hold(&mut a, &["kubectl", "delete"], 1, T0.unix_ns));
    assert!(matches!(a.decide(&id, &approve(None), false, T0, &map), Err(DecideError::SessionGone { .. })));
    assert_eq!(a.get(&id).unwrap().state, CANCELLED);
}

#[test]
fn ticks_expire_requests_cancel_ended_sessions_and_remove_their_grants() {
    let map = Map::default();
    let mut a = Approvals::in_memory(ApprovalSettings { ttl: Duration::from_secs(60), ..Default::default() });
    let stale = new_id(hold(&mut a, &["a"], 1, T0.unix_ns));
    let granted = new_id(hold(&mut a, &["b"], 2, T0.unix_ns));
    let cancelled = new_id(hold(&mut a, &["c"], 2, T0.unix_ns));
    a.decide(&granted, &approve(Some(Duration::from_secs(1800))), true, T0, &map).unwrap();
    assert_eq!(map.0.borrow().len(), 1);
    let later = Clocks { unix_ns: T0.unix_ns + 61_000_000_000, boot_ns: T0.boot_ns + 61_000_000_000 };
    let changed = a.tick(later, |s| s == 1, &map);
    let states: Vec<(&str, String)> = changed.iter().map(|(e, r)| (*e, r.id.clone())).collect();
    assert!(states.contains(&("expired", stale)) && states.contains(&("cancelled", cancelled)), "{states:?}");
    assert!(map.0.borrow().is_empty(), "session 2 ended: its grant must go");
}

#[test]
fn a_grant_for_a_while_follows_its_rule_across_a_reload() {
    let map = Map::default();
    let mut a = Approvals::in_memory(ApprovalSettings::default());
    let id = new_id(hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns));
    a.decide(&id, &approve(Some(Duration::from_secs(600))), true, T0, &map).unwrap();
    a.rekey(|role, text| (role == "default" && text == "terraform apply").then_some(42), &map);
    let keys: Vec<GrantKey> = map.0.borrow().keys().copied().collect();
    assert_eq!(keys, vec![GrantKey { session_id: 1, kind: GRANT_RULE, rule_id: 42, argv_hash: 0, exe_identity: 0 }]);
    a.rekey(|_, _| None, &map);
    assert!(map.0.borrow().is_empty(), "a rule that is gone takes its grant with it");
}

#[test]
fn requests_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("airlock-approvals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("approvals.json");
    let mut a = Approvals::persistent(ApprovalSettings::default(), file.clone());
    let id = new_id(hold(&mut a, &["terraform", "apply"], 1, T0.unix_ns));
    let b = Approvals::persistent(ApprovalSettings::default(), file);
    assert_eq!(b.get(&id).map(|r| r.state), Some(PENDING.to_string()));
    assert_eq!(b.session_of(&id), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
