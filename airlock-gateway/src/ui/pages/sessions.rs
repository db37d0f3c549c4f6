//! Sessions: every host's, filtered; one session's detail with its process
//! tree and decisions; revoking it on its host.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use airlock_api::gateway::v1::{ListSessionsRequest, QueryDecisionsRequest, RevokeSessionRequest};
use airlock_api::v1::{Decision, DecisionFilter, SessionState};

use super::overview::{is_live, session_row, SessionRow};
use crate::fleet::{decisions, sessions};
use crate::tokens::Role;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::{urlencode, SignedIn};
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

/// The decisions shown on a session's page, newest first.
const SESSION_DECISIONS: u32 = 200;

#[derive(Deserialize, Default)]
pub struct SessionFilters {
    #[serde(default)]
    host: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    user: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    filters: SessionFilters,
    rows: Vec<SessionRow>,
    empty_hint: &'static str,
}

pub async fn list(State(state): State<AppState>, signed: SignedIn, Query(filters): Query<SessionFilters>) -> UiResult<Response> {
    let wanted = match filters.state.as_str() {
        "" | "any" | "live" => SessionState::Unspecified,
        "exited" => SessionState::Exited,
        "revoked" => SessionState::Revoked,
        other => return Err(UiError::bad_request(format!("state: {other:?} is not one of any, live, exited, revoked"))),
    };
    let only_live = filters.state == "live";
    let ask = ListSessionsRequest { host: filters.host.trim().to_string(), state: wanted as i32, ..Default::default() };
    let listed = sessions::list(&state.hub, &signed.caller, ask).await?;
    let user = filters.user.trim().to_lowercase();
    let rows = listed
        .sessions
        .into_iter()
        .filter_map(|s| Some((s.host, s.session?)))
        .filter(|(_, s)| user.is_empty() || s.user.to_lowercase().contains(&user))
        .filter(|(_, s)| !only_live || is_live(s))
        .map(|(host, s)| session_row(host, s))
        .collect();
    render(SessionsPage { chrome: Chrome::new(&signed, "sessions"), filters, rows, empty_hint: "none match these filters" })
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    chrome: Chrome,
    host: String,
    session: airlock_api::v1::Session,
    state: &'static str,
    tree: Vec<TreeLine>,
    decisions: Vec<DecisionRow>,
    more: bool,
    decisions_link: String,
    can_revoke: bool,
}

/// One process in the tree, indented by its depth.
pub struct TreeLine {
    pub indent: String,
    pub pid: u32,
    pub command: String,
    pub denied: bool,
}

pub struct DecisionRow {
    pub time: When,
    pub kind: String,
    pub decision: String,
    pub reason: String,
    pub pid: u32,
    pub what: String,
    pub rule: String,
}

pub fn decision_row(d: &Decision) -> DecisionRow {
    DecisionRow {
        time: When(d.time_unix_nanos),
        kind: d.kind.clone(),
        decision: d.decision.clone(),
        reason: d.reason.clone(),
        pid: d.pid,
        what: what(d),
        rule: d.rule.clone().unwrap_or_default(),
    }
}

/// What a decision was about: the command line, or the destination.
pub fn what(d: &Decision) -> String {
    use airlock_api::v1::decision::Detail;
    match &d.detail {
        Some(Detail::Destination(dest)) => {
            format!("{} {}:{}", dest.protocol, dest.address, dest.port)
        }
        Some(Detail::UnixSocket(u)) => format!("unix {}", u.path),
        Some(Detail::RawSocket(r)) => format!("raw socket {} {} {}", r.family, r.socket_type, r.protocol),
        _ if !d.argv.is_empty() => d.argv.join(" "),
        _ => d.executable.clone(),
    }
}

pub async fn detail(State(state): State<AppState>, signed: SignedIn, Path((host, id)): Path<(String, String)>) -> UiResult<Response> {
    let listed = sessions::list(&state.hub, &signed.caller, ListSessionsRequest { host: host.clone(), ..Default::default() }).await?;
    let session = listed
        .sessions
        .into_iter()
        .filter_map(|s| s.session)
        .find(|s| s.id == id)
        .ok_or_else(|| UiError::not_found(format!("host {host:?} has no session {id:?}")))?;
    let ask = QueryDecisionsRequest {
        host: host.clone(),
        filter: Some(DecisionFilter { session_id: id.clone(), ..Default::default() }),
        page_size: SESSION_DECISIONS,
        ..Default::default()
    };
    let page = decisions::query(&state.hub, &signed.caller, ask).await?;
    let more = !page.next_page_token.is_empty();
    let list: Vec<Decision> = page.decisions.into_iter().filter_map(|d| d.decision).collect();
    let tree = process_tree(session.root_pid, &session.command, &list);
    let state_name = match SessionState::try_from(session.state).unwrap_or(SessionState::Unspecified) {
        SessionState::Ready => "ready",
        SessionState::Running => "running",
        SessionState::Exited => "exited",
        SessionState::Revoked => "revoked",
        SessionState::Unspecified => "unknown",
    };
    render(SessionPage {
        can_revoke: signed.can(Role::Approver) && is_live(&session),
        chrome: Chrome::new(&signed, "sessions"),
        decisions_link: format!("/decisions?host={}&session={}", urlencode(&host), urlencode(&id)),
        decisions: list.iter().map(decision_row).collect(),
        host,
        session,
        state: state_name,
        tree,
        more,
    })
}

/// The session's processes as a tree from its exec decisions (pid, parent,
/// command line), rooted at the session's first process. A process whose
/// parent is not in the session's decisions hangs under the root.
pub fn process_tree(root_pid: u32, root_command: &[String], decisions: &[Decision]) -> Vec<TreeLine> {
    let mut processes: BTreeMap<u32, (u32, String, bool)> = BTreeMap::new();
    for d in decisions.iter().rev().filter(|d| d.kind == "exec") {
        let entry = processes.entry(d.pid).or_insert((d.ppid, String::new(), false));
        entry.1 = what(d);
        entry.2 |= d.decision == "deny";
    }
    processes.remove(&root_pid);
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (&pid, (ppid, _, _)) in &processes {
        let parent = if processes.contains_key(ppid) && *ppid != pid { *ppid } else { root_pid };
        children.entry(parent).or_default().push(pid);
    }
    let mut lines = vec![TreeLine { indent: String::new(), pid: root_pid, command: root_command.join(" "), denied: false }];
    let mut stack: Vec<(u32, usize)> = children.get(&root_pid).map(|c| c.iter().rev().map(|&p| (p, 1)).collect()).unwrap_or_default();
    while let Some((pid, depth)) = stack.pop() {
        if lines.len() > processes.len() {
            break;
        }
        if let Some((_, command, denied)) = processes.get(&pid) {
            lines.push(TreeLine { indent: "   ".repeat(depth.saturating_sub(1)) + "└─ ", pid, command: command.clone(), denied: *denied });
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    lines
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    reason: String,
}

pub async fn revoke(State(state): State<AppState>, signed: SignedIn, Path((host, id)): Path<(String, String)>, Form(f): Form<RevokeForm>) -> UiResult<Response> {
    let ask = RevokeSessionRequest { host: host.clone(), session_id: id.clone(), reason: f.reason, ..Default::default() };
    sessions::revoke(&state.hub, &signed.caller, ask).await?;
    Ok(Redirect::to(&format!("/sessions/{}/{}", urlencode(&host), urlencode(&id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, ppid: u32, argv: &str, decision: &str) -> Decision {
        Decision { kind: "exec".into(), pid, ppid, argv: argv.split(' ').map(String::from).collect(), decision: decision.into(), ..Default::default() }
    }

    #[test]
    fn the_tree_nests_children_under_their_parents_and_orphans_under_the_root() {
        let newest_first = vec![exec(40, 999, "curl x", "allow"), exec(30, 20, "terraform apply", "deny"), exec(20, 10, "bash -c t", "allow")];
        let tree = process_tree(10, &["claude".into()], &newest_first);
        let shown: Vec<(u32, usize, bool)> = tree.iter().map(|l| (l.pid, l.indent.chars().count() / 3, l.denied)).collect();
        assert_eq!(shown, vec![(10, 0, false), (20, 1, false), (30, 2, true), (40, 1, false)]);
        assert_eq!(tree[2].command, "terraform apply");
    }
}
