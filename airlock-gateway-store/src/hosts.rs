//! Enrolled hosts: their certificate, what they last reported, the policy
//! version they enforce and how far their decisions have been shipped.

use crate::db::Row;
use crate::error::StoreError;
use crate::store::GatewayStore;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    pub org_id: i64,
    pub host_id: String,
    pub cert_serial: String,
    pub enrolled_ns: i64,
    pub revoked: bool,
    pub last_contact_ns: i64,
    /// The gateway replica holding the host's stream now ("" if none).
    pub connected_replica: String,
    pub backend: String,
    pub kernel: String,
    pub agent_version: String,
    /// 0: none yet.
    pub enforced_version: i64,
    pub enforced_hash: String,
    /// Why the host refused the last version it was sent ("" if it did not).
    pub policy_error: String,
    /// The highest decision sequence number stored.
    pub shipped_seq: i64,
    /// Decisions the host reports it could not ship, in all.
    pub lost_total: i64,
}

/// What a host's contact tells; an empty string keeps the value stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostContact {
    pub now_ns: i64,
    pub replica: String,
    pub backend: String,
    pub kernel: String,
    pub agent_version: String,
}

const COLUMNS: &str = "org_id, host_id, cert_serial, enrolled_ns, revoked, last_contact_ns, connected_replica, backend, kernel, \
                       agent_version, enforced_version, enforced_hash, policy_error, shipped_seq, lost_total";

fn host(mut r: Row) -> Result<Host, StoreError> {
    Ok(Host {
        org_id: r.int(0)?,
        host_id: r.text(1)?,
        cert_serial: r.text(2)?,
        enrolled_ns: r.int(3)?,
        revoked: r.flag(4)?,
        last_contact_ns: r.int(5)?,
        connected_replica: r.text(6)?,
        backend: r.text(7)?,
        kernel: r.text(8)?,
        agent_version: r.text(9)?,
        enforced_version: r.int(10)?,
        enforced_hash: r.text(11)?,
        policy_error: r.text(12)?,
        shipped_seq: r.int(13)?,
        lost_total: r.int(14)?,
    })
}

/// `column = $n` unless the new value is empty.
fn keep_if_empty(column: &str, param: &str) -> String {
    format!("{column} = CASE WHEN {param} = '' THEN {column} ELSE {param} END")
}

impl GatewayStore {
    /// Enrolls a host, or re-enrolls it: the new certificate replaces the
    /// old, and a revoked host is admitted again.
    pub async fn enroll_host(&self, org_id: i64, host_id: &str, cert_serial: &str, now_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO hosts(org_id, host_id, cert_serial, enrolled_ns, revoked) VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT (org_id, host_id) DO UPDATE SET cert_serial = excluded.cert_serial, enrolled_ns = excluded.enrolled_ns, revoked = 0",
                vec![org_id.into(), host_id.into(), cert_serial.into(), now_ns.into()],
            )
            .await?;
        Ok(())
    }

    pub async fn host(&self, org_id: i64, host_id: &str) -> Result<Option<Host>, StoreError> {
        self.db
            .query_opt(&format!("SELECT {COLUMNS} FROM hosts WHERE org_id = $1 AND host_id = $2"), vec![org_id.into(), host_id.into()])
            .await?
            .map(host)
            .transpose()
    }

    /// False if the org has no such host.
    pub async fn revoke_host(&self, org_id: i64, host_id: &str) -> Result<bool, StoreError> {
        let n = self.db.execute("UPDATE hosts SET revoked = 1 WHERE org_id = $1 AND host_id = $2", vec![org_id.into(), host_id.into()]).await?;
        Ok(n > 0)
    }

    pub async fn record_contact(&self, org_id: i64, host_id: &str, c: &HostContact) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE hosts SET last_contact_ns = $3, {}, {}, {}, {} WHERE org_id = $1 AND host_id = $2",
            keep_if_empty("connected_replica", "$4"),
            keep_if_empty("backend", "$5"),
            keep_if_empty("kernel", "$6"),
            keep_if_empty("agent_version", "$7"),
        );
        let params = vec![
            org_id.into(),
            host_id.into(),
            c.now_ns.into(),
            c.replica.as_str().into(),
            c.backend.as_str().into(),
            c.kernel.as_str().into(),
            c.agent_version.as_str().into(),
        ];
        self.db.execute(&sql, params).await?;
        Ok(())
    }

    /// The host's stream closed on `replica`: it is no longer connected there
    /// (unless it has reconnected to another replica meanwhile).
    pub async fn record_disconnect(&self, org_id: i64, host_id: &str, replica: &str, now_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE hosts SET connected_replica = '', last_contact_ns = $4 WHERE org_id = $1 AND host_id = $2 AND connected_replica = $3",
                vec![org_id.into(), host_id.into(), replica.into(), now_ns.into()],
            )
            .await?;
        Ok(())
    }

    /// `error` empty: the host enforces `version` (with `hash`). Otherwise it
    /// refused `version`: what it enforced before stays recorded.
    pub async fn record_enforced(&self, org_id: i64, host_id: &str, version: i64, hash: &str, error: &str, now_ns: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE hosts SET
                    enforced_version = CASE WHEN $5 = '' THEN $3 ELSE enforced_version END,
                    enforced_hash = CASE WHEN $5 = '' THEN $4 ELSE enforced_hash END,
                    policy_error = $5,
                    last_contact_ns = CASE WHEN last_contact_ns < $6 THEN $6 ELSE last_contact_ns END
                 WHERE org_id = $1 AND host_id = $2",
                vec![org_id.into(), host_id.into(), version.into(), hash.into(), error.into(), now_ns.into()],
            )
            .await?;
        Ok(())
    }

    /// By host id.
    pub async fn list_hosts(&self, org_id: i64) -> Result<Vec<Host>, StoreError> {
        self.db.query(&format!("SELECT {COLUMNS} FROM hosts WHERE org_id = $1 ORDER BY host_id"), vec![org_id.into()]).await?.into_iter().map(host).collect()
    }

    /// The host reports `count` more decisions it could not ship.
    pub async fn record_loss(&self, org_id: i64, host_id: &str, count: i64) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE hosts SET lost_total = lost_total + $3 WHERE org_id = $1 AND host_id = $2", vec![org_id.into(), host_id.into(), count.into()])
            .await?;
        Ok(())
    }
}
