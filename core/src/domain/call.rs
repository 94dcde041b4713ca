//! A call and its lifecycle.
//!
//! ```text
//! ringing ──> awaiting_stream <──> streaming ──> completed
//!    │             │    │              │            ^
//!    └─────────────┼────┴──> fallback <┘            │
//!                  │            └───────────────────┤
//!                  │         streaming ──> transferred ─┤ (the agent handed the call to a person)
//!                  └────────────────────────────────┘ (caller hung up before the stream)
//! ```
//! `streaming ──> awaiting_stream` is the next stream generation: a fault (a relay crash or hang, a
//! lost socket) or a planned move (a draining relay) continues the conversation on a new stream.
//! Every transition is conditional on the current status (and, where it matters, the
//! generation), so Twilio's retries and the races between the watchdog, the relay and
//! `stream_ended` change nothing twice.

use crate::domain::ids::{AccountSid, CallSid};
use crate::domain::phone::E164;
use crate::domain::stream_report::StreamFigures;
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Known (an outbound call we placed), not yet answered with TwiML.
    Ringing,
    /// TwiML served; waiting for the relay to see the stream's `start`.
    AwaitingStream,
    /// The relay holds the media stream.
    Streaming,
    /// The stream failed; the caller is in the fallback (voicemail or a person).
    Fallback,
    /// The agent handed the call to a person (`transfer_to_human`): it rings them now.
    Transferred,
    /// Over.
    Completed,
}

impl CallStatus {
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Ringing,
        CallStatus::AwaitingStream,
        CallStatus::Streaming,
        CallStatus::Fallback,
        CallStatus::Transferred,
        CallStatus::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ringing => "ringing",
            CallStatus::AwaitingStream => "awaiting_stream",
            CallStatus::Streaming => "streaming",
            CallStatus::Fallback => "fallback",
            CallStatus::Transferred => "transferred",
            CallStatus::Completed => "completed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the lifecycle has an edge from `self` to `to`.
    pub fn can_become(self, to: CallStatus) -> bool {
        use CallStatus::*;
        matches!(
            (self, to),
            (Ringing, AwaitingStream)
                | (Ringing, Fallback)
                | (Ringing, Completed)
                | (AwaitingStream, Streaming)
                | (AwaitingStream, Fallback)
                | (AwaitingStream, Completed)
                // The next stream generation: the conversation goes on on a new stream.
                | (Streaming, AwaitingStream)
                | (Streaming, Fallback)
                | (Streaming, Completed)
                | (Streaming, Transferred)
                | (Fallback, Completed)
                | (Transferred, Completed)
        )
    }

    /// Still on the line: the watchdog's concern.
    pub fn is_active(self) -> bool {
        matches!(self, CallStatus::Ringing | CallStatus::AwaitingStream | CallStatus::Streaming)
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// A call as the CRM keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub call_sid: CallSid,
    pub account_sid: AccountSid,
    /// As Twilio sent them: a number, or `anonymous`, `client:…`, `sip:…`.
    pub from: String,
    pub to: String,
    /// The other party, when their number is E.164: the contact whose timeline has this call.
    pub contact: Option<E164>,
    pub direction: Direction,
    pub status: CallStatus,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When `status` last changed: the watchdog's start timeout counts from here.
    pub status_at: Millis,
    pub stream_sid: Option<String>,
    /// Why the call fell back: `stream_never_started`, `stream_ended_abnormally`, …
    pub fallback_reason: Option<String>,
    /// What the fallback was: `voicemail` or `dial`.
    pub fallback_action: Option<String>,
    /// Why the call ended: `agent_hangup`, `caller_hangup`, `fallback_done`, …
    pub end_reason: Option<String>,
    /// The last `CallStatus` Twilio reported (`in-progress`, `completed`, `no-answer`, …).
    pub twilio_status: Option<String>,
    /// When the relay last saw media from the caller, as written by its heartbeat.
    pub heartbeat_at: Option<Millis>,
    /// The relay instance holding (or that held) the stream.
    pub relay_instance: Option<String>,
    /// The number the agent transferred the call to.
    #[serde(default)]
    pub transfer_to: Option<String>,
    /// The stream's figures, once it has ended.
    pub stream: Option<Box<StreamFigures>>,
    /// The watchdog claimed the call for the fallback and has not yet got Twilio to redirect
    /// it: it stays on the watchdog's list until it has.
    pub redirect_pending: bool,
    /// The call's stream: 0 for the first, one more each time a fault or a move starts the
    /// conversation again on a new stream. A stream of another generation changes nothing.
    #[serde(default)]
    pub generation: u32,
    /// Of those new streams, the ones a fault made (a relay crash or hang, a lost socket):
    /// bounded, so a fault that repeats ends in the fallback.
    #[serde(default)]
    pub recoveries: u32,
}

impl Call {
    /// How the call went, in a word: `live` (on the line), `fallback` (the stream failed; the
    /// caller got the voicemail or a person), `conversation` (the agent held the call), `missed`
    /// (it ended before any of that).
    pub fn outcome(&self) -> &'static str {
        if self.status.is_active() {
            "live"
        } else if self.fallback_reason.is_some() {
            "fallback"
        } else if self.stream_sid.is_some() {
            "conversation"
        } else {
            "missed"
        }
    }
}

/// What the watchdog reads of a call on its list (active, or with a redirect pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCall {
    pub call_sid: CallSid,
    pub status: CallStatus,
    pub status_at: Millis,
    pub heartbeat_at: Option<Millis>,
    pub redirect_pending: bool,
}

/// A call to create. Its initial status is `awaiting_stream` for calls answered with TwiML in the
/// same step, `ringing` for outbound calls placed before Twilio asks for their TwiML.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub call_sid: CallSid,
    pub account_sid: AccountSid,
    pub from: String,
    pub to: String,
    pub contact: Option<E164>,
    pub direction: Direction,
    pub status: CallStatus,
    pub twilio_status: Option<String>,
    pub at: Millis,
}

/// Fields a write sets on the call besides its status; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallPatch {
    pub stream_sid: Option<String>,
    pub fallback_reason: Option<String>,
    pub fallback_action: Option<String>,
    pub end_reason: Option<String>,
    pub twilio_status: Option<String>,
    pub relay_instance: Option<String>,
    pub redirect_pending: Option<bool>,
    pub transfer_to: Option<String>,
    pub generation: Option<u32>,
    pub recoveries: Option<u32>,
}

/// Something that happened to a call, kept in order for `calls show` and audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub at: Millis,
    /// `twiml_served`, `stream_status`, `stream_ended`, `fallback`, `recording`, …
    pub kind: String,
    /// Makes the event idempotent: a second event with the same key on the same call is ignored,
    /// so a retried webhook records nothing twice.
    pub key: String,
    pub detail: serde_json::Value,
}

/// What a conditional transition did.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The call was in one of the expected states and now has the new one.
    Applied(Call),
    /// The call was in another state; nothing changed.
    Refused(Call),
    NotFound,
}

/// What `create_call` did: Twilio retries, so the call may already exist.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(Call),
    Existing(Call),
}

impl Created {
    pub fn call(&self) -> &Call {
        match self {
            Created::New(call) | Created::Existing(call) => call,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_edges() {
        use CallStatus::*;
        assert!(Ringing.can_become(AwaitingStream));
        assert!(AwaitingStream.can_become(Fallback));
        assert!(Streaming.can_become(Completed));
        assert!(!Completed.can_become(Streaming));
        assert!(!Fallback.can_become(Streaming));
        assert!(Streaming.can_become(AwaitingStream), "a new stream generation");
        assert!(!Streaming.can_become(Ringing));
        for s in CallStatus::ALL {
            assert_eq!(CallStatus::parse(s.as_str()), Some(s));
            assert!(!s.can_become(s), "{s} to itself is not a transition");
        }
    }
}
