//! The fallback policy, shared by `stream_ended` and the watchdog so they never both act on one
//! call: whoever moves the call to `fallback` with the conditional claim serves the fallback.

use crate::domain::call::{Call, CallEvent, CallPatch, CallStatus, Transition};
use crate::domain::ids::CallSid;
use crate::domain::time::now_ms;
use crate::process::config::{Config, FallbackMode};
use crate::store::{CallStore, StoreResult};
use crate::twilio::routes::Route;
use crate::twilio::twiml::{self, FallbackStep, Twiml};

/// Where Record's and Dial's outcomes are posted: `stream_ended`, which knows the call is in
/// fallback and ends it (a `<Record>` without `action` would re-request the document URL).
pub const ACTION_PATH: &str = Route::StreamEnded.path();
pub const RECORDING_CALLBACK_PATH: &str = Route::RecordingDone.path();

/// The fallback document for the configured mode.
pub fn twiml(config: &Config) -> Twiml {
    match &config.fallback.mode {
        FallbackMode::Voicemail => voicemail(config),
        FallbackMode::Dial(number) => twiml::fallback(
            &config.fallback.apology,
            &FallbackStep::Dial { number, timeout_secs: config.fallback.dial_timeout_secs },
            &config.callback_url(ACTION_PATH),
        ),
    }
}

/// Voicemail, whatever the mode: also where a dial that nobody answered goes.
pub fn voicemail(config: &Config) -> Twiml {
    voicemail_after(config, &config.fallback.apology)
}

/// Voicemail after `text` (a business's after-hours message), said in the apology's language
/// and voice (or the deployment's language's, when the apology is a recording).
pub fn voicemail_saying(config: &Config, text: &str) -> Twiml {
    let say = match &config.fallback.apology {
        twiml::Apology::Say { language, voice, .. } => {
            twiml::Apology::Say { text: text.into(), language: language.clone(), voice: voice.clone() }
        }
        twiml::Apology::Play(_) => twiml::Apology::Say {
            text: text.into(),
            language: config.language.clone(),
            voice: crate::process::config::default_voice(&config.language).unwrap_or("Google.en-US-Standard-C").into(),
        },
    };
    voicemail_after(config, &say)
}

fn voicemail_after(config: &Config, apology: &twiml::Apology) -> Twiml {
    twiml::fallback(
        apology,
        &FallbackStep::Voicemail {
            max_length_secs: config.fallback.voicemail_max_secs,
            recording_callback: &config.callback_url(RECORDING_CALLBACK_PATH),
        },
        &config.callback_url(ACTION_PATH),
    )
}

/// The outcome of trying to claim a call for the fallback.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This caller moved the call to `fallback` and must deliver it.
    Won(Call),
    /// The call was already in fallback (another actor claimed it, or this is a retry).
    AlreadyInFallback(Call),
    /// The call ended before it could fall back.
    Ended(Call),
    /// The call is live on a newer stream than the claim was for (see [`claim_at`]).
    Moved(Call),
    NotFound,
}

/// Who claims a call for the fallback, and so how the caller gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimedBy {
    /// Twilio asked what follows the stream: the fallback is the answer.
    StreamEnded,
    /// The call is live on some other TwiML: it must be redirected through the REST API, and
    /// stays on the watchdog's list (`redirect_pending`) until Twilio has taken the redirect.
    Watchdog,
    /// The relay, about to close a stream that a new one would not save (the model is down,
    /// Twilio's media stopped): Twilio then asks `stream_ended`, which serves the fallback.
    Relay,
}

impl ClaimedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimedBy::StreamEnded => "stream_ended",
            ClaimedBy::Watchdog => "watchdog",
            ClaimedBy::Relay => "relay",
        }
    }
}

/// Moves an active call to `fallback` with `reason`, recording who decided.
pub async fn claim(store: &dyn CallStore, config: &Config, call_sid: &CallSid, reason: &str, by: ClaimedBy) -> StoreResult<Claim> {
    claim_at(store, config, call_sid, None, reason, by).await
}

/// [`claim`], only while the call is at stream `generation` (`Some`): a relay giving up on its
/// stream must not take the fallback for a call that has moved on to a newer one (a relay that
/// hung wakes up after the watchdog moved its call). Refused, the claim is [`Claim::Ended`] or,
/// for a call still live on another stream, [`Claim::Moved`].
pub async fn claim_at(
    store: &dyn CallStore,
    config: &Config,
    call_sid: &CallSid,
    generation: Option<u32>,
    reason: &str,
    by: ClaimedBy,
) -> StoreResult<Claim> {
    let at = now_ms();
    let patch = CallPatch {
        fallback_reason: Some(reason.to_string()),
        fallback_action: Some(config.fallback.mode.as_str().to_string()),
        redirect_pending: Some(by == ClaimedBy::Watchdog),
        ..Default::default()
    };
    let by = by.as_str();
    let from = [CallStatus::Ringing, CallStatus::AwaitingStream, CallStatus::Streaming];
    Ok(match store.transition_at(call_sid, generation, &from, CallStatus::Fallback, &patch, at).await? {
        Transition::Applied(call) => {
            crate::process::metrics::record(crate::process::metrics::FALLBACKS, 1.0, &[reason]);
            let detail = serde_json::json!({ "reason": reason, "action": config.fallback.mode.as_str(), "by": by });
            store.add_event(call_sid, &CallEvent { at, kind: "fallback".into(), key: "fallback".into(), detail }).await?;
            Claim::Won(call)
        }
        Transition::Refused(call) if call.status == CallStatus::Fallback => Claim::AlreadyInFallback(call),
        Transition::Refused(call) if from.contains(&call.status) => Claim::Moved(call),
        Transition::Refused(call) => Claim::Ended(call),
        Transition::NotFound => Claim::NotFound,
    })
}
