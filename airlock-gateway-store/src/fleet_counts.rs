//! What the gateway's metrics count over the whole store, every org at once:
//! hosts by the policy version they enforce, approval requests waiting.

use crate::approvals::APPROVAL_PENDING;
use crate::error::StoreError;
use crate::store::GatewayStore;

impl GatewayStore {
    /// (org name, enforced policy version, hosts) for every host not revoked;
    /// version 0 is a host that has enforced none of the gateway's yet.
    pub async fn hosts_by_policy_version(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT o.name, h.enforced_version, COUNT(*) FROM hosts h JOIN orgs o ON o.id = h.org_id
                 WHERE h.revoked = 0 GROUP BY o.name, h.enforced_version ORDER BY o.name, h.enforced_version",
                vec![],
            )
            .await?;
        rows.into_iter()
            .map(|mut r| Ok((r.text(0)?, r.int(1)?, r.int(2)?)))
            .collect()
    }

    /// (org name, approval requests pending) for every org with one.
    pub async fn pending_approvals_by_org(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT o.name, COUNT(*) FROM approvals a JOIN orgs o ON o.id = a.org_id WHERE a.state = $1 GROUP BY o.name ORDER BY o.name",
                vec![APPROVAL_PENDING.into()],
            )
            .await?;
        rows.into_iter()
            .map(|mut r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }
}
