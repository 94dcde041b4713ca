//! No call lost: the watchdog against a fake Twilio REST server (wiremock) over loopback, with
//! calls answered by the real webhooks and streams held by the real relay.

use crate::common;

use callkeeper_core::call::CallStatus;
use callkeeper_core::ids::CallSid;
use callkeeper_core::watchdog::Watchdog;
use common::*;
use std::time::Duration;
use tokio::sync::oneshot;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Tight timeouts so the suite is quick: a stream must start within 1 s, a heartbeat every 1 s,
/// stale after 2 s, a pass every 1 s. The relay's own limit on silent media is put out of reach,
/// so that what these tests see is the watchdog's doing (a relay that closes a silent stream
/// sends Twilio to `stream_ended`, and the watchdog then leaves the call alone).
async fn app_and_twilio() -> (TestApp, MockServer) {
    let twilio = MockServer::start().await;
    let app = spawn_app_with(&[
        ("STREAM_START_TIMEOUT_SECS", "1"),
        ("HEARTBEAT_INTERVAL_SECS", "1"),
        ("HEARTBEAT_STALE_SECS", "2"),
        ("WATCHDOG_POLL_SECS", "1"),
        ("MEDIA_SILENCE_SECS", "60"),
        ("VOICE_AGENT", "silent"),
        ("TWILIO_API_BASE", &twilio.uri()),
    ])
    .await;
    (app, twilio)
}

fn twilio_accepts_redirects() -> Mock {
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls/CA[0-9a-f]{32}\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "sid": "CA", "status": "in-progress" })))
}

/// Runs a watchdog until the returned sender is dropped or fired.
fn start_watchdog(app: &TestApp) -> oneshot::Sender<()> {
    let watchdog = Watchdog::new(app.stores.calls.clone(), app.config.twilio_rest(), app.config.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        watchdog
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    stop
}

/// `n` calls answered, whose streams never start.
async fn answered_calls(app: &TestApp, n: usize) -> Vec<String> {
    let mut sids = Vec::new();
    for _ in 0..n {
        let sid = new_call_sid();
        app.answer(&sid).await;
        sids.push(sid);
    }
    sids
}

/// Two watchdogs at once over `sids`: each call is redirected (within `within`) exactly once.
async fn two_watchdogs_redirect_each_once(app: &TestApp, twilio: &MockServer, mut sids: Vec<String>, within: Duration) {
    let _first = start_watchdog(app);
    let _second = start_watchdog(app);
    for sid in &sids {
        watchdog_event(app, &CallSid::parse(sid).unwrap(), "watchdog_redirected", within).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut asked = redirects(twilio).await;
    asked.sort();
    sids.sort();
    assert_eq!(asked, sids, "each call redirected exactly once");
}

/// The redirects Twilio received, by call sid.
async fn redirects(twilio: &MockServer) -> Vec<String> {
    let requests = twilio.received_requests().await.unwrap_or_default();
    requests.iter().filter_map(|r| r.url.path().rsplit('/').next().map(|last| last.trim_end_matches(".json").to_string())).collect()
}

/// Waits for the watchdog's event on the call, and returns its detail.
async fn watchdog_event(app: &TestApp, sid: &CallSid, kind: &str, within: Duration) -> serde_json::Value {
    match app.event(sid, kind, within).await {
        Some(event) => event.detail,
        None => panic!("no {kind} event on {sid} within {within:?}: {:?}", app.stores.calls.events(sid).await.unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_stream_never_starts_is_redirected_within_the_start_timeout_plus_one_poll() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().expect(1).mount(&twilio).await;
    let _watchdog = start_watchdog(&app);

    // GIVEN a call answered with the stream TwiML, whose stream never connects.
    let sid = new_call_sid();
    app.answer(&sid).await;
    let sid = CallSid::parse(&sid).unwrap();
    let answered_at = app.stores.calls.get_call(&sid).await.unwrap().unwrap().status_at;

    // THEN the watchdog redirects it to the fallback while the caller is on the line.
    let detail = watchdog_event(&app, &sid, "watchdog_redirected", Duration::from_secs(4)).await;
    let times = &detail["times"];
    assert_eq!(times["reason"], "stream_never_started");
    let requested_at = times["requested_at"].as_i64().unwrap();
    assert!(requested_at - answered_at <= 1_000 + 1_000 + 250, "start timeout + one poll: {detail}");
    assert!(times["detection_ms"].as_i64().unwrap() <= 1_250, "{detail}");

    let request = &twilio.received_requests().await.unwrap()[0];
    let form: Vec<(String, String)> = form_urlencoded::parse(&request.body).into_owned().collect();
    let twiml = parse_twiml(&form.iter().find(|(k, _)| k == "Twiml").expect("the fallback TwiML").1);
    assert!(twiml.find("Record").is_some(), "voicemail, the default fallback");
    assert!(request.headers["authorization"].to_str().unwrap().starts_with("Basic "));

    let call = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!(
        (call.status, call.fallback_reason.as_deref(), call.redirect_pending),
        (CallStatus::Fallback, Some("stream_never_started"), false)
    );
    let fallback = app.stores.calls.events(&sid).await.unwrap().into_iter().find(|e| e.kind == "fallback").unwrap();
    assert_eq!(fallback.detail["by"], "watchdog");
}

/// A relay that hangs (its heartbeats stop, the socket stays open): the watchdog first moves the
/// call to a new stream through the REST API, so another relay can go on with the conversation;
/// when that stream never starts either, the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_heartbeats_stop_is_moved_to_a_new_stream_then_falls_back() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().expect(2).mount(&twilio).await;
    let _watchdog = start_watchdog(&app);

    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_millis(1500)).await;
    // The socket stays open, but no more media comes.
    let detail = watchdog_event(&app, &sid, "watchdog_reconnected", Duration::from_secs(5)).await;
    assert_eq!((detail["times"]["reason"].as_str(), detail["times"]["generation"].as_u64()), (Some("heartbeat_stale"), Some(1)));
    // A poll, and the half second given to a stream end still being written.
    assert!(detail["times"]["detection_ms"].as_i64().unwrap() <= 1_750, "{detail}");
    let requests = twilio.received_requests().await.unwrap();
    let form: Vec<(String, String)> = form_urlencoded::parse(&requests[0].body).into_owned().collect();
    let twiml = parse_twiml(&form.iter().find(|(k, _)| k == "Twiml").expect("the new stream's TwiML").1);
    assert_eq!(twiml.names(), ["Connect"], "a new stream alone");
    let generation = twiml.find("Stream").unwrap().children.iter().find(|p| p.attr("name") == Some("generation")).unwrap();
    assert_eq!(generation.attr("value"), Some("1"));
    let moved = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((moved.status, moved.generation, moved.recoveries), (CallStatus::AwaitingStream, 1, 1));

    // Nobody opens the new stream: past the start timeout, the fallback.
    let detail = watchdog_event(&app, &sid, "watchdog_redirected", Duration::from_secs(4)).await;
    assert_eq!(detail["times"]["reason"], "stream_never_started");
    let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.fallback_reason.as_deref()), (CallStatus::Fallback, Some("stream_never_started")));
    drop(call);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_stream_is_never_touched() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().expect(0).mount(&twilio).await;
    let _watchdog = start_watchdog(&app);

    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_secs(5)).await;
    assert_eq!(app.stores.calls.get_call(&sid).await.unwrap().unwrap().status, CallStatus::Streaming);
    assert!(redirects(&twilio).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_call_gets_no_redirect_and_one_twilio_says_is_over_is_closed_out() {
    let (app, twilio) = app_and_twilio().await;
    // Twilio says every call it is asked about is over.
    let over = serde_json::json!({ "code": 21220, "message": "Call is not in-progress. Cannot redirect.", "status": 400 });
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(over)).mount(&twilio).await;

    // A call that ended (the caller hung up before the stream) is not on the watchdog's list.
    let ended = new_call_sid();
    app.answer(&ended).await;
    let mut hangup = incoming_call_form(&ended, "+972501234567");
    hangup.retain(|(k, _)| k != "CallStatus");
    hangup.push(("CallStatus".into(), "completed".into()));
    assert_eq!(app.post("/webhook/stream_ended", &hangup).await.status(), 200);

    // A call we still think is live, which Twilio knows is over.
    let gone = new_call_sid();
    app.answer(&gone).await;
    let _watchdog = start_watchdog(&app);
    let gone = CallSid::parse(&gone).unwrap();
    let detail = watchdog_event(&app, &gone, "watchdog_call_over", Duration::from_secs(4)).await;
    assert_eq!(detail["twilio_code"], 21220);
    let call = app.stores.calls.get_call(&gone).await.unwrap().unwrap();
    assert_eq!(
        (call.status, call.end_reason.as_deref(), call.redirect_pending),
        (CallStatus::Completed, Some("ended_before_fallback"), false)
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = redirects(&twilio).await;
    assert_eq!(asked, vec![gone.to_string()], "one request for the live-looking call, none for the ended one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchdogs_at_once_make_one_redirect_per_call() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().mount(&twilio).await;
    let sids = answered_calls(&app, 10).await;
    two_watchdogs_redirect_each_once(&app, &twilio, sids, Duration::from_secs(4)).await;
}

/// Twilio takes 3 s to answer each redirect: the other watchdog's passes see the calls still
/// pending meanwhile, and must leave them to the attempt in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redirect_in_flight_is_not_made_again_by_the_other_watchdog() {
    let (app, twilio) = app_and_twilio().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls/CA[0-9a-f]{32}\.json$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "sid": "CA", "status": "in-progress" }))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&twilio)
        .await;
    let sids = answered_calls(&app, 4).await;
    two_watchdogs_redirect_each_once(&app, &twilio, sids, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_answering_500_then_200_is_retried() {
    let (app, twilio) = app_and_twilio().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(1).with_priority(1).expect(1).mount(&twilio).await;
    twilio_accepts_redirects().expect(1).mount(&twilio).await;
    let _watchdog = start_watchdog(&app);
    let sid = new_call_sid();
    app.answer(&sid).await;
    let sid = CallSid::parse(&sid).unwrap();
    watchdog_event(&app, &sid, "watchdog_redirected", Duration::from_secs(4)).await;
    assert_eq!(redirects(&twilio).await, vec![sid.to_string(), sid.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_that_keeps_failing_stays_pending_and_goes_through_when_twilio_recovers() {
    let (app, twilio) = app_and_twilio().await;
    // Down for the whole first pass's retries (4 attempts), then back.
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).up_to_n_times(4).with_priority(1).mount(&twilio).await;
    twilio_accepts_redirects().mount(&twilio).await;
    let _watchdog = start_watchdog(&app);
    let sid = new_call_sid();
    app.answer(&sid).await;
    let sid = CallSid::parse(&sid).unwrap();
    let failed = watchdog_event(&app, &sid, "watchdog_redirect_failed", Duration::from_secs(6)).await;
    assert_eq!(failed["retried_next_pass"], true);
    watchdog_event(&app, &sid, "watchdog_redirected", Duration::from_secs(4)).await;
    let call = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.redirect_pending), (CallStatus::Fallback, false));
    assert_eq!(redirects(&twilio).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ended_and_the_watchdog_never_both_act() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().expect(0).mount(&twilio).await;
    let sid = new_call_sid();
    app.answer(&sid).await;
    // Twilio reports the stream ended first: stream_ended claims the call and serves the fallback.
    let twiml = twiml_of(app.post("/webhook/stream_ended", &incoming_call_form(&sid, "+972501234567")).await).await;
    assert!(twiml.find("Record").is_some());
    let _watchdog = start_watchdog(&app);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(redirects(&twilio).await.is_empty(), "the watchdog sees a call already in its fallback");
}

/// Twilio closed the stream and `stream_ended` answered the fallback without the store (its write
/// not landed): the relay's record of the stream's end says Twilio is on the `<Connect action>`,
/// so the watchdog, finding the call stale, claims it and does not redirect (a redirect would cut
/// the caller's voicemail and play the apology again). Found by `simulate --scenario store-blip`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_stream_twilio_closed_is_not_redirected_over_its_fallback() {
    let (app, twilio) = app_and_twilio().await;
    twilio_accepts_redirects().expect(0).mount(&twilio).await;
    let _watchdog = start_watchdog(&app);
    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_millis(500)).await;
    call.hang_up();
    // The relay writes the stream's end; stream_ended never reaches the store.
    let detail = watchdog_event(&app, &sid, "watchdog_redirect_skipped", Duration::from_secs(5)).await;
    assert_eq!(detail["stream_end"], "socket_closed", "{detail}");
    assert!(redirects(&twilio).await.is_empty());
    let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.redirect_pending), (CallStatus::Fallback, false));
    // And it is left alone after: one claim, no redirect on later passes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(redirects(&twilio).await.is_empty());
}

/// An outbound call placed and never heard of again (its final status callback lost) stays on
/// the watchdog's list as `ringing`. Past any ring, Twilio is asked: over, or unknown to it, is
/// closed out; a call Twilio says goes on is left alone (and asked about once a minute). A stale
/// call behind the old ones is redirected meanwhile: the list is read whole (it had a limit of
/// 10,000, oldest first, so old calls could hide new ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ringing_past_any_ring_are_closed_out_by_what_twilio_says() {
    use callkeeper_core::call::{Direction, NewCall};
    use callkeeper_core::ids::AccountSid;
    let (app, twilio) = app_and_twilio().await;
    let old = callkeeper_core::time::now_ms() - 20 * 60 * 1000;
    let ringing = |sid: &str| NewCall {
        call_sid: CallSid::parse(sid).unwrap(),
        account_sid: AccountSid::parse(ACCOUNT_SID).unwrap(),
        from: "+97231234567".into(),
        to: "+972501234567".into(),
        contact: None,
        direction: Direction::Outbound,
        status: CallStatus::Ringing,
        twilio_status: Some("queued".into()),
        at: old,
    };
    let (no_answer, unknown, still_on) = (new_call_sid(), new_call_sid(), new_call_sid());
    for sid in [&no_answer, &unknown, &still_on] {
        app.stores.calls.create_call(&ringing(sid)).await.unwrap();
    }
    let status = |sid: &str, body: serde_json::Value| {
        Mock::given(method("GET"))
            .and(path_regex(format!(r"/Calls/{sid}\.json$")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
    };
    status(&no_answer, serde_json::json!({ "sid": no_answer, "status": "no-answer" })).mount(&twilio).await;
    status(&still_on, serde_json::json!({ "sid": still_on, "status": "in-progress" })).mount(&twilio).await;
    Mock::given(method("GET"))
        .and(path_regex(format!(r"/Calls/{unknown}\.json$")))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({ "code": 20404, "message": "not found", "status": 404 })))
        .mount(&twilio)
        .await;
    twilio_accepts_redirects().mount(&twilio).await;
    // A call whose stream never starts, behind the old ones.
    let fresh = new_call_sid();
    app.answer(&fresh).await;
    let _watchdog = start_watchdog(&app);
    let fresh = CallSid::parse(&fresh).unwrap();
    watchdog_event(&app, &fresh, "watchdog_redirected", Duration::from_secs(5)).await;
    let detail = watchdog_event(&app, &CallSid::parse(&no_answer).unwrap(), "watchdog_aged_out", Duration::from_secs(5)).await;
    assert_eq!(detail["end_reason"], "no_answer");
    let detail = watchdog_event(&app, &CallSid::parse(&unknown).unwrap(), "watchdog_aged_out", Duration::from_secs(5)).await;
    assert_eq!(detail["end_reason"], "unknown_to_twilio");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let get = |sid: &str| {
        let sid = CallSid::parse(sid).unwrap();
        let calls = app.stores.calls.clone();
        async move { calls.get_call(&sid).await.unwrap().unwrap() }
    };
    assert_eq!(get(&no_answer).await.status, CallStatus::Completed);
    assert_eq!(get(&unknown).await.status, CallStatus::Completed);
    assert_eq!(get(&still_on).await.status, CallStatus::Ringing, "Twilio says it goes on");
    // Asked about once a minute, not every pass.
    let asked =
        twilio.received_requests().await.unwrap().iter().filter(|r| r.method.as_str() == "GET" && r.url.path().contains(&still_on)).count();
    assert_eq!(asked, 1);
    let active: Vec<_> = app.stores.calls.active_calls().await.unwrap().into_iter().map(|c| c.call_sid.to_string()).collect();
    assert_eq!(active, [still_on]);
}
