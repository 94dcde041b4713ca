//! The voice agent a call is bridged to, and what passes between it and the relay.
//!
//! The relay owns the socket and the clock; the agent owns the conversation. They talk over two
//! bounded channels, and neither ever waits on the other:
//!
//! - **relay → agent** ([`AgentInput`], [`INPUT_CAPACITY`] messages, 5 s of audio): the relay
//!   never blocks reading Twilio's frames. When the agent falls that far behind, the newest inputs
//!   are dropped and counted (`agent_input_dropped` in the stream's figures).
//! - **agent → relay** ([`AgentOutput`], [`OUTPUT_CAPACITY`] messages): the relay reads it at
//!   once, always, so control events (speech started, hang up) are never stuck behind audio. The
//!   audio goes to the playback buffer, capped at [`crate::playback::MAX_BUFFERED`]; audio
//!   beyond the cap is dropped and counted (`agent_audio_dropped`).

pub mod embedded;
pub mod history;
pub mod http_tools;
pub mod openai;
pub mod silent;
pub mod vad;

use crate::figures::Histogram;
use bytes::Bytes;
use callkeeper_core::ids::CallSid;
use callkeeper_core::phone::E164;
use callkeeper_core::profile::AgentProfile;
use callkeeper_core::store::CallStore;
use callkeeper_core::time::Millis;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const INPUT_CAPACITY: usize = 250;
pub const OUTPUT_CAPACITY: usize = 64;

/// Numbers an agent's responses, increasing within a call. Audio of a response the caller
/// interrupted is dropped if it arrives late.
pub type ResponseId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Caller,
    Agent,
}

/// What the relay tells the agent.
#[derive(Debug, Clone)]
pub enum AgentInput {
    /// 20 ms of the caller, μ-law, and when it reached the relay (by the wall clock, for turns,
    /// and by the monotonic one, for the relay's own latency).
    Audio {
        mulaw: Bytes,
        received_at: Millis,
        arrived: Instant,
    },
    Dtmf {
        digit: String,
    },
    /// Twilio played the response up to `heard_ms` (by our marks).
    Heard {
        response: ResponseId,
        heard_ms: u64,
    },
    /// The caller spoke over the response: it was cleared from Twilio's buffer at `heard_ms`.
    /// The agent should cancel it and remember only what was heard.
    Interrupted {
        response: ResponseId,
        heard_ms: u64,
    },
}

/// What the agent tells the relay.
#[derive(Debug, Clone)]
pub enum AgentOutput {
    /// μ-law audio of a response, any length; the relay paces it out in 20 ms frames. `made` is
    /// when the agent had it (read off the model's socket, or made).
    Audio {
        response: ResponseId,
        mulaw: Bytes,
        made: Instant,
    },
    /// No more audio for this response.
    ResponseDone {
        response: ResponseId,
    },
    /// The caller began to speak: the relay barges in if the agent is being heard.
    SpeechStarted,
    /// The caller stopped speaking at `at`: a turn boundary. The next response answers it.
    CallerTurnEnded {
        at: Millis,
    },
    Transcript {
        speaker: Speaker,
        text: String,
    },
    /// The agent is done with the call: once its audio has played, the relay ends it.
    Hangup {
        reason: String,
    },
    /// Hand the call to a person: once the agent's audio has played, the relay redirects the
    /// call to ring `to`.
    Transfer {
        to: E164,
        reason: String,
    },
    /// Something went wrong that the conversation survives: counted in the stream's figures.
    Error {
        message: String,
    },
    /// The agent cannot go on (sent for it when `converse` fails): the stream ends at once.
    Failed {
        reason: String,
    },
}

/// The call an agent is about to talk to.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub call_sid: CallSid,
    pub stream_sid: String,
    pub from: String,
    pub to: String,
    /// The other party, when their number is E.164: whose lead `save_lead` adds to.
    pub contact: Option<E164>,
    /// How the agent behaves on this number.
    pub profile: Arc<AgentProfile>,
    /// Where `transfer_to_human` rings: the profile's number, else `TRANSFER_NUMBER`.
    pub transfer_number: Option<E164>,
    /// An agent that writes to a model records here how long each caller frame waited in the
    /// relay before it was written (arrival → write done), in microseconds: the stream's figures.
    pub to_model: Arc<Mutex<Histogram>>,
    /// The conversation so far, when this stream continues one (a later generation, on another
    /// relay): the agent resumes it instead of greeting the caller again.
    pub earlier: Option<history::History>,
    /// The call's trace (`CALL_TRACES`): the model's events either way go in it.
    pub tracer: crate::trace::Tracer,
    /// The index `search_knowledge` answers from, when the profile's knowledge is large.
    pub knowledge: Option<Arc<crate::knowledge::KnowledgeIndex>>,
}

/// The agent's ends of the two channels.
pub struct AgentLink {
    pub input: mpsc::Receiver<AgentInput>,
    pub output: mpsc::Sender<AgentOutput>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// May pass: a drop, a timeout, a server error. A new session is worth trying.
    #[error("voice agent unavailable: {0}")]
    Unavailable(String),
    /// Would fail the same way again: a key refused, a format the model reverted.
    #[error("voice agent refused: {0}")]
    Refused(String),
}

#[async_trait::async_trait]
pub trait VoiceAgent: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Holds the conversation until `link.input` closes (the stream ended) or the agent hangs
    /// up. Returning early without [`AgentOutput::Hangup`], or with an error, ends the stream;
    /// Twilio then follows `<Connect action>` and the caller gets the fallback.
    async fn converse(&self, call: CallInfo, link: AgentLink) -> Result<(), AgentError>;
}

/// The agent the configuration names.
pub fn from_config(config: &callkeeper_core::config::Config, calls: Arc<dyn CallStore>) -> Arc<dyn VoiceAgent> {
    use callkeeper_core::config::VoiceAgentKind;
    match config.relay.voice_agent {
        VoiceAgentKind::Embedded => Arc::new(embedded::EmbeddedAgent::for_language(&config.language)),
        VoiceAgentKind::Silent => Arc::new(silent::SilentAgent),
        // The configuration refuses `openai` without a key, so this always has one.
        VoiceAgentKind::OpenAi => match openai::OpenAiAgent::from_config(config, calls) {
            Some(agent) => Arc::new(agent),
            None => Arc::new(embedded::EmbeddedAgent::for_language(&config.language)),
        },
    }
}
