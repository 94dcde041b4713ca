//! A fake of OpenAI's Realtime API (GA events only), over a real WebSocket on loopback: what the
//! tests and `callkeeper fake-realtime` run the AI agent against, with no account.
//!
//! It does what `shared/openai-realtime.md` §6 asks of a fake: checks the key (401 on the
//! upgrade otherwise) and refuses the beta interface (error, close 4000); `session.created`,
//! then `session.updated` echoing what was set (a missing `session.type` is refused); server
//! VAD by energy on the appended μ-law with the appended-audio clock (so silence appended is
//! what ends a turn); input transcription; responses from a script — audio (a real μ-law tone,
//! or a clip of speech, paced), its transcript, or a function call, whose output must come
//! before the next `response.create`; `response.cancel`, `conversation.item.truncate` and
//! `.delete` as the API answers them; and faults: refuse, drop the socket mid-call, a fatal
//! error, a format that reverted to PCM, the model down for good after a drop, text-only answers
//! after replayed assistant text. Every client event is logged with when it came, for tests to assert on.
//!
//! Every distinct shape of event that crosses its socket, either way, is also kept on the wire
//! record ([`Log::wire`], and with `CALLKEEPER_REALTIME_WIRE_LOG=<dir>` a JSON-lines file per
//! process there): what `scripts/realtime_conformance.py` reads with the `openai` package's own
//! GA types, so neither the agent nor this fake can drift from the API.

use base64::Engine;
use callkeeper_core::mulaw;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Audio deltas of 100 ms (800 bytes of μ-law), as the API sends them.
const DELTA_MS: u64 = 100;
/// Frames above this RMS count as speech, like the embedded agent's VAD.
const VOICED_RMS: f64 = 400.0;
const SPEECH_START_MS: u64 = 60;

/// One response, in the order the script plays them.
#[derive(Debug, Clone)]
pub enum Plan {
    /// `ms` of a tone, or the words `text` spoken in `clip` (μ-law, its length), whose
    /// transcript is `text`.
    Say { ms: u64, text: String, clip: Option<bytes::Bytes> },
    /// A function call; the next response comes after its output and a `response.create`.
    Call { name: String, arguments: Value },
}

impl Plan {
    pub fn say(ms: u64, text: &str) -> Plan {
        Plan::Say { ms, text: text.into(), clip: None }
    }
    /// `text` as speech: the audio of someone saying it.
    pub fn speak(clip: bytes::Bytes, text: &str) -> Plan {
        Plan::Say { ms: clip.len() as u64 / 8, text: text.into(), clip: Some(clip) }
    }
    pub fn call(name: &str, arguments: Value) -> Plan {
        Plan::Call { name: name.into(), arguments }
    }
}

/// How the fake misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 403 on the upgrade, whatever the key.
    RefuseHandshake,
    /// 503 on the upgrade: the service is down.
    Unavailable,
    /// Accepts the TCP connection and never answers the upgrade.
    NeverAnswer,
    /// Closes the TCP connection, without a close frame, this long after the first response.
    DropAfter(Duration),
    /// The same, as soon as this many responses are done.
    DropAfterResponses(u64),
    /// `session_expired`, then close 1001, this long after the first response.
    FatalAfter(Duration),
    /// As `DropAfter`, and from the drop on every new connection is refused (503): the model is
    /// down for good.
    DownAfter(Duration),
    /// Echoes `audio/pcm` as the output format, whatever was asked.
    RevertToPcm,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The API key the fake accepts.
    pub key: String,
    pub script: Vec<Plan>,
    /// What follows once the script has run out.
    pub default_answer: Plan,
    /// How fast audio deltas come: 1.0 is real time, larger is faster.
    pub speed: f64,
    pub fault: Fault,
    /// What the caller is transcribed as saying, turn after turn (then the last again).
    pub caller_says: Vec<String>,
    /// While the conversation holds assistant text the client created (a replayed history),
    /// responses come as text only, no audio: what beta-era models were reported to do.
    pub text_after_replayed_assistant: bool,
    /// What an out-of-band response (the relay's filler) speaks, μ-law: a tone without one.
    pub filler: Option<bytes::Bytes>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            key: "sk-fake".into(),
            script: vec![Plan::say(1200, "שלום, כאן הסוכן הדיגיטלי. במה אפשר לעזור?")],
            default_answer: Plan::say(1000, "הבנתי, תודה. ספרו לי עוד."),
            speed: 4.0,
            fault: Fault::None,
            caller_says: vec!["שלום, אני מחפש דירה בחיפה".into()],
            text_after_replayed_assistant: false,
            filler: None,
        }
    }
}

/// A client event as it arrived.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub event: Value,
}

#[derive(Debug, Default)]
pub struct Log {
    /// Every client event but the appends, in order.
    pub events: Vec<Logged>,
    pub append_bytes: u64,
    pub appends: u64,
    /// The request headers of each connection.
    pub connections: Vec<HashMap<String, String>>,
    /// What the fake found wrong in the client's behaviour.
    pub violations: Vec<String>,
    /// When each response's first audio delta left, by response id.
    pub first_delta_at: HashMap<String, Instant>,
    /// When each function call was sent, by call id.
    pub function_called_at: HashMap<String, Instant>,
    /// When a `DropAfter` or `FatalAfter` fault struck.
    pub faulted_at: Option<Instant>,
    /// One event of each shape that crossed the socket, as `{"side": "client"|"server", "event"}`.
    pub wire: Wire,
}

/// Events kept one per shape (their type, the paths of their fields and the values of the
/// fields that choose a variant), with audio cut to a few bytes: a call's thousands of appends
/// and deltas are two lines.
#[derive(Debug, Default)]
pub struct Wire {
    shapes: std::collections::HashSet<String>,
    pub events: Vec<Value>,
}

impl Wire {
    /// The event as kept, if its shape is new.
    fn keep(&mut self, side: &str, event: &Value) -> Option<Value> {
        let mut key = format!("{side} ");
        shape(event, "", &mut key);
        if !self.shapes.insert(key) {
            return None;
        }
        let mut kept = event.clone();
        for field in ["audio", "delta"] {
            if kept[field].as_str().is_some_and(|b64| b64.len() > 8) && kept["type"] != "response.output_text.delta" {
                kept[field] = json!("AAAAAA==");
            }
        }
        let line = json!({ "side": side, "event": kept });
        self.events.push(line.clone());
        Some(line)
    }
}

/// The fields that pick which of the API's types an object is.
const VARIANT_FIELDS: [&str; 3] = ["type", "role", "status"];

fn shape(value: &Value, path: &str, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let here = format!("{path}.{key}");
                match &map[key] {
                    Value::String(v) if VARIANT_FIELDS.contains(&key.as_str()) => out.push_str(&format!("{here}={v} ")),
                    other => {
                        out.push_str(&here);
                        out.push(' ');
                        shape(other, &here, out);
                    }
                }
            }
        }
        // A tool's JSON schema is the profile's, not the protocol's: its shape is not the event's.
        Value::Array(items) if !path.ends_with(".parameters") => items.iter().for_each(|item| shape(item, &format!("{path}[]"), out)),
        _ => {}
    }
}

/// The process's wire file, when `CALLKEEPER_REALTIME_WIRE_LOG` names a folder.
fn wire_file() -> Option<&'static Mutex<(Wire, std::fs::File)>> {
    static FILE: std::sync::OnceLock<Option<Mutex<(Wire, std::fs::File)>>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::var_os("CALLKEEPER_REALTIME_WIRE_LOG")?;
        let path = std::path::Path::new(&dir).join(format!("realtime-wire-{}.jsonl", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).ok()?;
        Some(Mutex::new((Wire::default(), file)))
    })
    .as_ref()
}

/// Keeps `event` on this fake's wire record and the process's file.
fn on_wire(log: &Mutex<Log>, side: &str, event: &Value) {
    log.lock().expect("not poisoned").wire.keep(side, event);
    if let Some(file) = wire_file() {
        use std::io::Write;
        let mut guard = file.lock().expect("not poisoned");
        let (wire, file) = &mut *guard;
        if let Some(line) = wire.keep(side, event) {
            let _ = writeln!(file, "{line}");
        }
    }
}

impl Log {
    pub fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.events.iter().filter(|e| e.event["type"] == kind).map(|e| e.event.clone()).collect()
    }
}

pub struct FakeRealtime {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    /// What each new connection gets; `set_fault` changes it for the connections after.
    options: Arc<Mutex<Options>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRealtime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRealtime {
    pub async fn start(options: Options) -> anyhow::Result<FakeRealtime> {
        Self::start_on("127.0.0.1:0".parse()?, options).await
    }

    pub async fn start_on(addr: SocketAddr, options: Options) -> anyhow::Result<FakeRealtime> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let options = Arc::new(Mutex::new(options));
        let current = options.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (options, log) = (current.lock().expect("not poisoned").clone(), shared.clone());
                let all = current.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    serve_connection(tcp, options, log, all).await;
                });
            }
        });
        Ok(FakeRealtime { addr, log, options, task })
    }

    /// How the connections from now on misbehave (those already open keep theirs).
    pub fn set_fault(&self, fault: Fault) {
        self.options.lock().expect("not poisoned").fault = fault;
    }

    /// The responses the connections after this one play, in order.
    pub fn set_script(&self, script: Vec<Plan>) {
        self.options.lock().expect("not poisoned").script = script;
    }

    /// The responses new connections play now.
    pub fn script(&self) -> Vec<Plan> {
        self.options.lock().expect("not poisoned").script.clone()
    }

    /// `OPENAI_REALTIME_URL` for the agent.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("not poisoned")
    }
}

fn refusal(status: u16, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_string()));
    *response.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status).expect("a valid status");
    response
}

async fn serve_connection(tcp: tokio::net::TcpStream, options: Options, log: Arc<Mutex<Log>>, all: Arc<Mutex<Options>>) {
    if options.fault == Fault::NeverAnswer {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let mut beta = false;
    // The handshake callback's error type is tungstenite's, large or not.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let headers: HashMap<String, String> =
            request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
        log.lock().expect("not poisoned").connections.push(headers.clone());
        if options.fault == Fault::RefuseHandshake {
            return Err(refusal(403, "refused"));
        }
        if options.fault == Fault::Unavailable {
            return Err(refusal(503, "service unavailable"));
        }
        if !request.uri().path().starts_with("/v1/realtime") || !request.uri().query().unwrap_or("").contains("model=") {
            return Err(refusal(404, "no such endpoint"));
        }
        if headers.get("authorization") != Some(&format!("Bearer {}", options.key)) {
            return Err(refusal(
                401,
                r#"{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided"}}"#,
            ));
        }
        beta = headers.contains_key("openai-beta");
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    if beta {
        let error = json!({"type":"error","event_id":"event_beta","error":{"type":"invalid_request_error","code":"beta_api_shape_disabled","message":"The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.","param":null}});
        on_wire(&log, "server", &error);
        let _ = socket.send(Message::text(error.to_string())).await;
        let _ = socket.send(Message::Close(Some(CloseFrame { code: CloseCode::from(4000), reason: "beta".into() }))).await;
        return;
    }
    let mut session = Session::new(options, log);
    session.emit(json!({ "type": "session.created", "session": session.config }));
    loop {
        for event in session.outbox.drain(..) {
            if socket.send(Message::text(event.to_string())).await.is_err() {
                return;
            }
        }
        if session.closing {
            let frame = CloseFrame { code: CloseCode::Away, reason: "Your session hit the maximum duration of 60 minutes.".into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
            struck(&all, session.options.fault);
            return;
        }
        let wake = session.next_wake();
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => session.client_event(text.as_str()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                if session.tick() {
                    // The drop: the TCP connection goes without a close frame.
                    struck(&all, session.options.fault);
                    return;
                }
            }
        }
    }
}

/// A fault that ends a session strikes once: the connections after it are healthy (the model
/// came back), except after `DownAfter`, when every one is refused.
fn struck(all: &Mutex<Options>, fault: Fault) {
    let mut options = all.lock().expect("not poisoned");
    if options.fault == fault {
        options.fault = if matches!(fault, Fault::DownAfter(_)) { Fault::Unavailable } else { Fault::None };
    }
}

struct Running {
    id: String,
    item: String,
    /// Audio still to send, in ms, and what it says; a tone unless a clip is spoken.
    left_ms: u64,
    clip: Option<bytes::Bytes>,
    sent_ms: u64,
    text: String,
    next_delta: Instant,
}

struct Session {
    options: Options,
    log: Arc<Mutex<Log>>,
    config: Value,
    outbox: Vec<Value>,
    script: VecDeque<Plan>,
    ids: u64,
    running: Option<Running>,
    /// An out-of-band response (`conversation: "none"`): it runs beside the conversation's.
    side: Option<Running>,
    /// Audio ms sent per assistant item, for truncation.
    item_audio: HashMap<String, u64>,
    /// A function call whose output has not come yet.
    awaiting_output: Option<String>,
    /// Assistant messages the client created, by item id.
    replayed_assistant: std::collections::HashSet<String>,
    // Inbound VAD, on the appended-audio clock.
    clock_ms: u64,
    voiced_ms: u64,
    quiet_ms: u64,
    speaking: bool,
    /// Where on the clock the caller's current turn began.
    speech_from_ms: u64,
    user_item: String,
    caller_turns: usize,
    responses_done: u64,
    fault_at: Option<Instant>,
    closing: bool,
}

impl Session {
    fn new(options: Options, log: Arc<Mutex<Log>>) -> Session {
        let config = json!({
            "type": "realtime", "object": "realtime.session", "id": "sess_fake", "model": "gpt-realtime", "output_modalities": ["audio"],
            "instructions": "", "tools": [], "tool_choice": "auto",
            "audio": {
                "input": { "format": { "type": "audio/pcm", "rate": 24000 }, "transcription": null, "noise_reduction": null,
                    "turn_detection": { "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200, "create_response": true, "interrupt_response": true } },
                "output": { "format": { "type": "audio/pcm", "rate": 24000 }, "voice": "marin", "speed": 1 }
            }
        });
        let script = options.script.iter().cloned().collect();
        Session {
            options,
            log,
            config,
            outbox: Vec::new(),
            script,
            ids: 0,
            running: None,
            side: None,
            item_audio: HashMap::new(),
            awaiting_output: None,
            replayed_assistant: Default::default(),
            clock_ms: 0,
            voiced_ms: 0,
            quiet_ms: 0,
            speaking: false,
            speech_from_ms: 0,
            user_item: String::new(),
            caller_turns: 0,
            responses_done: 0,
            fault_at: None,
            closing: false,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}_{}", self.ids)
    }

    fn emit(&mut self, mut event: Value) {
        let id = self.id("event");
        event["event_id"] = json!(id);
        on_wire(&self.log, "server", &event);
        self.outbox.push(event);
    }

    fn error(&mut self, code: &str, message: &str) {
        self.emit(
            json!({ "type": "error", "error": { "type": "invalid_request_error", "code": code, "message": message, "param": null } }),
        );
    }

    fn violation(&self, what: String) {
        self.log.lock().expect("not poisoned").violations.push(what);
    }

    fn next_wake(&self) -> Option<Instant> {
        [self.running.as_ref().map(|r| r.next_delta), self.side.as_ref().map(|r| r.next_delta), self.fault_at].into_iter().flatten().min()
    }

    fn client_event(&mut self, text: &str) {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.error("invalid_json", "The event is not JSON.");
            return;
        };
        on_wire(&self.log, "client", &event);
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        if kind == "input_audio_buffer.append" {
            let audio = B64.decode(event["audio"].as_str().unwrap_or_default()).unwrap_or_default();
            {
                let mut log = self.log.lock().expect("not poisoned");
                log.append_bytes += audio.len() as u64;
                log.appends += 1;
            }
            self.hear(&audio);
            return;
        }
        self.log.lock().expect("not poisoned").events.push(Logged { at: Instant::now(), event: event.clone() });
        match kind.as_str() {
            "session.update" => self.session_update(&event["session"]),
            "response.create" if event["response"]["conversation"] == "none" => self.start_out_of_band(&event["response"]),
            "response.create" => {
                if let Some(call) = &self.awaiting_output {
                    self.violation(format!("response.create before the function_call_output of {call}"));
                }
                self.start_response();
            }
            "response.cancel" => {
                let id = event["response_id"].as_str();
                let side = self.side.as_ref().is_some_and(|r| Some(r.id.as_str()) == id);
                let slot = if side { self.side.take() } else { self.running.take().filter(|r| id.is_none_or(|id| id == r.id)) };
                match slot {
                    Some(r) => self.finish_response(&r.id, "cancelled", Some("client_cancelled")),
                    None => self.error("response_cancel_not_active", "Cancellation failed: no active response found"),
                }
            }
            "conversation.item.truncate" => {
                let item = event["item_id"].as_str().unwrap_or_default().to_string();
                let at = event["audio_end_ms"].as_u64();
                match (self.item_audio.get(&item).copied(), at) {
                    (None, _) => self.error("item_not_found", "Only model output audio messages can be truncated"),
                    (_, None | Some(0)) => self.error("invalid_value", "audio_end_ms must be a positive integer"),
                    (Some(sent), Some(at)) if at > sent => {
                        self.error("invalid_value", &format!("Audio content of {sent}ms is already shorter than {at}ms"));
                        self.emit(
                            json!({ "type": "conversation.item.truncated", "item_id": item, "content_index": 0, "audio_end_ms": sent }),
                        );
                    }
                    (Some(_), Some(at)) => {
                        self.emit(json!({ "type": "conversation.item.truncated", "item_id": item, "content_index": 0, "audio_end_ms": at }))
                    }
                }
            }
            "conversation.item.delete" => {
                let item = event["item_id"].as_str().unwrap_or_default().to_string();
                self.replayed_assistant.remove(&item);
                self.emit(json!({ "type": "conversation.item.deleted", "item_id": item }));
            }
            "conversation.item.create" => {
                let item = &event["item"];
                if item["type"] == "function_call_output" {
                    let call_id = item["call_id"].as_str().unwrap_or_default();
                    match &self.awaiting_output {
                        Some(expected) if expected == call_id => self.awaiting_output = None,
                        other => self.violation(format!("function_call_output for {call_id}, expected {other:?}")),
                    }
                }
                // The client may name the item; otherwise the server does.
                let id = item["id"].as_str().map(str::to_string).unwrap_or_else(|| self.id("item"));
                if item["type"] == "message" && item["role"] == "assistant" {
                    self.replayed_assistant.insert(id.clone());
                    // A resumed conversation: the model goes on from where its history says it
                    // was, so an answer the history holds is not the next one it gives.
                    if self.responses_done == 0 && self.running.is_none() {
                        self.script.pop_front();
                    }
                }
                // The item whole, as the API echoes it (audio aside), with its id and status.
                let mut added = item.clone();
                added["id"] = json!(id);
                added["object"] = json!("realtime.item");
                added["status"] = json!("completed");
                self.emit(json!({ "type": "conversation.item.added", "item": added }));
            }
            other => self.error("invalid_event", &format!("unknown event type {other:?}")),
        }
    }

    fn session_update(&mut self, update: &Value) {
        if update["type"] != "realtime" {
            self.emit(json!({ "type": "error", "error": { "type": "invalid_request_error", "code": "missing_required_parameter", "message": "Missing required parameter: 'session.type'.", "param": "session.type" } }));
            return;
        }
        merge(&mut self.config, update);
        if self.options.fault == Fault::RevertToPcm {
            self.config["audio"]["output"]["format"] = json!({ "type": "audio/pcm", "rate": 24000 });
        }
        let config = self.config.clone();
        self.emit(json!({ "type": "session.updated", "session": config }));
    }

    /// Inbound VAD on the appended-audio clock: 20 ms frames of μ-law.
    fn hear(&mut self, audio: &[u8]) {
        for frame in audio.chunks(160) {
            let ms = frame.len() as u64 / 8;
            self.clock_ms += ms;
            let energy = (frame.iter().map(|&c| f64::from(mulaw::decode(c)).powi(2)).sum::<f64>() / frame.len().max(1) as f64).sqrt();
            let vad = self.config["audio"]["input"]["turn_detection"].clone();
            if energy >= VOICED_RMS {
                self.voiced_ms += ms;
                self.quiet_ms = 0;
                if !self.speaking && self.voiced_ms >= SPEECH_START_MS {
                    self.speaking = true;
                    self.user_item = self.id("item");
                    self.speech_from_ms = self.clock_ms - self.voiced_ms;
                    let start = self.clock_ms.saturating_sub(self.voiced_ms + vad["prefix_padding_ms"].as_u64().unwrap_or(300));
                    let item = self.user_item.clone();
                    self.emit(json!({ "type": "input_audio_buffer.speech_started", "audio_start_ms": start, "item_id": item }));
                    if vad["interrupt_response"] == true {
                        if let Some(r) = self.running.take() {
                            self.finish_response(&r.id, "cancelled", Some("turn_detected"));
                        }
                    }
                }
            } else {
                self.voiced_ms = 0;
                self.quiet_ms += ms;
                let silence = vad["silence_duration_ms"].as_u64().unwrap_or(500);
                if self.speaking && self.quiet_ms >= silence {
                    self.speaking = false;
                    self.end_of_turn(vad["create_response"] == true);
                }
            }
        }
    }

    fn end_of_turn(&mut self, create_response: bool) {
        let item = self.user_item.clone();
        let at = self.clock_ms;
        self.emit(json!({ "type": "input_audio_buffer.speech_stopped", "audio_end_ms": at, "item_id": item }));
        self.emit(json!({ "type": "input_audio_buffer.committed", "item_id": item }));
        self.emit(json!({ "type": "conversation.item.added", "item": { "id": item, "object": "realtime.item", "type": "message", "status": "completed", "role": "user", "content": [{ "type": "input_audio", "transcript": null }] } }));
        if create_response {
            self.start_response();
        }
        let said =
            self.options.caller_says.get(self.caller_turns).or(self.options.caller_says.last()).cloned().unwrap_or_else(|| "…".into());
        self.caller_turns += 1;
        if self.config["audio"]["input"]["transcription"].is_object() {
            let seconds = ((at - self.speech_from_ms) as f64 / 1000.0).max(0.1);
            self.emit(json!({ "type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0, "transcript": said, "usage": { "type": "duration", "seconds": seconds } }));
        }
    }

    /// A response outside the conversation: it says what its instructions quote (after their
    /// last ": "), in the filler clip or as a tone of about 80 ms a character, and calls no tool.
    fn start_out_of_band(&mut self, response: &Value) {
        if response["input"] != json!([]) {
            self.violation(format!("an out-of-band response without `input: []` would see the whole conversation: {response}"));
        }
        let instructions = response["instructions"].as_str().unwrap_or_default();
        let text = instructions.rsplit_once(": ").map(|(_, t)| t).unwrap_or(instructions).to_string();
        let (id, item) = (self.id("resp"), self.id("item"));
        let metadata = response["metadata"].clone();
        self.emit(json!({ "type": "response.created", "response": { "object": "realtime.response", "id": id, "status": "in_progress", "conversation_id": null, "metadata": metadata, "output": [] } }));
        self.emit(json!({ "type": "response.output_item.added", "response_id": id, "output_index": 0, "item": { "id": item, "type": "message", "role": "assistant", "status": "in_progress", "content": [] } }));
        let clip = self.options.filler.clone();
        let ms = clip.as_ref().map_or((text.chars().count() as u64 * 80).clamp(400, 3000), |c| c.len() as u64 / 8);
        self.side = Some(Running { id, item, left_ms: ms, clip, sent_ms: 0, text, next_delta: Instant::now() });
    }

    fn start_response(&mut self) {
        if self.running.is_some() {
            self.error("conversation_already_has_active_response", "Conversation already has an active response in progress.");
            return;
        }
        let id = self.id("resp");
        let plan = self.script.pop_front().unwrap_or_else(|| self.options.default_answer.clone());
        self.emit(json!({ "type": "response.created", "response": { "object": "realtime.response", "id": id, "status": "in_progress", "output": [] } }));
        self.emit(json!({ "type": "rate_limits.updated", "rate_limits": [{ "name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.2 }] }));
        match plan {
            Plan::Say { text, .. } if self.options.text_after_replayed_assistant && !self.replayed_assistant.is_empty() => {
                let item = self.id("item");
                self.emit(json!({ "type": "response.output_item.added", "response_id": id, "output_index": 0, "item": { "id": item, "type": "message", "role": "assistant", "status": "in_progress", "content": [] } }));
                self.emit(json!({ "type": "response.output_text.delta", "response_id": id, "item_id": item, "output_index": 0, "content_index": 0, "delta": text }));
                self.emit(json!({ "type": "response.output_text.done", "response_id": id, "item_id": item, "output_index": 0, "content_index": 0, "text": text }));
                self.finish_response(&id, "completed", None);
            }
            Plan::Say { ms, text, clip } => {
                let item = self.id("item");
                self.emit(json!({ "type": "response.output_item.added", "response_id": id, "output_index": 0, "item": { "id": item, "type": "message", "role": "assistant", "status": "in_progress", "content": [] } }));
                self.item_audio.insert(item.clone(), 0);
                self.running = Some(Running { id, item, left_ms: ms, clip, sent_ms: 0, text, next_delta: Instant::now() });
            }
            Plan::Call { name, arguments } => {
                let (item, call_id) = (self.id("item"), self.id("call"));
                let arguments = arguments.to_string();
                self.emit(json!({ "type": "response.output_item.added", "response_id": id, "output_index": 0, "item": { "id": item, "type": "function_call", "call_id": call_id, "name": name, "arguments": "", "status": "in_progress" } }));
                self.emit(json!({ "type": "response.function_call_arguments.done", "response_id": id, "item_id": item, "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments }));
                self.log.lock().expect("not poisoned").function_called_at.insert(call_id.clone(), Instant::now());
                self.emit(json!({ "type": "response.output_item.done", "response_id": id, "output_index": 0, "item": { "id": item, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": "completed" } }));
                self.awaiting_output = Some(call_id);
                self.finish_response(&id, "completed", None);
            }
        }
    }

    fn finish_response(&mut self, id: &str, status: &str, reason: Option<&str>) {
        let details = reason.map(|r| json!({ "type": status, "reason": r }));
        self.emit(json!({ "type": "response.done", "response": { "object": "realtime.response", "id": id, "status": status, "status_details": details, "output": [], "usage": { "input_tokens": 10, "output_tokens": 20 } } }));
        self.responses_done += 1;
        self.fault_at = match self.options.fault {
            Fault::DropAfter(after) | Fault::FatalAfter(after) | Fault::DownAfter(after) if self.responses_done == 1 => {
                Some(Instant::now() + after)
            }
            Fault::DropAfterResponses(n) if self.responses_done == n => Some(Instant::now()),
            _ => self.fault_at,
        };
    }

    /// Sends what is due; `true` when the socket is to be dropped.
    fn tick(&mut self) -> bool {
        let now = Instant::now();
        if self.fault_at.is_some_and(|at| at <= now) {
            self.fault_at = None;
            self.log.lock().expect("not poisoned").faulted_at = Some(now);
            match self.options.fault {
                Fault::DropAfter(_) | Fault::DropAfterResponses(_) | Fault::DownAfter(_) => return true,
                Fault::FatalAfter(_) => {
                    self.error("session_expired", "Your session hit the maximum duration of 60 minutes.");
                    self.closing = true;
                }
                _ => {}
            }
        }
        if let Some(side) = self.side.take() {
            self.side = self.advance(side, now);
        }
        if let Some(r) = self.running.take() {
            self.running = self.advance(r, now);
        }
        false
    }

    /// Sends a response's next delta if it is due; the response, unless it is done.
    fn advance(&mut self, mut r: Running, now: Instant) -> Option<Running> {
        if r.next_delta > now {
            return Some(r);
        }
        let ms = r.left_ms.min(DELTA_MS);
        let audio = match &r.clip {
            Some(clip) => clip.slice((r.sent_ms as usize * 8).min(clip.len())..((r.sent_ms + ms) as usize * 8).min(clip.len())).to_vec(),
            None => tone(r.sent_ms, ms),
        };
        r.left_ms -= ms;
        r.sent_ms += ms;
        self.item_audio.insert(r.item.clone(), r.sent_ms);
        self.log.lock().expect("not poisoned").first_delta_at.entry(r.id.clone()).or_insert(now);
        self.emit(json!({ "type": "response.output_audio.delta", "response_id": r.id, "item_id": r.item, "output_index": 0, "content_index": 0, "delta": B64.encode(&audio) }));
        if r.left_ms == 0 {
            self.emit(json!({ "type": "response.output_audio.done", "response_id": r.id, "item_id": r.item, "output_index": 0, "content_index": 0 }));
            self.emit(json!({ "type": "response.output_audio_transcript.done", "response_id": r.id, "item_id": r.item, "output_index": 0, "content_index": 0, "transcript": r.text }));
            self.finish_response(&r.id, "completed", None);
            None
        } else {
            r.next_delta += Duration::from_secs_f64(ms as f64 / 1000.0 / self.options.speed.max(0.01));
            Some(r)
        }
    }
}

/// A 440 Hz tone as μ-law, continuing from `from_ms`: the agent's "voice", loud enough to be
/// told from silence.
pub fn tone(from_ms: u64, ms: u64) -> Vec<u8> {
    let start = from_ms * 8;
    (start..start + ms * 8)
        .map(|i| mulaw::encode((6000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin()) as i16))
        .collect()
}

/// Deep-merges `update` into `config`: what `session.update` does. An audio format is replaced
/// whole (`audio/pcmu` has no `rate`: the SDK's type for it has only `type`).
fn merge(config: &mut Value, update: &Value) {
    match (config, update) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                let slot = into.entry(k.clone()).or_insert(Value::Null);
                if k == "format" {
                    *slot = v.clone();
                } else {
                    merge(slot, v);
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}
