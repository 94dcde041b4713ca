//! What the transcription worker writes on a call: who said what and when, a summary, the
//! caller's intent and the lead's details, as the CRM keeps them.

use crate::domain::ids::RecordingSid;
use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Caller,
    Agent,
    /// A single-channel recording (a voicemail): one voice, or both mixed.
    Mixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub speaker: Speaker,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub recording_sid: RecordingSid,
    pub created_at: Millis,
    /// The language asked of the transcription, e.g. `he`.
    pub language: String,
    /// In time order.
    pub lines: Vec<Line>,
    pub summary: Option<String>,
    pub intent: Option<String>,
    /// The extraction's other fields (name, budget, area, …), as the configured schema has them.
    pub lead: serde_json::Value,
    /// Why there are no lines, when there are none (`transcription is not configured`, …).
    pub note: Option<String>,
    /// Where the recording's audio is kept.
    pub blob_key: Option<String>,
}

pub use crate::domain::job::JobClaim;
