//! Organisations: every other row belongs to one, and every query names it.

use crate::db::{now_ns, Row};
use crate::error::StoreError;
use crate::store::GatewayStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: i64,
    pub name: String,
    pub created_ns: i64,
}

const COLUMNS: &str = "id, name, created_ns";

fn org(mut r: Row) -> Result<Org, StoreError> {
    Ok(Org { id: r.int(0)?, name: r.text(1)?, created_ns: r.int(2)? })
}

impl GatewayStore {
    /// The org of that name, made if it does not exist yet.
    pub async fn ensure_org(&self, name: &str) -> Result<Org, StoreError> {
        self.db
            .execute("INSERT INTO orgs(name, created_ns) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", vec![name.into(), now_ns().into()])
            .await?;
        self.org_by_name(name).await?.ok_or_else(|| StoreError::other(format!("the org {name:?} vanished as it was made")))
    }

    /// A new org; `Conflict` if the name is taken.
    pub async fn create_org(&self, name: &str) -> Result<Org, StoreError> {
        let row = self
            .db
            .query_opt(
                &format!("INSERT INTO orgs(name, created_ns) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"),
                vec![name.into(), now_ns().into()],
            )
            .await?;
        match row {
            Some(r) => org(r),
            None => Err(StoreError::Conflict(format!("the org {name:?} exists already"))),
        }
    }

    pub async fn org_by_name(&self, name: &str) -> Result<Option<Org>, StoreError> {
        self.db.query_opt(&format!("SELECT {COLUMNS} FROM orgs WHERE name = $1"), vec![name.into()]).await?.map(org).transpose()
    }

    pub async fn org_by_id(&self, id: i64) -> Result<Option<Org>, StoreError> {
        self.db.query_opt(&format!("SELECT {COLUMNS} FROM orgs WHERE id = $1"), vec![id.into()]).await?.map(org).transpose()
    }

    /// By name.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.db.query(&format!("SELECT {COLUMNS} FROM orgs ORDER BY name"), vec![]).await?.into_iter().map(org).collect()
    }
}
