//! Events out: calls, leads and WhatsApp messages raise business events, and the delivery worker
//! POSTs them to a receiver on loopback that checks each signature as README shows, fails the
//! first two deliveries, then accepts: every event arrives once, and a retried webhook's event is
//! not sent again. A receiver that stays down leaves the event in the dead-letter queue.

use crate::common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use callkeeper_core::call::{CallPatch, CallStatus};
use callkeeper_core::event_delivery::Deliverer;
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::job::QueueName;
use callkeeper_core::phone::E164;
use callkeeper_core::worker::poll_once;
use common::*;
use hmac::{Hmac, Mac};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "a receiver's shared secret";

#[derive(Default)]
struct Receiver {
    /// Answers 503 to this many deliveries first.
    fail_first: usize,
    attempts: usize,
    /// `(id, type)` of each delivery accepted.
    accepted: Vec<(String, String)>,
    bad_signatures: usize,
}

/// What a receiver does, in the words of README's example: recompute the HMAC over
/// `timestamp.body`, compare, refuse an old timestamp.
fn signed(headers: &HeaderMap, body: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let timestamp = header("x-callkeeper-timestamp");
    let Some(sent) = header("x-callkeeper-signature").strip_prefix("v1=") else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (callkeeper_core::time::now_ms() / 1000 - t).abs() < 300);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    fresh && expected == sent
}

async fn receive(State(receiver): State<Arc<Mutex<Receiver>>>, headers: HeaderMap, body: String) -> StatusCode {
    let mut r = receiver.lock().unwrap();
    r.attempts += 1;
    if !signed(&headers, &body) {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if r.attempts <= r.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(headers["x-callkeeper-event-id"].to_str().unwrap(), event["id"].as_str().unwrap());
    r.accepted.push((event["id"].as_str().unwrap().to_string(), event["type"].as_str().unwrap().to_string()));
    StatusCode::NO_CONTENT
}

async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver { fail_first, ..Default::default() }));
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// Runs the delivery worker until the events queue is empty (or 20 s pass).
async fn deliver_all(app: &TestApp) {
    let deliverer = Deliverer::new(app.stores.calls.clone(), app.config.clone()).expect("EVENTS_WEBHOOK_URL is set");
    let queue = app.stores.queue.as_ref();
    for _ in 0..400 {
        poll_once(queue, &deliverer).await.unwrap();
        let depth = queue.depth(QueueName::Events).await.unwrap();
        if depth.visible == 0 && depth.in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the events queue never emptied: {:?}", queue.depth(QueueName::Events).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_receiver_that_fails_twice_once_and_signed() {
    let (url, receiver) = receiver(2).await;
    let app =
        spawn_app_with(&[("EVENTS_WEBHOOK_URL", url.as_str()), ("EVENTS_WEBHOOK_SECRET", SECRET), ("JOB_RETRY_BASE_SECS", "0")]).await;
    let call_sid = random_sid("CA");
    let caller = "+972501234567";
    assert_eq!(app.post("/webhook/incoming_call", &incoming_call_form(&call_sid, caller)).await.status(), 200);
    let message_sid = random_sid("SM");
    let inbound = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("MessageSid", &message_sid),
        ("From", &format!("whatsapp:{caller}")),
        ("To", "whatsapp:+14155238886"),
        ("Body", "שלום"),
        ("NumMedia", "0"),
    ]);
    assert!(app.post("/webhook/whatsapp/inbound", &inbound).await.status().is_success());
    let sid = CallSid::parse(&call_sid).unwrap();
    let contact = E164::parse(caller).unwrap();
    let calls = app.stores.calls.as_ref();
    calls.save_lead(&sid, Some(&contact), &serde_json::json!({ "name": "דנה", "budget": 2_000_000 }), 1).await.unwrap();
    let ended = CallPatch { end_reason: Some("caller_hangup".into()), ..Default::default() };
    calls.transition(&sid, &[CallStatus::AwaitingStream], CallStatus::Completed, &ended, callkeeper_core::time::now_ms()).await.unwrap();

    deliver_all(&app).await;
    {
        let r = receiver.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        let mut types: Vec<&str> = r.accepted.iter().map(|(_, kind)| kind.as_str()).collect();
        types.sort();
        assert_eq!(types, ["call.ended", "call.started", "lead.saved", "whatsapp.received"], "each event once: {:?}", r.accepted);
        assert!(r.accepted.iter().any(|(id, _)| *id == format!("call.started:{call_sid}")));
        assert!(r.accepted.iter().any(|(id, _)| *id == format!("whatsapp.received:{message_sid}")));
        assert_eq!(r.attempts, 6, "two refused, four accepted");
    }
    assert_eq!(app.stores.queue.depth(QueueName::Events).await.unwrap().dead, 0);

    // Twilio retries the call's webhook: the same event is raised again, and not sent again.
    assert_eq!(app.post("/webhook/incoming_call", &incoming_call_form(&call_sid, caller)).await.status(), 200);
    assert_eq!(app.stores.queue.depth(QueueName::Events).await.unwrap().visible, 1);
    deliver_all(&app).await;
    assert_eq!(receiver.lock().unwrap().attempts, 6, "a delivered event is never sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_receiver_never_takes_waits_in_the_dead_letter_queue() {
    let (url, receiver) = receiver(usize::MAX).await;
    let settings = [
        ("EVENTS_WEBHOOK_URL", url.as_str()),
        ("EVENTS_WEBHOOK_SECRET", SECRET),
        ("JOB_RETRY_BASE_SECS", "0"),
        ("QUEUE_MAX_RECEIVES", "3"),
    ];
    let app = spawn_app_with(&settings).await;
    let call_sid = random_sid("CA");
    assert_eq!(app.post("/webhook/incoming_call", &incoming_call_form(&call_sid, "+972501234567")).await.status(), 200);
    deliver_all(&app).await;
    let dead = app.stores.queue.dead_letters(QueueName::Events, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].last_error.as_deref().unwrap_or("").contains("the receiver answered 503"), "{dead:?}");
    assert!(dead[0].body.contains(&format!("call.started:{call_sid}")));
    assert_eq!(receiver.lock().unwrap().attempts, 3);
    // Once the receiver is back, a redrive delivers it.
    receiver.lock().unwrap().fail_first = 0;
    assert_eq!(app.stores.queue.redrive(QueueName::Events, None).await.unwrap(), 1);
    deliver_all(&app).await;
    assert_eq!(receiver.lock().unwrap().accepted.len(), 1);
}

/// A call whose `call.started` event the receiver at `url` never takes (two tries): its dead letter.
async fn a_call_dead_lettered_for(url: &str) -> callkeeper_core::job::DeadLetter {
    let settings =
        [("EVENTS_WEBHOOK_URL", url), ("EVENTS_WEBHOOK_SECRET", SECRET), ("JOB_RETRY_BASE_SECS", "0"), ("QUEUE_MAX_RECEIVES", "2")];
    let app = spawn_app_with(&settings).await;
    assert_eq!(app.post("/webhook/incoming_call", &incoming_call_form(&random_sid("CA"), "+972501234567")).await.status(), 200);
    deliver_all(&app).await;
    let mut dead = app.stores.queue.dead_letters(QueueName::Events, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead.remove(0)
}

/// Receivers such as Zapier or Slack keep their secret in the URL's path: a delivery that fails
/// keeps (and shows on Operations, and logs) its error without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_keeps_no_trace_of_the_receivers_url() {
    // A port with nobody on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = a_call_dead_lettered_for(&format!("http://127.0.0.1:{port}/hooks/T0SECRETPATH/B1SECRETPATH")).await;
    let error = dead.last_error.as_deref().unwrap_or("");
    assert!(error.contains("the receiver did not answer"), "{error}");
    assert!(!error.contains("SECRETPATH") && !error.contains("/hooks"), "{error}");
}

/// A redirect from the receiver is not followed: the signed body would go wherever it points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_redirect_is_a_failure_and_the_body_goes_nowhere_else() {
    let (elsewhere, other) = receiver(0).await;
    let redirecting = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let to = elsewhere.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await.unwrap() });
    let dead = a_call_dead_lettered_for(&url).await;
    assert!(dead.last_error.as_deref().unwrap_or("").contains("the receiver answered 307"), "{dead:?}");
    assert_eq!(other.lock().unwrap().attempts, 0, "the redirect's target got nothing");
}
