//! recording_done, WhatsApp inbound and status, and the health endpoints, over loopback.

use crate::common;

use callkeeper_core::ids::{CallSid, MessageSid, RecordingSid};
use callkeeper_core::job::{Job, QueueName};
use callkeeper_core::message::TimelineItem;
use callkeeper_core::phone::E164;
use common::*;
use std::time::Duration;

const CALLER: &str = "+972501234567";

fn recording_form(call_sid: &str, recording_sid: &str, status: &str) -> Vec<(String, String)> {
    let mut form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", call_sid),
        ("RecordingSid", recording_sid),
        ("RecordingStatus", status),
        ("RecordingSource", "StartCallRecording"),
        ("RecordingStartTime", "Mon, 23 Nov 2026 18:00:00 +0000"),
    ]);
    if status == "completed" {
        form.extend(params(&[
            ("RecordingUrl", &format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}")),
            ("RecordingDuration", "37"),
            ("RecordingChannels", "2"),
        ]));
    } else {
        form.extend(params(&[("ErrorCode", "13617")]));
    }
    form
}

#[tokio::test]
async fn completed_recording_is_kept_and_one_transcription_job_enqueued_despite_retries() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.post("/webhook/incoming_call", &incoming_call_form(&sid, CALLER)).await;
    let rsid = "RE0123456789abcdef0123456789abcdef";
    for _ in 0..3 {
        let response = app.post("/webhook/recording_done", &recording_form(&sid, rsid, "completed")).await;
        assert_eq!(response.status(), 204);
    }
    let call_sid = CallSid::parse(&sid).unwrap();
    let recordings = app.stores.calls.recordings(&call_sid).await.unwrap();
    assert_eq!(recordings.len(), 1);
    let r = &recordings[0];
    assert_eq!((r.status.as_str(), r.duration_secs, r.channels), ("completed", Some(37), Some(2)));
    assert!(r.url.as_deref().unwrap().ends_with(rsid));
    assert!(r.job_enqueued_at.is_some());
    let jobs = app.stores.queue.receive(QueueName::Transcription, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job for three posts");
    assert_eq!(Job::from_body(&jobs[0].body).unwrap(), Job::Transcribe { call_sid, recording_sid: RecordingSid::parse(rsid).unwrap() });
}

#[tokio::test]
async fn absent_recording_is_recorded_with_its_error_and_not_transcribed() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let rsid = "RE11111111111111111111111111111111";
    assert_eq!(app.post("/webhook/recording_done", &recording_form(&sid, rsid, "absent")).await.status(), 204);
    let recordings = app.stores.calls.recordings(&CallSid::parse(&sid).unwrap()).await.unwrap();
    assert_eq!((recordings[0].status.as_str(), recordings[0].error_code.as_deref()), ("absent", Some("13617")));
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().visible, 0);
}

#[tokio::test]
async fn malformed_recording_posts_are_400() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let rsid = "RE22222222222222222222222222222222";
    let mut no_url = recording_form(&sid, rsid, "completed");
    no_url.retain(|(k, _)| k != "RecordingUrl");
    let mut bad_duration = recording_form(&sid, rsid, "completed");
    bad_duration.retain(|(k, _)| k != "RecordingDuration");
    bad_duration.push(("RecordingDuration".into(), "long".into()));
    let bad_sid = recording_form(&sid, "RE-nope", "completed");
    for (form, reason) in [
        (no_url, "missing field RecordingUrl"),
        (bad_duration, "RecordingDuration must be a whole number, got \"long\""),
        (bad_sid, "RecordingSid must be RE followed by 32 hex digits"),
    ] {
        let response = app.post("/webhook/recording_done", &form).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.text().await.unwrap().trim(), reason);
    }
    assert!(app.stores.calls.recordings(&CallSid::parse(&sid).unwrap()).await.unwrap().is_empty());
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().visible, 0);
}

fn whatsapp_form(message_sid: &str, body: &str) -> Vec<(String, String)> {
    params(&[
        ("AccountSid", ACCOUNT_SID),
        ("MessageSid", message_sid),
        ("SmsMessageSid", message_sid),
        ("From", &format!("whatsapp:{CALLER}")),
        ("To", "whatsapp:+14155238886"),
        ("Body", body),
        ("ProfileName", "דנה"),
        ("WaId", "972501234567"),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1"),
        ("MediaContentType0", "image/jpeg"),
        ("SmsStatus", "received"),
    ])
}

#[tokio::test]
async fn whatsapp_message_lands_on_the_timeline_with_one_reply_job() {
    let app = spawn_app().await;
    let msid = "MM0123456789abcdef0123456789abcdef";
    for _ in 0..3 {
        let twiml = twiml_of(app.post("/webhook/whatsapp/inbound", &whatsapp_form(msid, "שלום, מחפש דירת 4 חדרים")).await).await;
        assert!(twiml.children.is_empty(), "an empty <Response/>: the reply goes out through the API");
    }
    let contact = E164::parse(CALLER).unwrap();
    let timeline = app.stores.calls.timeline(&contact, 10).await.unwrap();
    assert_eq!(timeline.len(), 1, "one message for three posts");
    let TimelineItem::Message(m) = &timeline[0] else { panic!("a message") };
    assert_eq!(m.body, "שלום, מחפש דירת 4 חדרים");
    assert_eq!(m.media.len(), 1);
    assert_eq!(m.media[0].content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(m.profile_name.as_deref(), Some("דנה"));
    let jobs = app.stores.queue.receive(QueueName::Replies, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(Job::from_body(&jobs[0].body).unwrap(), Job::WhatsappReply { message_sid: MessageSid::parse(msid).unwrap(), contact });
}

#[tokio::test]
async fn whatsapp_bad_input_is_400() {
    let app = spawn_app().await;
    let mut bad_from = whatsapp_form("SM0123456789abcdef0123456789abcdef", "hi");
    bad_from.retain(|(k, _)| k != "From");
    bad_from.push(("From".into(), "whatsapp:0501234567".into()));
    let mut missing_media = whatsapp_form("SM1123456789abcdef0123456789abcdef", "hi");
    missing_media.retain(|(k, _)| k != "MediaUrl0");
    for (form, reason) in [(bad_from, "From must be an E.164 number such as +972501234567"), (missing_media, "missing field MediaUrl0")] {
        let response = app.post("/webhook/whatsapp/inbound", &form).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.text().await.unwrap().trim(), reason);
    }
    assert_eq!(app.stores.queue.depth(QueueName::Replies).await.unwrap().visible, 0);
}

#[tokio::test]
async fn whatsapp_statuses_only_move_forward() {
    let app = spawn_app().await;
    let msid = "SM9123456789abcdef0123456789abcdef";
    let status = |s: &str| {
        params(&[
            ("AccountSid", ACCOUNT_SID),
            ("MessageSid", msid),
            ("MessageStatus", s),
            ("From", "whatsapp:+14155238886"),
            ("To", &format!("whatsapp:{CALLER}")),
        ])
    };
    for s in ["sent", "read", "delivered"] {
        assert_eq!(app.post("/webhook/whatsapp/status", &status(s)).await.status(), 204);
    }
    let mut failed = status("failed");
    failed.push(("ErrorCode".into(), "63016".into()));
    assert_eq!(app.post("/webhook/whatsapp/status", &failed).await.status(), 204);
    let m = app.stores.calls.get_message(&MessageSid::parse(msid).unwrap()).await.unwrap().unwrap();
    assert_eq!((m.status.as_str(), m.error_code.as_deref()), ("failed", Some("63016")));
    let missing = params(&[("AccountSid", ACCOUNT_SID), ("MessageSid", msid), ("From", "x"), ("To", "y")]);
    assert_eq!(app.post("/webhook/whatsapp/status", &missing).await.status(), 400);
}

#[tokio::test]
async fn health_ready_and_version() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let stamp = health.headers()["x-callkeeper-version"].to_str().unwrap().to_string();
    assert!(stamp.starts_with(env!("CARGO_PKG_VERSION")), "{stamp}");
    assert_eq!(app.get("/readyz").await.status(), 200);
    let version: serde_json::Value = app.get("/version").await.json().await.unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(!version["git_sha"].as_str().unwrap().is_empty());
    assert!(version["built_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stamp, format!("{}+{}", version["version"].as_str().unwrap(), version["git_sha"].as_str().unwrap()));
    // Paths outside the API are 404, still stamped.
    let missing = app.get("/webhook/nope").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-callkeeper-version"));
}
