//! The AI agent: OpenAI's Realtime API, speech to speech, one WebSocket per call.
//!
//! - The caller's μ-law goes to the model as it arrives; the model's μ-law comes back to the
//!   relay, which paces and marks it. No transcoding either way.
//! - Turns are found by the server (VAD); the relay barges in on `speech_started`, and the agent
//!   truncates the cut item at what the caller heard (by the relay's marks), or deletes it when
//!   nothing was heard, and drops late audio of a cancelled response.
//! - Tools: `save_lead` (written to the call and its contact at once), `transfer_to_human` and
//!   `end_call` (done once the words that announce them have played).
//! - Caller silence: an "are you still there?", then a goodbye and the hang-up.
//! - The model going away does not end the call ([`resume`]): a drop, `session_expired`, or no
//!   session within the connect timeout opens a new session, seeded with the conversation so far,
//!   and the caller's words since the last answer reach it first; the caller hears a short "one
//!   moment" if it takes long. A session is also replaced, at a quiet moment, before the API's
//!   60-minute cap. Past [`resume::MAX_RECONNECTS`] in a minute (or on an error a new session
//!   would repeat: a key, a quota, a format) `converse` fails; the relay then closes Twilio's
//!   stream with 1011 and the caller gets the fallback.

pub mod connection;
pub mod protocol;
mod resume;
mod tools;

use super::history::History;
use super::{AgentError, AgentInput, AgentLink, AgentOutput, CallInfo, ResponseId, Speaker, VoiceAgent};
use bytes::Bytes;
use callkeeper_core::config::{Config, RealtimeSettings};
use callkeeper_core::secrets::Secret;
use callkeeper_core::store::CallStore;
use connection::Connection;
use protocol::ServerEvent;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tools::Action;

pub struct OpenAiAgent {
    settings: RealtimeSettings,
    api_key: Secret,
    calls: Arc<dyn CallStore>,
}

impl OpenAiAgent {
    /// `None` without an OpenAI key.
    pub fn from_config(config: &Config, calls: Arc<dyn CallStore>) -> Option<OpenAiAgent> {
        let key = config.openai.as_ref()?.api_key.clone();
        Some(OpenAiAgent { settings: config.realtime.clone(), api_key: key, calls })
    }
}

#[async_trait::async_trait]
impl VoiceAgent for OpenAiAgent {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn converse(&self, call: CallInfo, link: AgentLink) -> Result<(), AgentError> {
        let mut talk = Conversation::new(call, link, self.calls.clone(), self.settings.rotate_after);
        if let Some(earlier) = talk.call.earlier.take() {
            talk.history = earlier;
        }
        let fresh = talk.history.is_empty();
        // The clip plays while the socket opens: the caller hears the business at once. Only
        // its words are kept: this future lives as long as the call.
        let clip_text = match talk.call.profile.greeting_clip.clone().filter(|_| fresh) {
            Some(clip) => {
                talk.say_clip(Bytes::from(clip.audio()), &clip.text).await;
                talk.history.said(Speaker::Agent, &clip.text);
                Some(clip.text)
            }
            None => None,
        };
        let mut model = if fresh {
            // Boxed: the handshake's future is large and done with once the socket is open.
            let model = match Box::pin(Connection::open(
                &self.settings,
                &self.api_key,
                talk.session_update(&self.settings),
                talk.call.tracer.clone(),
            ))
            .await
            {
                Ok(model) => model,
                Err(e @ AgentError::Refused(_)) => return Err(e),
                // The first try counts as one of the minute's reconnects: a model that is down
                // gives the fallback after one more.
                Err(e) => {
                    talk.reconnects.push_back(Instant::now());
                    Box::pin(talk.open_session(self, &e.to_string())).await?
                }
            };
            talk.session_opened = Instant::now();
            match clip_text {
                Some(text) => talk.to_model.push(protocol::assistant_said(&text)),
                None => {
                    let greeting = talk.call.profile.greeting.clone();
                    talk.request_response(Some(&greeting));
                }
            }
            model
        } else {
            // Another relay held this call: the conversation goes on where it was.
            Box::pin(talk.reconnect(self, None, "the call continues on a new stream")).await?
        };
        loop {
            match talk.run(&mut model).await {
                Stop::CallOver => return Ok(()),
                Stop::Rotate => {
                    model = Box::pin(talk.rotate(self, model)).await?;
                }
                Stop::Lost { reason, retry: true } => {
                    model = Box::pin(talk.reconnect(self, Some(model), &reason)).await?;
                }
                Stop::Lost { reason, retry: false } => return Err(AgentError::Refused(reason)),
            }
        }
    }
}

/// Why [`Conversation::run`] returned.
enum Stop {
    /// The stream ended, or the relay has gone.
    CallOver,
    /// The session is old and the call is quiet: replace it now.
    Rotate,
    /// The session is gone. `retry`: a new one may go on (a drop, a timeout, the session's
    /// cap); otherwise it would fail the same way.
    Lost { reason: String, retry: bool },
}

impl From<AgentError> for Stop {
    fn from(e: AgentError) -> Stop {
        let retry = matches!(e, AgentError::Unavailable(_));
        Stop::Lost { reason: e.to_string(), retry }
    }
}

/// What a response of the model has become on the relay's side.
#[derive(Debug)]
struct Item {
    response: ResponseId,
    openai_response: String,
    /// Audio sent to the relay, in bytes (= 8 per ms).
    sent: usize,
    /// All of its audio has come.
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Talking, or quiet for less than the profile's first idle time.
    Talking,
    /// Asked whether the caller is still there.
    Asked,
    /// Said goodbye: the call ends once it has played.
    Leaving,
}

struct Conversation {
    call: CallInfo,
    link: AgentLink,
    calls: Arc<dyn CallStore>,
    /// Client events waiting for the model's socket.
    to_model: Vec<String>,
    /// The oldest caller frame not yet written to the model, by when it reached the relay.
    audio_waiting_since: Option<Instant>,
    /// When the model event being handled was read off its socket.
    event_read_at: Instant,
    next_response: ResponseId,
    items: HashMap<String, Item>,
    /// The model's response in progress, if any (at most one: the API allows no second).
    active: Option<String>,
    /// Responses the caller cut: their late audio is dropped.
    discarded: HashSet<String>,
    /// Asked for a response while one was running: sent at that one's `response.done`.
    response_wanted: Option<Option<String>>,
    /// Tool outputs of the running response, sent at its `response.done`, before the next one.
    tool_outputs: Vec<String>,
    /// A transfer or hang-up waiting for the response that announces it.
    action: Option<Action>,
    /// That response, once it has begun.
    action_response: Option<String>,
    idle: Idle,
    quiet_since: Instant,
    /// Between `speech_started` and `speech_stopped`: a caller talking is never idle.
    caller_speaking: bool,
    /// The conversation so far, for a new session.
    history: History,
    /// The caller's audio since the agent last began to answer: replayed to a new session, so
    /// words said just before or during a drop are answered, not asked for again.
    unanswered: resume::CallerAudio,
    /// When the current session opened (it is replaced after `rotate_after`).
    session_opened: Instant,
    rotate_after: Duration,
    /// Sessions opened after the first, by when (at most [`resume::MAX_RECONNECTS`] a minute).
    reconnects: std::collections::VecDeque<Instant>,
    /// Numbers the sessions, for the ids of the items replayed into each.
    sessions: u32,
    /// After a resume: the replayed lines' ids, until a response shows the model answers in
    /// audio (a model may answer replayed assistant text in text only: see [`resume`]).
    resume_check: Option<resume::Check>,
}

impl Conversation {
    fn new(call: CallInfo, link: AgentLink, calls: Arc<dyn CallStore>, rotate_after: Duration) -> Conversation {
        Conversation {
            call,
            link,
            calls,
            to_model: Vec::new(),
            audio_waiting_since: None,
            event_read_at: Instant::now(),
            next_response: 1,
            items: HashMap::new(),
            active: None,
            discarded: HashSet::new(),
            response_wanted: None,
            tool_outputs: Vec::new(),
            action: None,
            action_response: None,
            idle: Idle::Talking,
            quiet_since: Instant::now(),
            caller_speaking: false,
            history: History::default(),
            unanswered: resume::CallerAudio::default(),
            session_opened: Instant::now(),
            rotate_after,
            reconnects: std::collections::VecDeque::new(),
            sessions: 0,
            resume_check: None,
        }
    }

    fn session_update(&self, settings: &RealtimeSettings) -> String {
        let tools = protocol::tools(&self.call.profile, self.call.transfer_number.is_some());
        protocol::session_update(&self.call.profile, settings, &tools)
    }

    async fn tell_relay(&self, output: AgentOutput) -> bool {
        self.link.output.send(output).await.is_ok()
    }

    async fn say_clip(&mut self, audio: Bytes, text: &str) {
        let response = self.next_response;
        self.next_response += 1;
        self.tell_relay(AgentOutput::Audio { response, mulaw: audio, made: Instant::now() }).await;
        self.tell_relay(AgentOutput::ResponseDone { response }).await;
        self.tell_relay(AgentOutput::Transcript { speaker: Speaker::Agent, text: text.to_string() }).await;
    }

    /// A response now, or when the running one is done.
    fn request_response(&mut self, instructions: Option<&str>) {
        if self.active.is_some() {
            self.response_wanted = Some(instructions.map(str::to_string));
        } else {
            self.to_model.push(protocol::response_create(instructions));
            // Counted as running from now: a second request before `response.created` would be refused.
            self.active = Some(String::new());
        }
    }

    /// Idle timings, as durations.
    fn idle_after(&self) -> Duration {
        let idle = self.call.profile.idle;
        Duration::from_secs(u64::from(match self.idle {
            Idle::Talking => idle.prompt_after_secs,
            Idle::Asked | Idle::Leaving => idle.hangup_after_secs,
        }))
    }

    fn activity(&mut self) {
        self.quiet_since = Instant::now();
    }

    async fn run(&mut self, model: &mut Connection) -> Stop {
        loop {
            if !self.to_model.is_empty() {
                if let Err(e) = model.send_all(self.to_model.drain(..)).await {
                    return e.into();
                }
                if let Some(since) = self.audio_waiting_since.take() {
                    let waited = since.elapsed().as_micros() as u64;
                    self.call.to_model.lock().expect("not poisoned").record(waited);
                }
            }
            let idle_at = self.quiet_since + self.idle_after();
            // Past its age, the session is replaced once nothing is said or playing.
            let rotate_at = self.session_opened + self.rotate_after;
            let quiet = self.active.is_none() && !self.caller_speaking && self.items.is_empty();
            tokio::select! {
                input = self.link.input.recv() => match input {
                    Some(input) => {
                        self.on_input(input);
                        // What else the relay has sent by now goes to the model in the same write.
                        while let Ok(more) = self.link.input.try_recv() {
                            self.on_input(more);
                        }
                    }
                    // The stream ended: the call is over for the agent.
                    None => return Stop::CallOver,
                },
                event = model.next() => {
                    let event = match event {
                        Ok(event) => event,
                        Err(e) => return e.into(),
                    };
                    self.event_read_at = Instant::now();
                    match self.on_model(event).await {
                        Ok(true) => {}
                        Ok(false) => return Stop::CallOver,
                        Err(stop) => return stop,
                    }
                }
                _ = tokio::time::sleep_until(idle_at), if self.idle != Idle::Leaving && self.active.is_none() && !self.caller_speaking => self.on_idle(),
                _ = tokio::time::sleep_until(rotate_at), if quiet && self.action.is_none() => return Stop::Rotate,
            }
        }
    }

    fn on_input(&mut self, input: AgentInput) {
        match input {
            // Each frame as it comes: batching appends would save writes only at the price of
            // the model hearing the caller later (see README's relay figures).
            AgentInput::Audio { mulaw, arrived, .. } => {
                self.audio_waiting_since.get_or_insert(arrived);
                self.to_model.push(protocol::append(&mulaw));
                self.unanswered.push(&mulaw);
            }
            AgentInput::Heard { response, heard_ms } => {
                self.activity();
                // Fully heard: nothing left to truncate.
                self.items.retain(|_, item| !(item.response == response && item.done && heard_ms * 8 >= item.sent as u64));
            }
            AgentInput::Interrupted { response, heard_ms } => self.interrupted(response, heard_ms),
            AgentInput::Dtmf { .. } => {}
        }
    }

    /// The relay cut `response` at `heard_ms` and dropped what was queued behind it: the model's
    /// conversation keeps only what the caller heard.
    fn interrupted(&mut self, response: ResponseId, heard_ms: u64) {
        self.history.cut_last_agent_line();
        let cut: Vec<(String, Item)> = self.items.extract_if(|_, item| item.response >= response).collect();
        for (item_id, item) in cut {
            self.discarded.insert(item.openai_response.clone());
            let sent_ms = item.sent as u64 / 8;
            let at = if item.response == response { heard_ms.min(sent_ms) } else { 0 };
            // The API refuses a truncation at 0: an item nobody heard goes whole.
            self.to_model.push(if at == 0 { protocol::delete_item(&item_id) } else { protocol::truncate(&item_id, at) });
        }
    }

    fn on_idle(&mut self) {
        let language = self.call.profile.language.clone();
        match self.idle {
            Idle::Talking => {
                self.idle = Idle::Asked;
                let ask = format!("The caller has been silent. Ask briefly, in {language}, whether they are still on the line.");
                self.request_response(Some(&ask));
            }
            Idle::Asked | Idle::Leaving => {
                self.idle = Idle::Leaving;
                self.action = Some(Action::Hangup { reason: "caller_silent".into() });
                self.action_response = None;
                let bye = format!("The caller is still silent. Say a short, polite goodbye in {language}; the call then ends.");
                self.request_response(Some(&bye));
            }
        }
        self.activity();
    }

    /// Acts on one model event; `false` when the relay has gone.
    async fn on_model(&mut self, event: ServerEvent) -> Result<bool, Stop> {
        let relay_listening = match event {
            ServerEvent::SpeechStarted => {
                self.activity();
                self.caller_speaking = true;
                if self.idle != Idle::Leaving {
                    self.idle = Idle::Talking;
                }
                // A response still being generated is cancelled here; what was already heard
                // is cut by the relay, which answers with `Interrupted`.
                if let Some(running) = self.active.clone().filter(|id| !id.is_empty()) {
                    if self.action_response.as_ref() != Some(&running) {
                        self.discarded.insert(running);
                        self.to_model.push(protocol::cancel());
                    }
                }
                self.tell_relay(AgentOutput::SpeechStarted).await
            }
            ServerEvent::SpeechStopped => {
                self.activity();
                self.caller_speaking = false;
                self.tell_relay(AgentOutput::CallerTurnEnded { at: callkeeper_core::time::now_ms() }).await
            }
            ServerEvent::CallerSaid(text) if !text.trim().is_empty() => {
                self.history.said(Speaker::Caller, &text);
                self.tell_relay(AgentOutput::Transcript { speaker: Speaker::Caller, text: text.trim().to_string() }).await
            }
            ServerEvent::ResponseCreated { id } => {
                self.active = Some(id.clone());
                if self.action.is_some() && self.action_response.is_none() {
                    self.action_response = Some(id);
                } else if self.caller_speaking {
                    // Asked for before the caller began to speak: it would talk over them.
                    self.discarded.insert(id);
                    self.to_model.push(protocol::cancel());
                }
                true
            }
            ServerEvent::AudioDelta { response_id, item_id, audio } => {
                if self.discarded.contains(&response_id) {
                    return Ok(true);
                }
                // The agent answers: what the caller said before is in the model's conversation.
                self.unanswered.clear();
                if let Some(check) = self.resume_check.as_mut() {
                    check.spoke = true;
                }
                let next = &mut self.next_response;
                let item = self.items.entry(item_id).or_insert_with(|| {
                    let response = *next;
                    *next += 1;
                    Item { response, openai_response: response_id, sent: 0, done: false }
                });
                item.sent += audio.len();
                let response = item.response;
                self.activity();
                self.tell_relay(AgentOutput::Audio { response, mulaw: Bytes::from(audio), made: self.event_read_at }).await
            }
            ServerEvent::AudioDone { response_id, item_id } => match self.items.get_mut(&item_id) {
                Some(item) if !self.discarded.contains(&response_id) => {
                    item.done = true;
                    let response = item.response;
                    self.tell_relay(AgentOutput::ResponseDone { response }).await
                }
                _ => true,
            },
            ServerEvent::AgentSaid { response_id, text } if !self.discarded.contains(&response_id) && !text.trim().is_empty() => {
                self.history.said(Speaker::Agent, &text);
                self.tell_relay(AgentOutput::Transcript { speaker: Speaker::Agent, text: text.trim().to_string() }).await
            }
            ServerEvent::FunctionCall { call_id, name, arguments } => {
                if let Some(check) = self.resume_check.as_mut() {
                    check.spoke = true;
                }
                let (output, action) = tools::run(&self.call, self.calls.as_ref(), &name, &arguments, &call_id).await;
                if output["ok"] == true && output.get("lead").is_some() {
                    self.history.lead = Some(output["lead"].clone());
                }
                if let Some(action) = action {
                    self.action = Some(action);
                    self.action_response = None;
                }
                self.tool_outputs.push(protocol::function_output(&call_id, &output));
                true
            }
            ServerEvent::ResponseDone { id, status } => self.response_done(id, &status).await,
            ServerEvent::Error { code, message, .. } if matches!(code.as_deref(), Some("response_cancel_not_active")) => {
                // The response ended on its own just before our cancel: nothing was lost.
                tracing::debug!(call_sid = %self.call.call_sid, message, "cancel after the response ended");
                true
            }
            ref error @ ServerEvent::Error { ref code, ref kind, ref message } => {
                if error.is_fatal_error() {
                    let reason = format!("the model ended the session: {} ({})", message, code.as_deref().unwrap_or("no code"));
                    return Err(Stop::Lost { reason, retry: error.ends_only_this_session() });
                }
                tracing::warn!(call_sid = %self.call.call_sid, code = code.as_deref(), kind = kind.as_deref(), message, "model error; the call goes on");
                self.tell_relay(AgentOutput::Error { message: message.clone() }).await
            }
            ServerEvent::SessionUpdated { input, output } => {
                if let Err(e) = connection::check_formats(input.as_deref(), output.as_deref()) {
                    return Err(Stop::Lost { reason: e.to_string(), retry: false });
                }
                true
            }
            ServerEvent::RateLimits(limits) => {
                tracing::info!(call_sid = %self.call.call_sid, rate_limits = %limits, "model rate limits");
                true
            }
            _ => true,
        };
        Ok(relay_listening)
    }

    async fn response_done(&mut self, id: String, status: &str) -> bool {
        if self.active.as_deref().is_some_and(|a| a == id || a.is_empty()) {
            self.active = None;
        }
        if status == "completed" {
            self.check_resumed_answer();
        }
        self.discarded.remove(&id);
        tracing::debug!(call_sid = %self.call.call_sid, response = id, status, "response done");
        // Tool outputs, then the response that speaks about them.
        if !self.tool_outputs.is_empty() {
            self.to_model.append(&mut self.tool_outputs);
            self.request_response(None);
        } else if let Some(wanted) = self.response_wanted.take() {
            self.request_response(wanted.as_deref());
        }
        if self.action_response.as_deref() == Some(id.as_str()) {
            self.action_response = None;
            if let Some(action) = self.action.take() {
                return self.tell_relay(action.into_output()).await;
            }
        }
        true
    }
}
