//! The sessions hosts report: the latest state of each, kept as the
//! `Session` record the agent sent.

use airlock_api::v1::{Session, SessionState};
use prost::Message;

use crate::db::{Stmt, Value};
use crate::error::StoreError;
use crate::filter::Query;
use crate::store::GatewayStore;

/// The state column's text: stable names, not the enum's numbers.
fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Unspecified => "unspecified",
        SessionState::Ready => "ready",
        SessionState::Running => "running",
        SessionState::Exited => "exited",
        SessionState::Revoked => "revoked",
    }
}

impl GatewayStore {
    /// Stores what a host reports about its sessions, in one transaction.
    pub async fn upsert_sessions(&self, org_id: i64, host_id: &str, sessions: &[Session], now_ns: i64) -> Result<(), StoreError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let stmts = sessions
            .iter()
            .map(|s| {
                let state = state_name(SessionState::try_from(s.state).unwrap_or(SessionState::Unspecified));
                Stmt::new(
                    "INSERT INTO sessions(org_id, host_id, session_id, state, started_ns, updated_ns, body) VALUES ($1, $2, $3, $4, $5, $5, $6)
                     ON CONFLICT (org_id, host_id, session_id) DO UPDATE SET state = excluded.state, updated_ns = excluded.updated_ns, body = excluded.body",
                    vec![org_id.into(), host_id.into(), s.id.as_str().into(), state.into(), now_ns.into(), Value::Bytes(s.encode_to_vec())],
                )
            })
            .collect();
        self.db.transaction(stmts).await?;
        Ok(())
    }

    /// An org's sessions, first seen newest first: on one host (`host` not
    /// empty), in one state (not `Unspecified`).
    pub async fn list_sessions(&self, org_id: i64, host: &str, state: SessionState) -> Result<Vec<(String, Session)>, StoreError> {
        let mut q = Query::new("SELECT host_id, body FROM sessions WHERE ");
        let org = q.param(org_id);
        q.push(&format!("org_id = {org}"));
        if !host.is_empty() {
            q.and_eq("host_id", host);
        }
        if state != SessionState::Unspecified {
            q.and_eq("state", state_name(state));
        }
        q.push(" ORDER BY started_ns DESC, host_id, session_id");
        self.db
            .query(&q.sql, q.params)
            .await?
            .into_iter()
            .map(|mut r| {
                let host = r.text(0)?;
                let body = r.bytes(1)?;
                let session = Session::decode(body.as_slice())
                    .map_err(|e| StoreError::other(format!("a session of host {host} (org {org_id}) does not decode: {e}")))?;
                Ok((host, session))
            })
            .collect()
    }
}
