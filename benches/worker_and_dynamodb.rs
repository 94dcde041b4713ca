//! Benchmark (not a test), two numbers of the AWS design:
//!
//! 1. The transcription worker's time per recording minute, excluding OpenAI (a fake that
//!    answers at once): download from a fake Twilio, keep in the blob store, split the channels,
//!    write the transcript. On the embedded store, and on the aws store (moto) when
//!    `CALLKEEPER_TEST_AWS_ENDPOINT` is set.
//! 2. DynamoDB reads and writes per call, end to end, counted by an SDK interceptor on the
//!    DynamoDB client: `incoming_call`, a 60 s stream through the relay with the embedded agent
//!    (a greeting, a caller turn, an answer), the hang-up, `recording_done`, and the worker.
//!
//! `CALLKEEPER_TEST_AWS_ENDPOINT=http://127.0.0.1:5000 cargo bench --bench worker_and_dynamodb`

#[path = "../tests/api/common/mod.rs"]
mod common;

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use callkeeper_core::config::Config;
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::store::aws::{create_resources, AwsNames, DynamoStore, S3Blobs, SqsQueue};
use callkeeper_core::store::Stores;
use callkeeper_core::transcription::Transcriber;
use callkeeper_core::worker::poll_once;
use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Debug, Default, Clone)]
struct Counter(Arc<Mutex<BTreeMap<String, u64>>>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "count DynamoDB operations"
    }
    fn read_before_execution(
        &self,
        ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use aws_sdk_dynamodb::operation::*;
        let input = ctx.input();
        let name = if input.downcast_ref::<get_item::GetItemInput>().is_some() {
            "GetItem"
        } else if input.downcast_ref::<query::QueryInput>().is_some() {
            "Query"
        } else if input.downcast_ref::<batch_get_item::BatchGetItemInput>().is_some() {
            "BatchGetItem"
        } else if input.downcast_ref::<put_item::PutItemInput>().is_some() {
            "PutItem"
        } else if input.downcast_ref::<update_item::UpdateItemInput>().is_some() {
            "UpdateItem"
        } else if input.downcast_ref::<delete_item::DeleteItemInput>().is_some() {
            "DeleteItem"
        } else {
            "other"
        };
        *self.0.lock().unwrap().entry(name.to_string()).or_default() += 1;
        Ok(())
    }
}

fn recording_wav(minutes: u32) -> Vec<u8> {
    let n = 8000 * 60 * minutes as usize;
    let tone = |f: f64| (0..n).map(|i| (3000.0 * (i as f64 * f).sin()) as i16).collect::<Vec<_>>();
    callkeeper_core::wav::interleaved(&[tone(0.05), tone(0.08)], 8000)
}

async fn fakes(minutes: u32) -> (MockServer, MockServer) {
    let twilio = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200).set_body_bytes(recording_wav(minutes))).mount(&twilio).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "sid": "CA", "status": "in-progress" })))
        .mount(&twilio)
        .await;
    let openai = MockServer::start().await;
    let segments = serde_json::json!({ "text": "x", "segments": [{ "start": 0.0, "end": 2.0, "text": "שלום" }] });
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(segments))
        .mount(&openai)
        .await;
    let fields = serde_json::json!({ "summary": "s", "intent": "i", "name": null, "budget": null, "area": null, "property_type": null, "callback_time": null });
    let completion = serde_json::json!({ "choices": [{ "message": { "content": fields.to_string() } }] });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&openai)
        .await;
    (twilio, openai)
}

fn config(twilio: &MockServer, openai: &MockServer) -> Arc<Config> {
    let openai_base = format!("{}/v1", openai.uri());
    let settings: std::collections::HashMap<&str, String> = [
        ("PUBLIC_BASE_URL", "https://ck.example.com".to_string()),
        ("RELAY_PUBLIC_URL", "wss://relay.example.com".to_string()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_string()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_string()),
        ("TWILIO_API_BASE", twilio.uri()),
        ("OPENAI_API_KEY", "sk-test".to_string()),
        ("OPENAI_BASE_URL", openai_base),
        ("AGENT_LANGUAGE", "en-US".to_string()),
    ]
    .into_iter()
    .collect();
    Arc::new(Config::from_lookup(|k| settings.get(k).cloned()).unwrap())
}

/// The aws stores, with DynamoDB calls counted.
async fn aws_stores(sdk: &aws_config::SdkConfig, counter: &Counter) -> Stores {
    let names = AwsNames::with_suffix(&random_sid("x")[1..13]);
    create_resources(sdk, &names, 5).await.unwrap();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.clone()).build());
    let table = DynamoStore::new(dynamo, &names.table);
    let queue = SqsQueue::connect(aws_sdk_sqs::Client::new(sdk), table.clone(), &names, 5).await.unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    Stores { calls: Arc::new(table), queue: Arc::new(queue), blobs: Arc::new(S3Blobs::new(s3, &names.bucket)) }
}

/// A signed post of Twilio's, through the simulator's one way of making it.
async fn post(client: &reqwest::Client, config: &Config, addr: std::net::SocketAddr, path: &str, form: &[(String, String)]) {
    let (status, body) = callkeeper::simulate::post_webhook(client, config, addr, path, form).await.unwrap();
    assert!((200..300).contains(&status), "{path}: {status} {body}");
}

fn recording_form(sid: &str, recording: &str, twilio: &MockServer, minutes: u32) -> Vec<(String, String)> {
    let url = format!("{}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording}", twilio.uri());
    let secs = (minutes * 60).to_string();
    params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", sid),
        ("RecordingSid", recording),
        ("RecordingStatus", "completed"),
        ("RecordingSource", "StartCallRecording"),
        ("RecordingUrl", &url),
        ("RecordingDuration", &secs),
        ("RecordingChannels", "2"),
    ])
}

/// callkeeper on `stores`, on a loopback port, without its own workers: the benchmark drives them.
async fn serve_on(stores: &Stores, config: &Arc<Config>) -> std::net::SocketAddr {
    let relay = callkeeper_relay::Relay::new(config.clone(), stores.calls.clone());
    let app = callkeeper::server::app_with(config.clone(), stores.clone(), relay, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(callkeeper::server::serve(listener, app, std::future::pending()));
    addr
}

/// Times the worker on recordings of 1, 5 and 10 minutes.
async fn worker_per_minute(label: &str, stores: Stores) {
    for minutes in [1u32, 5, 10] {
        let (twilio, openai) = fakes(minutes).await;
        let config = config(&twilio, &openai);
        let addr = serve_on(&stores, &config).await;
        let client = reqwest::Client::new();
        let worker = Transcriber::new(&stores, config.twilio_rest(), config.clone());
        let mut times = Vec::new();
        for _ in 0..3 {
            let sid = random_sid("CA");
            post(&client, &config, addr, "/webhook/incoming_call", &incoming_call_form(&sid, "+972501234567")).await;
            post(&client, &config, addr, "/webhook/recording_done", &recording_form(&sid, &random_sid("RE"), &twilio, minutes)).await;
            let started = Instant::now();
            let polled = poll_once(stores.queue.as_ref(), &worker).await.unwrap();
            assert_eq!(polled.done, 1);
            times.push(started.elapsed());
        }
        times.sort();
        let median = times[1].as_secs_f64() * 1000.0;
        println!(
            "worker on {label:<8} {minutes:>2}-minute recording: {median:>7.1} ms median of 3 → {:.1} ms per recording minute",
            median / f64::from(minutes)
        );
    }
}

/// One whole call on the aws stores, counting DynamoDB operations.
async fn dynamodb_per_call(sdk: &aws_config::SdkConfig) {
    let counter = Counter::default();
    let stores = aws_stores(sdk, &counter).await;
    let (twilio, openai) = fakes(1).await;
    let config = config(&twilio, &openai);
    let addr = serve_on(&stores, &config).await;
    let client = reqwest::Client::new();
    counter.0.lock().unwrap().clear();

    let sid = random_sid("CA");
    let form = incoming_call_form(&sid, "+972501234567");
    post(&client, &config, addr, "/webhook/incoming_call", &form).await;
    let parameters = vec![
        ("call_sid".to_string(), sid.clone()),
        ("token".to_string(), callkeeper_core::stream_token::issue(&config.stream_token_secret, &CallSid::parse(&sid).unwrap(), 0)),
    ];
    let dial = callkeeper::media_client::Dial {
        connect_to: addr,
        public_url: STREAM_URL,
        path: "/ws/twilio-media",
        auth_token: Some(AUTH_TOKEN),
        offer_subprotocol: true,
        tls: false,
    };
    let mut call = callkeeper::media_client::MediaCall::dial(&dial, &random_sid("MZ")).await.unwrap();
    call.connected();
    call.start(&sid, ACCOUNT_SID, &parameters);
    call.silence(Duration::from_secs(6)).await;
    call.speak(callkeeper::simulate::caller_audio("en")).await;
    let spoken = call.heard().media_frames;
    call.silence(Duration::from_secs(60) - Duration::from_millis(20 * spoken.min(3000))).await;
    call.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ended = form.clone();
    ended.retain(|(k, _)| k != "CallStatus");
    ended.push(("CallStatus".into(), "completed".into()));
    post(&client, &config, addr, "/webhook/stream_ended", &ended).await;
    post(&client, &config, addr, "/webhook/recording_done", &recording_form(&sid, &random_sid("RE"), &twilio, 1)).await;
    let worker = Transcriber::new(&stores, config.twilio_rest(), config.clone());
    assert_eq!(poll_once(stores.queue.as_ref(), &worker).await.unwrap().done, 1);

    let counts = counter.0.lock().unwrap().clone();
    let reads: u64 = counts.iter().filter(|(op, _)| ["GetItem", "Query", "BatchGetItem"].contains(&op.as_str())).map(|(_, n)| n).sum();
    let writes: u64 = counts.iter().filter(|(op, _)| ["PutItem", "UpdateItem", "DeleteItem"].contains(&op.as_str())).map(|(_, n)| n).sum();
    let figures = stores.calls.get_call(&CallSid::parse(&sid).unwrap()).await.unwrap().unwrap().stream.unwrap();
    println!(
        "DynamoDB per 1-minute call, end to end: {reads} reads, {writes} writes ({} heartbeats of them; {:?})",
        figures.heartbeats, counts
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    worker_per_minute("embedded", callkeeper_core::store::embedded::open_stores(dir.path(), 5).unwrap()).await;
    match callkeeper_core::store::contract::moto_sdk().await {
        Some(sdk) => {
            worker_per_minute("aws/moto", aws_stores(&sdk, &Counter::default()).await).await;
            dynamodb_per_call(&sdk).await;
        }
        None => println!("(set CALLKEEPER_TEST_AWS_ENDPOINT to a moto_server to measure the aws store and DynamoDB operations per call)"),
    }
}
