//! `recording_done`: keep the recording, and enqueue its transcription once.

use crate::signed_form::SignedForm;
use crate::webhook::{AppState, WebhookError};
use axum::extract::State;
use axum::http::StatusCode;
use callkeeper_core::ids::{CallSid, RecordingSid};
use callkeeper_core::recording::Recording;
use callkeeper_core::time::now_ms;

pub async fn recording_done(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<StatusCode, WebhookError> {
    let call_sid: CallSid = form.parse_required("CallSid")?;
    let recording_sid: RecordingSid = form.parse_required("RecordingSid")?;
    let status = form.required("RecordingStatus")?.to_string();
    let at = now_ms();
    let recording = Recording {
        recording_sid: recording_sid.clone(),
        call_sid: call_sid.clone(),
        url: form.get("RecordingUrl").map(str::to_string),
        status: status.as_str().into(),
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
    let enqueued = callkeeper_core::transcription::keep_recording(
        state.stores.calls.as_ref(),
        state.stores.queue.as_ref(),
        &recording,
        "recording_done",
    )
    .await?;
    if !enqueued && status == "absent" {
        tracing::warn!(call_sid = %call_sid, recording_sid = %recording_sid, error_code = ?recording.error_code, "recording absent: no audio");
    }
    Ok(StatusCode::NO_CONTENT)
}
