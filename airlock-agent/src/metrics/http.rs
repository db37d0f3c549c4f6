//! The scrape endpoint: plain HTTP, GET /metrics, on axum (already in the
//! dependency graph through tonic) in a thread and single-threaded runtime
//! of its own, so a slow scraper never touches the daemon's other threads.
//!
//! Plain HTTP because what it serves is counts and the policy's fingerprint,
//! nothing a session could use, and Prometheus scrapes plain HTTP by
//! default; meant for loopback (a node exporter's textfile or a local agent
//! forwards it). Any other address is served too, with a warning.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// Binds the listener (at startup, so a taken port stops the daemon before
/// it touches the kernel).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics-listen {addr}: bind"))?;
    listener
        .set_nonblocking(true)
        .context("--metrics-listen: set the listener non-blocking")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the metrics are served on a non-loopback address without authentication or TLS");
    }
    Ok(listener)
}

/// The running endpoint; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

/// Serves `registry` on `listener` from a thread named `airlock-metrics`.
pub fn serve(listener: TcpListener, registry: Registry) -> Result<MetricsServer> {
    let addr = listener
        .local_addr()
        .context("the metrics listener's address")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let registry = Arc::new(registry);
    let thread = std::thread::Builder::new()
        .name("airlock-metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    return tracing::error!("the metrics endpoint could not start its runtime: {e}")
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("the metrics listener: {e}"),
                };
                let app = Router::new()
                    .route("/metrics", get(scrape))
                    .with_state(registry);
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = served.await {
                    tracing::error!("the metrics endpoint stopped: {e}");
                }
            });
        })
        .context("start the metrics thread")?;
    tracing::info!(%addr, "metrics served on http://{addr}/metrics");
    Ok(MetricsServer {
        stop: Some(stop),
        thread: Some(thread),
        addr,
    })
}

impl MetricsServer {
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match super::exposition(&registry, accept) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}
