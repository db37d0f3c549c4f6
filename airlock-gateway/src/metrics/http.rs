//! The scrape endpoint: plain HTTP, GET /metrics, on the axum the Control
//! Room already uses, on the gateway's runtime. Plain HTTP because it serves
//! counts (org names and policy version numbers at most) and Prometheus
//! scrapes plain HTTP by default; bind it to loopback or a monitoring network.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::hub::Hub;

/// Where the bound address is written (`http://ADDR/metrics`), as the UI's.
pub const METRICS_URL_FILE: &str = "metrics-url";

#[derive(Clone)]
struct Scrape {
    hub: Arc<Hub>,
    /// One scrape at a time: a refresh clears and refills the store gauges.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Binds `addr` and serves until `stop` turns true; returns the bound address.
pub async fn start(
    hub: Arc<Hub>,
    addr: SocketAddr,
    data_dir: &Path,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics listen {addr}: bind"))?;
    let bound = listener
        .local_addr()
        .context("the metrics listener's address")?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the metrics are served on a non-loopback address without authentication or TLS");
    }
    let url = format!("http://{}/metrics", crate::display_addr(bound));
    let url_file = data_dir.join(METRICS_URL_FILE);
    std::fs::write(&url_file, format!("{url}\n"))
        .with_context(|| format!("write {}", url_file.display()))?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            hub,
            turn: Default::default(),
        });
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        });
        if let Err(e) = served.await {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    });
    tracing::info!(%url, "metrics served");
    Ok(bound)
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    let _turn = s.turn.lock().await;
    if let Err(e) = super::fleet::refresh(&s.hub).await {
        // The replica's own counters still answer; the store's gauges keep their last values.
        tracing::warn!("metrics: read the fleet's figures from the store: {e}");
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match s.hub.metrics.exposition(accept) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}
