//! `/healthz` (the process answers), `/readyz` (and its store does), `/version` (which build).

use crate::webhook::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
pub use callkeeper_core::process::http::{healthz, store_unavailable, version};
use serde_json::Value;

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.stores.calls.ping().await {
        Ok(()) => callkeeper_core::process::http::ready(),
        Err(e) => store_unavailable(&e),
    }
}
