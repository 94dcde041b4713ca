//! Twilio's side of a media stream, over a real WebSocket: signs the upgrade, sends `connected`,
//! `start`, `media`, `dtmf` and `stop` as Twilio does, and plays what it receives like a phone:
//! agent audio is "played" in real time, each `mark` is echoed when the audio before it has
//! played, and `clear` drops what has not played (echoing its marks at once, as Twilio does).
//!
//! The simulator (`callkeeper simulate`), the tests and the benchmarks all use it.

use base64::Engine;
use callkeeper_core::signature::{compute, Algorithm};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const FRAME: Duration = Duration::from_millis(20);
/// Agent audio arriving this close together is one utterance.
pub const UTTERANCE_GAP: Duration = Duration::from_millis(600);
const FRAME_BYTES: usize = 160;
/// Audio resuming this soon after a span ends continues the span.
const SPAN_GAP: Duration = Duration::from_millis(40);

/// How a stream is opened.
pub struct Dial<'a> {
    /// Where to connect (the relay's socket address).
    pub connect_to: SocketAddr,
    /// The URL Twilio was given (the `<Stream url>`), which the signature covers.
    pub public_url: &'a str,
    /// Request path on `connect_to`, e.g. `/ws/twilio-media`.
    pub path: &'a str,
    /// The auth token to sign with; `None` sends no signature.
    pub auth_token: Option<&'a str>,
    pub offer_subprotocol: bool,
    /// TLS to the relay by its public name (a deployed `wss://` relay); otherwise plain to
    /// `connect_to`, whatever the public URL says (a relay behind a TLS-terminating proxy).
    pub tls: bool,
}

/// The upgrade was refused with this HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("upgrade refused: HTTP {status}")]
pub struct Refused {
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// What the phone heard.
#[derive(Debug, Default, Clone)]
pub struct Heard {
    /// μ-law audio that played, in order (cleared audio removed).
    pub audio: Vec<u8>,
    pub media_frames: u64,
    pub marks_echoed: Vec<String>,
    pub clears: u64,
    /// At each `clear`, how much audio had played (bytes of `audio`), and when it came.
    pub played_at_clear: Vec<usize>,
    pub cleared_at: Vec<Instant>,
    /// When the first and the latest agent frame arrived.
    pub first_media_at: Option<Instant>,
    pub last_media_at: Option<Instant>,
    /// When each utterance of the agent began to arrive.
    pub utterances: Vec<Instant>,
    /// Frames that could not be read (there should be none).
    pub bad_frames: u64,
    /// When the agent's audio played, span by span (what a caller heard and when).
    pub spans: Vec<Span>,
}

/// A stretch of agent audio played without a break: `audio[audio_from..]` up to its length.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
    pub audio_from: usize,
}

pub struct MediaCall {
    out: mpsc::UnboundedSender<Message>,
    heard: Arc<Mutex<Heard>>,
    closed: watch::Receiver<Option<Closed>>,
    pub subprotocol: Option<String>,
    pub stream_sid: String,
    chunk: u64,
    started: Instant,
    /// How much faster than real time the caller's frames go (1.0: as Twilio sends them).
    pace: f64,
}

impl MediaCall {
    /// Opens the WebSocket. `Err(Refused)` when the relay answers the upgrade with an HTTP error.
    pub async fn dial(dial: &Dial<'_>, stream_sid: &str) -> anyhow::Result<MediaCall> {
        // A deployed relay is asked by its name over TLS; a local one on its address.
        let tls = dial.tls;
        let url = if tls { dial.public_url.to_string() } else { format!("ws://{}{}", dial.connect_to, dial.path) };
        let mut request = url.into_client_request()?;
        if let Some(token) = dial.auth_token {
            let signature = compute(token.as_bytes(), Algorithm::HmacSha1, dial.public_url, &[]);
            request.headers_mut().insert("x-twilio-signature", HeaderValue::from_str(&signature)?);
        }
        if dial.offer_subprotocol {
            request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("audio.twilio.com"));
        }
        let tcp = TcpStream::connect(dial.connect_to).await?;
        tcp.set_nodelay(true)?;
        let connector = tls.then(callkeeper_relay::tls::connector);
        let (socket, response) = match tokio_tungstenite::client_async_tls_with_config(request, tcp, None, connector).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(Refused { status: response.status().as_u16() }.into());
            }
            Err(e) => return Err(e.into()),
        };
        let subprotocol = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (closed_tx, closed) = watch::channel(None);
        let phone =
            Phone { out: out.clone(), heard: heard.clone(), play_head: Instant::now(), unplayed: VecDeque::new(), marks: VecDeque::new() };
        tokio::spawn(async move {
            let closed = phone.listen(&mut stream).await;
            let _ = closed_tx.send(Some(closed));
        });
        Ok(MediaCall { out, heard, closed, subprotocol, stream_sid: stream_sid.to_string(), chunk: 0, started: Instant::now(), pace: 1.0 })
    }

    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.out.send(Message::text(text.into()));
    }

    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.out.send(Message::binary(bytes));
    }

    pub fn connected(&self) {
        self.send_text(json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" }).to_string());
    }

    /// `start`, with the `<Parameter>`s of the TwiML.
    pub fn start(&self, call_sid: &str, account_sid: &str, parameters: &[(String, String)]) {
        let custom: serde_json::Map<String, Value> = parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        self.send_text(
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom,
                    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }
                },
                "streamSid": self.stream_sid
            })
            .to_string(),
        );
    }

    /// One 20 ms frame of the caller.
    pub fn media(&mut self, mulaw: &[u8]) {
        self.chunk += 1;
        let frame = media_frame(&self.stream_sid, self.chunk, self.chunk * 20, mulaw);
        self.send_text(frame);
    }

    /// Caller frames sent so far (chunk numbers skipped included).
    pub fn frames_sent(&self) -> u64 {
        self.chunk
    }

    /// Skips chunk numbers, as frames lost on the way would.
    pub fn lose_frames(&mut self, n: u64) {
        self.chunk += n;
    }

    /// Sends the caller's frames `pace` times faster than real time (load and quick runs).
    pub fn set_pace(&mut self, pace: f64) {
        self.pace = pace.max(0.01);
    }

    /// Plays `audio` as the caller, one frame every 20 ms (at pace 1) from the stream's clock.
    pub async fn speak(&mut self, audio: &[u8]) {
        for frame in audio.chunks(FRAME_BYTES) {
            let mut padded = frame.to_vec();
            padded.resize(FRAME_BYTES, 0xFF);
            tokio::time::sleep_until(self.started + FRAME.mul_f64(self.chunk as f64 / self.pace)).await;
            self.media(&padded);
        }
    }

    /// The stream's clock restarts now: after a pause in sending (media that stopped), frames go
    /// on at their pace from here rather than in a burst to catch up.
    pub fn resume_clock(&mut self) {
        self.started = Instant::now() - FRAME.mul_f64(self.chunk as f64 / self.pace);
    }

    /// `duration` of the caller saying nothing.
    pub async fn silence(&mut self, duration: Duration) {
        let frames = (duration.as_millis() / FRAME.as_millis()) as usize;
        self.speak(&vec![0xFF; frames * FRAME_BYTES]).await;
    }

    pub fn dtmf(&self, digit: &str) {
        self.send_text(
            json!({ "event": "dtmf", "streamSid": self.stream_sid, "dtmf": { "track": "inbound_track", "digit": digit } }).to_string(),
        );
    }

    pub fn stop(&self) {
        self.send_text(json!({ "event": "stop", "streamSid": self.stream_sid, "stop": { "accountSid": "", "callSid": "" } }).to_string());
    }

    /// Closes the socket from Twilio's side.
    pub fn hang_up(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    pub fn heard(&self) -> Heard {
        self.heard.lock().expect("not poisoned").clone()
    }

    /// Waits up to `timeout` for the relay to close the socket.
    pub async fn closed(&mut self, timeout: Duration) -> Option<Closed> {
        let result = tokio::time::timeout(timeout, self.closed.wait_for(Option::is_some)).await;
        result.ok().and_then(|r| r.ok()).and_then(|c| c.clone())
    }

    /// Waits up to `timeout` for the relay to close the socket while the caller says nothing, as
    /// Twilio's line carries silence: a relay ends a stream that sends no frames at all.
    pub async fn closed_while_silent(&mut self, timeout: Duration) -> Option<Closed> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(closed) = self.closed(Duration::ZERO).await {
                return Some(closed);
            }
            self.silence(Duration::from_millis(100)).await;
        }
        self.closed(Duration::ZERO).await
    }

    /// Waits until `check` holds on what was heard, or `timeout`.
    pub async fn wait_heard(&self, timeout: Duration, check: impl Fn(&Heard) -> bool) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if check(&self.heard()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check(&self.heard())
    }
}

/// A caller's media frame as Twilio writes it: `chunk` and `timestamp` as strings.
pub fn media_frame(stream_sid: &str, chunk: u64, timestamp_ms: u64, mulaw: &[u8]) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
    json!({
        "event": "media",
        "sequenceNumber": (chunk + 1).to_string(),
        "media": { "track": "inbound", "chunk": chunk.to_string(), "timestamp": timestamp_ms.to_string(), "payload": payload },
        "streamSid": stream_sid
    })
    .to_string()
}

/// The playing end: a real-time play head over received audio.
struct Phone {
    out: mpsc::UnboundedSender<Message>,
    heard: Arc<Mutex<Heard>>,
    /// When everything received so far will have played.
    play_head: Instant,
    /// Frames received and not yet played: (when they finish playing, bytes).
    unplayed: VecDeque<(Instant, usize)>,
    /// Marks waiting for the audio before them to play.
    marks: VecDeque<(Instant, String)>,
}

impl Phone {
    fn echo_mark(&self, name: &str) {
        let _ = self.out.send(Message::text(json!({ "event": "mark", "streamSid": "", "mark": { "name": name } }).to_string()));
        self.heard.lock().expect("not poisoned").marks_echoed.push(name.to_string());
    }

    async fn listen<S>(mut self, stream: &mut S) -> Closed
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        loop {
            let next_mark = self.marks.front().map(|(due, _)| *due);
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.receive(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(CloseFrame { code, reason }) => Closed { code: code.into(), reason: reason.to_string() },
                            None => Closed { code: 1005, reason: String::new() },
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Closed { code: 1006, reason: e.to_string() },
                    None => return Closed { code: 1006, reason: "socket ended without a close frame".into() },
                },
                _ = tokio::time::sleep_until(next_mark.unwrap_or_else(Instant::now)), if next_mark.is_some() => {
                    let now = Instant::now();
                    while let Some((due, name)) = self.marks.front() {
                        if *due > now {
                            break;
                        }
                        let name = name.clone();
                        self.marks.pop_front();
                        self.echo_mark(&name);
                    }
                }
            }
        }
    }

    fn receive(&mut self, text: &str) {
        let now = Instant::now();
        // Audio played by now is heard; forget its bookkeeping.
        while self.unplayed.front().is_some_and(|(done, _)| *done <= now) {
            self.unplayed.pop_front();
        }
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            self.heard.lock().expect("not poisoned").bad_frames += 1;
            return;
        };
        match value["event"].as_str() {
            Some("media") => {
                let payload = value["media"]["payload"].as_str().and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
                let Some(payload) = payload else {
                    self.heard.lock().expect("not poisoned").bad_frames += 1;
                    return;
                };
                let starts = self.play_head.max(now);
                self.play_head = starts + FRAME;
                self.unplayed.push_back((self.play_head, payload.len()));
                let mut heard = self.heard.lock().expect("not poisoned");
                let from = heard.audio.len();
                match heard.spans.last_mut() {
                    Some(span) if span.end + SPAN_GAP >= starts => span.end = self.play_head,
                    _ => heard.spans.push(Span { start: starts, end: self.play_head, audio_from: from }),
                }
                heard.media_frames += 1;
                heard.audio.extend_from_slice(&payload);
                heard.first_media_at.get_or_insert(now);
                if heard.last_media_at.is_none_or(|last| now.duration_since(last) >= UTTERANCE_GAP) {
                    heard.utterances.push(now);
                }
                heard.last_media_at = Some(now);
            }
            Some("mark") => {
                let name = value["mark"]["name"].as_str().unwrap_or_default().to_string();
                self.marks.push_back((self.play_head.max(now), name));
            }
            Some("clear") => {
                // What has not played is gone, and its marks come back at once.
                let unplayed: usize = self.unplayed.drain(..).map(|(_, len)| len).sum();
                {
                    let mut heard = self.heard.lock().expect("not poisoned");
                    let keep = heard.audio.len().saturating_sub(unplayed);
                    heard.audio.truncate(keep);
                    if let Some(span) = heard.spans.last_mut() {
                        span.end = span.end.min(now);
                    }
                    heard.clears += 1;
                    heard.played_at_clear.push(keep);
                    heard.cleared_at.push(now);
                }
                for (_, name) in std::mem::take(&mut self.marks) {
                    self.echo_mark(&name);
                }
                self.play_head = now;
            }
            _ => self.heard.lock().expect("not poisoned").bad_frames += 1,
        }
    }
}
