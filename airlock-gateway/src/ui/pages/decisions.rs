//! Decisions: every filter of the fleet's QueryDecisions, pages newest
//! first (a cursor, so a page costs the same at ten million rows), a live
//! tail polled by htmx, and the whole filtered set as CSV or JSON, streamed
//! a page at a time so an export never holds the set in memory.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use airlock_api::gateway::v1::{FleetDecision, QueryDecisionsRequest};
use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};

use super::sessions::what;
use crate::fleet::decisions;
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::{urlencode, SignedIn};
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

const PAGE_SIZES: [u32; 4] = [50, 100, 200, 500];
const EXPORT_PAGE: u32 = 1000;

#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub page: String,
    #[serde(default)]
    pub size: Option<u32>,
    #[serde(default)]
    pub live: Option<u8>,
}

impl Filters {
    /// The request these filters make; an error names the field.
    pub fn request(&self) -> Result<QueryDecisionsRequest, String> {
        let kind = match self.kind.as_str() {
            "" => DecisionKind::Unspecified,
            "exec" => DecisionKind::Exec,
            "connect" => DecisionKind::Connect,
            "other" => DecisionKind::Other,
            k => return Err(format!("kind: {k:?} is not one of exec, connect, other")),
        };
        let verdict = match self.decision.as_str() {
            "" => Verdict::Unspecified,
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            v => return Err(format!("decision: {v:?} is not one of allow, deny")),
        };
        let instant = |field: &str, text: &str| -> Result<i64, String> {
            if text.trim().is_empty() {
                return Ok(0);
            }
            crate::instants::parse_time(text).map_err(|e| format!("{field}: {e:#}"))
        };
        let size = self.size.unwrap_or(100);
        if !PAGE_SIZES.contains(&size) {
            return Err(format!("size: {size} is not one of {PAGE_SIZES:?}"));
        }
        Ok(QueryDecisionsRequest {
            host: self.host.trim().to_string(),
            filter: Some(DecisionFilter {
                session_id: self.session.trim().to_string(),
                user: self.user.trim().to_string(),
                role: self.role.trim().to_string(),
                kind: kind as i32,
                decision: verdict as i32,
                since_unix_nanos: instant("since", &self.since)?,
                until_unix_nanos: instant("until", &self.until)?,
                text: self.text.trim().to_string(),
            }),
            page_size: size,
            page_token: self.page.trim().to_string(),
            ..Default::default()
        })
    }

    /// The query string of these filters, without the page (for links).
    pub fn query_string(&self) -> String {
        let pairs = [
            ("host", &self.host),
            ("session", &self.session),
            ("user", &self.user),
            ("role", &self.role),
            ("kind", &self.kind),
            ("decision", &self.decision),
            ("since", &self.since),
            ("until", &self.until),
            ("text", &self.text),
        ];
        let mut out: Vec<String> = pairs.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| format!("{k}={}", urlencode(v.trim()))).collect();
        if let Some(size) = self.size {
            out.push(format!("size={size}"));
        }
        out.join("&")
    }
}

pub struct Row {
    pub time: When,
    pub host: String,
    pub kind: String,
    pub decision: String,
    pub reason: String,
    pub session: String,
    pub user: String,
    pub role: String,
    pub pid: u32,
    pub what: String,
    pub rule: String,
}

fn row(fd: FleetDecision) -> Option<Row> {
    let d = fd.decision?;
    Some(Row {
        time: When(d.time_unix_nanos),
        what: what(&d),
        host: fd.host,
        kind: d.kind,
        decision: d.decision,
        reason: d.reason,
        session: d.session_id,
        user: d.user,
        role: d.role,
        pid: d.pid,
        rule: d.rule.unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "decisions.html")]
struct DecisionsPage {
    chrome: Chrome,
    f: Filters,
    error: String,
    rows: Vec<Row>,
    query: String,
    older: String,
    live: bool,
    newest_cursor: i64,
    first_page: bool,
    sizes: [u32; 4],
}

pub async fn page(State(state): State<AppState>, signed: SignedIn, Query(f): Query<Filters>) -> UiResult<Response> {
    let query = f.query_string();
    let live = f.live == Some(1) && f.page.is_empty();
    let (rows, older, newest_cursor, error) = match f.request() {
        Ok(ask) => {
            let page = decisions::query_page(&state.hub, &signed.caller, ask).await?;
            let older = page.response.next_page_token.clone();
            (page.response.decisions.into_iter().filter_map(row).collect(), older, page.newest_cursor, String::new())
        }
        Err(e) => (Vec::new(), String::new(), 0, e),
    };
    let newest_cursor = if live && newest_cursor == 0 { decisions::newer(&state.hub, &signed.caller, QueryDecisionsRequest::default(), 0).await?.newest_cursor } else { newest_cursor };
    render(DecisionsPage { chrome: Chrome::new(&signed, "decisions"), first_page: f.page.is_empty(), f, error, rows, query, older, live, newest_cursor, sizes: PAGE_SIZES })
}

#[derive(Deserialize)]
pub struct TailQuery {
    #[serde(default)]
    after: i64,
}

#[derive(Template)]
#[template(path = "decisions_tail.html")]
struct TailFragment {
    rows: Vec<Row>,
    query: String,
    after: i64,
}

/// New rows for the live tail, and the poller that asks for the next ones.
pub async fn tail(State(state): State<AppState>, signed: SignedIn, Query(f): Query<Filters>, Query(t): Query<TailQuery>) -> UiResult<Response> {
    let ask = f.request().map_err(UiError::bad_request)?;
    let page = decisions::newer(&state.hub, &signed.caller, ask, t.after).await?;
    render(TailFragment { rows: page.response.decisions.into_iter().filter_map(row).collect(), query: f.query_string(), after: page.newest_cursor })
}

pub async fn export_csv(state: State<AppState>, signed: SignedIn, q: Query<Filters>) -> UiResult<Response> {
    export(state, signed, q, Format::Csv).await
}

pub async fn export_json(state: State<AppState>, signed: SignedIn, q: Query<Filters>) -> UiResult<Response> {
    export(state, signed, q, Format::Json).await
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    Json,
}

async fn export(State(state): State<AppState>, signed: SignedIn, Query(f): Query<Filters>, format: Format) -> UiResult<Response> {
    let mut ask = f.request().map_err(UiError::bad_request)?;
    ask.page_size = EXPORT_PAGE;
    ask.page_token.clear();
    // The first page is read before answering, so a refusal is a clear
    // error page rather than a download cut short.
    let first = decisions::query(&state.hub, &signed.caller, ask.clone()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (hub, caller) = (state.hub.clone(), signed.caller.clone());
    tracing::info!(user = %signed.username, filters = %f.query_string(), "Control Room: decisions exported");
    tokio::spawn(async move {
        let mut page = first;
        let mut first_item = true;
        let head = match format {
            Format::Csv => csv_header(),
            Format::Json => "[\n".to_string(),
        };
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        loop {
            let mut chunk = String::new();
            for d in &page.decisions {
                match format {
                    Format::Csv => chunk.push_str(&csv_line(d)),
                    Format::Json => {
                        if !first_item {
                            chunk.push_str(",\n");
                        }
                        first_item = false;
                        chunk.push_str(&serde_json::to_string(d).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string())));
                    }
                }
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            ask.page_token = std::mem::take(&mut page.next_page_token);
            page = match decisions::query(&hub, &caller, ask.clone()).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("Control Room: an export stopped: {}", e.message());
                    let _ = tx.send(Err(std::io::Error::other(e.message().to_string()))).await;
                    return;
                }
            };
        }
        if format == Format::Json {
            let _ = tx.send(Ok(Bytes::from_static(b"\n]\n"))).await;
        }
    });
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "decisions.csv"),
        Format::Json => ("application/json", "decisions.json"),
    };
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\""))], body).into_response())
}

const CSV_COLUMNS: [&str; 18] =
    ["time", "host", "seq", "kind", "decision", "reason", "session", "user", "uid", "role", "pid", "ppid", "comm", "executable", "argv", "destination", "policy", "rule"];

fn csv_header() -> String {
    CSV_COLUMNS.join(",") + "\r\n"
}

fn csv_line(fd: &FleetDecision) -> String {
    let Some(d) = &fd.decision else {
        return String::new();
    };
    let destination = match &d.detail {
        Some(airlock_api::v1::decision::Detail::Destination(dest)) => {
            format!("{} {}:{}", dest.protocol, dest.address, dest.port)
        }
        _ => String::new(),
    };
    let fields = [
        d.time.clone(),
        fd.host.clone(),
        fd.seq.to_string(),
        d.kind.clone(),
        d.decision.clone(),
        d.reason.clone(),
        d.session_id.clone(),
        d.user.clone(),
        d.uid.to_string(),
        d.role.clone(),
        d.pid.to_string(),
        d.ppid.to_string(),
        d.comm.clone(),
        d.executable.clone(),
        d.argv.join(" "),
        destination,
        d.policy.clone().unwrap_or_default(),
        d.rule.clone().unwrap_or_default(),
    ];
    fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\r\n"
}

/// RFC 4180 quoting; a cell a spreadsheet would run as a formula (a command
/// line can start with `=`, `+`, `-` or `@`) is prefixed with `'`.
fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-rf"), "'-rf");
    }

    #[test]
    fn a_bad_filter_names_its_field() {
        let f = Filters { kind: "fork".into(), ..Default::default() };
        assert!(f.request().unwrap_err().starts_with("kind:"));
        let f = Filters { since: "yesterday".into(), ..Default::default() };
        assert!(f.request().unwrap_err().starts_with("since:"));
        let f = Filters { size: Some(7), ..Default::default() };
        assert!(f.request().unwrap_err().starts_with("size:"));
        let f = Filters { decision: "deny".into(), since: "2h".into(), host: " h1 ".into(), ..Default::default() };
        let ask = f.request().unwrap();
        assert_eq!(ask.host, "h1");
        assert_eq!(ask.filter.unwrap().decision, Verdict::Deny as i32);
        assert_eq!(f.query_string(), "host=h1&decision=deny&since=2h");
    }
}
