//! `gateway-bench query`: QueryDecisions over gRPC against a gateway whose
//! store `fill` filled, one page of 100, newest first, for each indexed
//! filter, one text search (a scan of the subjects, newest first, until
//! the page is full) and the second page of the unfiltered list. Each query
//! runs once untimed, then `--runs` times.
//!
//! With `--ui-url`, the Control Room's pages too, over HTTPS as a signed-in
//! admin: each decisions page beside the gRPC query it makes (same filter,
//! same page of 100), the two alternating run by run so both see the same
//! caches; the other pages after; then a CSV export of one user's
//! decisions.

use std::time::Instant;

use airlock_api::gateway::v1::{CreateUserRequest, QueryDecisionsRequest};
use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::common::{now_ns, percentile, read_token, sorted, Fleet, Flags, Target};
use crate::fill::PREFIX;
use crate::synth::{self, SESSION_NS};
use crate::ui::{self, urlencode, UiClient};

const HOUR_NS: i64 = 3_600_000_000_000;
const UI_USER: &str = "bench-admin";
const UI_PASSWORD: &str = "bench-admin-password-1";
/// The gRPC query the second page follows on from.
const NEWEST: &str = "none (newest page)";
const SECOND: &str = "none, second page (page_token)";

struct Query {
    name: &'static str,
    value: String,
    filter: DecisionFilter,
    host: String,
    /// The Control Room's page with the same filter (its query string).
    ui: String,
}

pub async fn run(flags: &Flags) -> Result<Value> {
    let target = Target::from_flags(flags)?;
    let token = read_token(flags.get("token-file")?)?;
    let runs: usize = flags.num("runs")?;
    let t0: i64 = flags.num("t0-ns")?;
    let end: i64 = flags.num("end-ns")?;
    let mut fleet = target.fleet(&token).await?;
    let mut ui = match flags.opt("ui-url") {
        Some(url) => Some(sign_in(&mut fleet, url, &target.ca_pem).await?),
        None => None,
    };
    // The fill's week ends when it started: the overview's 24-hour chart has data.
    let newest_age_seconds = (now_ns() - end) as f64 / 1e9;
    let middle = t0 + (end - t0) / 2;
    let slot = (middle - t0) / SESSION_NS;
    let f = DecisionFilter::default;
    let (session, user, host) = (synth::session_id(42, slot, 1), synth::user_name(127), synth::host_name(PREFIX, 42));
    let query = |name, value: &str, filter, host: &str, ui: String| Query { name, value: value.into(), filter, host: host.into(), ui };
    let queries = vec![
        query(NEWEST, "-", f(), "", String::new()),
        query("session_id", &session, DecisionFilter { session_id: session.clone(), ..f() }, "", format!("session={}", urlencode(&session))),
        query("user", &user, DecisionFilter { user: user.clone(), ..f() }, "", format!("user={}", urlencode(&user))),
        query("role", "sre", DecisionFilter { role: "sre".into(), ..f() }, "", "role=sre".into()),
        query(
            "kind=exec + verdict=deny",
            "exec, deny",
            DecisionFilter { kind: DecisionKind::Exec as i32, decision: Verdict::Deny as i32, ..f() },
            "",
            "decision=deny&kind=exec".into(),
        ),
        query("host", &host, f(), &host, format!("host={}", urlencode(&host))),
        query(
            "time range (since/until)",
            "1 hour, mid-week",
            DecisionFilter { since_unix_nanos: middle, until_unix_nanos: middle + HOUR_NS, ..f() },
            "",
            format!("since={}&until={}", urlencode(&ui::rfc3339(middle)), urlencode(&ui::rfc3339(middle + HOUR_NS))),
        ),
        query(
            "text search (a scan)",
            &format!("{:?}", synth::TEXT_NEEDLE),
            DecisionFilter { text: synth::TEXT_NEEDLE.into(), ..f() },
            "",
            format!("text={}", urlencode(synth::TEXT_NEEDLE)),
        ),
        query(SECOND, "-", f(), "", String::new()),
    ];

    let mut pages = Vec::new();
    if let Some(ui) = ui.as_mut() {
        pages.push(page(ui, "overview", "/", runs).await?);
        pages.push(page(ui, "sessions", "/sessions", runs).await?);
    }
    let mut results = Vec::new();
    // The newest page's "older" tokens: gRPC's, and the one the UI's page links to.
    let (mut grpc_older, mut ui_older) = (String::new(), String::new());
    for q in queries {
        let mut request = QueryDecisionsRequest { filter: Some(q.filter), host: q.host, page_size: 100, ..Default::default() };
        let mut ui_path = format!("/decisions?{}", q.ui).trim_end_matches('?').to_string();
        if q.name == SECOND {
            request.page_token = grpc_older.clone();
            ui_path = format!("/decisions?page={ui_older}");
        }
        let (mut times, mut ui_times) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        let (mut returned, mut ui_rows, mut ui_bytes) = (0, 0, 0);
        for run in 0..=runs {
            let started = Instant::now();
            let page = fleet.query_decisions(request.clone()).await.map_err(|s| anyhow::anyhow!("query {}: {}", q.name, s.message())).context("QueryDecisions")?.into_inner();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            returned = page.decisions.len();
            if q.name == NEWEST {
                grpc_older = page.next_page_token;
            }
            if run > 0 {
                times.push(ms);
            }
            if let Some(ui) = ui.as_mut() {
                let started = Instant::now();
                let answer = ui.get_ok(&ui_path).await?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let html = answer.text();
                (ui_rows, ui_bytes) = (ui::decision_rows(&html), answer.body.len());
                if q.name == NEWEST {
                    ui_older = ui::older_page(&html).context("the newest decisions page links to no older page")?;
                }
                if run > 0 {
                    ui_times.push(ms);
                }
            }
        }
        let times = sorted(times);
        let p50 = percentile(&times, 50.0);
        eprintln!("gateway-bench: query {}: p50 {p50:.1} ms, {returned} rows", q.name);
        if ui.is_some() {
            if ui_rows != returned {
                bail!("{ui_path}: {ui_rows} rows on the page, {returned} from QueryDecisions");
            }
            let ui_times = sorted(ui_times);
            let ui_p50 = percentile(&ui_times, 50.0);
            eprintln!("gateway-bench: page {ui_path}: p50 {ui_p50:.1} ms ({:.2}× the query)", ui_p50 / p50);
            pages.push(json!({
                "page": format!("decisions: {}", q.name),
                "path": ui_path,
                "rows": ui_rows,
                "bytes": ui_bytes,
                "p50_ms": ui_p50,
                "p95_ms": percentile(&ui_times, 95.0),
                "max_ms": percentile(&ui_times, 100.0),
                "query_p50_ms": p50,
                "ratio": ui_p50 / p50,
            }));
        }
        results.push(json!({
            "query": q.name,
            "value": q.value,
            "returned": returned,
            "p50_ms": p50,
            "p99_ms": percentile(&times, 99.0),
            "max_ms": percentile(&times, 100.0),
        }));
    }
    let mut export = Value::Null;
    if let Some(ui) = ui.as_mut() {
        if grpc_older != ui_older {
            bail!("the newest page's older token: {grpc_older:?} over gRPC, {ui_older:?} on the page");
        }
        for (name, path) in [("policies", "/policies"), ("approvals", "/approvals"), ("security", "/security"), ("settings", "/settings")] {
            pages.push(page(ui, name, path, runs).await?);
        }
        export = csv_export(ui, &user, runs).await?;
    }
    Ok(json!({ "runs": runs, "page_size": 100, "queries": results, "pages": pages, "export": export, "newest_age_seconds": newest_age_seconds }))
}

/// An admin user made through the fleet API, signed in once.
async fn sign_in(fleet: &mut Fleet, url: &str, ca_pem: &[u8]) -> Result<UiClient> {
    let ask = CreateUserRequest { username: UI_USER.into(), role: "admin".into(), password: UI_PASSWORD.into(), ..Default::default() };
    fleet.create_user(ask).await.map_err(|s| anyhow::anyhow!("CreateUser: {}", s.message()))?;
    let mut ui = UiClient::connect(url, ca_pem).await?;
    ui.sign_in(UI_USER, UI_PASSWORD).await?;
    Ok(ui)
}

/// A page: once untimed, then `runs` times.
async fn page(ui: &mut UiClient, name: &str, path: &str, runs: usize) -> Result<Value> {
    let mut times = Vec::with_capacity(runs);
    let mut html = String::new();
    for run in 0..=runs {
        let started = Instant::now();
        let answer = ui.get_ok(path).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if run > 0 {
            times.push(ms);
        }
        html = answer.text().into_owned();
    }
    let times = sorted(times);
    eprintln!("gateway-bench: page {path}: p50 {:.1} ms", percentile(&times, 50.0));
    let mut out = json!({
        "page": name,
        "path": path,
        "bytes": html.len(),
        "p50_ms": percentile(&times, 50.0),
        "p95_ms": percentile(&times, 95.0),
        "max_ms": percentile(&times, 100.0),
    });
    if path == "/" {
        let (denied, allowed) = ui::chart_counts(&html);
        out["chart_denied"] = denied.into();
        out["chart_allowed"] = allowed.into();
    }
    Ok(out)
}

/// The CSV export of one user's decisions (streamed a page of 1,000 at a
/// time by the gateway): once untimed, then `runs` times; rows per second
/// at the median.
async fn csv_export(ui: &mut UiClient, user: &str, runs: usize) -> Result<Value> {
    let path = format!("/decisions/export.csv?user={}", urlencode(user));
    let mut times = Vec::with_capacity(runs);
    let (mut rows, mut bytes) = (0, 0);
    for run in 0..=runs {
        let started = Instant::now();
        let answer = ui.get_ok(&path).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        // The header line, then a line per decision (no field has a line break).
        rows = answer.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count().saturating_sub(1);
        bytes = answer.body.len();
        if run > 0 {
            times.push(ms);
        }
    }
    let times = sorted(times);
    let p50 = percentile(&times, 50.0);
    eprintln!("gateway-bench: export {path}: {rows} rows, p50 {p50:.1} ms");
    Ok(json!({
        "path": path,
        "filter": format!("user {user}"),
        "rows": rows,
        "bytes": bytes,
        "p50_ms": p50,
        "p95_ms": percentile(&times, 95.0),
        "rows_per_second": rows as f64 / (p50 / 1e3),
    }))
}
