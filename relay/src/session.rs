//! One call's media stream, from the upgrade to its figures.
//!
//! 1. **Open**: read `connected` then `start` within [`HANDSHAKE_TIMEOUT`]; check the stream
//!    token against the call; move the call `awaiting_stream → streaming`. A refusal is a close
//!    with 1008 (1011 when the store failed) and a reason.
//! 2. **Pump**: one task reads Twilio's frames, feeds the agent, paces the agent's audio back, and
//!    barges in. Nothing in it waits on the agent or the store (see `agent` and `recorder`).
//! 3. **Finish**: the stream's figures and a `stream_closed` event on the call.

use crate::agent::history::History;
use crate::agent::{AgentInput, AgentLink, AgentOutput, CallInfo, INPUT_CAPACITY, OUTPUT_CAPACITY};
use crate::drain::LiveCall;
use crate::figures::{Counters, Ending, Histogram};
use crate::opening::Opening;
use crate::playback::{Out, Playback};
use crate::recorder::Recorder;
use crate::trace::Tracer;
use crate::turns::TurnLog;
use crate::Relay;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use callkeeper_core::call::{Call, CallEvent, CallPatch, CallStatus, Direction, Transition};
use callkeeper_core::ids::CallSid;
use callkeeper_core::media_stream::{self, FrameError, Inbound, Start};
use callkeeper_core::stream_report::StreamEnd;
use callkeeper_core::time::{now_ms, Millis};
use callkeeper_core::trace::{Direction as Towards, Peer, TraceMode};
use callkeeper_core::{metrics, stream_token};
use futures_util::SinkExt;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// From the upgrade to `start`. Twilio sends both at once; a socket that does not is holding one
/// of the relay's few opening places (`upgrade::MAX_OPENING`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// After an agent's hang-up, how long past the end of its audio to wait for the last mark.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// Tries of the figures write when the stream ends.
const FIGURES_ATTEMPTS: u32 = 3;

/// Close codes (RFC 6455).
const NORMAL: u16 = 1000;
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;

struct Refusal {
    code: u16,
    reason: String,
}

fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal { code, reason: reason.into() }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A close frame's reason is at most 123 bytes: cut at a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Counts a bad frame and logs its kind once per call.
fn skip_bad_frame(counters: &mut Counters, call: Option<&CallSid>, error: &FrameError) {
    if counters.bad_frame(error.kind()) {
        tracing::warn!(call_sid = call.map(CallSid::as_str), kind = error.kind(), error = %error, "bad frame skipped (logged once per kind per call)");
    }
}

pub async fn run(relay: Relay, mut socket: WebSocket, live: LiveCall, opening: Opening) {
    let mut counters = Counters::default();
    // The one-off steps are boxed: a future is as large as its largest await point, and theirs
    // would otherwise stay in every call's task for its whole life.
    // The frames before `start`, for the call's trace once the call is known.
    let mut before_start = Vec::new();
    let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(open(&relay, &mut socket, &mut counters, &mut before_start))).await;
    drop(opening);
    let (start, call) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(Some(refusal))) => {
            tracing::warn!(code = refusal.code, reason = %refusal.reason, "stream refused");
            close(&mut socket, refusal.code, &refusal.reason).await;
            return;
        }
        // The socket closed before `start`: nobody to tell.
        Ok(Err(None)) => return,
        Err(_) => {
            tracing::warn!("no start within the handshake timeout; stream refused");
            close(&mut socket, POLICY, "no start frame in time").await;
            return;
        }
    };
    let profile = Box::pin(relay.profiles.for_call(&call)).await;
    let earlier = if call.generation > 0 { Some(Box::pin(earlier(&relay, &call)).await) } else { None };
    let session = Session::begin(relay, start, call, profile, counters, earlier, before_start);
    session.pump_and_finish(socket).await;
    drop(live);
}

/// Reads up to `start` and admits the call. `Err(None)`: the socket went away. With traces on,
/// the frames read are kept in `seen` with their times.
async fn open(
    relay: &Relay,
    socket: &mut WebSocket,
    counters: &mut Counters,
    seen: &mut Vec<(Millis, String)>,
) -> Result<(Start, Call), Option<Refusal>> {
    loop {
        let text = match socket.recv().await {
            None | Some(Err(_)) => return Err(None),
            Some(Ok(Message::Text(text))) => {
                // Twilio sends two (`connected`, `start`); a client that sends more is not kept.
                if relay.config.call_traces != TraceMode::Off && seen.len() < 8 {
                    seen.push((now_ms(), text.to_string()));
                }
                text
            }
            Some(Ok(Message::Binary(bytes))) => {
                skip_bad_frame(counters, None, &FrameError::Binary(bytes.len()));
                continue;
            }
            Some(Ok(Message::Close(_))) => return Err(None),
            Some(Ok(_)) => continue,
        };
        match media_stream::parse(text.as_str()) {
            Ok(Inbound::Connected { .. }) => {}
            Ok(Inbound::Start(start)) => return admit(relay, start).await.map_err(Some),
            Ok(_) => {
                counters.bad_frame("before_start");
            }
            Err(e) => skip_bad_frame(counters, None, &e),
        }
    }
}

/// The stream must carry the token the webhook issued for its call, and the call must be
/// awaiting its stream.
async fn admit(relay: &Relay, start: Start) -> Result<(Start, Call), Refusal> {
    let params = &start.custom_parameters;
    let (Some(param_sid), Some(token)) = (params.get("call_sid"), params.get("token")) else {
        return Err(refuse(POLICY, "missing call_sid or token parameter"));
    };
    if param_sid != &start.call_sid {
        return Err(refuse(POLICY, "call_sid parameter does not match the stream's call"));
    }
    let call_sid = CallSid::parse(param_sid).map_err(|_| refuse(POLICY, "malformed call_sid"))?;
    // Absent on the streams of calls answered before generations existed: their first.
    let generation: u32 = match params.get("generation") {
        None => 0,
        Some(g) => g.parse().map_err(|_| refuse(POLICY, "malformed generation"))?,
    };
    if !stream_token::verify(&relay.config.stream_token_secret, &call_sid, generation, token) {
        return Err(refuse(POLICY, "invalid stream token"));
    }
    let calls = relay.calls.as_ref();
    let unavailable = |e: callkeeper_core::store::StoreError| {
        tracing::error!(call_sid = %call_sid, error = %e, "store failed admitting a stream");
        refuse(INTERNAL, "store unavailable")
    };
    let patch = CallPatch {
        stream_sid: Some(start.stream_sid.clone()),
        relay_instance: Some(relay.config.relay.instance_id.clone()),
        ..Default::default()
    };
    let at = now_ms();
    // One live agent per call: only the stream of the generation the call awaits is admitted,
    // once (Twilio sometimes opens a second socket for the same stream).
    let call =
        match calls.transition_at(&call_sid, Some(generation), &[CallStatus::AwaitingStream], CallStatus::Streaming, &patch, at).await {
            Ok(Transition::Applied(call)) => call,
            Ok(Transition::Refused(call)) if call.generation != generation => {
                return Err(refuse(POLICY, format!("stale stream generation {generation}: the call is at {}", call.generation)))
            }
            Ok(Transition::Refused(call)) => return Err(refuse(POLICY, format!("call is {}", call.status))),
            Ok(Transition::NotFound) => return Err(refuse(POLICY, "unknown call")),
            Err(e) => return Err(unavailable(e)),
        };
    let detail = json!({ "stream_sid": start.stream_sid, "relay_instance": relay.config.relay.instance_id, "agent": relay.agent.name(), "generation": generation });
    let event = CallEvent { at, kind: "stream_started".into(), key: format!("stream_started:{}", start.stream_sid), detail };
    // The transition is what counts; the event is for the audit trail.
    if let Err(e) = calls.add_event(&call_sid, &event).await {
        tracing::warn!(call_sid = %call_sid, error = %e, "stream_started event not written");
    }
    tracing::info!(call_sid = %call_sid, stream_sid = %start.stream_sid, agent = relay.agent.name(), generation, "stream started");
    // An inbound call is created by the webhook that answers it, so this is answer to start.
    // (An outbound call is created when placed, and its ringing would count too.)
    if call.direction == Direction::Inbound && generation == 0 {
        metrics::record(metrics::STREAM_START_LATENCY, (at - call.created_at).max(0) as f64, &[]);
    }
    Ok((start, call))
}

/// A later generation: the conversation so far, from the turns and the lead another relay wrote,
/// and the turn number to go on from. A store that fails leaves the agent less to go on, not the
/// caller without an agent.
async fn earlier(relay: &Relay, call: &Call) -> (History, u32) {
    let calls = relay.calls.as_ref();
    let turns = calls.turns(&call.call_sid).await.unwrap_or_else(|e| {
        tracing::warn!(call_sid = %call.call_sid, error = %e, "the conversation so far could not be read; the agent goes on without it");
        Vec::new()
    });
    let lead = calls.lead(&call.call_sid).await.ok().flatten();
    let next_seq = turns.iter().map(|t| t.seq + 1).max().unwrap_or(0);
    (History::from_turns(&turns, lead), next_seq)
}

/// Resolves once the relay starts draining; never, if the drain is gone.
async fn drain_started(mut closing: watch::Receiver<bool>) {
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Session {
    relay: Relay,
    call_sid: CallSid,
    /// The call as admitted: streaming at its generation.
    call: Call,
    /// Between the agent's `SpeechStarted` and `CallerTurnEnded`.
    caller_speaking: bool,
    /// The caller's turn ended and no answer has come yet.
    awaiting_answer: bool,
    /// Draining: the call moves to another relay at its next quiet moment, at the latest then.
    move_by: Option<Instant>,
    /// The move was tried (once): the stream now ends with Twilio's `stop`.
    move_tried: bool,
    moved: bool,
    stream_sid: String,
    started_at: Millis,
    counters: Counters,
    playback: Playback,
    turns: TurnLog,
    recorder: Recorder,
    to_agent: mpsc::Sender<AgentInput>,
    from_agent: mpsc::Receiver<AgentOutput>,
    /// The agent asked to end or transfer the call once its audio has played: what, and the
    /// latest moment to do it even if Twilio never echoes the last mark.
    finale: Option<(Finale, Instant)>,
    /// Why the agent failed, for the close frame.
    failure: Option<String>,
    out: Vec<Out>,
    /// When the last frame from Twilio was read (the silence timer and the figures go by it).
    frame_read_at: Instant,
    /// When the agent had the first audio of an answer that is about to start playing.
    answer_made: Option<Instant>,
    /// Shared with the agent: caller audio's wait in the relay before the model has it.
    to_model: Arc<Mutex<Histogram>>,
    /// The call's trace, when `CALL_TRACES` is on; shared with the agent.
    tracer: Tracer,
}

/// How the agent ends its part of the call.
#[derive(Debug, Clone)]
enum Finale {
    Hangup { reason: String },
    Transfer { to: callkeeper_core::phone::E164, reason: String },
}

impl Session {
    fn begin(
        relay: Relay,
        start: Start,
        call: Call,
        profile: std::sync::Arc<callkeeper_core::profile::AgentProfile>,
        counters: Counters,
        earlier: Option<(History, u32)>,
        before_start: Vec<(Millis, String)>,
    ) -> Session {
        let (earlier, first_seq) = match earlier {
            Some((history, next_seq)) => (Some(history), next_seq),
            None => (None, 0),
        };
        let started_at = now_ms();
        let recorder = Recorder::start(relay.calls.clone(), call.call_sid.clone(), relay.config.timeouts.heartbeat_interval, started_at);
        let (to_agent, input) = mpsc::channel(INPUT_CAPACITY);
        let (output, from_agent) = mpsc::channel(OUTPUT_CAPACITY);
        let to_model = Arc::new(Mutex::new(Histogram::default()));
        let tracer = Tracer::new(
            relay.config.call_traces,
            relay.calls.clone(),
            call.call_sid.clone(),
            call.generation,
            &relay.config.relay.instance_id,
        );
        for (at, text) in &before_start {
            tracer.text_at(*at, Peer::Twilio, Towards::In, text);
        }
        let knowledge = relay.profiles.knowledge(&profile.knowledge);
        let info = CallInfo {
            call_sid: call.call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
            from: call.from.clone(),
            to: call.to.clone(),
            contact: call.contact.clone(),
            transfer_number: profile.transfer_number.clone().or_else(|| relay.config.transfer_number.clone()),
            profile,
            to_model: to_model.clone(),
            earlier,
            tracer: tracer.clone(),
            knowledge,
        };
        let agent = relay.agent.clone();
        // Kept here so a failure can say why before the channel closes.
        let failed = output.clone();
        tokio::spawn(async move {
            let (call_sid, tracer) = (info.call_sid.clone(), info.tracer.clone());
            if let Err(e) = agent.converse(info, AgentLink { input, output }).await {
                tracing::error!(call_sid = %call_sid, error = %e, "voice agent failed");
                let _ = failed.send(AgentOutput::Failed { reason: e.to_string() }).await;
            }
            // The model's last events came after the stream's end, if the session wrote first.
            tracer.finish().await;
        });
        Session {
            relay,
            call_sid: call.call_sid.clone(),
            call,
            caller_speaking: false,
            awaiting_answer: false,
            move_by: None,
            move_tried: false,
            moved: false,
            stream_sid: start.stream_sid,
            started_at,
            counters,
            tracer,
            playback: Playback::new(Instant::now()),
            turns: TurnLog::starting_at(first_seq),
            recorder,
            to_agent,
            from_agent,
            finale: None,
            failure: None,
            out: Vec::new(),
            frame_read_at: Instant::now(),
            answer_made: None,
            to_model,
        }
    }

    async fn pump_and_finish(mut self, mut socket: WebSocket) {
        let end = self.pump(&mut socket).await;
        Box::pin(self.finish(end, socket)).await;
    }

    async fn pump(&mut self, socket: &mut WebSocket) -> StreamEnd {
        let closing = self.relay.drain.closing_signal();
        let closing = drain_started(closing);
        tokio::pin!(closing);
        let draining = drain_started(self.relay.drain.draining_signal());
        tokio::pin!(draining);
        let mut draining_seen = false;
        let mut agent_open = true;
        // Twilio sends a frame every 20 ms while the call lasts: a silence this long is lost media.
        // The timer is armed once and moved on only when it fires (at most every `silence`),
        // rather than made again for each of the 50 frames a second.
        let silence = self.relay.config.relay.media_silence;
        let silent = tokio::time::sleep(silence);
        tokio::pin!(silent);
        // The playback's next frame, reset only when that moment changes.
        let pace = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pace);
        let mut pace_at: Option<Instant> = None;
        loop {
            if self.finale.is_some() && !self.playback.is_audible() {
                return self.end_by_agent().await;
            }
            if let Some(by) = self.move_by.filter(|_| !self.move_tried) {
                if self.is_quiet() || Instant::now() >= by {
                    Box::pin(self.move_call()).await;
                }
            }
            let due = self.playback.next_due();
            if let Some(at) = due.filter(|_| due != pace_at) {
                pace.as_mut().reset(at);
            }
            pace_at = due;
            let finale_by = self.finale.as_ref().map(|(_, by)| *by);
            let move_by = self.move_by.filter(|_| !self.move_tried);
            tokio::select! {
                biased;
                () = &mut closing => return StreamEnd::DrainDeadline,
                () = &mut draining, if !draining_seen => {
                    draining_seen = true;
                    self.move_by = self.relay.config.relay.drain_move.map(|within| Instant::now() + within);
                }
                _ = tokio::time::sleep_until(move_by.unwrap_or_else(Instant::now)), if move_by.is_some() => {}
                () = &mut silent => {
                    let deadline = self.frame_read_at + silence;
                    if deadline > Instant::now() {
                        silent.as_mut().reset(deadline);
                        continue;
                    }
                    tracing::warn!(call_sid = %self.call_sid, silence_ms = silence.as_millis() as u64, "no frame from Twilio; ending the stream so the fallback follows");
                    return StreamEnd::MediaSilent;
                }
                message = socket.recv() => {
                    self.frame_read_at = Instant::now();
                    let started = std::time::Instant::now();
                    let end = match message {
                        Some(Ok(message)) => self.inbound(message),
                        Some(Err(e)) => {
                            tracing::info!(call_sid = %self.call_sid, error = %e, "socket read failed");
                            Some(StreamEnd::SocketError)
                        }
                        None => Some(StreamEnd::SocketClosed),
                    };
                    if let Some(end) = end {
                        return if end == StreamEnd::TwilioStop && self.moved { StreamEnd::Moved } else { end };
                    }
                    if self.flush(socket).await.is_err() {
                        return StreamEnd::SocketError;
                    }
                    self.counters.frame_time.record(started.elapsed().as_micros() as u64);
                }
                output = self.from_agent.recv(), if agent_open => {
                    let mut output = output;
                    loop {
                        if let Some(end) = self.take_agent_output(output, &mut agent_open) {
                            return end;
                        }
                        // Whatever else the agent has sent by now goes out in the same write.
                        if !agent_open {
                            break;
                        }
                        match self.from_agent.try_recv() {
                            Ok(more) => output = Some(more),
                            Err(_) => break,
                        }
                    }
                    if self.flush(socket).await.is_err() {
                        return StreamEnd::SocketError;
                    }
                    if let Some(made) = self.answer_made.take() {
                        self.counters.from_model.record(made.elapsed().as_micros() as u64);
                    }
                }
                _ = tokio::time::sleep_until(finale_by.unwrap_or_else(Instant::now)), if finale_by.is_some() => {
                    tracing::warn!(call_sid = %self.call_sid, "the agent's last audio was never confirmed played; going on");
                    return self.end_by_agent().await;
                }
                () = &mut pace, if due.is_some() => {
                    self.send_due();
                    if self.flush(socket).await.is_err() {
                        return StreamEnd::SocketError;
                    }
                }
            }
        }
    }

    /// Takes what the agent sent (`None`: its channel closed); `Some` ends the stream. Once the
    /// agent's last words are queued its end no longer matters to the caller: the channel is
    /// only no longer read (`agent_open`).
    fn take_agent_output(&mut self, output: Option<AgentOutput>, agent_open: &mut bool) -> Option<StreamEnd> {
        match output {
            Some(AgentOutput::Failed { reason }) if self.finale.is_some() => {
                tracing::info!(call_sid = %self.call_sid, reason, "agent ended after its last words; finishing the call");
                *agent_open = false;
            }
            Some(AgentOutput::Failed { reason }) => {
                self.failure = Some(reason);
                return Some(StreamEnd::AgentFailed);
            }
            Some(output) => self.agent_output(output),
            None if self.finale.is_some() => *agent_open = false,
            None => return Some(StreamEnd::AgentFailed),
        }
        None
    }

    /// Handles one frame from Twilio; `Some` ends the stream.
    fn inbound(&mut self, message: Message) -> Option<StreamEnd> {
        let text = match message {
            Message::Text(text) => {
                self.tracer.text(Peer::Twilio, Towards::In, text.as_str());
                text
            }
            Message::Binary(bytes) => {
                skip_bad_frame(&mut self.counters, Some(&self.call_sid), &FrameError::Binary(bytes.len()));
                return None;
            }
            Message::Close(_) => return Some(StreamEnd::SocketClosed),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        match media_stream::parse(text.as_str()) {
            Ok(Inbound::Media(media)) => {
                let received_at = now_ms();
                self.counters.media_in(media.chunk);
                self.recorder.media_at(received_at);
                let input = AgentInput::Audio { mulaw: media.payload.into(), received_at, arrived: self.frame_read_at };
                if self.to_agent.try_send(input).is_err() {
                    self.counters.agent_input_dropped += 1;
                }
            }
            Ok(Inbound::Mark { name }) => {
                if let Some(heard) = self.playback.on_mark(&name) {
                    self.counters.marks_heard += 1;
                    if heard.first {
                        if let Some(turn) = self.turns.first_heard(heard.response, now_ms()) {
                            // The agent's answer time: end of the caller's speech to its first audio.
                            if let (Some(stopped), Some(audio)) = (turn.caller_stopped_at, turn.first_audio_at) {
                                metrics::record(metrics::TURN_LATENCY, (audio - stopped).max(0) as f64, &[]);
                            }
                            if let (Some(stopped), Some(model)) = (turn.caller_stopped_at, turn.model_audio_at) {
                                metrics::record(metrics::MODEL_LATENCY, (model - stopped).max(0) as f64, &[]);
                            }
                            self.recorder.turn(turn);
                        }
                    }
                    self.tell_agent(AgentInput::Heard { response: heard.response, heard_ms: heard.heard_ms });
                }
            }
            Ok(Inbound::Dtmf { digit }) => self.tell_agent(AgentInput::Dtmf { digit }),
            Ok(Inbound::Stop) => return Some(StreamEnd::TwilioStop),
            Ok(Inbound::Connected { .. } | Inbound::Start(_)) => {
                self.counters.bad_frame("repeated_start");
            }
            Err(e) => skip_bad_frame(&mut self.counters, Some(&self.call_sid), &e),
        }
        None
    }

    fn tell_agent(&mut self, input: AgentInput) {
        if self.to_agent.try_send(input).is_err() {
            self.counters.agent_input_dropped += 1;
        }
    }

    fn agent_output(&mut self, output: AgentOutput) {
        match output {
            AgentOutput::Audio { response, mulaw, made } => {
                self.awaiting_answer = false;
                if let Some(turn) = self.turns.response_audio(response, now_ms()) {
                    self.recorder.turn(turn);
                }
                // An answer that starts now: how long from the model's socket to Twilio's.
                if !self.playback.is_audible() {
                    self.answer_made.get_or_insert(made);
                }
                self.playback.push(response, mulaw);
                self.send_due();
            }
            AgentOutput::ResponseDone { response } => {
                self.playback.finish(response);
                self.send_due();
            }
            AgentOutput::SpeechStarted => {
                self.caller_speaking = true;
                self.barge_in();
            }
            AgentOutput::CallerTurnEnded { at } => {
                self.caller_speaking = false;
                self.awaiting_answer = true;
                if let Some(turn) = self.turns.caller_stopped(at) {
                    self.recorder.turn(turn);
                }
            }
            // The live transcript: written as it comes, so the call has one even without a recording.
            AgentOutput::Transcript { speaker, text } => {
                self.turns.transcript(speaker, &text);
                if let Some(turn) = self.turns.take_dirty() {
                    self.recorder.turn(turn);
                }
            }
            AgentOutput::Hangup { reason } => {
                tracing::info!(call_sid = %self.call_sid, reason, "agent hangs up once its audio has played");
                self.finale_after_playback(Finale::Hangup { reason });
            }
            AgentOutput::Transfer { to, reason } => {
                tracing::info!(call_sid = %self.call_sid, to = %to.redacted(), reason, "agent transfers the call once its audio has played");
                self.finale_after_playback(Finale::Transfer { to, reason });
            }
            AgentOutput::Error { message } => {
                self.counters.agent_errors += 1;
                tracing::debug!(call_sid = %self.call_sid, message, "agent error counted");
            }
            // Handled by the pump: it ends the stream.
            AgentOutput::Failed { .. } => {}
        }
    }

    /// Nobody speaks, nothing plays, no answer is on its way: a move now costs the caller nothing.
    fn is_quiet(&self) -> bool {
        !self.playback.is_audible() && !self.caller_speaking && !self.awaiting_answer && self.finale.is_none()
    }

    /// Draining: the call moves to a stream of its next generation, which the load balancer
    /// sends to a relay that is not draining. The store first, so that stream is admitted; then
    /// Twilio, which stops this stream and starts that one. Tried once: a call still here at the
    /// drain deadline is closed, and `stream_ended` continues it.
    async fn move_call(&mut self) {
        use callkeeper_core::reconnect::{self, Next, Why};
        use callkeeper_core::twilio_rest::{CallUpdate, Updated};
        self.move_tried = true;
        let (calls, config) = (self.relay.calls.as_ref(), &self.relay.config);
        let moving = match reconnect::next_generation(calls, &self.call, Why::Move, &config.relay.instance_id).await {
            Ok(Next::Moved(moving)) => moving,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(call_sid = %self.call_sid, error = %e, "could not move the call: the store failed");
                return;
            }
        };
        let twiml = reconnect::stream_twiml(config, &self.call_sid, moving.generation).into_string();
        match self.relay.twilio.update_call(&self.call_sid, &CallUpdate::Twiml(twiml)).await {
            Ok(Updated::Done { .. }) => {
                self.moved = true;
                tracing::info!(call_sid = %self.call_sid, generation = moving.generation, "draining: the call moves to another relay");
            }
            Ok(Updated::CallOver { .. }) => self.moved = true,
            Err(e) => {
                // Twilio still streams to us: the call goes back to this stream's generation, so
                // that when this stream ends, its `<Connect action>` (which names this
                // generation) continues the call on a new stream.
                tracing::warn!(call_sid = %self.call_sid, error = %e, "draining: Twilio did not move the call; it stays here");
                let patch =
                    CallPatch { generation: Some(self.call.generation), recoveries: Some(self.call.recoveries), ..Default::default() };
                let back = calls
                    .transition_at(
                        &self.call_sid,
                        Some(moving.generation),
                        &[CallStatus::AwaitingStream],
                        CallStatus::Streaming,
                        &patch,
                        now_ms(),
                    )
                    .await;
                if let Ok(Transition::Applied(call)) = back {
                    self.call = call;
                }
            }
        }
    }

    fn finale_after_playback(&mut self, finale: Finale) {
        let now = Instant::now();
        self.finale = Some((finale, now + self.playback.time_to_play(now) + HANGUP_GRACE));
    }

    /// The agent's audio has played (or the grace ran out): hang up, or hand the call over.
    async fn end_by_agent(&mut self) -> StreamEnd {
        match self.finale.as_ref().map(|(f, _)| f.clone()) {
            Some(Finale::Transfer { to, reason }) => {
                // Boxed: an HTTP request's future, awaited once, would otherwise make every
                // call's task that much larger for its whole life.
                Box::pin(crate::transfer::hand_over(&self.relay, &self.call_sid, &to, &reason)).await;
                StreamEnd::Transferred
            }
            _ => StreamEnd::AgentHangup,
        }
    }

    /// The caller spoke while the agent was heard: silence Twilio's buffer, cut the response at
    /// what was heard, and tell the agent.
    fn barge_in(&mut self) {
        let Some(cut) = self.playback.clear(Instant::now()) else { return };
        self.counters.barge_ins += 1;
        self.out.push(Out::Clear);
        if let Some(turn) = self.turns.cut(cut.response, cut.heard_ms) {
            self.recorder.turn(turn);
        }
        self.tell_agent(AgentInput::Interrupted { response: cut.response, heard_ms: cut.heard_ms });
        tracing::info!(call_sid = %self.call_sid, response = cut.response, heard_ms = cut.heard_ms, "barge-in");
    }

    fn send_due(&mut self) {
        let started = self.playback.take_due(Instant::now(), &mut self.out);
        if !started.is_empty() {
            let at = now_ms();
            for response in started {
                self.turns.first_frame_sent(response, at);
            }
        }
    }

    /// Writes what is waiting for the socket: queued frames leave in one write.
    async fn flush(&mut self, socket: &mut WebSocket) -> Result<(), axum::Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        for out in self.out.drain(..) {
            let text = match out {
                Out::Media(frame) => {
                    self.counters.frames_out += 1;
                    media_stream::media_frame(&self.stream_sid, &frame)
                }
                Out::Mark(name) => media_stream::mark_frame(&self.stream_sid, &name),
                Out::Clear => media_stream::clear_frame(&self.stream_sid),
            };
            self.tracer.text(Peer::Twilio, Towards::Out, &text);
            socket.feed(Message::Text(text.into())).await?;
        }
        socket.flush().await
    }

    async fn finish(self, end: StreamEnd, mut socket: WebSocket) {
        let Session {
            relay,
            call_sid,
            call,
            stream_sid,
            started_at,
            counters,
            playback,
            mut turns,
            recorder,
            to_agent,
            finale,
            failure,
            to_model,
            tracer,
            ..
        } = self;
        // The agent's input closing is how it learns the call is over.
        drop(to_agent);
        let calls = relay.calls.as_ref();
        let generation = Some(call.generation);
        if end == StreamEnd::AgentHangup {
            // Completed before the socket closes, so `stream_ended` hangs up rather than falls back.
            let patch = CallPatch { end_reason: Some("agent_hangup".into()), ..Default::default() };
            if let Err(e) =
                calls.transition_at(&call_sid, generation, &[CallStatus::Streaming], CallStatus::Completed, &patch, now_ms()).await
            {
                tracing::error!(call_sid = %call_sid, error = %e, "could not mark the call completed; stream_ended will fall back");
            }
        }
        // A new stream would not save these (the model is down; Twilio's media stopped): the
        // fallback is claimed before the socket closes, so `stream_ended` serves it at once.
        let hopeless = match end {
            StreamEnd::AgentFailed => Some("agent_failed"),
            StreamEnd::MediaSilent => Some("media_silent"),
            _ => None,
        };
        if let Some(reason) = hopeless {
            use callkeeper_core::fallback::{self, ClaimedBy};
            // Only for this stream's generation: a relay that hung and woke up after the
            // watchdog moved its call must not take the fallback for the new stream.
            if let Err(e) = fallback::claim_at(calls, &relay.config, &call_sid, generation, reason, ClaimedBy::Relay).await {
                tracing::error!(call_sid = %call_sid, error = %e, "could not claim the fallback; stream_ended decides");
            }
        }
        match end {
            StreamEnd::Moved => close(&mut socket, NORMAL, "moved to another relay").await,
            StreamEnd::DrainDeadline => close(&mut socket, NORMAL, "relay draining").await,
            StreamEnd::AgentHangup => {
                let reason = match &finale {
                    Some((Finale::Hangup { reason }, _)) => reason.as_str(),
                    _ => "agent ended the call",
                };
                close(&mut socket, NORMAL, &close_reason(reason)).await
            }
            StreamEnd::Transferred => close(&mut socket, NORMAL, "transferred to a person").await,
            StreamEnd::MediaSilent => close(&mut socket, INTERNAL, "no media from Twilio").await,
            StreamEnd::AgentFailed => {
                let reason = failure.as_deref().unwrap_or("voice agent failed");
                close(&mut socket, INTERNAL, &close_reason(reason)).await
            }
            // Completes the closing handshake Twilio began (or answers its `stop`).
            StreamEnd::TwilioStop | StreamEnd::SocketClosed => close(&mut socket, NORMAL, "stream ended").await,
            StreamEnd::SocketError => {}
        }
        drop(socket);

        if let Some(turn) = turns.take_dirty() {
            recorder.turn(turn);
        }
        let heartbeats = recorder.finish().await;
        let ended_at = now_ms();
        let figures = counters.report(Ending {
            stream_sid: &stream_sid,
            relay_instance: &relay.config.relay.instance_id,
            started_at,
            ended_at,
            end,
            marks_sent: playback.marks_sent,
            agent_audio_dropped: playback.dropped,
            heartbeats,
            to_model: &to_model.lock().expect("not poisoned"),
        });
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=FIGURES_ATTEMPTS {
            match calls.finish_stream(&call_sid, &figures).await {
                Ok(_) => break,
                Err(e) if attempt == FIGURES_ATTEMPTS => tracing::error!(call_sid = %call_sid, error = %e, "stream figures not written"),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
        let detail = json!({ "end": end.as_str(), "duration_ms": figures.duration_ms(), "frames_in": figures.frames_in, "frames_out": figures.frames_out });
        let event = CallEvent { at: ended_at, kind: "stream_closed".into(), key: format!("stream_closed:{stream_sid}"), detail };
        if let Err(e) = calls.add_event(&call_sid, &event).await {
            tracing::warn!(call_sid = %call_sid, error = %e, "stream_closed event not written");
        }
        tracing::info!(
            call_sid = %call_sid,
            end = end.as_str(),
            duration_ms = figures.duration_ms(),
            frames_in = figures.frames_in,
            frames_out = figures.frames_out,
            gaps = figures.gaps,
            bad_frames = figures.bad_frames.values().sum::<u64>(),
            barge_ins = figures.barge_ins,
            heartbeats,
            frame_us_p99 = figures.frame_us_p99,
            "stream closed"
        );
        tracer.finish().await;
    }
}
