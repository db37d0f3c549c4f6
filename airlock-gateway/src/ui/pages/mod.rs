//! The pages, one module each. Each handler takes the signed-in user and
//! acts through the fleet facade as that user.

mod approvals;
mod decisions;
mod overview;
mod policies;
mod security;
mod settings;
mod sessions;

use axum::routing::{get, post};
use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{host}/{id}", get(sessions::detail))
        .route("/sessions/{host}/{id}/revoke", post(sessions::revoke))
        .route("/policies", get(policies::page))
        .route("/policies/edit", get(policies::edit).post(policies::submit))
        .route("/policies/{version}", get(policies::version))
        .route("/policies/{version}/rollback", post(policies::rollback))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::detail))
        .route("/approvals/{id}/decide", post(approvals::decide))
        .route("/security", get(security::page))
        .route("/security/blocks/{id}/acknowledge", post(security::acknowledge))
        .route("/security/blocks/{id}/lift", post(security::lift))
        .route("/settings", get(settings::page))
        .route("/settings/detection", post(settings::detection))
        .route("/settings/tokens", post(settings::create_token))
        .route("/settings/tokens/{id}/revoke", post(settings::revoke_token))
        .route("/settings/hosts/{host}/revoke", post(settings::revoke_host))
        .route("/settings/users", post(settings::create_user))
        .route("/settings/users/{username}", post(settings::update_user))
        .route("/decisions", get(decisions::page))
        .route("/decisions/tail", get(decisions::tail))
        .route("/decisions/export.csv", get(decisions::export_csv))
        .route("/decisions/export.json", get(decisions::export_json))
}
