//! The reconciler: Twilio's account against the store, with a fake Twilio (wiremock) serving the
//! recordings list (two pages) and the calls. What callbacks never brought is recovered once;
//! what callkeeper already has is left alone.

use crate::common;

use callkeeper_core::call::{CallStatus, Direction, NewCall, Transition};
use callkeeper_core::ids::{random_sid, AccountSid, CallSid, RecordingSid};
use callkeeper_core::job::QueueName;
use callkeeper_core::reconciler::{Reconciled, Reconciler};
use callkeeper_core::time::{format_ms, now_ms, Millis};
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Twilio's date format, `Tue, 01 Dec 2026 10:00:05 +0000` (the weekday is not read).
fn twilio_date(ms: Millis) -> String {
    let iso = format_ms(ms);
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months[iso[5..7].parse::<usize>().unwrap() - 1];
    format!("Tue, {} {month} {} {} +0000", &iso[8..10], &iso[0..4], &iso[11..19])
}

fn listed(sid: &str, call_sid: &str, minutes_ago: i64) -> serde_json::Value {
    json!({ "sid": sid, "call_sid": call_sid, "status": "completed", "duration": "42", "channels": 2,
            "source": "StartCallRecording", "date_created": twilio_date(now_ms() - minutes_ago * 60_000) })
}

async fn twilio_call(twilio: &MockServer, sid: &str, status: &str) {
    Mock::given(method("GET"))
        .and(path_regex(format!(r"/Calls/{sid}\.json$")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({ "sid": sid, "status": status, "from": "+972501234567", "to": "+97231234567", "direction": "inbound" }),
            ),
        )
        .mount(twilio)
        .await;
}

/// A call in `status` since `minutes_ago`, as if its last callback never came.
async fn left_call(app: &TestApp, status: CallStatus, minutes_ago: i64) -> CallSid {
    let sid = CallSid::parse(&new_call_sid()).unwrap();
    let at = now_ms() - minutes_ago * 60_000;
    let new = NewCall {
        call_sid: sid.clone(),
        account_sid: AccountSid::parse(ACCOUNT_SID).unwrap(),
        from: "+972501234567".into(),
        to: "+97231234567".into(),
        contact: None,
        direction: Direction::Inbound,
        status: CallStatus::AwaitingStream,
        twilio_status: Some("in-progress".into()),
        at,
    };
    app.stores.calls.create_call(&new).await.unwrap();
    let calls = &app.stores.calls;
    let streaming = calls.transition(&sid, &[CallStatus::AwaitingStream], CallStatus::Streaming, &Default::default(), at).await.unwrap();
    assert!(matches!(streaming, Transition::Applied(_)));
    let moved = calls.transition(&sid, &[CallStatus::Streaming], status, &Default::default(), at).await.unwrap();
    assert!(matches!(moved, Transition::Applied(_)));
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_twilio_holds_and_callkeeper_missed_is_recovered_once() {
    let twilio = MockServer::start().await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri())]).await;

    // Kept through its callback: left alone.
    let kept_call = new_call_sid();
    app.answer(&kept_call).await;
    let kept = random_sid("RE");
    let form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &kept_call),
        ("RecordingSid", &kept),
        ("RecordingStatus", "completed"),
        ("RecordingUrl", "https://api.twilio.com/x"),
        ("RecordingDuration", "42"),
        ("RecordingChannels", "2"),
    ]);
    assert_eq!(app.post("/webhook/recording_done", &form).await.status(), 204);
    // A known call whose recording callback was lost.
    let known_call = new_call_sid();
    app.answer(&known_call).await;
    let lost = random_sid("RE");
    // A call callkeeper never heard of at all (its incoming_call failed through), and its recording.
    let (unknown_call, orphan) = (new_call_sid(), random_sid("RE"));
    twilio_call(&twilio, &unknown_call, "completed").await;
    // Too fresh to count as missing: its callback may be on its way.
    let (fresh_call, fresh) = (new_call_sid(), random_sid("RE"));

    let page_two = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings.json?PageSize=1000&Page=1&PageToken=PA1");
    Mock::given(method("GET"))
        .and(path_regex(r"/Recordings\.json$"))
        .and(query_param("Page", "1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "recordings": [listed(&orphan, &unknown_call, 20)], "next_page_uri": null })),
        )
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/Recordings\.json$"))
        .and(query_param("PageSize", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "recordings": [listed(&kept, &kept_call, 15), listed(&lost, &known_call, 12), listed(&fresh, &fresh_call, 1)],
            "next_page_uri": page_two,
        })))
        .mount(&twilio)
        .await;

    // Calls whose final status never came: one Twilio says is over, one it says goes on.
    let over = left_call(&app, CallStatus::Fallback, 10).await;
    twilio_call(&twilio, over.as_str(), "completed").await;
    let talking = left_call(&app, CallStatus::Transferred, 10).await;
    twilio_call(&twilio, talking.as_str(), "in-progress").await;

    let reconciler = Reconciler::new(app.stores.calls.clone(), app.stores.queue.clone(), app.config.twilio_rest(), app.config.clone());
    let first = reconciler.pass().await.unwrap();
    assert_eq!(first, Reconciled { recordings_listed: 3, recordings_recovered: 2, calls_recorded: 1, calls_checked: 2, calls_closed: 1 });
    // Two new transcription jobs (and the one recording_done enqueued).
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().visible, 3);
    for (call, recording) in [(&known_call, &lost), (&unknown_call, &orphan)] {
        let recordings = app.stores.calls.recordings(&CallSid::parse(call).unwrap()).await.unwrap();
        let found = recordings.iter().find(|r| r.recording_sid == RecordingSid::parse(recording).unwrap()).expect("kept");
        assert!(found.job_enqueued_at.is_some());
    }
    let recorded = app.stores.calls.get_call(&CallSid::parse(&unknown_call).unwrap()).await.unwrap().expect("recorded from Twilio");
    assert_eq!((recorded.status, recorded.end_reason.as_deref()), (CallStatus::Completed, Some("reconciled_completed")));
    let closed = app.stores.calls.get_call(&over).await.unwrap().unwrap();
    assert_eq!((closed.status, closed.end_reason.as_deref()), (CallStatus::Completed, Some("reconciled_completed")));
    assert_eq!(app.stores.calls.get_call(&talking).await.unwrap().unwrap().status, CallStatus::Transferred);

    // Again: nothing more to do.
    let second = reconciler.pass().await.unwrap();
    assert_eq!((second.recordings_recovered, second.calls_recorded, second.calls_closed), (0, 0, 0));
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().visible, 3);
}
