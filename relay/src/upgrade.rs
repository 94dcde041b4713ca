//! The WebSocket handshake. Twilio signs the upgrade request over the `wss://` URL it was given
//! (no body), so a forged upgrade is refused with 403 before any WebSocket exists. A draining
//! relay refuses with 503, and its `/readyz` fails, so the load balancer sends new calls elsewhere.

use crate::Relay;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use callkeeper_core::signature::{self, Algorithm, SignedBody, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER};
use serde_json::json;

/// The subprotocol Twilio may offer; echoed only when offered.
pub const SUBPROTOCOL: &str = "audio.twilio.com";
/// A frame is counted as oversized above `MAX_FRAME_BYTES` (64 KiB) and skipped; only beyond
/// this does the WebSocket layer give up on the socket. Twilio's largest frame, `start`, is a few
/// KiB; this bounds what a socket can make the relay hold.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;
pub use crate::opening::MAX_OPENING;
/// Twilio's frames are ~340 bytes: a read takes up to three. tungstenite's default 128 KiB read
/// buffer per socket would be most of a call's memory, and it zeroes what it reads into, so a
/// small one is also cheaper per read (4 KiB here cost 4% more CPU at 1,000 calls); it grows
/// for a larger frame.
const READ_BUFFER_BYTES: usize = 1024;
/// Frames are written as a batch (a refill of the playback, its marks) and flushed together: one
/// write for the batch. A single frame still leaves at once (every send ends with a flush).
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

fn plain(status: StatusCode, reason: &str) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{reason}\n")).into_response()
}

pub async fn upgrade(
    State(relay): State<Relay>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if relay.drain.is_draining() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "relay draining: not taking new streams");
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(given) = header(SIGNATURE_HEADER) else {
        return plain(StatusCode::FORBIDDEN, "missing X-Twilio-Signature");
    };
    let Some(algorithm) = Algorithm::from_settings_header(header(SIGNATURE_SETTINGS_HEADER)) else {
        return plain(StatusCode::FORBIDDEN, "unsupported signature algorithm");
    };
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let url = relay.config.relay_public_url.join(path_and_query);
    if !relay.config.signature_keys().any(|key| signature::validate(key, algorithm, url.as_str(), SignedBody::Form(&[]), given)) {
        tracing::warn!(url = %url, "invalid Twilio signature on a stream upgrade");
        return plain(StatusCode::FORBIDDEN, "invalid X-Twilio-Signature");
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(opening) = crate::opening::Opening::enter(&relay.opening) else {
        tracing::warn!(max = MAX_OPENING, "too many streams opening at once; upgrade refused");
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many streams opening");
    };
    let live = relay.drain.enter();
    ws.protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| crate::session::run(relay, socket, live, opening))
}

/// Ready when not draining and the store answers.
pub async fn readyz(State(relay): State<Relay>) -> (StatusCode, Json<serde_json::Value>) {
    if relay.drain.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining", "live_calls": relay.drain.live() })));
    }
    match relay.calls.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "live_calls": relay.drain.live() }))),
        Err(e) => callkeeper_core::process::http::store_unavailable(&e),
    }
}
