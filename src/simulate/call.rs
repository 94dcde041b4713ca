//! One simulated call, played as Twilio plays it: the signed `incoming_call`, then the TwiML it
//! answers, verb by verb (`<Start><Recording>`, `<Play>`, `<Say>`, `<Connect><Stream>` — the
//! stream itself is `stream.rs` — `<Record>`, `<Dial>`, `<Redirect>`, `<Pause>`, `<Hangup>`),
//! the `<Connect action>`, REST redirects applied to the live call, and at the end the call's
//! dual-channel recording (what the caller said and heard) reported to `recording_done`.
//!
//! The scenario decides what the caller (or the world around the call) does wrong; the call keeps
//! a timeline of what the caller heard and when, and of every webhook and its answer time.

use super::audio::{CallAudio, Sides};
use super::fake_twilio::{self, FakeTwilio, Update};
use super::scenarios::{Outcome, Scenario};
use super::stack::LocalStack;
use super::stream::StreamEnd;
use super::timeline::{Heard, Timeline};
use callkeeper_core::ids::random_sid;
use callkeeper_core::twiml_reader::{try_parse_twiml, El};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

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
    /// Whether each call keeps its sound once it is over (for `--save-audio`; a load run that
    /// does not save it should not hold every call's in memory).
    pub keep_audio: bool,
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
    /// The whole call's sound, both sides, once it is over (kept for `--save-audio` only).
    pub audio: Option<CallAudio>,
    /// REST redirects that came once the caller was in the fallback (there should be none).
    pub redirects_in_fallback: u32,
    /// Media streams the call had: more than one when the conversation moved to a new stream.
    pub streams: u32,
    /// The silence the caller sat in right before the agent was heard again after the fault
    /// (from the last agent audio or caller speech before that moment).
    pub gap_ms: Option<u64>,
}

impl Played {
    /// A call that has just rung, with nothing happened yet.
    pub fn new(call_sid: String, scenario: Scenario, origin: Instant) -> Played {
        Played {
            call_sid,
            scenario,
            outcome: Outcome::Hangup,
            timeline: Timeline::new(origin),
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
            audio: None,
            redirects_in_fallback: 0,
            streams: 0,
            gap_ms: None,
        }
    }
}

/// One call as it is being played: where it is, and what it has done so far.
pub(super) struct Player<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) scenario: Scenario,
    pub(super) call_sid: String,
    pub(super) started: Instant,
    pub(super) timeline: Timeline,
    pub(super) heard: Heard,
    pub(super) updates: Option<mpsc::UnboundedReceiver<Update>>,
    pub(super) recording_from: Option<Instant>,
    /// The `<Recording recordingStatusCallback>`.
    pub(super) recording_callback: Option<String>,
    pub(super) played: Played,
    pub(super) hung_up: bool,
    /// The caller's speech and the agent's audio as it played, each with when it began.
    pub(super) sides: Sides,
    /// Callbacks sent beside the call (stream status), and their tasks.
    pub(super) detached: Arc<std::sync::Mutex<Vec<Sent>>>,
    pub(super) detached_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The caller has heard the greeting: a later stream goes on with the conversation.
    pub(super) greeted: bool,
    /// The caller's next turn, across streams.
    pub(super) next_turn: u32,
    /// When the scenario's fault was made (once per call).
    pub(super) fault: Option<Instant>,
    /// A relay of this call is frozen: what comes is the watchdog's move or redirect.
    pub(super) frozen: bool,
}

pub async fn play(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<Played> {
    let call_sid = random_sid("CA");
    let updates = ctx.twilio.as_ref().map(|t| t.ring(&call_sid, &ctx.from, scenario.business_number().unwrap_or(&ctx.to)));
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
        played: Played::new(call_sid, scenario, started),
        hung_up: false,
        sides: Sides::default(),
        detached: Default::default(),
        detached_tasks: Vec::new(),
        greeted: false,
        next_turn: 0,
        fault: None,
        frozen: false,
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
    played.audio = ctx.keep_audio.then_some(CallAudio { sides: player.sides, from: started, to: ended });
    played.gap_ms = player.fault.and_then(|fault| gap_after(fault, &player.heard));
    player.timeline.heard(&player.heard, ended);
    played.timeline = player.timeline;
    Ok(played)
}

/// The silence right before the agent was first heard again after `fault`: from the end of the
/// last thing the caller heard from the agent or said, to that moment.
fn gap_after(fault: Instant, heard: &Heard) -> Option<u64> {
    let again = heard.agent.iter().map(|(from, _)| *from).filter(|from| *from >= fault).min()?;
    let before = heard.agent.iter().chain(&heard.speaking).map(|(_, to)| *to).filter(|to| *to <= again).max().unwrap_or(fault).min(again);
    Some(again.duration_since(before).as_millis() as u64)
}

impl Player<'_> {
    pub(super) fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn form(&self, status: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", self.ctx.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.call_sid.as_str()),
            ("CallStatus", status),
            ("Direction", "inbound"),
            ("From", self.ctx.from.as_str()),
            ("To", self.scenario.business_number().unwrap_or(self.ctx.to.as_str())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Posts a callback the call waits on, as many times as the scenario repeats callbacks; the
    /// last answer is the one followed.
    /// (An unanswered post is status 0, as Twilio's error page would be: the caller of this
    /// decides what that means for the call.)
    pub(super) async fn post(&mut self, url: &str, form: &[(String, String)]) -> (u16, String) {
        let mut answer = (0, String::new());
        for _ in 0..self.scenario.repeats_webhooks() {
            let sent = send_signed(&self.ctx.client, &self.ctx.auth_token, url, form).await;
            self.timeline.webhook(sent.sent, &sent.name, sent.status, sent.took);
            answer = (sent.status, sent.body);
        }
        answer
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/webhook/incoming_call", self.ctx.base_url);
        let form = self.form("ringing");
        let (status, doc) = self.post(&url, &form).await;
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
                    let (_, doc) = self.post(verb.text.trim(), &self.form("in-progress")).await;
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

    pub(super) fn pending_update(&mut self) -> Option<Update> {
        self.updates.as_mut().and_then(|u| u.try_recv().ok())
    }

    /// A REST update: new TwiML for the live call, or its end.
    pub(super) async fn apply(&mut self, update: Update) -> anyhow::Result<Option<El>> {
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
                let (_, doc) = self.post(&url, &self.form("in-progress")).await;
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

    /// What Twilio does once `<Connect>` is over.
    async fn after_stream(&mut self, connect: &El, end: StreamEnd) -> anyhow::Result<Option<El>> {
        let action = connect.attr("action").map(str::to_string);
        if std::mem::take(&mut self.frozen) {
            // The call is rescued: the relay may wake for the calls after.
            if let Some(stack) = &self.ctx.stack {
                stack.lock().await.thaw_all_relays();
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
        let (code, doc) = self.post(&action, &self.form(status)).await;
        if self.hung_up {
            return Ok(None);
        }
        anyhow::ensure!(code == 200, "<Connect action> answered HTTP {code}: {doc}");
        Ok(Some(parse(&doc)?))
    }

    pub(super) fn fallback_begins(&mut self) {
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
            self.post(action, &form).await;
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
        let (_, doc) = self.post(action, &form).await;
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
        let (status, body) = self.post(callback, &form).await;
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
        let now = Instant::now();
        let length = now.duration_since(from);
        let wav = self.sides.wav(from, now);
        let sid = random_sid("RE");
        let duration = (length.as_secs()).max(1);
        twilio.keep_recording(fake_twilio::Recording {
            sid: sid.clone(),
            call_sid: self.call_sid.clone(),
            wav: bytes::Bytes::from(wav),
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
pub(super) struct Sent {
    pub(super) sent: Instant,
    pub(super) name: String,
    /// 0 when no HTTP answer came.
    pub(super) status: u16,
    pub(super) took: Duration,
    pub(super) body: String,
}

/// Posts a callback as Twilio does: signed for its URL (the `#` connection overrides left off),
/// with Twilio's 15 s timeout.
pub(super) async fn send_signed(client: &reqwest::Client, token: &str, url: &str, form: &[(String, String)]) -> Sent {
    let url = url.split('#').next().unwrap_or(url);
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let sent = Instant::now();
    let response = super::signed_post(client, token, url, url, form).timeout(Duration::from_secs(15)).send().await;
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

pub(super) fn parse(doc: &str) -> anyhow::Result<El> {
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
