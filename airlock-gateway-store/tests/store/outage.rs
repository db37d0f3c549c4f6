//! The database going away and coming back.

use std::time::Duration;

use airlock_gateway_store::testing::{skip, PgCluster};
use airlock_gateway_store::{GatewayStore, StoreError};

/// Far longer than any call should take against a stopped server (refused
/// at once); reaching it means the call hung.
const HANG: Duration = Duration::from_secs(60);

fn assert_unavailable<T: std::fmt::Debug>(result: Result<Result<T, StoreError>, tokio::time::error::Elapsed>, name: &str, what: &str) {
    match result {
        Err(_) => panic!("{what}: the call hung with the database down"),
        Ok(Err(StoreError::Unavailable(message))) => {
            assert!(message.contains(name), "{what}: the error names the database {name}: {message}");
            assert!(StoreError::Unavailable(message.clone()).to_string().starts_with("the database is unavailable"), "{message}");
        }
        Ok(other) => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_unavailable_and_coming_back_works_again() {
    let cluster = match PgCluster::launch() {
        Ok(c) => c,
        Err(reason) => return skip("outage::postgres_going_away_is_unavailable_and_coming_back_works_again", &reason),
    };
    let dir = std::env::temp_dir().join(format!("airlock-gw-outage-{}", std::process::id()));
    let store = GatewayStore::open(Some(&cluster.url()), &dir).await.expect("open");
    let name = format!("127.0.0.1:{}/airlock", cluster.port());
    assert_eq!(store.describe(), format!("PostgreSQL {name}"));
    let acme = store.create_org("acme").await.unwrap();

    cluster.stop().expect("stop PostgreSQL");
    assert_unavailable(tokio::time::timeout(HANG, store.list_orgs()).await, &name, "a read");
    assert_unavailable(tokio::time::timeout(HANG, store.insert_command(acme.id, "h", "k", b"", 1)).await, &name, "a write");
    assert_unavailable(tokio::time::timeout(HANG, GatewayStore::open(Some(&cluster.url()), &dir)).await.map(|r| r.map(|_| ())), &name, "an open");

    cluster.start().expect("start PostgreSQL again");
    assert_eq!(store.list_orgs().await.expect("the same store works again"), vec![acme.clone()]);
    store.insert_command(acme.id, "h", "k", b"", 1).await.expect("and writes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("airlock-gw-scheme-{}", std::process::id()));
    let refused = match GatewayStore::open(Some("mysql://db/airlock"), &dir).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a mysql:// URL was accepted"),
    };
    assert!(refused.contains("\"mysql\""), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}
