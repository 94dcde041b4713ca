//! The `callkeeper` command as a user runs it: `serve` with no configuration at all, a signed call
//! posted to it, then `calls list` and `calls show` reading the same data folder.

use crate::common;

use callkeeper_core::signature::{compute, Algorithm};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_callkeeper");

/// A command with none of the Twilio settings a developer's shell might carry.
pub(crate) fn callkeeper(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    for name in [
        "PUBLIC_BASE_URL",
        "RELAY_PUBLIC_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_API_BASE",
        "TWILIO_PHONE_NUMBER",
        "PORT",
        "CALLKEEPER_DATA_DIR",
        "OPENAI_API_KEY",
        "OPENAI_REALTIME_URL",
        "OPENAI_BASE_URL",
        "VOICE_AGENT",
    ] {
        cmd.env_remove(name);
    }
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// A running `serve`, killed on drop; what it printed after its banner is kept.
pub(crate) struct Killed(Child, std::sync::Arc<std::sync::Mutex<Vec<String>>>);
impl Killed {
    fn output(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }
}
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `callkeeper serve --port 0` in `dir`: the running server, its address and its banner.
fn serve(dir: &std::path::Path) -> (Killed, String, String) {
    serve_with(callkeeper(dir))
}

pub(crate) fn serve_with(mut command: Command) -> (Killed, String, String) {
    let mut child = command.args(["serve", "--port", "0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.rsplit(' ').next().unwrap().to_string();
    let mut banner = vec![first];
    while !banner.last().unwrap().starts_with("health:") {
        banner.push(lines.next().expect("the banner ends with the health URL").unwrap());
    }
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = output.clone();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| kept.lock().unwrap().push(line)));
    (Killed(child, output), addr, banner.join("\n"))
}

/// A `serve` on a port chosen first (its public URL names it).
fn serve_on(mut command: Command, port: u16) -> (Killed, String) {
    let mut child = command.args(["serve", "--port", &port.to_string()]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = vec![lines.next().unwrap().unwrap()];
    while !banner.last().unwrap().starts_with("health:") {
        banner.push(lines.next().expect("the banner ends with the health URL").unwrap());
    }
    (Killed(child, Default::default()), banner.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_then_read_the_crm() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, banner) = serve(dir.path());

    // The banner names the address and the generated secrets, and says honestly that Twilio
    // cannot reach a loopback address, what to set, and where the CRM is.
    assert!(banner.contains("generated secrets"), "{banner}");
    assert!(banner.contains(&format!("media stream: ws://{addr}/ws/twilio-media (voice agent: embedded)")), "{banner}");
    assert!(banner.contains("Twilio cannot reach this yet: PUBLIC_BASE_URL is http://127.0.0.1"), "{banner}");
    assert!(
        banner.contains(&format!("`ngrok http {}`", addr.rsplit(':').next().unwrap())) && banner.contains("PUBLIC_BASE_URL=https://"),
        "{banner}"
    );
    assert!(!banner.contains("Give Twilio these URLs"), "no URLs Twilio could not use: {banner}");
    assert!(banner.contains(&format!("CRM: http://{addr}/crm (add its first user: `callkeeper crm user add NAME`)")), "{banner}");
    let incoming_url = format!("http://{addr}/webhook/incoming_call");

    let client = reqwest::Client::new();
    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Sign with the generated local token, as the simulator does.
    let secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("local-secrets.json")).unwrap()).unwrap();
    let token = secrets["auth_token"].as_str().unwrap();
    let account = secrets["account_sid"].as_str().unwrap();
    let sid = common::new_call_sid();
    let mut form = common::incoming_call_form(&sid, "+972501234567");
    form.retain(|(k, _)| k != "AccountSid");
    form.push(("AccountSid".into(), account.into()));
    let signature = compute(token.as_bytes(), Algorithm::HmacSha1, &incoming_url, &form);
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
    let response = client
        .post(&incoming_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let twiml = common::parse_twiml(&response.text().await.unwrap());
    assert_eq!(twiml.find("Stream").unwrap().attr("url"), Some(format!("ws://{addr}/ws/twilio-media").as_str()));

    // The CRM, read by another process while the server runs.
    let list = callkeeper(dir.path()).args(["calls", "list"]).output().unwrap();
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains(&sid) && list.contains("awaiting_stream") && list.contains("+972501234567"), "{list}");

    let show = callkeeper(dir.path()).args(["calls", "show", &sid, "--json"]).output().unwrap();
    assert!(show.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(doc["call"]["call_sid"], sid.as_str());
    assert_eq!(doc["events"][0]["kind"], "twiml_served");

    let text = callkeeper(dir.path()).args(["calls", "show", &sid]).output().unwrap();
    assert!(String::from_utf8(text.stdout).unwrap().contains("twiml_served"));

    let missing = callkeeper(dir.path()).args(["calls", "show", &common::new_call_sid()]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let malformed = callkeeper(dir.path()).args(["calls", "show", "CA-nope"]).output().unwrap();
    assert_eq!(malformed.status.code(), Some(1));
    assert!(String::from_utf8(malformed.stderr).unwrap().contains("CallSid must be CA followed by 32 hex digits"));
}

/// Offline, the model speaks the agent's language, as recorded speech: its greeting, and its
/// "one moment" while the business's tool is slow; the live transcript has the caller's words.
/// In English here (the fault matrix hears the Hebrew greeting and reply).
#[test]
fn offline_the_model_speaks_the_agents_language_and_its_filler_is_speech() {
    let dir = tempfile::tempdir().unwrap();
    let heard = dir.path().join("heard.wav");
    let stack = dir.path().join("stack");
    let out = callkeeper(dir.path())
        .env("AGENT_LANGUAGE", "en-US")
        .args(["simulate", "--offline", "--scenario", "tool-call-slow", "--json", "--data-dir"])
        .arg(&stack)
        .arg("--save-audio")
        .arg(&heard)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["crm"]["tool_calls"][0]["filler_said"], true, "{report}");
    let wav = callkeeper_core::wav::parse(&std::fs::read(&heard).unwrap()).unwrap();
    use callkeeper_relay::agent::embedded::{hold, EmbeddedAgent};
    assert!(common::holds_clip(&wav.channels[1], &EmbeddedAgent::for_language("en").greeting.audio), "the English greeting");
    assert!(common::holds_clip(&wav.channels[1], &hold("en").audio), "the filler, spoken");
    assert!(common::holds_clip(&wav.channels[0], include_bytes!("../../relay/assets/caller/en.ulaw")), "the English caller");

    let sid = report["call_sid"].as_str().unwrap();
    let show = callkeeper(&stack).args(["calls", "show", sid, "--json"]).output().unwrap();
    let live = serde_json::from_slice::<serde_json::Value>(&show.stdout).unwrap()["live_transcript"].to_string();
    assert!(live.contains("Hello, I am looking for a four room apartment in Tel Aviv."), "{live}");
}

/// The issue's "done when": a simulated call against `callkeeper serve` hears the embedded agent,
/// and its turns, heartbeats and stream figures are in the store. With `METRICS_NAMESPACE`, the
/// server prints the call's metrics as CloudWatch EMF, as the relay does on Fargate.
#[test]
fn a_simulated_call_hears_the_agent_and_leaves_its_turns_heartbeats_and_figures_in_the_crm() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = callkeeper(dir.path());
    command.env("METRICS_NAMESPACE", "Callkeeper/cli-test");
    let (server, addr, _) = serve_with(command);
    let port = addr.rsplit(':').next().unwrap();
    let heard = dir.path().join("heard.wav");
    let out = callkeeper(dir.path()).args(["simulate", "--port", port, "--json", "--save-audio"]).arg(&heard).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["subprotocol"], "audio.twilio.com");
    assert!(report["greeting_ms"].as_u64().unwrap() > 3000, "the Hebrew greeting was heard: {report}");
    assert!(report["answer_after_ms"][0].as_u64().is_some(), "and an answer to the caller: {report}");
    assert_eq!(report["close"], "1000 stream ended");
    // The whole call, both sides: the caller's words on the left, the agent's greeting on the right.
    let wav = callkeeper_core::wav::parse(&std::fs::read(&heard).unwrap()).unwrap();
    assert_eq!((wav.sample_rate, wav.channels.len()), (8000, 2));
    assert!(wav.channels[0].len() as u64 / 8 > report["agent_audio_ms"].as_u64().unwrap(), "longer than the agent's audio alone");
    let agent = callkeeper_relay::agent::embedded::EmbeddedAgent::for_language("he");
    assert!(common::holds_clip(&wav.channels[1], &agent.greeting.audio), "the greeting, as it was heard");
    assert!(common::holds_clip(&wav.channels[0], include_bytes!("../../relay/assets/caller/he.ulaw")), "the caller's words");

    let sid = report["call_sid"].as_str().unwrap();
    let show = callkeeper(dir.path()).args(["calls", "show", sid, "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let call = &doc["call"];
    assert_eq!((call["status"].as_str(), call["end_reason"].as_str()), (Some("completed"), Some("caller_hangup")));
    assert!(call["heartbeat_at"].as_i64().is_some(), "{call}");
    assert!(call["stream"]["heartbeats"].as_u64().unwrap() >= 2, "{call}");
    assert!(call["stream"]["frames_out"].as_u64().unwrap() > 300, "{call}");
    let turns = doc["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "the greeting and one answer: {turns:?}");
    assert!(turns[1]["caller_stopped_at"].is_i64() && turns[1]["first_audio_at"].is_i64() && turns[1]["first_mark_at"].is_i64());

    let metrics: Vec<serde_json::Value> = server
        .output()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|doc: &serde_json::Value| doc.get("_aws").is_some())
        .collect();
    let value = |name: &str| metrics.iter().find(|doc| doc.get(name).is_some()).map(|doc| doc[name].as_f64().unwrap());
    assert_eq!(value("CallsAnswered"), Some(1.0), "{metrics:?}");
    assert!(value("WebhookLatency").is_some(), "{metrics:?}");
    let stream_start = value("StreamStartLatency").expect("the stream's start latency");
    assert!((0.0..5000.0).contains(&stream_start), "{stream_start}");
    let turn = value("TurnLatency").expect("the answer's latency");
    let stopped_to_audio = turns[1]["first_audio_at"].as_f64().unwrap() - turns[1]["caller_stopped_at"].as_f64().unwrap();
    assert_eq!(turn, stopped_to_audio, "the turn written and the metric agree");
    assert!(value("RelayConnections").is_some(), "the relay reports its streams: {metrics:?}");
    assert!(metrics.iter().all(|doc| doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Callkeeper/cli-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_places_an_outbound_call_through_twilio_and_keeps_it_ringing() {
    use wiremock::matchers::{body_string_contains, method, path};
    let twilio = wiremock::MockServer::start().await;
    let placed = "CA00000000000000000000000000000abc";
    wiremock::Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{}/Calls.json", common::ACCOUNT_SID)))
        .and(body_string_contains("To=%2B972501112222"))
        .and(body_string_contains("From=%2B97231234567"))
        .and(body_string_contains("Url=https%3A%2F%2Fck.example.com%2Fwebhook%2Foutbound_call"))
        .and(body_string_contains("StatusCallback=https%3A%2F%2Fck.example.com%2Fwebhook%2Fstream_ended"))
        .respond_with(wiremock::ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": placed, "status": "queued" })))
        .expect(1)
        .mount(&twilio)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let twilio_env = [
        ("PUBLIC_BASE_URL", "https://ck.example.com".to_string()),
        ("RELAY_PUBLIC_URL", "wss://relay.example.com".to_string()),
        ("TWILIO_ACCOUNT_SID", common::ACCOUNT_SID.to_string()),
        ("TWILIO_AUTH_TOKEN", common::AUTH_TOKEN.to_string()),
        ("TWILIO_PHONE_NUMBER", "+97231234567".to_string()),
        ("TWILIO_API_BASE", twilio.uri()),
    ];
    let out = callkeeper(dir.path()).args(["call", "--to", "+972501112222"]).envs(twilio_env.clone()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("calling +972501112222 from +97231234567: {placed} (queued)"));

    let show = callkeeper(dir.path()).args(["calls", "show", placed, "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!((doc["call"]["status"].as_str(), doc["call"]["direction"].as_str()), (Some("ringing"), Some("outbound")));
    assert_eq!(doc["call"]["contact"], "+972501112222");

    let bad = callkeeper(dir.path()).args(["call", "--to", "0501112222"]).envs(twilio_env).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8(bad.stderr).unwrap().contains("--to must be a +E164 number"));
}

/// The AWS settings of a fresh set of resources on the test's moto_server.
fn aws_env() -> Vec<(&'static str, String)> {
    let endpoint = std::env::var("CALLKEEPER_TEST_AWS_ENDPOINT").expect("run the suite with ./scripts/test.sh, which starts moto_server");
    let suffix = common::new_call_sid()[2..14].to_string();
    vec![
        ("CALLKEEPER_STORE", "aws".into()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("CALLKEEPER_TABLE", format!("ck-{suffix}")),
        ("CALLKEEPER_BUCKET", format!("ck-recordings-{suffix}")),
        ("TRANSCRIPTION_QUEUE", format!("ck-transcription-{suffix}")),
        ("REPLIES_QUEUE", format!("ck-replies-{suffix}")),
        ("EVENTS_QUEUE", format!("ck-events-{suffix}")),
    ]
}

/// The same "done when" as above, on the aws adapter: dev-resources creates the table, queues and
/// bucket on moto, serve runs on them, and the CRM read back from DynamoDB has the call.
#[test]
fn on_the_aws_store_a_simulated_call_lands_in_dynamodb() {
    let dir = tempfile::tempdir().unwrap();
    let env = aws_env();
    let created = callkeeper(dir.path()).arg("dev-resources").envs(env.clone()).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8(created.stdout).unwrap().starts_with("created table ck-"));

    let mut command = callkeeper(dir.path());
    command.envs(env.clone());
    let (_server, addr, banner) = serve_with(command);
    assert!(banner.contains("store:        aws: table ck-"), "{banner}");
    let port = addr.rsplit(':').next().unwrap();
    let out = callkeeper(dir.path()).args(["simulate", "--port", port, "--json"]).envs(env.clone()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["greeting_ms"].as_u64().unwrap() > 3000, "{report}");

    let sid = report["call_sid"].as_str().unwrap();
    let show = callkeeper(dir.path()).args(["calls", "show", sid, "--json"]).envs(env.clone()).output().unwrap();
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(doc["call"]["status"], "completed");
    assert!(doc["call"]["stream"]["heartbeats"].as_u64().unwrap() >= 2, "{doc}");
    assert_eq!(doc["turns"].as_array().unwrap().len(), 2);
    let kinds: Vec<&str> = doc["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // The stream's status callbacks (started, stopped) go beside the call, in their own time.
    let (status, call): (Vec<&str>, Vec<&str>) = kinds.iter().partition(|k| **k == "stream_status");
    assert_eq!(call, ["twiml_served", "stream_started", "stream_closed", "stream_ended"]);
    assert_eq!(status.len(), 2, "{kinds:?}");
    let list = callkeeper(dir.path()).args(["calls", "list"]).envs(env.clone()).output().unwrap();
    assert!(String::from_utf8(list.stdout).unwrap().contains(sid));

    // The deploy checklist's step 6 (docs/first-real-call.md): the CRM's first user, with the
    // stack's settings, lands in the stack's table.
    let mut add = callkeeper(dir.path())
        .args(["crm", "user", "add", "dana@example.com"])
        .envs(env.clone())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(added.status.success() && String::from_utf8_lossy(&added.stdout).contains("user dana@example.com added"), "{added:?}");
    let users = callkeeper(dir.path()).args(["crm", "user", "list", "--json"]).envs(env).output().unwrap();
    assert!(String::from_utf8(users.stdout).unwrap().contains("\"dana@example.com\""));
    assert!(!dir.path().join("callkeeper.sqlite3").exists(), "nothing kept locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_shows_and_redrives_a_dead_job() {
    use callkeeper_core::job::QueueName;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let stores = callkeeper_core::store::embedded::open_stores(dir.path(), 2).unwrap();
        let q = QueueName::Transcription;
        let id = stores.queue.send(q, r#"{"kind":"transcribe"}"#).await.unwrap();
        for n in 1..=2 {
            let got = stores.queue.receive(q, 1, Duration::from_secs(30)).await.unwrap().remove(0);
            stores.queue.release(q, &got, &format!("OpenAI answered HTTP 500 ({n})"), Duration::ZERO).await.unwrap();
        }
        assert!(stores.queue.receive(q, 1, Duration::from_secs(30)).await.unwrap().is_empty(), "dead now");
        id
    };
    let run = |args: &[&str]| {
        let out = callkeeper(dir.path()).arg("dlq").args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, list, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        list.contains("transcription queue: 0 waiting, 0 in flight, 1 dead")
            && list.contains(&id)
            && list.contains("OpenAI answered HTTP 500 (2)"),
        "{list}"
    );
    let (_, show, _) = run(&["show", &id]);
    let letter: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!((letter["receive_count"].as_u64(), letter["body"].as_str()), (Some(2), Some(r#"{"kind":"transcribe"}"#)));
    assert_eq!(run(&["show", "nope"]).0, Some(2));
    assert_eq!(run(&["redrive"]).0, Some(1), "names one, or --all");
    let (code, redriven, _) = run(&["redrive", &id]);
    assert_eq!((code, redriven.trim()), (Some(0), format!("{id} sent back to the transcription queue").as_str()));
    let (_, after, _) = run(&["list", "--json"]);
    assert_eq!(after.trim(), "[]");
    let (_, replies, _) = run(&["--queue", "replies", "list"]);
    assert!(replies.starts_with("replies queue: 0 waiting"), "{replies}");
}

#[test]
fn partial_twilio_configuration_refuses_to_start_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = callkeeper(dir.path())
        .args(["serve", "--port", "0"])
        .env("PUBLIC_BASE_URL", "https://ck.example.com")
        .env("TWILIO_AUTH_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim(), "callkeeper: configuration: missing RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID");
}

#[test]
fn calls_list_on_an_empty_folder_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = callkeeper(&dir.path().join("nothing-here")).args(["calls", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("no callkeeper data in"));
}

/// The "done when" of the AI agent: with a key set, `serve` talks to the Realtime model (here
/// `callkeeper fake-realtime`), a simulated call hears its greeting and an answer, and the CRM
/// holds the live transcript.
#[test]
fn a_simulated_call_talks_to_the_realtime_agent() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut fake = Command::new(BIN).args(["fake-realtime", "--port", &port]).stdout(Stdio::piped()).spawn().unwrap();
    let first = BufReader::new(fake.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert!(first.starts_with("fake Realtime API at ws://127.0.0.1:"), "{first}");
    let _fake = Killed(fake, Default::default());

    let mut command = callkeeper(dir.path());
    command
        .env("OPENAI_API_KEY", "sk-fake")
        .env("OPENAI_REALTIME_URL", format!("ws://127.0.0.1:{port}/v1/realtime"))
        // Transcription after the call would go to OpenAI: nowhere, here.
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1");
    let (_server, addr, banner) = serve_with(command);
    assert!(banner.contains("(voice agent: openai)"), "{banner}");
    let server_port = addr.rsplit(':').next().unwrap();
    let out = callkeeper(dir.path()).args(["simulate", "--port", server_port, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["greeting_ms"].as_u64().unwrap() >= 1000, "the model's greeting was heard: {report}");
    assert!(report["answer_after_ms"][0].as_u64().is_some(), "and its answer: {report}");

    let sid = report["call_sid"].as_str().unwrap();
    let show = callkeeper(dir.path()).args(["calls", "show", sid, "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let live: Vec<String> = doc["live_transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}: {}", l["speaker"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(live[..2], ["agent: שלום, כאן הסוכן הדיגיטלי. במה אפשר לעזור?", "caller: שלום, אני מחפש דירה בחיפה"], "{live:?}");
    let text = String::from_utf8(callkeeper(dir.path()).args(["calls", "show", sid]).output().unwrap().stdout).unwrap();
    assert!(text.contains("live transcript (during the call)") && text.contains("שלום, אני מחפש דירה בחיפה"), "{text}");
}

#[test]
fn agent_profiles_are_set_shown_and_listed_and_a_bad_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bakery.toml");
    std::fs::write(
        &file,
        "instructions = \"You answer for Dana's bakery.\"\nlanguage = \"en-US\"\nvoice = \"cedar\"\ntransfer_number = \"+972501112222\"\n",
    )
    .unwrap();
    let out = callkeeper(dir.path()).args(["agent", "set", "--number", "+97231234567"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent profile +97231234567 set"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "instructions = \"x\"\n\nvoice = \"robot\"\n").unwrap();
    let out = callkeeper(dir.path()).args(["agent", "set"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3: voice \"robot\" is not one of"), "{err}");

    let list = String::from_utf8(callkeeper(dir.path()).args(["agent", "list"]).output().unwrap().stdout).unwrap();
    assert!(list.contains("+97231234567") && !list.contains("default"), "nothing half-written: {list}");
    let show = callkeeper(dir.path()).args(["agent", "show", "--number", "+97231234567", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!((doc["profile"]["voice"].as_str(), doc["profile"]["language"].as_str()), (Some("cedar"), Some("en-US")));
    let other =
        String::from_utf8(callkeeper(dir.path()).args(["agent", "show", "--number", "+97239999999"]).output().unwrap().stdout).unwrap();
    assert!(other.starts_with("no profile stored: calls get the built-in profile"), "{other}");
}

/// With public https URLs, the banner lists what to give Twilio, each with the connection
/// overrides, the fallback handler once and without contradiction.
#[test]
fn a_public_deployment_s_banner_lists_the_urls_to_give_twilio() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = callkeeper(dir.path());
    command.envs([
        ("PUBLIC_BASE_URL", "https://ck.example.com"),
        ("RELAY_PUBLIC_URL", "wss://relay.example.com"),
        ("TWILIO_ACCOUNT_SID", "ACabababababababababababababababab"),
        ("TWILIO_AUTH_TOKEN", "a-public-banner-token"),
    ]);
    let (_server, banner) = serve_on(command, port);
    assert!(banner.contains("Give Twilio these URLs"), "{banner}");
    assert!(banner.contains("\"A call comes in\":           https://ck.example.com/webhook/incoming_call#rc=3&rp=5xx,ct"), "{banner}");
    assert!(banner.contains("\"Primary handler fails\":     https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"), "{banner}");
    assert!(!banner.contains("stream_ended are set by the TwiML") && !banner.contains("cannot reach"), "{banner}");
    assert!(banner.contains("CRM: https://ck.example.com/crm"), "{banner}");
}

/// The complete profile docs/agent.md shows (tools, knowledge, hours, follow-ups) is what
/// `agent set` takes, with its knowledge files read from beside it and kept in the store.
#[test]
fn the_complete_profile_in_the_docs_is_taken_with_its_knowledge_files() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/agent.md")).unwrap();
    let start = doc.find("```toml\n# agency.toml").expect("docs/agent.md shows agency.toml") + "```toml\n".len();
    let toml = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agency.toml");
    std::fs::write(&file, toml).unwrap();
    std::fs::write(dir.path().join("prices.md"), "# מחירים\n\nדמי תיווך: חודש שכירות אחד.").unwrap();
    std::fs::write(dir.path().join("listings.md"), "# דירות\n\n".to_string() + &"הרצל 12, חיפה: שלושה חדרים.\n\n".repeat(400)).unwrap();
    std::fs::write(dir.path().join("faq.md"), "Q: Do you charge for viewings?\nA: No.").unwrap();
    let out = callkeeper(dir.path()).args(["agent", "set"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("tools check_availability, book_viewing") && said.contains("(searched)"), "{said}");
    assert!(said.contains("hours in Asia/Jerusalem") && said.contains("follow-ups"), "{said}");
    let show = String::from_utf8(callkeeper(dir.path()).args(["agent", "show"]).output().unwrap().stdout).unwrap();
    assert!(show.contains("tool check_availability → https://crm.example.com/callkeeper/availability (timeout 4000 ms)"), "{show}");
    assert!(show.contains("knowledge listings.md") && show.contains("after hours: the after-hours agent"), "{show}");
    // Without its knowledge files beside it, the profile is refused with the line that names them.
    std::fs::remove_file(dir.path().join("faq.md")).unwrap();
    let out = callkeeper(dir.path()).args(["agent", "set"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("knowledge file faq.md"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `simulate --target URL` plays against any callkeeper by its public URL, signing with the
/// environment's Twilio token, here a `serve` configured as a deployed stack is. What cannot be
/// seen from outside is reported as not checked, never as passed; scenarios that break the stack
/// are not played.
#[test]
fn a_remote_target_is_played_and_what_it_cannot_see_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("PUBLIC_BASE_URL", base.clone()),
        ("RELAY_PUBLIC_URL", format!("ws://127.0.0.1:{port}")),
        ("TWILIO_ACCOUNT_SID", format!("AC{}", "ab".repeat(16))),
        ("TWILIO_AUTH_TOKEN", "remote-target-token".to_string()),
        // Its Twilio is nowhere: the simulator cannot play it for a remote stack.
        ("TWILIO_API_BASE", "http://127.0.0.1:9".to_string()),
    ];
    let mut command = callkeeper(dir.path());
    command.envs(env.clone());
    let (_server, banner) = serve_on(command, port);
    assert!(banner.contains("config:       from the environment"), "{banner}");

    let out = callkeeper(&dir.path().join("elsewhere"))
        .args(["simulate", "--target", &base, "--scenario", "happy,relay-restart", "--json"])
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let call = &docs[0];
    assert_eq!((call["scenario"].as_str(), call["outcome"].as_str()), (Some("happy"), Some("conversation")), "{call}");
    assert!(call["greeting_ms"].as_u64().unwrap() > 3000, "the embedded agent was heard: {call}");
    let verdict = |name: &str| call["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["result"].clone();
    assert_eq!(verdict("outcome"), "pass");
    assert_eq!(verdict("crm-holds-the-call"), "not-checked", "its store is not readable from here");
    let moments: Vec<&str> = call["timeline"]["moments"].as_array().unwrap().iter().filter_map(|m| m["what"].as_str()).collect();
    assert!(moments.iter().any(|m| m.starts_with("recording not reported")), "{moments:?}");
    let summary = &docs[1]["summary"];
    assert_eq!(summary["calls"], 1, "{summary}");
    assert_eq!(docs[1]["skipped"][0][0], "relay-restart", "{}", docs[1]);
    assert_eq!(docs[1]["dead_letters"], serde_json::Value::Null, "not readable from here, so not claimed empty");
}

/// `contacts show` and `leads`: what the CRM holds of a person (their merged lead, their calls
/// and WhatsApp messages, newest first) and the leads across calls, as a table and as CSV a
/// spreadsheet opens safely (a caller's "=…" is kept as text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_and_leads_read_the_crm() {
    use callkeeper_core::call::{CallStatus, Direction, NewCall};
    use callkeeper_core::ids::{AccountSid, CallSid, MessageSid};
    use callkeeper_core::message::{Message, MessageDirection};
    use callkeeper_core::phone::{Channel, E164};
    let dir = tempfile::tempdir().unwrap();
    let dana = E164::parse("+972501234567").unwrap();
    {
        let stores = callkeeper_core::store::open::open(callkeeper_core::store::open::StoreKind::Embedded, dir.path(), 5).await.unwrap();
        let calls = stores.calls.as_ref();
        let account = AccountSid::parse(&format!("AC{}", "cd".repeat(16))).unwrap();
        let call = |sid: &CallSid, from: &E164, at: i64| NewCall {
            call_sid: sid.clone(),
            account_sid: account.clone(),
            from: from.to_string(),
            to: "+97231234567".into(),
            contact: Some(from.clone()),
            direction: Direction::Inbound,
            status: CallStatus::AwaitingStream,
            twilio_status: Some("ringing".into()),
            at,
        };
        let [first, second, other] = [0, 1, 2].map(|_| CallSid::parse(&common::new_call_sid()).unwrap());
        let now = callkeeper_core::time::now_ms();
        calls.create_call(&call(&first, &dana, now - 3_000)).await.unwrap();
        calls.create_call(&call(&second, &dana, now - 2_000)).await.unwrap();
        calls.create_call(&call(&other, &E164::parse("+972529999999").unwrap(), now - 1_000)).await.unwrap();
        let lead = serde_json::json!({ "name": "דנה", "area": "חיפה, כרמל", "note": "=HYPERLINK(\"http://x\")" });
        calls.save_lead(&second, Some(&dana), &lead, now).await.unwrap();
        calls.save_lead(&first, Some(&dana), &serde_json::json!({ "budget": 2_000_000 }), now).await.unwrap();
        let message = Message {
            message_sid: MessageSid::parse(&format!("SM{}", "ef".repeat(16))).unwrap(),
            account_sid: account.clone(),
            channel: Channel::Whatsapp,
            direction: MessageDirection::Inbound,
            contact: dana.clone(),
            from: format!("whatsapp:{dana}"),
            to: "whatsapp:+97231234567".into(),
            body: "שלום, עדיין מחפשת דירה".into(),
            media: vec![],
            profile_name: Some("Dana".into()),
            status: "received".into(),
            error_code: None,
            created_at: now - 500,
            updated_at: now - 500,
            reply_enqueued_at: None,
        };
        calls.put_message(&message).await.unwrap();
    }

    let run = |args: &[&str]| {
        let out = callkeeper(dir.path()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, csv, _) = run(&["leads", "--csv"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "a header and the two calls with a lead (not the third): {csv}");
    assert_eq!(lines[0], "call_sid,started,contact,area,name,note,budget");
    assert!(lines[1].ends_with(",+972501234567,\"חיפה, כרמל\",דנה,\"'=HYPERLINK(\"\"http://x\"\")\","), "{}", lines[1]);
    assert!(lines[2].ends_with(",+972501234567,,,,2000000"), "{}", lines[2]);
    let (_, table, _) = run(&["leads"]);
    assert!(table.starts_with("call_sid") && table.contains("חיפה, כרמל"), "{table}");

    let (code, text, _) = run(&["contacts", "show", "+972501234567"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("name        Dana"), "{text}");
    for field in ["name           דנה", "area           חיפה, כרמל", "budget         2000000"] {
        assert!(text.contains(field), "the merged lead has {field}: {text}");
    }
    let timeline: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("timeline")).skip(1).collect();
    assert_eq!(timeline.len(), 3, "two calls and a message: {text}");
    assert!(timeline[0].contains("whatsapp") && timeline[0].contains("שלום, עדיין מחפשת דירה"), "newest first: {text}");
    let (_, json, _) = run(&["contacts", "show", "+972501234567", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        doc["timeline"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect::<Vec<_>>(),
        ["message", "call", "call"]
    );

    let (code, _, err) = run(&["contacts", "show", "+15550000000"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run(&["contacts", "show", "dana"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("\"dana\" is not a +E164 number"), "{err}");
}

/// `crm user add|list|remove`: the password comes from standard input, only its Argon2id hash is
/// kept (and never listed); a short password, a taken name and a bad name are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_users_are_added_with_a_hashed_password_listed_and_removed() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let with_stdin = |args: &[&str], input: &str| {
        let mut child =
            callkeeper(dir.path()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, out, err) = with_stdin(&["crm", "user", "add", "dana@example.com"], "a long passphrase\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "user dana@example.com added\n");
    let (code, _, err) = with_stdin(&["crm", "user", "add", "dana@example.com"], "another passphrase\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("exists (--replace sets a new password)"), "{err}");
    let (code, _, err) = with_stdin(&["crm", "user", "add", "avi"], "short\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("at least 12 characters"), "{err}");
    let (code, _, err) = with_stdin(&["crm", "user", "add", "Dana Levi"], "a long passphrase\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("a user name is 1 to 64 of a-z"), "{err}");

    // Only the hash is kept, and it is the password's.
    let stores = callkeeper_core::store::open::open(callkeeper_core::store::open::StoreKind::Embedded, dir.path(), 5).await.unwrap();
    let name = callkeeper_core::users::UserName::parse("dana@example.com").unwrap();
    let hash = stores.calls.user(&name).await.unwrap().unwrap().password_hash;
    assert!(hash.starts_with("$argon2id$") && !hash.contains("passphrase"), "{hash}");
    assert!(callkeeper_core::users::verify_password(&hash, "a long passphrase"));
    let (code, out, _) = with_stdin(&["crm", "user", "add", "dana@example.com", "--replace"], "a newer passphrase\n");
    assert_eq!((code, out.as_str()), (Some(0), "password of dana@example.com replaced\n"));
    let hash = stores.calls.user(&name).await.unwrap().unwrap().password_hash;
    assert!(callkeeper_core::users::verify_password(&hash, "a newer passphrase"));

    let (_, list, _) = with_stdin(&["crm", "user", "list", "--json"], "");
    let users: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(users[0]["name"], "dana@example.com");
    assert!(users[0].get("password_hash").is_none() && !list.contains("argon2"), "{list}");
    let (code, out, _) = with_stdin(&["crm", "user", "remove", "dana@example.com"], "");
    assert_eq!((code, out.as_str()), (Some(0), "user dana@example.com removed\n"));
    let (code, _, _) = with_stdin(&["crm", "user", "remove", "dana@example.com"], "");
    assert_eq!(code, Some(2));
}
