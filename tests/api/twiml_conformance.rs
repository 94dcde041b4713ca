//! Every TwiML document callkeeper serves, as the webhooks answer it over loopback, rebuilt verb by
//! verb with twilio-python's own `VoiceResponse` (`scripts/twiml_conformance.py`, in the test
//! venv `scripts/test.sh` makes) and compared element by element and attribute by attribute; an
//! attribute twilio-python's classes do not name fails.

use crate::common;

use callkeeper_core::call::{CallPatch, CallStatus};
use callkeeper_core::ids::CallSid;
use callkeeper_core::test_support::venv_python;
use callkeeper_core::time::now_ms;
use common::*;
use std::io::Write;

async fn served(app: &TestApp, path: &str, form: &[(String, String)]) -> String {
    let response = app.post(path, form).await;
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// The documents of one app: a call answered, its stream broken (a new stream), then the
/// fallback; a stream that never started; a transfer; a hang-up.
async fn documents_of(app: &TestApp, label: &str, out: &mut Vec<serde_json::Value>) {
    let mut add = |name: &str, twiml: String| out.push(serde_json::json!({ "name": format!("{label}: {name}"), "twiml": twiml }));
    let store = &app.stores.calls;

    let sid = new_call_sid();
    let call_sid = CallSid::parse(&sid).unwrap();
    add("incoming_call", served(app, "/webhook/incoming_call", &incoming_call_form(&sid, "+972501234567")).await);
    store.transition(&call_sid, &[CallStatus::AwaitingStream], CallStatus::Streaming, &CallPatch::default(), now_ms()).await.unwrap();
    add("stream_ended, the stream broke: a new stream", served(app, "/webhook/stream_ended", &ended_form(&sid, &[])).await);
    add(
        "stream_ended, the new stream never started: the fallback",
        served(app, "/webhook/stream_ended?generation=1", &ended_form(&sid, &[])).await,
    );
    add("stream_ended, the caller hung up", served(app, "/webhook/stream_ended", &ended_form(&sid, &[("CallStatus", "completed")])).await);

    let placed = new_call_sid();
    let mut call = callkeeper_core::store::contract::new_call(CallStatus::Ringing);
    call.call_sid = CallSid::parse(&placed).unwrap();
    call.direction = callkeeper_core::call::Direction::Outbound;
    store.create_call(&call).await.unwrap();
    let form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &placed),
        ("From", "+97231234567"),
        ("To", "+972501234567"),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
    ]);
    add("outbound_call", served(app, "/webhook/outbound_call", &form).await);

    let handed = new_call_sid();
    let handed_sid = CallSid::parse(&handed).unwrap();
    served(app, "/webhook/incoming_call", &incoming_call_form(&handed, "+972501234567")).await;
    store.transition(&handed_sid, &[CallStatus::AwaitingStream], CallStatus::Streaming, &CallPatch::default(), now_ms()).await.unwrap();
    let patch = CallPatch { transfer_to: Some("+972501112222".into()), ..Default::default() };
    store.transition(&handed_sid, &[CallStatus::Streaming], CallStatus::Transferred, &patch, now_ms()).await.unwrap();
    add("stream_ended, a transfer", served(app, "/webhook/stream_ended", &ended_form(&handed, &[])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_twiml_document_is_what_twilio_python_builds() {
    let mut documents = Vec::new();
    documents_of(&spawn_app().await, "voicemail", &mut documents).await;
    let dial = spawn_app_with(&[("FALLBACK_MODE", "dial:+972501119999"), ("GREETING_URL", "https://cdn.example.com/hello.mp3")]).await;
    documents_of(&dial, "dial, with a greeting", &mut documents).await;

    let out = venv_python("scripts/twiml_conformance.py", &serde_json::to_string(&documents).unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = writeln!(std::io::stderr(), "twilio-python read: {stdout}");
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["documents"], documents.len());
    // Every verb the documents use was read: the stream's parameters, the recording, the greeting.
    assert!(summary["elements"].as_u64().unwrap() >= 40, "{summary}");
}
