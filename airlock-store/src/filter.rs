//! A [`DecisionFilter`] as SQL: the store's twin of
//! [`airlock_api::decision::matches`], which the live stream uses. The tests
//! check that both select the same decisions.

use airlock_api::decision::{ALLOW, CONNECT_KINDS, DENY, EXEC};
use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};
use rusqlite::types::Value;

/// SQL and arguments for a filter; every filter the API has, as bound parameters.
pub fn where_clause(f: &DecisionFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("1");
    let mut args = Vec::new();
    fn eq(column: &str, value: &str, sql: &mut String, args: &mut Vec<Value>) {
        if !value.is_empty() {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(value.to_string()));
        }
    }
    eq("session_id", f.session_id.trim(), &mut sql, &mut args);
    owner_conditions(f, &mut sql, &mut args);
    match DecisionKind::try_from(f.kind).unwrap_or(DecisionKind::Unspecified) {
        DecisionKind::Unspecified => {}
        DecisionKind::Exec => eq("kind", EXEC, &mut sql, &mut args),
        // Unary plus: the kind index is no help to a list of kinds, whose rows it
        // holds in one id range per kind, to be sorted again for a newest-first page.
        // Without it a store the planner has no statistics for yet sorts every
        // matching row; with it the page is read newest-first (by the denial index
        // when denials are asked for) and stops at the page's end.
        DecisionKind::Connect => sql.push_str(&format!(" AND +kind IN ({})", quoted(&CONNECT_KINDS))),
        DecisionKind::Other => sql.push_str(&format!(" AND kind NOT IN ('{EXEC}', {})", quoted(&CONNECT_KINDS))),
    }
    match Verdict::try_from(f.decision).unwrap_or(Verdict::Unspecified) {
        Verdict::Unspecified => {}
        // Constants, not parameters: the planner uses the partial index of denials
        // only when it can see that the query asks for denials.
        Verdict::Allow => sql.push_str(&format!(" AND decision = '{ALLOW}'")),
        Verdict::Deny => sql.push_str(&format!(" AND decision = '{DENY}'")),
    }
    // The query adds the id bounds of a time range ([`crate::page`]).
    if f.since_unix_nanos > 0 {
        sql.push_str(" AND time_ns >= ?");
        args.push(Value::Integer(f.since_unix_nanos));
    }
    if f.until_unix_nanos > 0 {
        sql.push_str(" AND time_ns < ?");
        args.push(Value::Integer(f.until_unix_nanos));
    }
    let text = f.text.trim();
    if !text.is_empty() {
        // The subject is stored lowercased: a plain substring test, no pattern characters.
        sql.push_str(" AND instr(subject, ?) > 0");
        args.push(Value::Text(text.to_ascii_lowercase()));
    }
    (sql, args)
}

/// The filter's user and role as SQL over the columns `user`, `uid` and
/// `role`, which both `decisions` and `session_owners` have; `1` for a filter
/// with neither.
pub fn owner_clause(f: &DecisionFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("1");
    let mut args = Vec::new();
    owner_conditions(f, &mut sql, &mut args);
    (sql, args)
}

fn owner_conditions(f: &DecisionFilter, sql: &mut String, args: &mut Vec<Value>) {
    let role = f.role.trim();
    if !role.is_empty() {
        sql.push_str(" AND role = ?");
        args.push(Value::Text(role.to_string()));
    }
    let user = f.user.trim();
    if !user.is_empty() {
        match user.parse::<u32>() {
            Ok(uid) => {
                sql.push_str(" AND (user = ? OR uid = ?)");
                args.push(Value::Text(user.to_string()));
                args.push(Value::Integer(uid.into()));
            }
            Err(_) => {
                sql.push_str(" AND user = ?");
                args.push(Value::Text(user.to_string()));
            }
        }
    }
}

/// Constant kind names as an SQL list (they are ours, never user input).
fn quoted(kinds: &[&str]) -> String {
    kinds.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
}
