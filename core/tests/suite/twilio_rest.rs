//! The Twilio REST client against a fake Twilio over loopback (wiremock): what it sends, how it
//! reads both error shapes, and how it retries.

use callkeeper_core::ids::{AccountSid, CallSid};
use callkeeper_core::secrets::Secret;
use callkeeper_core::twilio_rest::{CallUpdate, OutboundCall, OutboundMessage, RestError, RetryPolicy, TwilioRest, Updated};
use callkeeper_core::url::AbsoluteUrl;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALL: &str = "CAffffffffffffffffffffffffffffffff";
/// base64("AC0123456789abcdef0123456789abcdef:token")
const BASIC: &str = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0b2tlbg==";

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(1500),
        total: Duration::from_secs(5),
        per_attempt: Duration::from_secs(2),
    }
}

fn client(server: &MockServer) -> TwilioRest {
    TwilioRest::new(&server.uri(), AccountSid::parse(ACCOUNT).unwrap(), Secret::new("token"), quick())
}

fn call_path() -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")
}

fn call_sid() -> CallSid {
    CallSid::parse(CALL).unwrap()
}

fn ok_call() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "sid": CALL, "status": "in-progress" }))
}

#[tokio::test]
async fn a_redirect_posts_the_twiml_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(call_path()))
        .and(header("authorization", BASIC))
        .and(body_string_contains("Twiml=%3CResponse%3E%3CHangup%2F%3E%3C%2FResponse%3E"))
        .respond_with(ok_call())
        .expect(1)
        .mount(&server)
        .await;
    let update = CallUpdate::Twiml("<Response><Hangup/></Response>".into());
    assert_eq!(client(&server).update_call(&call_sid(), &update).await.unwrap(), Updated::Done { status: "in-progress".into() });
}

#[tokio::test]
async fn hanging_up_sends_status_completed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(call_path()))
        .and(body_string_contains("Status=completed"))
        .respond_with(ok_call())
        .expect(1)
        .mount(&server)
        .await;
    client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap();
}

#[tokio::test]
async fn a_call_that_is_over_is_an_answer_in_either_error_shape() {
    let server = MockServer::start().await;
    let classic = serde_json::json!({ "code": 21220, "message": "Call is not in-progress. Cannot redirect.", "more_info": "https://www.twilio.com/docs/errors/21220", "status": 400 });
    Mock::given(method("POST"))
        .and(path(call_path()))
        .respond_with(ResponseTemplate::new(400).set_body_json(classic))
        .expect(1)
        .mount(&server)
        .await;
    let rest = client(&server);
    assert_eq!(rest.update_call(&call_sid(), &CallUpdate::Complete).await.unwrap(), Updated::CallOver { code: 21220 });

    let server = MockServer::start().await;
    let product = serde_json::json!({ "errors": [{ "code": 20404, "message": "Not Found", "infoUrl": "https://www.twilio.com/docs/api/errors/20404" }] });
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(404).set_body_json(product)).expect(1).mount(&server).await;
    assert_eq!(client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap(), Updated::CallOver { code: 20404 });
}

#[tokio::test]
async fn a_500_then_a_200_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(1).with_priority(1).expect(1).mount(&server).await;
    Mock::given(method("POST")).respond_with(ok_call()).expect(1).mount(&server).await;
    assert!(matches!(client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap(), Updated::Done { .. }));
}

#[tokio::test]
async fn retries_are_bounded_and_other_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(call_path())).respond_with(ResponseTemplate::new(503)).expect(4).mount(&server).await;
    let error = client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap_err();
    assert!(matches!(error, RestError::Api { status: 503, .. }), "{error}");

    let server = MockServer::start().await;
    let auth = serde_json::json!({ "code": 20003, "message": "Authenticate", "status": 401 });
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(401).set_body_json(auth)).expect(1).mount(&server).await;
    let error = client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap_err();
    assert_eq!(error.code(), Some(20003));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ok_call()).mount(&server).await;
    let started = Instant::now();
    client(&server).update_call(&call_sid(), &CallUpdate::Complete).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as Twilio asked");
}

#[tokio::test]
async fn an_unreachable_twilio_is_a_network_error_after_bounded_tries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let rest = TwilioRest::new(&base, AccountSid::parse(ACCOUNT).unwrap(), Secret::new("token"), quick());
    let started = Instant::now();
    let error = rest.update_call(&call_sid(), &CallUpdate::Complete).await.unwrap_err();
    assert!(matches!(error, RestError::Network(ref e) if e.starts_with("connect")), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn placing_a_call_sends_every_option_and_is_not_retried_after_a_500() {
    let server = MockServer::start().await;
    let calls = format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json");
    Mock::given(method("POST"))
        .and(path(calls.clone()))
        .and(body_string_contains("To=%2B972501234567"))
        .and(body_string_contains("From=%2B97231234567"))
        .and(body_string_contains("Url=https%3A%2F%2Fck.example.com%2Fwebhook%2Foutbound_call"))
        .and(body_string_contains("StatusCallback=https%3A%2F%2Fck.example.com%2Fwebhook%2Fstream_ended"))
        .and(body_string_contains("StatusCallbackEvent=completed"))
        .and(body_string_contains("MachineDetection=Enable"))
        .and(body_string_contains("RecordingChannels=dual"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": CALL, "status": "queued" })))
        .expect(1)
        .mount(&server)
        .await;
    let request = OutboundCall {
        to: "+972501234567".into(),
        from: "+97231234567".into(),
        url: Some(AbsoluteUrl::http("https://ck.example.com/webhook/outbound_call", "Url").unwrap()),
        status_callback: Some(AbsoluteUrl::http("https://ck.example.com/webhook/stream_ended", "StatusCallback").unwrap()),
        status_callback_events: vec!["completed".into()],
        record: true,
        recording_channels: Some("dual".into()),
        machine_detection: Some("Enable".into()),
        ..Default::default()
    };
    let created = client(&server).create_call(&request).await.unwrap();
    assert_eq!((created.sid.as_str(), created.status.as_str()), (CALL, "queued"));

    // Twilio may have placed the call before failing: a create is not retried on a 500.
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).expect(1).mount(&server).await;
    assert!(client(&server).create_call(&request).await.is_err());
}

#[tokio::test]
async fn a_whatsapp_message_and_a_recording() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")))
        .and(body_string_contains("To=whatsapp%3A%2B972501234567"))
        .and(body_string_contains("Body=%D7%A9%D7%9C%D7%95%D7%9D"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({ "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let message = OutboundMessage {
        to: "whatsapp:+972501234567".into(),
        from: "whatsapp:+14155238886".into(),
        body: "שלום".into(),
        ..Default::default()
    };
    assert_eq!(client(&server).send_message(&message).await.unwrap().status, "queued");

    let recording = format!("/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE0123456789abcdef0123456789abcdef.wav");
    Mock::given(method("GET"))
        .and(path(recording.clone()))
        .and(header("authorization", BASIC))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(b"RIFF....WAVE".to_vec()))
        .expect(1)
        .mount(&server)
        .await;
    let sid = callkeeper_core::ids::RecordingSid::parse("RE0123456789abcdef0123456789abcdef").unwrap();
    let bytes = client(&server).fetch_recording(&sid).await.unwrap();
    assert_eq!(bytes, b"RIFF....WAVE");
}
