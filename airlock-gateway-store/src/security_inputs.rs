//! What security monitoring's detection pass reads and keeps besides the
//! decisions: each org's detector settings (numbered versions, the latest in
//! force, like policy), its request-rate baseline, the API token uses, and
//! which replica ran the org's last pass.

use crate::db::Row;
use crate::error::StoreError;
use crate::store::GatewayStore;

/// One version of an org's detector settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecuritySettingsVersion {
    pub org_id: i64,
    pub version: i64,
    /// The settings as JSON (`airlock_detect::Settings`, every field filled in).
    pub document: String,
    pub author: String,
    pub comment: String,
    pub created_ns: i64,
}

/// An API token presented from one source address: the first and last time,
/// and how often.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenUseRow {
    pub token_id: i64,
    /// How findings name the token (its label and id; never its secret).
    pub token: String,
    pub address: String,
    pub first_ns: i64,
    pub last_ns: i64,
    pub uses: i64,
}

const SETTINGS_COLUMNS: &str = "org_id, version, document, author, comment, created_ns";

fn settings_version(mut r: Row) -> Result<SecuritySettingsVersion, StoreError> {
    Ok(SecuritySettingsVersion {
        org_id: r.int(0)?,
        version: r.int(1)?,
        document: r.text(2)?,
        author: r.text(3)?,
        comment: r.text(4)?,
        created_ns: r.int(5)?,
    })
}

impl GatewayStore {
    /// Stores the org's next settings version and returns its number. Of two
    /// concurrent inserts one gets `Conflict`; the caller may retry.
    pub async fn insert_security_settings(&self, org_id: i64, document: &str, author: &str, comment: &str, now_ns: i64) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "INSERT INTO security_settings(org_id, version, document, author, comment, created_ns)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM security_settings WHERE org_id = $1
                 RETURNING version",
                vec![org_id.into(), document.into(), author.into(), comment.into(), now_ns.into()],
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(format!("other security settings of org {org_id} were stored at the same time; try again")),
                e => e,
            })?;
        row.ok_or_else(|| StoreError::other("storing security settings returned no version"))?.int(0)
    }

    /// A settings version; `None`: the latest (the one in force).
    pub async fn security_settings(&self, org_id: i64, version: Option<i64>) -> Result<Option<SecuritySettingsVersion>, StoreError> {
        let row = match version {
            Some(v) => {
                self.db
                    .query_opt(&format!("SELECT {SETTINGS_COLUMNS} FROM security_settings WHERE org_id = $1 AND version = $2"), vec![org_id.into(), v.into()])
                    .await?
            }
            None => {
                self.db
                    .query_opt(&format!("SELECT {SETTINGS_COLUMNS} FROM security_settings WHERE org_id = $1 ORDER BY version DESC LIMIT 1"), vec![org_id.into()])
                    .await?
            }
        };
        row.map(settings_version).transpose()
    }

    /// Every settings version, newest first.
    pub async fn security_settings_history(&self, org_id: i64) -> Result<Vec<SecuritySettingsVersion>, StoreError> {
        self.db
            .query(&format!("SELECT {SETTINGS_COLUMNS} FROM security_settings WHERE org_id = $1 ORDER BY version DESC"), vec![org_id.into()])
            .await?
            .into_iter()
            .map(settings_version)
            .collect()
    }

    /// The org's request-rate baseline as JSON, if one was kept.
    pub async fn security_baseline(&self, org_id: i64) -> Result<Option<String>, StoreError> {
        self.db.query_opt("SELECT baseline FROM security_baselines WHERE org_id = $1", vec![org_id.into()]).await?.map(|mut r| r.text(0)).transpose()
    }

    pub async fn save_security_baseline(&self, org_id: i64, baseline: &str, now_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO security_baselines(org_id, baseline, updated_ns) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id) DO UPDATE SET baseline = excluded.baseline, updated_ns = excluded.updated_ns",
                vec![org_id.into(), baseline.into(), now_ns.into()],
            )
            .await?;
        Ok(())
    }

    /// Counts one use of an API token from `address`: one row per (token,
    /// address), so the table grows with the addresses seen, not the calls.
    pub async fn record_token_use(&self, org_id: i64, token_id: i64, token: &str, address: &str, now_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO token_uses(token_id, address, org_id, token, first_ns, last_ns, uses) VALUES ($1, $2, $3, $4, $5, $5, 1)
                 ON CONFLICT (token_id, address) DO UPDATE SET token = excluded.token, uses = token_uses.uses + 1,
                    last_ns = CASE WHEN token_uses.last_ns < excluded.last_ns THEN excluded.last_ns ELSE token_uses.last_ns END",
                vec![token_id.into(), address.into(), org_id.into(), token.into(), now_ns.into()],
            )
            .await?;
        Ok(())
    }

    /// The org's token uses last seen at or after `since_ns`, by token then address.
    pub async fn token_uses(&self, org_id: i64, since_ns: i64) -> Result<Vec<TokenUseRow>, StoreError> {
        self.db
            .query(
                "SELECT token_id, token, address, first_ns, last_ns, uses FROM token_uses WHERE org_id = $1 AND last_ns >= $2 ORDER BY token_id, address",
                vec![org_id.into(), since_ns.into()],
            )
            .await?
            .into_iter()
            .map(|mut r| Ok(TokenUseRow { token_id: r.int(0)?, token: r.text(1)?, address: r.text(2)?, first_ns: r.int(3)?, last_ns: r.int(4)?, uses: r.int(5)? }))
            .collect()
    }

    /// Claims the org's detection pass at `now_ns` for `replica`, unless a
    /// pass ran less than `min_gap_ns` ago (on this replica or another):
    /// replicas sharing a database do not run the same pass twice.
    pub async fn claim_detection_run(&self, org_id: i64, replica: &str, now_ns: i64, min_gap_ns: i64) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                "INSERT INTO security_runs(org_id, replica, run_ns) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id) DO UPDATE SET replica = excluded.replica, run_ns = excluded.run_ns
                 WHERE security_runs.run_ns <= $4
                 RETURNING org_id",
                vec![org_id.into(), replica.into(), now_ns.into(), now_ns.saturating_sub(min_gap_ns).into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
