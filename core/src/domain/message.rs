//! WhatsApp (and SMS) messages on a contact's timeline.

use crate::domain::call::Call;
use crate::domain::ids::{AccountSid, MessageSid};
use crate::domain::phone::{Channel, E164};
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

crate::domain::status::twilio_status! {
    /// A message's status: Twilio's (`received` for inbound; `queued` … `delivered`, `read`,
    /// `failed` outbound), and two of callkeeper's own for answers that were not sent.
    MessageStatus {
        Accepted = "accepted",
        Scheduled = "scheduled",
        Queued = "queued",
        Sending = "sending",
        Sent = "sent",
        Receiving = "receiving",
        Received = "received",
        Delivered = "delivered",
        Read = "read",
        Undelivered = "undelivered",
        Failed = "failed",
        Canceled = "canceled",
        PartiallyDelivered = "partially_delivered",
        /// An answer that could not be sent: WhatsApp's 24-hour window had closed, and a
        /// template is needed instead.
        TemplateNeeded = "template_needed",
        /// An answer Twilio may or may not have taken (the request went out and no answer came
        /// back): not sent again, so the customer never gets it twice.
        Unconfirmed = "unconfirmed",
    }
}

impl MessageStatus {
    /// How far along a delivery status is. Twilio's status callbacks can arrive out of order,
    /// so a status only replaces one of lower rank (`delivered` never goes back to `sent`).
    pub fn rank(&self) -> u8 {
        use MessageStatus::*;
        match self {
            Accepted | Scheduled => 1,
            Queued => 2,
            Sending => 3,
            Sent | Receiving => 4,
            Received | Delivered | PartiallyDelivered => 5,
            Read => 6,
            Undelivered | Failed | Canceled => 7,
            TemplateNeeded | Unconfirmed | Other(_) => 0,
        }
    }
}

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
    pub status: MessageStatus,
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
    pub status: MessageStatus,
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
    use super::MessageStatus;
    fn status_rank(status: &str) -> u8 {
        MessageStatus::from(status).rank()
    }

    #[test]
    fn statuses_are_twilios_strings_and_an_unknown_one_is_kept() {
        assert_eq!(MessageStatus::from("delivered"), MessageStatus::Delivered);
        assert_eq!(serde_json::to_string(&MessageStatus::TemplateNeeded).unwrap(), "\"template_needed\"");
        let new: MessageStatus = serde_json::from_str("\"delivered_to_the_moon\"").unwrap();
        assert_eq!(new, MessageStatus::Other("delivered_to_the_moon".into()));
        assert_eq!(new.as_str(), "delivered_to_the_moon", "stored back as it came");
        assert_eq!(crate::domain::recording::RecordingStatus::from("absent").to_string(), "absent");
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(status_rank("delivered") > status_rank("sent"));
        assert!(status_rank("read") > status_rank("delivered"));
        assert!(status_rank("failed") > status_rank("read"));
        assert!(status_rank("queued") > status_rank("something-new"));
    }
}
