//! The router and the state every handler shares.

pub use crate::webhook::{twiml_response, AppState, WebhookError};
use crate::{health, recording_done, voice, whatsapp};
use axum::routing::{get, post};
use axum::Router;
pub use callkeeper_core::process::http::stamped;
pub use callkeeper_core::routes::Route;

/// The routes given, plus `/healthz`, `/readyz` and `/version`, stamped and logged.
pub fn router(state: AppState, routes: &[Route]) -> Router {
    stamped(webhooks(state.clone(), routes).merge(health(state)))
}

/// `/healthz`, `/readyz` and `/version`.
pub fn health(state: AppState) -> Router {
    Router::new()
        .route(callkeeper_core::routes::HEALTHZ, get(health::healthz))
        .route(callkeeper_core::routes::READYZ, get(health::readyz))
        .route(callkeeper_core::routes::VERSION, get(health::version))
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
            Route::RecordingDone => post(recording_done::recording_done),
            Route::WhatsappInbound => post(whatsapp::inbound),
            Route::WhatsappStatus => post(whatsapp::status),
        };
        app = app.route(route.path(), handler);
    }
    if state.config.call_traces != callkeeper_core::trace::TraceMode::Off {
        app = app.layer(axum::middleware::from_fn_with_state(state.clone(), crate::traced::record));
    }
    app.with_state(state)
}
