//! OpenAI as `simulate --offline` plays it, so the whole path runs with no account: the Realtime
//! API ([`crate::fake_realtime`], speaking the embedded agent's prompts and its "one moment"),
//! and on HTTP the transcription and the chat completions (extraction and WhatsApp replies).
//!
//! It cannot understand speech, and says so: a transcription is a line per stretch of speech it
//! finds by energy in the uploaded WAV, worded "(offline) speech 1.2–3.4 s"; an extraction fills
//! the schema's summary and intent from the transcript's size and leaves every lead field null.
//! It can be told to fail the next transcriptions (HTTP 500), as OpenAI sometimes does.

use crate::fake_realtime::{FakeRealtime, Fault, Plan};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A 20 ms window louder than this (RMS of PCM16) is speech.
const VOICED_RMS: f64 = 400.0;
/// Speech this close together is one line.
const JOIN_GAP_MS: u64 = 600;

#[derive(Default)]
struct Counters {
    transcriptions: AtomicU64,
    failures_left: AtomicU32,
    failed: AtomicU64,
    completions: AtomicU64,
}

pub struct FakeOpenAi {
    pub http: SocketAddr,
    pub realtime: FakeRealtime,
    counters: Arc<Counters>,
}

impl FakeOpenAi {
    /// OpenAI for an agent speaking `language`, whose caller's words are `caller_says` (what the
    /// live transcript writes for each of their turns).
    pub async fn start(key: &str, language: &str, caller_says: &str) -> anyhow::Result<FakeOpenAi> {
        // The model speaks: the embedded agent's prompts in the agent's language, recorded
        // speech, so a saved call sounds like one (the fake's default voice is a tone); while a
        // business's tool is slow, its "one moment".
        use callkeeper_relay::agent::embedded::{hold, EmbeddedAgent};
        let prompts = EmbeddedAgent::for_language(language);
        let options = crate::fake_realtime::Options {
            key: key.to_string(),
            speed: 1.0,
            script: vec![Plan::speak(prompts.greeting.audio, prompts.greeting.text)],
            default_answer: Plan::speak(prompts.reply.audio, prompts.reply.text),
            filler: Some(hold(language).audio),
            caller_says: vec![caller_says.to_string()],
            ..Default::default()
        };
        let realtime = FakeRealtime::start(options).await?;
        let counters = Arc::new(Counters::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = listener.local_addr()?;
        let router = axum::Router::new().fallback(handle).with_state(counters.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeOpenAi { http, realtime, counters })
    }

    /// `OPENAI_BASE_URL` for the stack.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.http)
    }

    /// The next `times` transcriptions are answered 500.
    pub fn fail_transcriptions(&self, times: u32) {
        self.counters.failures_left.store(times, Ordering::SeqCst);
    }

    /// Transcriptions asked for, and how many of them were failed on purpose.
    pub fn transcriptions(&self) -> (u64, u64) {
        (self.counters.transcriptions.load(Ordering::SeqCst), self.counters.failed.load(Ordering::SeqCst))
    }

    /// How the next Realtime session misbehaves (once: the sessions after it are healthy,
    /// unless the fault takes the model down for good).
    pub fn model_fault(&self, fault: Fault) {
        self.realtime.set_fault(fault);
    }
}

async fn handle(State(counters): State<Arc<Counters>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    match parts.uri.path() {
        "/v1/audio/transcriptions" => {
            counters.transcriptions.fetch_add(1, Ordering::SeqCst);
            let failing = counters.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if failing {
                counters.failed.fetch_add(1, Ordering::SeqCst);
                let error = json!({ "error": { "message": "The server had an error while processing your request (simulated)", "type": "server_error" } });
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
            }
            match multipart_file(&content_type, &body).map(transcribe) {
                Some(Ok(answer)) => axum::Json(answer).into_response(),
                Some(Err(e)) => bad_request(&format!("the file is not a WAV the simulator reads: {e}")),
                None => bad_request("no file part in the upload"),
            }
        }
        "/v1/chat/completions" => {
            counters.completions.fetch_add(1, Ordering::SeqCst);
            let Ok(request) = serde_json::from_slice::<Value>(&body) else { return bad_request("the body is not JSON") };
            let content = match request["response_format"]["json_schema"]["schema"].as_object() {
                Some(schema) => extraction(schema, &request).to_string(),
                None => "(offline) Thank you for your message; this is the simulator answering.".to_string(),
            };
            axum::Json(
                json!({ "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }] }),
            )
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({ "error": { "message": "the simulator does not play this endpoint" } })))
            .into_response(),
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": { "message": message, "type": "invalid_request_error" } }))).into_response()
}

/// The `file` part of a multipart/form-data body.
fn multipart_file<'a>(content_type: &str, body: &'a [u8]) -> Option<&'a [u8]> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        let headers_end = find(rest, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&rest[..headers_end]);
        let content = &rest[headers_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        if headers.contains("name=\"file\"") {
            return Some(&content[..end]);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `verbose_json` with one segment per stretch of speech.
fn transcribe(wav: &[u8]) -> Result<Value, callkeeper_core::wav::BadWav> {
    let view = callkeeper_core::wav::view(wav)?;
    let window = (view.sample_rate as usize / 50).max(1);
    let mut stretches: Vec<(u64, u64)> = Vec::new();
    for (i, start) in (0..view.frames()).step_by(window).enumerate() {
        let end = (start + window).min(view.frames());
        let energy: f64 = (start..end).map(|f| f64::from(view.sample(f, 0)).powi(2)).sum::<f64>() / (end - start).max(1) as f64;
        if energy.sqrt() < VOICED_RMS {
            continue;
        }
        let (from, to) = (i as u64 * 20, i as u64 * 20 + 20);
        match stretches.last_mut() {
            Some(last) if from <= last.1 + JOIN_GAP_MS => last.1 = to,
            _ => stretches.push((from, to)),
        }
    }
    let segments: Vec<Value> = stretches
        .iter()
        .filter(|(from, to)| to - from >= 200)
        .enumerate()
        .map(|(id, (from, to))| {
            let (start, end) = (*from as f64 / 1000.0, *to as f64 / 1000.0);
            json!({ "id": id, "start": start, "end": end, "text": format!("(offline) speech {start:.1}–{end:.1} s") })
        })
        .collect();
    let text = segments.iter().filter_map(|s| s["text"].as_str()).collect::<Vec<_>>().join(" ");
    Ok(json!({ "task": "transcribe", "duration": view.duration_ms() as f64 / 1000.0, "text": text, "segments": segments }))
}

/// An answer that fits the extraction schema: summary and intent from what it was given, every
/// other field null (the simulator does not know what was said).
fn extraction(schema: &serde_json::Map<String, Value>, request: &Value) -> Value {
    let transcript = request["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or_default();
    let lines = transcript.lines().filter(|l| !l.trim().is_empty()).count();
    let mut out = serde_json::Map::new();
    for name in schema.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.keys()) {
        let value = match name.as_str() {
            "summary" => json!(format!("(offline) A simulated call of {lines} transcript lines.")),
            "intent" => json!("(offline) unknown: the simulator does not understand speech"),
            _ => Value::Null,
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_file_part_is_found_in_a_multipart_body() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x01\x02\r\n--XyZ--\r\n";
        assert_eq!(super::multipart_file("multipart/form-data; boundary=XyZ", body), Some(&b"RIFF\x01\x02"[..]));
        assert_eq!(super::multipart_file("multipart/form-data; boundary=Other", body), None);
    }

    #[test]
    fn speech_is_found_by_energy_and_silence_is_not() {
        let mut samples = vec![0i16; 8000];
        samples.extend((0..8000).map(|i| if i % 16 < 8 { 3000 } else { -3000 }));
        samples.extend(vec![0i16; 8000]);
        let answer = super::transcribe(&callkeeper_core::wav::mono(&samples, 8000)).unwrap();
        let segments = answer["segments"].as_array().unwrap();
        assert_eq!(segments.len(), 1, "{answer}");
        assert_eq!((segments[0]["start"].as_f64(), segments[0]["end"].as_f64()), (Some(1.0), Some(2.0)));
    }
}
