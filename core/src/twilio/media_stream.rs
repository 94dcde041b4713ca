//! Twilio Media Streams messages: JSON text frames, parsed strictly enough to trust and leniently
//! enough never to kill a call. A frame that cannot be used is a [`FrameError`] whose `kind` the
//! relay counts and logs once per call; the socket carries on.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Far above any real frame (a 20 ms media frame is ~300 bytes; `start` a few KB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary frame ({0} bytes): Media Streams sends text only")]
    Binary(usize),
    #[error("frame of {0} bytes exceeds {MAX_FRAME_BYTES}")]
    Oversized(usize),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("{event}: {reason}")]
    Malformed { event: &'static str, reason: String },
    #[error("media payload is not base64")]
    BadPayload,
}

impl FrameError {
    /// A stable name for counting and for logging once per kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Binary(_) => "binary",
            FrameError::Oversized(_) => "oversized",
            FrameError::InvalidJson(_) => "invalid_json",
            FrameError::UnknownEvent(_) => "unknown_event",
            FrameError::Malformed { .. } => "malformed",
            FrameError::BadPayload => "bad_payload",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    pub tracks: Vec<String>,
    pub custom_parameters: HashMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub track: String,
    /// Counts from 1 per track; a jump means frames were lost.
    pub chunk: u64,
    /// Milliseconds since the stream started.
    pub timestamp_ms: u64,
    /// μ-law bytes.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connected {
        protocol: String,
        version: String,
    },
    Start(Start),
    Media(Media),
    Dtmf {
        digit: String,
    },
    /// A mark we sent has been played to the caller.
    Mark {
        name: String,
    },
    Stop,
}

/// Twilio sends `chunk`, `timestamp` and `sequenceNumber` as strings; accept numbers too.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn field<'a>(obj: &'a Value, event: &'static str, path: &[&str]) -> Result<&'a Value, FrameError> {
    let mut v = obj;
    for key in path {
        v = v.get(key).ok_or_else(|| FrameError::Malformed { event, reason: format!("missing {}", path.join(".")) })?;
    }
    Ok(v)
}

fn text(obj: &Value, event: &'static str, path: &[&str]) -> Result<String, FrameError> {
    field(obj, event, path)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| FrameError::Malformed { event, reason: format!("{} is not a string", path.join(".")) })
}

fn count(obj: &Value, event: &'static str, path: &[&str]) -> Result<u64, FrameError> {
    number(field(obj, event, path)?).ok_or_else(|| FrameError::Malformed { event, reason: format!("{} is not a number", path.join(".")) })
}

/// A well-formed `media` frame, read without building a JSON tree: 50 a second per call. Any
/// frame this does not take goes the general way, which says what is wrong with it.
#[derive(Deserialize)]
struct MediaFrame<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    media: MediaFields<'a>,
}

#[derive(Deserialize)]
struct MediaFields<'a> {
    #[serde(borrow, default)]
    track: Option<std::borrow::Cow<'a, str>>,
    chunk: Count,
    timestamp: Count,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

/// A count Twilio sends as a string of digits (or, leniently, a number).
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Count, E> {
                Ok(Count(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Count, E> {
                s.parse().map(Count).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn fast_media(frame: &str) -> Option<Media> {
    let f: MediaFrame = serde_json::from_str(frame).ok()?;
    if f.event != "media" {
        return None;
    }
    let payload = base64::engine::general_purpose::STANDARD.decode(f.media.payload.as_bytes()).ok()?;
    Some(Media {
        track: f.media.track.map_or_else(|| "inbound".into(), |t| t.into_owned()),
        chunk: f.media.chunk.0,
        timestamp_ms: f.media.timestamp.0,
        payload,
    })
}

/// Parses one text frame.
pub fn parse(frame: &str) -> Result<Inbound, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::Oversized(frame.len()));
    }
    if let Some(media) = fast_media(frame) {
        return Ok(Inbound::Media(media));
    }
    let v: Value = serde_json::from_str(frame).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
    let event = v.get("event").and_then(Value::as_str).ok_or_else(|| FrameError::InvalidJson("no \"event\" string".into()))?;
    Ok(match event {
        "connected" => Inbound::Connected {
            protocol: text(&v, "connected", &["protocol"]).unwrap_or_default(),
            version: text(&v, "connected", &["version"]).unwrap_or_default(),
        },
        "start" => {
            let e = "start";
            let format = field(&v, e, &["start", "mediaFormat"])?;
            let media_format: MediaFormat = serde_json::from_value(format.clone())
                .map_err(|err| FrameError::Malformed { event: e, reason: format!("mediaFormat: {err}") })?;
            let custom_parameters = match v.get("start").and_then(|s| s.get("customParameters")) {
                None | Some(Value::Null) => HashMap::new(),
                Some(Value::Object(map)) => {
                    map.iter().map(|(k, val)| (k.clone(), val.as_str().map_or_else(|| val.to_string(), str::to_string))).collect()
                }
                Some(_) => return Err(FrameError::Malformed { event: e, reason: "customParameters is not an object".into() }),
            };
            let tracks = v
                .get("start")
                .and_then(|s| s.get("tracks"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            Inbound::Start(Start {
                stream_sid: text(&v, e, &["start", "streamSid"]).or_else(|_| text(&v, e, &["streamSid"]))?,
                call_sid: text(&v, e, &["start", "callSid"])?,
                account_sid: text(&v, e, &["start", "accountSid"])?,
                tracks,
                custom_parameters,
                media_format,
            })
        }
        "media" => {
            let e = "media";
            let payload = text(&v, e, &["media", "payload"])?;
            let payload = base64::engine::general_purpose::STANDARD.decode(payload.as_bytes()).map_err(|_| FrameError::BadPayload)?;
            Inbound::Media(Media {
                track: text(&v, e, &["media", "track"]).unwrap_or_else(|_| "inbound".into()),
                chunk: count(&v, e, &["media", "chunk"])?,
                timestamp_ms: count(&v, e, &["media", "timestamp"])?,
                payload,
            })
        }
        "dtmf" => Inbound::Dtmf { digit: text(&v, "dtmf", &["dtmf", "digit"])? },
        "mark" => Inbound::Mark { name: text(&v, "mark", &["mark", "name"])? },
        "stop" => Inbound::Stop,
        other => return Err(FrameError::UnknownEvent(other.chars().take(40).collect())),
    })
}

/// Audio for the caller: μ-law bytes, one frame's worth or a few. Built by hand, as the model's
/// appends are: 50 a second per call, and base64 needs no escaping.
pub fn media_frame(stream_sid: &str, mulaw: &[u8]) -> String {
    let sid = serde_json::to_string(stream_sid).expect("a string serializes");
    let mut frame = String::with_capacity(48 + sid.len() + mulaw.len().div_ceil(3) * 4);
    frame.push_str(r#"{"event":"media","streamSid":"#);
    frame.push_str(&sid);
    frame.push_str(r#","media":{"payload":""#);
    base64::engine::general_purpose::STANDARD.encode_string(mulaw, &mut frame);
    frame.push_str(r#""}}"#);
    frame
}

/// Asks Twilio to tell us (with a `mark` back) when everything sent before it has been played.
pub fn mark_frame(stream_sid: &str, name: &str) -> String {
    json!({ "event": "mark", "streamSid": stream_sid, "mark": { "name": name } }).to_string()
}

/// Drops the audio Twilio has buffered but not yet played: barge-in.
pub fn clear_frame(stream_sid: &str) -> String {
    json!({ "event": "clear", "streamSid": stream_sid }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1",
        "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
        "customParameters":{"call_sid":"CA1","token":"t"}},"streamSid":"MZ1"}"#;

    #[test]
    fn parses_every_documented_event() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            Inbound::Connected { protocol: "Call".into(), version: "1.0.0".into() }
        );
        let Inbound::Start(start) = parse(START).unwrap() else { panic!() };
        assert_eq!((start.stream_sid.as_str(), start.call_sid.as_str()), ("MZ1", "CA1"));
        assert_eq!(start.custom_parameters["token"], "t");
        assert_eq!(start.media_format, MediaFormat { encoding: "audio/x-mulaw".into(), sample_rate: 8000, channels: 1 });
        let media = parse(r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"/38="},"streamSid":"MZ1"}"#).unwrap();
        assert_eq!(media, Inbound::Media(Media { track: "inbound".into(), chunk: 2, timestamp_ms: 20, payload: vec![0xFF, 0x7F] }));
        // The quick way and the general way read the same frame the same: numbers as numbers, no
        // track, an escaped slash.
        let lenient = r#"{"event":"media","media":{"chunk":2,"timestamp":20,"payload":"\/38="}}"#;
        assert!(fast_media(lenient).is_some());
        assert_eq!(parse(lenient).unwrap(), media);
        assert_eq!(
            parse(r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#).unwrap(),
            Inbound::Dtmf { digit: "1".into() }
        );
        assert_eq!(parse(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"r1:3"}}"#).unwrap(), Inbound::Mark { name: "r1:3".into() });
        assert_eq!(parse(r#"{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#).unwrap(), Inbound::Stop);
    }

    #[test]
    fn bad_frames_have_a_kind() {
        let kinds: Vec<&str> = [
            "not json",
            r#"{"no":"event"}"#,
            r#"{"event":"transcription"}"#,
            r#"{"event":"mark","streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"chunk":"1","timestamp":"x","payload":""}}"#,
            r#"{"event":"media","media":{"chunk":"1","timestamp":"0","payload":"%%%"}}"#,
        ]
        .iter()
        .map(|f| parse(f).unwrap_err().kind())
        .collect();
        assert_eq!(kinds, ["invalid_json", "invalid_json", "unknown_event", "malformed", "malformed", "bad_payload"]);
        assert_eq!(parse(&" ".repeat(MAX_FRAME_BYTES + 1)).unwrap_err().kind(), "oversized");
    }

    #[test]
    fn outbound_frames_carry_the_stream_sid() {
        let media: Value = serde_json::from_str(&media_frame("MZ1", &[0xFF, 0x7F])).unwrap();
        assert_eq!(media, json!({"event":"media","streamSid":"MZ1","media":{"payload":"/38="}}));
        let mark: Value = serde_json::from_str(&mark_frame("MZ1", "r1:0")).unwrap();
        assert_eq!(mark["mark"]["name"], "r1:0");
        assert_eq!(serde_json::from_str::<Value>(&clear_frame("MZ1")).unwrap(), json!({"event":"clear","streamSid":"MZ1"}));
    }
}
