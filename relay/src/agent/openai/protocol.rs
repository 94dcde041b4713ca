//! The Realtime API's GA events that the agent sends and reads (see `shared/openai-realtime.md`):
//! client events built as JSON text, server events parsed into what the conversation acts on.
//! Nothing of the beta interface: it answers `beta_api_shape_disabled` and closes.

use base64::Engine;
use callkeeper_core::config::{RealtimeSettings, TurnDetection};
use callkeeper_core::profile::AgentProfile;
use serde_json::{json, Value};

/// μ-law at 8 kHz, Twilio's format, in both directions: no resampling, no transcoding.
pub const PCMU: &str = "audio/pcmu";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The tools offered to the model. `transfer_to_human` only when there is a number to dial;
/// `search_knowledge` when the profile's knowledge is too large to be told whole; then the
/// business's own HTTP tools.
pub fn tools(profile: &AgentProfile, can_transfer: bool) -> Vec<Value> {
    let mut lead = profile.lead_schema.clone();
    if let Some(map) = lead.as_object_mut() {
        // Every field optional: the agent saves what it has learnt so far, and again as it learns more.
        map.remove("required");
        map.insert("additionalProperties".into(), json!(false));
    }
    let reason = json!({ "type": "object", "properties": { "reason": { "type": "string", "description": "Why, in a few words." } }, "required": ["reason"] });
    let mut tools = vec![json!({
        "type": "function",
        "name": "save_lead",
        "description": "Save what the caller has told you about themselves and what they want, as soon as you learn it; call again as you learn more. Only fields the caller actually gave.",
        "parameters": lead,
    })];
    if can_transfer {
        tools.push(json!({
            "type": "function",
            "name": "transfer_to_human",
            "description": "Hand the call to a person at the business, when the caller asks for one or you cannot help. Tell the caller you are transferring them; the transfer happens once you have said so.",
            "parameters": reason,
        }));
    }
    tools.push(json!({
        "type": "function",
        "name": "end_call",
        "description": "End the call when the conversation is over. Say a short goodbye; the line is hung up once it has played.",
        "parameters": reason,
    }));
    if callkeeper_core::knowledge::reach(&profile.knowledge) == callkeeper_core::knowledge::Reach::Search {
        tools.push(json!({
            "type": "function",
            "name": "search_knowledge",
            "description": "Search the business's own knowledge (prices, hours, listings, terms, FAQ) before answering a question about the business. Answer only from what it finds.",
            "parameters": { "type": "object", "properties": { "query": { "type": "string", "description": "What to look for, in the caller's words: a few key words." } }, "required": ["query"] },
        }));
    }
    for tool in &profile.tools {
        tools.push(json!({ "type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters }));
    }
    tools
}

/// `session.update` with the whole configuration: sent once the socket opens, and checked
/// against the `session.updated` echo.
pub fn session_update(profile: &AgentProfile, settings: &RealtimeSettings, tools: &[Value]) -> String {
    let language = profile.language.split('-').next().unwrap_or("he");
    let turn_detection = match settings.turn_detection {
        // The relay decides when a response is cut (it knows what the caller heard), so the
        // server does not cancel on its own: `interrupt_response` off.
        TurnDetection::ServerVad => json!({
            "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
            "create_response": true, "interrupt_response": false
        }),
        TurnDetection::SemanticVad => {
            json!({ "type": "semantic_vad", "eagerness": "auto", "create_response": true, "interrupt_response": false })
        }
    };
    let mut instructions = format!(
        "{}\n\nThe conversation is a phone call. Speak {} unless the caller speaks another language. Keep each answer short.",
        profile.instructions.trim(),
        profile.language
    );
    if let Some(knowledge) = callkeeper_core::knowledge::instructions(&profile.knowledge) {
        instructions.push_str("\n\n");
        instructions.push_str(&knowledge);
    }
    json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": settings.model,
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": { "type": PCMU },
                    // A handset held to the ear.
                    "noise_reduction": { "type": "near_field" },
                    "transcription": { "model": settings.transcribe_model, "language": language },
                    "turn_detection": turn_detection
                },
                "output": { "format": { "type": PCMU }, "voice": profile.voice }
            },
            "tools": tools,
            "tool_choice": "auto"
        }
    })
    .to_string()
}

/// Built by hand: 50 a second per call, and base64 needs no JSON escaping.
pub fn append(mulaw: &[u8]) -> String {
    let mut event = String::with_capacity(52 + mulaw.len().div_ceil(3) * 4);
    event.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
    B64.encode_string(mulaw, &mut event);
    event.push_str(r#""}"#);
    event
}

/// A response; `instructions` for this one only (the greeting, the idle prompts).
pub fn response_create(instructions: Option<&str>) -> String {
    match instructions {
        Some(text) => json!({ "type": "response.create", "response": { "instructions": text } }).to_string(),
        None => json!({ "type": "response.create" }).to_string(),
    }
}

pub fn cancel() -> String {
    json!({ "type": "response.cancel" }).to_string()
}

/// Cancels one response by id: the filler, which is not the conversation's response.
pub fn cancel_response(id: &str) -> String {
    json!({ "type": "response.cancel", "response_id": id }).to_string()
}

/// What marks the filler's response, echoed in `response.created`.
pub const FILLER_METADATA: &str = "filler";

/// The filler, said while a tool's answer is awaited: an out-of-band response (outside the
/// conversation, with no input and no tools), so the pending function call is untouched and
/// the model's answer later is made from the tool's output alone.
pub fn filler_response(text: &str) -> String {
    json!({ "type": "response.create", "response": {
        "conversation": "none",
        "input": [],
        "instructions": format!("Say exactly this, in a calm voice, and nothing else: {text}"),
        "output_modalities": ["audio"],
        "tool_choice": "none",
        "metadata": { "callkeeper": FILLER_METADATA }
    } })
    .to_string()
}

/// Text from the caller's side that is not speech (the keypad), as a user message.
pub fn user_text(text: &str) -> String {
    message(None, "user", "input_text", text)
}

pub fn truncate(item_id: &str, audio_end_ms: u64) -> String {
    json!({ "type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms }).to_string()
}

pub fn delete_item(item_id: &str) -> String {
    json!({ "type": "conversation.item.delete", "item_id": item_id }).to_string()
}

pub fn function_output(call_id: &str, output: &Value) -> String {
    json!({ "type": "conversation.item.create", "item": { "type": "function_call_output", "call_id": call_id, "output": output.to_string() } })
        .to_string()
}

/// A message item of the conversation: `role`'s text as `kind` (`input_text`, `output_text`),
/// with our `id` when it may be deleted again.
fn message(id: Option<&str>, role: &str, kind: &str, text: &str) -> String {
    let mut item = json!({ "type": "message", "role": role, "content": [{ "type": kind, "text": text }] });
    if let Some(id) = id {
        item["id"] = json!(id);
    }
    json!({ "type": "conversation.item.create", "item": item }).to_string()
}

/// What the agent already said without the model (a pre-rendered greeting clip).
pub fn assistant_said(text: &str) -> String {
    message(None, "assistant", "output_text", text)
}

/// A line of the conversation so far, replayed into a new session: the caller's as user
/// `input_text`, the agent's as assistant `output_text` (the API cannot re-create assistant
/// audio). `id` is ours, so the line can be deleted again.
pub fn history_line(id: &str, line: &crate::agent::history::Line) -> String {
    let (role, kind) = match line.speaker {
        crate::agent::Speaker::Caller => ("user", "input_text"),
        crate::agent::Speaker::Agent => ("assistant", "output_text"),
    };
    message(Some(id), role, kind, &line.text)
}

/// Text only the model reads, as the given role's `input_text` (`system` or `user`).
pub fn text_item(id: &str, role: &str, text: &str) -> String {
    message(Some(id), role, "input_text", text)
}

/// Server events the conversation acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    SessionCreated,
    /// The effective audio formats, which must still be μ-law both ways.
    SessionUpdated {
        input: Option<String>,
        output: Option<String>,
    },
    SpeechStarted,
    SpeechStopped,
    /// The caller's words (input transcription).
    CallerSaid(String),
    ResponseCreated {
        id: String,
        /// Ours, outside the conversation: the filler.
        filler: bool,
    },
    AudioDelta {
        response_id: String,
        item_id: String,
        audio: Vec<u8>,
    },
    AudioDone {
        response_id: String,
        item_id: String,
    },
    /// The agent's words (output audio transcript).
    AgentSaid {
        response_id: String,
        text: String,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ResponseDone {
        id: String,
        status: String,
    },
    Error {
        code: Option<String>,
        kind: Option<String>,
        message: String,
    },
    RateLimits(Value),
    /// Anything else: acknowledgements, deltas we do not need.
    Other(String),
}

impl ServerEvent {
    /// Errors after which the session cannot go on: the caller must get the fallback now.
    pub fn is_fatal_error(&self) -> bool {
        let ServerEvent::Error { code, kind, .. } = self else { return false };
        let fatal_codes = ["session_expired", "beta_api_shape_disabled", "invalid_api_key", "insufficient_quota", "model_not_found"];
        code.as_deref().is_some_and(|c| fatal_codes.contains(&c))
            || kind.as_deref().is_some_and(|k| ["authentication_error", "permission_error"].contains(&k))
    }

    /// A fatal error that ends this session only: a new session goes on (the 60-minute cap).
    /// Other fatal errors (a key, a quota, a model) would refuse the next session too.
    pub fn ends_only_this_session(&self) -> bool {
        matches!(self, ServerEvent::Error { code: Some(code), .. } if code == "session_expired")
    }
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// An audio delta, read without building a JSON tree: most of what the model sends.
#[derive(serde::Deserialize)]
struct AudioDelta<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    response_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    item_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    delta: std::borrow::Cow<'a, str>,
}

pub fn parse(frame: &str) -> Result<ServerEvent, String> {
    if let Ok(delta) = serde_json::from_str::<AudioDelta>(frame) {
        if delta.kind == "response.output_audio.delta" {
            let audio = B64.decode(delta.delta.as_bytes()).map_err(|e| format!("audio delta is not base64: {e}"))?;
            return Ok(ServerEvent::AudioDelta { response_id: delta.response_id.into_owned(), item_id: delta.item_id.into_owned(), audio });
        }
    }
    let v: Value = serde_json::from_str(frame).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v["type"].as_str().ok_or("no type")?;
    Ok(match kind {
        "session.created" => ServerEvent::SessionCreated,
        "session.updated" => {
            let audio = &v["session"]["audio"];
            let format = |dir: &str| audio[dir]["format"]["type"].as_str().map(str::to_string);
            ServerEvent::SessionUpdated { input: format("input"), output: format("output") }
        }
        "input_audio_buffer.speech_started" => ServerEvent::SpeechStarted,
        "input_audio_buffer.speech_stopped" => ServerEvent::SpeechStopped,
        "conversation.item.input_audio_transcription.completed" => ServerEvent::CallerSaid(text(&v, "transcript")),
        "response.created" => ServerEvent::ResponseCreated {
            id: text(&v["response"], "id"),
            filler: v["response"]["metadata"]["callkeeper"] == FILLER_METADATA,
        },
        "response.output_audio.delta" => {
            let audio = B64.decode(v["delta"].as_str().unwrap_or_default()).map_err(|e| format!("audio delta is not base64: {e}"))?;
            ServerEvent::AudioDelta { response_id: text(&v, "response_id"), item_id: text(&v, "item_id"), audio }
        }
        "response.output_audio.done" => ServerEvent::AudioDone { response_id: text(&v, "response_id"), item_id: text(&v, "item_id") },
        "response.output_audio_transcript.done" => {
            ServerEvent::AgentSaid { response_id: text(&v, "response_id"), text: text(&v, "transcript") }
        }
        "response.function_call_arguments.done" => {
            ServerEvent::FunctionCall { call_id: text(&v, "call_id"), name: text(&v, "name"), arguments: text(&v, "arguments") }
        }
        "response.done" => ServerEvent::ResponseDone { id: text(&v["response"], "id"), status: text(&v["response"], "status") },
        "error" => {
            let e = &v["error"];
            ServerEvent::Error {
                code: e["code"].as_str().map(str::to_string),
                kind: e["type"].as_str().map(str::to_string),
                message: text(e, "message"),
            }
        }
        "rate_limits.updated" => ServerEvent::RateLimits(v["rate_limits"].clone()),
        other => ServerEvent::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RealtimeSettings {
        RealtimeSettings {
            url: "wss://api.openai.com/v1/realtime".into(),
            model: "gpt-realtime".into(),
            turn_detection: TurnDetection::ServerVad,
            transcribe_model: "gpt-4o-mini-transcribe".into(),
            connect_timeout: std::time::Duration::from_secs(3),
            rotate_after: std::time::Duration::from_secs(1200),
        }
    }

    #[test]
    fn the_session_is_ga_shaped_and_mu_law_both_ways() {
        let profile = AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
        let update: Value = serde_json::from_str(&session_update(&profile, &settings(), &tools(&profile, false))).unwrap();
        let session = &update["session"];
        assert_eq!(session["type"], "realtime", "required by the GA interface");
        assert_eq!(session["audio"]["input"]["format"], json!({ "type": "audio/pcmu" }));
        assert_eq!(session["audio"]["output"]["format"], json!({ "type": "audio/pcmu" }));
        assert_eq!(session["audio"]["input"]["transcription"]["language"], "he");
        assert_eq!(session["audio"]["input"]["turn_detection"]["type"], "server_vad");
        assert!(session.get("modalities").is_none() && session.get("input_audio_format").is_none(), "no beta fields");
        let names: Vec<&str> = session["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["save_lead", "end_call"], "no transfer without a number");
        assert_eq!(session["tools"][0]["parameters"]["properties"]["budget"]["type"], json!(["string", "null"]));
    }

    #[test]
    fn an_append_is_json_with_the_audio_in_base64() {
        let event: Value = serde_json::from_str(&append(&[0, 1, 2, 0xFF])).unwrap();
        assert_eq!(event, json!({ "type": "input_audio_buffer.append", "audio": "AAEC/w==" }));
    }

    #[test]
    fn server_events_are_read() {
        let delta = r#"{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_A","delta":"AAEC"}"#;
        assert_eq!(
            parse(delta).unwrap(),
            ServerEvent::AudioDelta { response_id: "resp_1".into(), item_id: "item_A".into(), audio: vec![0, 1, 2] }
        );
        let expired = r#"{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"max 60 minutes"}}"#;
        assert!(parse(expired).unwrap().is_fatal_error() && parse(expired).unwrap().ends_only_this_session());
        let busy =
            r#"{"type":"error","error":{"type":"invalid_request_error","code":"conversation_already_has_active_response","message":"x"}}"#;
        assert!(!parse(busy).unwrap().is_fatal_error());
        let updated = r#"{"type":"session.updated","session":{"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"format":{"type":"audio/pcmu"}}}}}"#;
        assert_eq!(
            parse(updated).unwrap(),
            ServerEvent::SessionUpdated { input: Some("audio/pcm".into()), output: Some("audio/pcmu".into()) }
        );
        assert!(parse("not json").is_err());
    }
}
