//! The static files, compiled in (static/README.md says where they come from).

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

const HTMX: &[u8] = include_bytes!("../../static/htmx-2.0.11.min.js");
const APP_JS: &[u8] = include_bytes!("../../static/app.js");
const APP_CSS: &[u8] = include_bytes!("../../static/app.css");
const FAVICON: &[u8] = include_bytes!("../../static/favicon.svg");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/static/htmx-2.0.11.min.js", get(|| async { asset("text/javascript", HTMX) }))
        .route("/static/app.js", get(|| async { asset("text/javascript", APP_JS) }))
        .route("/static/app.css", get(|| async { asset("text/css", APP_CSS) }))
        .route("/static/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
        // Asked for by browsers before (or without) reading the page's icon
        // link; a 404 here is an error in every page's console.
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON) }))
}

fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"))],
        body,
    )
}
