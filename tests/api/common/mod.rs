//! The test harness: the real router on a random loopback port over fresh embedded storage, and
//! a client that signs its posts as Twilio does.

#![allow(dead_code)]

use callkeeper::media_client::{Dial, MediaCall};
use callkeeper_core::config::Config;
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::store::{embedded, Stores};
use callkeeper_core::stream_report::StreamFigures;
use callkeeper_relay::agent::VoiceAgent;
use callkeeper_relay::Relay;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    pub stores: Stores,
    pub relay: Relay,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// Sends the server its SIGTERM: it drains, then stops.
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<()>,
}

/// Starts the app with the base settings plus `extra` (`FALLBACK_MODE`, …).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_with_agent(extra, None).await
}

/// Starts the app; with `agent`, the relay talks to it instead of the configured one.
pub async fn spawn_app_with_agent(extra: &[(&str, &str)], agent: Option<Arc<dyn VoiceAgent>>) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings: HashMap<String, String> = HashMap::from([
        // The public URL Twilio signs is not the one we listen on, as behind API Gateway.
        ("PUBLIC_BASE_URL".into(), "https://ck.example.com".into()),
        ("RELAY_PUBLIC_URL".into(), "wss://relay.example.com".into()),
        ("TWILIO_ACCOUNT_SID".into(), ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
    ]);
    for (k, v) in extra {
        settings.insert(k.to_string(), v.to_string());
    }
    let config = Arc::new(Config::from_lookup(|k| settings.get(k).cloned()).unwrap());
    let data_dir = tempfile::tempdir().unwrap();
    // As `serve` opens them: raising business events when EVENTS_WEBHOOK_URL is set.
    let stores = callkeeper_core::business_events::notifying(
        embedded::open_stores(data_dir.path(), config.queue_max_receives).unwrap(),
        config.events.is_some(),
    );
    let mut relay = Relay::new(config.clone(), stores.calls.clone());
    if let Some(agent) = agent {
        relay.agent = agent;
    }
    // Tests that want a watchdog start their own, against their fake Twilio.
    let app = callkeeper::server::app_with(config.clone(), stores.clone(), relay.clone(), None);
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        callkeeper::server::serve(listener, app, async move {
            let _ = stop.await;
        })
        .await
        .unwrap()
    });
    TestApp { addr, config, stores, relay, client: reqwest::Client::new(), data_dir, shutdown: Some(shutdown), server }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

impl TestApp {
    /// Posts a form signed for the public URL of `path`, as Twilio would.
    pub async fn post(&self, path: &str, form: &[(String, String)]) -> reqwest::Response {
        post_signed_to(&self.client, self.addr, path, form).await
    }

    pub async fn post_signed(&self, path: &str, form: &[(String, String)], signature: Option<&str>) -> reqwest::Response {
        post_form(&self.client, self.addr, path, form, signature).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("http://{}{path}", self.addr)).send().await.unwrap()
    }
}

/// The fields Twilio posts to the voice URL when a call comes in.
/// Posts `form` to `addr`, signed as Twilio would for the public URL of `path`: to a server of
/// the test's own beside the app's.
pub async fn post_signed_to(client: &reqwest::Client, addr: SocketAddr, path: &str, form: &[(String, String)]) -> reqwest::Response {
    let signature = compute(AUTH_TOKEN.as_bytes(), Algorithm::HmacSha1, &format!("https://ck.example.com{path}"), form);
    post_form(client, addr, path, form, Some(&signature)).await
}

async fn post_form(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    form: &[(String, String)],
    signature: Option<&str>,
) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut request = client.post(format!("http://{addr}{path}")).header("content-type", "application/x-www-form-urlencoded").body(body);
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    request.send().await.unwrap()
}

pub fn incoming_call_form(call_sid: &str, from: &str) -> Vec<(String, String)> {
    params(&[
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", "+97231234567"),
        ("Caller", from),
        ("Direction", "inbound"),
        ("From", from),
        ("FromCountry", "IL"),
        ("To", "+97231234567"),
        ("ToCountry", "IL"),
    ])
}

/// What Twilio posts to `<Connect action>` (`stream_ended`) for a call still in progress, with
/// `extra` fields added or replacing (`CallStatus`, `RecordingSid`, `DialCallStatus`, …).
pub fn ended_form(call_sid: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", call_sid),
        ("From", "+972501234567"),
        ("To", "+97231234567"),
        ("CallStatus", "in-progress"),
    ]);
    form.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    form.extend(params(extra));
    form
}

/// The public URL of the media stream, as the TwiML gives it to Twilio.
pub const STREAM_URL: &str = "wss://relay.example.com/ws/twilio-media";

impl TestApp {
    /// Answers a call through `incoming_call`; returns the `<Stream>`'s parameters.
    pub async fn answer(&self, call_sid: &str) -> Vec<(String, String)> {
        let twiml = twiml_of(self.post("/webhook/incoming_call", &incoming_call_form(call_sid, "+972501234567")).await).await;
        let stream = twiml.find("Stream").expect("the TwiML connects a stream");
        assert_eq!(stream.attr("url"), Some(STREAM_URL));
        stream.children.iter().map(|p| (p.attr("name").unwrap().to_string(), p.attr("value").unwrap().to_string())).collect()
    }

    /// Opens the media WebSocket as Twilio does: signed, offering the subprotocol.
    pub async fn dial(&self) -> anyhow::Result<MediaCall> {
        self.dial_with(Some(AUTH_TOKEN), true).await
    }

    pub async fn dial_with(&self, token: Option<&str>, offer_subprotocol: bool) -> anyhow::Result<MediaCall> {
        let dial = Dial {
            connect_to: self.addr,
            public_url: STREAM_URL,
            path: "/ws/twilio-media",
            auth_token: token,
            offer_subprotocol,
            tls: false,
        };
        MediaCall::dial(&dial, &random_sid("MZ")).await
    }

    /// A call answered, its stream opened and started: what Twilio does in the first second.
    pub async fn start_call(&self) -> (CallSid, MediaCall) {
        let sid = new_call_sid();
        let parameters = self.answer(&sid).await;
        let call = self.dial().await.unwrap();
        call.connected();
        call.start(&sid, ACCOUNT_SID, &parameters);
        (CallSid::parse(&sid).unwrap(), call)
    }

    /// Waits up to `within` for an event of `kind` on the call.
    pub async fn event(&self, sid: &CallSid, kind: &str, within: std::time::Duration) -> Option<callkeeper_core::call::CallEvent> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.stores.calls.events(sid).await.unwrap().into_iter().find(|e| e.kind == kind) {
                return Some(event);
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits for the relay to record the stream's end.
    pub async fn figures(&self, sid: &CallSid) -> StreamFigures {
        for _ in 0..500 {
            if let Some(figures) = self.stores.calls.get_call(sid).await.unwrap().and_then(|c| c.stream) {
                return *figures;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no stream figures for {sid}");
    }
}

pub fn new_call_sid() -> String {
    random_sid("CA")
}

pub use callkeeper_core::twiml_reader::{parse_twiml, El};

/// Checks a TwiML answer's headers and returns its parsed `<Response>`.
pub async fn twiml_of(response: reqwest::Response) -> El {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = response.text().await.unwrap();
    assert_eq!(length, body.len());
    parse_twiml(&body)
}

/// Polls `check` every 20 ms until it holds; fails the test with `what` after `within`.
pub async fn wait_for(what: &str, within: std::time::Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// Whether `channel` (PCM) holds `clip` (μ-law) as it was recorded: the clip's first 0.5 s of
/// sound, sample for sample and in order, somewhere in the channel. What a saved or recorded call
/// must hold of each side's speech (a tone or silence in its place would not match). Silence is
/// set aside on both sides: a stall on a busy machine empties the phone's buffer mid-sentence, and
/// the caller then hears the same words with a gap in them, which is not a different sound.
pub fn holds_clip(channel: &[i16], clip: &[u8]) -> bool {
    fn sound(samples: impl Iterator<Item = i16>) -> Vec<i16> {
        samples.filter(|s| *s != 0).collect()
    }
    let decoded = sound(clip.iter().map(|&c| callkeeper_core::mulaw::decode(c)));
    let Some(first) = decoded.iter().position(|s| s.abs() > 200) else { return false };
    let needle = &decoded[first..(first + 4000).min(decoded.len())];
    sound(channel.iter().copied()).windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_clip_heard_with_a_gap_is_still_the_clip_and_a_tone_is_not() {
    let clip = include_bytes!("../../../relay/assets/caller/he.ulaw");
    let pcm: Vec<i16> = clip.iter().map(|&c| callkeeper_core::mulaw::decode(c)).collect();
    let first = pcm.iter().position(|s| s.abs() > 200).unwrap();
    // The clip as a phone played it through a 60 ms stall, a second into the line.
    let mut stalled = vec![0i16; 8000];
    stalled.extend_from_slice(&pcm[..first + 1200]);
    stalled.extend(std::iter::repeat_n(0, 480));
    stalled.extend_from_slice(&pcm[first + 1200..]);
    assert!(holds_clip(&stalled, clip));
    // One sample changed, or a tone, is not it.
    let mut altered = stalled.clone();
    altered[8000 + first + 2000] ^= 0x100;
    assert!(!holds_clip(&altered, clip));
    let tone: Vec<i16> = (0..40_000).map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16).collect();
    assert!(!holds_clip(&tone, clip));
}
