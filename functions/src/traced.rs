//! The webhooks' part of a call's trace (`CALL_TRACES`): each signed post that names a call,
//! with its answer, as one line of the call's trace. A post refused for its signature leaves
//! nothing (unsigned floods must not write).

use crate::signed_form::MAX_BODY;
use crate::webhook::{AppState, WebhookError};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callkeeper_core::form::Form;
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::time::now_ms;
use callkeeper_core::trace::{self, Direction, Peer};
use serde_json::{json, Map, Value};

/// An answer larger than this is kept as its length (TwiML is a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;
/// How long a traced webhook waits for its trace line to be written.
const WRITE_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return WebhookError::BadRequest(format!("body larger than {MAX_BODY} bytes")).into_response();
    };
    let at = now_ms();
    let route = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let response = next.run(Request::from_parts(parts, Body::from(bytes.clone()))).await;
    let form = Form::parse(&bytes);
    let call_sid = form.get("CallSid").and_then(|sid| CallSid::parse(sid).ok());
    let (Some(call_sid), false) = (call_sid, response.status() == StatusCode::FORBIDDEN) else { return response };
    let (parts, body) = response.into_parts();
    // Our own answer, whole (the limit is for what the trace keeps of it).
    let answer = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "a webhook's answer could not be read for its trace");
            return WebhookError::Unavailable(callkeeper_core::store::StoreError::Unavailable(e.to_string())).into_response();
        }
    };
    let mut fields = Map::new();
    for (name, value) in form.pairs() {
        match fields.get_mut(name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            Some(first) => *first = json!([first.clone(), value]),
            None => {
                fields.insert(name.clone(), json!(value));
            }
        }
    }
    let event = json!({
        "route": route,
        "query": query,
        "form": fields,
        "status": parts.status.as_u16(),
        "answer": if answer.len() <= MAX_ANSWER { json!(without_stream_token(&String::from_utf8_lossy(&answer))) } else { json!(format!("[{} bytes]", answer.len())) },
    });
    let line = trace::line(state.config.call_traces, at, Peer::Webhook, Direction::In, &event);
    let key = format!("{at:013}-webhook-{}", &random_sid("")[..8]);
    // Written before answering: a Lambda instance is frozen once it has answered, and a write
    // left in the background would wait for its next invocation, or never run. Bounded, so a
    // slow store costs a traced call at most this much.
    match tokio::time::timeout(WRITE_BUDGET, state.stores.calls.append_trace(&call_sid, &key, &[line])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(call_sid = %call_sid, error = %e, "the webhook's trace line was not written"),
        Err(_) => tracing::warn!(call_sid = %call_sid, "the webhook's trace line was not written in time"),
    }
    Response::from_parts(parts, Body::from(answer))
}

/// The TwiML with its stream token's value hidden: it admits a stream for the call.
fn without_stream_token(twiml: &str) -> String {
    const TOKEN: &str = r#"<Parameter name="token" value=""#;
    let mut out = String::with_capacity(twiml.len());
    let mut rest = twiml;
    while let Some(at) = rest.find(TOKEN) {
        let value_from = at + TOKEN.len();
        out.push_str(&rest[..value_from]);
        out.push_str("[secret]");
        rest = &rest[value_from..];
        rest = &rest[rest.find('"').unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stream_token_is_hidden_and_the_rest_kept() {
        let twiml = r#"<Response><Connect><Stream url="wss://r/ws"><Parameter name="call_sid" value="CA1"/><Parameter name="token" value="s3cr3t"/></Stream></Connect></Response>"#;
        let kept = super::without_stream_token(twiml);
        assert!(!kept.contains("s3cr3t"));
        assert!(kept.contains(r#"<Parameter name="token" value="[secret]"/>"#) && kept.contains(r#"value="CA1""#), "{kept}");
    }
}
