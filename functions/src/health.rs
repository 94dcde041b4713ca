//! `/healthz` (the process answers), `/readyz` (and its store does), `/version` (which build).

use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.stores.calls.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => store_unavailable(&e),
    }
}

/// `/readyz`'s answer when the store fails: what failed, not the error's text (a DynamoDB
/// error can carry the account id and the role's ARN, and `/readyz` answers anyone). The text
/// goes to the log.
pub fn store_unavailable(error: &callkeeper_core::store::StoreError) -> (StatusCode, Json<Value>) {
    tracing::error!(error = %error, "readiness: the call store failed");
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": "the call store did not answer" })))
}

pub async fn version() -> Json<callkeeper_core::build_info::BuildInfo> {
    Json(callkeeper_core::build_info::build_info())
}
