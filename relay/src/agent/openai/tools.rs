//! The agent's tools. Each call is answered with an output the model can speak about (an error
//! included), and kept as an event on the call.

use crate::agent::{AgentOutput, CallInfo};
use callkeeper_core::call::CallEvent;
use callkeeper_core::phone::E164;
use callkeeper_core::store::CallStore;
use callkeeper_core::time::now_ms;
use serde_json::{json, Value};
use std::time::Duration;

/// What one `save_lead` may write: a lead is a handful of short fields.
const MAX_LEAD_BYTES: usize = 4096;
/// How long a tool may wait on the store before it answers the model with an error.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the call does once the words announcing it have played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Hangup { reason: String },
    Transfer { to: E164, reason: String },
}

impl Action {
    pub fn into_output(self) -> AgentOutput {
        match self {
            Action::Hangup { reason } => AgentOutput::Hangup { reason },
            Action::Transfer { to, reason } => AgentOutput::Transfer { to, reason },
        }
    }
}

/// Runs one tool call. Returns what to tell the model and, for a transfer or a hang-up, what
/// the call does after the model's next words.
pub async fn run(call: &CallInfo, store: &dyn CallStore, name: &str, arguments: &str, call_id: &str) -> (Value, Option<Action>) {
    let parsed: Result<Value, String> = serde_json::from_str(arguments).map_err(|e| format!("the arguments are not JSON: {e}"));
    let (output, action) = match (name, parsed) {
        (_, Err(e)) => (json!({ "ok": false, "error": e }), None),
        ("save_lead", Ok(fields)) => (save_lead(call, store, &fields).await, None),
        ("transfer_to_human", Ok(args)) => match &call.transfer_number {
            Some(to) => {
                let reason = reason(&args);
                (
                    json!({ "ok": true, "next": "Tell the caller, in one short sentence, that you are transferring them to a person now." }),
                    Some(Action::Transfer { to: to.clone(), reason }),
                )
            }
            None => (json!({ "ok": false, "error": "no transfer number is configured; offer to take a message instead" }), None),
        },
        ("search_knowledge", Ok(args)) => match (&call.knowledge, args["query"].as_str()) {
            (Some(index), Some(query)) if !query.trim().is_empty() => (index.answer(query), None),
            (Some(_), _) => (json!({ "ok": false, "error": "search_knowledge takes a query: a few words to look for" }), None),
            (None, _) => (
                json!({ "ok": false, "error": "the business's knowledge cannot be searched just now; say you will have someone call back" }),
                None,
            ),
        },
        ("end_call", Ok(args)) => (
            json!({ "ok": true, "next": "Say a short goodbye; the call ends once it has played." }),
            Some(Action::Hangup { reason: reason(&args) }),
        ),
        (other, Ok(_)) => (json!({ "ok": false, "error": format!("there is no tool {other:?}") }), None),
    };
    let detail = json!({ "tool": name, "arguments": arguments, "output": output, "action": action.as_ref().map(|a| format!("{a:?}")) });
    keep_event(call, store, call_id, name, detail).await;
    tracing::info!(call_sid = %call.call_sid, tool = name, ok = output["ok"].as_bool(), "tool call");
    (output, action)
}

async fn keep_event(call: &CallInfo, store: &dyn CallStore, call_id: &str, name: &str, detail: Value) {
    let event = CallEvent { at: now_ms(), kind: "tool_call".into(), key: format!("tool_call:{call_id}"), detail };
    match tokio::time::timeout(STORE_TIMEOUT, store.add_event(&call.call_sid, &event)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(call_sid = %call.call_sid, tool = name, error = %e, "tool call event not written"),
        Err(_) => tracing::warn!(call_sid = %call.call_sid, tool = name, "tool call event not written: the store took too long"),
    }
}

/// Keeps a business tool's call as an event on the call (arguments, outcome, latency; the
/// signature and secret never), in a task of its own: the conversation does not wait on it.
pub fn keep_http_event(
    call: &CallInfo,
    store: std::sync::Arc<dyn CallStore>,
    call_id: &str,
    name: &str,
    arguments: &Value,
    answer: &crate::agent::http_tools::ToolAnswer,
    filler_said: bool,
) {
    let detail = json!({
        "tool": name,
        "kind": "http",
        "arguments": arguments,
        "ok": answer.ok,
        "http_status": answer.http_status,
        "error": answer.error,
        "latency_ms": answer.latency.as_millis() as u64,
        "filler_said": filler_said,
        "output": answer.output,
    });
    tracing::info!(call_sid = %call.call_sid, tool = name, ok = answer.ok, latency_ms = answer.latency.as_millis() as u64, error = answer.error.as_deref(), "business tool call");
    let (call, call_id, name) = (call.clone(), call_id.to_string(), name.to_string());
    tokio::spawn(async move { keep_event(&call, store.as_ref(), &call_id, &name, detail).await });
}

fn reason(args: &Value) -> String {
    args["reason"].as_str().unwrap_or("not given").chars().take(200).collect()
}

/// Keeps the fields the profile's lead schema names; anything else is refused to the model.
async fn save_lead(call: &CallInfo, store: &dyn CallStore, fields: &Value) -> Value {
    let Some(given) = fields.as_object() else { return json!({ "ok": false, "error": "save_lead takes an object of lead fields" }) };
    if fields.to_string().len() > MAX_LEAD_BYTES {
        return json!({ "ok": false, "error": format!("the details are longer than {MAX_LEAD_BYTES} bytes; save them shorter") });
    }
    let known = call.profile.lead_fields();
    let unknown: Vec<&String> = given.keys().filter(|k| !known.contains(k)).collect();
    if !unknown.is_empty() {
        return json!({ "ok": false, "error": format!("unknown fields {unknown:?}; the lead's fields are {known:?}") });
    }
    match tokio::time::timeout(STORE_TIMEOUT, store.save_lead(&call.call_sid, call.contact.as_ref(), fields, now_ms())).await {
        Ok(Ok(lead)) => json!({ "ok": true, "lead": lead }),
        Ok(Err(e)) => {
            tracing::error!(call_sid = %call.call_sid, error = %e, "lead not saved");
            json!({ "ok": false, "error": "the details could not be saved just now; they will be taken from the call's recording" })
        }
        Err(_) => json!({ "ok": false, "error": "saving took too long; the details will be taken from the call's recording" }),
    }
}
