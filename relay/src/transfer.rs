//! The agent's `transfer_to_human`: once its words have played, the call leaves the agent for a
//! person.
//!
//! The call moves `streaming → transferred` (with the number) first, so neither the watchdog nor
//! `stream_ended` mistakes the stream's end for a failure; then Twilio's REST API redirects the
//! live call to `<Dial>` that number, `action` back to `stream_ended`, which records how the dial
//! ended and gives the caller the voicemail when nobody answers. If the redirect cannot reach
//! Twilio, nothing is lost: the relay closes the stream, and `stream_ended`, seeing a transferred
//! call, answers `<Connect action>` with the same `<Dial>`.

use crate::Relay;
use callkeeper_core::call::{CallEvent, CallPatch, CallStatus, Transition};
use callkeeper_core::ids::CallSid;
use callkeeper_core::phone::E164;
use callkeeper_core::time::now_ms;
use callkeeper_core::twilio_rest::{CallUpdate, Updated};
use callkeeper_core::twiml;
use serde_json::json;

pub async fn hand_over(relay: &Relay, call_sid: &CallSid, to: &E164, reason: &str) {
    let calls = relay.calls.as_ref();
    let patch = CallPatch { transfer_to: Some(to.to_string()), ..Default::default() };
    match calls.transition(call_sid, &[CallStatus::Streaming], CallStatus::Transferred, &patch, now_ms()).await {
        Ok(Transition::Applied(_)) => {}
        Ok(Transition::Refused(call)) => {
            tracing::warn!(call_sid = %call_sid, status = %call.status, "not transferred: the call is no longer streaming");
            return;
        }
        Ok(Transition::NotFound) => {
            tracing::error!(call_sid = %call_sid, "not transferred: the call is not in the store");
            return;
        }
        // Without the transferred status the stream's end would look like a failure: the caller
        // gets the fallback (a person or the voicemail) from `stream_ended` instead.
        Err(e) => {
            tracing::error!(call_sid = %call_sid, error = %e, "transfer not recorded; the caller gets the fallback");
            return;
        }
    }
    let action = relay.config.callback_url(callkeeper_core::routes::Route::StreamEnded.path());
    let doc = twiml::transfer(to, relay.config.fallback.dial_timeout_secs, &action);
    let mut detail = json!({ "to": to.redacted(), "reason": reason, "redirected": false });
    match relay.twilio.update_call(call_sid, &CallUpdate::Twiml(doc.into_string())).await {
        Ok(Updated::Done { status }) => {
            detail["redirected"] = json!(true);
            detail["twilio_status"] = json!(status);
        }
        Ok(Updated::CallOver { code }) => detail["call_over"] = json!(code),
        Err(e) => {
            tracing::error!(call_sid = %call_sid, error = %e, "transfer redirect failed; <Connect action> will dial instead");
            detail["error"] = json!(e.to_string());
        }
    }
    let event = CallEvent { at: now_ms(), kind: "transferred".into(), key: "transferred".into(), detail };
    if let Err(e) = calls.add_event(call_sid, &event).await {
        tracing::warn!(call_sid = %call_sid, error = %e, "transferred event not written");
    }
    tracing::info!(call_sid = %call_sid, to = %to.redacted(), "call transferred");
}
