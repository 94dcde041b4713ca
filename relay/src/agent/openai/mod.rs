//! The AI agent: OpenAI's Realtime API, speech to speech, one WebSocket per call.
//!
//! - The caller's μ-law goes to the model as it arrives; the model's μ-law comes back to the
//!   relay, which paces and marks it. No transcoding either way.
//! - Turns are found by the server (VAD); the relay barges in on `speech_started`, and the agent
//!   truncates the cut item at what the caller heard (by the relay's marks), or deletes it when
//!   nothing was heard, and drops late audio of a cancelled response.
//! - Tools: `save_lead` (written to the call and its contact at once), `transfer_to_human` and
//!   `end_call` (done once the words that announce them have played), `search_knowledge`, and
//!   the business's own HTTP tools ([`crate::agent::http_tools`]). Those run while the
//!   conversation goes on: the caller can still talk and interrupt, and if the answer takes
//!   longer than [`FILLER_AFTER`] the caller hears the tool's filler ("one moment, checking"),
//!   said by an out-of-band response so the pending function call is untouched. The model
//!   answers once every output of its response is in.
//! - Keypad digits reach the model as text, batched until a pause of [`DTMF_PAUSE`] or a `#`.
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
use super::http_tools::{CallPart, ToolAnswer, ToolCaller};
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
use tokio::sync::mpsc;
use tokio::time::Instant;
use tools::Action;

/// How long a tool's answer may take before the caller hears its filler.
pub const FILLER_AFTER: Duration = Duration::from_millis(700);
/// How long a filler asked for may take to begin before the answer goes on without it.
const FILLER_GIVE_UP: Duration = Duration::from_millis(1500);
/// A pause in keypad presses that ends an entry.
pub const DTMF_PAUSE: Duration = Duration::from_millis(1500);

pub struct OpenAiAgent {
    settings: RealtimeSettings,
    api_key: Secret,
    calls: Arc<dyn CallStore>,
    tools: Arc<ToolCaller>,
}

impl OpenAiAgent {
    /// `None` without an OpenAI key.
    pub fn from_config(config: &Config, calls: Arc<dyn CallStore>) -> Option<OpenAiAgent> {
        let key = config.openai.as_ref()?.api_key.clone();
        let tools = Arc::new(ToolCaller::new(config.tools_secret.clone()));
        Some(OpenAiAgent { settings: config.realtime.clone(), api_key: key, calls, tools })
    }
}

#[async_trait::async_trait]
impl VoiceAgent for OpenAiAgent {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn converse(&self, call: CallInfo, link: AgentLink) -> Result<(), AgentError> {
        let mut talk = Conversation::new(call, link, self.calls.clone(), self.settings.rotate_after, self.tools.clone());
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
    /// The filler's: outside the conversation, so nothing to truncate.
    filler: bool,
}

/// A business tool's answer, back from its request.
struct ToolDone {
    call_id: String,
    name: String,
    arguments: serde_json::Value,
    answer: ToolAnswer,
}

/// A business tool being asked.
struct PendingTool {
    since: Instant,
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
    tool_caller: Arc<ToolCaller>,
    /// Business tools asked and not yet answered, by call id.
    pending_tools: HashMap<String, PendingTool>,
    tool_done_tx: mpsc::UnboundedSender<ToolDone>,
    tool_done_rx: mpsc::UnboundedReceiver<ToolDone>,
    /// When the filler is due, and its words, while a tool is awaited.
    filler_due: Option<Instant>,
    filler_text: String,
    /// The filler's response: requested (empty) or running (its id), and when it was asked for.
    filler: Option<String>,
    filler_asked_at: Instant,
    /// Whether the caller heard the filler during this wait.
    filler_said: bool,
    /// Keypad digits not yet told, and when the entry counts as finished.
    digits: Vec<String>,
    digits_due: Option<Instant>,
}

impl Conversation {
    fn new(
        call: CallInfo,
        link: AgentLink,
        calls: Arc<dyn CallStore>,
        rotate_after: Duration,
        tool_caller: Arc<ToolCaller>,
    ) -> Conversation {
        let (tool_done_tx, tool_done_rx) = mpsc::unbounded_channel();
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
            tool_caller,
            pending_tools: HashMap::new(),
            tool_done_tx,
            tool_done_rx,
            filler_due: None,
            filler_text: String::new(),
            filler: None,
            filler_asked_at: Instant::now(),
            filler_said: false,
            digits: Vec::new(),
            digits_due: None,
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
                Some(done) = self.tool_done_rx.recv() => self.on_tool_done(done),
                _ = tokio::time::sleep_until(self.filler_due.unwrap_or(idle_at)), if self.filler_due.is_some() => self.on_filler_due(),
                _ = tokio::time::sleep_until(self.digits_due.unwrap_or(idle_at)), if self.digits_due.is_some() => {
                    if !self.tell_digits().await {
                        return Stop::CallOver;
                    }
                }
                _ = tokio::time::sleep_until(idle_at), if self.idle != Idle::Leaving && self.active.is_none() && !self.caller_speaking && self.pending_tools.is_empty() => self.on_idle(),
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
            AgentInput::Dtmf { digit } => {
                self.activity();
                let ends = digit == "#";
                self.digits.push(digit);
                self.digits_due = Some(if ends { Instant::now() } else { Instant::now() + DTMF_PAUSE });
            }
        }
    }

    /// An entry on the keypad is over: the model reads it, and the live transcript shows it.
    async fn tell_digits(&mut self) -> bool {
        self.digits_due = None;
        let pressed = std::mem::take(&mut self.digits).join(" ");
        if pressed.is_empty() {
            return true;
        }
        self.to_model.push(protocol::user_text(&format!("[The caller pressed on the phone's keypad: {pressed}]")));
        self.request_response(None);
        let line = format!("⌨ {pressed}");
        self.history.said(Speaker::Caller, &line);
        self.tell_relay(AgentOutput::Transcript { speaker: Speaker::Caller, text: line }).await
    }

    /// The model called one of the business's tools: its arguments are checked, then it is
    /// asked in a task of its own while the conversation goes on.
    fn start_http_tool(&mut self, tool: callkeeper_core::http_tool::HttpTool, call_id: String, arguments: &str) {
        let args = match ToolCaller::check_arguments(&tool, arguments) {
            Ok(args) => args,
            Err(refused) => {
                let raw = serde_json::Value::String(arguments.chars().take(2000).collect());
                tools::keep_http_event(&self.call, self.calls.clone(), &call_id, &tool.name, &raw, &refused, false);
                self.tool_outputs.push(protocol::function_output(&call_id, &refused.output));
                return;
            }
        };
        let since = self.event_read_at;
        self.pending_tools.insert(call_id.clone(), PendingTool { since });
        if self.filler_due.is_none() && self.filler.is_none() {
            self.filler_due = Some(since + FILLER_AFTER);
            self.filler_text = tool.filler_for(&self.call.profile.language);
        }
        let part = CallPart {
            call_sid: self.call.call_sid.to_string(),
            from: self.call.from.clone(),
            to: self.call.to.clone(),
            lead: self.history.lead.clone(),
        };
        let (caller, done) = (self.tool_caller.clone(), self.tool_done_tx.clone());
        let call_sid = self.call.call_sid.clone();
        tokio::spawn(async move {
            let answer = caller
                .call(&tool, args.clone(), &part, || {
                    tracing::debug!(call_sid = %call_sid, tool = tool.name, relay_us = since.elapsed().as_micros() as u64, "tool request sent");
                })
                .await;
            let _ = done.send(ToolDone { call_id, name: tool.name.clone(), arguments: args, answer });
        });
    }

    fn on_tool_done(&mut self, done: ToolDone) {
        let Some(pending) = self.pending_tools.remove(&done.call_id) else {
            tracing::warn!(call_sid = %self.call.call_sid, tool = done.name, "a tool answered for a session that is gone; dropped");
            return;
        };
        let filler_said = self.filler_said;
        tracing::debug!(call_sid = %self.call.call_sid, tool = done.name, waited_ms = pending.since.elapsed().as_millis() as u64, "tool answered");
        tools::keep_http_event(&self.call, self.calls.clone(), &done.call_id, &done.name, &done.arguments, &done.answer, filler_said);
        self.tool_outputs.push(protocol::function_output(&done.call_id, &done.answer.output));
        if self.pending_tools.is_empty() {
            self.filler_due = None;
            self.filler_said = false;
        }
        self.answer_tools();
    }

    /// Every output of the model's response is in, and nothing plays for it: the outputs, then
    /// the response that speaks about them.
    fn answer_tools(&mut self) {
        // A filler asked for and never begun (refused by the model) holds nothing up for long.
        if self.filler.as_deref() == Some("") {
            if self.filler_asked_at.elapsed() >= FILLER_GIVE_UP {
                self.filler = None;
            } else if self.pending_tools.is_empty() {
                // Looked at again then (see `on_filler_due`).
                self.filler_due = Some(self.filler_asked_at + FILLER_GIVE_UP);
            }
        }
        if self.tool_outputs.is_empty() || !self.pending_tools.is_empty() || self.filler.is_some() || self.active.is_some() {
            return;
        }
        self.to_model.append(&mut self.tool_outputs);
        self.request_response(None);
    }

    /// The answer is late: the filler, unless the agent's own words are still playing or the
    /// caller is talking (then a little later).
    fn on_filler_due(&mut self) {
        if self.pending_tools.is_empty() {
            // Every tool has answered: only a filler that never began can be holding the answer.
            self.filler_due = None;
            self.answer_tools();
        } else if self.filler.is_some() {
            self.filler_due = None;
        } else if !self.items.is_empty() || self.caller_speaking || self.active.as_deref().is_some_and(|a| !a.is_empty()) {
            self.filler_due = Some(Instant::now() + Duration::from_millis(200));
        } else {
            self.filler_due = None;
            self.filler = Some(String::new());
            self.filler_asked_at = Instant::now();
            self.filler_said = true;
            self.to_model.push(protocol::filler_response(&self.filler_text));
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
            if item.filler {
                // Outside the conversation: the model's context holds nothing of it.
                continue;
            }
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
                if let Some(filler) = self.filler.clone().filter(|id| !id.is_empty()) {
                    self.discarded.insert(filler.clone());
                    self.to_model.push(protocol::cancel_response(&filler));
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
            ServerEvent::ResponseCreated { id, filler: true } => {
                if self.caller_speaking {
                    self.discarded.insert(id.clone());
                    self.to_model.push(protocol::cancel_response(&id));
                }
                self.filler = Some(id);
                true
            }
            ServerEvent::ResponseCreated { id, filler: false } => {
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
                let filler = self.filler.as_deref() == Some(response_id.as_str());
                let item = self.items.entry(item_id).or_insert_with(|| {
                    let response = *next;
                    *next += 1;
                    Item { response, openai_response: response_id, sent: 0, done: false, filler }
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
                if let Some(tool) = self.call.profile.tools.iter().find(|t| t.name == name).cloned() {
                    self.start_http_tool(tool, call_id, &arguments);
                    return Ok(true);
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
                if self.filler.as_deref() == Some("") {
                    // Most likely the filler's refusal: the answer must not wait for it.
                    self.filler = None;
                    self.answer_tools();
                }
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
        if self.filler.as_deref() == Some(id.as_str()) {
            self.filler = None;
            self.discarded.remove(&id);
            self.answer_tools();
            return true;
        }
        if self.active.as_deref().is_some_and(|a| a == id || a.is_empty()) {
            self.active = None;
        }
        if status == "completed" {
            self.check_resumed_answer();
        }
        self.discarded.remove(&id);
        tracing::debug!(call_sid = %self.call.call_sid, response = id, status, "response done");
        // Tool outputs, then the response that speaks about them (once every tool has answered).
        if !self.tool_outputs.is_empty() {
            self.answer_tools();
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
