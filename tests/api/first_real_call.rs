//! Ready for the first real call: `callkeeper twilio numbers` / `configure` against a fake
//! Twilio account over loopback, and `callkeeper doctor` against a running `serve`, a fake
//! Twilio, a fake Realtime server and a fake OpenAI models API: a misconfigured number is named
//! and fixed, a bad key is named, no secret is printed and nothing is written.

use crate::command_line::{callkeeper, serve_with};
use base64::Engine;
use callkeeper::fake_realtime::{self, FakeRealtime};
use serde_json::{json, Value};
use std::process::Output;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{any, header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const NUMBER: &str = "+97231234567";
const NUMBER_SID: &str = "PN0123456789abcdef0123456789abcdef";

/// A Twilio account with one number, over loopback: checks Basic auth, lists and updates the
/// number as IncomingPhoneNumbers does, and counts the updates.
#[derive(Clone)]
struct FakeAccount {
    state: Arc<Mutex<AccountState>>,
}

struct AccountState {
    account: String,
    token: String,
    number: Value,
    updates: usize,
}

impl FakeAccount {
    async fn start(account: &str, token: &str) -> (FakeAccount, MockServer) {
        let number = json!({
            "sid": NUMBER_SID, "phone_number": NUMBER, "friendly_name": "(03) 123-4567",
            "voice_url": "https://old-server.example.com/voice", "voice_method": "POST",
            "voice_fallback_url": "", "voice_fallback_method": "POST",
            "status_callback": "", "status_callback_method": "POST",
            "sms_url": "https://demo.twilio.com/welcome/sms/reply", "sms_method": "POST",
            "capabilities": { "voice": true, "sms": true, "mms": false, "fax": false },
        });
        let fake =
            FakeAccount { state: Arc::new(Mutex::new(AccountState { account: account.into(), token: token.into(), number, updates: 0 })) };
        let server = MockServer::start().await;
        Mock::given(any()).respond_with(fake.clone()).mount(&server).await;
        (fake, server)
    }

    fn number(&self) -> Value {
        self.state.lock().unwrap().number.clone()
    }

    fn updates(&self) -> usize {
        self.state.lock().unwrap().updates
    }

    fn set_credentials(&self, account: &str, token: &str) {
        let mut state = self.state.lock().unwrap();
        state.account = account.into();
        state.token = token.into();
    }
}

impl Respond for FakeAccount {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", state.account, state.token)));
        let authorized = request.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str());
        let prefix = format!("/2010-04-01/Accounts/{}", state.account);
        if !authorized || !request.url.path().starts_with(&prefix) {
            return ResponseTemplate::new(401).set_body_json(json!({ "code": 20003, "message": "Authenticate", "status": 401 }));
        }
        let rest = &request.url.path()[prefix.len()..];
        match (request.method.as_str(), rest) {
            ("GET", ".json") => ResponseTemplate::new(200).set_body_json(json!({
                "sid": state.account, "friendly_name": "Clinic", "status": "active", "type": "Full",
            })),
            ("GET", "/IncomingPhoneNumbers.json") => {
                let wanted = request.url.query_pairs().find(|(k, _)| k == "PhoneNumber").map(|(_, v)| v.into_owned());
                let list: Vec<Value> =
                    [state.number.clone()].into_iter().filter(|n| wanted.as_deref().is_none_or(|w| n["phone_number"] == w)).collect();
                ResponseTemplate::new(200).set_body_json(json!({ "incoming_phone_numbers": list, "next_page_uri": null }))
            }
            ("POST", r) if r == format!("/IncomingPhoneNumbers/{NUMBER_SID}.json") => {
                for (field, value) in form_urlencoded::parse(&request.body) {
                    let key = field.chars().enumerate().fold(String::new(), |mut s, (i, c)| {
                        if c.is_ascii_uppercase() && i > 0 {
                            s.push('_');
                        }
                        s.push(c.to_ascii_lowercase());
                        s
                    });
                    state.number[key] = json!(value);
                }
                state.updates += 1;
                ResponseTemplate::new(200).set_body_json(state.number.clone())
            }
            _ => ResponseTemplate::new(404).set_body_json(json!({ "code": 20404, "message": "not found", "status": 404 })),
        }
    }
}

fn run(command: &mut std::process::Command) -> Output {
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_configure_points_a_number_here_once_and_refuses_one_not_owned() {
    let account = "AC0123456789abcdef0123456789abcdef";
    let token = "auth-token-ab12cd34ef56";
    let (fake, twilio) = FakeAccount::start(account, token).await;
    let dir = tempfile::tempdir().unwrap();
    let command = |args: &[&str]| {
        let mut cmd = callkeeper(dir.path());
        cmd.env("PUBLIC_BASE_URL", "https://ck.example.com")
            .env("RELAY_PUBLIC_URL", "wss://relay.example.com")
            .env("TWILIO_ACCOUNT_SID", account)
            .env("TWILIO_AUTH_TOKEN", token)
            .env("TWILIO_API_BASE", twilio.uri())
            .args(args);
        cmd
    };

    let listed = run(&mut command(&["twilio", "numbers"]));
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let out = text(&listed.stdout);
    assert!(out.contains(&format!("{NUMBER}  {NUMBER_SID}  elsewhere: https://old-server.example.com/voice")), "{out}");

    // A dry run says what would change and sends nothing.
    let dry = run(&mut command(&["twilio", "configure", "--number", NUMBER, "--dry-run"]));
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = text(&dry.stdout);
    assert!(out.contains("would change"), "{out}");
    assert!(
        out.contains("VoiceUrl: https://old-server.example.com/voice → https://ck.example.com/webhook/incoming_call#rc=3&rp=5xx,ct"),
        "{out}"
    );
    assert!(out.contains("VoiceFallbackUrl: (not set) → https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"), "{out}");
    assert!(out.contains("(dry run: nothing was sent)"), "{out}");
    assert_eq!(fake.updates(), 0);

    let done = run(&mut command(&["twilio", "configure", "--number", NUMBER]));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let out = text(&done.stdout);
    assert!(out.contains("changed:"), "{out}");
    assert!(out.contains("WhatsApp senders"), "where a WhatsApp sender's webhook is set: {out}");
    assert_eq!(fake.updates(), 1);
    let number = fake.number();
    assert_eq!(number["voice_url"], "https://ck.example.com/webhook/incoming_call#rc=3&rp=5xx,ct");
    assert_eq!(number["voice_fallback_url"], "https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct");
    assert_eq!(number["status_callback"], "https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct");
    assert_eq!(number["sms_url"], "https://ck.example.com/webhook/whatsapp/inbound#rc=3&rp=5xx,ct");

    // Nothing twice.
    let again = run(&mut command(&["twilio", "configure", "--number", NUMBER]));
    assert!(text(&again.stdout).contains("already points here; nothing changed"), "{}", text(&again.stdout));
    assert_eq!(fake.updates(), 1);
    let listed = run(&mut command(&["twilio", "numbers", "--json"]));
    let rows: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows[0]["points_here"], true, "{rows}");

    // A number the account does not own is refused, and nothing is sent.
    let foreign = run(&mut command(&["twilio", "configure", "--number", "+15550001111"]));
    assert_eq!(foreign.status.code(), Some(2));
    assert!(text(&foreign.stderr).contains(&format!("+15550001111 is not a number of account {account}")), "{}", text(&foreign.stderr));
    assert_eq!(fake.updates(), 1);

    // A deployment Twilio cannot reach is not pointed at.
    let local = run(command(&["twilio", "configure", "--number", NUMBER]).env("PUBLIC_BASE_URL", "http://127.0.0.1:8080"));
    assert_eq!(local.status.code(), Some(2));
    assert!(text(&local.stderr).contains("Twilio cannot reach it"), "{}", text(&local.stderr));

    // A wrong token is an error that says so, not a listing.
    fake.set_credentials(account, "another-token");
    let refused = run(&mut command(&["twilio", "numbers"]));
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("401"), "{}", text(&refused.stderr));
}

/// The doctor's checks by name.
fn checks(output: &Output) -> Vec<(String, bool, String)> {
    let list: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)));
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["ok"].as_bool().unwrap(), c["detail"].as_str().unwrap().to_string()))
        .collect()
}

fn check<'a>(all: &'a [(String, bool, String)], name: &str) -> &'a (String, bool, String) {
    all.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no check {name:?} in {all:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_a_running_deployment_names_what_is_wrong_and_changes_nothing() {
    let key = "sk-test-doctor-key-7f3a";
    let realtime = FakeRealtime::start(fake_realtime::Options { key: key.into(), ..Default::default() }).await.unwrap();
    let models = MockServer::start().await;
    for route in [path("/v1/models"), path("/v1/models/gpt-realtime")] {
        Mock::given(method("GET"))
            .and(route)
            .and(header("authorization", format!("Bearer {key}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "object": "model" })))
            .mount(&models)
            .await;
    }
    Mock::given(method("GET"))
        .and(path_regex("^/v1/models/(gpt-4o-transcribe|gpt-4o-mini-transcribe|gpt-4o-mini|gpt-4.1-mini|whisper-1)$"))
        .and(header("authorization", format!("Bearer {key}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "object": "model" })))
        .mount(&models)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": { "message": "Incorrect API key provided" } })))
        .mount(&models)
        .await;
    let (fake, twilio) = FakeAccount::start("AC00000000000000000000000000000000", "unset").await;

    let dir = tempfile::tempdir().unwrap();
    let with_services = |mut cmd: std::process::Command, key: &str| {
        cmd.env("OPENAI_API_KEY", key)
            .env("OPENAI_REALTIME_URL", realtime.url())
            .env("OPENAI_BASE_URL", format!("{}/v1", models.uri()))
            .env("TWILIO_API_BASE", twilio.uri());
        cmd
    };
    let (_server, addr, _banner) = serve_with(with_services(callkeeper(dir.path()), key));
    let port = addr.rsplit(':').next().unwrap().to_string();
    let secrets: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("local-secrets.json")).unwrap()).unwrap();
    let (account, token) = (secrets["account_sid"].as_str().unwrap(), secrets["auth_token"].as_str().unwrap());
    fake.set_credentials(account, token);
    let (realtime_sessions, appends) = {
        let log = realtime.log();
        (log.connections.len(), log.appends)
    };

    let doctor = |key: &str, json: bool| {
        let mut cmd = with_services(callkeeper(dir.path()), key);
        cmd.args(["doctor", "--port", &port, "--number", NUMBER]);
        if json {
            cmd.arg("--json");
        }
        run(&mut cmd)
    };
    let output = doctor(key, true);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "a check fails, so the exit code says so: {stdout}");
    let all = checks(&output);
    for name in [
        "settings",
        "twilio credentials",
        "webhooks /healthz",
        "webhooks /version",
        "webhooks incoming_call",
        "relay",
        "openai key",
        "openai models",
        "openai realtime",
        "store calls",
        "store recordings",
        "store queues",
        "dead letters",
        "events webhook",
    ] {
        let (_, ok, detail) = check(&all, name);
        assert!(ok, "{name}: {detail}\n{stdout}");
    }
    // Loopback is no URL for Twilio, and the number still points at the old server.
    let (_, ok, detail) = check(&all, "public URLs");
    assert!(!ok && detail.contains("Twilio cannot reach it"), "{detail}");
    let (_, ok, detail) = check(&all, &format!("number {NUMBER}"));
    assert!(!ok, "{detail}");
    assert!(detail.contains("VoiceUrl is \"https://old-server.example.com/voice\""), "{detail}");
    assert!(detail.contains(&format!("run `callkeeper twilio configure --number {NUMBER}`")), "{detail}");
    assert!(check(&all, "relay").2.contains("101 with audio.twilio.com"));
    assert!(check(&all, "openai realtime").2.contains("audio/pcmu in and out"));
    // Secrets appear as their last four characters only.
    assert!(check(&all, "twilio credentials").2.contains(&format!("…{}", &token[token.len() - 4..])));
    assert!(!stdout.contains(token) && !stdout.contains(key), "a secret was printed: {stdout}");
    // The doctor's session opened and closed with no audio; its probe left no call.
    {
        let log = realtime.log();
        assert_eq!(log.connections.len(), realtime_sessions + 1);
        assert_eq!(log.appends, appends, "the doctor's session sent audio");
        assert_eq!(log.of_kind("session.update").len(), 1, "one session.update, the doctor's");
    }
    let calls = run(callkeeper(dir.path()).args(["calls", "list", "--json"]));
    let listed: Value = serde_json::from_slice(&calls.stdout).unwrap();
    assert_eq!(listed, json!([]), "the probe wrote a call");
    assert_eq!(fake.updates(), 0, "the doctor changed a number");

    // The same as text: one line a check, the fix on the failing ones.
    let output = doctor(key, false);
    let stdout = text(&output.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("✓ relay: signed upgrade answered 101")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(&format!("✗ number {NUMBER}: VoiceUrl"))), "{stdout}");
    assert!(stdout.ends_with("2 of 17 checks failed\n"), "{stdout}");
    assert!(stdout.contains("✓ agent tools: no profile declares an HTTP tool"), "{stdout}");

    // A profile with a business tool, and no TOOLS_WEBHOOK_SECRET to sign its requests.
    let profile = dir.path().join("agency.toml");
    std::fs::write(
        &profile,
        "instructions = \"x\"\n[[tools]]\nname = \"check_availability\"\ndescription = \"d\"\nurl = \"https://crm.example.com/a\"\n",
    )
    .unwrap();
    run(callkeeper(dir.path()).args(["agent", "set"]).arg(&profile));
    let (_, ok, detail) = check(&checks(&doctor(key, true)), "agent tools").clone();
    assert!(!ok && detail.contains("check_availability (default) declared, but TOOLS_WEBHOOK_SECRET is not set"), "{detail}");

    // RELAY_PUBLIC_URL at something that is not the relay: the upgrade's 426 is named (Twilio's
    // 31920), and so is the webhooks' TwiML streaming somewhere else than this setting says.
    let not_relay = MockServer::start().await;
    Mock::given(method("GET")).and(path("/ws/twilio-media")).respond_with(ResponseTemplate::new(426)).mount(&not_relay).await;
    let wrong_relay = format!("ws://{}", not_relay.address());
    let mut cmd = with_services(callkeeper(dir.path()), key);
    cmd.env("PUBLIC_BASE_URL", format!("http://{addr}"))
        .env("RELAY_PUBLIC_URL", &wrong_relay)
        .env("TWILIO_ACCOUNT_SID", account)
        .env("TWILIO_AUTH_TOKEN", token)
        .args(["doctor", "--json", "--number", NUMBER]);
    let all = checks(&run(&mut cmd));
    let (_, ok, detail) = check(&all, "relay");
    assert!(!ok && detail.contains("answered 426 (Twilio's 31920)") && detail.contains("RELAY_PUBLIC_URL"), "{detail}");
    let (_, ok, detail) = check(&all, "webhooks incoming_call");
    assert!(!ok && detail.contains(&format!("streams to ws://{addr}/ws/twilio-media, not {wrong_relay}/ws/twilio-media")), "{detail}");

    // A bad key is named (by its last four), and what needs it is not run.
    let output = doctor("sk-wrong-key-9999", true);
    let all = checks(&output);
    let (_, ok, detail) = check(&all, "openai key");
    assert!(!ok && detail.contains("OPENAI_API_KEY …9999") && detail.contains("401"), "{detail}");
    assert!(check(&all, "openai realtime").2.starts_with("not run"), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_no_settings_says_which_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(callkeeper(&dir.path().join("absent")).args(["doctor", "--json"]));
    assert_eq!(output.status.code(), Some(1));
    let all = checks(&output);
    let (_, ok, detail) = check(&all, "settings");
    assert!(!ok && detail.contains("set PUBLIC_BASE_URL, RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"), "{detail}");
    assert!(all.iter().skip(1).all(|(_, ok, detail)| !ok && detail.starts_with("not run")), "{all:?}");
    assert!(!dir.path().join("absent").exists(), "the doctor made a data folder");
}
