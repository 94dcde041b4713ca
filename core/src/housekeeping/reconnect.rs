//! The next stream generation: the conversation goes on on a new stream instead of falling back.
//! Shared by `stream_ended` (the relay crashed, or the socket was lost: Twilio asks what next),
//! the watchdog (a relay that hangs: the call is moved through the REST API) and a draining relay
//! (a planned move), so they never both move one call: whoever moves the call from `streaming`
//! at generation `g` to `awaiting_stream` at `g + 1` with the conditional write serves the new
//! `<Connect><Stream>`. The load balancer sends its socket to a healthy relay, which resumes the
//! conversation from the store.
//!
//! Faults are bounded ([`MAX_RECOVERIES`] per call): a fault that repeats ends in the fallback.
//! Planned moves are not: a call may outlive any number of deploys.

use crate::domain::call::{Call, CallEvent, CallPatch, CallStatus, Transition};
use crate::domain::ids::CallSid;
use crate::domain::time::now_ms;
use crate::process::config::Config;
use crate::store::{CallStore, StoreResult};
use crate::twilio::routes::{Route, STREAM_PATH};
use crate::twilio::stream_token;
use crate::twilio::twiml::{self, StreamCall, Twiml};

/// New streams a call gets after faults; the next fault gives the fallback.
pub const MAX_RECOVERIES: u32 = 2;

/// Why the call moves to a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The stream failed (`reason`): counts against [`MAX_RECOVERIES`].
    Fault(&'static str),
    /// A draining relay hands its call to another.
    Move,
}

impl Why {
    pub fn reason(self) -> &'static str {
        match self {
            Why::Fault(reason) => reason,
            Why::Move => "relay_draining",
        }
    }
}

/// What trying to move a call to its next stream did.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// This caller moved the call: it awaits the stream of `call.generation`, whose TwiML this
    /// caller must deliver.
    Moved(Call),
    /// The call has had its [`MAX_RECOVERIES`]: the fallback follows.
    NoRecoveriesLeft(Call),
    /// The call is no longer streaming at that generation (moved, fallen back or ended by
    /// someone else, or this is a retry).
    Stale(Call),
    NotFound,
}

/// The `<Connect><Stream>` of `generation`, with its token: the first (after the recording's
/// `<Start>` and the greeting) or a later one.
pub fn stream_twiml(config: &Config, call_sid: &CallSid, generation: u32) -> Twiml {
    let token = stream_token::issue(&config.stream_token_secret, call_sid, generation);
    twiml::stream_call(&StreamCall {
        call_sid,
        generation,
        token: &token,
        stream_url: &config.relay_public_url.join(STREAM_PATH),
        stream_status_callback: &config.callback_url(Route::StreamStatus.path()),
        connect_action: &connect_action(config, generation),
        recording_callback: &config.callback_url(Route::RecordingDone.path()),
        greeting: config.greeting_url.as_ref(),
    })
}

/// `stream_ended`, told which generation's `<Connect>` ended: a retried or late post about an
/// earlier stream cannot move the current one.
pub fn connect_action(config: &Config, generation: u32) -> crate::domain::url::AbsoluteUrl {
    let path = Route::StreamEnded.path();
    if generation == 0 {
        config.callback_url(path)
    } else {
        config.callback_url(&format!("{path}?generation={generation}"))
    }
}

/// Moves `call`, streaming at `call.generation`, to the next generation, and records why.
pub async fn next_generation(store: &dyn CallStore, call: &Call, why: Why, by: &str) -> StoreResult<Next> {
    let recoveries = call.recoveries + u32::from(matches!(why, Why::Fault(_)));
    if recoveries > MAX_RECOVERIES {
        return Ok(Next::NoRecoveriesLeft(call.clone()));
    }
    let at = now_ms();
    let generation = call.generation + 1;
    let patch = CallPatch { generation: Some(generation), recoveries: Some(recoveries), ..Default::default() };
    let sid = &call.call_sid;
    Ok(match store.transition_at(sid, Some(call.generation), &[CallStatus::Streaming], CallStatus::AwaitingStream, &patch, at).await? {
        Transition::Applied(moved) => {
            crate::process::metrics::record(crate::process::metrics::STREAM_RECONNECTS, 1.0, &[why.reason()]);
            let detail = serde_json::json!({
                "reason": why.reason(), "by": by, "from_generation": call.generation, "generation": generation,
                "planned": why == Why::Move, "recoveries": recoveries,
            });
            let event = CallEvent { at, kind: "stream_reconnect".into(), key: format!("stream_reconnect:{generation}"), detail };
            store.add_event(sid, &event).await?;
            tracing::info!(call_sid = %sid, generation, reason = why.reason(), by, "the conversation moves to a new stream");
            Next::Moved(moved)
        }
        Transition::Refused(now) => Next::Stale(now),
        Transition::NotFound => Next::NotFound,
    })
}
