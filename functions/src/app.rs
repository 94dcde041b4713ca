//! The router and the state every handler shares.

use crate::{health, recording, voice, whatsapp};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use callkeeper_core::config::Config;
use callkeeper_core::store::{StoreError, Stores};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Stores,
}

/// The webhooks, one per path. A Lambda binary serves the routes of its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    IncomingCall,
    OutboundCall,
    StreamStatus,
    StreamEnded,
    RecordingDone,
    WhatsappInbound,
    WhatsappStatus,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::IncomingCall,
        Route::OutboundCall,
        Route::StreamStatus,
        Route::StreamEnded,
        Route::RecordingDone,
        Route::WhatsappInbound,
        Route::WhatsappStatus,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Route::IncomingCall => "/webhook/incoming_call",
            Route::OutboundCall => "/webhook/outbound_call",
            Route::StreamStatus => "/webhook/stream_status",
            Route::StreamEnded => "/webhook/stream_ended",
            Route::RecordingDone => "/webhook/recording_done",
            Route::WhatsappInbound => "/webhook/whatsapp/inbound",
            Route::WhatsappStatus => "/webhook/whatsapp/status",
        }
    }
}

/// The routes given, plus `/healthz`, `/readyz` and `/version`, stamped and logged.
pub fn router(state: AppState, routes: &[Route]) -> Router {
    stamped(webhooks(state.clone(), routes).merge(health(state)))
}

/// `/healthz`, `/readyz` and `/version`.
pub fn health(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/version", get(health::version))
        .with_state(state)
}

/// The webhooks alone: `callkeeper serve` merges them with the relay, whose `/readyz` also
/// knows about draining.
pub fn webhooks(state: AppState, routes: &[Route]) -> Router {
    let mut app = Router::new();
    for route in routes {
        let handler = match route {
            Route::IncomingCall => post(voice::incoming_call),
            Route::OutboundCall => post(voice::outbound_call),
            Route::StreamStatus => post(voice::stream_status),
            Route::StreamEnded => post(voice::stream_ended),
            Route::RecordingDone => post(recording::recording_done),
            Route::WhatsappInbound => post(whatsapp::inbound),
            Route::WhatsappStatus => post(whatsapp::status),
        };
        app = app.route(route.path(), handler);
    }
    app.with_state(state)
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
    if let Ok(value) = HeaderValue::from_str(&callkeeper_core::build_info::version_header()) {
        response.headers_mut().insert("x-callkeeper-version", value);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(route) = path.strip_prefix("/webhook/") {
        callkeeper_core::metrics::record(callkeeper_core::metrics::WEBHOOK_LATENCY, latency_ms, &[route]);
    }
    if status >= 500 {
        tracing::error!(%method, %path, status, latency_ms, "request");
    } else if status >= 400 {
        tracing::warn!(%method, %path, status, latency_ms, "request");
    } else {
        tracing::info!(%method, %path, status, latency_ms, "request");
    }
    response
}

/// Why a webhook did not do its work. Bad input is never a 5xx: Twilio would retry it forever.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 403: the request is not Twilio's.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 400: a field is missing or malformed; the reason is one line.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the store failed; Twilio retries.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<callkeeper_core::form::FieldError> for WebhookError {
    fn from(e: callkeeper_core::form::FieldError) -> Self {
        WebhookError::BadRequest(e.to_string())
    }
}

impl From<callkeeper_core::phone::InvalidPhone> for WebhookError {
    fn from(e: callkeeper_core::phone::InvalidPhone) -> Self {
        WebhookError::BadRequest(e.to_string())
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unavailable(e) => {
                tracing::error!(error = %e, "store failed; answering 503 so Twilio retries");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let body = match &self {
            WebhookError::Unavailable(_) => "storage unavailable, retry\n".to_string(),
            other => format!("{other}\n"),
        };
        (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

/// A TwiML answer: `text/xml`, with an explicit `Content-Length`.
pub fn twiml_response(doc: callkeeper_core::twiml::Twiml) -> Response {
    let body = doc.into_string();
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, callkeeper_core::twiml::CONTENT_TYPE.to_string()),
            (axum::http::header::CONTENT_LENGTH, body.len().to_string()),
        ],
        body,
    )
        .into_response()
}
