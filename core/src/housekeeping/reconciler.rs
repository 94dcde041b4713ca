//! The backstop behind Twilio's retries, which end: every few minutes, what Twilio holds is
//! compared with what callkeeper kept.
//!
//! - **Recordings**: Twilio's list of the account's recent recordings. One callkeeper never heard
//!   of (its `recording_done` was lost), or kept without enqueueing its transcription, is kept
//!   and enqueued now, exactly as the callback would have done; a call callkeeper has no record of
//!   at all is recorded from Twilio's account of it.
//! - **Calls whose final status never came**: a recent call left `fallback` or `transferred`
//!   (the `stream_ended` that ends it was lost) for longer than [`SETTLE`] is looked up on Twilio,
//!   and closed out as `completed` when Twilio says it is over. (Calls still on the watchdog's
//!   list are the watchdog's: it redirects or closes them.)
//!
//! Everything it writes is what the webhooks would have written, and as idempotent, so it can
//! run beside them, twice, or late.

use crate::domain::call::{CallEvent, CallPatch, CallStatus, Direction, NewCall};
use crate::domain::ids::{CallSid, RecordingSid};
use crate::domain::recording::Recording;
use crate::domain::time::{now_ms, Millis};
use crate::process::config::Config;
use crate::store::{CallStore, JobQueue, StoreError};
use crate::twilio::rest::{RestError, TwilioRecording, TwilioRest};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often it runs (a scheduled Lambda in AWS, a loop in `serve`).
pub const EVERY: Duration = Duration::from_secs(5 * 60);
/// How far back it looks: recordings and calls of the last two hours.
pub const LOOK_BACK: Duration = Duration::from_secs(2 * 3600);
/// How old something must be before it counts as missing: its callback may still be on its way.
pub const SETTLE: Duration = Duration::from_secs(5 * 60);
/// Recent calls read from the store per pass.
const RECENT_CALLS: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// Recordings on Twilio's list in the window.
    pub recordings_listed: usize,
    /// Recordings callkeeper had missed (or not enqueued), now kept and enqueued.
    pub recordings_recovered: usize,
    /// Calls callkeeper had no record of, recorded from Twilio.
    pub calls_recorded: usize,
    /// Calls left without their final status, looked up on Twilio.
    pub calls_checked: usize,
    /// Of those, closed out because Twilio says they are over.
    pub calls_closed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Twilio(#[from] RestError),
}

#[derive(Clone)]
pub struct Reconciler {
    calls: Arc<dyn CallStore>,
    queue: Arc<dyn JobQueue>,
    twilio: TwilioRest,
    config: Arc<Config>,
}

impl Reconciler {
    pub fn new(calls: Arc<dyn CallStore>, queue: Arc<dyn JobQueue>, twilio: TwilioRest, config: Arc<Config>) -> Reconciler {
        Reconciler { calls, queue, twilio, config }
    }

    /// One comparison of Twilio's account with the store.
    pub async fn pass(&self) -> Result<Reconciled, ReconcileError> {
        let now = now_ms();
        let (since, settled) = (now - LOOK_BACK.as_millis() as Millis, now - SETTLE.as_millis() as Millis);
        let mut report = Reconciled::default();
        // The list filters by GMT date; the window is cut here.
        let listed = self.twilio.recordings_since(&crate::domain::time::date_of(since)).await?;
        for found in listed.iter().filter(|r| r.created_at.is_some_and(|at| at >= since && at <= settled)) {
            report.recordings_listed += 1;
            self.recording(found, &mut report).await?;
        }
        for call in self.calls.recent_calls(None, RECENT_CALLS).await? {
            let left = matches!(call.status, CallStatus::Fallback | CallStatus::Transferred);
            if left && call.status_at <= settled && call.created_at >= since {
                report.calls_checked += 1;
                if self.close_if_over(&call.call_sid).await? {
                    report.calls_closed += 1;
                }
            }
        }
        if report.recordings_recovered + report.calls_closed + report.calls_recorded > 0 {
            tracing::warn!(?report, "reconciler: recovered what Twilio's callbacks never brought");
        } else {
            tracing::info!(?report, "reconciler: nothing missing");
        }
        Ok(report)
    }

    async fn recording(&self, found: &TwilioRecording, report: &mut Reconciled) -> Result<(), ReconcileError> {
        let (Ok(call_sid), Ok(recording_sid)) = (CallSid::parse(&found.call_sid), RecordingSid::parse(&found.sid)) else {
            return Ok(());
        };
        let kept = self.calls.recordings(&call_sid).await?.into_iter().find(|r| r.recording_sid == recording_sid);
        if kept.as_ref().is_some_and(|r| !r.wants_transcription() || r.job_enqueued_at.is_some()) {
            return Ok(());
        }
        if kept.is_none() && self.calls.get_call(&call_sid).await?.is_none() && self.record_call(&call_sid).await? {
            report.calls_recorded += 1;
        }
        let at = now_ms();
        let recording = Recording {
            url: Some(format!(
                "{}/2010-04-01/Accounts/{}/Recordings/{recording_sid}",
                self.config.twilio_api_base, self.config.twilio_account_sid
            )),
            recording_sid,
            call_sid,
            status: found.status.as_str().into(),
            duration_secs: found.duration_secs,
            channels: found.channels,
            source: found.source.clone(),
            error_code: None,
            created_at: found.created_at.unwrap_or(at),
            updated_at: at,
            job_enqueued_at: None,
        };
        tracing::warn!(call_sid = %recording.call_sid, recording_sid = %recording.recording_sid, "reconciler: a recording callkeeper never kept");
        if crate::work::transcription::keep_recording(self.calls.as_ref(), self.queue.as_ref(), &recording, "reconciler").await? {
            report.recordings_recovered += 1;
        }
        Ok(())
    }

    /// A call known only to Twilio, recorded as it ended. `false` when Twilio does not know it.
    async fn record_call(&self, call_sid: &CallSid) -> Result<bool, ReconcileError> {
        let Some(twilio) = self.twilio.fetch_call(call_sid).await? else { return Ok(false) };
        let direction = if twilio.direction.starts_with("outbound") { Direction::Outbound } else { Direction::Inbound };
        let contact = crate::domain::phone::E164::parse(if direction == Direction::Inbound { &twilio.from } else { &twilio.to });
        let at = now_ms();
        let new = NewCall {
            call_sid: call_sid.clone(),
            account_sid: self.config.twilio_account_sid.clone(),
            from: twilio.from.clone(),
            to: twilio.to.clone(),
            contact,
            direction,
            status: CallStatus::AwaitingStream,
            twilio_status: Some(twilio.status.clone()),
            at,
        };
        self.calls.create_call(&new).await?;
        if twilio.is_over() {
            self.end(call_sid, &[CallStatus::AwaitingStream], &twilio.status).await?;
        }
        tracing::warn!(call_sid = %call_sid, "reconciler: a call callkeeper had no record of, recorded from Twilio");
        Ok(true)
    }

    /// Closes out a call Twilio says is over (or does not know); `true` when it did.
    async fn close_if_over(&self, call_sid: &CallSid) -> Result<bool, ReconcileError> {
        let status = match self.twilio.fetch_call(call_sid).await? {
            Some(call) if call.is_over() => call.status,
            Some(_) => return Ok(false),
            None => "unknown_to_twilio".to_string(),
        };
        self.end(call_sid, &[CallStatus::Fallback, CallStatus::Transferred], &status).await?;
        Ok(true)
    }

    async fn end(&self, call_sid: &CallSid, from: &[CallStatus], twilio_status: &str) -> Result<(), ReconcileError> {
        let reason = format!("reconciled_{}", twilio_status.replace('-', "_"));
        let patch = CallPatch { end_reason: Some(reason.clone()), twilio_status: Some(twilio_status.to_string()), ..Default::default() };
        let at = now_ms();
        self.calls.transition(call_sid, from, CallStatus::Completed, &patch, at).await?;
        let event = CallEvent { at, kind: "reconciled".into(), key: "reconciled".into(), detail: json!({ "end_reason": reason }) };
        self.calls.add_event(call_sid, &event).await?;
        Ok(())
    }

    /// Passes every [`EVERY`] until `until` resolves (`serve`'s loop).
    pub async fn run_until(&self, until: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::error!(error = %e, "reconciler pass failed; trying again next time");
            }
        }
    }
}
