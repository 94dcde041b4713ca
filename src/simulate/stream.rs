//! The `<Connect><Stream>` of a simulated call: the signed media WebSocket, the caller's side
//! of the conversation (listen to the greeting, speak, listen, turn by turn, going on where it
//! was on a later stream) and the scenario's fault at its moment, the stream's status
//! callbacks, and why the stream ended.

use super::call::{send_signed, Player};
use super::fake_twilio::Update;
use super::scenarios::{Outcome, Scenario};
use crate::media_client::{Dial, MediaCall, UTTERANCE_GAP};
use callkeeper_core::ids::random_sid;
use callkeeper_core::twiml_reader::El;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// What the caller of the `keypad` scenario enters.
pub(super) const KEYPAD_ENTRY: [&str; 4] = ["1", "2", "3", "#"];

/// Longest wait for the agent to speak.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait, once the caller's media stopped or the relay froze, for something to happen.
const RESCUE_TIMEOUT: Duration = Duration::from_secs(30);
/// On a later stream, how long the caller waits for the agent to speak before going on.
const RESUME_LISTEN: Duration = Duration::from_secs(3);
const STEP: Duration = Duration::from_millis(100);

/// Why a stream ended.
pub(super) enum StreamEnd {
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

impl Player<'_> {
    /// `<Connect><Stream>`: the media WebSocket, until it ends.
    pub(super) async fn stream(&mut self, stream: &El) -> anyhow::Result<StreamEnd> {
        let url = stream.attr("url").ok_or_else(|| anyhow::anyhow!("<Stream> has no url"))?.to_string();
        let status_callback = stream.attr("statusCallback").map(str::to_string);
        let parameters = super::stream_parameters(stream);
        let stream_sid = random_sid("MZ");
        self.played.streams += 1;
        if self.scenario == Scenario::RelayDown && self.fault.is_none() {
            if let Some(stack) = &self.ctx.stack {
                stack.lock().await.kill_all_relays();
                self.fault();
                self.timeline.note(self.ms(), "fault: the relays are down");
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
                );
                if self.scenario == Scenario::RelayDown {
                    if let Some(stack) = &self.ctx.stack {
                        stack.lock().await.start_missing_relays().await?;
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
        let generation = parameters.iter().find(|(k, _)| k == "generation").map_or("0", |(_, v)| v.as_str()).to_string();
        self.timeline.note(self.ms(), &format!("stream open (generation {generation}): connected and start sent"));
        self.stream_status(&status_callback, &stream_sid, "stream-started", None);

        let end = self.converse(&mut call, start).await?;
        let heard = call.heard();
        self.played.frames_heard += heard.media_frames;
        self.played.agent_audio_ms += heard.audio.len() as u64 / 8;
        self.played.marks_echoed += heard.marks_echoed.len();
        for span in &heard.spans {
            let length = (span.end.saturating_duration_since(span.start).as_millis() as usize * 8)
                .min(heard.audio.len() - span.audio_from.min(heard.audio.len()));
            self.sides.agent.push((span.start, heard.audio[span.audio_from..span.audio_from + length].to_vec()));
        }
        self.heard.agent.extend(heard.spans.iter().map(|s| (s.start, s.end)));
        self.played.frames_sent += call.frames_sent();
        match &end {
            StreamEnd::Closed(reason) => {
                self.played.close = Some(reason.clone());
                let error = (!reason.starts_with("1000")).then(|| format!("31921 Stream - WebSocket - Close Error: {reason}"));
                let event = if error.is_some() { "stream-error" } else { "stream-stopped" };
                self.stream_status(&status_callback, &stream_sid, event, error.as_deref());
            }
            StreamEnd::HungUp | StreamEnd::Dropped | StreamEnd::Updated(_) => {
                self.played.close = call.closed(Duration::from_secs(2)).await.map(|c| format!("{} {}", c.code, c.reason));
                self.stream_status(&status_callback, &stream_sid, "stream-stopped", None);
            }
            StreamEnd::Refused => {}
        }
        Ok(end)
    }

    /// A stream status callback: Twilio sends these beside the call, which does not wait for them.
    fn stream_status(&mut self, url: &Option<String>, stream_sid: &str, event: &str, error: Option<&str>) {
        let Some(url) = url.clone() else { return };
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
    }

    /// The scenario's fault is made now (once per call).
    fn fault(&mut self) {
        self.played.fault_at_ms.get_or_insert(self.ms());
        self.fault.get_or_insert_with(Instant::now);
    }

    /// The caller's side of the stream: listen to the greeting (on the call's first stream), then
    /// speak and listen, turn by turn, with the scenario's fault at its moment. A later stream
    /// goes on with the turns that are left.
    async fn converse(&mut self, call: &mut MediaCall, start: Instant) -> anyhow::Result<StreamEnd> {
        if self.greeted {
            if let Some(end) = self.listen_after_resume(call).await {
                return Ok(end);
            }
        } else if let Some(end) = self.greeting(call, start).await? {
            return Ok(end);
        }
        let turns = self.scenario.turns(self.ctx.turns);
        while self.next_turn < turns {
            let turn = self.next_turn;
            let before = call.heard().media_frames;
            let said_at = Instant::now();
            let audio = self.ctx.caller_audio.clone();
            for (i, piece) in audio.chunks(800).enumerate() {
                if let Some(end) = self.check(call).await {
                    self.heard.speaking.push((said_at, Instant::now()));
                    return Ok(end);
                }
                if turn == 0 && i == 10 && self.fault.is_none() {
                    if let Some(end) = self.mid_turn_fault(call).await? {
                        self.heard.speaking.push((said_at, Instant::now()));
                        return Ok(end);
                    }
                }
                if self.scenario == Scenario::BadFrames && turn == 0 && i % 4 == 1 {
                    self.send_bad_frame(call, i / 4);
                }
                call.speak(piece).await;
            }
            self.sides.caller.push((said_at, audio.to_vec()));
            self.heard.speaking.push((said_at, Instant::now()));
            if self.scenario == Scenario::Keypad && turn == 0 {
                self.timeline.note(self.ms(), "the caller presses 1 2 3 # on the keypad");
                for digit in KEYPAD_ENTRY {
                    call.dtmf(digit);
                    call.silence(Duration::from_millis(150)).await;
                }
            }
            let stopped = Instant::now();
            let mut until = Instant::now() + AGENT_TIMEOUT;
            loop {
                if let Some(end) = self.check(call).await {
                    // Moved by a REST update once the answer had played (the relay moves a call
                    // at its first quiet moment, which can come before the caller's pause ends):
                    // the caller heard it, and goes on with the next turn on the new stream.
                    if matches!(end, StreamEnd::Updated(_)) && !self.frozen && call.heard().media_frames > before {
                        self.answered(call, stopped);
                    }
                    return Ok(end);
                }
                call.silence(STEP).await;
                let heard = call.heard();
                // Mid-answer faults: once the answer has played for a moment.
                if turn == 0 && self.fault.is_none() && heard.media_frames > before + 10 {
                    if let Some(end) = self.mid_answer_fault(call).await? {
                        return Ok(end);
                    }
                    if self.frozen {
                        until = Instant::now() + RESCUE_TIMEOUT;
                    }
                }
                if !self.frozen && heard.media_frames > before && heard.last_media_at.is_some_and(|at| at.elapsed() >= UTTERANCE_GAP) {
                    break;
                }
                if Instant::now() > until {
                    if self.frozen {
                        anyhow::bail!("the frozen relay's call was neither moved nor redirected within {} s", RESCUE_TIMEOUT.as_secs());
                    }
                    break;
                }
            }
            self.answered(call, stopped);
            if self.scenario == Scenario::StoreBlip && turn == 0 {
                return self.store_blip(call).await;
            }
        }
        self.model_fault_struck();
        if self.scenario.expected() == Outcome::Fallback {
            // The model going down closes the stream; anything else was the call's own fault.
            if self.scenario == Scenario::ModelDown {
                if let Some(end) = self.wait_for_rescue(call).await? {
                    return Ok(end);
                }
            }
            anyhow::bail!("the {} fault was never made: the call had no turn to make it in", self.scenario.name());
        }
        self.timeline.note(self.ms(), "the caller hangs up");
        call.stop();
        call.hang_up();
        self.played.outcome = if self.fault.is_some() || self.played.streams > 1 { Outcome::Continued } else { Outcome::Conversation };
        Ok(StreamEnd::HungUp)
    }

    /// The caller's turn, which ended at `stopped`, is over: when its answer began, if it came.
    fn answered(&mut self, call: &MediaCall, stopped: Instant) {
        let answered = call.heard().utterances.into_iter().find(|at| *at >= stopped);
        self.played.answer_after_ms.push(answered.map(|at| at.duration_since(stopped).as_millis() as u64));
        self.next_turn += 1;
    }

    /// The greeting, on the call's first stream; `Some` when the stream ended meanwhile.
    async fn greeting(&mut self, call: &mut MediaCall, start: Instant) -> anyhow::Result<Option<StreamEnd>> {
        let mut media_on = true;
        let until = Instant::now() + AGENT_TIMEOUT;
        loop {
            if let Some(end) = self.check(call).await {
                // Moved right after the greeting: the caller heard it, and the agent rightly
                // does not greet again on the next stream.
                let heard = call.heard();
                if heard.media_frames > 0 && !self.greeted {
                    self.greeted = true;
                    self.played.greeting_after_ms = heard.first_media_at.map(|at| at.duration_since(start).as_millis() as u64);
                    self.played.greeting_ms = heard.audio.len() as u64 / 8;
                }
                return Ok(Some(end));
            }
            let heard = call.heard();
            let greeting_ms = heard.audio.len() as u64 / 8;
            if self.scenario == Scenario::CallerHangsUp && greeting_ms >= 1000 {
                self.timeline.note(self.ms(), "the caller hangs up during the greeting");
                call.stop();
                call.hang_up();
                return Ok(Some(StreamEnd::HungUp));
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
        self.greeted = true;
        Ok(None)
    }

    /// A later stream: the agent may first finish what the fault cut (or answer what it left
    /// unanswered); the caller listens until it is done, then goes on.
    async fn listen_after_resume(&mut self, call: &mut MediaCall) -> Option<StreamEnd> {
        self.timeline.note(self.ms(), "the conversation continues on a new stream");
        let until = Instant::now() + RESUME_LISTEN;
        loop {
            if let Some(end) = self.check(call).await {
                return Some(end);
            }
            call.silence(STEP).await;
            let heard = call.heard();
            let done = heard.last_media_at.is_some_and(|at| at.elapsed() >= UTTERANCE_GAP);
            if done || (heard.media_frames == 0 && Instant::now() > until) {
                return None;
            }
        }
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
                self.kill_the_relay(call, "the relay holding the call is killed (SIGKILL) while the caller speaks").await
            }
            Scenario::TwilioRestFlaps => {
                let (Some(stack), Some(twilio)) = (&self.ctx.stack, &self.ctx.twilio) else { return Ok(None) };
                twilio.fail_redirects(&self.call_sid, 2);
                self.fault();
                self.timeline.note(self.ms(), "fault: the relay hangs (SIGSTOP); Twilio's REST will refuse two updates");
                let stack = stack.lock().await;
                if let Some(i) = stack.relay_holding_a_call() {
                    stack.freeze_relay(i, true);
                }
                self.frozen = true;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Faults made while the agent's first answer plays.
    async fn mid_answer_fault(&mut self, call: &mut MediaCall) -> anyhow::Result<Option<StreamEnd>> {
        match self.scenario {
            Scenario::RelayCrash => self.kill_the_relay(call, "the relay holding the call is killed (SIGKILL) mid-answer").await,
            Scenario::RelayHang => {
                let Some(stack) = &self.ctx.stack else { return Ok(None) };
                self.fault();
                self.timeline.note(self.ms(), "fault: the relay holding the call hangs (SIGSTOP) mid-answer");
                let stack = stack.lock().await;
                if let Some(i) = stack.relay_holding_a_call() {
                    stack.freeze_relay(i, true);
                }
                self.frozen = true;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// SIGKILL to the relay holding the call; it is started again for the calls after.
    async fn kill_the_relay(&mut self, call: &mut MediaCall, what: &str) -> anyhow::Result<Option<StreamEnd>> {
        let Some(stack) = self.ctx.stack.clone() else { return Ok(None) };
        self.fault();
        self.timeline.note(self.ms(), &format!("fault: {what}"));
        {
            let mut stack = stack.lock().await;
            if let Some(i) = stack.relay_holding_a_call() {
                stack.kill_relay(i);
            }
        }
        let end = self.wait_for_rescue(call).await?;
        tokio::spawn(async move {
            if let Err(e) = stack.lock().await.start_missing_relays().await {
                tracing::error!(error = %e, "the relay did not start again");
            }
        });
        Ok(end)
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
        anyhow::bail!("nothing rescued the call within {} s of the fault", RESCUE_TIMEOUT.as_secs())
    }

    /// The simulator's OpenAI made this call's fault (a drop, the session's end): when.
    fn model_fault_struck(&mut self) {
        if !matches!(self.scenario, Scenario::ModelDrops | Scenario::SessionExpired | Scenario::ModelDown) || self.fault.is_some() {
            return;
        }
        let struck = self.ctx.offline.as_ref().and_then(|o| o.realtime.log().faulted_at).filter(|at| *at >= self.started);
        if let Some(at) = struck {
            self.played.fault_at_ms = Some(at.duration_since(self.started).as_millis() as u64);
            self.fault = Some(at);
            self.timeline.note(self.played.fault_at_ms.unwrap_or_default(), "fault: the model's session ended");
        }
    }

    /// The relay closed the socket, or a REST update came.
    async fn check(&mut self, call: &mut MediaCall) -> Option<StreamEnd> {
        if let Some(update) = self.pending_update() {
            if self.scenario == Scenario::Deploy {
                // The draining relay moved the call: the deploy's mark on this call.
                self.fault();
            }
            // Twilio stops the stream, then follows the new TwiML.
            call.stop();
            call.hang_up();
            return Some(StreamEnd::Updated(update));
        }
        let closed = call.closed(Duration::ZERO).await?;
        let reason = format!("{} {}", closed.code, closed.reason);
        self.model_fault_struck();
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
}

/// The socket address of a `ws://` URL's host.
async fn resolve(url: &url::Url) -> anyhow::Result<SocketAddr> {
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("{url} has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host, port)).await?.next().ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))
}
