//! The transcription worker end to end: `recording_done` enqueues, the worker downloads the
//! recording from a fake Twilio, keeps it in the blob store, transcribes both channels and
//! extracts the lead with a fake OpenAI, and writes it all on the call. Fakes are wiremock
//! servers on loopback.

use crate::common;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use callkeeper_core::ids::CallSid;
use callkeeper_core::job::QueueName;
use callkeeper_core::transcript::Speaker;
use callkeeper_core::transcription::{blob_key, Transcriber, NOT_CONFIGURED};
use callkeeper_core::worker::poll_once;
use common::*;
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Fakes {
    twilio: MockServer,
    openai: MockServer,
}

/// A 3-second dual-channel recording, as Twilio serves `RecordingUrl.wav`.
fn dual_channel_wav() -> Vec<u8> {
    let tone = |f: f64| (0..24_000).map(|i| (4000.0 * (i as f64 * f).sin()) as i16).collect::<Vec<_>>();
    callkeeper_core::wav::interleaved(&[tone(0.05), tone(0.09)], 8000)
}

async fn fakes() -> Fakes {
    fakes_failing(0).await
}

/// The fakes, with OpenAI failing its first `failures` transcriptions.
async fn fakes_failing(failures: u64) -> Fakes {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}\.wav$"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(dual_channel_wav()))
        .mount(&twilio)
        .await;
    let openai = MockServer::start().await;
    if failures > 0 {
        let overloaded = ResponseTemplate::new(500).set_body_json(serde_json::json!({ "error": { "message": "overloaded" } }));
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(overloaded)
            .up_to_n_times(failures)
            .with_priority(1)
            .mount(&openai)
            .await;
    }
    // The caller's channel is transcribed first, then the agent's.
    let caller = serde_json::json!({ "text": "שלום אני מחפש דירה", "segments": [
        { "start": 0.0, "end": 1.5, "text": " שלום, אני מחפש דירה בתל אביב." },
        { "start": 4.0, "end": 5.0, "text": " עד שני מיליון." } ] });
    let agent = serde_json::json!({ "text": "במה אפשר לעזור", "segments": [{ "start": 2.0, "end": 3.2, "text": " מה התקציב?" }] });
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(caller))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(agent))
        .mount(&openai)
        .await;
    let fields = serde_json::json!({ "summary": "מחפש דירה בתל אביב עד שני מיליון.", "intent": "לקנות דירה", "name": null, "budget": "2,000,000", "area": "תל אביב", "property_type": "דירה", "callback_time": null });
    let completion = serde_json::json!({ "choices": [{ "message": { "role": "assistant", "content": fields.to_string() } }] });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&openai)
        .await;
    Fakes { twilio, openai }
}

async fn app_with_fakes(fakes: &Fakes, extra: &[(&str, &str)]) -> TestApp {
    let openai = format!("{}/v1", fakes.openai.uri());
    let mut settings = vec![
        ("TWILIO_API_BASE", fakes.twilio.uri()),
        ("OPENAI_API_KEY", "sk-test".into()),
        ("OPENAI_BASE_URL", openai),
        ("QUEUE_MAX_RECEIVES", "3".into()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(&settings).await
}

fn transcriber(app: &TestApp) -> Transcriber {
    Transcriber::new(&app.stores, app.config.twilio_rest(), app.config.clone())
}

/// A job as SQS hands it to the worker Lambda, on its first receive.
fn sqs_record(id: &str, receipt: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_string());
    m.receipt_handle = Some(receipt.to_string());
    m.body = Some(body.to_string());
    m.attributes.insert("ApproximateReceiveCount".into(), "1".into());
    m
}

/// A `callkeeper serve` on `app`'s store and `fakes`, with `extra` settings: it runs the queue
/// workers (this process only answers webhooks), in a process of its own to kill or measure.
fn worker_process(app: &TestApp, fakes: &Fakes, extra: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_callkeeper"))
        .args(["serve", "--port", "0"])
        .env("CALLKEEPER_DATA_DIR", app.data_dir.path())
        .envs([
            ("PUBLIC_BASE_URL", "https://ck.example.com".to_string()),
            ("RELAY_PUBLIC_URL", "wss://relay.example.com".into()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
            ("TWILIO_API_BASE", fakes.twilio.uri()),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("OPENAI_BASE_URL", format!("{}/v1", fakes.openai.uri())),
        ])
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A call answered, then its recording reported done: the job is on the queue.
async fn recorded_call(app: &TestApp) -> (CallSid, String) {
    let sid = new_call_sid();
    app.answer(&sid).await;
    let recording = callkeeper_core::ids::random_sid("RE");
    // The callback's URL names another host (plain http): the worker must fetch from Twilio's
    // API base by the sid, never send the auth token there.
    let url = format!("http://127.0.0.1:9/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording}");
    let form = params(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", &sid),
        ("RecordingSid", &recording),
        ("RecordingStatus", "completed"),
        ("RecordingSource", "StartCallRecording"),
        ("RecordingUrl", &url),
        ("RecordingDuration", "3"),
        ("RecordingChannels", "2"),
    ]);
    assert!(app.post("/webhook/recording_done", &form).await.status().is_success());
    (CallSid::parse(&sid).unwrap(), recording)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_becomes_a_stored_object_and_a_transcript_with_a_summary_on_the_call() {
    let fakes = fakes().await;
    Mock::given(method("DELETE"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Recordings/RE[0-9a-f]{32}\.json$"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&fakes.twilio)
        .await;
    let app = app_with_fakes(&fakes, &[("DELETE_TWILIO_RECORDINGS", "true")]).await;
    let (sid, recording) = recorded_call(&app).await;

    let polled = poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap();
    assert_eq!((polled.received, polled.done), (1, 1));

    let transcripts = app.stores.calls.transcripts(&sid).await.unwrap();
    assert_eq!(transcripts.len(), 1);
    let t = &transcripts[0];
    assert_eq!(t.language, "he");
    let said: Vec<(Speaker, u64, &str)> = t.lines.iter().map(|l| (l.speaker, l.start_ms, l.text.as_str())).collect();
    assert_eq!(
        said,
        [
            (Speaker::Caller, 0, "שלום, אני מחפש דירה בתל אביב."),
            (Speaker::Agent, 2000, "מה התקציב?"),
            (Speaker::Caller, 4000, "עד שני מיליון.")
        ]
    );
    assert_eq!(t.summary.as_deref(), Some("מחפש דירה בתל אביב עד שני מיליון."));
    assert_eq!(t.intent.as_deref(), Some("לקנות דירה"));
    assert_eq!((t.lead["budget"].as_str(), t.lead["area"].as_str()), (Some("2,000,000"), Some("תל אביב")));
    // What the call's agent had not saved is added to the call's lead.
    let lead = app.stores.calls.lead(&sid).await.unwrap().expect("the extraction fills the call's lead");
    assert_eq!((lead["budget"].as_str(), lead["area"].as_str()), (Some("2,000,000"), Some("תל אביב")));
    let key = t.blob_key.clone().unwrap();
    let created = app.stores.calls.recordings(&sid).await.unwrap()[0].created_at;
    assert_eq!(key, blob_key(&sid, &callkeeper_core::ids::RecordingSid::parse(&recording).unwrap(), created));
    assert_eq!(app.stores.blobs.get(&key).await.unwrap(), Some(dual_channel_wav()), "the recording is kept as Twilio served it");

    // The extraction asked for the configured schema, with the transcript.
    let requests = fakes.openai.received_requests().await.unwrap();
    let chat = requests.iter().find(|r| r.url.path() == "/v1/chat/completions").unwrap();
    let body: serde_json::Value = serde_json::from_slice(&chat.body).unwrap();
    assert_eq!(body["response_format"]["json_schema"]["schema"]["required"][0], "summary");
    assert!(body["messages"][1]["content"].as_str().unwrap().contains("מה התקציב?"));
    assert!(chat.headers["authorization"].to_str().unwrap() == "Bearer sk-test");
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().visible, 0);
    let kinds: Vec<String> = app.stores.calls.events(&sid).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.ends_with(&["transcribed".to_string(), "twilio_recording_deleted".to_string()]), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_short_recording_is_recorded_and_skipped_not_retried() {
    let fakes = fakes().await;
    let app = app_with_fakes(&fakes, &[("MIN_RECORDING_SECS", "5")]).await;
    let (sid, _) = recorded_call(&app).await;
    let polled = poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap();
    assert_eq!((polled.done, polled.failed), (1, 0), "acknowledged, not retried");
    let skipped = app.stores.calls.events(&sid).await.unwrap().into_iter().find(|e| e.kind == "transcription_skipped").unwrap();
    assert_eq!(skipped.detail["reason"], "the recording is shorter than 5 s");
    assert!(app.stores.calls.transcripts(&sid).await.unwrap().is_empty());
    assert!(fakes.twilio.received_requests().await.unwrap().is_empty(), "nothing downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_failing_is_retried_dead_lettered_after_n_redriven_then_done() {
    // OpenAI fails the first three transcriptions: every receive the queue allows (3).
    let fakes = fakes_failing(3).await;
    let app = app_with_fakes(&fakes, &[("JOB_RETRY_BASE_SECS", "0")]).await;
    let (sid, _) = recorded_call(&app).await;
    let worker = transcriber(&app);
    let queue = app.stores.queue.as_ref();
    for attempt in 1..=3 {
        let polled = poll_once(queue, &worker).await.unwrap();
        assert_eq!((polled.received, polled.failed), (1, 1), "attempt {attempt}");
    }
    let polled = poll_once(queue, &worker).await.unwrap();
    assert_eq!(polled.received, 0, "the fourth receive dead-letters it instead");
    let dead = queue.dead_letters(QueueName::Transcription, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered after 3 receives");
    assert!(dead[0].last_error.as_deref().unwrap().contains("OpenAI answered HTTP 500: overloaded"), "{:?}", dead[0].last_error);
    assert!(app.stores.calls.transcripts(&sid).await.unwrap().is_empty());

    assert_eq!(queue.redrive(QueueName::Transcription, Some(&dead[0].id)).await.unwrap(), 1);
    let polled = poll_once(queue, &worker).await.unwrap();
    assert_eq!(polled.done, 1);
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap()[0].lines.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_job_makes_one_transcription() {
    let fakes = fakes().await;
    let app = app_with_fakes(&fakes, &[]).await;
    let (sid, recording) = recorded_call(&app).await;
    // The same job again, as a redelivery or a retried webhook would enqueue it.
    let job = callkeeper_core::job::Job::Transcribe {
        call_sid: sid.clone(),
        recording_sid: callkeeper_core::ids::RecordingSid::parse(&recording).unwrap(),
    };
    callkeeper_core::store::enqueue(app.stores.queue.as_ref(), &job).await.unwrap();
    for delivery in ["the job", "its duplicate"] {
        let polled = poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap();
        assert_eq!((polled.received, polled.done), (1, 1), "{delivery} acknowledged");
    }
    let transcriptions =
        fakes.openai.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/v1/audio/transcriptions").count();
    assert_eq!(transcriptions, 2, "one recording, two channels, transcribed once");
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_openai_key_the_recording_is_kept_and_the_call_says_so() {
    let fakes = fakes().await;
    let app = spawn_app_with(&[("TWILIO_API_BASE", &fakes.twilio.uri())]).await;
    let (sid, _) = recorded_call(&app).await;
    poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap();
    let t = &app.stores.calls.transcripts(&sid).await.unwrap()[0];
    assert_eq!((t.note.as_deref(), t.lines.len()), (Some(NOT_CONFIGURED), 0));
    assert!(app.stores.blobs.get(t.blob_key.as_ref().unwrap()).await.unwrap().is_some());
    assert!(fakes.openai.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_message_reports_only_that_one() {
    let fakes = fakes().await;
    let app = app_with_fakes(&fakes, &[]).await;
    let (sid, _) = recorded_call(&app).await;
    let good = app.stores.queue.receive(QueueName::Transcription, 1, Duration::from_secs(60)).await.unwrap().remove(0);
    let bad_id = "not-a-job-0001".to_string();
    let mut event = SqsEvent::default();
    event.records = vec![sqs_record(&good.id, &good.receipt, &good.body), sqs_record(&bad_id, "stale-receipt", "{\"kind\":\"nonsense\"}")];
    let response =
        callkeeper_functions::sqs_batch::handle_batch(app.stores.queue.as_ref(), &transcriber(&app), event, Duration::from_secs(60)).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, [bad_id.as_str()]);
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap().len(), 1);
}

/// Fresh aws stores on moto, with a completed call whose recording the fake Twilio serves, and
/// its transcription job enqueued twice (a duplicate delivery).
async fn aws_recorded_call(
    fakes: &Fakes,
    max_receives: u32,
) -> (callkeeper_core::store::Stores, CallSid, callkeeper_core::ids::RecordingSid, i64) {
    use callkeeper_core::call::{CallStatus, Direction, NewCall};
    use callkeeper_core::ids::{AccountSid, RecordingSid};
    use callkeeper_core::recording::Recording;
    use callkeeper_core::store::aws::{connect, create_resources, AwsNames};
    let sdk = callkeeper_core::store::contract::require_moto().await;
    let names = AwsNames::with_suffix(&new_call_sid()[2..14]);
    create_resources(&sdk, &names, max_receives).await.unwrap();
    let stores = connect(&sdk, &names, max_receives).await.unwrap();
    let sid = CallSid::parse(&new_call_sid()).unwrap();
    let recording = RecordingSid::parse(&callkeeper_core::ids::random_sid("RE")).unwrap();
    let at = callkeeper_core::time::now_ms();
    let call = NewCall {
        call_sid: sid.clone(),
        account_sid: AccountSid::parse(ACCOUNT_SID).unwrap(),
        from: "+972501234567".into(),
        to: "+97231234567".into(),
        contact: callkeeper_core::phone::E164::parse("+972501234567"),
        direction: Direction::Inbound,
        status: CallStatus::Completed,
        twilio_status: None,
        at,
    };
    stores.calls.create_call(&call).await.unwrap();
    let url = format!("{}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording}", fakes.twilio.uri());
    let stored = Recording {
        recording_sid: recording.clone(),
        call_sid: sid.clone(),
        url: Some(url),
        status: "completed".into(),
        duration_secs: Some(3),
        channels: Some(2),
        source: Some("StartCallRecording".into()),
        error_code: None,
        created_at: at,
        updated_at: at,
        job_enqueued_at: None,
    };
    stores.calls.put_recording(&stored).await.unwrap();
    let job = callkeeper_core::job::Job::Transcribe { call_sid: sid.clone(), recording_sid: recording.clone() };
    callkeeper_core::store::enqueue(stores.queue.as_ref(), &job).await.unwrap();
    (stores, sid, recording, at)
}

/// The same worker on the aws adapter (DynamoDB, SQS, S3 on moto): the recording lands in S3,
/// the transcript in DynamoDB, and a duplicate job is acknowledged without a second transcription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_aws_adapter_a_recording_lands_in_s3_and_its_transcript_in_dynamodb() {
    let fakes = fakes().await;
    let app = app_with_fakes(&fakes, &[]).await;
    let (stores, sid, recording, at) = aws_recorded_call(&fakes, 3).await;
    let job = callkeeper_core::job::Job::Transcribe { call_sid: sid.clone(), recording_sid: recording.clone() };
    callkeeper_core::store::enqueue(stores.queue.as_ref(), &job).await.unwrap();

    let worker = Transcriber::new(&stores, app.config.twilio_rest(), app.config.clone());
    let mut done = 0;
    for _ in 0..5 {
        done += poll_once(stores.queue.as_ref(), &worker).await.unwrap().done;
        if done == 2 {
            break;
        }
    }
    assert_eq!(done, 2, "both deliveries acknowledged");
    let transcripts = stores.calls.transcripts(&sid).await.unwrap();
    assert_eq!((transcripts.len(), transcripts[0].lines.len()), (1, 3));
    assert_eq!(stores.blobs.get(&blob_key(&sid, &recording, at)).await.unwrap(), Some(dual_channel_wav()));
    let transcriptions =
        fakes.openai.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/v1/audio/transcriptions").count();
    assert_eq!(transcriptions, 2, "transcribed once (two channels)");
}

/// On SQS: OpenAI failing every receive the redrive policy allows dead-letters the job, with its
/// error for `dlq show`; redriven, it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_aws_adapter_a_failing_job_is_dead_lettered_redriven_and_done() {
    let fakes = fakes_failing(2).await;
    let app = app_with_fakes(&fakes, &[("JOB_RETRY_BASE_SECS", "0")]).await;
    let (stores, sid, _, _) = aws_recorded_call(&fakes, 2).await;
    let worker = Transcriber::new(&stores, app.config.twilio_rest(), app.config.clone());
    let queue = stores.queue.as_ref();
    let mut failed = 0;
    for _ in 0..10 {
        failed += poll_once(queue, &worker).await.unwrap().failed;
        if failed == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(failed, 2);
    // SQS moves it on the receive after maxReceiveCount.
    let mut dead = Vec::new();
    for _ in 0..10 {
        assert_eq!(poll_once(queue, &worker).await.unwrap().done, 0);
        dead = queue.dead_letters(QueueName::Transcription, 10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.as_deref().unwrap().contains("overloaded"), "{:?}", dead[0]);
    assert_eq!(queue.redrive(QueueName::Transcription, Some(&dead[0].id)).await.unwrap(), 1);
    assert_eq!(poll_once(queue, &worker).await.unwrap().done, 1);
    assert_eq!(stores.calls.transcripts(&sid).await.unwrap()[0].lines.len(), 3);
}

/// A worker process killed (SIGKILL) mid-download leaves its job to the next worker: the claim's
/// lease runs out before the message is seen again, so the job is done on its second receive,
/// not failed "busy" into the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_it_to_the_next_worker() {
    let fakes = fakes().await;
    // The first download never finishes in time: the worker is killed during it.
    Mock::given(method("GET"))
        .and(path_regex(r"/Recordings/RE[0-9a-f]{32}\.wav$"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(dual_channel_wav()).set_delay(Duration::from_secs(60)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fakes.twilio)
        .await;
    let lease = ("JOB_LEASE_SECS", "3");
    let app = app_with_fakes(&fakes, &[lease]).await;
    let (sid, _) = recorded_call(&app).await;
    // A `callkeeper serve` on the same store runs the workers; this process only answers webhooks.
    let mut worker = worker_process(&app, &fakes, &[lease]);
    let downloading = async {
        while !fakes.twilio.received_requests().await.unwrap().iter().any(|r| r.url.path().ends_with(".wav")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), downloading).await.expect("the worker process took the job");
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    // Another worker: nothing until the message shows again (twice the lease), then it is done.
    let queue = app.stores.queue.as_ref();
    let began = std::time::Instant::now();
    let mut polls = Vec::new();
    while began.elapsed() < Duration::from_secs(20) {
        let polled = poll_once(queue, &transcriber(&app)).await.unwrap();
        polls.push(polled);
        if polled.done == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(polls.iter().all(|p| p.failed == 0), "no receive was burnt on a held claim: {polls:?}");
    assert_eq!(polls.last().unwrap().done, 1, "the job was done by the second worker");
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap().len(), 1);
    assert_eq!(app.stores.queue.depth(QueueName::Transcription).await.unwrap().dead, 0);
    let downloads = fakes.twilio.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with(".wav")).count();
    assert_eq!(downloads, 2, "downloaded again after the crash");
}

/// A job that runs long renews its claim and keeps its message hidden: no other worker takes it
/// meanwhile, and it is done once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_is_held_while_it_runs() {
    let fakes = fakes().await;
    // The extraction takes 5 s (OpenAI's client waits minutes).
    let fields = serde_json::json!({ "summary": "מחפש דירה.", "intent": "לקנות דירה" });
    let completion = serde_json::json!({ "choices": [{ "message": { "role": "assistant", "content": fields.to_string() } }] });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion).set_delay(Duration::from_secs(5)))
        .with_priority(1)
        .mount(&fakes.openai)
        .await;
    // A 3 s lease (renewed each second), 6 s hidden (extended every 2 s).
    let app = app_with_fakes(&fakes, &[("JOB_LEASE_SECS", "3")]).await;
    let (sid, _) = recorded_call(&app).await;
    let queue = app.stores.queue.as_ref();
    let first = transcriber(&app);
    let running = tokio::spawn({
        let queue = app.stores.queue.clone();
        async move { poll_once(queue.as_ref(), &first).await.unwrap() }
    });
    // Once the first worker has the job, a second one polling all along finds nothing to do.
    let began = std::time::Instant::now();
    while app.stores.queue.depth(QueueName::Transcription).await.unwrap().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while !running.is_finished() {
        let polled = poll_once(queue, &transcriber(&app)).await.unwrap();
        assert_eq!(polled.received, 0, "the job was seen by another worker after {:?}", began.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(running.await.unwrap().done, 1);
    assert!(began.elapsed() > Duration::from_secs(3), "the job outlived its lease");
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap().len(), 1);
}

/// In Lambda, a job that would outlive its invocation is stopped before the function's deadline
/// and reported failed, to come back once its claim's lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_job_that_would_outlive_its_invocation_is_stopped_and_comes_back() {
    use callkeeper_functions::sqs_batch::{handle_batch, MARGIN};
    let fakes = fakes().await;
    Mock::given(method("GET"))
        .and(path_regex(r"/Recordings/RE[0-9a-f]{32}\.wav$"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(dual_channel_wav()).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fakes.twilio)
        .await;
    let app = app_with_fakes(&fakes, &[("JOB_LEASE_SECS", "3"), ("JOB_RETRY_BASE_SECS", "0")]).await;
    let (sid, _) = recorded_call(&app).await;
    let message = app.stores.queue.receive(QueueName::Transcription, 1, Duration::from_secs(60)).await.unwrap().remove(0);
    let mut event = SqsEvent::default();
    event.records = vec![sqs_record(&message.id, &message.receipt, &message.body)];
    let began = std::time::Instant::now();
    // One second of work left in the invocation.
    let response = handle_batch(app.stores.queue.as_ref(), &transcriber(&app), event, MARGIN + Duration::from_secs(1)).await;
    assert!(began.elapsed() < Duration::from_secs(3), "stopped at the deadline, took {:?}", began.elapsed());
    assert_eq!(response.batch_item_failures.len(), 1);
    // Back after the lease (3 s), and done then.
    assert_eq!(poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap().received, 0, "not before its lease ran out");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap().done, 1);
    assert_eq!(app.stores.calls.transcripts(&sid).await.unwrap().len(), 1);
}

/// OpenAI's side of a transcription upload: refused over its 25 MB limit, as OpenAI does, else
/// one line a second into the piece.
struct UploadLimit;

impl wiremock::Respond for UploadLimit {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request.body.len() > callkeeper_core::audio_chunks::MAX_UPLOAD_BYTES {
            return ResponseTemplate::new(413)
                .set_body_json(serde_json::json!({ "error": { "message": "Maximum content size limit (26214400) exceeded" } }));
        }
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({ "text": "קטע", "segments": [{ "start": 1.0, "end": 2.0, "text": " קטע" }] }))
    }
}

/// An hour of dual-channel 8 kHz audio (115 MB, over four times OpenAI's upload limit per
/// channel) is transcribed in pieces cut at silence, with the call's own times, by a
/// `callkeeper serve` whose memory stays well inside the transcribe function's 512 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_long_call_is_transcribed_in_pieces_within_the_functions_memory() {
    const RATE: usize = 8000;
    let twilio = MockServer::start().await;
    // A second of silence every five minutes, loud tone otherwise.
    let loud = |frame: usize| (frame / RATE) % 300 != 299;
    let frames = 3600 * RATE;
    let mut wav = callkeeper_core::wav::mono(&[], RATE as u32);
    let data_len = (frames * 4) as u32;
    wav[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    wav[22..24].copy_from_slice(&2u16.to_le_bytes());
    wav[28..32].copy_from_slice(&(RATE as u32 * 4).to_le_bytes());
    wav[32..34].copy_from_slice(&4u16.to_le_bytes());
    wav[40..44].copy_from_slice(&data_len.to_le_bytes());
    wav.reserve(frames * 4);
    for frame in 0..frames {
        let sample: i16 = if loud(frame) {
            if frame % 2 == 0 {
                8000
            } else {
                -8000
            }
        } else {
            0
        };
        wav.extend_from_slice(&sample.to_le_bytes());
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    Mock::given(method("GET"))
        .and(path_regex(r"/Recordings/RE[0-9a-f]{32}\.wav$"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(wav))
        .mount(&twilio)
        .await;
    let openai = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/audio/transcriptions")).respond_with(UploadLimit).mount(&openai).await;
    let completion = serde_json::json!({ "choices": [{ "message": { "role": "assistant", "content": "{\"summary\": \"שיחה ארוכה\"}" } }] });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&openai)
        .await;
    let fakes = Fakes { twilio, openai };
    let app = app_with_fakes(&fakes, &[]).await;
    let (sid, _) = recorded_call(&app).await;
    // The worker is a `callkeeper serve` of its own, so its memory is its own.
    let mut worker = worker_process(&app, &fakes, &[]);
    let mut transcript = None;
    for _ in 0..600 {
        if let Some(t) = app.stores.calls.transcripts(&sid).await.unwrap().pop() {
            transcript = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.id())).unwrap_or_default();
    worker.kill().unwrap();
    worker.wait().unwrap();
    let transcript = transcript.expect("the hour was transcribed");
    // Pieces of 21 minutes at most, every one under the limit, the same on both channels.
    let uploads: Vec<usize> = fakes
        .openai
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/audio/transcriptions"))
        .map(|r| r.body.len())
        .collect();
    assert!(uploads.len() >= 6 && uploads.len().is_multiple_of(2), "{uploads:?}");
    assert!(uploads.iter().all(|&n| n <= 21 * 60 * RATE * 2 + 4096), "{uploads:?}");
    // Each piece's line is at its start plus a second, in the call's time; every cut is in one
    // of the seconds of silence.
    let caller: Vec<u64> = transcript.lines.iter().filter(|l| l.speaker == Speaker::Caller).map(|l| l.start_ms).collect();
    assert_eq!(caller.len(), uploads.len() / 2);
    assert_eq!(caller[0], 1000);
    for line in &caller[1..] {
        let cut = line - 1000;
        assert!(!loud(cut as usize * RATE / 1000), "a cut at {cut} ms, not in a silence: {caller:?}");
    }
    assert!(caller.windows(2).all(|w| w[1] - w[0] <= 21 * 60 * 1000), "{caller:?}");
    assert_eq!(transcript.summary.as_deref(), Some("שיחה ארוכה"));
    let peak_kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap();
    eprintln!("the worker's peak memory for an hour of dual-channel audio: {} MB", peak_kb / 1024);
    assert!(peak_kb < 400 * 1024, "peak {peak_kb} kB, over 400 MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysed_call_is_followed_up_once_on_whatsapp_and_by_sms_to_the_business() {
    let fakes = fakes().await;
    // Twilio refuses the first notice to the business, then takes every message.
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .and(wiremock::matchers::body_string_contains("To=%2B972509998888"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({ "code": 21612, "message": "The 'To' number is not currently reachable" })),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fakes.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({ "sid": callkeeper_core::ids::random_sid("SM"), "status": "queued" })),
        )
        .mount(&fakes.twilio)
        .await;
    let app = app_with_fakes(&fakes, &[("JOB_RETRY_BASE_SECS", "0")]).await;
    let template = format!("HX{}", "0123456789abcdef".repeat(2));
    let profile_text = format!(
        "instructions = \"x\"\n[follow_up.caller]\ntemplate = \"{template}\"\nvariables = {{ \"1\" = \"area\", \"2\" = \"summary\", \"3\" = \"name\" }}\n[follow_up.business]\nto = [\"+972509998888\"]\n"
    );
    let defaults = app.config.builtin_profile();
    let profile = callkeeper_core::profile::parse(&profile_text, "p.toml", std::path::Path::new("."), &defaults).unwrap();
    app.stores.calls.put_profile(&callkeeper_core::profile::ProfileKey::Default, &profile, 1).await.unwrap();
    let (sid, _) = recorded_call(&app).await;
    poll_once(app.stores.queue.as_ref(), &transcriber(&app)).await.unwrap();

    // THEN the follow-up is on the replies queue; the replies worker sends it.
    let replier = callkeeper_core::replies::Replier::new(
        app.stores.calls.clone(),
        app.stores.blobs.clone(),
        app.config.twilio_rest(),
        app.config.clone(),
    );
    let first = poll_once(app.stores.queue.as_ref(), &replier).await.unwrap();
    assert_eq!((first.received, first.done), (1, 0), "the caller's template went, the notice was refused: retried");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = poll_once(app.stores.queue.as_ref(), &replier).await.unwrap();
    assert_eq!((second.received, second.done), (1, 1));

    let sent: Vec<Vec<(String, String)>> = fakes
        .twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/Messages.json"))
        .map(|r| form_urlencoded::parse(&r.body).into_owned().collect())
        .collect();
    let field = |form: &Vec<(String, String)>, name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let to_caller: Vec<_> = sent.iter().filter(|f| field(f, "To").as_deref() == Some("whatsapp:+972501234567")).collect();
    assert_eq!(to_caller.len(), 1, "the caller's message went once, though the job ran twice");
    assert_eq!(field(to_caller[0], "ContentSid"), Some(template.clone()));
    assert_eq!(field(to_caller[0], "Body"), None, "a template has no free text");
    let variables: serde_json::Value = serde_json::from_str(&field(to_caller[0], "ContentVariables").unwrap()).unwrap();
    assert_eq!(variables, serde_json::json!({ "1": "תל אביב", "2": "מחפש דירה בתל אביב עד שני מיליון.", "3": "-" }));
    let notices: Vec<_> = sent.iter().filter(|f| field(f, "To").as_deref() == Some("+972509998888")).collect();
    assert_eq!(notices.len(), 2, "refused once, then sent");
    let body = field(notices[1], "Body").unwrap();
    assert!(body.contains("+972501234567") && body.contains("מחפש דירה בתל אביב") && body.contains("area: תל אביב"), "{body}");

    let follow_ups: Vec<serde_json::Value> =
        app.stores.calls.events(&sid).await.unwrap().into_iter().filter(|e| e.kind == "follow_up").map(|e| e.detail).collect();
    let ok: Vec<&str> = follow_ups.iter().filter(|d| d["ok"] == true).map(|d| d["to"].as_str().unwrap()).collect();
    assert_eq!(ok, ["caller", "business:+972509998888"], "{follow_ups:?}");
    assert!(
        follow_ups.iter().any(|d| d["ok"] == false && d["error"].as_str().unwrap().contains("21612")),
        "the refusal is on the call too"
    );
}
