//! The voice webhooks over loopback: signed posts in, status codes, TwiML and store rows out.

use crate::common;

use callkeeper_core::call::{CallPatch, CallStatus, Transition};
use callkeeper_core::ids::CallSid;
use callkeeper_core::stream_token;
use callkeeper_core::time::now_ms;
use common::*;

const CALLER: &str = "+972501234567";

async fn answer(app: &TestApp, sid: &str) -> El {
    twiml_of(app.post("/webhook/incoming_call", &incoming_call_form(sid, CALLER)).await).await
}

#[tokio::test]
async fn incoming_call_is_stored_and_answered_with_the_stream_twiml() {
    // GIVEN a running callkeeper
    let app = spawn_app().await;
    let sid = new_call_sid();
    // WHEN Twilio posts a signed incoming call
    let response = app.post("/webhook/incoming_call", &incoming_call_form(&sid, CALLER)).await;
    assert!(response.headers().contains_key("x-callkeeper-version"));
    let twiml = twiml_of(response).await;
    // THEN the answer is the documented TwiML
    assert_eq!(twiml.names(), ["Start", "Connect"]);
    let recording = &twiml.children[0].children[0];
    assert_eq!(recording.name, "Recording");
    assert_eq!(recording.attr("channels"), Some("dual"));
    assert_eq!(recording.attr("recordingStatusCallback"), Some("https://ck.example.com/webhook/recording_done#rc=3&rp=5xx,ct"));
    let connect = &twiml.children[1];
    assert_eq!(connect.attr("action"), Some("https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"));
    let stream = connect.find("Stream").unwrap();
    assert_eq!(stream.attr("url"), Some("wss://relay.example.com/ws/twilio-media"));
    assert_eq!(stream.attr("statusCallback"), Some("https://ck.example.com/webhook/stream_status#rc=3&rp=5xx,ct"));
    let param =
        |name: &str| stream.children.iter().find(|p| p.attr("name") == Some(name)).and_then(|p| p.attr("value")).map(str::to_string);
    assert_eq!(param("call_sid").as_deref(), Some(sid.as_str()));
    let call_sid = CallSid::parse(&sid).unwrap();
    assert!(stream_token::verify(&app.config.stream_token_secret, &call_sid, 0, &param("token").unwrap()), "the relay can check the token");
    // AND the call is in the CRM, awaiting its stream, with the caller as a contact
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().expect("call stored");
    assert_eq!(call.status, CallStatus::AwaitingStream);
    assert_eq!(call.from, CALLER);
    assert_eq!(call.contact.as_ref().map(|c| c.as_str()), Some(CALLER));
    assert_eq!(call.twilio_status.as_deref(), Some("ringing"));
    let events = app.stores.calls.events(&call_sid).await.unwrap();
    assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["twiml_served"]);
}

#[tokio::test]
async fn greeting_is_played_before_the_stream_when_configured() {
    let app = spawn_app_with(&[("GREETING_URL", "https://cdn.example.com/shalom.wav")]).await;
    let twiml = answer(&app, &new_call_sid()).await;
    assert_eq!(twiml.names(), ["Start", "Play", "Connect"]);
    assert_eq!(twiml.children[1].text, "https://cdn.example.com/shalom.wav");
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let form = incoming_call_form(&sid, CALLER);
    let wrong_token = callkeeper_core::signature::compute(
        b"not-the-token",
        callkeeper_core::signature::Algorithm::HmacSha1,
        "https://ck.example.com/webhook/incoming_call",
        &form,
    );
    let wrong_url = callkeeper_core::signature::compute(
        AUTH_TOKEN.as_bytes(),
        callkeeper_core::signature::Algorithm::HmacSha1,
        &format!("http://{}/webhook/incoming_call", app.addr),
        &form,
    );
    for (signature, reason) in [
        (None, "missing X-Twilio-Signature"),
        (Some(wrong_token.as_str()), "invalid X-Twilio-Signature"),
        (Some(wrong_url.as_str()), "invalid X-Twilio-Signature"),
    ] {
        let response = app.post_signed("/webhook/incoming_call", &form, signature).await;
        assert_eq!(response.status(), 403);
        assert!(response.headers().contains_key("x-callkeeper-version"));
        assert_eq!(response.text().await.unwrap().trim(), reason);
    }
    // A field changed after signing.
    let signature = callkeeper_core::signature::compute(
        AUTH_TOKEN.as_bytes(),
        callkeeper_core::signature::Algorithm::HmacSha1,
        "https://ck.example.com/webhook/incoming_call",
        &form,
    );
    let mut tampered = form.clone();
    tampered.push(("From".into(), "+972509999999".into()));
    assert_eq!(app.post_signed("/webhook/incoming_call", &tampered, Some(&signature)).await.status(), 403);
    assert!(app.stores.calls.recent_calls(None, 10).await.unwrap().is_empty(), "nothing stored");
}

#[tokio::test]
async fn malformed_fields_are_400_with_a_one_line_reason() {
    let app = spawn_app().await;
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (params(&[("AccountSid", ACCOUNT_SID), ("From", CALLER), ("To", "+97231234567")]), "missing field CallSid"),
        (incoming_call_form("CA123", CALLER), "CallSid must be CA followed by 32 hex digits"),
        (
            params(&[("AccountSid", "nope"), ("CallSid", &new_call_sid()), ("From", CALLER), ("To", "+97231234567")]),
            "AccountSid must be AC followed by 32 hex digits",
        ),
        (params(&[("AccountSid", ACCOUNT_SID), ("CallSid", &new_call_sid()), ("To", "+97231234567")]), "missing field From"),
    ];
    for (form, reason) in cases {
        let response = app.post("/webhook/incoming_call", &form).await;
        assert_eq!(response.status(), 400, "{reason}");
        let body = response.text().await.unwrap();
        assert_eq!(body, format!("{reason}\n"));
    }
    assert!(app.stores.calls.recent_calls(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_form_with_too_many_fields_is_refused_before_its_signature_is_checked() {
    let app = spawn_app().await;
    let mut form = incoming_call_form(&new_call_sid(), CALLER);
    form.extend((0..300).map(|i| (format!("X{i}"), "y".to_string())));
    // Unsigned: the count alone refuses it, whatever the signature.
    let response = app.post_signed("/webhook/incoming_call", &form, Some("bogus")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), "311 form fields; Twilio sends at most 256\n");
    // A real Twilio form, signed, is well inside the cap.
    assert_eq!(app.post("/webhook/incoming_call", &incoming_call_form(&new_call_sid(), CALLER)).await.status(), 200);
}

#[tokio::test]
async fn retried_incoming_call_changes_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let form = incoming_call_form(&sid, CALLER);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let response = app.post("/webhook/incoming_call", &form).await;
        assert_eq!(response.status(), 200);
        bodies.push(response.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the same TwiML every time");
    let calls = app.stores.calls.recent_calls(None, 10).await.unwrap();
    assert_eq!(calls.len(), 1);
    let call_sid = CallSid::parse(&sid).unwrap();
    assert_eq!(app.stores.calls.events(&call_sid).await.unwrap().len(), 1, "one twiml_served event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_simultaneous_calls_are_each_recorded_once() {
    let app = std::sync::Arc::new(spawn_app().await);
    let sids: Vec<String> = (0..100).map(|_| new_call_sid()).collect();
    let mut tasks = Vec::new();
    for sid in sids.clone() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { app.post("/webhook/incoming_call", &incoming_call_form(&sid, CALLER)).await.status() }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let calls = app.stores.calls.recent_calls(None, 1000).await.unwrap();
    assert_eq!(calls.len(), 100);
    let mut stored: Vec<String> = calls.iter().map(|c| c.call_sid.to_string()).collect();
    stored.sort();
    let mut expected = sids;
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn outbound_call_moves_a_placed_call_from_ringing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let call_sid = CallSid::parse(&sid).unwrap();
    // `callkeeper call` writes the call as ringing before Twilio asks for its TwiML.
    let mut placed = callkeeper_core::store::contract::new_call(CallStatus::Ringing);
    placed.call_sid = call_sid.clone();
    placed.direction = callkeeper_core::call::Direction::Outbound;
    app.stores.calls.create_call(&placed).await.unwrap();
    let form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &sid),
        ("From", "+97231234567"),
        ("To", CALLER),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
    ]);
    let twiml = twiml_of(app.post("/webhook/outbound_call", &form).await).await;
    assert!(twiml.find("Stream").is_some());
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!(call.status, CallStatus::AwaitingStream);
    assert_eq!(call.twilio_status.as_deref(), Some("in-progress"));
}

#[tokio::test]
async fn outbound_call_unknown_to_us_is_recorded_with_the_callee_as_contact() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let form = params(&[("AccountSid", ACCOUNT_SID), ("CallSid", &sid), ("From", "+97231234567"), ("To", CALLER)]);
    twiml_of(app.post("/webhook/outbound_call", &form).await).await;
    let call = app.stores.calls.get_call(&CallSid::parse(&sid).unwrap()).await.unwrap().unwrap();
    assert_eq!(call.direction, callkeeper_core::call::Direction::Outbound);
    assert_eq!(call.contact.map(|c| c.to_string()).as_deref(), Some(CALLER));
}

#[tokio::test]
async fn stream_status_events_are_recorded_once() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let stream_sid = "MZ0123456789abcdef0123456789abcdef";
    let started = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &sid),
        ("StreamSid", stream_sid),
        ("StreamEvent", "stream-started"),
        ("Timestamp", "2026-11-23T18:00:00Z"),
    ]);
    for _ in 0..3 {
        let response = app.post("/webhook/stream_status", &started).await;
        assert_eq!(response.status(), 204);
    }
    let error = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &sid),
        ("StreamSid", stream_sid),
        ("StreamEvent", "stream-error"),
        ("StreamError", "31920 handshake failed"),
    ]);
    assert_eq!(app.post("/webhook/stream_status", &error).await.status(), 204);
    let call_sid = CallSid::parse(&sid).unwrap();
    let events = app.stores.calls.events(&call_sid).await.unwrap();
    let statuses: Vec<_> =
        events.iter().filter(|e| e.kind == "stream_status").map(|e| e.detail["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses, ["stream-started", "stream-error"]);
    assert_eq!(events.last().unwrap().detail["error"], "31920 handshake failed");
    assert_eq!(app.stores.calls.get_call(&call_sid).await.unwrap().unwrap().stream_sid.as_deref(), Some(stream_sid));
    let missing = params(&[("AccountSid", ACCOUNT_SID), ("CallSid", &sid), ("StreamSid", stream_sid)]);
    let response = app.post("/webhook/stream_status", &missing).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap().trim(), "missing field StreamEvent");
}

#[tokio::test]
async fn stream_that_never_started_falls_back_to_voicemail_once() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
        answers.push(format!("{twiml:?}"));
        assert_eq!(twiml.names(), ["Say", "Record"]);
        let say = &twiml.children[0];
        assert_eq!((say.attr("language"), say.attr("voice")), (Some("he-IL"), Some("Google.he-IL-Standard-A")));
        let record = &twiml.children[1];
        assert_eq!(record.attr("action"), Some("https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"));
        assert_eq!(record.attr("recordingStatusCallback"), Some("https://ck.example.com/webhook/recording_done#rc=3&rp=5xx,ct"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "a retry gets the same fallback");
    let call_sid = CallSid::parse(&sid).unwrap();
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!(call.status, CallStatus::Fallback);
    assert_eq!(call.fallback_reason.as_deref(), Some("stream_never_started"));
    assert_eq!(call.fallback_action.as_deref(), Some("voicemail"));
    let events = app.stores.calls.events(&call_sid).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "fallback").count(), 1, "one fallback decision");

    // The voicemail's <Record> posts its outcome to the same URL: now the call ends.
    let recorded = ended_form(
        &sid,
        &[
            ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
            ("RecordingUrl", "https://api.twilio.com/x"),
            ("RecordingDuration", "12"),
        ],
    );
    let twiml = twiml_of(app.post("/webhook/stream_ended", &recorded).await).await;
    assert_eq!(twiml.names(), ["Hangup"]);
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.end_reason.as_deref()), (CallStatus::Completed, Some("voicemail_recorded")));
}

/// A stream that broke mid-call (the relay crashed: Twilio's socket closed without our close)
/// continues on a new `<Connect><Stream>` of the next generation, twice; the third break gives
/// the fallback. A late post about an older stream never takes the newer one's call.
#[tokio::test]
async fn stream_that_broke_mid_call_continues_on_a_new_stream_then_falls_back() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let call_sid = CallSid::parse(&sid).unwrap();
    let stream_ended = |generation: u32| {
        if generation == 0 {
            "/webhook/stream_ended".to_string()
        } else {
            format!("/webhook/stream_ended?generation={generation}")
        }
    };
    for generation in 0..=2u32 {
        // The relay saw this generation's stream start.
        let started = app
            .stores
            .calls
            .transition_at(
                &call_sid,
                Some(generation),
                &[CallStatus::AwaitingStream],
                CallStatus::Streaming,
                &CallPatch::default(),
                now_ms(),
            )
            .await
            .unwrap();
        assert!(matches!(started, Transition::Applied(_)), "generation {generation}: {started:?}");
        let twiml = twiml_of(app.post(&stream_ended(generation), &ended_form(&sid, &[])).await).await;
        let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
        if generation < 2 {
            // A new stream alone: no second recording, no greeting; the generation is a
            // parameter (the URL is what Twilio signs), and the action says which one ended.
            assert_eq!(twiml.names(), ["Connect"], "generation {generation}");
            let next = (generation + 1).to_string();
            let connect = twiml.find("Connect").unwrap();
            let action = connect.attr("action").unwrap();
            assert!(action.starts_with(&format!("https://ck.example.com{}#", stream_ended(generation + 1))), "{action}");
            let stream = connect.find("Stream").unwrap();
            assert!(!stream.attr("url").unwrap().contains("generation"), "{stream:?}");
            let params: Vec<(&str, &str)> = stream.children.iter().filter_map(|p| Some((p.attr("name")?, p.attr("value")?))).collect();
            assert!(params.contains(&("generation", next.as_str())), "{params:?}");
            assert!(params.iter().any(|(name, _)| *name == "token"), "{params:?}");
            assert_eq!((call.status, call.generation, call.fallback_reason), (CallStatus::AwaitingStream, generation + 1, None));
        } else {
            assert_eq!(twiml.names(), ["Say", "Record"], "out of recoveries: the fallback");
            assert_eq!((call.status, call.fallback_reason.as_deref()), (CallStatus::Fallback, Some("stream_ended_abnormally")));
        }
    }
    // A late retry of the first stream's post changes nothing.
    let late = twiml_of(app.post(&stream_ended(0), &ended_form(&sid, &[])).await).await;
    assert_eq!(late.names(), ["Say", "Record"], "the same fallback again, for a call in it");
    let events = app.stores.calls.events(&call_sid).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "fallback").count(), 1);
}

/// A `<Connect action>` that comes late for an older stream, while the call talks on a newer
/// one, is ignored: no fallback, no new stream.
#[tokio::test]
async fn a_late_connect_action_for_an_older_stream_leaves_the_live_one_alone() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let call_sid = CallSid::parse(&sid).unwrap();
    let store = &app.stores.calls;
    store.transition(&call_sid, &[CallStatus::AwaitingStream], CallStatus::Streaming, &CallPatch::default(), now_ms()).await.unwrap();
    // The relay drained and moved the call to generation 1, which started.
    let call = store.get_call(&call_sid).await.unwrap().unwrap();
    let moved =
        callkeeper_core::reconnect::next_generation(store.as_ref(), &call, callkeeper_core::reconnect::Why::Move, "test").await.unwrap();
    assert!(matches!(moved, callkeeper_core::reconnect::Next::Moved(_)), "{moved:?}");
    store
        .transition_at(&call_sid, Some(1), &[CallStatus::AwaitingStream], CallStatus::Streaming, &CallPatch::default(), now_ms())
        .await
        .unwrap();
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
    assert!(twiml.names().is_empty(), "{twiml:?}");
    let call = store.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.generation, call.fallback_reason), (CallStatus::Streaming, 1, None));
}

#[tokio::test]
async fn agent_finished_call_is_hung_up() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let call_sid = CallSid::parse(&sid).unwrap();
    let done = CallPatch { end_reason: Some("agent_hangup".into()), ..Default::default() };
    app.stores
        .calls
        .transition(&call_sid, &[CallStatus::AwaitingStream], CallStatus::Streaming, &CallPatch::default(), now_ms())
        .await
        .unwrap();
    app.stores.calls.transition(&call_sid, &[CallStatus::Streaming], CallStatus::Completed, &done, now_ms()).await.unwrap();
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
    assert_eq!(twiml.names(), ["Hangup"]);
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.fallback_reason, call.end_reason.as_deref()), (CallStatus::Completed, None, Some("agent_hangup")));
}

#[tokio::test]
async fn caller_who_hung_up_gets_no_fallback() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[("CallStatus", "completed")])).await).await;
    assert_eq!(twiml.names(), ["Hangup"]);
    let call = app.stores.calls.get_call(&CallSid::parse(&sid).unwrap()).await.unwrap().unwrap();
    assert_eq!((call.status, call.end_reason.as_deref(), call.fallback_reason), (CallStatus::Completed, Some("caller_hangup"), None));
    // What Twilio said last is kept (it stayed `ringing`, from incoming_call, before); a late
    // retry of an earlier post does not take the final status back.
    assert_eq!(call.twilio_status.as_deref(), Some("completed"));
    app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await;
    let call = app.stores.calls.get_call(&CallSid::parse(&sid).unwrap()).await.unwrap().unwrap();
    assert_eq!(call.twilio_status.as_deref(), Some("completed"));
}

#[tokio::test]
async fn dial_fallback_rings_a_person_then_voicemail_if_nobody_answers() {
    let app = spawn_app_with(&[("FALLBACK_MODE", "dial:+972541112222")]).await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
    assert_eq!(twiml.names(), ["Say", "Dial"]);
    let dial = &twiml.children[1];
    assert_eq!(dial.attr("action"), Some("https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"));
    assert_eq!(dial.find("Number").unwrap().text, "+972541112222");
    // Nobody answered: the caller can leave a message.
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[("DialCallStatus", "no-answer")])).await).await;
    assert_eq!(twiml.names(), ["Say", "Record"]);
    let call_sid = CallSid::parse(&sid).unwrap();
    assert_eq!(app.stores.calls.get_call(&call_sid).await.unwrap().unwrap().fallback_action.as_deref(), Some("dial"));

    // Another call where the person answered: hang up after.
    let sid2 = new_call_sid();
    answer(&app, &sid2).await;
    twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid2, &[])).await).await;
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid2, &[("DialCallStatus", "completed")])).await).await;
    assert_eq!(twiml.names(), ["Hangup"]);
    let call = app.stores.calls.get_call(&CallSid::parse(&sid2).unwrap()).await.unwrap().unwrap();
    assert_eq!(call.end_reason.as_deref(), Some("dial_completed"));
}

#[tokio::test]
async fn stream_ended_for_a_call_we_never_recorded_still_falls_back_and_keeps_it() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
    assert_eq!(twiml.names(), ["Say", "Record"]);
    let call = app.stores.calls.get_call(&CallSid::parse(&sid).unwrap()).await.unwrap().expect("kept");
    assert_eq!(call.status, CallStatus::Fallback);
}

#[tokio::test]
async fn a_store_failure_is_503_so_twilio_retries() {
    let app = spawn_app().await;
    // Break the store underneath the running server.
    let db = rusqlite::Connection::open(app.data_dir.path().join("callkeeper.sqlite3")).unwrap();
    db.execute_batch("DROP TABLE calls").unwrap();
    let response = app.post("/webhook/incoming_call", &incoming_call_form(&new_call_sid(), CALLER)).await;
    assert_eq!(response.status(), 503);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    // What failed, never the store's own error text (which names tables, accounts, roles).
    let body = ready.text().await.unwrap();
    assert_eq!(body, r#"{"reason":"the call store did not answer","status":"unavailable"}"#);
    assert_eq!(app.get("/healthz").await.status(), 200, "the process itself is alive");
}

/// Locks the embedded store for writes from another connection, for `hold`.
fn lock_store_for(app: &TestApp, hold: std::time::Duration) {
    let db = rusqlite::Connection::open(app.data_dir.path().join("callkeeper.sqlite3")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        db.execute_batch("COMMIT").unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ended_gives_the_fallback_while_the_store_is_locked_and_writes_it_later() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    answer(&app, &sid).await;
    lock_store_for(&app, std::time::Duration::from_secs(7));
    let began = std::time::Instant::now();
    let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(&sid, &[])).await).await;
    let took = began.elapsed();
    assert!(twiml.find("Record").is_some(), "the caller gets the voicemail fallback: {twiml:?}");
    assert!(took < std::time::Duration::from_secs(6), "answered soon after the 4 s store budget, took {took:?}");
    // Once the store is back, the call is written as if it had answered.
    let call_sid = CallSid::parse(&sid).unwrap();
    let written = app.event(&call_sid, "stream_ended", std::time::Duration::from_secs(20)).await;
    assert!(written.is_some(), "the webhook's writes were made once the store came back");
    let call = app.stores.calls.get_call(&call_sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.fallback_reason.as_deref()), (CallStatus::Fallback, Some("stream_never_started")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_audit_event_fails_is_still_answered_and_the_event_written_later() {
    let app = spawn_app().await;
    let db = rusqlite::Connection::open(app.data_dir.path().join("callkeeper.sqlite3")).unwrap();
    db.execute_batch("CREATE TRIGGER broken_events BEFORE INSERT ON call_events BEGIN SELECT RAISE(ABORT, 'events broken'); END;").unwrap();
    let sid = new_call_sid();
    let twiml = twiml_of(app.post("/webhook/incoming_call", &incoming_call_form(&sid, CALLER)).await).await;
    assert!(twiml.find("Stream").is_some(), "the call is connected to its stream");
    let call_sid = CallSid::parse(&sid).unwrap();
    assert_eq!(app.stores.calls.get_call(&call_sid).await.unwrap().unwrap().status, CallStatus::AwaitingStream);
    db.execute_batch("DROP TRIGGER broken_events").unwrap();
    let written = app.event(&call_sid, "twiml_served", std::time::Duration::from_secs(5)).await;
    assert!(written.is_some(), "the twiml_served event was written once the store took it");
}

/// Every URL callkeeper hands Twilio carries the connection overrides, so a 503 is retried.
/// Whether Twilio signs the fragment is not documented (it is never sent): a signature over the
/// URL with our fragment or without it is accepted, and over any other fragment refused.
#[tokio::test]
async fn callbacks_carry_the_connection_overrides_and_validate_with_or_without_them() {
    let app = spawn_app().await;
    let path = "/webhook/incoming_call";
    let sign = |url: &str, form: &[(String, String)]| {
        callkeeper_core::signature::compute(AUTH_TOKEN.as_bytes(), callkeeper_core::signature::Algorithm::HmacSha1, url, form)
    };
    for (url, status) in [
        ("https://ck.example.com/webhook/incoming_call", 200),
        ("https://ck.example.com/webhook/incoming_call#rc=3&rp=5xx,ct", 200),
        ("https://ck.example.com/webhook/incoming_call#rc=5", 403),
    ] {
        let form = incoming_call_form(&new_call_sid(), CALLER);
        assert_eq!(app.post_signed(path, &form, Some(&sign(url, &form))).await.status(), status, "signed over {url}");
    }
    assert_eq!(callkeeper_core::config::CONNECTION_OVERRIDES, "#rc=3&rp=5xx,ct");
}
