//! The AI agent end to end: Twilio's side played by the media client, OpenAI's by the fake
//! Realtime server, both over real WebSockets on loopback, through the real relay and store.

use crate::common;

use callkeeper::fake_realtime::{FakeRealtime, Fault, Options, Plan};
use callkeeper::media_client::MediaCall;
use callkeeper::simulate::caller_audio;
use callkeeper_core::call::CallStatus;
use callkeeper_core::ids::CallSid;
use callkeeper_core::phone::E164;
use callkeeper_core::profile::{AgentProfile, IdleTimings, ProfileKey};
use callkeeper_core::stream_report::StreamEnd;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TRANSFER_TO: &str = "+972501112222";

struct Agent {
    app: TestApp,
    fake: FakeRealtime,
    twilio: MockServer,
}

/// The app with the Realtime agent talking to a fake started with `options`, and a fake
/// Twilio REST API that takes every update.
async fn agent(options: Options, extra: &[(&str, &str)]) -> Agent {
    let fake = FakeRealtime::start(options).await.unwrap();
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Calls/CA[0-9a-f]{32}\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sid": "CA", "status": "in-progress" })))
        .mount(&twilio)
        .await;
    let url = fake.url();
    let base = twilio.uri();
    let mut settings = vec![("OPENAI_API_KEY", "sk-fake"), ("OPENAI_REALTIME_URL", url.as_str()), ("TWILIO_API_BASE", base.as_str())];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    assert_eq!(app.relay.agent.name(), "openai", "the default agent once a key is set");
    Agent { app, fake, twilio }
}

fn script(plans: Vec<Plan>) -> Options {
    Options { script: plans, ..Options::default() }
}

/// Speaks, then keeps the line open with silence so the model's VAD can end the turn.
async fn caller_turn(call: &mut MediaCall) {
    call.speak(caller_audio("he")).await;
    call.silence(Duration::from_millis(900)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_speaks_first_then_answers_a_turn_with_a_live_transcript() {
    let a = agent(Options::default(), &[]).await;
    let started = Instant::now();
    let (sid, mut call) = a.app.start_call().await;

    // THEN the greeting is the model's first response, heard within a second.
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await, "the greeting plays");
    let first_frame = call.heard().first_media_at.unwrap().duration_since(started.into());
    assert!(first_frame < Duration::from_secs(1), "start → greeting's first frame: {first_frame:?}");
    call.silence(Duration::from_millis(1500)).await;

    // WHEN the caller speaks and stops.
    let greeting_frames = call.heard().media_frames;
    caller_turn(&mut call).await;
    assert!(call.wait_heard(Duration::from_secs(4), |h| h.media_frames >= greeting_frames + 50).await, "the answer is heard");
    call.silence(Duration::from_millis(1200)).await;
    call.stop();
    let figures = a.app.figures(&sid).await;
    assert_eq!((figures.end, figures.agent_errors), (StreamEnd::TwilioStop, 0));
    // What the relay itself adds between the sockets is measured, and small on an idle machine.
    assert!(figures.to_model_us_p50 > 0 && figures.to_model_us_p99 >= figures.to_model_us_p50, "{figures:?}");
    assert!(figures.from_model_us_p50 > 0 && figures.from_model_us_p99 >= figures.from_model_us_p50, "{figures:?}");
    assert!(figures.to_model_us_p50 < 20_000 && figures.from_model_us_p50 < 20_000, "{figures:?}");

    // The session was GA-shaped and μ-law both ways; the greeting asked for after it.
    {
        let log = a.fake.log();
        let kinds: Vec<String> = log.events.iter().map(|e| e.event["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds[..2], ["session.update", "response.create"], "{kinds:?}");
        let session = &log.events[0].event["session"];
        assert_eq!(
            (session["type"].as_str(), session["audio"]["output"]["format"]["type"].as_str()),
            (Some("realtime"), Some("audio/pcmu"))
        );
        assert_eq!(session["audio"]["input"]["transcription"]["language"], "he");
        assert_eq!(log.connections[0].get("authorization").map(String::as_str), Some("Bearer sk-fake"));
        assert!(!log.connections[0].contains_key("openai-beta"));
        assert!(log.append_bytes >= figures.frames_in * 160 - 160 * 5, "the caller's audio reached the model: {} bytes", log.append_bytes);
        assert!(log.violations.is_empty(), "{:?}", log.violations);
    }

    // The live transcript is in the turns: the greeting, then the caller's words and the answer.
    let turns = a.app.stores.calls.turns(&sid).await.unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[0].agent_text.as_deref(), Some("שלום, כאן הסוכן הדיגיטלי. במה אפשר לעזור?"));
    assert_eq!(turns[1].caller_text.as_deref(), Some("שלום, אני מחפש דירה בחיפה"));
    assert_eq!(turns[1].agent_text.as_deref(), Some("הבנתי, תודה. ספרו לי עוד."));
    let t = &turns[1];
    let (stopped, model, sent, heard) =
        (t.caller_stopped_at.unwrap(), t.model_audio_at.unwrap(), t.first_audio_at.unwrap(), t.first_mark_at.unwrap());
    assert!(stopped <= model && model <= sent && sent <= heard, "{t:?}");
    assert!(sent - model <= 20, "the relay's own share of the turn is at most a frame: {} ms", sent - model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_cancels_truncates_at_what_was_heard_and_drops_late_audio() {
    // A long greeting, generated at real time, so it is still running when the caller cuts in.
    let options = Options { script: vec![Plan::say(6000, "a long greeting")], speed: 1.0, ..Options::default() };
    let a = agent(options, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(1500)).await;
    caller_turn(&mut call).await;
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.clears == 1).await, "Twilio's buffer was cleared");
    // What the phone had played of the greeting when it was cleared.
    let played_ms = call.heard().played_at_clear[0] as u64 / 8;
    let answered = call.wait_heard(Duration::from_secs(4), |h| h.audio.len() as u64 / 8 >= played_ms + 1000).await;
    let kinds: Vec<String> = a.fake.log().events.iter().map(|e| e.event.to_string().chars().take(160).collect()).collect();
    assert!(answered, "the answer follows: heard {} ms, played {played_ms}; {kinds:#?}", call.heard().audio.len() / 8);
    call.silence(Duration::from_millis(600)).await;
    call.stop();
    let figures = a.app.figures(&sid).await;
    assert_eq!(figures.barge_ins, 1);

    let at = {
        let log = a.fake.log();
        assert_eq!(log.of_kind("response.cancel").len(), 1, "the running greeting is cancelled");
        let truncates = log.of_kind("conversation.item.truncate");
        assert_eq!(truncates.len(), 1, "{truncates:?}");
        truncates[0]["audio_end_ms"].as_u64().unwrap()
    };
    // Marks every 200 ms tell the relay what was heard: within one mark's interval of what played.
    assert!(at <= played_ms && played_ms - at <= 200 + 40, "truncated at {at} ms, {played_ms} ms played");
    // Nothing of the cancelled greeting came after the clear: only the 1 s answer was heard.
    let heard_ms = call.heard().audio.len() as u64 / 8;
    assert!(heard_ms <= played_ms + 1000 + 20, "{heard_ms} ms heard, {played_ms} ms of the greeting");
    let turns = a.app.stores.calls.turns(&sid).await.unwrap();
    assert!(turns[0].interrupted && turns[0].heard_ms == Some(at), "{:?}", turns[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_lead_lands_on_the_call_and_its_contact_while_the_call_goes_on() {
    let lead = json!({ "name": "דנה", "area": "חיפה" });
    let options = script(vec![Plan::say(800, "שלום"), Plan::call("save_lead", lead.clone()), Plan::say(800, "שמרתי את הפרטים")]);
    let a = agent(options, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(1200)).await;
    caller_turn(&mut call).await;
    let calls = a.app.stores.calls.clone();
    wait_for("the lead is saved", Duration::from_secs(4), async || calls.lead(&sid).await.unwrap().is_some()).await;
    assert_eq!(calls.lead(&sid).await.unwrap(), Some(lead.clone()));
    let contact = calls.get_call(&sid).await.unwrap().unwrap().contact.unwrap();
    assert_eq!(calls.contact(&contact).await.unwrap().unwrap().lead, Some(lead));
    assert_eq!(calls.get_call(&sid).await.unwrap().unwrap().status, CallStatus::Streaming, "during the call");
    // The model hears the tool's output, then speaks about it.
    call.silence(Duration::from_millis(1500)).await;
    call.stop();
    a.app.figures(&sid).await;
    {
        let log = a.fake.log();
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        let outputs: Vec<_> =
            log.of_kind("conversation.item.create").into_iter().filter(|e| e["item"]["type"] == "function_call_output").collect();
        assert_eq!(outputs.len(), 1);
        assert!(outputs[0]["item"]["output"].as_str().unwrap().contains("\"ok\":true"));
        assert_eq!(log.of_kind("response.create").len(), 2, "the greeting, then the answer after the tool's output");
    }
    let tool = a.app.stores.calls.events(&sid).await.unwrap().into_iter().find(|e| e.kind == "tool_call").expect("a tool_call event");
    assert_eq!(tool.detail["tool"], "save_lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_redirected_only_after_the_announcement_played() {
    let options = script(vec![
        Plan::say(600, "שלום"),
        Plan::call("transfer_to_human", json!({ "reason": "asked for a person" })),
        Plan::say(1500, "מעביר אותך לנציג"),
    ]);
    let a = agent(options, &[("TRANSFER_NUMBER", TRANSFER_TO)]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(1000)).await;
    caller_turn(&mut call).await;
    let closed = call.closed(Duration::from_secs(8)).await.expect("the relay ends the stream after the transfer");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "transferred to a person"));

    let requests = a.twilio.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one redirect");
    let form: Vec<(String, String)> = form_urlencoded::parse(&requests[0].body).into_owned().collect();
    let twiml = parse_twiml(&form.iter().find(|(k, _)| k == "Twiml").unwrap().1);
    let dial = twiml.find("Dial").expect("the redirect dials");
    assert_eq!(dial.attr("action"), Some("https://ck.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"));
    assert_eq!(dial.find("Number").unwrap().text, TRANSFER_TO);
    let heard = call.heard();
    assert!(heard.audio.len() as u64 / 8 >= 600 + 1500 - 20, "the whole announcement was heard");
    let call_record = a.app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((call_record.status, call_record.transfer_to.as_deref()), (CallStatus::Transferred, Some(TRANSFER_TO)));
    let transferred = a.app.stores.calls.events(&sid).await.unwrap().into_iter().find(|e| e.kind == "transferred").unwrap();
    assert_eq!(transferred.detail["redirected"], true);
    let tool_at = a.app.stores.calls.events(&sid).await.unwrap().into_iter().find(|e| e.kind == "tool_call").unwrap().at;
    // The announcement (1.5 s, generated 4× faster than it plays) had played out at the phone.
    assert!(transferred.at - tool_at >= 1400, "the redirect waited for the 1.5 s announcement: {} ms", transferred.at - tool_at);

    // Twilio then follows the <Dial>: nobody answers, so the caller leaves a message.
    let mut form = incoming_call_form(sid.as_str(), "+972501234567");
    form.push(("DialCallStatus".into(), "no-answer".into()));
    let doc = twiml_of(a.app.post("/webhook/stream_ended", &form).await).await;
    assert!(doc.find("Record").is_some(), "voicemail when the person does not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_redirect_fails_still_dials_through_connect_action() {
    let options = script(vec![Plan::say(400, "שלום"), Plan::call("transfer_to_human", json!({ "reason": "x" })), Plan::say(400, "מעביר")]);
    let a = agent(options, &[("TRANSFER_NUMBER", TRANSFER_TO)]).await;
    a.twilio.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "code": 21609, "message": "bad" })))
        .mount(&a.twilio)
        .await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(800)).await;
    caller_turn(&mut call).await;
    call.closed(Duration::from_secs(8)).await.expect("the stream closes");
    // <Connect action>: the transferred call is dialled there.
    let doc = twiml_of(a.app.post("/webhook/stream_ended", &incoming_call_form(sid.as_str(), "+972501234567")).await).await;
    assert_eq!(doc.find("Dial").and_then(|d| d.find("Number")).map(|n| n.text.clone()).as_deref(), Some(TRANSFER_TO));
    assert_eq!(a.app.stores.calls.get_call(&sid).await.unwrap().unwrap().fallback_reason, None, "a transfer, not a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_after_the_goodbye_played() {
    let options =
        script(vec![Plan::say(500, "שלום"), Plan::call("end_call", json!({ "reason": "caller is done" })), Plan::say(1000, "להתראות")]);
    let a = agent(options, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(900)).await;
    caller_turn(&mut call).await;
    let closed = call.closed(Duration::from_secs(6)).await.expect("the agent hangs up");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "caller is done"));
    let heard = call.heard();
    assert!(heard.audio.len() as u64 / 8 >= 500 + 1000 - 20, "the goodbye played whole before the hang-up");
    let c = a.app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((c.status, c.end_reason.as_deref()), (CallStatus::Completed, Some("agent_hangup")));
    assert_eq!(a.app.figures(&sid).await.end, StreamEnd::AgentHangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_drops_after_its_goodbye_still_ends_the_call_normally() {
    // The socket goes right after the goodbye's response is done, while the goodbye still plays.
    let script = vec![Plan::say(500, "שלום"), Plan::call("end_call", json!({ "reason": "done" })), Plan::say(1000, "להתראות")];
    let a = agent(Options { script, fault: Fault::DropAfterResponses(3), ..Options::default() }, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(900)).await;
    caller_turn(&mut call).await;
    let closed = call.closed(Duration::from_secs(6)).await.expect("the agent hangs up");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "done"), "a hang-up, not a failure");
    assert!(call.heard().audio.len() as u64 / 8 >= 500 + 1000 - 20, "the goodbye played whole");
    let c = a.app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((c.status, c.fallback_reason), (CallStatus::Completed, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_asked_then_bid_goodbye_and_hung_up_on() {
    let a = agent(script(vec![Plan::say(400, "שלום"), Plan::say(500, "אתם עדיין שם?"), Plan::say(500, "להתראות")]), &[]).await;
    let mut profile = AgentProfile::builtin("he-IL", &callkeeper_core::config::default_extraction_schema());
    profile.idle = IdleTimings { prompt_after_secs: 3, hangup_after_secs: 3 };
    a.app.stores.calls.put_profile(&ProfileKey::Default, &profile, 1).await.unwrap();
    let (sid, mut call) = a.app.start_call().await;
    let started = Instant::now();
    // The caller says nothing at all.
    let closed = call.closed_while_silent(Duration::from_secs(12)).await.expect("the agent hangs up on silence");
    assert_eq!(closed.reason, "caller_silent");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(6) && waited < Duration::from_secs(10), "asked after 3 s, goodbye 3 s later: {waited:?}");
    {
        let log = a.fake.log();
        let creates = log.of_kind("response.create");
        assert_eq!(creates.len(), 3, "greeting, are you there, goodbye");
        assert!(creates[1]["response"]["instructions"].as_str().unwrap().contains("still on the line"));
    }
    assert_eq!(a.app.stores.calls.get_call(&sid).await.unwrap().unwrap().status, CallStatus::Completed);
}

/// A model that cannot serve the call — it refuses us, its audio is the wrong format, it never
/// opens a session or is down — ends Twilio's stream with 1011; the relay has claimed the
/// fallback, so `<Connect action>` gives the caller the voicemail, well inside 10 s of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_serve_the_call_ends_the_stream_and_the_caller_gets_the_fallback() {
    let cases = [
        // Refused and reverted are not retried: they would fail the same way.
        (Fault::RefuseHandshake, Duration::from_secs(1), "refused the connection", 1),
        (Fault::RevertToPcm, Duration::from_secs(1), "not μ-law both ways", 1),
        // No session, or a model that is down: the first try and one more (2 a minute). (A
        // handshake never answered is never logged by the fake.)
        (Fault::NeverAnswer, Duration::from_secs(8), "tried in the last minute", 0),
        (Fault::Unavailable, Duration::from_secs(2), "tried in the last minute", 2),
    ];
    for (fault, within, reason, tries) in cases {
        let options = Options { fault, script: vec![Plan::say(200, "hi")], ..Options::default() };
        let a = agent(options, &[]).await;
        let started = Instant::now();
        let (sid, mut call) = a.app.start_call().await;
        let closed = call.closed_while_silent(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{fault:?}: the stream is closed"));
        let took = started.elapsed();
        assert_eq!(closed.code, 1011, "{fault:?}: {closed:?}");
        assert!(closed.reason.contains(reason), "{fault:?}: {:?}", closed.reason);
        assert!(took < within, "{fault:?}: closed {took:?} after start");
        assert_eq!(a.fake.log().connections.len(), tries, "{fault:?}: connections tried");
        let c = a.app.stores.calls.get_call(&sid).await.unwrap().unwrap();
        assert_eq!(c.fallback_reason.as_deref(), Some("agent_failed"), "{fault:?}: the relay claimed the fallback");
        let doc = twiml_of(a.app.post("/webhook/stream_ended", &incoming_call_form(sid.as_str(), "+972501234567")).await).await;
        assert!(doc.find("Record").is_some(), "{fault:?}: the caller gets the voicemail fallback");
    }
}

/// The events of the `n`th connection (0-based): from its `session.update` to the next one.
fn session_events(log: &callkeeper::fake_realtime::Log, n: usize) -> Vec<serde_json::Value> {
    let starts: Vec<usize> = log.events.iter().enumerate().filter(|(_, e)| e.event["type"] == "session.update").map(|(i, _)| i).collect();
    let from = starts[n];
    let to = starts.get(n + 1).copied().unwrap_or(log.events.len());
    log.events[from..to].iter().map(|e| e.event.clone()).collect()
}

/// When the model's socket goes (a drop, or `session_expired`), the same stream goes on with
/// a new session seeded with the conversation: the greeting replayed as the agent's text, a
/// note not to greet again; what the caller said in the gap reaches the new session and is
/// answered; the caller heard no more than a short gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_goes_away_is_resumed_with_the_conversation_and_the_caller_s_words() {
    let greeting = "שלום, כאן הסוכן הדיגיטלי. במה אפשר לעזור?";
    for fault in [Fault::DropAfter(Duration::from_millis(300)), Fault::FatalAfter(Duration::from_millis(300))] {
        let options = Options { fault, script: vec![Plan::say(600, greeting)], ..Options::default() };
        let a = agent(options, &[]).await;
        let (sid, mut call) = a.app.start_call().await;
        assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await, "{fault:?}: the greeting plays");
        call.silence(Duration::from_millis(500)).await;
        // The fault strikes 300 ms after the greeting's response; the caller speaks into the gap.
        let heard_before = call.heard().spans.len();
        call.speak(caller_audio("he")).await;
        let spoke_until = Instant::now();
        call.silence(Duration::from_millis(900)).await;
        let answered = call.wait_heard(Duration::from_secs(5), |h| h.spans.len() > heard_before).await;
        assert!(answered, "{fault:?}: the caller's words are answered by the new session: {:#?}", {
            let log = a.fake.log();
            (
                log.connections.len(),
                log.events.iter().map(|e| e.event["type"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>(),
                call.heard().spans,
            )
        });
        call.silence(Duration::from_millis(800)).await;
        call.stop();
        assert_eq!(a.app.figures(&sid).await.end, StreamEnd::TwilioStop, "{fault:?}: the stream went on to the end");

        let (connections, struck, resumed, violations) = {
            let log = a.fake.log();
            (log.connections.len(), log.faulted_at, session_events(&log, 1), log.violations.clone())
        };
        assert_eq!(connections, 2, "{fault:?}: one new session");
        let struck = struck.expect("the fault struck");
        let items: Vec<&serde_json::Value> =
            resumed.iter().filter(|e| e["type"] == "conversation.item.create").map(|e| &e["item"]).collect();
        assert_eq!(items[0]["role"], "assistant", "{fault:?}: {items:?}");
        assert_eq!(items[0]["content"][0], json!({ "type": "output_text", "text": greeting }), "{fault:?}");
        let note = items.iter().find(|i| i["role"] == "system").expect("the note");
        assert!(note["content"][0]["text"].as_str().unwrap().contains("Do not greet"), "{note}");
        assert!(
            resumed.iter().all(|e| e["type"] != "response.create" || e["response"]["instructions"] != json!(greeting)),
            "{fault:?}: the agent does not greet again"
        );
        assert!(violations.is_empty(), "{violations:?}");

        // What the caller heard: the answer came within 1.5 s of the fault's moment or the
        // caller's last word, whichever was later.
        let heard = call.heard();
        let answer = heard.spans.iter().find(|s| s.start > struck).expect("audio after the fault");
        let gap = answer.start.duration_since(struck.max(spoke_until.into()));
        assert!(gap < Duration::from_millis(1500), "{fault:?}: {gap:?} from the fault or the caller's last word to the answer");
        let turns = a.app.stores.calls.turns(&sid).await.unwrap();
        assert!(turns.iter().any(|t| t.caller_text.as_deref() == Some("שלום, אני מחפש דירה בחיפה")), "{fault:?}: {turns:?}");
        let events = a.app.stores.calls.events(&sid).await.unwrap();
        let seeded = events.iter().find(|e| e.kind == "model_session").expect("the resume is an event on the call");
        assert_eq!(seeded.detail["lines_replayed"], 1, "{seeded:?}");
    }
}

/// After replayed assistant text a model may answer in text only: the agent sees a response
/// with no audio, deletes the replayed items, gives the history again as one user message and
/// asks again; the caller hears an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_that_answers_in_text_is_given_the_history_as_one_message() {
    let options = Options {
        fault: Fault::DropAfter(Duration::from_millis(300)),
        script: vec![Plan::say(600, "שלום")],
        text_after_replayed_assistant: true,
        ..Options::default()
    };
    let a = agent(options, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await);
    call.silence(Duration::from_millis(500)).await;
    let before = call.heard().spans.len();
    caller_turn(&mut call).await;
    assert!(call.wait_heard(Duration::from_secs(6), |h| h.spans.len() > before).await, "an answer with audio after the recovery");
    call.stop();
    let resumed = session_events(&a.fake.log(), 1);
    let deleted: Vec<&str> =
        resumed.iter().filter(|e| e["type"] == "conversation.item.delete").filter_map(|e| e["item_id"].as_str()).collect();
    assert!(deleted.len() >= 2, "the replayed line and note are deleted: {deleted:?}");
    let packed = resumed
        .iter()
        .filter(|e| e["type"] == "conversation.item.create")
        .find(|e| e["item"]["role"] == "user" && e["item"]["content"][0]["text"].as_str().unwrap_or("").contains("conversation so far"))
        .expect("the history as one user message");
    assert!(packed["item"]["content"][0]["text"].as_str().unwrap().contains("שלום"), "{packed}");
    assert_eq!(a.app.figures(&sid).await.end, StreamEnd::TwilioStop);
}

/// A session `REALTIME_ROTATE_SECS` old is replaced at a quiet moment, seeded like a resume;
/// the call goes on and the agent does not greet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_session_is_replaced_at_a_quiet_moment() {
    let a = agent(script(vec![Plan::say(400, "שלום")]), &[("REALTIME_ROTATE_SECS", "2")]).await;
    let (sid, mut call) = a.app.start_call().await;
    call.silence(Duration::from_millis(2800)).await;
    wait_for("a second session", Duration::from_secs(3), async || a.fake.log().connections.len() == 2).await;
    let before = call.heard().spans.len();
    caller_turn(&mut call).await;
    assert!(call.wait_heard(Duration::from_secs(4), |h| h.spans.len() > before).await, "the new session answers");
    call.stop();
    {
        let log = a.fake.log();
        let resumed = session_events(&log, 1);
        assert!(resumed.iter().any(|e| e["type"] == "conversation.item.create" && e["item"]["role"] == "assistant"), "{resumed:?}");
        assert!(resumed.iter().filter(|e| e["type"] == "response.create").all(|e| e["response"]["instructions"] != json!("שלום")));
    }
    assert_eq!(a.app.figures(&sid).await.end, StreamEnd::TwilioStop);
}

/// A model that goes away and then refuses every new session: the relay gives up after its
/// tries and the caller gets the fallback, within 10 s of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_goes_down_for_good_gives_the_fallback() {
    let a = agent(Options { fault: Fault::DownAfter(Duration::from_millis(300)), ..Options::default() }, &[]).await;
    let (sid, mut call) = a.app.start_call().await;
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await);
    let closed = call.closed_while_silent(Duration::from_secs(10)).await.expect("the stream is closed");
    assert_eq!(closed.code, 1011, "{closed:?}");
    let silent = call.heard().last_media_at.unwrap().elapsed();
    assert!(silent < Duration::from_secs(10), "{silent:?}");
    let c = a.app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!(c.fallback_reason.as_deref(), Some("agent_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_chosen_by_the_number_called() {
    let a = agent(Options::default(), &[]).await;
    let schema = callkeeper_core::config::default_extraction_schema();
    let mut sales = AgentProfile::builtin("en-US", &schema);
    sales.instructions = "You sell flats in Haifa for Dana Realty.".into();
    sales.voice = "cedar".into();
    let mut default = AgentProfile::builtin("he-IL", &schema);
    default.voice = "ash".into();
    let calls = &a.app.stores.calls;
    calls.put_profile(&ProfileKey::Number(E164::parse("+97231234567").unwrap()), &sales, 1).await.unwrap();
    calls.put_profile(&ProfileKey::Default, &default, 1).await.unwrap();

    // A call to the number with its own profile, then one to another number.
    let (_, call) = a.app.start_call().await;
    assert!(call.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await);
    call.stop();
    let sid = CallSid::parse(&new_call_sid()).unwrap();
    let mut form = incoming_call_form(sid.as_str(), "+972501234567");
    form.iter_mut().filter(|(k, _)| k == "To" || k == "Called").for_each(|(_, v)| *v = "+97239999999".into());
    let twiml = twiml_of(a.app.post("/webhook/incoming_call", &form).await).await;
    let parameters: Vec<(String, String)> = twiml
        .find("Stream")
        .unwrap()
        .children
        .iter()
        .map(|p| (p.attr("name").unwrap().to_string(), p.attr("value").unwrap().to_string()))
        .collect();
    let other = a.app.dial().await.unwrap();
    other.connected();
    other.start(sid.as_str(), ACCOUNT_SID, &parameters);
    assert!(other.wait_heard(Duration::from_secs(3), |h| h.media_frames > 0).await);

    let log = a.fake.log();
    let updates = log.of_kind("session.update");
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["session"]["audio"]["output"]["voice"], "cedar");
    assert!(updates[0]["session"]["instructions"].as_str().unwrap().starts_with("You sell flats in Haifa"));
    assert_eq!(updates[1]["session"]["audio"]["output"]["voice"], "ash");
    assert!(updates[1]["session"]["instructions"].as_str().unwrap().contains("עברית"));
}
