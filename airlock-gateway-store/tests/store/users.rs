//! The web UI's users and sessions, and the per-hour decision counts of
//! its dashboard.

use airlock_api::v1::Decision;
use airlock_gateway_store::{GatewayStore, HourCount, NewUser, StoreError, MAX_HOUR_BUCKETS};

use crate::common::{incoming, Ctx};

both_backends!(
    usernames_and_oidc_identities_are_unique,
    sessions_end_on_expiry_disable_and_password_change,
    updates_stay_in_their_org_and_keep_one_admin,
    hourly_counts_cover_every_hour_of_the_range,
);

const HOUR: i64 = 3_600_000_000_000;

fn new_user(org_id: i64, username: &str, role: &str) -> NewUser {
    NewUser {
        org_id,
        username: username.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{username}$hash"),
        role: role.into(),
        oidc_subject: String::new(),
        created_ns: 7,
    }
}

async fn org(s: &GatewayStore, name: &str) -> i64 {
    s.create_org(name).await.expect("an org").id
}

async fn usernames_and_oidc_identities_are_unique(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let other = org(s, "other").await;
    let id = s.insert_user(&new_user(acme, "ada@example.com", "admin")).await.unwrap();
    let taken = s.insert_user(&new_user(other, "ada@example.com", "viewer")).await.unwrap_err();
    assert!(matches!(&taken, StoreError::Conflict(m) if m.contains("ada@example.com") && m.contains("taken")), "{taken:?}");
    // Case-sensitive: another user.
    s.insert_user(&new_user(acme, "Ada@example.com", "viewer")).await.unwrap();

    let oidc = NewUser { password_hash: String::new(), oidc_subject: "https://idp.example|123".into(), ..new_user(acme, "grace", "approver") };
    let grace = s.insert_user(&oidc).await.unwrap();
    let twice = s.insert_user(&NewUser { username: "grace2".into(), ..oidc.clone() }).await.unwrap_err();
    assert!(matches!(&twice, StoreError::Conflict(m) if m.contains("OIDC")), "{twice:?}");
    // Password users all have an empty subject: no conflict among them.
    s.insert_user(&new_user(other, "bob", "viewer")).await.unwrap();
    let bad = s.insert_user(&new_user(acme, "root", "root")).await.unwrap_err();
    assert!(matches!(bad, StoreError::Refused(_)), "{bad:?}");

    let found = s.user_by_oidc_subject("https://idp.example|123").await.unwrap().expect("by subject");
    assert_eq!((found.id, found.username.as_str(), found.role.as_str(), found.password_hash.as_str()), (grace, "grace", "approver", ""));
    assert_eq!(s.user_by_oidc_subject("").await.unwrap(), None, "an empty subject is nobody");
    let ada = s.user_by_name("ada@example.com").await.unwrap().expect("by name");
    assert_eq!((ada.id, ada.org_id, ada.org_name.as_str(), ada.disabled, ada.created_ns, ada.last_login_ns), (id, acme, "acme", false, 7, 0));
    assert_eq!(s.user_by_name("nobody").await.unwrap(), None);
    s.record_login(id, 99).await.unwrap();
    assert_eq!(s.user_by_name("ada@example.com").await.unwrap().unwrap().last_login_ns, 99);

    let names: Vec<String> = s.list_users(acme).await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["Ada@example.com", "ada@example.com", "grace"], "by username, the org's only");
    assert_eq!(s.list_users(other).await.unwrap().len(), 1);
}

async fn sessions_end_on_expiry_disable_and_password_change(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    s.insert_user(&new_user(acme, "admin", "admin")).await.unwrap();
    let id = s.insert_user(&new_user(acme, "vic", "viewer")).await.unwrap();
    s.insert_ui_session("h1", id, "csrf1", 100, 1_000).await.unwrap();
    s.insert_ui_session("h2", id, "csrf2", 100, 500).await.unwrap();
    assert!(matches!(s.insert_ui_session("h1", id, "again", 100, 1_000).await, Err(StoreError::Conflict(_))), "one row per id hash");

    let open = s.ui_session("h1", 200).await.unwrap().expect("a live session");
    assert_eq!((open.user.username.as_str(), open.csrf_token.as_str(), open.created_ns, open.expires_ns), ("vic", "csrf1", 100, 1_000));
    assert_eq!(open.user.org_name, "acme");
    assert_eq!(testing_int(s, "SELECT last_seen_ns FROM ui_sessions WHERE id_hash = 'h1'").await, 200, "its last use recorded");
    assert!(s.ui_session("unknown", 200).await.unwrap().is_none());
    assert!(s.ui_session("h2", 500).await.unwrap().is_none(), "expired at its expiry");
    assert!(s.ui_session("h2", 499).await.unwrap().is_some());
    assert_eq!(s.delete_expired_ui_sessions(600).await.unwrap(), 1);
    assert!(s.ui_session("h2", 499).await.unwrap().is_none(), "removed");

    // A disabled user's sessions end and stay ended when it is enabled again.
    s.insert_ui_session("h3", id, "csrf3", 100, 1_000).await.unwrap();
    let disabled = s.update_user(acme, "vic", None, Some(true), None).await.unwrap().expect("the user");
    assert!(disabled.disabled);
    assert!(s.ui_session("h1", 300).await.unwrap().is_none() && s.ui_session("h3", 300).await.unwrap().is_none());
    s.insert_ui_session("h4", id, "csrf4", 100, 1_000).await.unwrap();
    assert!(s.ui_session("h4", 300).await.unwrap().is_none(), "no session of a disabled user opens");
    s.update_user(acme, "vic", None, Some(false), None).await.unwrap();
    assert!(s.ui_session("h1", 300).await.unwrap().is_none(), "ended for good");
    assert!(s.ui_session("h4", 300).await.unwrap().is_some(), "kept while disabled, usable once enabled");

    // A new password ends every session; a role change alone does not.
    s.update_user(acme, "vic", Some("approver"), None, None).await.unwrap();
    assert_eq!(s.ui_session("h4", 300).await.unwrap().expect("still open").user.role, "approver", "the session sees the new role");
    let changed = s.update_user(acme, "vic", None, None, Some("$argon2id$new")).await.unwrap().expect("the user");
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert!(s.ui_session("h4", 300).await.unwrap().is_none());
    assert!(s.delete_ui_session("h4").await.is_ok());
    s.insert_ui_session("h5", id, "csrf5", 100, 1_000).await.unwrap();
    assert!(s.delete_ui_session("h5").await.unwrap(), "signed out");
    assert!(!s.delete_ui_session("h5").await.unwrap());
    assert!(s.ui_session("h5", 300).await.unwrap().is_none());
}

async fn updates_stay_in_their_org_and_keep_one_admin(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let other = org(s, "other").await;
    s.insert_user(&new_user(acme, "ada", "admin")).await.unwrap();
    s.insert_user(&new_user(acme, "vic", "viewer")).await.unwrap();
    s.insert_user(&new_user(other, "olga", "admin")).await.unwrap();

    assert_eq!(s.update_user(other, "ada", Some("viewer"), None, None).await.unwrap(), None, "another org's user is not found");
    assert_eq!(s.update_user(other, "ada", None, None, None).await.unwrap(), None);
    assert_eq!(s.update_user(acme, "nobody", Some("viewer"), None, None).await.unwrap(), None);
    assert_eq!(s.user_by_name("ada").await.unwrap().unwrap().role, "admin", "untouched");
    let bad = s.update_user(acme, "vic", Some("root"), None, None).await.unwrap_err();
    assert!(matches!(bad, StoreError::Refused(_)), "{bad:?}");

    // The org's only enabled admin user is neither demoted nor disabled.
    for (role, disabled) in [(Some("approver"), None), (None, Some(true)), (Some("viewer"), Some(true))] {
        let refused = s.update_user(acme, "ada", role, disabled, Some("$argon2id$other")).await.unwrap_err();
        assert!(matches!(&refused, StoreError::Refused(m) if m.contains("last enabled admin")), "{refused:?}");
    }
    let ada = s.user_by_name("ada").await.unwrap().unwrap();
    assert_eq!((ada.role.as_str(), ada.disabled, ada.password_hash.starts_with("$argon2id$v=19")), ("admin", false, true), "nothing of a refused change applied");
    // Re-affirming the role, or a password change, is no demotion.
    s.update_user(acme, "ada", Some("admin"), Some(false), Some("$argon2id$kept")).await.unwrap().expect("ada");

    // With a second admin, either may go; then the other is the last.
    s.update_user(acme, "vic", Some("admin"), None, None).await.unwrap().expect("vic");
    let demoted = s.update_user(acme, "ada", Some("viewer"), None, None).await.unwrap().expect("ada");
    assert_eq!(demoted.role, "viewer");
    assert!(matches!(s.update_user(acme, "vic", None, Some(true), None).await, Err(StoreError::Refused(_))));
    // A disabled admin does not count as the second one.
    s.update_user(acme, "ada", Some("admin"), Some(true), None).await.unwrap().expect("ada");
    assert!(matches!(s.update_user(acme, "vic", Some("approver"), None, None).await, Err(StoreError::Refused(_))));
    // Demoting a disabled admin takes nothing away.
    assert_eq!(s.update_user(acme, "ada", Some("viewer"), None, None).await.unwrap().expect("ada").role, "viewer");
    // Each org counts its own admins.
    assert!(matches!(s.update_user(other, "olga", Some("viewer"), None, None).await, Err(StoreError::Refused(_))));
}

async fn hourly_counts_cover_every_hour_of_the_range(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = org(s, "acme").await;
    let other = org(s, "other").await;
    s.enroll_host(acme, "web-1", "serial", 1).await.unwrap();
    s.enroll_host(other, "web-9", "serial", 1).await.unwrap();
    let base = 480_000 * HOUR; // a whole hour
    // 300 decisions over six hours: allow, deny, or neither (an audit record) in turn.
    let decisions: Vec<Decision> = (0..300i64)
        .map(|i| Decision {
            id: i as u64 + 1,
            time_unix_nanos: base + i * (6 * HOUR / 300),
            kind: "exec".into(),
            decision: ["allow", "deny", ""][(i % 3) as usize].into(),
            ..Default::default()
        })
        .collect();
    assert_eq!(s.insert_decisions(acme, "web-1", &incoming(&decisions, 1)).await.unwrap(), 300);
    assert_eq!(s.insert_decisions(other, "web-9", &incoming(&decisions, 1)).await.unwrap(), 300);
    let expected = |from: i64, to: i64| {
        let mut by_hour: Vec<HourCount> = Vec::new();
        let first = from.div_euclid(HOUR) * HOUR;
        let mut h = first;
        while h < to {
            by_hour.push(HourCount { hour_start_ns: h, allowed: 0, denied: 0 });
            h += HOUR;
        }
        for d in decisions.iter().filter(|d| d.time_unix_nanos >= from && d.time_unix_nanos < to) {
            let bucket = &mut by_hour[((d.time_unix_nanos - first) / HOUR) as usize];
            match d.decision.as_str() {
                "allow" => bucket.allowed += 1,
                "deny" => bucket.denied += 1,
                _ => {}
            }
        }
        by_hour
    };

    // Eight whole hours: an empty one before, six with decisions, an empty one after.
    let counts = s.decision_counts_by_hour(acme, base - HOUR, base + 7 * HOUR).await.unwrap();
    assert_eq!(counts.len(), 8);
    assert_eq!(counts, expected(base - HOUR, base + 7 * HOUR));
    assert_eq!((counts[0].allowed, counts[0].denied, counts[7].allowed, counts[7].denied), (0, 0, 0, 0));
    assert_eq!(counts[1], HourCount { hour_start_ns: base, allowed: 17, denied: 17 });
    assert_eq!(counts.iter().map(|c| c.allowed + c.denied).sum::<i64>(), 200, "the records that are neither are left out");

    // A range off the hour: its first and last hours count their part.
    let (from, to) = (base + HOUR / 2, base + 3 * HOUR + HOUR / 4);
    let partial = s.decision_counts_by_hour(acme, from, to).await.unwrap();
    assert_eq!(partial.len(), 4);
    assert_eq!(partial[0].hour_start_ns, base);
    assert_eq!(partial, expected(from, to));

    assert!(s.decision_counts_by_hour(acme, base, base).await.unwrap().is_empty());
    let none = org(s, "empty").await;
    let zeros = s.decision_counts_by_hour(none, base, base + 24 * HOUR).await.unwrap();
    assert!(zeros.len() == 24 && zeros.iter().all(|c| c.allowed == 0 && c.denied == 0));
    let too_long = s.decision_counts_by_hour(acme, 0, (MAX_HOUR_BUCKETS + 1) * HOUR).await.unwrap_err();
    assert!(matches!(too_long, StoreError::Refused(_)), "{too_long:?}");
}

async fn testing_int(s: &GatewayStore, sql: &str) -> i64 {
    airlock_gateway_store::testing::query_int(s, sql).await.expect(sql)
}
