//! Migrations, orgs, tokens, hosts and policy versions.

use airlock_gateway_store::{
    testing, GatewayStore, HostContact, JoinOutcome, NewPolicyVersion, NewToken, PolicyFile, StoreError, TOKEN_API, TOKEN_JOIN,
};

use crate::common::Ctx;

both_backends!(
    migrations_apply_once_and_a_newer_schema_is_refused,
    orgs_are_made_once,
    api_tokens_are_found_by_hash,
    join_tokens_admit_until_used_up_expired_or_revoked,
    the_last_use_of_a_join_token_goes_to_one_caller,
    hosts_enroll_revoke_and_reenroll,
    policy_versions_are_numbered_in_order,
);

fn token(org_id: i64, kind: &str, role: &str, hash: &str, uses_left: i64, expires_ns: i64) -> NewToken {
    NewToken {
        org_id,
        kind: kind.into(),
        role: role.into(),
        secret_hash: hash.into(),
        label: format!("{kind} {hash}"),
        uses_left,
        expires_ns,
        created_ns: 1,
    }
}

async fn migrations_apply_once_and_a_newer_schema_is_refused(ctx: &Ctx) {
    let known = GatewayStore::known_schema_version();
    assert!(known >= 1);
    assert_eq!(ctx.store.schema_version().await.unwrap(), known);
    let migrations = testing::query_int(&ctx.store, "SELECT COUNT(*) FROM schema_migrations").await.unwrap();
    assert_eq!(migrations, known, "one row per migration");
    let org = ctx.store.create_org("kept").await.unwrap();

    let again = ctx.reopen().await.expect("reopen");
    assert_eq!(testing::query_int(&again, "SELECT COUNT(*) FROM schema_migrations").await.unwrap(), migrations, "nothing applied twice");
    assert_eq!(again.org_by_name("kept").await.unwrap(), Some(org), "the data survives a reopen");

    testing::execute_sql(&again, "INSERT INTO schema_migrations(version, name, applied_at_unix_nanos) VALUES (999, 'from the future', 0)")
        .await
        .unwrap();
    let refused = match ctx.reopen().await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a database with an unknown migration was opened"),
    };
    assert!(refused.contains("999") && refused.contains("newer"), "{refused}");
}

async fn orgs_are_made_once(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    assert!(matches!(s.create_org("acme").await, Err(StoreError::Conflict(_))));
    assert_eq!(s.ensure_org("acme").await.unwrap(), acme);
    let beta = s.ensure_org("beta").await.unwrap();
    assert_ne!(beta.id, acme.id);
    assert_eq!(s.org_by_name("acme").await.unwrap(), Some(acme.clone()));
    assert_eq!(s.org_by_name("nobody").await.unwrap(), None);
    assert_eq!(s.org_by_id(beta.id).await.unwrap(), Some(beta.clone()));
    assert_eq!(s.list_orgs().await.unwrap(), vec![acme, beta]);
}

async fn api_tokens_are_found_by_hash(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let id = s.insert_token(&token(acme.id, TOKEN_API, "admin", "h-admin", -1, 0)).await.unwrap();
    s.insert_token(&token(acme.id, TOKEN_JOIN, "", "h-join", 5, 0)).await.unwrap();
    s.insert_token(&token(acme.id, TOKEN_API, "viewer", "h-old", -1, 1)).await.unwrap();
    assert!(matches!(s.insert_token(&token(acme.id, TOKEN_API, "viewer", "h-admin", -1, 0)).await, Err(StoreError::Conflict(_))));

    let t = s.api_token("h-admin").await.unwrap().expect("the admin token");
    assert_eq!((t.id, t.org_id, t.org_name.as_str(), t.role.as_str(), t.label.as_str()), (id, acme.id, "acme", "admin", "api h-admin"));
    assert_eq!(s.api_token("h-join").await.unwrap(), None, "a join token is no API token");
    assert_eq!(s.api_token("h-old").await.unwrap(), None, "expired");
    assert_eq!(s.api_token("h-none").await.unwrap(), None);

    let listed = s.list_tokens(acme.id).await.unwrap();
    assert_eq!(listed.iter().map(|t| (t.kind.as_str(), t.role.as_str())).collect::<Vec<_>>(), [("api", "admin"), ("join", ""), ("api", "viewer")]);
    assert_eq!(listed[1].uses_left, 5);
    assert!(s.revoke_token(acme.id, id).await.unwrap());
    assert!(!s.revoke_token(acme.id + 1000, id).await.unwrap(), "another org's token is not revoked");
    assert_eq!(s.api_token("h-admin").await.unwrap(), None, "revoked");
    assert!(s.list_tokens(acme.id).await.unwrap()[0].revoked);
    assert!(s.list_tokens(acme.id + 1000).await.unwrap().is_empty());
}

async fn join_tokens_admit_until_used_up_expired_or_revoked(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    let accepted = JoinOutcome::Accepted { org_id: acme.id, org_name: "acme".into() };
    s.insert_token(&token(acme.id, TOKEN_JOIN, "", "twice", 2, 0)).await.unwrap();
    s.insert_token(&token(acme.id, TOKEN_JOIN, "", "always", -1, 0)).await.unwrap();
    s.insert_token(&token(acme.id, TOKEN_JOIN, "", "until-100", -1, 100)).await.unwrap();
    let revoked = s.insert_token(&token(acme.id, TOKEN_JOIN, "", "revoked", 3, 0)).await.unwrap();
    s.insert_token(&token(acme.id, TOKEN_API, "admin", "api", -1, 0)).await.unwrap();
    s.revoke_token(acme.id, revoked).await.unwrap();

    assert_eq!(s.consume_join_token("twice", 50).await.unwrap(), accepted);
    assert_eq!(s.consume_join_token("twice", 50).await.unwrap(), accepted);
    assert_eq!(s.consume_join_token("twice", 50).await.unwrap(), JoinOutcome::UsedUp);
    for _ in 0..3 {
        assert_eq!(s.consume_join_token("always", 50).await.unwrap(), accepted);
    }
    let always = s.list_tokens(acme.id).await.unwrap().into_iter().find(|t| t.label == "join always").unwrap();
    assert_eq!(always.uses_left, -1, "unlimited stays unlimited");
    assert_eq!(s.consume_join_token("until-100", 99).await.unwrap(), accepted);
    assert_eq!(s.consume_join_token("until-100", 100).await.unwrap(), JoinOutcome::Expired);
    assert_eq!(s.consume_join_token("revoked", 50).await.unwrap(), JoinOutcome::Revoked);
    assert_eq!(s.consume_join_token("nothing", 50).await.unwrap(), JoinOutcome::Unknown);
    assert_eq!(s.consume_join_token("api", 50).await.unwrap(), JoinOutcome::Unknown, "an API token does not enroll");
}

async fn the_last_use_of_a_join_token_goes_to_one_caller(ctx: &Ctx) {
    let acme = ctx.store.create_org("acme").await.unwrap();
    for round in 0..10 {
        let hash = format!("last-{round}");
        ctx.store.insert_token(&token(acme.id, TOKEN_JOIN, "", &hash, 1, 0)).await.unwrap();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (store, hash) = (ctx.store.clone(), hash.clone());
                tokio::spawn(async move { store.consume_join_token(&hash, 10).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap().unwrap());
        }
        let accepted = outcomes.iter().filter(|o| matches!(o, JoinOutcome::Accepted { .. })).count();
        assert_eq!(accepted, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&JoinOutcome::UsedUp), "round {round}: {outcomes:?}");
    }
}

async fn hosts_enroll_revoke_and_reenroll(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    s.enroll_host(acme.id, "web-1", "serial-1", 10).await.unwrap();
    s.enroll_host(acme.id, "db-1", "serial-2", 11).await.unwrap();
    let h = s.host(acme.id, "web-1").await.unwrap().expect("enrolled");
    assert_eq!((h.cert_serial.as_str(), h.enrolled_ns, h.revoked, h.enforced_version, h.shipped_seq), ("serial-1", 10, false, 0, 0));

    assert!(s.revoke_host(acme.id, "web-1").await.unwrap());
    assert!(!s.revoke_host(acme.id, "nobody").await.unwrap());
    assert!(s.host(acme.id, "web-1").await.unwrap().unwrap().revoked);
    s.enroll_host(acme.id, "web-1", "serial-3", 20).await.unwrap();
    let h = s.host(acme.id, "web-1").await.unwrap().unwrap();
    assert_eq!((h.cert_serial.as_str(), h.enrolled_ns, h.revoked), ("serial-3", 20, false), "re-enrollment replaces the certificate");

    let contact = HostContact { now_ns: 30, replica: "gw-a".into(), backend: "lsm".into(), kernel: "6.8".into(), agent_version: "0.1.0".into() };
    s.record_contact(acme.id, "web-1", &contact).await.unwrap();
    s.record_contact(acme.id, "web-1", &HostContact { now_ns: 31, kernel: "6.9".into(), ..Default::default() }).await.unwrap();
    let h = s.host(acme.id, "web-1").await.unwrap().unwrap();
    assert_eq!(
        (h.last_contact_ns, h.connected_replica.as_str(), h.backend.as_str(), h.kernel.as_str(), h.agent_version.as_str()),
        (31, "gw-a", "lsm", "6.9", "0.1.0"),
        "empty values keep what was stored"
    );
    s.record_disconnect(acme.id, "web-1", "gw-b", 32).await.unwrap();
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().connected_replica, "gw-a", "another replica's disconnect");
    s.record_disconnect(acme.id, "web-1", "gw-a", 33).await.unwrap();
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().connected_replica, "");

    s.record_enforced(acme.id, "web-1", 3, "hash-3", "", 40).await.unwrap();
    s.record_enforced(acme.id, "web-1", 4, "hash-4", "rule 2: bad CIDR", 41).await.unwrap();
    let h = s.host(acme.id, "web-1").await.unwrap().unwrap();
    assert_eq!((h.enforced_version, h.enforced_hash.as_str(), h.policy_error.as_str()), (3, "hash-3", "rule 2: bad CIDR"));
    s.record_enforced(acme.id, "web-1", 5, "hash-5", "", 42).await.unwrap();
    let h = s.host(acme.id, "web-1").await.unwrap().unwrap();
    assert_eq!((h.enforced_version, h.enforced_hash.as_str(), h.policy_error.as_str()), (5, "hash-5", ""));

    s.record_loss(acme.id, "web-1", 7).await.unwrap();
    s.record_loss(acme.id, "web-1", 5).await.unwrap();
    assert_eq!(s.host(acme.id, "web-1").await.unwrap().unwrap().lost_total, 12);
    let hosts: Vec<String> = s.list_hosts(acme.id).await.unwrap().into_iter().map(|h| h.host_id).collect();
    assert_eq!(hosts, ["db-1", "web-1"]);
}

async fn policy_versions_are_numbered_in_order(ctx: &Ctx) {
    let s = &ctx.store;
    let acme = s.create_org("acme").await.unwrap();
    assert_eq!(s.policy_version(acme.id, None).await.unwrap(), None);
    for n in 1..=3 {
        let v = NewPolicyVersion {
            author: "alice".into(),
            comment: format!("change {n}"),
            content_hash: format!("hash-{n}"),
            files: vec![PolicyFile { path: "base.yaml".into(), content: format!("version: {n}\n") }],
            diff: format!("+ {n}"),
            rollback_of: if n == 3 { 1 } else { 0 },
        };
        assert_eq!(s.insert_policy_version(acme.id, &v).await.unwrap(), n);
    }
    let latest = s.policy_version(acme.id, None).await.unwrap().expect("latest");
    assert_eq!((latest.version, latest.comment.as_str(), latest.rollback_of), (3, "change 3", 1));
    assert_eq!(latest.files, vec![PolicyFile { path: "base.yaml".into(), content: "version: 3\n".into() }]);
    let first = s.policy_version(acme.id, Some(1)).await.unwrap().expect("version 1");
    assert_eq!((first.content_hash.as_str(), first.diff.as_str(), first.files[0].content.as_str()), ("hash-1", "+ 1", "version: 1\n"));
    assert_eq!(s.policy_version(acme.id, Some(9)).await.unwrap(), None);
    let history: Vec<i64> = s.policy_history(acme.id).await.unwrap().iter().map(|v| v.version).collect();
    assert_eq!(history, [3, 2, 1]);

    // Concurrent inserts: each gets its own number or a conflict, never a duplicate or a gap.
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let store = s.clone();
            tokio::spawn(async move {
                let v = NewPolicyVersion { author: format!("racer {i}"), ..Default::default() };
                store.insert_policy_version(acme.id, &v).await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(n) => numbers.push(n),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    numbers.sort_unstable();
    assert!(!numbers.is_empty());
    assert_eq!(numbers, (4..4 + numbers.len() as i64).collect::<Vec<_>>());
    let other = s.create_org("other").await.unwrap();
    assert_eq!(s.insert_policy_version(other.id, &NewPolicyVersion::default()).await.unwrap(), 1, "each org counts from 1");
    assert_eq!(s.latest_policy_versions().await.unwrap(), vec![(acme.id, 3 + numbers.len() as i64), (other.id, 1)]);
}

/// Two replicas starting at once on a new database: both open, the schema
/// is applied once.
async fn two_opens_at_once(url: Option<String>, name: &str) {
    let dir = std::env::temp_dir().join(format!("airlock-gw-{name}-{}", std::process::id()));
    let opens: Vec<_> = (0..2)
        .map(|_| {
            let (url, dir) = (url.clone(), dir.clone());
            tokio::spawn(async move { GatewayStore::open(url.as_deref(), &dir).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().expect("both replicas open"));
    }
    let migrations = testing::query_int(&stores[0], "SELECT COUNT(*) FROM schema_migrations").await.unwrap();
    assert_eq!(migrations, GatewayStore::known_schema_version());
    stores[1].create_org("acme").await.unwrap();
    assert_eq!(stores[0].list_orgs().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrate_at_once_sqlite() {
    two_opens_at_once(None, "two-opens").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrate_at_once_postgres() {
    let Some(url) = testing::postgres_database("accounts::two_replicas_migrate_at_once_postgres") else {
        return;
    };
    two_opens_at_once(Some(url), "two-opens-pg").await;
}
