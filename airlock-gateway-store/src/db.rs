//! One way to run SQL on either database, so that every query is written
//! once: statements use PostgreSQL's `$1, $2` placeholders (rewritten to
//! SQLite's numbered `?1, ?2`), parameters and results are [`Value`]s, and a
//! [`Dialect`] supplies the few expressions the two spell differently.
//!
//! SQLite runs on one connection behind a mutex on the blocking pool: the
//! gateway's SQLite mode is for a single replica, where one writer is all
//! SQLite allows anyway. PostgreSQL runs through a deadpool pool, whose
//! connections are made afresh when the server comes back after an outage.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::error::StoreError;

/// A connection attempt to PostgreSQL gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A request waits at most this long for a pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// No call may hang on a server that stopped answering (a partition rather
/// than a refused connection): past this it is reported unavailable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_SIZE: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Only ever read back (an aggregate over no rows); never bound.
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl Value {
    /// The type a PostgreSQL statement declares for this parameter: every
    /// parameter is typed explicitly, so no statement depends on inference.
    fn pg_type(&self) -> Type {
        match self {
            Value::Null | Value::Text(_) => Type::TEXT,
            Value::Int(_) => Type::INT8,
            Value::Bytes(_) => Type::BYTEA,
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
            Value::Bytes(v) => v.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Bytes(v) => ValueRef::Blob(v),
        }))
    }
}

/// A result row; its getters take the value out, so bodies are not copied.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    fn take(&mut self, i: usize) -> Result<Value, StoreError> {
        match self.0.get_mut(i) {
            Some(v) => Ok(std::mem::replace(v, Value::Null)),
            None => Err(StoreError::other(format!("a result row has no column {i}"))),
        }
    }

    pub fn int(&mut self, i: usize) -> Result<i64, StoreError> {
        match self.take(i)? {
            Value::Int(v) => Ok(v),
            other => Err(StoreError::other(format!("column {i}: expected an integer, found {other:?}"))),
        }
    }

    pub fn text(&mut self, i: usize) -> Result<String, StoreError> {
        match self.take(i)? {
            Value::Text(v) => Ok(v),
            other => Err(StoreError::other(format!("column {i}: expected text, found {other:?}"))),
        }
    }

    pub fn bytes(&mut self, i: usize) -> Result<Vec<u8>, StoreError> {
        match self.take(i)? {
            Value::Bytes(v) => Ok(v),
            // SQLite keeps the type a value was written with; an empty blob can come back as text.
            Value::Text(v) if v.is_empty() => Ok(Vec::new()),
            other => Err(StoreError::other(format!("column {i}: expected bytes, found {other:?}"))),
        }
    }

    pub fn flag(&mut self, i: usize) -> Result<bool, StoreError> {
        Ok(self.int(i)? != 0)
    }
}

/// One statement of a transaction.
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Stmt {
        Stmt { sql: sql.into(), params }
    }
}

/// What a statement of a transaction gave back: its rows (a query or a
/// RETURNING clause) and the rows it changed.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub rows: Vec<Row>,
    pub affected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A substring test (no pattern characters, unlike LIKE).
    pub fn contains(self, haystack: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({haystack}, {needle}) > 0"),
            Dialect::Postgres => format!("strpos({haystack}, {needle}) > 0"),
        }
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) struct Sqlite {
    conn: Mutex<Connection>,
    path: PathBuf,
}

pub(crate) struct Postgres {
    pub pool: Pool,
    /// host:port/dbname: how errors and logs name the database (never its password).
    pub name: String,
}

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(Arc<Sqlite>),
    Postgres(Arc<Postgres>),
}

impl Db {
    pub fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        let err = |e: rusqlite::Error| sqlite_error(path, e);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // Switching a new database to WAL while another replica does the same
        // can be refused as busy at once, without the busy handler: retry it
        // for as long as the busy timeout would have waited.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(e)),
            }
        }
        // WAL + NORMAL: a power loss can lose the last commits, never corrupt the file.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(err)?;
        // Every batch size of the multi-row inserts is its own statement.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Db::Sqlite(Arc::new(Sqlite { conn: Mutex::new(conn), path: path.to_path_buf() })))
    }

    pub fn open_postgres(url: &str) -> Result<Db, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::other(format!("the PostgreSQL URL is not valid: {e}")))?;
        let name = pg_name(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A peer that vanished without closing the connection is noticed.
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| StoreError::other(format!("PostgreSQL {name}: the connection pool: {e}")))?;
        Ok(Db::Postgres(Arc::new(Postgres { pool, name })))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Db::Sqlite(s) => format!("SQLite {}", s.path.display()),
            Db::Postgres(p) => format!("PostgreSQL {}", p.name),
        }
    }

    /// A statement's rows.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let mut outcomes = self.run(vec![Stmt::new(sql, params)], false).await?;
        Ok(outcomes.pop().map(|o| o.rows).unwrap_or_default())
    }

    /// The first row of a statement's result, if any.
    pub async fn query_opt(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The rows a statement changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, StoreError> {
        let mut outcomes = self.run(vec![Stmt::new(sql, params)], false).await?;
        Ok(outcomes.pop().map(|o| o.affected).unwrap_or_default())
    }

    /// Statements in one transaction: all of them take effect or none.
    pub async fn transaction(&self, stmts: Vec<Stmt>) -> Result<Vec<Outcome>, StoreError> {
        self.run(stmts, true).await
    }

    async fn run(&self, stmts: Vec<Stmt>, in_transaction: bool) -> Result<Vec<Outcome>, StoreError> {
        match self {
            Db::Sqlite(s) => {
                s.call(move |conn| {
                    if !in_transaction {
                        return stmts.iter().map(|st| sqlite_run(conn, st)).collect();
                    }
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let outcomes = stmts.iter().map(|st| sqlite_run(&tx, st)).collect::<rusqlite::Result<Vec<_>>>()?;
                    tx.commit()?;
                    Ok(outcomes)
                })
                .await
            }
            Db::Postgres(p) => {
                p.bounded(async {
                    let mut client = p.client().await?;
                    let err = |e| pg_error(&p.name, e);
                    if !in_transaction {
                        let mut outcomes = Vec::with_capacity(stmts.len());
                        for st in &stmts {
                            outcomes.push(pg_run(&client, st).await.map_err(err)?);
                        }
                        return Ok(outcomes);
                    }
                    let tx = client.transaction().await.map_err(err)?;
                    let mut outcomes = Vec::with_capacity(stmts.len());
                    for st in &stmts {
                        outcomes.push(pg_run(&tx, st).await.map_err(err)?);
                    }
                    tx.commit().await.map_err(err)?;
                    Ok(outcomes)
                })
                .await
            }
        }
    }
}

impl Sqlite {
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|e| sqlite_error(&this.path, e))
        })
        .await
        .map_err(|e| StoreError::other(format!("a SQLite call did not finish: {e}")))?
    }
}

impl Postgres {
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg_error(&self.name, e),
            PoolError::Timeout(_) => StoreError::Unavailable(format!("PostgreSQL {}: no connection within {:?}", self.name, POOL_WAIT_TIMEOUT)),
            PoolError::Closed => StoreError::Unavailable(format!("PostgreSQL {}: the connection pool is closed", self.name)),
            other => StoreError::other(format!("PostgreSQL {}: {other}", self.name)),
        })
    }

    pub async fn bounded<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(OPERATION_TIMEOUT, f).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("PostgreSQL {}: no answer within {:?}", self.name, OPERATION_TIMEOUT))),
        }
    }
}

/// `$N` placeholders as SQLite's `?N` (our statements have no `$` elsewhere).
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_run(conn: &Connection, st: &Stmt) -> rusqlite::Result<Outcome> {
    let mut prepared = conn.prepare_cached(&sqlite_sql(&st.sql))?;
    let columns = prepared.column_count();
    let mut rows = Vec::new();
    let mut result = prepared.query(rusqlite::params_from_iter(st.params.iter()))?;
    while let Some(r) = result.next()? {
        let mut row = Vec::with_capacity(columns);
        for i in 0..columns {
            row.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => Value::Bytes(v.to_vec()),
            });
        }
        rows.push(Row(row));
    }
    drop(result);
    drop(prepared);
    Ok(Outcome { rows, affected: conn.changes() })
}

async fn pg_run<C: GenericClient + Sync>(client: &C, st: &Stmt) -> Result<Outcome, tokio_postgres::Error> {
    let types: Vec<Type> = st.params.iter().map(Value::pg_type).collect();
    let prepared = client.prepare_typed_cached(&st.sql, &types).await?;
    let params: Vec<&(dyn ToSql + Sync)> = st.params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    if prepared.columns().is_empty() {
        let affected = client.execute(&prepared, &params).await?;
        return Ok(Outcome { rows: Vec::new(), affected });
    }
    let result = client.query(&prepared, &params).await?;
    let mut rows = Vec::with_capacity(result.len());
    for r in &result {
        let mut row = Vec::with_capacity(r.len());
        for (i, column) in r.columns().iter().enumerate() {
            let ty = column.type_();
            let value = if *ty == Type::INT8 {
                r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
            } else if *ty == Type::INT4 {
                r.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into()))
            } else if *ty == Type::INT2 {
                r.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into()))
            } else if *ty == Type::BOOL {
                r.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(v.into()))
            } else if *ty == Type::BYTEA {
                r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
            } else {
                // TEXT and its kin; anything else fails here, loudly, as a mistake in our SQL.
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            };
            row.push(value.unwrap_or(Value::Null));
        }
        rows.push(Row(row));
    }
    let affected = rows.len() as u64;
    Ok(Outcome { rows, affected })
}

fn pg_name(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{hosts}/{dbname}")
}

pub(crate) fn pg_error(name: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(db.message().to_string());
        }
        let unavailable = code.code().starts_with("08")
            || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::TOO_MANY_CONNECTIONS]
                .contains(code);
        if unavailable {
            return StoreError::Unavailable(format!("PostgreSQL {name}: {}", db.message()));
        }
        return StoreError::other(format!("PostgreSQL {name}: {} ({})", db.message(), code.code()));
    }
    // Without a server error it is the connection: refused, closed, timed out, reset.
    let text = e.to_string();
    let connection = e.is_closed()
        || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        || ["error connecting", "error communicating", "timeout", "connection closed", "unexpected message"]
            .iter()
            .any(|p| text.starts_with(p));
    if connection {
        let detail = std::error::Error::source(&e).map(|s| format!("{text}: {s}")).unwrap_or(text);
        StoreError::Unavailable(format!("PostgreSQL {name}: {detail}"))
    } else {
        StoreError::other(format!("PostgreSQL {name}: {e}"))
    }
}

pub(crate) fn sqlite_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(failure, _) = &e {
        match failure.code {
            ErrorCode::ConstraintViolation => return StoreError::Conflict(e.to_string()),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure => {
                return StoreError::Unavailable(format!("SQLite {}: {e}", path.display()))
            }
            _ => {}
        }
    }
    StoreError::other(format!("SQLite {}: {e}", path.display()))
}
