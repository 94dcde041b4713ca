//! Calls a profile's HTTP tool: the business's own endpoint, asked while the caller waits.
//!
//! The request is a JSON POST of `{"tool", "arguments", "call": {"call_sid", "from", "to",
//! "lead"}}`, signed as events are (`X-Callkeeper-Timestamp`, and `X-Callkeeper-Signature:
//! v1=hex(HMAC-SHA256(TOOLS_WEBHOOK_SECRET, "{timestamp}.{body}"))`), so the business can tell
//! it is ours and refuse a replay. The arguments are checked against the tool's schema before
//! anything is sent. No redirect is followed (the signed body goes to the URL written in the
//! profile and nowhere else), the answer must be JSON of at most [`MAX_ANSWER_BYTES`], and
//! whatever goes wrong (a refusal, a bad body, the tool's timeout) is told to the model as a
//! failure it can speak about: the call always goes on.

use callkeeper_core::http_tool::HttpTool;
use callkeeper_core::secrets::Secret;
use callkeeper_core::work::event_delivery::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The most of an answer read: a tool's answer is spoken about, not read out whole.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
pub const USER_AGENT: &str = "callkeeper-tools/1";

/// What the tool call came to: what the model is told, and what the call's event keeps.
#[derive(Debug, Clone)]
pub struct ToolAnswer {
    pub output: Value,
    pub ok: bool,
    pub http_status: Option<u16>,
    /// Why it failed, for the event and the logs (never the URL's secrets or the signature).
    pub error: Option<String>,
    /// From the request leaving to its answer read.
    pub latency: Duration,
}

/// Who the tool is asked about.
#[derive(Debug, Clone)]
pub struct CallPart {
    pub call_sid: String,
    pub from: String,
    pub to: String,
    pub lead: Option<Value>,
}

pub struct ToolCaller {
    http: reqwest::Client,
    secret: Option<Secret>,
}

impl ToolCaller {
    pub fn new(secret: Option<Secret>) -> ToolCaller {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            // A tool is asked while a caller waits: connect fast or not at all.
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a client with these settings builds");
        ToolCaller { http, secret }
    }

    /// Checks `arguments` (the model's JSON text) against the tool's schema: the parsed
    /// arguments, or the failure to tell the model at once.
    pub fn check_arguments(tool: &HttpTool, arguments: &str) -> Result<Value, ToolAnswer> {
        let refused = |error: String| ToolAnswer {
            output: json!({ "ok": false, "error": format!("{error}; call {} again with arguments that fit its parameters", tool.name) }),
            ok: false,
            http_status: None,
            error: Some(error),
            latency: Duration::ZERO,
        };
        let parsed: Value = serde_json::from_str(arguments).map_err(|e| refused(format!("the arguments are not JSON: {e}")))?;
        callkeeper_core::json_schema::validate(&tool.parameters, &parsed, "arguments").map_err(refused)?;
        Ok(parsed)
    }

    /// Asks the business. `sent` is called the moment the request is handed to the network.
    pub async fn call(&self, tool: &HttpTool, arguments: Value, call: &CallPart, sent: impl FnOnce()) -> ToolAnswer {
        let Some(secret) = &self.secret else {
            sent();
            return failed(None, "TOOLS_WEBHOOK_SECRET is not set, so no tool request is sent".into(), Duration::ZERO);
        };
        let body = json!({
            "tool": tool.name,
            "arguments": arguments,
            "call": { "call_sid": call.call_sid, "from": call.from, "to": call.to, "lead": call.lead },
        })
        .to_string();
        let timestamp = callkeeper_core::time::now_ms() / 1000;
        let request = self
            .http
            .post(&tool.url)
            .timeout(Duration::from_millis(u64::from(tool.timeout_ms)))
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(secret.expose(), timestamp, &body))
            .body(body);
        let started = Instant::now();
        sent();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(tool.timeout_ms));
        let answered = tokio::time::timeout_at(deadline, async {
            let mut response = request.send().await.map_err(|e| (None, describe(&e)))?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                return Err((Some(status), format!("the endpoint answered HTTP {status}")));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| (Some(status), describe(&e)))? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_ANSWER_BYTES {
                    return Err((Some(status), format!("the answer is longer than {MAX_ANSWER_BYTES} bytes")));
                }
            }
            let answer: Value = serde_json::from_slice(&body).map_err(|e| (Some(status), format!("the answer is not JSON: {e}")))?;
            Ok((status, answer))
        })
        .await;
        let latency = started.elapsed();
        match answered {
            Ok(Ok((status, answer))) => ToolAnswer { output: answer, ok: true, http_status: Some(status), error: None, latency },
            Ok(Err((status, error))) => failed(status, error, latency),
            Err(_) => failed(None, format!("no answer within {} ms", tool.timeout_ms), latency),
        }
    }
}

fn failed(http_status: Option<u16>, error: String, latency: Duration) -> ToolAnswer {
    ToolAnswer {
        output: json!({
            "ok": false,
            "error": "the business's system could not be reached just now",
            "next": "Tell the caller you could not check this right now, and offer to take their details so someone calls back."
        }),
        ok: false,
        http_status,
        error: Some(error),
        latency,
    }
}

/// A request error without its URL (a tool's URL may carry a key in its query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
