//! Recordings Twilio reports through `recordingStatusCallback`.

use crate::ids::{CallSid, RecordingSid};
use crate::time::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub recording_sid: RecordingSid,
    pub call_sid: CallSid,
    /// Twilio's media URL (fetch with Basic auth; append `.wav` or `.mp3`).
    pub url: Option<String>,
    /// `completed`, `absent` (no audio), `in-progress`, `failed`, …
    pub status: String,
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
        self.status == "completed"
    }
}

/// Keeps a recording Twilio reported (its callback, or the reconciler finding it on Twilio's
/// list), with an event saying who, and enqueues its transcription once. Returns whether a job
/// was enqueued.
///
/// Enqueue, then mark: a crash between the two enqueues again on the next report, and the
/// worker's claim by RecordingSid makes the duplicate harmless. Never the other way round, which
/// could lose the job.
pub async fn keep(
    calls: &dyn crate::store::CallStore,
    queue: &dyn crate::store::JobQueue,
    recording: &Recording,
    reported_by: &str,
) -> crate::store::StoreResult<bool> {
    let at = crate::time::now_ms();
    let stored = calls.put_recording(recording).await?;
    let detail = serde_json::json!({ "recording_sid": recording.recording_sid, "status": recording.status,
        "duration_secs": recording.duration_secs, "source": recording.source, "error_code": recording.error_code, "by": reported_by });
    let key = format!("recording:{}:{}", recording.recording_sid, recording.status);
    calls.add_event(&recording.call_sid, &crate::call::CallEvent { at, kind: "recording".into(), key, detail }).await?;
    if !(stored.wants_transcription() && stored.job_enqueued_at.is_none()) {
        return Ok(false);
    }
    let job = crate::job::Job::Transcribe { call_sid: recording.call_sid.clone(), recording_sid: recording.recording_sid.clone() };
    crate::store::enqueue(queue, &job).await?;
    calls.mark_recording_enqueued(&recording.recording_sid, crate::time::now_ms()).await?;
    tracing::info!(call_sid = %recording.call_sid, recording_sid = %recording.recording_sid, reported_by, "transcription enqueued");
    Ok(true)
}
