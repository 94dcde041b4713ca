//! One simulated call, played as Twilio plays it: the signed `incoming_call`, then the TwiML it
//! answers, verb by verb (`<Start><Recording>`, `<Play>`, `<Say>`, `<Connect><Stream>`,
//! `<Record>`, `<Dial>`, `<Redirect>`, `<Pause>`, `<Hangup>`), the stream's status callbacks and
//! `<Connect action>`, REST redirects applied to the live call, and at the end the call's
//! dual-channel recording (what the caller said and heard) reported to `recording_done`.
//!
//! The scenario decides what the caller (or the world around the call) does wrong; the call keeps
//! a timeline of what the caller heard and when, and of every webhook and its answer time.

use super::fake_twilio::{self, FakeTwilio, Update};
use super::scenarios::{Outcome, Scenario};
use super::stack::LocalStack;
use super::timeline::{Heard, Timeline};
use crate::media_client::{Dial, MediaCall, UTTERANCE_GAP};
use callkeeper_core::ids::random_sid;
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::twiml_reader::{try_parse_twiml, El};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

/// Longest wait for the agent to speak.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait, once the caller's media stopped or the relay froze, for something to happen.
const RESCUE_TIMEOUT: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(100);
/// A voicemail: how long the caller talks after the beep.
const MESSAGE: Duration = Duration::from_secs(3);

/// What every call of a run shares.
pub struct Ctx {
    pub client: reqwest::Client,
    /// Where `incoming_call` is, e.g. `http://127.0.0.1:8080` or the deployed API's URL.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The simulator's Twilio REST, when the stack is local: redirects reach the call.
    pub twilio: Option<FakeTwilio>,
    /// The local stack, for scenarios that break it.
    pub stack: Option<Arc<Mutex<LocalStack>>>,
    pub offline: Option<Arc<super::fake_openai::FakeOpenAi>>,
    pub from: String,
    pub to: String,
    pub turns: u32,
    pub caller_audio: Arc<Vec<u8>>,
    /// How much faster than real time the caller speaks.
    pub speed: f64,
    /// Whether the person a `<Dial>` rings answers.
    pub dial_answers: bool,
}

/// What the call left behind, for the report and the checks.
pub struct Played {
    pub call_sid: String,
    pub scenario: Scenario,
    pub outcome: Outcome,
    pub timeline: Timeline,
    pub subprotocol: Option<String>,
    pub greeting_after_ms: Option<u64>,
    pub greeting_ms: u64,
    pub answer_after_ms: Vec<Option<u64>>,
    pub agent_audio_ms: u64,
    pub marks_echoed: usize,
    pub close: Option<String>,
    /// When the fault was made, and when the fallback began to play, from the ring.
    pub fault_at_ms: Option<u64>,
    pub fallback_at_ms: Option<u64>,
    /// Recordings reported to `recording_done`, with their length in seconds.
    pub recordings: Vec<(String, u64)>,
    pub voicemail: bool,
    pub frames_sent: u64,
    pub frames_heard: u64,
    pub bad_frames_sent: u64,
    /// The agent's audio the caller heard on the stream (μ-law).
    pub heard_audio: Vec<u8>,
    /// REST redirects that came once the caller was in the fallback (there should be none).
    pub redirects_in_fallback: u32,
}

/// Why a stream ended.
enum StreamEnd {
    /// The relay closed the socket (or the connection broke).
    Closed(String),
    /// The upgrade failed.
    Refused,
    /// The caller hung up.
    HungUp,
    /// Twilio's side closed the socket without a `stop`.
    Dropped,
    /// A REST update replaced the TwiML.
    Updated(Update),
}

struct Player<'a> {
    ctx: &'a Ctx,
    scenario: Scenario,
    call_sid: String,
    started: Instant,
    timeline: Timeline,
    heard: Heard,
    updates: Option<mpsc::UnboundedReceiver<Update>>,
    recording_from: Option<Instant>,
    /// The `<Recording recordingStatusCallback>`.
    recording_callback: Option<String>,
    played: Played,
    hung_up: bool,
    /// The caller's speech, with when it began: the recording's caller channel.
    said: Vec<(Instant, Vec<u8>)>,
    /// The agent audio the caller heard: (when it played, μ-law).
    agent_said: Vec<(Instant, Vec<u8>)>,
    /// Callbacks sent beside the call (stream status), and their tasks.
    detached: Arc<std::sync::Mutex<Vec<Sent>>>,
    detached_tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn play(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<Played> {
    let call_sid = random_sid("CA");
    let updates = ctx.twilio.as_ref().map(|t| t.ring(&call_sid, &ctx.from, &ctx.to));
    let started = Instant::now();
    let mut player = Player {
        ctx,
        scenario,
        call_sid: call_sid.clone(),
        started,
        timeline: Timeline::new(started),
        heard: Heard::default(),
        updates,
        recording_from: None,
        recording_callback: None,
        played: Played {
            call_sid,
            scenario,
            outcome: Outcome::Hangup,
            timeline: Timeline::new(started),
            subprotocol: None,
            greeting_after_ms: None,
            greeting_ms: 0,
            answer_after_ms: Vec::new(),
            agent_audio_ms: 0,
            marks_echoed: 0,
            close: None,
            fault_at_ms: None,
            fallback_at_ms: None,
            recordings: Vec::new(),
            voicemail: false,
            frames_sent: 0,
            frames_heard: 0,
            bad_frames_sent: 0,
            heard_audio: Vec::new(),
            redirects_in_fallback: 0,
        },
        hung_up: false,
        said: Vec::new(),
        agent_said: Vec::new(),
        detached: Default::default(),
        detached_tasks: Vec::new(),
    };
    let result = player.run().await;
    let ended = Instant::now();
    if let Some(twilio) = &ctx.twilio {
        twilio.end(&player.call_sid);
    }
    // Twilio reports the recording once the call is over, whatever happened to it.
    if result.is_ok() {
        player.report_recording().await?;
    }
    result?;
    for task in std::mem::take(&mut player.detached_tasks) {
        let _ = task.await;
    }
    for sent in std::mem::take(&mut *player.detached.lock().expect("not poisoned")) {
        player.timeline.webhook(sent.sent, &sent.name, sent.status, sent.took);
    }
    let mut played = player.played;
    player.timeline.heard(&player.heard, ended);
    played.timeline = player.timeline;
    Ok(played)
}

impl Player<'_> {
    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn form(&self, status: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", self.ctx.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.call_sid.as_str()),
            ("CallStatus", status),
            ("Direction", "inbound"),
            ("From", self.ctx.from.as_str()),
            ("To", self.ctx.to.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Posts a callback the call waits on, as many times as the scenario repeats callbacks; the
    /// last answer is the one followed.
    async fn post(&mut self, url: &str, form: &[(String, String)]) -> anyhow::Result<(u16, String)> {
        let mut answer = (0, String::new());
        for _ in 0..self.scenario.repeats_webhooks() {
            let sent = send_signed(&self.ctx.client, &self.ctx.auth_token, url, form).await;
            self.timeline.webhook(sent.sent, &sent.name, sent.status, sent.took);
            answer = (sent.status, sent.body);
        }
        Ok(answer)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/webhook/incoming_call", self.ctx.base_url);
        let form = self.form("ringing");
        let (status, doc) = self.post(&url, &form).await?;
        anyhow::ensure!(status == 200, "incoming_call answered HTTP {status}: {doc}");
        let mut next = Some(parse(&doc)?);
        while let Some(doc) = next.take() {
            next = self.follow(&doc).await?;
            if self.hung_up {
                break;
            }
        }
        if !self.hung_up {
            self.timeline.note(self.ms(), "the TwiML ran out: Twilio ends the call");
        }
        Ok(())
    }

    /// Runs one document; `Some` when it hands the call to another.
    async fn follow(&mut self, doc: &El) -> anyhow::Result<Option<El>> {
        // A document that ends in voicemail or a person is the fallback, from its apology on.
        if doc.children.iter().any(|v| v.name == "Record" || v.name == "Dial") {
            self.fallback_begins();
        }
        for verb in &doc.children {
            if let Some(update) = self.pending_update() {
                return self.apply(update).await;
            }
            match verb.name.as_str() {
                "Start" => {
                    if let Some(recording) = verb.find("Recording") {
                        self.recording_from.get_or_insert_with(Instant::now);
                        self.recording_callback = recording.attr("recordingStatusCallback").map(str::to_string);
                        self.timeline.note(self.ms(), "recording started (dual channel)");
                    }
                }
                "Say" => {
                    let text = verb.text.clone();
                    // Twilio's voices read about 14 characters a second.
                    let length = Duration::from_millis((text.chars().count() as u64 * 70).max(1000));
                    self.hear(&format!("<Say> \"{}\"", short(&text)), length).await;
                }
                "Play" => {
                    let length = self.audio_length(&verb.text).await;
                    self.hear(&format!("<Play> {}", verb.text), length).await;
                }
                "Pause" => {
                    let secs = verb.attr("length").and_then(|l| l.parse().ok()).unwrap_or(1);
                    self.timeline.note(self.ms(), &format!("<Pause> {secs} s"));
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                "Connect" => {
                    let Some(stream) = verb.find("Stream") else { continue };
                    let end = self.stream(stream).await?;
                    return self.after_stream(verb, end).await;
                }
                "Record" => {
                    self.record(verb).await?;
                    return Ok(None);
                }
                "Dial" => return self.dial(verb).await,
                "Redirect" => {
                    let (_, doc) = self.post(verb.text.trim(), &self.form("in-progress")).await?;
                    return Ok(Some(parse(&doc)?));
                }
                "Hangup" => {
                    self.timeline.note(self.ms(), "<Hangup>: the call ends");
                    self.hung_up = true;
                    return Ok(None);
                }
                other => self.timeline.note(self.ms(), &format!("<{other}> is not played by the simulator; skipped")),
            }
        }
        Ok(None)
    }

    fn pending_update(&mut self) -> Option<Update> {
        self.updates.as_mut().and_then(|u| u.try_recv().ok())
    }

    /// A REST update: new TwiML for the live call, or its end.
    async fn apply(&mut self, update: Update) -> anyhow::Result<Option<El>> {
        if self.played.fallback_at_ms.is_some() && update != Update::Hangup {
            // The caller is in the fallback already: this cuts it (the apology again).
            self.played.redirects_in_fallback += 1;
            self.timeline.note(self.ms(), "a REST redirect reached a caller already in the fallback");
        }
        match update {
            Update::Twiml(doc) => {
                self.timeline.note(self.ms(), "REST: the call's TwiML was replaced");
                Ok(Some(parse(&doc)?))
            }
            Update::Url(url) => {
                self.timeline.note(self.ms(), &format!("REST: the call was redirected to {url}"));
                let (_, doc) = self.post(&url, &self.form("in-progress")).await?;
                Ok(Some(parse(&doc)?))
            }
            Update::Hangup => {
                self.timeline.note(self.ms(), "REST: the call was hung up");
                self.hung_up = true;
                Ok(None)
            }
        }
    }

    /// The caller hears something other than the stream for `length`.
    async fn hear(&mut self, what: &str, length: Duration) {
        let from = Instant::now();
        self.timeline.note(self.ms(), what);
        tokio::time::sleep(length.div_f64(self.ctx.speed)).await;
        self.heard.other.push((from, Instant::now()));
    }

    /// A `<Play>` file's length: a WAV it can fetch is measured, anything else counts 2 s.
    async fn audio_length(&self, url: &str) -> Duration {
        let fetched = async { self.ctx.client.get(url.trim()).timeout(Duration::from_secs(5)).send().await.ok()?.bytes().await.ok() };
        match fetched.await.and_then(|b| callkeeper_core::wav::view(&b).ok().map(|v| v.duration_ms())) {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_secs(2),
        }
    }

    /// `<Connect><Stream>`: the media WebSocket, until it ends.
    async fn stream(&mut self, stream: &El) -> anyhow::Result<StreamEnd> {
        let url = stream.attr("url").ok_or_else(|| anyhow::anyhow!("<Stream> has no url"))?.to_string();
        let status_callback = stream.attr("statusCallback").map(str::to_string);
        let parameters: Vec<(String, String)> = stream
            .children
            .iter()
            .filter(|c| c.name == "Parameter")
            .filter_map(|p| Some((p.attr("name")?.to_string(), p.attr("value")?.to_string())))
            .collect();
        let stream_sid = random_sid("MZ");
        if self.scenario == Scenario::RelayDown {
            if let Some(stack) = &self.ctx.stack {
                stack.lock().await.kill_relay();
                self.fault();
                self.timeline.note(self.ms(), "fault: the relay is down");
            }
        }
        let parsed = url::Url::parse(&url)?;
        let connect_to = resolve(&parsed).await?;
        let dial = Dial {
            connect_to,
            public_url: &url,
            path: parsed.path(),
            auth_token: Some(&self.ctx.auth_token),
            offer_subprotocol: true,
            tls: url.starts_with("wss://"),
        };
        let mut call = match MediaCall::dial(&dial, &stream_sid).await {
            Ok(call) => call,
            Err(e) => {
                self.timeline.note(self.ms(), &format!("the stream did not open: {e}"));
                self.stream_status(
                    &status_callback,
                    &stream_sid,
                    "stream-error",
                    Some(&format!("31902 Stream - WebSocket - Connection refused: {e}")),
                )
                .await?;
                if self.scenario == Scenario::RelayDown {
                    if let Some(stack) = &self.ctx.stack {
                        stack.lock().await.start_relay().await?;
                    }
                }
                return Ok(StreamEnd::Refused);
            }
        };
        call.set_pace(self.ctx.speed);
        self.played.subprotocol = call.subprotocol.clone();
        call.connected();
        let start = Instant::now();
        call.start(&self.call_sid, &self.ctx.account_sid, &parameters);
        self.timeline.note(self.ms(), "stream open: connected and start sent");
        self.stream_status(&status_callback, &stream_sid, "stream-started", None).await?;

        let end = self.converse(&mut call, start).await?;
        let heard = call.heard();
        self.played.frames_heard = heard.media_frames;
        self.played.agent_audio_ms = heard.audio.len() as u64 / 8;
        self.played.marks_echoed = heard.marks_echoed.len();
        for span in &heard.spans {
            let length = (span.end.saturating_duration_since(span.start).as_millis() as usize * 8)
                .min(heard.audio.len() - span.audio_from.min(heard.audio.len()));
            self.agent_said.push((span.start, heard.audio[span.audio_from..span.audio_from + length].to_vec()));
        }
        self.heard.agent.extend(heard.spans.iter().map(|s| (s.start, s.end)));
        self.played.frames_sent = call.frames_sent();
        self.played.heard_audio = heard.audio.clone();
        match &end {
            StreamEnd::Closed(reason) => {
                self.played.close = Some(reason.clone());
                let error = (!reason.starts_with("1000")).then(|| format!("31921 Stream - WebSocket - Close Error: {reason}"));
                let event = if error.is_some() { "stream-error" } else { "stream-stopped" };
                self.stream_status(&status_callback, &stream_sid, event, error.as_deref()).await?;
            }
            StreamEnd::HungUp | StreamEnd::Dropped | StreamEnd::Updated(_) => {
                self.played.close = call.closed(Duration::from_secs(2)).await.map(|c| format!("{} {}", c.code, c.reason));
                self.stream_status(&status_callback, &stream_sid, "stream-stopped", None).await?;
            }
            StreamEnd::Refused => {}
        }
        Ok(end)
    }

    /// A stream status callback: Twilio sends these beside the call, which does not wait for them.
    async fn stream_status(&mut self, url: &Option<String>, stream_sid: &str, event: &str, error: Option<&str>) -> anyhow::Result<()> {
        let Some(url) = url.clone() else { return Ok(()) };
        let mut form = self.form("in-progress");
        form.retain(|(k, _)| k == "AccountSid" || k == "CallSid");
        form.push(("StreamSid".into(), stream_sid.into()));
        form.push(("StreamName".into(), stream_sid.into()));
        form.push(("StreamEvent".into(), event.into()));
        if let Some(error) = error {
            form.push(("StreamError".into(), error.into()));
        }
        form.push(("Timestamp".into(), callkeeper_core::time::format_ms(callkeeper_core::time::now_ms())));
        let (client, token, repeats, log) =
            (self.ctx.client.clone(), self.ctx.auth_token.clone(), self.scenario.repeats_webhooks(), self.detached.clone());
        self.detached_tasks.push(tokio::spawn(async move {
            for _ in 0..repeats {
                let answer = send_signed(&client, &token, &url, &form).await;
                log.lock().expect("not poisoned").push(answer);
            }
        }));
        Ok(())
    }

    fn fault(&mut self) {
        self.played.fault_at_ms.get_or_insert(self.ms());
    }

    /// The caller's side of the stream: listen to the greeting, then speak and listen, turn by
    /// turn, with the scenario's fault at its moment.
    async fn converse(&mut self, call: &mut MediaCall, start: Instant) -> anyhow::Result<StreamEnd> {
        // The greeting.
        let mut media_on = true;
        let until = Instant::now() + AGENT_TIMEOUT;
        loop {
            if let Some(end) = self.check(call).await {
                return Ok(end);
            }
            let heard = call.heard();
            let greeting_ms = heard.audio.len() as u64 / 8;
            if self.scenario == Scenario::CallerHangsUp && greeting_ms >= 1000 {
                self.timeline.note(self.ms(), "the caller hangs up during the greeting");
                call.stop();
                call.hang_up();
                return Ok(StreamEnd::HungUp);
            }
            if self.scenario == Scenario::MediaStops && media_on && greeting_ms >= 500 {
                self.timeline.note(self.ms(), "fault: the caller's media stops (the socket stays open)");
                self.fault();
                media_on = false;
            }
            if !media_on {
                if Instant::now() > until + RESCUE_TIMEOUT {
                    anyhow::bail!(
                        "the relay neither closed the stream nor was the call redirected {} s after media stopped",
                        RESCUE_TIMEOUT.as_secs()
                    );
                }
                tokio::time::sleep(STEP).await;
                continue;
            }
            call.silence(STEP).await;
            let quiet = heard.last_media_at.is_some_and(|at| at.elapsed() >= UTTERANCE_GAP);
            if (heard.media_frames > 0 && quiet) || Instant::now() > until {
                break;
            }
        }
        let greeting = call.heard();
        self.played.greeting_after_ms = greeting.first_media_at.map(|at| at.duration_since(start).as_millis() as u64);
        self.played.greeting_ms = greeting.audio.len() as u64 / 8;

        for turn in 0..self.ctx.turns {
            let before = call.heard().media_frames;
            let said_at = Instant::now();
            let audio = self.ctx.caller_audio.clone();
            let mut stopped_at = None;
            for (i, piece) in audio.chunks(800).enumerate() {
                if let Some(end) = self.check(call).await {
                    return Ok(end);
                }
                if turn == 0 && i == 10 {
                    if let Some(end) = self.mid_turn_fault(call).await? {
                        return Ok(end);
                    }
                }
                if self.scenario == Scenario::BadFrames && turn == 0 && i % 4 == 1 {
                    self.send_bad_frame(call, i / 4);
                }
                call.speak(piece).await;
            }
            self.said.push((said_at, audio.to_vec()));
            self.heard.speaking.push((said_at, Instant::now()));
            let stopped = Instant::now();
            if self.scenario == Scenario::TwilioRestFlaps && turn == 0 {
                // The relay is frozen: nothing answers; wait for the watchdog's redirect.
                stopped_at = Some(stopped);
            }
            let limit = if stopped_at.is_some() { RESCUE_TIMEOUT } else { AGENT_TIMEOUT };
            let until = Instant::now() + limit;
            loop {
                if let Some(end) = self.check(call).await {
                    return Ok(end);
                }
                call.silence(STEP).await;
                let heard = call.heard();
                if heard.media_frames > before && heard.last_media_at.is_some_and(|at| at.elapsed() >= UTTERANCE_GAP) {
                    break;
                }
                if Instant::now() > until {
                    if stopped_at.is_some() {
                        anyhow::bail!("the frozen relay's call was not redirected within {} s", limit.as_secs());
                    }
                    break;
                }
            }
            let answered = call.heard().utterances.into_iter().find(|at| *at >= stopped);
            self.played.answer_after_ms.push(answered.map(|at| at.duration_since(stopped).as_millis() as u64));
            if self.scenario == Scenario::StoreBlip && turn == 0 {
                return self.store_blip(call).await;
            }
        }
        if self.scenario.expected() == Outcome::Fallback && self.scenario != Scenario::ModelDrops {
            anyhow::bail!("the {} fault was never made: the call had no turn to make it in", self.scenario.name());
        }
        if self.scenario == Scenario::ModelDrops {
            // The model's socket dropped after its first answer: the relay must have closed.
            if let Some(end) = self.wait_for_rescue(call).await? {
                return Ok(end);
            }
        }
        self.timeline.note(self.ms(), "the caller hangs up");
        call.stop();
        call.hang_up();
        self.played.outcome = Outcome::Conversation;
        Ok(StreamEnd::HungUp)
    }

    /// Faults made a second into the caller's first turn.
    async fn mid_turn_fault(&mut self, call: &mut MediaCall) -> anyhow::Result<Option<StreamEnd>> {
        match self.scenario {
            Scenario::SocketCloses => {
                self.fault();
                self.timeline.note(self.ms(), "fault: Twilio's socket closes, no stop");
                call.hang_up();
                Ok(Some(StreamEnd::Dropped))
            }
            Scenario::RelayRestart => {
                let Some(stack) = &self.ctx.stack else { return Ok(None) };
                self.fault();
                self.timeline.note(self.ms(), "fault: the relay process is killed (SIGKILL)");
                stack.lock().await.kill_relay();
                let end = self.wait_for_rescue(call).await?;
                // Started again for the calls after.
                let stack = stack.clone();
                tokio::spawn(async move {
                    if let Err(e) = stack.lock().await.start_relay().await {
                        tracing::error!(error = %e, "the relay did not start again");
                    }
                });
                Ok(end)
            }
            Scenario::TwilioRestFlaps => {
                let (Some(stack), Some(twilio)) = (&self.ctx.stack, &self.ctx.twilio) else { return Ok(None) };
                twilio.fail_redirects(&self.call_sid, 2);
                self.fault();
                self.timeline.note(self.ms(), "fault: the relay hangs (SIGSTOP); Twilio's REST will refuse two redirects");
                stack.lock().await.freeze_relay(true);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    async fn store_blip(&mut self, call: &mut MediaCall) -> anyhow::Result<StreamEnd> {
        let Some(stack) = &self.ctx.stack else { return Ok(StreamEnd::HungUp) };
        // Locked from half a second before the stream ends to 4.5 s after: past `stream_ended`'s
        // 4 s store budget, so the caller's answer is made from the form alone.
        let lock = stack.lock().await.lock_store(Duration::from_secs(5));
        self.timeline.note(self.ms(), "fault: the store refuses writes for 5 s");
        call.silence(Duration::from_millis(500)).await;
        self.fault();
        self.timeline.note(self.ms(), "fault: Twilio's socket closes, no stop, while the store is locked");
        call.hang_up();
        // The lock is released in its own time; the call goes on meanwhile.
        tokio::spawn(async move {
            if let Ok(Err(e)) = lock.await {
                tracing::warn!(error = %e, "store lock");
            }
        });
        Ok(StreamEnd::Dropped)
    }

    /// Waits, with the caller's line carrying silence, for the relay to close or a redirect.
    async fn wait_for_rescue(&mut self, call: &mut MediaCall) -> anyhow::Result<Option<StreamEnd>> {
        let until = Instant::now() + RESCUE_TIMEOUT;
        while Instant::now() < until {
            if let Some(end) = self.check(call).await {
                return Ok(Some(end));
            }
            call.silence(STEP).await;
        }
        if self.scenario == Scenario::ModelDrops {
            return Ok(None);
        }
        anyhow::bail!("nothing rescued the call within {} s of the fault", RESCUE_TIMEOUT.as_secs())
    }

    /// The relay closed the socket, or a REST update came.
    async fn check(&mut self, call: &mut MediaCall) -> Option<StreamEnd> {
        if let Some(update) = self.pending_update() {
            // Twilio stops the stream, then follows the new TwiML.
            call.stop();
            call.hang_up();
            return Some(StreamEnd::Updated(update));
        }
        let closed = call.closed(Duration::ZERO).await?;
        let reason = format!("{} {}", closed.code, closed.reason);
        if self.scenario == Scenario::ModelDrops {
            // The fault is the simulator's OpenAI dropping the model's socket: when it did.
            let dropped = self.ctx.offline.as_ref().and_then(|o| o.realtime.log().faulted_at);
            if let Some(at) = dropped.filter(|at| *at >= self.started) {
                self.played.fault_at_ms = Some(at.duration_since(self.started).as_millis() as u64);
                self.timeline.note(self.played.fault_at_ms.unwrap_or_default(), "fault: the model's socket dropped");
            }
        }
        self.timeline.note(self.ms(), &format!("the relay closed the stream: {reason}"));
        Some(StreamEnd::Closed(reason))
    }

    fn send_bad_frame(&mut self, call: &mut MediaCall, n: usize) {
        let sid = call.stream_sid.clone();
        match n % 5 {
            0 => call.send_text("{not json"),
            1 => call.send_binary(vec![0xFF; 160]),
            2 => call.send_text(format!(r#"{{"event":"bogus","streamSid":"{sid}"}}"#)),
            3 => call.send_text(format!(
                r#"{{"event":"media","streamSid":"{sid}","media":{{"track":"inbound","chunk":"x","timestamp":"0","payload":"%%%"}}}}"#
            )),
            _ => call.send_text(format!(r#"{{"event":"media","streamSid":"{sid}"}}"#)),
        }
        self.played.bad_frames_sent += 1;
    }

    /// What Twilio does once `<Connect>` is over.
    async fn after_stream(&mut self, connect: &El, end: StreamEnd) -> anyhow::Result<Option<El>> {
        let action = connect.attr("action").map(str::to_string);
        if self.scenario == Scenario::TwilioRestFlaps {
            // The call is rescued: the relay may wake for the calls after.
            if let Some(stack) = &self.ctx.stack {
                stack.lock().await.freeze_relay(false);
            }
        }
        let status = match end {
            StreamEnd::Updated(update) => return self.apply(update).await,
            StreamEnd::HungUp => "completed",
            StreamEnd::Closed(_) | StreamEnd::Dropped | StreamEnd::Refused => "in-progress",
        };
        if status == "completed" {
            self.hung_up = true;
        }
        let Some(action) = action else { return Ok(None) };
        let (code, doc) = self.post(&action, &self.form(status)).await?;
        if self.hung_up {
            return Ok(None);
        }
        anyhow::ensure!(code == 200, "<Connect action> answered HTTP {code}: {doc}");
        Ok(Some(parse(&doc)?))
    }

    fn fallback_begins(&mut self) {
        if self.played.fallback_at_ms.is_none() {
            self.played.fallback_at_ms = Some(self.ms());
        }
        self.played.outcome = Outcome::Fallback;
    }

    /// `<Record>`: the beep, a message, then the caller hangs up; the action and the recording.
    async fn record(&mut self, verb: &El) -> anyhow::Result<()> {
        self.fallback_begins();
        if verb.attr("playBeep") != Some("false") {
            self.hear("beep", Duration::from_millis(500)).await;
        }
        let from = Instant::now();
        self.timeline.note(self.ms(), "the caller leaves a message, then hangs up");
        let message: Vec<u8> = self.ctx.caller_audio.iter().copied().take(MESSAGE.as_millis() as usize * 8).collect();
        tokio::time::sleep(MESSAGE.div_f64(self.ctx.speed)).await;
        self.heard.speaking.push((from, Instant::now()));
        self.hung_up = true;
        let recording_sid = random_sid("RE");
        let wav = bytes::Bytes::from(crate::simulate::wav(&message));
        let duration = (message.len() / 8000).max(1).to_string();
        let recording_url = self.recording_url(&recording_sid);
        if let Some(action) = verb.attr("action") {
            let mut form = self.form("completed");
            form.extend([
                ("RecordingUrl".to_string(), recording_url.clone()),
                ("RecordingSid".to_string(), recording_sid.clone()),
                ("RecordingDuration".to_string(), duration.clone()),
                ("Digits".to_string(), "hangup".to_string()),
            ]);
            self.post(action, &form).await?;
        }
        if let (Some(callback), Some(twilio)) = (verb.attr("recordingStatusCallback"), &self.ctx.twilio) {
            twilio.keep_recording(fake_twilio::Recording {
                sid: recording_sid.clone(),
                call_sid: self.call_sid.clone(),
                wav,
                channels: 1,
                duration_secs: duration.parse().unwrap_or(1),
                source: "RecordVerb",
                created: std::time::SystemTime::now(),
            });
            self.recording_done(callback, &recording_sid, &duration, 1, "RecordVerb").await?;
            self.played.voicemail = true;
        }
        Ok(())
    }

    /// `<Dial>`: the person answers, talks a few seconds and hangs up, or nobody answers (rung
    /// for the dial's timeout, at most 5 s here); the action says which.
    async fn dial(&mut self, verb: &El) -> anyhow::Result<Option<El>> {
        self.fallback_begins();
        let number = verb.find("Number").map(|n| n.text.clone()).unwrap_or_default();
        let (status, duration) = if self.ctx.dial_answers {
            self.hear(&format!("<Dial> {number}: ringing"), Duration::from_secs(2)).await;
            self.hear("the person answers and talks", Duration::from_secs(3)).await;
            ("completed", "3")
        } else {
            let timeout = verb.attr("timeout").and_then(|t| t.parse().ok()).unwrap_or(30u64).min(5);
            self.hear(&format!("<Dial> {number}: ringing, nobody answers"), Duration::from_secs(timeout)).await;
            ("no-answer", "0")
        };
        let Some(action) = verb.attr("action") else {
            self.hung_up = true;
            return Ok(None);
        };
        let mut form = self.form("in-progress");
        form.extend([("DialCallStatus".to_string(), status.to_string()), ("DialCallDuration".to_string(), duration.to_string())]);
        let (_, doc) = self.post(action, &form).await?;
        Ok(Some(parse(&doc)?))
    }

    fn recording_url(&self, recording_sid: &str) -> String {
        let base = self.ctx.twilio.as_ref().map_or_else(|| "https://api.twilio.com".to_string(), FakeTwilio::base_url);
        format!("{base}/2010-04-01/Accounts/{}/Recordings/{recording_sid}", self.ctx.account_sid)
    }

    async fn recording_done(&mut self, callback: &str, sid: &str, duration: &str, channels: u32, source: &str) -> anyhow::Result<()> {
        let mut form = self.form("completed");
        form.retain(|(k, _)| k == "AccountSid" || k == "CallSid");
        form.extend(
            [
                ("RecordingSid", sid),
                ("RecordingUrl", &self.recording_url(sid)),
                ("RecordingStatus", "completed"),
                ("RecordingDuration", duration),
                ("RecordingChannels", &channels.to_string()),
                ("RecordingSource", source),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let (status, body) = self.post(callback, &form).await?;
        anyhow::ensure!((200..300).contains(&status), "recording_done answered HTTP {status}: {body}");
        self.played.recordings.push((sid.to_string(), duration.parse().unwrap_or(0)));
        Ok(())
    }

    /// The whole call's recording, once it is over: the caller on the first channel, what they
    /// heard of the agent on the second. Only where the simulator plays Twilio's REST (a deployed
    /// stack would fetch it from Twilio, which has no such recording).
    async fn report_recording(&mut self) -> anyhow::Result<()> {
        let Some(from) = self.recording_from else { return Ok(()) };
        let Some(twilio) = self.ctx.twilio.clone() else {
            self.timeline.note(self.ms(), "recording not reported: this stack fetches recordings from the real Twilio");
            return Ok(());
        };
        if !self.scenario.records() {
            self.timeline.note(self.ms(), "fault: Twilio never reports the recording");
            return Ok(());
        }
        let length = Instant::now().duration_since(from);
        let frames = (length.as_millis() as usize) * 8;
        let mut channels = vec![vec![0i16; frames], vec![0i16; frames]];
        for (channel, pieces) in [(0, &self.said), (1, &self.agent_said)] {
            for (at, audio) in pieces {
                let offset = at.saturating_duration_since(from).as_millis() as usize * 8;
                for (i, code) in audio.iter().enumerate() {
                    if let Some(sample) = channels[channel].get_mut(offset + i) {
                        *sample = callkeeper_core::mulaw::decode(*code);
                    }
                }
            }
        }
        let sid = random_sid("RE");
        let duration = (length.as_secs()).max(1);
        twilio.keep_recording(fake_twilio::Recording {
            sid: sid.clone(),
            call_sid: self.call_sid.clone(),
            wav: bytes::Bytes::from(callkeeper_core::wav::interleaved(&channels, 8000)),
            channels: 2,
            duration_secs: duration,
            source: "StartCallRecordingTwiML",
            created: std::time::SystemTime::now(),
        });
        let Some(callback) = self.recording_callback.clone() else { return Ok(()) };
        self.recording_done(&callback, &sid, &duration.to_string(), 2, "StartCallRecordingTwiML").await
    }
}

/// A callback as it went.
struct Sent {
    sent: Instant,
    name: String,
    /// 0 when no HTTP answer came.
    status: u16,
    took: Duration,
    body: String,
}

/// Posts a callback as Twilio does: signed for its URL (the `#` connection overrides left off),
/// with Twilio's 15 s timeout.
async fn send_signed(client: &reqwest::Client, token: &str, url: &str, form: &[(String, String)]) -> Sent {
    let url = url.split('#').next().unwrap_or(url);
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let signature = compute(token.as_bytes(), Algorithm::HmacSha1, url, form);
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let sent = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .timeout(Duration::from_secs(15))
        .body(body)
        .send()
        .await;
    let (status, body) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        // Twilio's timeout, or nothing listening: as an error page would be.
        Err(e) => (0, e.to_string()),
    };
    Sent { sent, name, status, took: sent.elapsed(), body }
}

fn parse(doc: &str) -> anyhow::Result<El> {
    try_parse_twiml(doc).map_err(|e| anyhow::anyhow!("not TwiML ({e}): {}", short(doc)))
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// The socket address of a `ws://` URL's host.
async fn resolve(url: &url::Url) -> anyhow::Result<SocketAddr> {
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("{url} has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host, port)).await?.next().ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))
}
