//! Recordings Twilio reports through `recordingStatusCallback`.

use crate::domain::ids::{CallSid, RecordingSid};
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub recording_sid: RecordingSid,
    pub call_sid: CallSid,
    /// Twilio's media URL (fetch with Basic auth; append `.wav` or `.mp3`).
    pub url: Option<String>,
    pub status: RecordingStatus,
    pub duration_secs: Option<u64>,
    pub channels: Option<u64>,
    /// `StartCallRecording` for the whole call, `RecordVerb` for a voicemail, …
    pub source: Option<String>,
    pub error_code: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When its transcription job was enqueued; `None` until then.
    pub job_enqueued_at: Option<Millis>,
}

impl Recording {
    /// Only a completed recording has audio worth transcribing.
    pub fn wants_transcription(&self) -> bool {
        self.status == RecordingStatus::Completed
    }
}

crate::domain::status::twilio_status! {
    /// A recording's `RecordingStatus`, as Twilio's callback (or its REST API) gives it.
    RecordingStatus {
        InProgress = "in-progress",
        Completed = "completed",
        /// Twilio made no audio (a silent or too-short recording).
        Absent = "absent",
        Failed = "failed",
        Paused = "paused",
        Stopped = "stopped",
        Processing = "processing",
    }
}
