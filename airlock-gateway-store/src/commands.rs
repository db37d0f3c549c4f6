//! Requests for agents (revoke a session, ...) that any replica may be
//! asked for, and only the replica holding the host's stream can deliver:
//! each is taken for delivery exactly once, then finished with its result.

use crate::db::Row;
use crate::error::StoreError;
use crate::store::GatewayStore;

pub const COMMAND_PENDING: &str = "pending";
pub const COMMAND_SENT: &str = "sent";
pub const COMMAND_DONE: &str = "done";
pub const COMMAND_FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub id: i64,
    pub org_id: i64,
    pub host_id: String,
    pub kind: String,
    pub payload: Vec<u8>,
    /// [`COMMAND_PENDING`], [`COMMAND_SENT`], [`COMMAND_DONE`] or [`COMMAND_FAILED`].
    pub state: String,
    pub result: Vec<u8>,
    pub error: String,
    pub created_ns: i64,
    pub updated_ns: i64,
}

const COLUMNS: &str = "id, org_id, host_id, kind, payload, state, result, error, created_ns, updated_ns";

fn command(mut r: Row) -> Result<Command, StoreError> {
    Ok(Command {
        id: r.int(0)?,
        org_id: r.int(1)?,
        host_id: r.text(2)?,
        kind: r.text(3)?,
        payload: r.bytes(4)?,
        state: r.text(5)?,
        result: r.bytes(6)?,
        error: r.text(7)?,
        created_ns: r.int(8)?,
        updated_ns: r.int(9)?,
    })
}

impl GatewayStore {
    /// A pending command for a host; its id.
    pub async fn insert_command(&self, org_id: i64, host_id: &str, kind: &str, payload: &[u8], now_ns: i64) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_opt(
                "INSERT INTO commands(org_id, host_id, kind, payload, state, result, error, created_ns, updated_ns)
                 VALUES ($1, $2, $3, $4, $5, $6, '', $7, $7) RETURNING id",
                vec![org_id.into(), host_id.into(), kind.into(), payload.into(), COMMAND_PENDING.into(), Vec::new().into(), now_ns.into()],
            )
            .await?;
        row.ok_or_else(|| StoreError::other("inserting a command returned no id"))?.int(0)
    }

    /// The host's pending commands, oldest first, marked sent in the same
    /// statement: a command is handed to one caller only.
    pub async fn take_pending_commands(&self, org_id: i64, host_id: &str, now_ns: i64) -> Result<Vec<Command>, StoreError> {
        let rows = self
            .db
            .query(
                &format!(
                    "UPDATE commands SET state = $4, updated_ns = $5 WHERE org_id = $1 AND host_id = $2 AND state = $3 RETURNING {COLUMNS}"
                ),
                vec![org_id.into(), host_id.into(), COMMAND_PENDING.into(), COMMAND_SENT.into(), now_ns.into()],
            )
            .await?;
        let mut commands = rows.into_iter().map(command).collect::<Result<Vec<_>, _>>()?;
        commands.sort_by_key(|c| c.id);
        Ok(commands)
    }

    /// The hosts that have pending commands: every replica polls this, and
    /// takes the commands of the hosts connected to it.
    pub async fn pending_command_hosts(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self.db.query("SELECT DISTINCT org_id, host_id FROM commands WHERE state = $1", vec![COMMAND_PENDING.into()]).await?;
        rows.into_iter().map(|mut r| Ok((r.int(0)?, r.text(1)?))).collect()
    }

    /// Records the agent's answer: `error` empty: done, with `result`;
    /// otherwise failed. `NotFound` if there is no such command.
    pub async fn finish_command(&self, id: i64, result: &[u8], error: &str, now_ns: i64) -> Result<(), StoreError> {
        let n = self
            .db
            .execute(
                "UPDATE commands SET state = CASE WHEN $3 = '' THEN $5 ELSE $6 END, result = $2, error = $3, updated_ns = $4 WHERE id = $1",
                vec![id.into(), result.into(), error.into(), now_ns.into(), COMMAND_DONE.into(), COMMAND_FAILED.into()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no command {id}")));
        }
        Ok(())
    }

    pub async fn command(&self, id: i64) -> Result<Option<Command>, StoreError> {
        self.db.query_opt(&format!("SELECT {COLUMNS} FROM commands WHERE id = $1"), vec![id.into()]).await?.map(command).transpose()
    }
}
