//! What the relay reports about a call's media stream: the stream's figures when it ends, and
//! per turn the latencies the caller felt.

use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a media stream ended, as the relay saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEnd {
    /// Twilio sent `stop`: the call hung up, or its TwiML moved on (a redirect).
    TwilioStop,
    /// The socket closed without a `stop`.
    SocketClosed,
    /// Reading the socket failed.
    SocketError,
    /// The relay was shutting down and the drain deadline passed.
    DrainDeadline,
    /// The voice agent ended the conversation.
    AgentHangup,
    /// The voice agent could not be started or failed mid-call.
    AgentFailed,
    /// The agent handed the call to a person (`transfer_to_human`).
    Transferred,
    /// Twilio sent no frame for `MEDIA_SILENCE_SECS` (it sends one every 20 ms, silence
    /// included): the media is lost, and the relay ends the stream so the fallback follows.
    MediaSilent,
    /// The relay was draining and moved the call to a stream on another relay (then Twilio sent
    /// `stop`).
    Moved,
}

impl StreamEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::TwilioStop => "twilio_stop",
            StreamEnd::SocketClosed => "socket_closed",
            StreamEnd::SocketError => "socket_error",
            StreamEnd::DrainDeadline => "drain_deadline",
            StreamEnd::AgentHangup => "agent_hangup",
            StreamEnd::AgentFailed => "agent_failed",
            StreamEnd::Transferred => "transferred",
            StreamEnd::MediaSilent => "media_silent",
            StreamEnd::Moved => "moved",
        }
    }
}

/// A stream's figures, written on the call once when the stream ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFigures {
    pub stream_sid: String,
    pub relay_instance: String,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub end: StreamEnd,
    /// Media frames from the caller.
    pub frames_in: u64,
    /// Media frames of agent audio sent to the caller.
    pub frames_out: u64,
    /// Caller frames missing, by Twilio's `chunk` numbering.
    pub gaps: u64,
    /// Frames counted and skipped, by kind (`invalid_json`, `unknown_event`, …).
    pub bad_frames: BTreeMap<String, u64>,
    pub marks_sent: u64,
    pub marks_heard: u64,
    pub barge_ins: u64,
    /// Caller frames dropped because the agent was too far behind to take them.
    pub agent_input_dropped: u64,
    /// Agent audio dropped, in 20 ms frames: late audio of an interrupted response, or audio
    /// beyond the playback buffer's cap.
    pub agent_audio_dropped: u64,
    /// Heartbeats written while the stream lasted.
    pub heartbeats: u64,
    /// Time the relay spent on one inbound frame, from read to handled, in microseconds.
    pub frame_us_p50: u64,
    pub frame_us_p99: u64,
    /// Errors the voice agent reported and went on from (the model's non-fatal `error` events).
    #[serde(default)]
    pub agent_errors: u64,
    /// With an agent that talks to a model (the Realtime API), what the relay adds, in
    /// microseconds: a caller frame read → its audio written to the model's socket, and the
    /// model's first audio of an answer read → its first frame written to Twilio's. 0 without.
    #[serde(default)]
    pub to_model_us_p50: u64,
    #[serde(default)]
    pub to_model_us_p99: u64,
    #[serde(default)]
    pub from_model_us_p50: u64,
    #[serde(default)]
    pub from_model_us_p99: u64,
}

impl StreamFigures {
    pub fn duration_ms(&self) -> u64 {
        self.ended_at.saturating_sub(self.started_at).max(0) as u64
    }
}

/// One exchange: the caller spoke and stopped, the agent answered. Turn 0 is the greeting, which
/// answers nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub seq: u32,
    /// When the agent found the end of the caller's speech.
    pub caller_stopped_at: Option<Millis>,
    /// When the answer's first audio reached the relay from the agent (the model's audio delta).
    #[serde(default)]
    pub model_audio_at: Option<Millis>,
    /// When the first frame of the answer left for Twilio.
    pub first_audio_at: Option<Millis>,
    /// When Twilio reported the answer's first mark played: the caller has heard it.
    pub first_mark_at: Option<Millis>,
    /// The caller spoke over the answer, which was cut at `heard_ms`.
    pub interrupted: bool,
    /// How much of the answer the caller heard, by the marks, when it was cut.
    pub heard_ms: Option<u64>,
    pub caller_text: Option<String>,
    pub agent_text: Option<String>,
}

impl Turn {
    pub fn new(seq: u32, caller_stopped_at: Option<Millis>) -> Turn {
        Turn {
            seq,
            caller_stopped_at,
            model_audio_at: None,
            first_audio_at: None,
            first_mark_at: None,
            interrupted: false,
            heard_ms: None,
            caller_text: None,
            agent_text: None,
        }
    }
}
