//! A call's trace (`CALL_TRACES`): every webhook and its answer, every Media Streams event and
//! every Realtime event either way, with its time, as JSON lines kept with the call. A real
//! call's trace is what a replay test plays back (`tests/api/trace_replay.rs`).
//!
//! What a line keeps: audio as its length in bytes (a call's audio is the recording's job, and
//! would make a trace megabytes a minute); never a secret (the stream token); with `on`, phone
//! numbers masked to their first 3 and last 2 digits and the words said (transcripts, text,
//! tool arguments and outputs, message bodies) as their length; with `full`, all of those.

use crate::domain::time::Millis;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceMode {
    #[default]
    Off,
    /// Redacted: phone numbers masked, words as their length.
    On,
    /// Everything but audio and secrets.
    Full,
}

impl TraceMode {
    pub fn parse(value: &str) -> Option<TraceMode> {
        match value {
            "off" | "" => Some(TraceMode::Off),
            "on" => Some(TraceMode::On),
            "full" => Some(TraceMode::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TraceMode::Off => "off",
            TraceMode::On => "on",
            TraceMode::Full => "full",
        }
    }
}

/// Who the other side of a traced event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Twilio's Media Streams socket.
    Twilio,
    /// OpenAI's Realtime socket.
    OpenAi,
    /// A webhook Twilio posted, and callkeeper's answer.
    Webhook,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Twilio => "twilio",
            Peer::OpenAi => "openai",
            Peer::Webhook => "webhook",
        }
    }
}

/// `in`: the peer sent it to callkeeper; `out`: callkeeper sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One line of a trace: `{"at": ms, "peer", "dir", "event"}` with `event` redacted for `mode`.
pub fn line(mode: TraceMode, at: Millis, peer: Peer, dir: Direction, event: &Value) -> String {
    let dir = match dir {
        Direction::In => "in",
        Direction::Out => "out",
    };
    json!({ "at": at, "peer": peer.as_str(), "dir": dir, "event": redact(mode, event) }).to_string()
}

/// Fields that carry audio, as base64: kept as `{field}_bytes`.
const AUDIO: [&str; 3] = ["payload", "audio", "delta"];
/// Fields whose text is what someone said or typed (a tool's arguments and output carry the
/// lead): their length with `on`. Only text: a response's `output` list is kept, and walked.
const WORDS: [&str; 7] = ["transcript", "text", "arguments", "output", "Body", "SpeechResult", "UnstableSpeechResult"];
/// Never kept: the stream's token (it admits a stream for the call), signatures.
const SECRETS: [&str; 3] = ["token", "X-Twilio-Signature", "signature"];

/// `event` as a trace keeps it (see the module's doc).
pub fn redact(mode: TraceMode, event: &Value) -> Value {
    let is_text_delta = event["type"].as_str().is_some_and(|t| t.contains("text") || t.contains("transcript"));
    redact_value(mode, event, is_text_delta)
}

fn redact_value(mode: TraceMode, value: &Value, text_delta: bool) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                let key_str = key.as_str();
                if SECRETS.contains(&key_str) {
                    out.insert(key.clone(), json!("[secret]"));
                } else if AUDIO.contains(&key_str) && !(key_str == "delta" && text_delta) && item.is_string() {
                    out.insert(format!("{key}_bytes"), json!(base64_len(item.as_str().unwrap_or_default())));
                } else if mode == TraceMode::On && (WORDS.contains(&key_str) || (key_str == "delta" && text_delta)) && item.is_string() {
                    out.insert(key.clone(), json!(format!("[{} chars]", words_len(item))));
                } else if key_str == "customParameters" || key_str == "parameters" {
                    out.insert(key.clone(), redact_parameters(mode, item));
                } else {
                    out.insert(key.clone(), redact_value(mode, item, text_delta));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| redact_value(mode, i, text_delta)).collect()),
        Value::String(text) if mode == TraceMode::On => json!(mask_phone(text)),
        other => other.clone(),
    }
}

/// A stream's `<Parameter>`s: the token is a secret whatever its name's case.
fn redact_parameters(mode: TraceMode, parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("token") { json!("[secret]") } else { redact_value(mode, v, false) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => redact_value(mode, other, false),
    }
}

fn words_len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// Decoded length of base64 text.
fn base64_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

/// A phone number (`+972501234567`, `whatsapp:+972…`) as its first 3 and last 2 digits; any
/// other text as it is.
pub fn mask_phone(text: &str) -> String {
    let (prefix, number) = match text.strip_prefix("whatsapp:") {
        Some(rest) => ("whatsapp:", rest),
        None => ("", text),
    };
    let Some(digits) = number.strip_prefix('+') else { return text.to_string() };
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.to_string();
    }
    let hidden = "•".repeat(digits.len() - 4);
    format!("{prefix}+{}{hidden}{}", &digits[..2], &digits[digits.len() - 2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_becomes_its_length_and_the_token_never_stays() {
        let start = json!({ "event": "start", "start": { "callSid": "CA1", "customParameters": { "call_sid": "CA1", "token": "abc" } } });
        let kept = redact(TraceMode::Full, &start);
        assert_eq!(kept["start"]["customParameters"]["token"], "[secret]");
        let media = json!({ "event": "media", "media": { "payload": "/////w==", "chunk": "2" } });
        assert_eq!(redact(TraceMode::On, &media)["media"], json!({ "payload_bytes": 4, "chunk": "2" }));
        let delta = json!({ "type": "response.output_audio.delta", "delta": "AAAA" });
        assert_eq!(redact(TraceMode::Full, &delta)["delta_bytes"], 3);
    }

    #[test]
    fn on_hides_numbers_and_words_and_full_keeps_them() {
        let said = json!({ "type": "conversation.item.input_audio_transcription.completed", "transcript": "אני מחפש דירה" });
        assert_eq!(redact(TraceMode::On, &said)["transcript"], "[13 chars]");
        assert_eq!(redact(TraceMode::Full, &said)["transcript"], "אני מחפש דירה");
        let text_delta = json!({ "type": "response.output_audio_transcript.delta", "delta": "שלום" });
        assert_eq!(redact(TraceMode::On, &text_delta)["delta"], "[4 chars]");
        let form = json!({ "From": "+972501234567", "To": "whatsapp:+97231234567", "CallStatus": "ringing" });
        let kept = redact(TraceMode::On, &form);
        assert_eq!(kept["From"], "+97••••••••67");
        assert_eq!(kept["To"], "whatsapp:+97•••••••67");
        assert_eq!(kept["CallStatus"], "ringing");
        assert_eq!(redact(TraceMode::Full, &form)["From"], "+972501234567");
        // A response's output is a list of items, walked; a tool's output is text, hidden.
        let done =
            json!({ "type": "response.done", "response": { "output": [{ "type": "function_call", "arguments": "{\"name\":\"Dana\"}" }] } });
        assert_eq!(redact(TraceMode::On, &done)["response"]["output"][0]["arguments"], "[15 chars]");
        let output = json!({ "type": "conversation.item.create", "item": { "type": "function_call_output", "output": "{\"ok\":true}" } });
        assert_eq!(redact(TraceMode::On, &output)["item"]["output"], "[11 chars]");
    }

    #[test]
    fn a_line_says_when_who_and_which_way() {
        let line: Value = serde_json::from_str(&line(TraceMode::On, 42, Peer::Twilio, Direction::In, &json!({ "event": "stop" }))).unwrap();
        assert_eq!(line, json!({ "at": 42, "peer": "twilio", "dir": "in", "event": { "event": "stop" } }));
    }
}
