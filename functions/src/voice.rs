//! The voice webhooks: answering a call, the stream's status, and what follows the stream.

use crate::signed_form::SignedForm;
use crate::webhook::{twiml_response, AppState, WebhookError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use callkeeper_core::call::{Call, CallEvent, CallPatch, CallStatus, Created, Direction, NewCall, Transition};
use callkeeper_core::fallback::{self, Claim, ClaimedBy};
use callkeeper_core::form::Form;
use callkeeper_core::ids::{AccountSid, CallSid};
use callkeeper_core::phone::E164;
use callkeeper_core::reconnect::{self, Next, Why};
use callkeeper_core::store::CallStore;
use callkeeper_core::time::{now_ms, Millis};
use callkeeper_core::twiml;
use callkeeper_core::{metrics, twiml::Twiml};
use serde_json::json;
use std::time::Duration;

pub use callkeeper_core::routes::STREAM_PATH;

pub async fn incoming_call(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<Response, WebhookError> {
    answer(&state, &form, Direction::Inbound).await
}

/// The `Url` Twilio fetches when an outbound call we placed is answered: the same TwiML and the
/// same protection as an incoming call.
pub async fn outbound_call(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<Response, WebhookError> {
    answer(&state, &form, Direction::Outbound).await
}

/// Writes the call before answering (idempotent on Twilio's retries), then serves the TwiML that
/// records the call and connects its stream to the relay.
async fn answer(state: &AppState, form: &Form, direction: Direction) -> Result<Response, WebhookError> {
    let call_sid: CallSid = form.parse_required("CallSid")?;
    if form.get(callkeeper_core::form::PROBE_FIELD).is_some() {
        // `callkeeper doctor`: the document a call would get, from the same builder; no call.
        new_call(form, &call_sid, direction, now_ms())?;
        tracing::info!(call_sid = %call_sid, "doctor's probe: answered, nothing written");
        return Ok(twiml_response(stream_twiml(state, &call_sid)));
    }
    let at = now_ms();
    let new = new_call(form, &call_sid, direction, at)?;
    let store = state.stores.calls.as_ref();
    match store.create_call(&new).await? {
        Created::New(_) => metrics::record(metrics::CALLS_ANSWERED, 1.0, &[direction.as_str()]),
        // An outbound call we placed waits in `ringing` until Twilio asks for its TwiML.
        Created::Existing(call) if call.status == CallStatus::Ringing => {
            let patch = CallPatch { twilio_status: new.twilio_status.clone(), ..Default::default() };
            if let Transition::Applied(_) =
                store.transition(&call_sid, &[CallStatus::Ringing], CallStatus::AwaitingStream, &patch, at).await?
            {
                metrics::record(metrics::CALLS_ANSWERED, 1.0, &[direction.as_str()]);
            }
        }
        Created::Existing(call) => {
            tracing::info!(call_sid = %call_sid, status = %call.status, "retried call webhook; answering the same TwiML")
        }
    }
    // The call is written, so the stream can start: an audit event that fails is written later.
    let event =
        CallEvent { at, kind: "twiml_served".into(), key: "twiml_served".into(), detail: json!({ "direction": direction.as_str() }) };
    if let Err(e) = store.add_event(&call_sid, &event).await {
        tracing::warn!(call_sid = %call_sid, error = %e, "twiml_served event not written; answering, and writing it later");
        let (calls, sid) = (state.stores.calls.clone(), call_sid.clone());
        crate::deferred::retry("twiml_served event", call_sid.clone(), move || {
            let (calls, sid, event) = (calls.clone(), sid.clone(), event.clone());
            async move { calls.add_event(&sid, &event).await.map(|_| ()).map_err(WebhookError::from) }
        });
    }
    if let Some(doc) = after_hours(state, &new).await {
        return Ok(twiml_response(doc));
    }
    tracing::info!(call_sid = %call_sid, direction = direction.as_str(), "call answered; awaiting stream");
    Ok(twiml_response(stream_twiml(state, &call_sid)))
}

/// How long the answer waits on the profile's hours: a caller is listening to ringing.
const HOURS_BUDGET: Duration = Duration::from_millis(1500);

/// Outside the profile's business hours: voicemail at once (the call goes to `fallback` with
/// reason `after_hours`), or, with an after-hours agent, an event saying so and the stream as
/// usual (the relay gives the call that agent). `None` when the agent answers as usual, or when
/// the profile cannot be read in time: a caller is never turned away for a store's sake.
async fn after_hours(state: &AppState, call: &NewCall) -> Option<Twiml> {
    let number = callkeeper_core::profile::business_number_of(call.direction, &call.from, &call.to);
    let store = state.stores.calls.as_ref();
    let profile =
        match tokio::time::timeout(HOURS_BUDGET, callkeeper_core::work::profiles::resolve(store, &state.config, number.as_ref())).await {
            Ok(Ok(profile)) => profile,
            Ok(Err(e)) => {
                tracing::warn!(call_sid = %call.call_sid, error = %e, "profile not read; answering with the agent");
                return None;
            }
            Err(_) => {
                tracing::warn!(call_sid = %call.call_sid, "profile not read in time; answering with the agent");
                return None;
            }
        };
    let at = now_ms();
    let choice = profile.after_hours(at)?.clone();
    let local_time = profile.hours.as_ref().map(|h| h.local_time(at)).unwrap_or_default();
    let (mode, doc) = match &choice {
        callkeeper_core::hours::AfterHours::Agent { .. } => ("agent", None),
        callkeeper_core::hours::AfterHours::Voicemail { message } => ("voicemail", Some(message.clone())),
    };
    let event =
        CallEvent { at, kind: "after_hours".into(), key: "after_hours".into(), detail: json!({ "mode": mode, "local_time": local_time }) };
    if let Err(e) = store.add_event(&call.call_sid, &event).await {
        tracing::warn!(call_sid = %call.call_sid, error = %e, "after_hours event not written");
    }
    let message = doc?;
    let patch = CallPatch { fallback_reason: Some("after_hours".into()), fallback_action: Some("voicemail".into()), ..Default::default() };
    // A retried webhook finds the call already in `fallback`: the same answer again.
    if let Err(e) = store.transition(&call.call_sid, &[CallStatus::AwaitingStream], CallStatus::Fallback, &patch, at).await {
        tracing::warn!(call_sid = %call.call_sid, error = %e, "after-hours call not marked; voicemail all the same");
    }
    tracing::info!(call_sid = %call.call_sid, local_time, "after hours: voicemail");
    Some(fallback::voicemail_saying(&state.config, &message))
}

fn stream_twiml(state: &AppState, call_sid: &CallSid) -> Twiml {
    reconnect::stream_twiml(&state.config, call_sid, 0)
}

/// `stream-started`, `stream-stopped` or `stream-error` (with its `StreamError`), as an event.
pub async fn stream_status(State(state): State<AppState>, SignedForm(form): SignedForm) -> Result<StatusCode, WebhookError> {
    let call_sid: CallSid = form.parse_required("CallSid")?;
    let stream_sid = form.required("StreamSid")?;
    let event = form.required("StreamEvent")?;
    let error = form.get("StreamError");
    let store = state.stores.calls.as_ref();
    let at = now_ms();
    let detail = json!({ "event": event, "stream_sid": stream_sid, "error": error, "timestamp": form.get("Timestamp") });
    let key = format!("stream_status:{stream_sid}:{event}");
    store.add_event(&call_sid, &CallEvent { at, kind: "stream_status".into(), key, detail }).await?;
    if event == "stream-started" {
        store.patch_call(&call_sid, &CallPatch { stream_sid: Some(stream_sid.to_string()), ..Default::default() }, at).await?;
    }
    match error {
        Some(error) => tracing::warn!(call_sid = %call_sid, event, error, "stream status"),
        None => tracing::info!(call_sid = %call_sid, event, "stream status"),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// How long `stream_ended` waits on the store before answering without it: well inside
/// Twilio's 15 s, and the caller is listening to silence meanwhile.
pub const STORE_BUDGET: Duration = Duration::from_secs(4);

/// What follows the stream. Twilio posts here when `<Connect>` ends, and again (as the `action`
/// of the fallback's `<Record>` or `<Dial>`) when the fallback's verb ends. A caller here needs
/// an answer more than the store needs a write: when the store fails or is slow, the answer is
/// made from the form alone (the fallback, unless the form says the call is over) and the
/// webhook is replayed against the store later (see [`crate::deferred`]).
pub async fn stream_ended(
    State(state): State<AppState>,
    Query(query): Query<EndedQuery>,
    SignedForm(form): SignedForm,
) -> Result<Response, WebhookError> {
    let call_sid: CallSid = form.parse_required("CallSid")?;
    let generation = query.generation.unwrap_or(0);
    // In a task of its own, so that running out of budget does not drop it halfway: a decision
    // half written (the call moved to a new stream, its event not yet) would be left standing
    // while the caller is answered from the form.
    let mut first = tokio::spawn({
        let (state, form, sid) = (state.clone(), form.clone(), call_sid.clone());
        async move { follow_stream(&state, &form, &sid, generation, false).await }
    });
    let failure = match tokio::time::timeout(STORE_BUDGET, &mut first).await {
        Ok(Ok(Ok(doc))) => return Ok(twiml_response(doc)),
        Ok(Ok(Err(WebhookError::Unavailable(e)))) => e.to_string(),
        Ok(Ok(Err(refused))) => return Err(refused),
        Ok(Err(crashed)) => crashed.to_string(),
        Err(_) => format!("no answer within {} s", STORE_BUDGET.as_secs()),
    };
    let (decision, reason, doc) = match by_form(&state, &form) {
        Some(FormSays { decision, reason, doc, .. }) => (decision, reason, doc),
        None => ("fallback", "store_unavailable", fallback::twiml(&state.config)),
    };
    tracing::error!(call_sid = %call_sid, error = failure, decision, reason, "the store failed: answered without it; writing the call later");
    // The replay writes what the caller was given: a caller given the fallback is in it, and
    // the call must not be moved to a new stream behind its back. It starts once the first try
    // is over, so it also undoes what that one did too late.
    let served_fallback = decision != "hangup";
    tokio::spawn(async move {
        let _ = first.await;
        let sid = call_sid.clone();
        crate::deferred::retry("stream_ended", call_sid, move || {
            let (state, form, sid) = (state.clone(), form.clone(), sid.clone());
            async move { follow_stream(&state, &form, &sid, generation, served_fallback).await.map(|_| ()) }
        });
    });
    Ok(twiml_response(doc))
}

/// `stream_ended`'s query: which generation's `<Connect>` ended (none: the first).
#[derive(Debug, serde::Deserialize)]
pub struct EndedQuery {
    generation: Option<u32>,
}

/// What the form alone decides: the call is over, or the fallback's verb has ended.
struct FormSays {
    decision: &'static str,
    reason: &'static str,
    doc: Twiml,
    /// The call ends, with this reason.
    ends: Option<String>,
}

fn by_form(state: &AppState, form: &Form) -> Option<FormSays> {
    let twilio_status = form.get("CallStatus");
    let hangup = |reason: &'static str, ends: String| FormSays { decision: "hangup", reason, doc: twiml::hangup(), ends: Some(ends) };
    if twilio_status.is_some_and(callkeeper_core::twilio_rest::is_final_status) {
        // `completed`: someone hung up; an outbound call's `busy`, `no-answer`, … say why it never began.
        let end_reason = match twilio_status {
            Some("completed") | None => "caller_hangup".to_string(),
            Some(other) => other.replace('-', "_"),
        };
        return Some(hangup("caller_hung_up", end_reason));
    }
    if form.get("RecordingSid").is_some() || form.get("RecordingUrl").is_some() {
        return Some(hangup("voicemail_recorded", "voicemail_recorded".into()));
    }
    match form.get("DialCallStatus")? {
        "completed" => Some(hangup("dial_completed", "dial_completed".into())),
        // Nobody took the call: the caller can still leave a message.
        _ => Some(FormSays { decision: "voicemail", reason: "dial_not_answered", doc: fallback::voicemail(&state.config), ends: None }),
    }
}

/// `stream_ended` with the store: decides, writes the call's end or fallback and the event.
/// `served_fallback`: replayed after the caller was given the fallback without the store.
async fn follow_stream(
    state: &AppState,
    form: &Form,
    call_sid: &CallSid,
    generation: u32,
    served_fallback: bool,
) -> Result<Twiml, WebhookError> {
    let store = state.stores.calls.as_ref();
    let call = match store.get_call(call_sid).await? {
        Some(call) => call,
        // We lost the record (or never wrote it): keep the call now, then treat it as one whose
        // stream never started, so the caller still gets the fallback.
        None => record_unknown_call(store, form, call_sid).await?,
    };
    let (decision, reason, doc) = match by_form(state, form) {
        Some(FormSays { decision, reason, doc, ends }) => {
            if let Some(end_reason) = ends {
                end(store, &call, &end_reason).await?;
            }
            (decision, reason, doc)
        }
        None => connect_ended(state, &call, generation, served_fallback).await?,
    };
    let twilio_status = form.get("CallStatus");
    let detail =
        json!({ "decision": decision, "reason": reason, "twilio_status": twilio_status, "dial_status": form.get("DialCallStatus") });
    let key = format!("stream_ended:{reason}");
    store.add_event(call_sid, &CallEvent { at: now_ms(), kind: "stream_ended".into(), key, detail }).await?;
    // What Twilio last said of the call (`in-progress` in the fallback, `completed` at the end);
    // a late retry of an earlier post does not take a final status back.
    let final_already = call.twilio_status.as_deref().is_some_and(callkeeper_core::twilio_rest::is_final_status);
    if let Some(status) = twilio_status.filter(|s| !final_already && call.twilio_status.as_deref() != Some(*s)) {
        store.patch_call(call_sid, &CallPatch { twilio_status: Some(status.to_string()), ..Default::default() }, now_ms()).await?;
    }
    tracing::info!(call_sid = %call_sid, decision, reason, "stream ended");
    Ok(doc)
}

/// `<Connect>` of `generation` ended. The agent finishing the call leaves it `completed`: hang
/// up. A stream that was live and ended without the agent's word (the relay crashed, the socket
/// was lost) continues on a new stream, while the call has recoveries left. Otherwise the
/// caller, still on the line, gets the fallback.
///
/// `served_fallback`: the caller already has the fallback (answered without the store): it is
/// claimed, whatever stream the call is at.
async fn connect_ended(
    state: &AppState,
    call: &Call,
    generation: u32,
    served_fallback: bool,
) -> Result<(&'static str, &'static str, Twiml), WebhookError> {
    let store = state.stores.calls.as_ref();
    if call.status == CallStatus::Completed {
        return Ok(("hangup", "agent_finished", twiml::hangup()));
    }
    // The agent handed the call over but its redirect did not reach Twilio (the relay then
    // closes the stream): the transfer happens here instead.
    if let (CallStatus::Transferred, Some(number)) = (call.status, call.transfer_to.as_deref().and_then(E164::parse)) {
        let action = state.config.callback_url(crate::Route::StreamEnded.path());
        return Ok(("transfer", "transfer_by_action", twiml::transfer(&number, state.config.fallback.dial_timeout_secs, &action)));
    }
    // A retry of this post, once the call already moved on: the same new stream again.
    if !served_fallback && call.status == CallStatus::AwaitingStream && call.generation == generation + 1 {
        return Ok(("reconnect", "already_reconnecting", reconnect::stream_twiml(&state.config, &call.call_sid, call.generation)));
    }
    let reason = match call.status {
        CallStatus::Streaming => "stream_ended_abnormally",
        // Moved on by a first try that outlived its budget: that stream had broken.
        CallStatus::AwaitingStream if served_fallback && call.generation > generation => "stream_ended_abnormally",
        _ => "stream_never_started",
    };
    if !served_fallback && call.status == CallStatus::Streaming && call.generation == generation {
        match reconnect::next_generation(store, call, Why::Fault(reason), "stream_ended").await? {
            Next::Moved(moved) => {
                return Ok(("reconnect", reason, reconnect::stream_twiml(&state.config, &moved.call_sid, moved.generation)));
            }
            Next::NoRecoveriesLeft(_) => tracing::warn!(call_sid = %call.call_sid, "the stream failed again: no recoveries left, fallback"),
            Next::Stale(now) if now.status == CallStatus::AwaitingStream && now.generation == generation + 1 => {
                return Ok(("reconnect", "already_reconnecting", reconnect::stream_twiml(&state.config, &now.call_sid, now.generation)));
            }
            Next::Stale(_) | Next::NotFound => {}
        }
    }
    // Only while the call is at this `<Connect>`'s generation: a late post about an older
    // stream must not take the fallback for the conversation on a newer one.
    let at = (!served_fallback).then_some(generation);
    match fallback::claim_at(store, &state.config, &call.call_sid, at, reason, ClaimedBy::StreamEnded).await? {
        Claim::Won(_) => Ok(("fallback", reason, fallback::twiml(&state.config))),
        // A retry of this post, or the watchdog got there first: the same fallback again.
        Claim::AlreadyInFallback(_) => Ok(("fallback", "already_in_fallback", fallback::twiml(&state.config))),
        // Twilio runs the newer stream's TwiML (its `start` came from it), so this answer is
        // moot; an empty document keeps it harmless.
        Claim::Moved(now) => {
            tracing::warn!(call_sid = %call.call_sid, posted = generation, current = now.generation, "a late <Connect action> for an older stream: ignored");
            Ok(("ignore", "stale_generation", twiml::empty()))
        }
        Claim::Ended(_) | Claim::NotFound => Ok(("hangup", "call_already_ended", twiml::hangup())),
    }
}

/// Marks an active or fallen-back call completed, with why. A call already completed stays as it is.
async fn end(store: &dyn CallStore, call: &Call, reason: &str) -> Result<(), WebhookError> {
    let patch = CallPatch { end_reason: Some(reason.to_string()), ..Default::default() };
    let from = [CallStatus::Ringing, CallStatus::AwaitingStream, CallStatus::Streaming, CallStatus::Fallback, CallStatus::Transferred];
    store.transition(&call.call_sid, &from, CallStatus::Completed, &patch, now_ms()).await?;
    Ok(())
}

async fn record_unknown_call(store: &dyn CallStore, form: &Form, call_sid: &CallSid) -> Result<Call, WebhookError> {
    let direction = match form.get("Direction") {
        Some(d) if d.starts_with("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    };
    let new = new_call(form, call_sid, direction, now_ms())?;
    tracing::warn!(call_sid = %call_sid, "stream_ended for a call we had no record of; recording it now");
    Ok(store.create_call(&new).await?.call().clone())
}

/// The call a voice webhook's standard fields describe, awaiting its stream. The other party is
/// the contact: the caller of an inbound call, the callee of an outbound one.
fn new_call(form: &Form, call_sid: &CallSid, direction: Direction, at: Millis) -> Result<NewCall, WebhookError> {
    let account_sid: AccountSid = form.parse_required("AccountSid")?;
    let from = form.required("From")?.to_string();
    let to = form.required("To")?.to_string();
    let contact = E164::parse(if direction == Direction::Inbound { &from } else { &to });
    Ok(NewCall {
        call_sid: call_sid.clone(),
        account_sid,
        from,
        to,
        contact,
        direction,
        status: CallStatus::AwaitingStream,
        twilio_status: form.get("CallStatus").map(str::to_string),
        at,
    })
}
