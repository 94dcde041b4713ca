//! A conversation that outlives its model session.
//!
//! When the session goes (a drop, `session_expired`, no session within the connect timeout) the
//! agent opens another, at most [`MAX_RECONNECTS`] a minute, while the relay goes on hearing the
//! caller. Once it opens, it gets, before anything else:
//!
//! 1. the conversation so far ([`crate::agent::history::History`]), each line as its own item (the caller's as user
//!    `input_text`, the agent's as assistant `output_text`), then a system note: the call was
//!    interrupted, go on in the profile's language, do not greet again, what was cut, the lead;
//! 2. the caller's audio since the agent last began to answer ([`CallerAudio`]), so words said
//!    just before or during the gap are answered by the new session's own turn detection;
//! 3. a response, when nothing in that audio is speech and the agent owes an answer.
//!
//! If the gap passes [`FILLER_AFTER`] and nothing is playing, the caller hears the pre-rendered
//! "one moment" in the profile's language. A session is also replaced on purpose, once it is
//! `rotate_after` old and the call is quiet, before the API's 60-minute cap.
//!
//! After replayed assistant text a model may answer in text only (reported of the beta,
//! openai-realtime-api-beta#72). The first completed response after a resume is checked
//! ([`Check`]): one with neither audio nor a tool call has the replayed lines deleted and the
//! history given again as one labelled user message, as Pipecat does, and is asked again.

use super::connection::Connection;
use super::{protocol, Conversation, OpenAiAgent};
use crate::agent::embedded;
use crate::agent::{AgentError, Speaker};
use callkeeper_core::call::CallEvent;
use callkeeper_core::metrics;
use callkeeper_core::time::now_ms;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// New sessions a call may open in any minute; the next loss gives the fallback.
pub const MAX_RECONNECTS: usize = 2;
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// A gap longer than this is filled with the "one moment" prompt.
pub const FILLER_AFTER: Duration = Duration::from_millis(700);
/// A filler due while the caller speaks waits this much more.
const FILLER_RETRY: Duration = Duration::from_millis(300);
/// Between a failed open and the next.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// A rotation that failed (the old session goes on) is tried again this much later.
const ROTATE_RETRY: Duration = Duration::from_secs(60);

/// The caller's audio since the agent last began to answer, μ-law, at most [`CallerAudio::MAX`].
#[derive(Debug, Default)]
pub struct CallerAudio {
    bytes: VecDeque<u8>,
}

impl CallerAudio {
    /// 4 s: a sentence, and the moment of the drop. Older audio of a long silence goes first.
    pub const MAX: usize = 4 * 8000;

    pub fn push(&mut self, mulaw: &[u8]) {
        self.bytes.extend(mulaw);
        let over = self.bytes.len().saturating_sub(Self::MAX);
        self.bytes.drain(..over);
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Whether any 20 ms of it is louder than silence on a phone line.
    pub fn has_speech(&self) -> bool {
        voiced(self.bytes.iter().copied())
    }

    /// Whether the caller spoke in the last 300 ms.
    pub fn speaking_now(&self) -> bool {
        voiced(self.bytes.iter().rev().take(300 * 8).copied())
    }
}

/// Whether any 20 ms of `mulaw` is louder than silence on a phone line (the embedded VAD's
/// threshold).
fn voiced(mulaw: impl Iterator<Item = u8>) -> bool {
    let bytes: Vec<u8> = mulaw.collect();
    bytes.chunks(160).any(|frame| {
        let energy = frame.iter().map(|&c| f64::from(callkeeper_core::mulaw::decode(c)).powi(2)).sum::<f64>() / frame.len() as f64;
        energy.sqrt() >= 400.0
    })
}

/// The first completed response after a resume, watched for audio.
#[derive(Debug)]
pub struct Check {
    /// The items replayed into the session.
    ids: Vec<String>,
    /// The history went as one message already: no second recovery.
    packed: bool,
    /// A response spoke (audio) or called a tool.
    pub spoke: bool,
}

impl Conversation {
    /// Opens a session, retrying within [`MAX_RECONNECTS`] a minute; the caller hears the
    /// filler if it takes long. `Err` once the budget is spent.
    pub(super) async fn open_session(&mut self, agent: &OpenAiAgent, reason: &str) -> Result<Connection, AgentError> {
        let mut filled = false;
        let mut last_error = reason.to_string();
        loop {
            let now = Instant::now();
            while self.reconnects.front().is_some_and(|at| now.duration_since(*at) >= RECONNECT_WINDOW) {
                self.reconnects.pop_front();
            }
            if self.reconnects.len() >= MAX_RECONNECTS {
                return Err(AgentError::Unavailable(format!(
                    "no new model session: {MAX_RECONNECTS} tried in the last minute; last: {last_error}"
                )));
            }
            self.reconnects.push_back(now);
            metrics::record(metrics::MODEL_RECONNECTS, 1.0, &["lost"]);
            tracing::warn!(call_sid = %self.call.call_sid, reason = last_error, "opening a new model session for the call");
            let open = Connection::open(&agent.settings, &agent.api_key, self.session_update(&agent.settings), self.call.tracer.clone());
            tokio::pin!(open);
            let filler = tokio::time::sleep(FILLER_AFTER);
            tokio::pin!(filler);
            let opened = loop {
                tokio::select! {
                    opened = &mut open => break opened,
                    // The relay goes on hearing the caller: their audio waits for the new session.
                    input = self.link.input.recv() => match input {
                        Some(input) => self.on_input(input),
                        None => return Err(AgentError::Unavailable("the call ended while the model reconnected".into())),
                    },
                    () = &mut filler, if !filled => {
                        if !self.items.is_empty() {
                            // Audio still playing is the agent's own words: no filler over them.
                            filled = true;
                        } else if self.unanswered.speaking_now() {
                            // Not over the caller: a little later.
                            filler.as_mut().reset(Instant::now() + FILLER_RETRY);
                        } else {
                            filled = true;
                            let hold = embedded::hold(&self.call.profile.language);
                            self.say_clip(hold.audio, hold.text).await;
                        }
                    }
                }
            };
            match opened {
                Ok(connection) => return Ok(connection),
                Err(e @ AgentError::Refused(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(call_sid = %self.call.call_sid, error = %e, "the new model session did not open");
                    last_error = e.to_string();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The session is gone (`previous`, if any, is closed): a new one, seeded with the
    /// conversation, takes over.
    pub(super) async fn reconnect(
        &mut self,
        agent: &OpenAiAgent,
        previous: Option<Connection>,
        reason: &str,
    ) -> Result<Connection, AgentError> {
        drop(previous);
        // An answer the model was still making when it went: the caller heard part of it.
        if self.active.as_ref().is_some_and(|id| !id.is_empty()) && self.items.values().any(|i| !i.done) {
            self.history.said(Speaker::Agent, "(cut off mid-answer by the fault)");
            self.history.cut_last_agent_line();
        }
        let connection = self.open_session(agent, reason).await?;
        self.forget_session();
        self.seed(reason);
        Ok(connection)
    }

    /// Replaces an old session at a quiet moment. If the new one does not open, the old one
    /// goes on and the rotation is tried again later.
    pub(super) async fn rotate(&mut self, agent: &OpenAiAgent, old: Connection) -> Result<Connection, AgentError> {
        let age = self.session_opened.elapsed();
        match Box::pin(Connection::open(&agent.settings, &agent.api_key, self.session_update(&agent.settings), self.call.tracer.clone()))
            .await
        {
            Ok(connection) => {
                drop(old);
                metrics::record(metrics::MODEL_RECONNECTS, 1.0, &["rotated"]);
                tracing::info!(call_sid = %self.call.call_sid, age_secs = age.as_secs(), "model session replaced at a quiet moment");
                self.forget_session();
                self.seed("rotated before the session's cap");
                Ok(connection)
            }
            Err(e) => {
                tracing::warn!(call_sid = %self.call.call_sid, error = %e, "the replacement session did not open; the old one goes on");
                self.session_opened = Instant::now() - self.rotate_after + ROTATE_RETRY;
                Ok(old)
            }
        }
    }

    /// What belonged to the old session: its items, its responses, events not yet sent. The
    /// caller's audio is not lost with them: it is in `unanswered`.
    fn forget_session(&mut self) {
        self.to_model.clear();
        self.audio_waiting_since = None;
        self.items.clear();
        self.active = None;
        self.discarded.clear();
        self.response_wanted = None;
        self.tool_outputs.clear();
        // A tool's answer still coming belongs to a function call the new session never saw:
        // it is dropped when it comes (see `on_tool_done`), and the model is asked afresh.
        self.pending_tools.clear();
        self.filler = None;
        self.filler_due = None;
        self.action_response = None;
        self.caller_speaking = false;
        self.session_opened = Instant::now();
    }

    /// What a new session gets before anything else (see the module's doc), and an event on
    /// the call that says what it got.
    fn seed(&mut self, why: &str) {
        self.sessions += 1;
        let ids = self.replay(false);
        let audio: Vec<u8> = self.unanswered.bytes.iter().copied().collect();
        for frame in audio.chunks(160) {
            self.to_model.push(protocol::append(frame));
        }
        let speech = self.unanswered.has_speech();
        let answers = !speech && self.history.agent_owes_an_answer();
        if answers {
            self.request_response(None);
        }
        let detail = serde_json::json!({
            "reason": why, "session": self.sessions, "lines_replayed": self.history.lines.len(),
            "lead_replayed": self.history.lead.is_some(), "caller_audio_ms": audio.len() / 8,
            "caller_spoke_in_gap": speech, "answer_requested": answers,
        });
        let (calls, sid, session) = (self.calls.clone(), self.call.call_sid.clone(), self.sessions);
        tokio::spawn(async move {
            let event =
                CallEvent { at: now_ms(), kind: "model_session".into(), key: format!("model_session:{session}:{}", now_ms()), detail };
            if let Err(e) = calls.add_event(&sid, &event).await {
                tracing::warn!(call_sid = %sid, error = %e, "model_session event not written");
            }
        });
        self.resume_check = (!ids.is_empty()).then_some(Check { ids, packed: false, spoke: false });
    }

    /// The history and the note, as items; their ids.
    fn replay(&mut self, packed: bool) -> Vec<String> {
        if self.history.is_empty() {
            return Vec::new();
        }
        let id = |n: &str| format!("ck{}_{n}", self.sessions);
        let mut ids = Vec::new();
        if packed {
            let text = format!("(The conversation so far, for you to continue; do not read it out.)\n{}", self.history.transcript());
            ids.push(id("all"));
            self.to_model.push(protocol::text_item(&ids[0], "user", &text));
        } else {
            for (n, line) in self.history.lines.iter().enumerate() {
                let item = id(&n.to_string());
                self.to_model.push(protocol::history_line(&item, line));
                ids.push(item);
            }
        }
        let note = id("note");
        self.to_model.push(protocol::text_item(&note, "system", &self.history.note(&self.call.profile.language)));
        ids.push(note);
        ids
    }

    /// A response has completed: if it is the first since a resume and neither spoke nor
    /// called a tool, the model took the replayed text as a cue to answer in text. The history
    /// goes again as one message, and the model is asked again.
    pub(super) fn check_resumed_answer(&mut self) {
        let Some(check) = self.resume_check.take() else { return };
        if check.spoke {
            return;
        }
        if check.packed {
            tracing::warn!(call_sid = %self.call.call_sid, "the resumed session still answers without audio");
            return;
        }
        tracing::warn!(call_sid = %self.call.call_sid, "the resumed session answered in text only: replaying the history as one message");
        for id in &check.ids {
            self.to_model.push(protocol::delete_item(id));
        }
        self.sessions += 1;
        let ids = self.replay(true);
        self.request_response(None);
        self.resume_check = Some(Check { ids, packed: true, spoke: false });
    }
}

#[cfg(test)]
mod tests {
    use super::CallerAudio;

    #[test]
    fn the_caller_s_audio_keeps_the_last_four_seconds_and_knows_speech_from_silence() {
        let mut audio = CallerAudio::default();
        audio.push(&vec![0xFF; 10 * 8000]);
        assert_eq!(audio.bytes.len(), CallerAudio::MAX);
        assert!(!audio.has_speech(), "μ-law 0xFF is silence");
        let loud: Vec<u8> = (0..160).map(|i| callkeeper_core::mulaw::encode(if i % 2 == 0 { 5000 } else { -5000 })).collect();
        audio.push(&loud);
        assert!(audio.has_speech());
        audio.clear();
        assert!(!audio.has_speech());
    }
}
