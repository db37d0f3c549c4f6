//! The schema, as numbered migrations applied in order at open, each in its
//! own transaction and recorded in `schema_migrations`. A database that has a
//! migration this binary does not know (written by a newer gateway) is
//! refused rather than used with a schema we cannot read correctly.
//!
//! A migration is written once, with `{PK}` (an auto-increment 64-bit key)
//! and `{BLOB}` (bytes) standing for what the two dialects spell differently.

use std::collections::BTreeSet;

use crate::db::{now_ns, pg_error, Db, Dialect};
use crate::error::StoreError;

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first; append only, never edit one that shipped.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial schema", sql: INITIAL },
    Migration { version: 2, name: "approval requests", sql: APPROVALS },
    Migration { version: 3, name: "security monitoring", sql: SECURITY },
    Migration { version: 4, name: "web UI users and sessions", sql: UI_USERS },
];

/// Any fixed number, the same on every replica: the key of the lock that
/// keeps two replicas starting together from migrating at once.
const PG_MIGRATION_LOCK: i64 = 0x6169_726c_6f63_6b31;

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_unix_nanos BIGINT NOT NULL
)";

// The decision's body stays in its row: a fleet gateway's load is the write
// path, and one row per decision is one heap tuple and no second round trip
// for ids. PostgreSQL moves large bodies out of line (TOAST) by itself.
// Every index leads with org_id (every query is an org's) and ends with the
// cursor (newest-first pages walk the index in order).
const INITIAL: &str = "
CREATE TABLE orgs (
    id {PK},
    name TEXT NOT NULL UNIQUE,
    created_ns BIGINT NOT NULL
);
CREATE TABLE tokens (
    id {PK},
    org_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    uses_left BIGINT NOT NULL,
    expires_ns BIGINT NOT NULL,
    created_ns BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tokens_org ON tokens(org_id, id);
CREATE TABLE hosts (
    org_id BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    enrolled_ns BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    last_contact_ns BIGINT NOT NULL DEFAULT 0,
    connected_replica TEXT NOT NULL DEFAULT '',
    backend TEXT NOT NULL DEFAULT '',
    kernel TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    enforced_version BIGINT NOT NULL DEFAULT 0,
    enforced_hash TEXT NOT NULL DEFAULT '',
    policy_error TEXT NOT NULL DEFAULT '',
    shipped_seq BIGINT NOT NULL DEFAULT 0,
    lost_total BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, host_id)
);
CREATE TABLE policy_versions (
    org_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    files TEXT NOT NULL,
    diff TEXT NOT NULL,
    rollback_of BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, version)
);
CREATE TABLE decisions (
    cursor {PK},
    org_id BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    session_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    uid BIGINT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    decision TEXT NOT NULL,
    subject TEXT NOT NULL,
    body {BLOB} NOT NULL,
    UNIQUE (org_id, host_id, seq)
);
CREATE INDEX decisions_org ON decisions(org_id, cursor);
CREATE INDEX decisions_time ON decisions(org_id, time_ns, cursor);
CREATE INDEX decisions_session ON decisions(org_id, session_id, cursor);
CREATE INDEX decisions_user ON decisions(org_id, user_name, cursor);
CREATE INDEX decisions_role ON decisions(org_id, role, cursor);
CREATE INDEX decisions_verdict ON decisions(org_id, decision, cursor);
CREATE INDEX decisions_kind ON decisions(org_id, kind, decision, cursor);
CREATE INDEX decisions_host ON decisions(org_id, host_id, cursor);
CREATE TABLE sessions (
    org_id BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    started_ns BIGINT NOT NULL,
    updated_ns BIGINT NOT NULL,
    body {BLOB} NOT NULL,
    PRIMARY KEY (org_id, host_id, session_id)
);
CREATE TABLE commands (
    id {PK},
    org_id BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload {BLOB} NOT NULL,
    state TEXT NOT NULL,
    result {BLOB} NOT NULL,
    error TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    updated_ns BIGINT NOT NULL
);
CREATE INDEX commands_host ON commands(org_id, host_id, state, id);
CREATE INDEX commands_waiting ON commands(state, org_id, host_id);
";

// One row per request: the agent's latest record of it (merged from the
// shipped approval decisions, a final state never undone), and the verdict
// given here with how far it got to the host. Empty text and 0 mean "none",
// so both dialects compare them the same way (no NULL logic).
// `approval_attempts` keeps every DecideApproval call, refused ones too.
const APPROVALS: &str = "
CREATE TABLE approvals (
    org_id BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    body {BLOB} NOT NULL,
    created_ns BIGINT NOT NULL,
    updated_ns BIGINT NOT NULL,
    expires_ns BIGINT NOT NULL,
    gateway_verdict TEXT NOT NULL DEFAULT '',
    gateway_reason TEXT NOT NULL DEFAULT '',
    grant_seconds BIGINT NOT NULL DEFAULT 0,
    decided_by TEXT NOT NULL DEFAULT '',
    decided_ns BIGINT NOT NULL DEFAULT 0,
    delivery TEXT NOT NULL DEFAULT '',
    command_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, request_id)
);
CREATE INDEX approvals_newest ON approvals(org_id, created_ns, request_id);
CREATE INDEX approvals_state ON approvals(org_id, state, created_ns, request_id);
CREATE INDEX approvals_host ON approvals(org_id, host_id, session_id, created_ns);
CREATE INDEX approvals_session ON approvals(org_id, session_id, created_ns);
CREATE INDEX approvals_command ON approvals(org_id, host_id, command_id);
CREATE TABLE approval_attempts (
    id {PK},
    org_id BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at_ns BIGINT NOT NULL
);
CREATE INDEX approval_attempts_request ON approval_attempts(org_id, request_id, id);
";

// Findings and blocks keep their immutable part as the API's message
// (`body`) and what changes (a finding's block, a block's status) in
// columns. A block's stored status is active, acknowledged or lifted;
// "expired" is read off `expires_ns` at read time, so no sweep is needed.
// `token_uses` is bounded by design: one row per (token, source address).
// `security_runs` lets one replica at a time run an org's detection pass.
const SECURITY: &str = "
CREATE TABLE security_settings (
    org_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    PRIMARY KEY (org_id, version)
);
CREATE TABLE security_findings (
    org_id BIGINT NOT NULL,
    finding_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    block_id TEXT NOT NULL DEFAULT '',
    body {BLOB} NOT NULL,
    PRIMARY KEY (org_id, finding_id)
);
CREATE INDEX security_findings_newest ON security_findings(org_id, created_ns, finding_id);
CREATE TABLE security_blocks (
    org_id BIGINT NOT NULL,
    block_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    rule TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    expires_ns BIGINT NOT NULL,
    status TEXT NOT NULL,
    acknowledged_by TEXT NOT NULL DEFAULT '',
    acknowledged_ns BIGINT NOT NULL DEFAULT 0,
    acknowledge_reason TEXT NOT NULL DEFAULT '',
    lifted_by TEXT NOT NULL DEFAULT '',
    lifted_ns BIGINT NOT NULL DEFAULT 0,
    lift_reason TEXT NOT NULL DEFAULT '',
    body {BLOB} NOT NULL,
    PRIMARY KEY (org_id, block_id)
);
CREATE INDEX security_blocks_newest ON security_blocks(org_id, created_ns, block_id);
CREATE INDEX security_blocks_force ON security_blocks(status, expires_ns, org_id);
CREATE TABLE security_baselines (
    org_id BIGINT PRIMARY KEY,
    baseline TEXT NOT NULL,
    updated_ns BIGINT NOT NULL
);
CREATE TABLE token_uses (
    token_id BIGINT NOT NULL,
    address TEXT NOT NULL,
    org_id BIGINT NOT NULL,
    token TEXT NOT NULL,
    first_ns BIGINT NOT NULL,
    last_ns BIGINT NOT NULL,
    uses BIGINT NOT NULL,
    PRIMARY KEY (token_id, address)
);
CREATE INDEX token_uses_org ON token_uses(org_id, last_ns);
CREATE TABLE security_runs (
    org_id BIGINT PRIMARY KEY,
    replica TEXT NOT NULL,
    run_ns BIGINT NOT NULL
);
";

// The web UI's people. A password user has a hash and no OIDC subject, an
// OIDC user the reverse ("issuer|sub", unique, since one identity is one
// user). A session row is found by the SHA-256 of its cookie secret, so a
// copy of the database opens no session. `decisions_verdict_time` lets the
// per-hour allow/deny counts read a range of one index, not the table.
const UI_USERS: &str = "
CREATE TABLE ui_users (
    id {PK},
    org_id BIGINT NOT NULL,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    oidc_subject TEXT NOT NULL DEFAULT '',
    disabled BIGINT NOT NULL DEFAULT 0,
    created_ns BIGINT NOT NULL,
    last_login_ns BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX ui_users_oidc ON ui_users(oidc_subject) WHERE oidc_subject <> '';
CREATE INDEX ui_users_org ON ui_users(org_id, username);
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    expires_ns BIGINT NOT NULL,
    last_seen_ns BIGINT NOT NULL
);
CREATE INDEX ui_sessions_user ON ui_sessions(user_id);
CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_ns);
CREATE INDEX decisions_verdict_time ON decisions(org_id, decision, time_ns);
";

pub(crate) fn render(sql: &str, dialect: Dialect) -> String {
    let (pk, blob) = match dialect {
        // AUTOINCREMENT: an id (a decision's cursor) is never handed out twice.
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
    };
    sql.replace("{PK}", pk).replace("{BLOB}", blob)
}

/// The migrations to apply to a database that has `applied`, or why it cannot be used.
fn pending(applied: &BTreeSet<i64>, known: &[Migration]) -> Result<Vec<usize>, String> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(unknown) = applied.iter().find(|v| !known.iter().any(|m| m.version == **v)) {
        return Err(format!(
            "the database has schema migration {unknown}, which this gateway does not know (it knows up to {newest_known}): it was written by a newer gateway; upgrade this one"
        ));
    }
    Ok((0..known.len()).filter(|i| !applied.contains(&known[*i].version)).collect())
}

/// Brings the schema up to date; returns the versions applied now.
pub(crate) async fn migrate(db: &Db, known: &'static [Migration]) -> Result<Vec<i64>, StoreError> {
    let now = now_ns();
    let describe = db.describe();
    match db {
        Db::Sqlite(s) => {
            let outcome = s
                .call(move |conn| {
                    conn.execute_batch(SCHEMA_MIGRATIONS)?;
                    let applied = {
                        let mut stmt = conn.prepare("SELECT version FROM schema_migrations")?;
                        let versions = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<BTreeSet<i64>>>()?;
                        versions
                    };
                    let todo = match pending(&applied, known) {
                        Ok(todo) => todo,
                        Err(refusal) => return Ok(Err(refusal)),
                    };
                    let mut done = Vec::new();
                    for i in todo {
                        let m = &known[i];
                        // Immediate: another process opening the file at the same time waits, then finds it applied.
                        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let applied: i64 = tx.query_row("SELECT COUNT(*) FROM schema_migrations WHERE version = ?1", [m.version], |r| r.get(0))?;
                        if applied > 0 {
                            continue;
                        }
                        tx.execute_batch(&render(m.sql, Dialect::Sqlite))?;
                        tx.execute("INSERT INTO schema_migrations(version, name, applied_at_unix_nanos) VALUES (?1, ?2, ?3)", rusqlite::params![m.version, m.name, now])?;
                        tx.commit()?;
                        tracing::info!(version = m.version, name = m.name, "{describe}: applied schema migration {} ({})", m.version, m.name);
                        done.push(m.version);
                    }
                    Ok(Ok(done))
                })
                .await?;
            outcome.map_err(StoreError::other)
        }
        Db::Postgres(p) => {
            let mut client = p.client().await?;
            let err = |e| pg_error(&p.name, e);
            // The lock is the session's: taken and released on this one connection.
            p.bounded(async { client.execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATION_LOCK]).await.map_err(err) }).await?;
            let result = async {
                client.batch_execute(SCHEMA_MIGRATIONS).await.map_err(err)?;
                let applied: BTreeSet<i64> = client
                    .query("SELECT version FROM schema_migrations", &[])
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|r| r.try_get::<_, i64>(0))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                let todo = pending(&applied, known).map_err(StoreError::other)?;
                let mut done = Vec::new();
                for i in todo {
                    let m = &known[i];
                    let tx = client.transaction().await.map_err(err)?;
                    tx.batch_execute(&render(m.sql, Dialect::Postgres)).await.map_err(err)?;
                    tx.execute(
                        "INSERT INTO schema_migrations(version, name, applied_at_unix_nanos) VALUES ($1, $2, $3)",
                        &[&m.version, &m.name, &now],
                    )
                    .await
                    .map_err(err)?;
                    tx.commit().await.map_err(err)?;
                    tracing::info!(version = m.version, name = m.name, "{describe}: applied schema migration {} ({})", m.version, m.name);
                    done.push(m.version);
                }
                Ok::<_, StoreError>(done)
            }
            .await;
            let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATION_LOCK]).await;
            if unlocked.is_err() {
                // A connection that may still hold the lock must not go back to the pool.
                let _ = deadpool_postgres::Object::take(client);
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_applied_migration_is_refused_and_known_ones_are_skipped() {
        let all: BTreeSet<i64> = [1, 2, 3, 4].into_iter().collect();
        assert_eq!(pending(&all, MIGRATIONS), Ok(Vec::new()));
        let first: BTreeSet<i64> = [1].into_iter().collect();
        assert_eq!(pending(&first, MIGRATIONS), Ok(vec![1, 2, 3]), "a database of the first version gets the later ones");
        assert_eq!(pending(&BTreeSet::new(), MIGRATIONS), Ok(vec![0, 1, 2, 3]));
        let newer: BTreeSet<i64> = [1, 99].into_iter().collect();
        let refusal = pending(&newer, MIGRATIONS).unwrap_err();
        assert!(refusal.contains("99") && refusal.contains("newer"), "{refusal}");
    }

    /// A database made by a gateway that knew only the first migration gets
    /// the later ones at the next start, its data kept (SQLite and PostgreSQL).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_version_database_is_brought_up_to_date_with_its_data() {
        let dir = std::env::temp_dir().join(format!("airlock-gw-migrate-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut databases = vec![Db::open_sqlite(&dir.join("gateway.db")).unwrap()];
        if let Some(url) = crate::testing::postgres_database("migrations::a_first_version_database_is_brought_up_to_date_with_its_data") {
            databases.push(Db::open_postgres(&url).unwrap());
        }
        let latest: Vec<i64> = MIGRATIONS[1..].iter().map(|m| m.version).collect();
        for db in databases {
            let what = db.describe();
            assert_eq!(migrate(&db, &MIGRATIONS[..1]).await.unwrap(), [1], "{what}");
            db.execute("INSERT INTO orgs(name, created_ns) VALUES ('kept', 1)", vec![]).await.unwrap();
            assert!(db.query("SELECT COUNT(*) FROM approvals", vec![]).await.is_err(), "{what}: no approvals at version 1");
            assert_eq!(migrate(&db, MIGRATIONS).await.unwrap(), latest, "{what}");
            assert!(migrate(&db, MIGRATIONS).await.unwrap().is_empty(), "{what}: nothing applied twice");
            let count = |sql: &'static str| {
                let db = db.clone();
                async move { db.query_opt(sql, vec![]).await.unwrap().unwrap().int(0).unwrap() }
            };
            assert_eq!(count("SELECT COUNT(*) FROM orgs WHERE name = 'kept'").await, 1, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM approvals").await, 0, "{what}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database of version 2 (approvals) gets the security tables, its
    /// approval requests kept (SQLite and PostgreSQL).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_version_database_gets_security_monitoring_with_its_data() {
        let dir = std::env::temp_dir().join(format!("airlock-gw-migrate3-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut databases = vec![Db::open_sqlite(&dir.join("gateway.db")).unwrap()];
        if let Some(url) = crate::testing::postgres_database("migrations::a_second_version_database_gets_security_monitoring_with_its_data") {
            databases.push(Db::open_postgres(&url).unwrap());
        }
        for db in databases {
            let what = db.describe();
            assert_eq!(migrate(&db, &MIGRATIONS[..2]).await.unwrap(), [1, 2], "{what}");
            db.execute("INSERT INTO orgs(name, created_ns) VALUES ('kept', 1)", vec![]).await.unwrap();
            db.execute(
                "INSERT INTO approvals(org_id, request_id, host_id, session_id, state, body, created_ns, updated_ns, expires_ns)
                 VALUES (1, 'apr-0000000000000001', 'h', 's', 'pending', $1, 1, 1, 0)",
                vec![crate::db::Value::Bytes(vec![1, 2, 3])],
            )
            .await
            .unwrap();
            assert!(db.query("SELECT COUNT(*) FROM security_blocks", vec![]).await.is_err(), "{what}: no blocks at version 2");
            assert_eq!(migrate(&db, &MIGRATIONS[..3]).await.unwrap(), [3], "{what}");
            let count = |sql: &'static str| {
                let db = db.clone();
                async move { db.query_opt(sql, vec![]).await.unwrap().unwrap().int(0).unwrap() }
            };
            assert_eq!(count("SELECT COUNT(*) FROM approvals WHERE request_id = 'apr-0000000000000001'").await, 1, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM orgs WHERE name = 'kept'").await, 1, "{what}");
            for table in ["security_settings", "security_findings", "security_blocks", "security_baselines", "token_uses", "security_runs"] {
                let rows = db.query(&format!("SELECT COUNT(*) FROM {table}"), vec![]).await;
                assert!(rows.is_ok(), "{what}: {table}: {rows:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database of version 3 (security monitoring) gets the UI's users and
    /// sessions and the per-hour index, its decisions and findings kept
    /// (SQLite and PostgreSQL).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_third_version_database_gets_ui_users_with_its_data() {
        let dir = std::env::temp_dir().join(format!("airlock-gw-migrate4-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut databases = vec![Db::open_sqlite(&dir.join("gateway.db")).unwrap()];
        if let Some(url) = crate::testing::postgres_database("migrations::a_third_version_database_gets_ui_users_with_its_data") {
            databases.push(Db::open_postgres(&url).unwrap());
        }
        for db in databases {
            let what = db.describe();
            assert_eq!(migrate(&db, &MIGRATIONS[..3]).await.unwrap(), [1, 2, 3], "{what}");
            db.execute("INSERT INTO orgs(name, created_ns) VALUES ('kept', 1)", vec![]).await.unwrap();
            db.execute(
                "INSERT INTO decisions(org_id, host_id, seq, time_ns, session_id, user_name, uid, role, kind, decision, subject, body)
                 VALUES (1, 'h', 1, 5, 's', 'u', 1000, 'r', 'exec', 'deny', 'x', $1)",
                vec![crate::db::Value::Bytes(vec![1])],
            )
            .await
            .unwrap();
            db.execute(
                "INSERT INTO security_findings(org_id, finding_id, rule, severity, subject_kind, subject, created_ns, body)
                 VALUES (1, 'fnd-0000000000000001', 'r', 'high', 'session', 's', 1, $1)",
                vec![crate::db::Value::Bytes(vec![1])],
            )
            .await
            .unwrap();
            assert!(db.query("SELECT COUNT(*) FROM ui_users", vec![]).await.is_err(), "{what}: no users at version 3");
            assert_eq!(migrate(&db, MIGRATIONS).await.unwrap(), [4], "{what}");
            let count = |sql: &'static str| {
                let db = db.clone();
                async move { db.query_opt(sql, vec![]).await.unwrap().unwrap().int(0).unwrap() }
            };
            assert_eq!(count("SELECT COUNT(*) FROM decisions WHERE org_id = 1 AND decision = 'deny' AND time_ns >= 0").await, 1, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM security_findings").await, 1, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM orgs WHERE name = 'kept'").await, 1, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM ui_users").await, 0, "{what}");
            assert_eq!(count("SELECT COUNT(*) FROM ui_sessions").await, 0, "{what}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
