//! An org's policy, as numbered versions: each a complete set of policy
//! files, who made it and why, and its diff from the one before.

use serde::{Deserialize, Serialize};

use crate::db::{now_ns, Row};
use crate::error::StoreError;
use crate::store::GatewayStore;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewPolicyVersion {
    pub author: String,
    pub comment: String,
    pub content_hash: String,
    pub files: Vec<PolicyFile>,
    pub diff: String,
    /// The version this one restores (0: not a rollback).
    pub rollback_of: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyVersion {
    pub org_id: i64,
    pub version: i64,
    pub author: String,
    pub comment: String,
    pub created_ns: i64,
    pub content_hash: String,
    pub files: Vec<PolicyFile>,
    pub diff: String,
    pub rollback_of: i64,
}

const COLUMNS: &str = "org_id, version, author, comment, created_ns, content_hash, diff, rollback_of";

/// A version from `COLUMNS`, then (if `with_files`) the files column.
fn policy_version(mut r: Row, with_files: bool) -> Result<PolicyVersion, StoreError> {
    let mut v = PolicyVersion {
        org_id: r.int(0)?,
        version: r.int(1)?,
        author: r.text(2)?,
        comment: r.text(3)?,
        created_ns: r.int(4)?,
        content_hash: r.text(5)?,
        diff: r.text(6)?,
        rollback_of: r.int(7)?,
        files: Vec::new(),
    };
    if with_files {
        let files = r.text(8)?;
        v.files = serde_json::from_str(&files)
            .map_err(|e| StoreError::other(format!("policy version {} of org {}: its files do not read back: {e}", v.version, v.org_id)))?;
    }
    Ok(v)
}

impl GatewayStore {
    /// Stores the org's next version and returns its number. Of two
    /// concurrent inserts one gets `Conflict` (both read the same latest
    /// version); the caller may retry.
    pub async fn insert_policy_version(&self, org_id: i64, v: &NewPolicyVersion) -> Result<i64, StoreError> {
        let files = serde_json::to_string(&v.files).map_err(|e| StoreError::other(format!("encode the policy files: {e}")))?;
        let row = self
            .db
            .query_opt(
                "INSERT INTO policy_versions(org_id, version, author, comment, created_ns, content_hash, files, diff, rollback_of)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8 FROM policy_versions WHERE org_id = $1
                 RETURNING version",
                vec![
                    org_id.into(),
                    v.author.as_str().into(),
                    v.comment.as_str().into(),
                    now_ns().into(),
                    v.content_hash.as_str().into(),
                    files.into(),
                    v.diff.as_str().into(),
                    v.rollback_of.into(),
                ],
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(format!("another policy version of org {org_id} was stored at the same time; try again")),
                e => e,
            })?;
        row.ok_or_else(|| StoreError::other("storing a policy version returned no version"))?.int(0)
    }

    /// A version with its files; `None`: the latest.
    pub async fn policy_version(&self, org_id: i64, version: Option<i64>) -> Result<Option<PolicyVersion>, StoreError> {
        let row = match version {
            Some(version) => {
                self.db
                    .query_opt(
                        &format!("SELECT {COLUMNS}, files FROM policy_versions WHERE org_id = $1 AND version = $2"),
                        vec![org_id.into(), version.into()],
                    )
                    .await?
            }
            None => {
                self.db
                    .query_opt(
                        &format!("SELECT {COLUMNS}, files FROM policy_versions WHERE org_id = $1 ORDER BY version DESC LIMIT 1"),
                        vec![org_id.into()],
                    )
                    .await?
            }
        };
        row.map(|r| policy_version(r, true)).transpose()
    }

    /// Every version, newest first, without their files.
    pub async fn policy_history(&self, org_id: i64) -> Result<Vec<PolicyVersion>, StoreError> {
        self.db
            .query(&format!("SELECT {COLUMNS} FROM policy_versions WHERE org_id = $1 ORDER BY version DESC"), vec![org_id.into()])
            .await?
            .into_iter()
            .map(|r| policy_version(r, false))
            .collect()
    }

    /// (org, latest version) for every org that has a policy.
    pub async fn latest_policy_versions(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.db
            .query("SELECT org_id, MAX(version) FROM policy_versions GROUP BY org_id ORDER BY org_id", vec![])
            .await?
            .into_iter()
            .map(|mut r| Ok((r.int(0)?, r.int(1)?)))
            .collect()
    }
}
