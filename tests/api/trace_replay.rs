//! A call's trace as a regression test: the server side of `tests/fixtures/traces/` (Twilio's
//! Media Streams frames and OpenAI's Realtime events, in order and with their timing) is played
//! against the relay, and the relay must answer as it did when the trace was taken: the same
//! Realtime events in the same order, a caller frame to the model for each frame from Twilio,
//! the same agent audio frames, marks and clears to Twilio, and `incoming_call`'s TwiML of the
//! same shape. A real call's trace (`callkeeper calls trace CA… > tests/fixtures/traces/x.jsonl`)
//! becomes a test by adding its name to [`TRACES`].

use crate::common::*;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The traces replayed. `simulated-call`: `CALL_TRACES=on callkeeper simulate --offline` (a
/// greeting, one caller turn and its answer), whose Realtime events are the fake server's,
/// read by the `openai` package's GA types in this suite, and whose Twilio frames are those of
/// `shared/twilio-protocol.md`.
const TRACES: [&str; 1] = ["simulated-call"];

#[derive(Debug, Clone)]
struct Line {
    at: i64,
    peer: String,
    dir: String,
    event: Value,
}

impl Line {
    fn kind(&self) -> &str {
        self.event["type"].as_str().or(self.event["event"].as_str()).or(self.event["route"].as_str()).unwrap_or("?")
    }
}

fn load(name: &str) -> Vec<Line> {
    let path = format!("{}/tests/fixtures/traces/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(parse).collect()
}

fn parse(line: &str) -> Line {
    let v: Value = serde_json::from_str(line).unwrap();
    Line {
        at: v["at"].as_i64().unwrap(),
        peer: v["peer"].as_str().unwrap().into(),
        dir: v["dir"].as_str().unwrap().into(),
        event: v["event"].clone(),
    }
}

/// The base64 of `n` bytes of μ-law silence: audio a trace kept as its length.
fn audio(n: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![0xFFu8; n as usize])
}

/// `event` as it is sent again: audio regenerated from its length.
fn materialize(event: &Value) -> Value {
    let mut event = event.clone();
    if let Some(object) = event.as_object_mut() {
        for field in ["delta", "audio"] {
            if let Some(n) = object.remove(&format!("{field}_bytes")).and_then(|n| n.as_u64()) {
                object.insert(field.into(), json!(audio(n)));
            }
        }
    }
    event
}

/// What the relay answered, by peer: the Realtime events it sent but the audio appends (in
/// order), how many appends, and how many media frames, marks and clears it sent to Twilio.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    to_model: Vec<String>,
    appends: usize,
    to_twilio: BTreeMap<String, usize>,
}

fn answers(lines: &[Line]) -> Answers {
    let mut answers = Answers { to_model: Vec::new(), appends: 0, to_twilio: BTreeMap::new() };
    for line in lines.iter().filter(|l| l.dir == "out") {
        match (line.peer.as_str(), line.kind()) {
            ("openai", "input_audio_buffer.append") => answers.appends += 1,
            ("openai", kind) => answers.to_model.push(kind.to_string()),
            ("twilio", kind) => *answers.to_twilio.entry(kind.to_string()).or_default() += 1,
            _ => {}
        }
    }
    answers
}

/// A TwiML document's shape: its elements, nested.
fn shape(el: &El) -> String {
    format!("{}({})", el.name, el.children.iter().map(shape).collect::<Vec<_>>().join(","))
}

/// A Realtime server that plays the trace's OpenAI events: each when the relay has sent as many
/// events (appends aside) as preceded it in the trace, and no earlier than its time in it.
async fn replay_model(lines: Vec<Line>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
    let openai: Vec<Line> = lines.into_iter().filter(|l| l.peer == "openai").collect();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (mut sink, mut stream) = socket.split();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if event["type"] != "input_audio_buffer.append" {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        let started = Instant::now();
        let first_at = openai[0].at;
        let mut outs_before = 0;
        for line in &openai {
            if line.dir == "out" {
                if line.kind() != "input_audio_buffer.append" {
                    outs_before += 1;
                }
                continue;
            }
            while received.load(Ordering::SeqCst) < outs_before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep_until(started + Duration::from_millis((line.at - first_at) as u64)).await;
            if sink.send(Message::text(materialize(&line.event).to_string())).await.is_err() {
                return;
            }
        }
        // The model stays until the relay hangs up.
        std::future::pending::<()>().await;
    });
    url
}

async fn replay(name: &str) {
    let recorded = load(name);
    let model = replay_model(recorded.clone()).await;
    let app = spawn_app_with(&[("CALL_TRACES", "on"), ("OPENAI_API_KEY", "sk-replay"), ("OPENAI_REALTIME_URL", &model)]).await;

    // Twilio's side: the call answered, then its frames as they came.
    let sid = new_call_sid();
    let answered = app.post("/webhook/incoming_call", &incoming_call_form(&sid, "+972501234567")).await;
    let twiml = twiml_of(answered).await;
    let stream = twiml.find("Stream").unwrap();
    let parameters: serde_json::Map<String, Value> =
        stream.children.iter().map(|p| (p.attr("name").unwrap().to_string(), json!(p.attr("value").unwrap()))).collect();
    let recorded_answer = recorded.iter().find(|l| l.kind() == "/webhook/incoming_call").expect("the trace has the call's answer");
    let recorded_twiml = parse_twiml(recorded_answer.event["answer"].as_str().unwrap());
    assert_eq!(shape(&twiml), shape(&recorded_twiml), "incoming_call's TwiML changed shape");

    let mut call = app.dial().await.unwrap();
    let twilio: Vec<&Line> = recorded.iter().filter(|l| l.peer == "twilio" && l.dir == "in").collect();
    let (started, first_at) = (Instant::now(), twilio[0].at);
    let mut media_sent = 0;
    for line in &twilio {
        tokio::time::sleep_until(started + Duration::from_millis((line.at - first_at) as u64)).await;
        let mut event = line.event.clone();
        match line.kind() {
            // The phone echoes the relay's own marks as their audio plays.
            "mark" => continue,
            "start" => {
                event["start"]["callSid"] = json!(sid);
                event["start"]["accountSid"] = json!(ACCOUNT_SID);
                event["start"]["streamSid"] = json!(call.stream_sid);
                event["start"]["customParameters"] = Value::Object(parameters.clone());
            }
            "media" => {
                let n = event["media"]["payload_bytes"].as_u64().expect("media kept as its length");
                event["media"] = json!({ "track": event["media"]["track"], "chunk": event["media"]["chunk"], "timestamp": event["media"]["timestamp"], "payload": audio(n) });
                media_sent += 1;
            }
            _ => {}
        }
        if event.get("streamSid").is_some() {
            event["streamSid"] = json!(call.stream_sid);
        }
        if event["stop"].is_object() {
            event["stop"]["callSid"] = json!(sid);
        }
        call.send_text(event.to_string());
    }
    let call_sid = callkeeper_core::ids::CallSid::parse(&sid).unwrap();
    app.figures(&call_sid).await;
    assert!(call.closed(Duration::from_secs(5)).await.is_some(), "the relay closed the stream");

    // The relay's answers this time, from the trace it kept, against the recorded ones.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = app.stores.calls.trace(&call_sid).await.unwrap();
        if lines.iter().any(|l| l.contains("\"peer\":\"openai\""))
            && answers(&lines.iter().map(|l| parse(l)).collect::<Vec<_>>()).appends >= media_sent
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = answers(&lines.iter().map(|l| parse(l)).collect::<Vec<_>>());
    let then = answers(&recorded);
    assert_eq!(now.to_model, then.to_model, "the Realtime events the relay sent");
    assert_eq!(now.appends, media_sent, "a caller frame to the model for each frame from Twilio");
    assert_eq!(then.appends, media_sent, "the trace's own frames and appends agree");
    assert_eq!(now.to_twilio, then.to_twilio, "the media, marks and clears the relay sent Twilio");
    // The new trace is whole: the webhook's line, Twilio's frames either way, the model's events.
    for (peer, dir) in [("webhook", "in"), ("twilio", "in"), ("twilio", "out"), ("openai", "in"), ("openai", "out")] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("\"peer\":\"{peer}\"")) && l.contains(&format!("\"dir\":\"{dir}\""))),
            "no {peer} {dir} line"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("+972501234567")), "a phone number in a redacted trace");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "replayed {name}: {} lines recorded, {} kept now; to Twilio {:?}; to the model {:?} and {} appends\n",
            recorded.len(),
            lines.len(),
            now.to_twilio,
            now.to_model,
            now.appends
        )
        .as_bytes(),
    );
}

/// Only Twilio's signed posts go in a trace, each once, without the stream's token or the
/// caller's number; an unsigned flood writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_webhooks_are_traced_and_without_secrets() {
    let app = spawn_app_with(&[("CALL_TRACES", "on")]).await;
    let sid = new_call_sid();
    let form = incoming_call_form(&sid, "+972501234567");
    for _ in 0..20 {
        assert_eq!(app.post_signed("/webhook/incoming_call", &form, Some("forged")).await.status(), 403);
    }
    let call_sid = callkeeper_core::ids::CallSid::parse(&sid).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.stores.calls.trace(&call_sid).await.unwrap().is_empty(), "a refused post was traced");

    let answered = app.post("/webhook/incoming_call", &form).await;
    let token = twiml_of(answered)
        .await
        .find("Stream")
        .unwrap()
        .children
        .iter()
        .find(|p| p.attr("name") == Some("token"))
        .unwrap()
        .attr("value")
        .unwrap()
        .to_string();
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = app.stores.calls.trace(&call_sid).await.unwrap();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = parse(&lines[0]);
    assert_eq!((line.peer.as_str(), line.kind(), line.event["status"].as_u64()), ("webhook", "/webhook/incoming_call", Some(200)));
    assert_eq!(line.event["form"]["From"], "+97••••••••67");
    assert!(!lines[0].contains(&token) && lines[0].contains(r#"value=\"[secret]\""#), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_replayed_is_answered_as_it_was() {
    for name in TRACES {
        replay(name).await;
    }
}
