//! The store handle: which database, opened and migrated.

use std::path::Path;

use crate::db::Db;
use crate::error::StoreError;
use crate::migrations::{migrate, MIGRATIONS};

/// The gateway's store; cheap to clone (the connection or pool is shared).
#[derive(Clone)]
pub struct GatewayStore {
    pub(crate) db: Db,
}

impl GatewayStore {
    /// `None`: SQLite at `data_dir/gateway.db`; a `postgresql://` or
    /// `postgres://` URL: PostgreSQL. Migrations are applied before it returns.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<GatewayStore, StoreError> {
        let db = match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| StoreError::Unavailable(format!("SQLite {}: cannot create the directory: {e}", data_dir.display())))?;
                Db::open_sqlite(&data_dir.join("gateway.db"))?
            }
            Some(url) if url.starts_with("postgresql://") || url.starts_with("postgres://") => Db::open_postgres(url)?,
            Some(url) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("(none)");
                return Err(StoreError::other(format!(
                    "the database URL's scheme {scheme:?} is not supported: use postgresql://user@host:port/dbname, or no URL for SQLite in the data directory"
                )));
            }
        };
        migrate(&db, MIGRATIONS).await?;
        Ok(GatewayStore { db })
    }

    /// "SQLite /var/lib/airlock-gateway/gateway.db" or "PostgreSQL 10.0.0.5:5432/airlock".
    pub fn describe(&self) -> String {
        self.db.describe()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// The newest schema migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = self.db.query_opt("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", vec![]).await?;
        row.ok_or_else(|| StoreError::other("MAX returned no row"))?.int(0)
    }

    /// The newest schema migration this build knows.
    pub fn known_schema_version() -> i64 {
        MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
    }
}
