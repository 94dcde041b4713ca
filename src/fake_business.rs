//! A fake of a business's own system, answering the agent's HTTP tools over loopback: what the
//! tests, the simulator's `tool-call` scenario and the tool benchmark run against.
//!
//! It checks each request's signature as a business would, with its own HMAC (not the relay's
//! code), and refuses a bad or old one with 401. How it answers is chosen by the path:
//!
//! - `/tools/fast`: at once; `/tools/slow`: after 2 s (past the filler); `?delay_ms=N` for any
//!   other wait;
//! - `/tools/down`: 503; `/tools/broken`: 200 with a body that is not JSON; `/tools/huge`: 20 KiB;
//! - `/tools/redirect`: a 307 to `/tools/fast` (which the relay must not follow).
//!
//! A good answer is the availability of the listing asked about, with two viewing slots.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The tool this fake answers, as a profile declares it: `check_availability(listing)` at `url`.
pub fn availability_tool(url: &str) -> callkeeper_core::http_tool::HttpTool {
    callkeeper_core::http_tool::HttpTool {
        name: "check_availability".into(),
        description: "Whether a listing is still available, and the next free viewing slots".into(),
        url: url.into(),
        timeout_ms: callkeeper_core::http_tool::DEFAULT_TIMEOUT_MS,
        filler: None,
        parameters: json!({ "type": "object", "required": ["listing"], "properties": { "listing": { "type": "string" } } }),
    }
}

/// A request as it reached the fake.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// When the fake's answer left (after its delay).
    pub answered_at: Option<Instant>,
    pub behaviour: String,
    pub body: Value,
    pub signed: bool,
    pub user_agent: String,
}

#[derive(Clone)]
struct Shared {
    secret: String,
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct FakeBusiness {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBusiness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBusiness {
    /// Listens on a free loopback port; requests must be signed with `secret`.
    pub async fn start(secret: &str) -> anyhow::Result<FakeBusiness> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { secret: secret.to_string(), received: received.clone() };
        let app = axum::Router::new().route("/tools/{behaviour}", axum::routing::post(answer)).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeBusiness { addr, received, task })
    }

    /// The URL of a behaviour: `fast`, `slow`, `down`, `broken`, `huge`, `redirect`.
    pub fn url(&self, behaviour: &str) -> String {
        format!("http://{}/tools/{behaviour}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

/// The business's side of the signature: HMAC-SHA256 of `{timestamp}.{body}`, compared in
/// constant time, and a timestamp at most 5 minutes old.
pub fn signature_valid(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (timestamp, signature) = (header("x-callkeeper-timestamp"), header("x-callkeeper-signature"));
    let Ok(ts) = timestamp.parse::<i64>() else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if (now - ts).abs() > 300 {
        return false;
    }
    let Some(hex_mac) = signature.strip_prefix("v1=") else { return false };
    let Ok(given) = hex::decode(hex_mac) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn answer(
    State(shared): State<Shared>,
    Path(behaviour): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let signed = signature_valid(&shared.secret, &headers, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let user_agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let index = {
        let mut received = shared.received.lock().expect("not poisoned");
        received.push(Received { at, answered_at: None, behaviour: behaviour.clone(), body: parsed.clone(), signed, user_agent });
        received.len() - 1
    };
    let answered = |response: Response| {
        shared.received.lock().expect("not poisoned")[index].answered_at = Some(Instant::now());
        response
    };
    if !signed {
        return answered((StatusCode::UNAUTHORIZED, "bad signature").into_response());
    }
    let delay = match (behaviour.as_str(), query.get("delay_ms").and_then(|d| d.parse().ok())) {
        (_, Some(ms)) => Duration::from_millis(ms),
        ("slow", None) => Duration::from_secs(2),
        _ => Duration::ZERO,
    };
    tokio::time::sleep(delay).await;
    let listing = parsed["arguments"]["listing"].as_str().unwrap_or("the listing").to_string();
    let response = match behaviour.as_str() {
        "down" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        "broken" => (StatusCode::OK, "<html>oops</html>").into_response(),
        "huge" => axum::Json(json!({ "text": "x".repeat(20 * 1024) })).into_response(),
        "redirect" => (StatusCode::TEMPORARY_REDIRECT, [("location", "/tools/fast")]).into_response(),
        _ => axum::Json(json!({ "listing": listing, "available": true, "viewings": ["Thursday 17:00", "Sunday 10:00"] })).into_response(),
    };
    answered(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_check_refuses_what_was_not_signed_with_the_secret_now() {
        let secret = "a-tools-secret-of-32-characters!";
        let body = br#"{"tool":"x"}"#;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sign = |key: &str, ts: i64| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(format!("{ts}.").as_bytes());
            mac.update(body);
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        };
        let headers = |ts: i64, sig: String| {
            let mut h = HeaderMap::new();
            h.insert("x-callkeeper-timestamp", ts.to_string().parse().unwrap());
            h.insert("x-callkeeper-signature", sig.parse().unwrap());
            h
        };
        assert!(signature_valid(secret, &headers(now, sign(secret, now)), body));
        assert!(!signature_valid(secret, &headers(now, sign("another-secret", now)), body));
        assert!(!signature_valid(secret, &headers(now - 600, sign(secret, now - 600)), body), "too old");
        assert!(!signature_valid(secret, &headers(now, sign(secret, now)), b"{\"tool\":\"y\"}"), "another body");
        // The relay's own signing agrees with the business's check.
        let relay = callkeeper_core::work::event_delivery::signature(secret, now, std::str::from_utf8(body).unwrap());
        assert!(signature_valid(secret, &headers(now, relay), body));
    }
}
