//! The agent working for the business, end to end over loopback: the relay, the fake Realtime
//! server and a fake business endpoint that checks every signature. A profile's HTTP tool fast,
//! slow (covered by the filler), down, refused before any request; knowledge searched in
//! Hebrew; keypad digits told to the model; after-hours calls.

use crate::common;

use callkeeper::fake_business::FakeBusiness;
use callkeeper::fake_realtime::{FakeRealtime, Options, Plan};
use callkeeper::media_client::MediaCall;
use callkeeper::simulate::caller_audio;
use callkeeper_core::http_tool::HttpTool;
use callkeeper_core::ids::CallSid;
use callkeeper_core::knowledge::KnowledgeFile;
use callkeeper_core::profile::{AgentProfile, ProfileKey};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SECRET: &str = "tools-secret-for-the-tests-0123456789";

struct Business {
    app: TestApp,
    fake: FakeRealtime,
    endpoint: FakeBusiness,
}

/// The app with the Realtime agent, a fake business, and the default profile given `tools`
/// (each `(name, behaviour)` of the fake) and `knowledge`.
async fn business(plans: Vec<Plan>, tools: &[(&str, &str)], knowledge: Vec<KnowledgeFile>) -> Business {
    let fake = FakeRealtime::start(Options { script: plans, ..Options::default() }).await.unwrap();
    let endpoint = FakeBusiness::start(SECRET).await.unwrap();
    let url = fake.url();
    let app =
        spawn_app_with(&[("OPENAI_API_KEY", "sk-fake"), ("OPENAI_REALTIME_URL", url.as_str()), ("TOOLS_WEBHOOK_SECRET", SECRET)]).await;
    let mut profile = AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
    profile.tools = tools.iter().map(|(name, behaviour)| availability(name, &endpoint.url(behaviour))).collect();
    profile.knowledge = knowledge;
    app.stores.calls.put_profile(&ProfileKey::Default, &profile, 1).await.unwrap();
    Business { app, fake, endpoint }
}

fn availability(name: &str, url: &str) -> HttpTool {
    HttpTool { name: name.into(), filler: Some("רגע, אני בודקת".into()), ..callkeeper::fake_business::availability_tool(url) }
}

async fn caller_turn(call: &mut MediaCall) {
    call.speak(caller_audio("he")).await;
    call.silence(Duration::from_millis(900)).await;
}

fn outputs(fake: &FakeRealtime) -> Vec<Value> {
    let log = fake.log();
    log.of_kind("conversation.item.create")
        .into_iter()
        .filter(|e| e["item"]["type"] == "function_call_output")
        .map(|e| serde_json::from_str(e["item"]["output"].as_str().unwrap()).unwrap())
        .collect()
}

async fn tool_event(app: &TestApp, sid: &CallSid) -> Value {
    app.event(sid, "tool_call", Duration::from_secs(3)).await.expect("a tool_call event").detail
}

/// The longest stretch, between `from` and `to`, in which the caller heard no agent audio.
fn longest_silence(call: &MediaCall, from: Instant, to: Instant) -> Duration {
    let mut spans: Vec<(Instant, Instant)> =
        call.heard().spans.iter().map(|s| (s.start.into_std(), s.end.into_std())).filter(|(_, end)| *end > from).collect();
    spans.sort();
    let mut longest = Duration::ZERO;
    let mut cursor = from;
    for (start, end) in spans {
        if start > cursor {
            longest = longest.max(start.min(to) - cursor);
        }
        cursor = cursor.max(end);
        if cursor >= to {
            break;
        }
    }
    longest.max(to.saturating_duration_since(cursor))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_tool_is_asked_signed_and_its_answer_spoken_without_a_filler() {
    let plans =
        vec![Plan::say(600, "שלום"), Plan::call("check_availability", json!({ "listing": "הרצל 12" })), Plan::say(800, "הדירה פנויה")];
    let b = business(plans, &[("check_availability", "fast")], vec![]).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(1000)).await;
    caller_turn(&mut call).await;
    let fake = &b.fake;
    let answered = async || outputs(fake).len() == 1;
    wait_for("the tool's output reaches the model", Duration::from_secs(5), answered).await;
    // The answer after the tool is heard: the greeting's 30 frames, then the answer's 40.
    assert!(call.wait_heard(Duration::from_secs(4), |h| h.media_frames >= 68).await, "{} frames", call.heard().media_frames);
    call.stop();
    b.app.figures(&sid).await;

    // THEN the business got one signed request: the tool, its arguments, the call.
    let received = b.endpoint.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert!(r.signed, "the fake's own HMAC check passed");
    assert_eq!(r.user_agent, "callkeeper-tools/1");
    assert_eq!(r.body["tool"], "check_availability");
    assert_eq!(r.body["arguments"], json!({ "listing": "הרצל 12" }));
    assert_eq!(r.body["call"]["call_sid"], sid.as_str());
    assert!(r.body["call"]["from"].as_str().unwrap().starts_with('+') && r.body["call"]["to"].as_str().unwrap().starts_with('+'));
    // The model got the business's JSON as the function's output, then was asked to answer.
    assert_eq!(outputs(&b.fake)[0]["viewings"][0], "Thursday 17:00");
    {
        let log = b.fake.log();
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        let creates = log.of_kind("response.create");
        assert!(creates.iter().all(|c| c["response"]["conversation"] != "none"), "no filler for a fast answer: {creates:?}");
        assert_eq!(creates.len(), 2, "the greeting, then the answer after the output");
        let tools = log.events[0].event["session"]["tools"].as_array().unwrap().clone();
        let ours = tools.iter().find(|t| t["name"] == "check_availability").expect("the tool is offered");
        assert_eq!(ours["parameters"]["required"], json!(["listing"]));
    }
    let event = tool_event(&b.app, &sid).await;
    assert_eq!(
        (event["tool"].as_str(), event["ok"].as_bool(), event["http_status"].as_u64()),
        (Some("check_availability"), Some(true), Some(200))
    );
    assert_eq!(event["filler_said"], false);
    assert!(event["latency_ms"].as_u64().unwrap() < 1000, "{event}");
    assert!(!event.to_string().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_is_covered_by_the_filler_and_the_caller_is_never_silent_for_long() {
    let plans = vec![
        Plan::say(600, "שלום"),
        Plan::call("check_availability", json!({ "listing": "ויצמן 4" })),
        Plan::say(1200, "יש מועד ביום חמישי"),
    ];
    let b = business(plans, &[("check_availability", "slow")], vec![]).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(1000)).await;
    caller_turn(&mut call).await;
    let fake = &b.fake;
    wait_for("the slow tool's output reaches the model", Duration::from_secs(6), async || outputs(fake).len() == 1).await;
    call.silence(Duration::from_millis(2500)).await;
    call.stop();
    b.app.figures(&sid).await;

    let (called_at, output_at, filler) = {
        let log = b.fake.log();
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        let called_at = *log.function_called_at.values().next().unwrap();
        let output_at = log.events.iter().find(|e| e.event["item"]["type"] == "function_call_output").unwrap().at;
        let filler = log.events.iter().find(|e| e.event["response"]["conversation"] == "none").expect("a filler was asked for").clone();
        assert_eq!(filler.event["response"]["input"], json!([]), "the filler sees nothing of the conversation");
        assert!(filler.event["response"]["instructions"].as_str().unwrap().ends_with("רגע, אני בודקת"));
        (called_at.into_std(), output_at.into_std(), filler.at.into_std())
    };
    let filler_after = filler - called_at;
    assert!(filler_after >= Duration::from_millis(650) && filler_after < Duration::from_millis(1100), "filler after {filler_after:?}");
    assert!(output_at - called_at >= Duration::from_millis(1900), "the answer took the endpoint's 2 s");
    // The caller heard the filler while waiting: no silence over a second from the function
    // call to the answer being asked for.
    let silence = longest_silence(&call, called_at, output_at);
    assert!(silence <= Duration::from_secs(1), "longest silence while waiting: {silence:?}");
    let event = tool_event(&b.app, &sid).await;
    assert_eq!((event["ok"].as_bool(), event["filler_said"].as_bool()), (Some(true), Some(true)), "{event}");
    assert!(event["latency_ms"].as_u64().unwrap() >= 1900);
    // The filler is in the live transcript as what the agent said.
    let turns = b.app.stores.calls.turns(&sid).await.unwrap();
    assert!(turns.iter().any(|t| t.agent_text.as_deref().is_some_and(|a| a.contains("רגע, אני בודקת"))), "{turns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_is_down_or_misbehaves_is_told_to_the_model_and_the_call_goes_on() {
    for behaviour in ["down", "broken", "huge", "redirect"] {
        let plans = vec![
            Plan::say(400, "שלום"),
            Plan::call("check_availability", json!({ "listing": "הרצל 12" })),
            Plan::say(800, "לא הצלחתי לבדוק"),
        ];
        let b = business(plans, &[("check_availability", behaviour)], vec![]).await;
        let (sid, mut call) = b.app.start_call().await;
        call.silence(Duration::from_millis(800)).await;
        caller_turn(&mut call).await;
        let fake = &b.fake;
        wait_for("the failure reaches the model", Duration::from_secs(5), async || outputs(fake).len() == 1).await;
        let output = outputs(&b.fake)[0].clone();
        assert_eq!(output["ok"], false, "{behaviour}: {output}");
        assert!(output["next"].as_str().unwrap().contains("could not check"), "{output}");
        // The model speaks after the failure (the greeting's 20 frames, then the answer's 40),
        // and the stream is still up.
        let heard = call.wait_heard(Duration::from_secs(4), |h| h.media_frames >= 58).await;
        assert!(heard, "{behaviour}: the call goes on; {} frames", call.heard().media_frames);
        call.stop();
        let figures = b.app.figures(&sid).await;
        assert_eq!(figures.end, callkeeper_core::stream_report::StreamEnd::TwilioStop, "{behaviour}");
        let event = tool_event(&b.app, &sid).await;
        assert_eq!(event["ok"], false, "{behaviour}");
        let error = event["error"].as_str().unwrap();
        let expected = match behaviour {
            "down" => "HTTP 503",
            "broken" => "not JSON",
            "huge" => "longer than 16384 bytes",
            _ => "HTTP 307",
        };
        assert!(error.contains(expected), "{behaviour}: {error}");
        let fast_hits = b.endpoint.received().iter().filter(|r| r.behaviour == "fast").count();
        assert_eq!(fast_hits, 0, "a redirect is not followed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_break_the_schema_are_refused_before_any_request() {
    let plans =
        vec![Plan::say(400, "שלום"), Plan::call("check_availability", json!({ "street": "הרצל" })), Plan::say(600, "על איזו דירה?")];
    let b = business(plans, &[("check_availability", "fast")], vec![]).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(800)).await;
    caller_turn(&mut call).await;
    let fake = &b.fake;
    wait_for("the refusal reaches the model", Duration::from_secs(4), async || outputs(fake).len() == 1).await;
    assert!(outputs(&b.fake)[0]["error"].as_str().unwrap().contains("arguments.listing is required"));
    assert!(b.endpoint.received().is_empty(), "nothing was sent");
    call.stop();
    b.app.figures(&sid).await;
    assert_eq!(tool_event(&b.app, &sid).await["http_status"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_knowledge_is_searched_in_hebrew() {
    let mut faq = String::new();
    for i in 0..150 {
        faq.push_str(&format!("שאלה {i}: תשובה כללית על השירות ועל תנאי התשלום.\n\n"));
    }
    let knowledge = vec![
        KnowledgeFile { name: "faq.md".into(), text: faq },
        KnowledgeFile {
            name: "listings.md".into(), text: "# דירות\n\nהרצל 12, חיפה: שלושה חדרים, 5,200 ₪ לחודש.".into()
        },
    ];
    let plans =
        vec![Plan::say(400, "שלום"), Plan::call("search_knowledge", json!({ "query": "דירה בחיפה" })), Plan::say(800, "יש דירה בהרצל")];
    let b = business(plans, &[], knowledge).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(800)).await;
    caller_turn(&mut call).await;
    let fake = &b.fake;
    wait_for("the search's output reaches the model", Duration::from_secs(4), async || outputs(fake).len() == 1).await;
    let found = outputs(&b.fake)[0].clone();
    assert_eq!(found["found"][0]["file"], "listings.md", "{found}");
    assert!(found["found"][0]["text"].as_str().unwrap().contains("5,200"));
    {
        let log = b.fake.log();
        let session = &log.events[0].event["session"];
        assert!(session["tools"].as_array().unwrap().iter().any(|t| t["name"] == "search_knowledge"));
        let instructions = session["instructions"].as_str().unwrap();
        assert!(instructions.contains("search_knowledge") && !instructions.contains("5,200"), "large knowledge is searched, not told");
    }
    call.stop();
    b.app.figures(&sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_digits_reach_the_model_as_text_after_a_pause_and_show_in_the_transcript() {
    let plans = vec![Plan::say(400, "הקישו את מספר ההזמנה"), Plan::say(600, "תודה")];
    let b = business(plans, &[], vec![]).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(800)).await;
    for digit in ["1", "2", "3"] {
        call.dtmf(digit);
        call.silence(Duration::from_millis(200)).await;
    }
    call.dtmf("#");
    call.silence(Duration::from_millis(300)).await;
    // A second entry, ended by a pause.
    call.dtmf("9");
    call.silence(Duration::from_millis(2200)).await;
    call.stop();
    b.app.figures(&sid).await;
    let texts: Vec<String> = {
        let log = b.fake.log();
        log.of_kind("conversation.item.create")
            .iter()
            .filter(|e| e["item"]["role"] == "user")
            .map(|e| e["item"]["content"][0]["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts, ["[The caller pressed on the phone's keypad: 1 2 3 #]", "[The caller pressed on the phone's keypad: 9]"]);
    let turns = b.app.stores.calls.turns(&sid).await.unwrap();
    let keyed: Vec<&str> = turns.iter().filter_map(|t| t.caller_text.as_deref()).filter(|t| t.starts_with('⌨')).collect();
    assert_eq!(keyed, ["⌨ 1 2 3 #", "⌨ 9"], "{turns:?}");
}

/// A profile read from TOML as `agent set` reads it, with `hours` appended.
fn profile_with_hours(hours: &str) -> AgentProfile {
    let text = format!("instructions = \"You answer for Dana's agency.\"\n{hours}");
    let defaults = AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
    callkeeper_core::profile::parse(&text, "agency.toml", std::path::Path::new("."), &defaults).unwrap()
}

/// Closed all week (no day written): every call is after hours.
const NEVER_OPEN: &str = "[hours]\ntime_zone = \"Asia/Jerusalem\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hours_a_call_goes_straight_to_voicemail_with_the_businesss_message() {
    let app = spawn_app().await;
    let message = "שלום, סגורים עכשיו. השאירו הודעה.";
    let profile = profile_with_hours(&format!("{NEVER_OPEN}[after_hours]\nmode = \"voicemail\"\nmessage = \"{message}\"\n"));
    app.stores.calls.put_profile(&ProfileKey::Default, &profile, 1).await.unwrap();
    let sid = new_call_sid();
    let twiml = twiml_of(app.post("/webhook/incoming_call", &incoming_call_form(&sid, "+972501234567")).await).await;
    assert_eq!(twiml.names(), ["Say", "Record"], "no stream: voicemail at once");
    assert_eq!(twiml.find("Say").unwrap().text, message);
    assert!(twiml.find("Record").unwrap().attr("recordingStatusCallback").unwrap().contains("/webhook/recording_done"));
    let sid = CallSid::parse(&sid).unwrap();
    let call = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((call.status, call.fallback_reason.as_deref()), (callkeeper_core::call::CallStatus::Fallback, Some("after_hours")));
    let event = app.event(&sid, "after_hours", Duration::from_secs(1)).await.unwrap();
    assert_eq!(event.detail["mode"], "voicemail");
    // Twilio's retry of the webhook gets the same answer.
    let again = twiml_of(app.post("/webhook/incoming_call", &incoming_call_form(sid.as_str(), "+972501234567")).await).await;
    assert_eq!(again.names(), ["Say", "Record"]);

    // Open around the clock: the agent answers.
    let open = "[hours]\ntime_zone = \"Asia/Jerusalem\"\nmonday = \"00:00-24:00\"\ntuesday = \"00:00-24:00\"\nwednesday = \"00:00-24:00\"\nthursday = \"00:00-24:00\"\nfriday = \"00:00-24:00\"\nsaturday = \"00:00-24:00\"\nsunday = \"00:00-24:00\"\n";
    app.stores.calls.put_profile(&ProfileKey::Default, &profile_with_hours(open), 2).await.unwrap();
    let twiml = twiml_of(app.post("/webhook/incoming_call", &incoming_call_form(&new_call_sid(), "+972501234567")).await).await;
    assert!(twiml.find("Stream").is_some(), "open: the stream as usual");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hours_the_after_hours_agent_answers_told_the_time_and_the_hours() {
    let fake = FakeRealtime::start(Options::default()).await.unwrap();
    let url = fake.url();
    let app = spawn_app_with(&[("OPENAI_API_KEY", "sk-fake"), ("OPENAI_REALTIME_URL", url.as_str())]).await;
    let hours = format!(
        "{NEVER_OPEN}sunday = \"09:00-09:01\"\n[after_hours]\nmode = \"agent\"\ninstructions = \"AFTER-HOURS: take a message; promise a call back tomorrow.\"\ngreeting = \"Say we are closed.\"\n"
    );
    app.stores.calls.put_profile(&ProfileKey::Default, &profile_with_hours(&hours), 1).await.unwrap();
    let (sid, call) = app.start_call().await;
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 10).await, "the after-hours agent greets");
    call.stop();
    app.figures(&sid).await;
    let (instructions, greeting) = {
        let log = fake.log();
        (
            log.events[0].event["session"]["instructions"].as_str().unwrap().to_string(),
            log.events[1].event["response"]["instructions"].clone(),
        )
    };
    assert!(instructions.starts_with("AFTER-HOURS: take a message"), "{instructions}");
    assert!(
        instructions.contains("The business is closed now") && instructions.contains("Sunday 09:00-09:01 (Asia/Jerusalem)"),
        "{instructions}"
    );
    assert_eq!(greeting, "Say we are closed.");
    assert_eq!(app.event(&sid, "after_hours", Duration::from_secs(1)).await.unwrap().detail["mode"], "agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_can_talk_over_the_filler_and_the_answer_still_comes() {
    let plans = vec![Plan::say(600, "שלום"), Plan::call("check_availability", json!({ "listing": "הרצל 12" })), Plan::say(600, "כן?")];
    let b = business(plans, &[("check_availability", "slow")], vec![]).await;
    let (sid, mut call) = b.app.start_call().await;
    call.silence(Duration::from_millis(1000)).await;
    caller_turn(&mut call).await;
    // The filler plays (from ~0.7 s after the function call); the caller talks over it.
    let playing = call.wait_heard(Duration::from_secs(3), |h| h.media_frames >= 30 + 10).await;
    assert!(playing, "the filler plays: {} frames", call.heard().media_frames);
    caller_turn(&mut call).await;
    assert!(call.wait_heard(Duration::from_secs(2), |h| h.clears >= 1).await, "the caller barged in on the filler");
    let fake = &b.fake;
    wait_for("the slow answer still reaches the model", Duration::from_secs(5), async || outputs(fake).len() == 1).await;
    call.silence(Duration::from_millis(1500)).await;
    call.stop();
    b.app.figures(&sid).await;
    assert_eq!(outputs(&b.fake)[0]["available"], true);
    let log = b.fake.log();
    assert!(log.violations.is_empty(), "{:?}", log.violations);
    // One filler for the wait, however the caller talked over it.
    assert_eq!(log.of_kind("response.create").iter().filter(|c| c["response"]["conversation"] == "none").count(), 1);
}
