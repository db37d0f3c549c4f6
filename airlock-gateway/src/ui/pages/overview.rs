//! Overview: the hosts and the policy version each enforces, the live
//! sessions, and denies per hour over the last day as a chart.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use airlock_api::gateway::v1::{ListHostsRequest, ListSessionsRequest};
use airlock_api::v1::SessionState;

use crate::fleet::{hosts, sessions};
use crate::ui::error::{UiError, UiResult};
use crate::ui::session::SignedIn;
use crate::ui::view::{render, Chrome, When};
use crate::ui::AppState;

const HOURS: i64 = 24;
const HOUR_NS: i64 = 3_600_000_000_000;
/// The chart's drawing area, in SVG units.
const CHART_WIDTH: i64 = 720;
const CHART_HEIGHT: i64 = 120;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    hosts: Vec<HostRow>,
    rows: Vec<SessionRow>,
    empty_hint: &'static str,
    chart: Chart,
    latest_version: u64,
}

pub struct HostRow {
    pub host: String,
    pub connected: bool,
    pub backend: String,
    pub kernel: String,
    pub enforced: u64,
    pub behind: bool,
    pub policy_error: String,
    pub last_contact: When,
    pub revoked: bool,
    pub lost: u64,
}

pub struct SessionRow {
    pub host: String,
    pub id: String,
    pub user: String,
    pub role: String,
    pub command: String,
    pub started: String,
    pub processes: u32,
}

pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    pub denied: i64,
    pub allowed: i64,
    pub label: When,
}

pub struct Chart {
    pub bars: Vec<Bar>,
    pub max: i64,
    pub total_denied: i64,
    pub width: i64,
    pub height: i64,
}

pub async fn page(State(state): State<AppState>, signed: SignedIn) -> UiResult<Response> {
    let hub = &state.hub;
    let listed = hosts::list(hub, &signed.caller, ListHostsRequest::default()).await?;
    let latest_version = listed.hosts.iter().map(|h| h.latest_version).max().unwrap_or(0);
    let hosts = listed
        .hosts
        .into_iter()
        .map(|h| HostRow {
            behind: h.enforced_version < h.latest_version,
            host: h.host_id,
            connected: h.connected,
            backend: h.backend,
            kernel: h.kernel,
            enforced: h.enforced_version,
            policy_error: h.policy_error,
            last_contact: When(h.last_contact_unix_nanos),
            revoked: h.revoked,
            lost: h.lost,
        })
        .collect();
    let all = sessions::list(hub, &signed.caller, ListSessionsRequest::default()).await?;
    let live = all.sessions.into_iter().filter_map(|s| Some((s.host, s.session?))).filter(|(_, s)| is_live(s)).map(|(host, s)| session_row(host, s)).collect();
    let now = crate::now_ns();
    let until = (now / HOUR_NS + 1) * HOUR_NS;
    let since = until - HOURS * HOUR_NS;
    let counts = hub.store.decision_counts_by_hour(signed.caller.org_id, since, until).await.map_err(UiError::from_store)?;
    let chart = chart(counts.iter().map(|c| (c.hour_start_ns, c.allowed, c.denied)).collect());
    render(OverviewPage { chrome: Chrome::new(&signed, "overview"), hosts, rows: live, empty_hint: "no governed session is running on any host", chart, latest_version })
}

/// Registered or running: not yet exited nor revoked.
pub fn is_live(s: &airlock_api::v1::Session) -> bool {
    matches!(SessionState::try_from(s.state), Ok(SessionState::Ready | SessionState::Running))
}

pub fn session_row(host: String, s: airlock_api::v1::Session) -> SessionRow {
    SessionRow { host, id: s.id, user: s.user, role: s.role, command: s.command.join(" "), started: s.started_at, processes: s.processes }
}

/// Bars scaled to the busiest hour; an hour without denies draws nothing.
fn chart(hours: Vec<(i64, i64, i64)>) -> Chart {
    let max = hours.iter().map(|h| h.2).max().unwrap_or(0);
    let slot = CHART_WIDTH / (hours.len().max(1) as i64);
    let bars = hours
        .iter()
        .enumerate()
        .map(|(i, &(start, allowed, denied))| {
            let height = if max == 0 { 0 } else { (denied * CHART_HEIGHT + max - 1) / max };
            Bar { x: i as i64 * slot + 1, y: CHART_HEIGHT - height, width: (slot - 2).max(1), height, denied, allowed, label: When(start) }
        })
        .collect();
    Chart { total_denied: hours.iter().map(|h| h.2).sum(), bars, max, width: CHART_WIDTH, height: CHART_HEIGHT }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_hour() {
        let c = chart(vec![(0, 5, 0), (1, 0, 10), (2, 1, 5)]);
        assert_eq!(c.max, 10);
        assert_eq!(c.total_denied, 15);
        assert_eq!(c.bars.iter().map(|b| b.height).collect::<Vec<_>>(), vec![0, CHART_HEIGHT, CHART_HEIGHT / 2]);
        assert!(c.bars.iter().all(|b| b.y + b.height == CHART_HEIGHT));
        assert!(chart(vec![]).bars.is_empty());
    }
}
