//! `callkeeper simulate`: plays Twilio's side of a whole call against a running callkeeper, over
//! loopback, as Twilio would: the signed `incoming_call` post, the TwiML it answers, the signed
//! media WebSocket with the TwiML's parameters, a caller who speaks (shipped Hebrew or English
//! audio) and a phone that plays the agent back in real time, then the hang-up.

use crate::media_client::{Dial, MediaCall, UTTERANCE_GAP};
use callkeeper_core::config::Config;
use callkeeper_core::ids::random_sid;
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::twiml_reader::try_parse_twiml;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

const CALLER_HE: &[u8] = include_bytes!("../relay/assets/caller/he.ulaw");
const CALLER_EN: &[u8] = include_bytes!("../relay/assets/caller/en.ulaw");

/// Longest wait for the agent to speak.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Options {
    /// Where callkeeper listens.
    pub server: SocketAddr,
    pub from: String,
    pub to: String,
    /// Caller turns after the greeting.
    pub turns: u32,
    /// μ-law 8 kHz the caller says each turn.
    pub caller_audio: Vec<u8>,
    /// Write what the caller heard as a WAV file.
    pub save_audio: Option<std::path::PathBuf>,
}

pub fn caller_audio(language: &str) -> &'static [u8] {
    if language.starts_with("he") {
        CALLER_HE
    } else {
        CALLER_EN
    }
}

/// What the simulated caller experienced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub call_sid: String,
    pub subprotocol: Option<String>,
    /// From `start` to the greeting's first frame.
    pub greeting_after_ms: Option<u64>,
    pub greeting_ms: u64,
    /// Per caller turn: from the end of the caller's speech to the first frame of the answer.
    pub answer_after_ms: Vec<Option<u64>>,
    pub agent_audio_ms: u64,
    pub marks_echoed: usize,
    pub close: Option<String>,
}

fn audio_ms(bytes: usize) -> u64 {
    bytes as u64 / 8
}

/// Twilio's form for a call coming in.
fn incoming_form(config: &Config, call_sid: &str, from: &str, to: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", config.twilio_account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", to),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Posts a form to one of callkeeper's webhooks, signed for its public URL.
pub async fn post_webhook(
    client: &reqwest::Client,
    config: &Config,
    server: SocketAddr,
    path: &str,
    form: &[(String, String)],
) -> anyhow::Result<(u16, String)> {
    let signature = compute(config.twilio_auth_token.expose().as_bytes(), Algorithm::HmacSha1, config.webhook_url(path).as_str(), form);
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let response = client
        .post(format!("http://{server}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// Sends silence until the agent has spoken (more than `frames_before` frames heard) and gone
/// quiet. `false` if it did not speak within `AGENT_TIMEOUT`.
async fn listen_to_agent(call: &mut MediaCall, frames_before: u64) -> bool {
    let until = Instant::now() + AGENT_TIMEOUT;
    while Instant::now() < until {
        call.silence(Duration::from_millis(100)).await;
        let heard = call.heard();
        if heard.media_frames > frames_before && heard.last_media_at.is_some_and(|at| at.elapsed() >= UTTERANCE_GAP) {
            return true;
        }
    }
    false
}

/// The stream Twilio is told to open when a call is answered.
pub struct Answered {
    /// The `<Stream url>`, which the upgrade is signed over.
    pub stream_url: String,
    /// Its path, to request on the server's socket.
    pub path: String,
    /// The `<Parameter>`s, for `start`.
    pub parameters: Vec<(String, String)>,
}

/// Rings callkeeper as Twilio does (a signed `incoming_call`) and reads the stream from the TwiML.
pub async fn ring(
    client: &reqwest::Client,
    config: &Config,
    server: SocketAddr,
    call_sid: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<Answered> {
    let form = incoming_form(config, call_sid, from, to);
    let (status, twiml) = post_webhook(client, config, server, "/webhook/incoming_call", &form).await?;
    anyhow::ensure!(status == 200, "incoming_call answered HTTP {status}: {twiml}");
    let response = try_parse_twiml(&twiml).map_err(|e| anyhow::anyhow!("incoming_call's answer is not TwiML ({e}): {twiml}"))?;
    let stream = response.find("Stream").ok_or_else(|| anyhow::anyhow!("the TwiML connects no stream: {twiml}"))?;
    let stream_url = stream.attr("url").ok_or_else(|| anyhow::anyhow!("<Stream> has no url"))?.to_string();
    let parameters = stream
        .children
        .iter()
        .filter(|c| c.name == "Parameter")
        .filter_map(|p| Some((p.attr("name")?.to_string(), p.attr("value")?.to_string())))
        .collect();
    let path = url::Url::parse(&stream_url)?.path().to_string();
    Ok(Answered { stream_url, path, parameters })
}

pub async fn run(config: &Config, options: &Options) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let call_sid = random_sid("CA");
    let Answered { stream_url, path, parameters } = ring(&client, config, options.server, &call_sid, &options.from, &options.to).await?;
    let dial = Dial {
        connect_to: options.server,
        public_url: &stream_url,
        path: &path,
        auth_token: Some(config.twilio_auth_token.expose()),
        offer_subprotocol: true,
    };
    let mut call = MediaCall::dial(&dial, &random_sid("MZ")).await?;
    call.connected();
    let started = Instant::now();
    call.start(&call_sid, config.twilio_account_sid.as_str(), &parameters);

    listen_to_agent(&mut call, 0).await;
    let greeting = call.heard();
    let greeting_after_ms = greeting.first_media_at.map(|at| at.duration_since(started).as_millis() as u64);

    let mut answer_after_ms = Vec::new();
    for _ in 0..options.turns {
        let before = call.heard().media_frames;
        call.speak(&options.caller_audio).await;
        let stopped = Instant::now();
        listen_to_agent(&mut call, before).await;
        // The answer's first frame: the first utterance to begin after the caller stopped.
        let answered = call.heard().utterances.into_iter().find(|at| *at >= stopped);
        answer_after_ms.push(answered.map(|at| at.duration_since(stopped).as_millis() as u64));
    }
    call.stop();
    call.hang_up();
    let close = call.closed(Duration::from_secs(2)).await.map(|c| format!("{} {}", c.code, c.reason));

    // The caller hung up: Twilio tells `<Connect action>` the call is over.
    let mut ended = incoming_form(config, &call_sid, &options.from, &options.to);
    ended.retain(|(k, _)| k != "CallStatus");
    ended.push(("CallStatus".into(), "completed".into()));
    post_webhook(&client, config, options.server, "/webhook/stream_ended", &ended).await?;

    let heard = call.heard();
    if let Some(path) = &options.save_audio {
        std::fs::write(path, wav(&heard.audio))?;
    }
    Ok(Report {
        call_sid,
        subprotocol: call.subprotocol.clone(),
        greeting_after_ms,
        greeting_ms: audio_ms(greeting.audio.len()),
        answer_after_ms,
        agent_audio_ms: audio_ms(heard.audio.len()),
        marks_echoed: heard.marks_echoed.len(),
        close,
    })
}

/// The report as lines for a person.
pub fn describe(r: &Report) -> String {
    let ms = |v: Option<u64>| v.map_or("never".to_string(), |v| format!("{v} ms"));
    let mut out = format!("simulated call {}\n", r.call_sid);
    out += &format!("  subprotocol        {}\n", r.subprotocol.as_deref().unwrap_or("none"));
    out += &format!("  greeting           {} ms of audio, first frame {} after start\n", r.greeting_ms, ms(r.greeting_after_ms));
    for (i, answer) in r.answer_after_ms.iter().enumerate() {
        out += &format!("  turn {}             answer began {} after the caller stopped\n", i + 1, ms(*answer));
    }
    out += &format!("  agent audio heard  {} ms, {} marks echoed\n", r.agent_audio_ms, r.marks_echoed);
    out += &format!("  socket closed      {}", r.close.as_deref().unwrap_or("-"));
    out
}

/// μ-law audio as a 16-bit PCM WAV file anyone can play.
pub fn wav(mulaw: &[u8]) -> Vec<u8> {
    let samples: Vec<i16> = mulaw.iter().map(|&code| callkeeper_core::mulaw::decode(code)).collect();
    callkeeper_core::wav::mono(&samples, callkeeper_core::mulaw::SAMPLE_RATE)
}
