//! The transcription worker: a recording becomes an object in the blob store, a transcript with
//! who said what and when, a summary, the caller's intent and the lead's details on the call.
//!
//! One job per RecordingSid, claimed in the store: a duplicate delivery is acknowledged, not
//! redone. An `absent` or too-short recording is recorded and skipped. Any failure is returned
//! for the queue to retry (and, after `QUEUE_MAX_RECEIVES`, dead-letter); the claim is dropped so
//! the retry can take it. Without an OpenAI key the recording is still kept, and the call says
//! plainly that transcription is not configured.

use crate::domain::call::CallEvent;
use crate::domain::ids::{CallSid, RecordingSid};
use crate::domain::job::Job;
use crate::domain::time::{format_ms, now_ms};
use crate::domain::transcript::{JobClaim, Line, Speaker, Transcript};
use crate::process::config::Config;
use crate::store::{BlobStore, CallStore, StoreError};
use crate::twilio::rest::{RestError, TwilioRest};
use crate::work::claims;
use crate::work::openai::{OpenAi, OpenAiError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const NOT_CONFIGURED: &str = "transcription is not configured (no OPENAI_API_KEY): the recording is kept, untranscribed";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job body is not a transcription job: {0}")]
    BadJob(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Twilio: {0}")]
    Twilio(#[from] RestError),
    #[error(transparent)]
    OpenAi(#[from] OpenAiError),
    #[error("recording: {0}")]
    Audio(#[from] crate::audio::wav::BadWav),
    #[error("another worker holds the job")]
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Transcribed {
        lines: usize,
    },
    /// Done before: acknowledged, nothing redone.
    Duplicate,
    Skipped(String),
    /// Kept, but no transcription configured.
    Kept,
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Transcribed { .. } => "transcribed",
            Outcome::Duplicate => "duplicate",
            Outcome::Skipped(_) => "skipped",
            Outcome::Kept => "kept",
        }
    }
}

#[derive(Clone)]
pub struct Transcriber {
    calls: Arc<dyn CallStore>,
    blobs: Arc<dyn BlobStore>,
    /// Where a call's follow-ups are put once it is analysed.
    queue: Arc<dyn crate::store::JobQueue>,
    twilio: TwilioRest,
    openai: Option<OpenAi>,
    config: Arc<Config>,
}

/// Where a recording is kept: by date, then call.
pub fn blob_key(call_sid: &CallSid, recording_sid: &RecordingSid, at: crate::domain::time::Millis) -> String {
    let date = &format_ms(at)[..10];
    format!("recordings/{}/{call_sid}/{recording_sid}.wav", date.replace('-', "/"))
}

impl Transcriber {
    pub fn new(stores: &crate::store::Stores, twilio: TwilioRest, config: Arc<Config>) -> Transcriber {
        let openai = config.openai.clone().map(OpenAi::new);
        Transcriber { calls: stores.calls.clone(), blobs: stores.blobs.clone(), queue: stores.queue.clone(), twilio, openai, config }
    }

    /// The call is analysed (or kept without transcription): its follow-ups, if its profile
    /// asks for any, go on the replies queue.
    async fn follow_up(&self, call_sid: &CallSid) -> Result<(), JobError> {
        if crate::work::follow_ups::enqueue_if_wanted(self.calls.as_ref(), self.queue.as_ref(), &self.config, call_sid).await? {
            tracing::info!(call_sid = %call_sid, "follow-ups queued");
        }
        Ok(())
    }

    /// The first backoff of a failed job.
    pub fn retry_base(&self) -> Duration {
        self.config.jobs.retry_base
    }

    /// How long its claim on a job holds unrenewed.
    pub fn lease(&self) -> Duration {
        self.config.jobs.lease
    }

    /// Does one job from its queue body.
    pub async fn handle(&self, body: &str) -> Result<Outcome, JobError> {
        let (call_sid, recording_sid) = match Job::from_body(body) {
            Ok(Job::Transcribe { call_sid, recording_sid }) => (call_sid, recording_sid),
            Ok(other) => return Err(JobError::BadJob(format!("{other:?}"))),
            Err(e) => return Err(JobError::BadJob(e.to_string())),
        };
        let key = recording_sid.as_str();
        match self.calls.claim_job(key, now_ms(), self.config.jobs.lease).await? {
            JobClaim::Done => return Ok(Outcome::Duplicate),
            JobClaim::Busy => return Err(JobError::Busy),
            JobClaim::Claimed => {}
        }
        match claims::holding(self.calls.as_ref(), key, self.config.jobs.lease, self.work(&call_sid, &recording_sid)).await {
            Ok(outcome) => {
                self.calls.finish_job(key, now_ms()).await?;
                Ok(outcome)
            }
            Err(e) => {
                // Let the retry claim it at once; if this fails too, the lease runs out.
                let _ = self.calls.drop_job_claim(key).await;
                Err(e)
            }
        }
    }

    async fn event(&self, call_sid: &CallSid, recording_sid: &RecordingSid, kind: &str, detail: serde_json::Value) -> Result<(), JobError> {
        let event = CallEvent { at: now_ms(), kind: kind.into(), key: format!("{kind}:{recording_sid}"), detail };
        self.calls.add_event(call_sid, &event).await?;
        Ok(())
    }

    async fn work(&self, call_sid: &CallSid, recording_sid: &RecordingSid) -> Result<Outcome, JobError> {
        let recording = self.calls.recordings(call_sid).await?.into_iter().find(|r| &r.recording_sid == recording_sid);
        let Some(recording) = recording else {
            let reason = "the recording is not on the call".to_string();
            self.event(call_sid, recording_sid, "transcription_skipped", json!({ "reason": reason })).await?;
            return Ok(Outcome::Skipped(reason));
        };
        let too_short = recording.duration_secs.is_some_and(|d| d < self.config.transcription.min_secs);
        let skip = match (recording.status.as_str(), &recording.url) {
            ("absent", _) => Some("the recording is absent (no audio)".to_string()),
            (_, None) => Some("the recording has no media URL".to_string()),
            _ if too_short => Some(format!("the recording is shorter than {} s", self.config.transcription.min_secs)),
            _ => None,
        };
        if let Some(reason) = skip {
            self.event(
                call_sid,
                recording_sid,
                "transcription_skipped",
                json!({ "reason": reason, "duration_secs": recording.duration_secs }),
            )
            .await?;
            return Ok(Outcome::Skipped(reason));
        }
        // One copy of the audio for the whole job: the blob store shares it, the channels are
        // read from it in place.
        let audio = bytes::Bytes::from(self.twilio.fetch_recording(recording_sid).await?);
        let key = blob_key(call_sid, recording_sid, recording.created_at);
        self.blobs.put(&key, audio.clone()).await?;

        let language = self.config.transcription.language.clone();
        let mut transcript = Transcript {
            recording_sid: recording_sid.clone(),
            created_at: now_ms(),
            language: language.clone(),
            lines: vec![],
            summary: None,
            intent: None,
            lead: serde_json::Value::Null,
            note: None,
            blob_key: Some(key.clone()),
        };
        let Some(openai) = &self.openai else {
            transcript.note = Some(NOT_CONFIGURED.into());
            self.calls.put_transcript(call_sid, &transcript).await?;
            self.event(call_sid, recording_sid, "recording_kept", json!({ "blob_key": key, "note": NOT_CONFIGURED })).await?;
            self.follow_up(call_sid).await?;
            return Ok(Outcome::Kept);
        };

        // Dual-channel: the caller and the agent each on their own channel, transcribed apart
        // and merged by time. One channel (a voicemail): one voice. A long channel goes in
        // pieces under OpenAI's upload limit, one piece in memory at a time.
        let wav = crate::audio::wav::view(&audio)?;
        let speakers: &[Speaker] = if wav.channels >= 2 { &[Speaker::Caller, Speaker::Agent] } else { &[Speaker::Mixed] };
        let mut lines: Vec<Line> = Vec::new();
        for (channel, speaker) in speakers.iter().enumerate() {
            for piece in crate::audio::chunks::pieces(&wav, channel) {
                let offset = crate::audio::chunks::start_ms(&piece, wav.sample_rate);
                let heard = openai.transcribe(wav.mono_wav(channel, piece), &language, *speaker).await?;
                lines.extend(heard.into_iter().map(|l| Line { start_ms: l.start_ms + offset, end_ms: l.end_ms + offset, ..l }));
            }
        }
        lines.sort_by_key(|l| (l.start_ms, l.end_ms));
        let text: String = lines.iter().map(|l| format!("{:?}: {}\n", l.speaker, l.text).to_lowercase()).collect();
        // The lead's fields are those of the call's agent profile: the ones its agent's save_lead took.
        let call = self.calls.get_call(call_sid).await?;
        let number = call.as_ref().and_then(crate::domain::profile::business_number);
        let profile = crate::work::profiles::resolve(self.calls.as_ref(), &self.config, number.as_ref()).await?;
        let fields = if lines.is_empty() { json!({}) } else { openai.extract(&text, &profile.extraction_schema(), &language).await? };
        transcript.summary = fields["summary"].as_str().map(str::to_string);
        transcript.intent = fields["intent"].as_str().map(str::to_string);
        let mut lead = fields.clone();
        if let Some(map) = lead.as_object_mut() {
            map.remove("summary");
            map.remove("intent");
        }
        let live = self.calls.lead(call_sid).await?;
        let added = crate::domain::profile::missing_fields(live.as_ref(), &lead);
        if added.as_object().is_some_and(|m| !m.is_empty()) {
            let contact = call.as_ref().and_then(|c| c.contact.clone());
            self.calls.save_lead(call_sid, contact.as_ref(), &added, now_ms()).await?;
        }
        transcript.lead = lead;
        if lines.is_empty() {
            transcript.note = Some("nothing was said".into());
        }
        transcript.lines = lines;
        self.calls.put_transcript(call_sid, &transcript).await?;
        self.event(
            call_sid,
            recording_sid,
            "transcribed",
            json!({ "lines": transcript.lines.len(), "blob_key": key, "summary": transcript.summary }),
        )
        .await?;

        self.follow_up(call_sid).await?;
        if self.config.transcription.delete_from_twilio {
            self.twilio.delete_recording(recording_sid).await?;
            self.event(call_sid, recording_sid, "twilio_recording_deleted", json!({})).await?;
        }
        Ok(Outcome::Transcribed { lines: transcript.lines.len() })
    }
}

/// Keeps a recording Twilio reported (its callback, or the reconciler finding it on Twilio's
/// list), with an event saying who, and enqueues its transcription once. Returns whether a job
/// was enqueued.
///
/// Enqueue, then mark: a crash between the two enqueues again on the next report, and the
/// worker's claim by RecordingSid makes the duplicate harmless. Never the other way round, which
/// could lose the job.
pub async fn keep_recording(
    calls: &dyn crate::store::CallStore,
    queue: &dyn crate::store::JobQueue,
    recording: &crate::domain::recording::Recording,
    reported_by: &str,
) -> crate::store::StoreResult<bool> {
    let at = crate::domain::time::now_ms();
    let stored = calls.put_recording(recording).await?;
    let detail = serde_json::json!({ "recording_sid": recording.recording_sid, "status": recording.status,
        "duration_secs": recording.duration_secs, "source": recording.source, "error_code": recording.error_code, "by": reported_by });
    let key = format!("recording:{}:{}", recording.recording_sid, recording.status);
    calls.add_event(&recording.call_sid, &crate::domain::call::CallEvent { at, kind: "recording".into(), key, detail }).await?;
    if !(stored.wants_transcription() && stored.job_enqueued_at.is_none()) {
        return Ok(false);
    }
    let job = crate::domain::job::Job::Transcribe { call_sid: recording.call_sid.clone(), recording_sid: recording.recording_sid.clone() };
    crate::store::enqueue(queue, &job).await?;
    calls.mark_recording_enqueued(&recording.recording_sid, crate::domain::time::now_ms()).await?;
    tracing::info!(call_sid = %recording.call_sid, recording_sid = %recording.recording_sid, reported_by, "transcription enqueued");
    Ok(true)
}
