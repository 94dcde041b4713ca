//! `recording_done`: keep the recording, and enqueue its transcription once.

use crate::app::{AppState, WebhookError};
use crate::signed_form::SignedForm;
use axum::extract::State;
use axum::http::StatusCode;
use callkeeper_core::call::CallEvent;
use callkeeper_core::ids::{CallSid, RecordingSid};
use callkeeper_core::job::Job;
use callkeeper_core::recording::Recording;
use callkeeper_core::store::enqueue;
use callkeeper_core::time::now_ms;
use serde_json::json;

pub async fn recording_done(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<StatusCode, WebhookError> {
    let call_sid: CallSid = form.parse_required("CallSid")?;
    let recording_sid: RecordingSid = form.parse_required("RecordingSid")?;
    let status = form.required("RecordingStatus")?.to_string();
    let at = now_ms();
    let recording = Recording {
        recording_sid: recording_sid.clone(),
        call_sid: call_sid.clone(),
        url: form.get("RecordingUrl").map(str::to_string),
        status: status.clone(),
        duration_secs: form.parse_count("RecordingDuration")?,
        channels: form.parse_count("RecordingChannels")?,
        source: form.get("RecordingSource").map(str::to_string),
        error_code: form.get("ErrorCode").map(str::to_string),
        created_at: at,
        updated_at: at,
        job_enqueued_at: None,
    };
    if recording.wants_transcription() && recording.url.is_none() {
        return Err(WebhookError::BadRequest("missing field RecordingUrl".into()));
    }
    let store = state.stores.calls.as_ref();
    let stored = store.put_recording(&recording).await?;
    let detail = json!({ "recording_sid": recording_sid, "status": status, "duration_secs": recording.duration_secs,
                         "source": recording.source, "error_code": recording.error_code });
    let key = format!("recording:{recording_sid}:{status}");
    store.add_event(&call_sid, &CallEvent { at, kind: "recording".into(), key, detail }).await?;

    // Enqueue, then mark: a crash between the two enqueues again on Twilio's retry, and the
    // worker's claim by RecordingSid makes the duplicate harmless. Never the other way round,
    // which could lose the job.
    if stored.wants_transcription() && stored.job_enqueued_at.is_none() {
        let job = Job::Transcribe { call_sid: call_sid.clone(), recording_sid: recording_sid.clone() };
        enqueue(state.stores.queue.as_ref(), &job).await?;
        store.mark_recording_enqueued(&recording_sid, now_ms()).await?;
        tracing::info!(call_sid = %call_sid, recording_sid = %recording_sid, "transcription enqueued");
    } else if status == "absent" {
        tracing::warn!(call_sid = %call_sid, recording_sid = %recording_sid, error_code = ?recording.error_code, "recording absent: no audio");
    }
    Ok(StatusCode::NO_CONTENT)
}
