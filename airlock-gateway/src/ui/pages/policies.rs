//! Policies and roles: the version in force with its files, the history
//! with each version's diff, rollback, and an editor that checks a candidate
//! with the agent's own loader (errors name the file, field and line), shows
//! its diff against the version in force, replays it over the stored
//! decisions (the dry run), and pushes it. A refused candidate changes
//! nothing: the version in force stays, and the editor keeps the text.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use airlock_api::gateway::v1::{GetPolicyRequest, PolicyFile, PolicyHistoryRequest, PushPolicyRequest, RollbackPolicyRequest, SimulatePolicyRequest, SimulationChange};

use crate::fleet::{policy, policy_calls, simulate};
use crate::tokens::Role;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::SignedIn;
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

pub struct VersionRow {
    pub version: u64,
    pub author: String,
    pub comment: String,
    pub created: When,
    pub hash: String,
    pub rollback_of: u64,
}

fn version_row(v: &airlock_api::gateway::v1::PolicyVersion) -> VersionRow {
    VersionRow {
        version: v.version,
        author: v.author.clone(),
        comment: v.comment.clone(),
        created: When(v.created_unix_nanos),
        hash: v.content_hash.clone(),
        rollback_of: v.rollback_of,
    }
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    chrome: Chrome,
    current: Option<VersionRow>,
    files: Vec<PolicyFile>,
    history: Vec<VersionRow>,
}

pub async fn page(State(state): State<AppState>, signed: SignedIn) -> UiResult<Response> {
    let history = policy_calls::history(&state.hub, &signed.caller, PolicyHistoryRequest::default()).await?;
    let (current, files) = if history.versions.is_empty() {
        (None, Vec::new())
    } else {
        let v = policy_calls::get(&state.hub, &signed.caller, GetPolicyRequest::default()).await?;
        (Some(version_row(&v)), v.files)
    };
    let mut history: Vec<VersionRow> = history.versions.iter().map(version_row).collect();
    history.sort_by_key(|v| std::cmp::Reverse(v.version));
    render(PoliciesPage { chrome: Chrome::new(&signed, "policies"), current, files, history })
}

#[derive(Template)]
#[template(path = "policy_version.html")]
struct VersionPage {
    chrome: Chrome,
    v: VersionRow,
    files: Vec<PolicyFile>,
    diff: Vec<DiffLine>,
    latest: u64,
}

pub struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

pub fn diff_lines(diff: &str) -> Vec<DiffLine> {
    diff.lines()
        .map(|l| DiffLine {
            class: match l.as_bytes().first() {
                Some(b'+') if !l.starts_with("+++") => "add",
                Some(b'-') if !l.starts_with("---") => "del",
                Some(b'@') => "hunk",
                _ => "",
            },
            text: l.to_string(),
        })
        .collect()
}

pub async fn version(State(state): State<AppState>, signed: SignedIn, Path(number): Path<u64>) -> UiResult<Response> {
    if number == 0 {
        return Err(UiError::not_found("policy versions start at 1"));
    }
    let v = policy_calls::get(&state.hub, &signed.caller, GetPolicyRequest { version: number, ..Default::default() }).await?;
    let latest = policy_calls::get(&state.hub, &signed.caller, GetPolicyRequest::default()).await?.version;
    render(VersionPage { chrome: Chrome::new(&signed, "policies"), v: version_row(&v), diff: diff_lines(&v.diff), files: v.files, latest })
}

#[derive(Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    comment: String,
}

pub async fn rollback(State(state): State<AppState>, signed: SignedIn, Path(number): Path<u64>, Form(f): Form<RollbackForm>) -> UiResult<Response> {
    let ask = RollbackPolicyRequest { version: number, comment: f.comment.trim().to_string(), ..Default::default() };
    let written = policy_calls::rollback(&state.hub, &signed.caller, ask).await?;
    Ok(Redirect::to(&format!("/policies/{}", written.version)).into_response())
}

/// One file in the editor.
pub struct EditedFile {
    pub index: usize,
    pub path: String,
    pub content: String,
    pub rows: usize,
}

#[derive(Template)]
#[template(path = "policy_edit.html")]
struct EditPage {
    chrome: Chrome,
    base_version: u64,
    files: Vec<EditedFile>,
    comment: String,
    since: String,
    /// The loader's diagnostics (file, field, line), or a push's refusal.
    error: String,
    /// "checked", "simulated" or "" (nothing run yet).
    outcome: &'static str,
    diff: Vec<DiffLine>,
    simulation: Option<Simulation>,
    can_push: bool,
}

pub struct Simulation {
    pub examined: u64,
    pub unchanged: u64,
    pub newly_denied: u64,
    pub newly_allowed: u64,
    pub changes: Vec<SimulationChange>,
}

fn edited(files: Vec<PolicyFile>) -> Vec<EditedFile> {
    files
        .into_iter()
        .enumerate()
        .map(|(index, f)| EditedFile { index, rows: (f.content.lines().count() + 2).clamp(4, 40), path: f.path, content: f.content })
        .collect()
}

pub async fn edit(State(state): State<AppState>, signed: SignedIn) -> UiResult<Response> {
    let (base_version, files) = match policy_calls::get(&state.hub, &signed.caller, GetPolicyRequest::default()).await {
        Ok(v) => (v.version, v.files),
        Err(e) if e.code() == tonic::Code::NotFound => (0, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    render(EditPage {
        can_push: signed.can(Role::Admin),
        chrome: Chrome::new(&signed, "policies"),
        base_version,
        files: edited(files),
        comment: String::new(),
        since: "7d".into(),
        error: String::new(),
        outcome: "",
        diff: Vec::new(),
        simulation: None,
    })
}

/// The editor's form: `path.N`, `content.N` and `remove.N` per file (a new
/// file in `path.new`/`content.new`), `comment`, `since` and `action`.
struct Submitted {
    files: Vec<PolicyFile>,
    comment: String,
    since: String,
    action: String,
}

fn read_form(pairs: Vec<(String, String)>) -> Result<Submitted, String> {
    let mut slots: std::collections::BTreeMap<usize, (String, String, bool)> = Default::default();
    let (mut new_path, mut new_content) = (String::new(), String::new());
    let mut out = Submitted { files: Vec::new(), comment: String::new(), since: String::new(), action: String::new() };
    for (key, value) in pairs {
        match key.split_once('.') {
            Some(("path", "new")) => new_path = value,
            Some(("content", "new")) => new_content = value,
            Some((field @ ("path" | "content" | "remove"), n)) => {
                let n: usize = n.parse().map_err(|_| format!("form field {key:?}: not a file number"))?;
                let slot = slots.entry(n).or_default();
                match field {
                    "path" => slot.0 = value,
                    "content" => slot.1 = value,
                    _ => slot.2 = true,
                }
            }
            _ => match key.as_str() {
                "comment" => out.comment = value,
                "since" => out.since = value,
                "action" => out.action = value,
                _ => {}
            },
        }
    }
    for (_, (path, content, removed)) in slots {
        if !removed {
            out.files.push(PolicyFile { path: path.trim().to_string(), content: content.replace("\r\n", "\n") });
        }
    }
    if !new_path.trim().is_empty() {
        out.files.push(PolicyFile { path: new_path.trim().to_string(), content: new_content.replace("\r\n", "\n") });
    }
    Ok(out)
}

pub async fn submit(State(state): State<AppState>, signed: SignedIn, Form(pairs): Form<Vec<(String, String)>>) -> UiResult<Response> {
    let form = read_form(pairs).map_err(UiError::bad_request)?;
    let hub = &state.hub;
    let in_force = match policy_calls::get(hub, &signed.caller, GetPolicyRequest::default()).await {
        Ok(v) => Some(v),
        Err(e) if e.code() == tonic::Code::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut page = EditPage {
        can_push: signed.can(Role::Admin),
        chrome: Chrome::new(&signed, "policies"),
        base_version: in_force.as_ref().map(|v| v.version).unwrap_or(0),
        files: Vec::new(),
        comment: form.comment.clone(),
        since: if form.since.trim().is_empty() { "7d".into() } else { form.since.clone() },
        error: String::new(),
        outcome: "",
        diff: Vec::new(),
        simulation: None,
    };
    let pairs = |files: &[PolicyFile]| files.iter().map(|f| (f.path.clone(), f.content.clone())).collect::<Vec<_>>();
    page.diff = diff_lines(&policy::diff(&in_force.as_ref().map(|v| pairs(&v.files)).unwrap_or_default(), &pairs(&form.files)));
    match form.action.as_str() {
        "push" => {
            let ask = PushPolicyRequest { files: form.files.clone(), comment: form.comment.trim().to_string(), ..Default::default() };
            match policy_calls::push(hub, &signed.caller, ask).await {
                Ok(written) => return Ok(Redirect::to(&format!("/policies/{}", written.version)).into_response()),
                Err(e) if matches!(e.code(), tonic::Code::InvalidArgument) => page.error = e.message().to_string(),
                Err(e) => return Err(e.into()),
            }
        }
        "simulate" => {
            if let Err(e) = policy::validate(&form.files) {
                page.error = format!("the policy set is invalid:\n{e}");
            } else {
                let since = crate::instants::parse_time(&page.since).map_err(|e| UiError::bad_request(format!("since: {e:#}")))?;
                let r = simulate::simulate(hub, &signed.caller, SimulatePolicyRequest { files: form.files.clone(), since_unix_nanos: since, ..Default::default() }).await;
                match r {
                    Ok(r) => {
                        page.outcome = "simulated";
                        page.simulation = Some(Simulation { examined: r.examined, unchanged: r.unchanged, newly_denied: r.newly_denied, newly_allowed: r.newly_allowed, changes: r.changes });
                    }
                    Err(e) if matches!(e.code(), tonic::Code::InvalidArgument) => page.error = e.message().to_string(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "check" | "" => match policy::validate(&form.files) {
            Ok(_) => page.outcome = "checked",
            Err(e) => page.error = format!("the policy set is invalid:\n{e}"),
        },
        other => return Err(UiError::bad_request(format!("action: {other:?} is not one of check, simulate, push"))),
    }
    page.files = edited(form.files);
    let status = if page.error.is_empty() { axum::http::StatusCode::OK } else { axum::http::StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, render(page)?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_form_keeps_file_order_drops_removed_files_and_adds_a_new_one() {
        let pairs = vec![
            ("path.1".into(), "roles/r.json".into()),
            ("content.1".into(), "{}\r\n".into()),
            ("path.0".into(), "policies/p.json".into()),
            ("content.0".into(), "x".into()),
            ("remove.0".into(), "on".into()),
            ("path.new".into(), " policies/n.json ".into()),
            ("content.new".into(), "y".into()),
            ("action".into(), "check".into()),
        ];
        let f = read_form(pairs).unwrap();
        let paths: Vec<&str> = f.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["roles/r.json", "policies/n.json"]);
        assert_eq!(f.files[0].content, "{}\n");
        assert_eq!(f.action, "check");
        assert!(read_form(vec![("path.x".into(), "a".into())]).is_err());
    }

    #[test]
    fn diff_lines_are_classed() {
        let lines = diff_lines("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n same");
        let classes: Vec<&str> = lines.iter().map(|l| l.class).collect();
        assert_eq!(classes, vec!["", "", "hunk", "del", "add", ""]);
    }
}
