//! What every HTTP server of callkeeper's has (the webhooks' and the CRM's, the relay's): the
//! health checks' answers, and the layer that stamps each response with the build and logs each
//! request as one line.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::time::Instant;

/// `/healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `/readyz`'s answer when the store answers.
pub fn ready() -> (StatusCode, Json<Value>) {
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

/// `/readyz`'s answer when the store fails: what failed, not the error's text (a DynamoDB
/// error can carry the account id and the role's ARN, and `/readyz` answers anyone). The text
/// goes to the log.
pub fn store_unavailable(error: &crate::store::StoreError) -> (StatusCode, Json<Value>) {
    tracing::error!(error = %error, "readiness: the call store failed");
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": "the call store did not answer" })))
}

/// `/version`: which build.
pub async fn version() -> Json<crate::process::build_info::BuildInfo> {
    Json(crate::process::build_info::build_info())
}

/// Every response of `app` carries the build; every request is one log line.
pub fn stamped(app: Router) -> Router {
    app.layer(middleware::from_fn(stamp_and_log))
}

/// Every response carries the build (`X-Callkeeper-Version`); every request is one log line.
async fn stamp_and_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&crate::process::build_info::version_header()) {
        response.headers_mut().insert("x-callkeeper-version", value);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(route) = path.strip_prefix("/webhook/") {
        crate::process::metrics::record(crate::process::metrics::WEBHOOK_LATENCY, latency_ms, &[route]);
    }
    // People read the log: two decimals (0.02, not 0.017856999999999998).
    let latency_ms = (latency_ms * 100.0).round() / 100.0;
    if status >= 500 {
        tracing::error!(%method, %path, status, latency_ms, "request");
    } else if status >= 400 {
        tracing::warn!(%method, %path, status, latency_ms, "request");
    } else {
        tracing::info!(%method, %path, status, latency_ms, "request");
    }
    response
}
