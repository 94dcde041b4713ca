//! Work the webhooks hand to the workers through the job queue.

use crate::domain::ids::{CallSid, MessageSid, RecordingSid};
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

/// The queues: in AWS each is an SQS queue with its own dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    /// Recordings to download, transcribe and summarize.
    Transcription,
    /// Inbound WhatsApp messages to answer, and follow-ups after calls.
    Replies,
    /// Business events to deliver to `EVENTS_WEBHOOK_URL`.
    Events,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Transcription, QueueName::Replies, QueueName::Events];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Transcription => "transcription",
            QueueName::Replies => "replies",
            QueueName::Events => "events",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    Transcribe {
        call_sid: CallSid,
        recording_sid: RecordingSid,
    },
    WhatsappReply {
        message_sid: MessageSid,
        contact: E164,
    },
    DeliverEvent {
        event: crate::domain::events::BusinessEvent,
    },
    /// The messages a call's profile asks for once the call is analysed.
    FollowUp {
        call_sid: CallSid,
    },
}

impl Job {
    pub fn queue(&self) -> QueueName {
        match self {
            Job::Transcribe { .. } => QueueName::Transcription,
            Job::WhatsappReply { .. } | Job::FollowUp { .. } => QueueName::Replies,
            Job::DeliverEvent { .. } => QueueName::Events,
        }
    }
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job always serializes")
    }
    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// A message received from a queue, invisible to other receivers until its visibility timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    /// Identifies this receive: acknowledging with an older receipt does nothing.
    pub receipt: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    pub body: String,
}

/// A message that failed too often and waits in the dead-letter queue for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub queue: QueueName,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Millis,
    pub dead_at: Millis,
    /// The last failure a worker reported, if it reported one.
    pub last_error: Option<String>,
}

/// The worker's claim on a job: one worker does a job once, however often it is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobClaim {
    /// This worker holds it now.
    Claimed,
    /// Done before: acknowledge, do nothing.
    Done,
    /// Another worker holds it (its lease has not run out): try again later.
    Busy,
}
