//! A [`DecisionFilter`] as SQL for the fleet's decisions: the twin of
//! [`airlock_api::decision::matches`] (and of the agent store's filter), with
//! every value a bound parameter. The tests check that both select the same.

use airlock_api::decision::{ALLOW, CONNECT_KINDS, DENY, EXEC};
use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};

use crate::db::{Dialect, Value};

/// SQL being built, with its parameters numbered as they are added.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Query {
    pub fn new(sql: &str) -> Query {
        Query { sql: sql.to_string(), params: Vec::new() }
    }

    /// The placeholder for a new parameter.
    pub fn param(&mut self, v: impl Into<Value>) -> String {
        self.params.push(v.into());
        format!("${}", self.params.len())
    }

    pub fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// ` AND column = $n`.
    pub fn and_eq(&mut self, column: &str, v: impl Into<Value>) {
        let p = self.param(v);
        self.sql.push_str(&format!(" AND {column} = {p}"));
    }
}

/// Appends the filter's conditions (each ` AND ...`) to a query on `decisions`.
pub(crate) fn push_filter(q: &mut Query, f: &DecisionFilter, dialect: Dialect) {
    let session = f.session_id.trim();
    if !session.is_empty() {
        q.and_eq("session_id", session);
    }
    let role = f.role.trim();
    if !role.is_empty() {
        q.and_eq("role", role);
    }
    match DecisionKind::try_from(f.kind).unwrap_or(DecisionKind::Unspecified) {
        DecisionKind::Unspecified => {}
        DecisionKind::Exec => q.and_eq("kind", EXEC),
        DecisionKind::Connect => q.push(&format!(" AND kind IN ({})", quoted(&CONNECT_KINDS))),
        DecisionKind::Other => q.push(&format!(" AND kind NOT IN ('{EXEC}', {})", quoted(&CONNECT_KINDS))),
    }
    match Verdict::try_from(f.decision).unwrap_or(Verdict::Unspecified) {
        Verdict::Unspecified => {}
        Verdict::Allow => q.and_eq("decision", ALLOW),
        Verdict::Deny => q.and_eq("decision", DENY),
    }
    let user = f.user.trim();
    if !user.is_empty() {
        match user.parse::<u32>() {
            Ok(uid) => {
                let name = q.param(user);
                let uid = q.param(i64::from(uid));
                q.push(&format!(" AND (user_name = {name} OR uid = {uid})"));
            }
            Err(_) => q.and_eq("user_name", user),
        }
    }
    if f.since_unix_nanos > 0 {
        let p = q.param(f.since_unix_nanos);
        q.push(&format!(" AND time_ns >= {p}"));
    }
    if f.until_unix_nanos > 0 {
        let p = q.param(f.until_unix_nanos);
        q.push(&format!(" AND time_ns < {p}"));
    }
    let text = f.text.trim();
    if !text.is_empty() {
        // The subject is stored lowercased: a plain substring test, no pattern characters.
        let p = q.param(text.to_ascii_lowercase());
        q.push(&format!(" AND {}", dialect.contains("subject", &p)));
    }
}

/// Constant kind names as an SQL list (they are ours, never user input).
fn quoted(kinds: &[&str]) -> String {
    kinds.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
}
