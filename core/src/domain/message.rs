//! WhatsApp (and SMS) messages on a contact's timeline.

use crate::domain::call::Call;
use crate::domain::ids::{AccountSid, MessageSid};
use crate::domain::phone::{Channel, E164};
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

/// The status recorded on an answer that could not be sent: WhatsApp's 24-hour window had
/// closed, and a template is needed instead.
pub const TEMPLATE_NEEDED: &str = "template_needed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageDirection {
    Inbound,
    Outbound,
}

impl MessageDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageDirection::Inbound => "inbound",
            MessageDirection::Outbound => "outbound",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "inbound" => Some(MessageDirection::Inbound),
            "outbound" => Some(MessageDirection::Outbound),
            _ => None,
        }
    }
}

/// A picture, voice note or file sent with a message: Twilio's URL, and once the reply worker
/// has it, where it is kept and (a voice note) what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub url: String,
    pub content_type: Option<String>,
    /// Where the bytes are kept in the blob store (`media/…`), once fetched from Twilio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_key: Option<String>,
    /// A voice note's words, by the calls' transcription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Why it could not be kept, or (a voice note) transcribed, for good: Twilio has no such
    /// media, the file is not audio the transcription reads. The message is answered anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Media {
    pub fn new(url: &str, content_type: Option<&str>) -> Media {
        Media { url: url.to_string(), content_type: content_type.map(str::to_string), blob_key: None, transcript: None, problem: None }
    }

    pub fn is_audio(&self) -> bool {
        self.content_type.as_deref().is_some_and(|t| t.starts_with("audio/"))
    }

    pub fn is_image(&self) -> bool {
        self.content_type.as_deref().is_some_and(|t| t.starts_with("image/"))
    }

    /// A file name extension for the content type (what the transcription API reads the format
    /// by); `bin` for anything else.
    pub fn extension(&self) -> &'static str {
        let essence = self.content_type.as_deref().unwrap_or("").split(';').next().unwrap_or("").trim();
        match essence {
            "audio/ogg" | "audio/opus" => "ogg",
            "audio/mpeg" | "audio/mp3" => "mp3",
            "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "m4a",
            "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
            "audio/webm" => "webm",
            "audio/amr" => "amr",
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/webp" => "webp",
            "image/gif" => "gif",
            "video/mp4" => "mp4",
            "application/pdf" => "pdf",
            _ => "bin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub message_sid: MessageSid,
    pub account_sid: AccountSid,
    pub channel: Channel,
    pub direction: MessageDirection,
    /// The other party.
    pub contact: E164,
    pub from: String,
    pub to: String,
    pub body: String,
    pub media: Vec<Media>,
    /// The WhatsApp profile name the sender chose, when Twilio passes it.
    pub profile_name: Option<String>,
    /// Twilio's status: `received` for inbound; `queued` … `delivered`, `read`, `failed` outbound.
    pub status: String,
    pub error_code: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When the reply job for this inbound message was enqueued; `None` until then.
    pub reply_enqueued_at: Option<Millis>,
}

/// A delivery status report for a message, as Twilio's status callback carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatusUpdate {
    pub message_sid: MessageSid,
    pub account_sid: AccountSid,
    pub channel: Channel,
    /// Our number sends, so the contact is the `To` of a status report.
    pub contact: E164,
    pub from: String,
    pub to: String,
    pub status: String,
    pub error_code: Option<String>,
    pub at: Millis,
}

/// What a status report did to the stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusApplied {
    Updated,
    /// The message already had this status or a later one (callbacks arrive out of order).
    Stale,
    /// We had no record of the message (sent from outside callkeeper): kept, body unknown.
    Created,
}

/// How far along a delivery status is. Twilio's status callbacks can arrive out of order, so a
/// status only replaces one of lower rank (`delivered` never goes back to `sent`).
pub fn status_rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" => 1,
        "queued" => 2,
        "sending" => 3,
        "sent" => 4,
        "receiving" => 4,
        "received" => 5,
        "delivered" => 5,
        "read" => 6,
        "undelivered" | "failed" | "canceled" => 7,
        _ => 0,
    }
}

/// An entry of a contact's timeline, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineItem {
    Call(Call),
    Message(Message),
}

impl TimelineItem {
    pub fn at(&self) -> Millis {
        match self {
            TimelineItem::Call(c) => c.created_at,
            TimelineItem::Message(m) => m.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::status_rank;

    #[test]
    fn statuses_only_move_forward() {
        assert!(status_rank("delivered") > status_rank("sent"));
        assert!(status_rank("read") > status_rank("delivered"));
        assert!(status_rank("failed") > status_rank("read"));
        assert!(status_rank("queued") > status_rank("something-new"));
    }
}
