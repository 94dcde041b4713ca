//! Every Lambda function, run by cargo-lambda's runtime emulator (`cargo lambda watch`), on the
//! sample events in `events/`: API Gateway's payload 2.0 with Twilio's form bodies base64
//! encoded and signed for the URL API Gateway serves, SQS batches, the scheduler's tick. The
//! functions start as deployed: the AWS store (on moto_server), the auth token read from an SSM
//! parameter, metrics as EMF lines on stdout, and Twilio's REST API on a local fake.

use callkeeper_core::ids::{CallSid, RecordingSid};
use callkeeper_core::recording::Recording;
use callkeeper_core::store::aws::{self, AwsNames, DynamoStore};
use callkeeper_core::store::contract::require_moto;
use callkeeper_core::store::CallsPort;
use callkeeper_core::store::MessagesPort;
use callkeeper_core::store::RecordingsPort;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What `events/gen_events.py` signed with and for.
const AUTH_TOKEN: &str = "events-test-auth-token";
const PUBLIC_BASE_URL: &str = "https://abc123def4.execute-api.eu-west-1.amazonaws.com";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALL_IN: &str = "CA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a";
const CALL_OUT: &str = "CA2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b";
const SEEDED_RECORDING: &str = "RE5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const MESSAGE_IN: &str = "SM6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f";
const MESSAGE_OUT: &str = "SM7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn event(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("events").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `cargo lambda watch` and the function process it starts, stopped together: one per function,
/// since every function is the one binary, `functions`, told which it is by `_HANDLER` as Lambda
/// tells it (the emulator names a function by its binary).
struct Emulator {
    child: Child,
    port: u16,
}

impl Emulator {
    fn start(handler: &str, env: &[(&str, String)], log: &Path) -> Emulator {
        let cargo_lambda = std::env::var("CALLKEEPER_TEST_CARGO_LAMBDA")
            .expect("CALLKEEPER_TEST_CARGO_LAMBDA is not set: run the suite with ./scripts/test.sh, which installs cargo-lambda");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Every function's emulator appends to one log, in the order they printed.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut command = Command::new(cargo_lambda);
        // Cargo gives this test process its package's variables (CARGO_MANIFEST_DIR…); some build
        // scripts watch them, so the functions' `cargo run` would rebuild half the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_") && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&name.as_ref()) {
                command.env_remove(name.as_ref());
            }
        }
        let child = command
            .args(["lambda", "watch", "--ignore-changes", "--manifest-path", "functions/Cargo.toml", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .current_dir(root())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("_HANDLER", handler)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Emulator { child, port }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// The deployed functions under the emulator, each started at its first invocation.
struct Functions {
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    running: std::sync::Mutex<std::collections::HashMap<String, Emulator>>,
}

impl Functions {
    fn new(env: Vec<(&'static str, String)>, log: &Path) -> Functions {
        Functions { env, log: log.to_path_buf(), running: Default::default() }
    }

    /// What the emulators and the functions printed.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn invoke(&self, function: &str, event: &Value) -> Value {
        let port = {
            let mut running = self.running.lock().unwrap();
            running.entry(function.to_string()).or_insert_with(|| Emulator::start(function, &self.env, &self.log)).port
        };
        let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/functions/invocations");
        // The first invocation may build the binary.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
        for _ in 0..300 {
            match client.post(&url).json(event).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap();
                    assert!(status.is_success(), "{function}: emulator answered {status}: {body}\n{}", self.output());
                    return serde_json::from_str(&body).unwrap_or_else(|e| panic!("{function}: not JSON ({e}): {body}"));
                }
                // Still starting.
                Err(e) if e.is_connect() => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("{function}: {e}\n{}", self.output()),
            }
        }
        panic!("the emulator for {function} never listened on {port}\n{}", self.output())
    }
}

/// An HTTP function's answer: status, a header, the body (decoded if base64).
fn http(response: &Value) -> (u64, String, String) {
    let status = response["statusCode"].as_u64().unwrap_or_else(|| panic!("no statusCode in {response}"));
    let content_type = response["headers"]["content-type"].as_str().unwrap_or("").to_string();
    let body = response["body"].as_str().unwrap_or("");
    let body = if response["isBase64Encoded"].as_bool() == Some(true) {
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap()
    } else {
        body.to_string()
    };
    (status, content_type, body)
}

/// The EMF documents of `metric` the functions printed.
fn emf(output: &str, metric: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(|doc| doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == metric)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_answers_its_sample_event() {
    let sdk = require_moto().await;
    let endpoint = std::env::var("CALLKEEPER_TEST_AWS_ENDPOINT").unwrap();
    let suffix = callkeeper_core::ids::random_sid("ev")[2..14].to_lowercase();
    let names = AwsNames::with_suffix(&suffix);
    aws::create_resources(&sdk, &names, 5).await.unwrap();
    let parameter = format!("/callkeeper-events/{suffix}/twilio-auth-token");
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name(&parameter)
        .value(AUTH_TOKEN)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    // Twilio's REST API: the seeded recording's media, messages sent, calls redirected.
    let twilio = MockServer::start().await;
    let tone: Vec<i16> = (0..40_000).map(|i| (3000.0 * (i as f64 * 0.07).sin()) as i16).collect();
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Recordings/{SEEDED_RECORDING}.wav")))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(callkeeper_core::wav::interleaved(&[tone.clone(), tone], 8000)))
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": MESSAGE_OUT, "status": "queued" })))
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_OUT}.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "sid": CALL_OUT, "status": "in-progress" })))
        .expect(1)
        .mount(&twilio)
        .await;

    Mock::given(method("POST")).and(path("/business/events")).respond_with(ResponseTemplate::new(204)).mount(&twilio).await;

    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &names.table);
    let seeded = Recording {
        recording_sid: RecordingSid::parse(SEEDED_RECORDING).unwrap(),
        call_sid: CallSid::parse(CALL_IN).unwrap(),
        url: Some(format!("{}/2010-04-01/Accounts/{ACCOUNT}/Recordings/{SEEDED_RECORDING}", twilio.uri())),
        status: "completed".into(),
        duration_secs: Some(5),
        channels: Some(2),
        source: Some("StartCallRecordingTwiML".into()),
        error_code: None,
        created_at: 1,
        updated_at: 1,
        job_enqueued_at: Some(1),
    };
    store.put_recording(&seeded).await.unwrap();

    let env: Vec<(&'static str, String)> = vec![
        ("CALLKEEPER_STORE", "aws".into()),
        ("CALLKEEPER_TABLE", names.table.clone()),
        ("CALLKEEPER_BUCKET", names.bucket.clone()),
        ("TRANSCRIPTION_QUEUE", names.transcription_queue.clone()),
        ("REPLIES_QUEUE", names.replies_queue.clone()),
        ("EVENTS_QUEUE", names.events_queue.clone()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("PUBLIC_BASE_URL", PUBLIC_BASE_URL.into()),
        ("RELAY_PUBLIC_URL", "wss://relay.example.com".into()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT.into()),
        ("TWILIO_AUTH_TOKEN_SSM_PARAMETER", parameter),
        ("TWILIO_API_BASE", twilio.uri()),
        // The business's receiver of events: the same fake server, on a path of its own.
        ("EVENTS_WEBHOOK_URL", format!("{}/business/events", twilio.uri())),
        ("EVENTS_WEBHOOK_SECRET", "the business's shared secret".into()),
        ("METRICS_NAMESPACE", "Callkeeper/events-test".into()),
        // The outbound call is stale for the watchdog a second after it is answered.
        ("STREAM_START_TIMEOUT_SECS", "1".into()),
        ("WATCHDOG_RUN_SECS", "1".into()),
        ("RUST_LOG", "info".into()),
    ];
    let log = tempfile::NamedTempFile::new().unwrap();
    let emulator = Functions::new(env, log.path());

    // Voice: answered with the stream, the stream's status kept, and with no relay ever
    // starting the stream, the Connect action serves the voicemail fallback.
    let (status, content_type, twiml) = http(&emulator.invoke("incoming_call", &event("incoming_call")).await);
    assert_eq!((status, content_type.as_str()), (200, "text/xml"), "{twiml}");
    assert!(twiml.contains(r#"<Stream url="wss://relay.example.com/ws/twilio-media""#), "{twiml}");
    assert!(twiml.contains(&format!(r#"action="{PUBLIC_BASE_URL}/webhook/stream_ended#rc=3&amp;rp=5xx,ct""#)), "{twiml}");
    assert!(twiml.contains(&format!(r#"<Parameter name="call_sid" value="{CALL_IN}"/>"#)), "{twiml}");

    let (status, _, twiml) = http(&emulator.invoke("incoming_call", &event("outbound_call")).await);
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains(&format!(r#"value="{CALL_OUT}""#)), "{twiml}");

    let (status, _, body) = http(&emulator.invoke("stream_status", &event("stream_status")).await);
    assert_eq!(status, 204, "{body}");

    let (status, _, twiml) = http(&emulator.invoke("stream_ended", &event("stream_ended")).await);
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Record"), "the voicemail fallback: {twiml}");
    let call = store.get_call(&CallSid::parse(CALL_IN).unwrap()).await.unwrap().unwrap();
    assert_eq!(call.status.as_str(), "fallback");
    assert_eq!(call.fallback_reason.as_deref(), Some("stream_never_started"));

    // A signature made for another URL is refused: the URL really is checked.
    let mut forged = event("stream_status");
    forged["rawPath"] = "/webhook/stream_ended".into();
    forged["requestContext"]["http"]["path"] = "/webhook/stream_ended".into();
    let (status, _, body) = http(&emulator.invoke("stream_ended", &forged).await);
    assert_eq!((status, body.trim()), (403, "invalid X-Twilio-Signature"));

    // The recording: kept and its transcription enqueued.
    let (status, _, body) = http(&emulator.invoke("recording_done", &event("recording_done")).await);
    assert_eq!(status, 204, "{body}");
    let recordings = store.recordings(&CallSid::parse(CALL_IN).unwrap()).await.unwrap();
    let recording = recordings.iter().find(|r| r.recording_sid.as_str() != SEEDED_RECORDING).expect("the recording is kept");
    assert_eq!((recording.duration_secs, recording.job_enqueued_at.is_some()), (Some(42), true));

    // The transcription worker on an SQS batch: the recording lands in S3 (no OpenAI key here,
    // so it is kept untranscribed), and no message is reported failed.
    let batch = emulator.invoke("transcribe", &event("transcribe")).await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}\n{}", emulator.output());
    let transcripts = store.transcripts(&CallSid::parse(CALL_IN).unwrap()).await.unwrap();
    let kept = transcripts.iter().find(|t| t.recording_sid.as_str() == SEEDED_RECORDING).expect("a transcript row");
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let object = s3.get_object().bucket(&names.bucket).key(kept.blob_key.as_deref().unwrap()).send().await.unwrap();
    assert!(object.content_length().unwrap_or(0) > 80_000, "the whole recording is in S3");

    // WhatsApp: the message kept and its reply enqueued; the reply worker sends the fixed
    // answer through Twilio; the delivery status is kept.
    let (status, _, twiml) = http(&emulator.invoke("whatsapp_inbound", &event("whatsapp_inbound")).await);
    assert_eq!(status, 200, "{twiml}");
    let batch = emulator.invoke("reply", &event("reply")).await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}");
    let sent = twilio.received_requests().await.unwrap().into_iter().find(|r| r.url.path().ends_with("/Messages.json")).unwrap();
    let form: Vec<(String, String)> = form_urlencoded::parse(&sent.body).into_owned().collect();
    assert!(form.contains(&("To".into(), "whatsapp:+972501234567".into())), "{form:?}");
    let (status, _, body) = http(&emulator.invoke("whatsapp_status", &event("whatsapp_status")).await);
    assert_eq!(status, 204, "{body}");
    let message = store.get_message(&callkeeper_core::ids::MessageSid::parse(MESSAGE_IN).unwrap()).await.unwrap().unwrap();
    assert!(message.reply_enqueued_at.is_some());

    // The CRM: a page without a session sends the browser to sign in; the sign-in page is the
    // agent's language, right to left.
    let (status, _, _) = http(&emulator.invoke("crm", &event("crm")).await);
    assert_eq!(status, 303);
    let mut sign_in = event("crm");
    sign_in["rawPath"] = "/crm/sign-in".into();
    sign_in["requestContext"]["http"]["path"] = "/crm/sign-in".into();
    let response = emulator.invoke("crm", &sign_in).await;
    let (status, content_type, html) = http(&response);
    assert_eq!((status, content_type.as_str()), (200, "text/html; charset=utf-8"), "{html}");
    assert!(html.contains(r#"<html lang="he" dir="rtl">"#) && html.contains(r#"name="token""#), "{html}");
    let cookies = response["cookies"]
        .as_array()
        .map(|c| c.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(cookies.iter().any(|c| c.starts_with("ck_signin=") && c.contains("HttpOnly; Secure; SameSite=Strict")), "{response}");

    // Events out: the calls above raised theirs on the events queue (moto's SQS); the delivery
    // function POSTs one, signed, to the business's receiver.
    let queues = aws::connect(&sdk, &names, 5).await.unwrap().queue;
    let raised = queues.depth(callkeeper_core::job::QueueName::Events).await.unwrap().visible;
    assert!(raised >= 2, "call.started for both calls at least: {raised}");
    let batch = emulator.invoke("deliver_events", &event("deliver_events")).await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}\n{}", emulator.output());
    let delivered: Vec<_> = twilio.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/business/events").collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].headers["x-callkeeper-event-id"].to_str().unwrap(), format!("call.started:{CALL_IN}"));
    let signature = delivered[0].headers["x-callkeeper-signature"].to_str().unwrap();
    let timestamp: i64 = delivered[0].headers["x-callkeeper-timestamp"].to_str().unwrap().parse().unwrap();
    let body = String::from_utf8(delivered[0].body.clone()).unwrap();
    assert_eq!(signature, callkeeper_core::event_delivery::signature("the business's shared secret", timestamp, &body));

    // The watchdog's minute: the outbound call never got its stream, so it is redirected.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let run = emulator.invoke("watchdog", &event("watchdog")).await;
    assert!(run["watchdog"]["passes"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(run["watchdog"]["totals"]["redirected"], 1, "{run}");
    let call = store.get_call(&CallSid::parse(CALL_OUT).unwrap()).await.unwrap().unwrap();
    assert_eq!((call.status.as_str(), call.fallback_reason.as_deref()), ("fallback", Some("stream_never_started")));

    // What the dashboard is built from, as the functions printed it.
    let output = emulator.output();
    let answered = emf(&output, "CallsAnswered");
    let directions: Vec<_> = answered.iter().map(|d| d["Direction"].as_str().unwrap()).collect();
    assert_eq!(directions, ["inbound", "outbound"], "{output}");
    assert_eq!(answered[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Callkeeper/events-test");
    let routes: Vec<_> = emf(&output, "WebhookLatency").iter().map(|d| d["Route"].as_str().unwrap().to_string()).collect();
    for route in
        ["incoming_call", "outbound_call", "stream_status", "stream_ended", "recording_done", "whatsapp/inbound", "whatsapp/status"]
    {
        assert!(routes.iter().any(|r| r == route), "WebhookLatency for {route}: {routes:?}");
    }
    let fallbacks = emf(&output, "Fallbacks");
    assert_eq!(fallbacks.len(), 2, "stream_ended's and the watchdog's");
    let outcomes: Vec<_> = emf(&output, "JobOutcomes").iter().map(|d| format!("{}/{}", d["Queue"], d["Outcome"])).collect();
    assert_eq!(outcomes, [r#""transcription"/"kept""#, r#""replies"/"sent""#, r#""events"/"delivered""#]);
}
