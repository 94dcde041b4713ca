//! The media relay as Twilio meets it: a signed WebSocket on the same port as the webhooks, the
//! frames of a real call, and what the store holds afterwards.

use crate::common;

use callkeeper::media_client::{media_frame, Refused};
use callkeeper::simulate::caller_audio;
use callkeeper_core::call::{CallPatch, CallStatus};
use callkeeper_core::ids::CallSid;
use callkeeper_core::stream_report::StreamEnd;
use callkeeper_core::stream_token;
use callkeeper_core::time::now_ms;
use callkeeper_relay::agent::{AgentError, AgentLink, AgentOutput, CallInfo, VoiceAgent};
use common::*;
use std::sync::Arc;
use std::time::Duration;

const SILENCE: [u8; 160] = [0xFF; 160];
const SILENT: &[(&str, &str)] = &[("VOICE_AGENT", "silent")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hears_the_greeting_and_an_answer_with_heartbeats_turns_and_figures_in_the_store() {
    // GIVEN the embedded agent, with a heartbeat every second.
    let app = spawn_app_with(&[("HEARTBEAT_INTERVAL_SECS", "1"), ("HEARTBEAT_STALE_SECS", "3"), ("AGENT_LANGUAGE", "en-US")]).await;

    // WHEN Twilio opens the stream, offering its subprotocol.
    let (sid, mut call) = app.start_call().await;
    assert_eq!(call.subprotocol.as_deref(), Some("audio.twilio.com"), "offered, so echoed");

    // THEN the greeting plays, paced and marked, while the caller's line sends silence.
    call.silence(Duration::from_millis(1500)).await;
    let early = call.heard();
    assert!(early.media_frames > 0, "the greeting began");
    assert!(early.media_frames <= 1500 / 20 + 10, "paced in real time, not dumped: {} frames in 1.5 s", early.media_frames);
    let streaming = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!(streaming.status, CallStatus::Streaming);
    assert!(streaming.stream_sid.as_deref() == Some(call.stream_sid.as_str()) && streaming.relay_instance.is_some());
    assert!(streaming.heartbeat_at.is_some(), "a heartbeat within the first 1.5 s");
    call.silence(Duration::from_secs(3)).await;

    // WHEN the caller speaks, then is quiet.
    let greeting_frames = call.heard().media_frames;
    call.speak(caller_audio("en")).await;
    call.silence(Duration::from_millis(1500)).await;

    // THEN the agent answers.
    assert!(call.wait_heard(Duration::from_secs(5), |h| h.media_frames > greeting_frames + 50).await, "the answer is heard");
    call.stop();
    let figures = app.figures(&sid).await;
    let heard = call.heard();
    assert_eq!(figures.end, StreamEnd::TwilioStop);
    assert!(figures.frames_in >= 400, "{figures:?}");
    assert_eq!((figures.gaps, figures.bad_frames.len(), figures.barge_ins), (0, 0, 0));
    assert_eq!(figures.frames_out, heard.media_frames, "every frame sent arrived");
    assert!(figures.marks_heard > 0 && figures.marks_heard <= figures.marks_sent);
    assert!(figures.heartbeats >= 5, "one a second: {}", figures.heartbeats);
    assert!(figures.frame_us_p50 > 0 && figures.frame_us_p99 >= figures.frame_us_p50);

    let turns = app.stores.calls.turns(&sid).await.unwrap();
    assert_eq!(turns.len(), 2, "{turns:?}");
    let (greeting, answer) = (&turns[0], &turns[1]);
    assert_eq!((greeting.seq, greeting.caller_stopped_at), (0, None));
    assert!(greeting.first_audio_at.is_some() && greeting.first_mark_at >= greeting.first_audio_at, "{greeting:?}");
    assert_eq!(greeting.agent_text.as_deref(), Some("Hello, you have reached the digital agent. How can I help?"));
    let stopped = answer.caller_stopped_at.expect("the caller's turn ended");
    let first_audio = answer.first_audio_at.expect("the answer left");
    let first_heard = answer.first_mark_at.expect("and was heard");
    assert!(stopped <= first_audio && first_audio <= first_heard, "{answer:?}");
    assert!(first_audio - stopped < 1500, "the answer leaves within the end-of-speech wait: {answer:?}");
    assert!(!answer.interrupted);

    let events: Vec<String> = app.stores.calls.events(&sid).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(events, ["twiml_served", "stream_started", "stream_closed"]);
    // The relay does not decide the call is over: Twilio's status callback or `<Connect action>` does.
    assert_eq!(app.stores.calls.get_call(&sid).await.unwrap().unwrap().status, CallStatus::Streaming);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_frame_is_counted_and_skipped_and_the_stream_survives() {
    let app = spawn_app_with(SILENT).await;
    let (sid, mut call) = app.start_call().await;
    call.media(&SILENCE);
    call.send_text("{not json");
    call.send_text(r#"{"event":"mystery","streamSid":"MZ1"}"#);
    call.send_binary(vec![1, 2, 3]);
    call.send_text(r#"{"event":"media","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40"}}"#);
    call.send_text(media_frame(&call.stream_sid, 3, 60, &SILENCE).replace("\"payload\":\"", "\"payload\":\"!!"));
    call.send_text(format!(r#"{{"event":"media","padding":"{}"}}"#, "x".repeat(70_000)));
    call.send_text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"never-sent"}}"#);
    call.dtmf("5");
    call.lose_frames(3);
    call.silence(Duration::from_millis(200)).await;
    assert_eq!(call.closed(Duration::from_millis(200)).await, None, "the socket is still up");
    call.stop();

    let figures = app.figures(&sid).await;
    assert_eq!(figures.end, StreamEnd::TwilioStop);
    let kinds: Vec<(&str, u64)> = figures.bad_frames.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(kinds, [("bad_payload", 1), ("binary", 1), ("invalid_json", 1), ("malformed", 1), ("oversized", 1), ("unknown_event", 1)]);
    assert_eq!(figures.frames_in, 1 + 10, "the good frames all counted");
    assert_eq!(figures.gaps, 3, "the frames lost on the way (the bad ones were not numbered in the client's sequence)");
    assert_eq!(figures.marks_heard, 0, "an unknown mark is ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subprotocol_is_echoed_only_when_offered() {
    let app = spawn_app_with(SILENT).await;
    let call = app.dial_with(Some(AUTH_TOKEN), false).await.unwrap();
    assert_eq!(call.subprotocol, None);
}

async fn refused_status(result: anyhow::Result<callkeeper::media_client::MediaCall>) -> u16 {
    match result {
        Ok(_) => panic!("the upgrade should be refused"),
        Err(e) => e.downcast_ref::<Refused>().unwrap_or_else(|| panic!("not an HTTP refusal: {e}")).status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_signature_is_refused_before_the_upgrade() {
    let app = spawn_app_with(SILENT).await;
    assert_eq!(refused_status(app.dial_with(Some("not-the-token"), true).await).await, 403);
    assert_eq!(refused_status(app.dial_with(None, true).await).await, 403);
    // The trailing-slash path is served too, and signed over its own URL.
    let dial = callkeeper::media_client::Dial {
        connect_to: app.addr,
        public_url: "wss://relay.example.com/ws/twilio-media/",
        path: "/ws/twilio-media/",
        auth_token: Some(AUTH_TOKEN),
        offer_subprotocol: true,
        tls: false,
    };
    assert!(callkeeper::media_client::MediaCall::dial(&dial, "MZ1").await.is_ok());
}

/// Opens a stream whose `start` carries `parameters`, and returns how the relay closed it.
async fn close_after_start(app: &TestApp, call_sid: &str, parameters: &[(String, String)]) -> (u16, String) {
    let mut call = app.dial().await.unwrap();
    call.connected();
    call.start(call_sid, ACCOUNT_SID, parameters);
    let closed = call.closed(Duration::from_secs(5)).await.expect("the relay closes the socket");
    (closed.code, closed.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_call_a_missing_or_forged_token_or_a_call_that_moved_on_is_refused_with_1008() {
    let app = spawn_app_with(SILENT).await;
    let param = |k: &str, v: &str| (k.to_string(), v.to_string());

    // A valid token, but for a call we never answered.
    let unknown = new_call_sid();
    let token = stream_token::issue(&app.config.stream_token_secret, &CallSid::parse(&unknown).unwrap(), 0);
    let parameters = [param("call_sid", &unknown), param("token", &token)];
    assert_eq!(close_after_start(&app, &unknown, &parameters).await, (1008, "unknown call".into()));

    let known = new_call_sid();
    let good = app.answer(&known).await;
    assert_eq!(close_after_start(&app, &known, &[param("call_sid", &known)]).await, (1008, "missing call_sid or token parameter".into()));
    let forged = [param("call_sid", &known), param("token", "AAAA")];
    assert_eq!(close_after_start(&app, &known, &forged).await, (1008, "invalid stream token".into()));
    let other = new_call_sid();
    assert_eq!(close_after_start(&app, &other, &good).await.0, 1008, "a token for another call");

    // The watchdog moved the call to its fallback before the stream came.
    let sid = CallSid::parse(&known).unwrap();
    app.stores.calls.transition(&sid, &[CallStatus::AwaitingStream], CallStatus::Fallback, &CallPatch::default(), now_ms()).await.unwrap();
    assert_eq!(close_after_start(&app, &known, &good).await, (1008, "call is fallback".into()));
    assert_eq!(app.stores.calls.get_call(&sid).await.unwrap().unwrap().status, CallStatus::Fallback, "and stays there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_speaking_over_the_agent_clears_twilio_and_cuts_the_answer_at_what_was_heard() {
    let app = spawn_app_with(&[("AGENT_LANGUAGE", "en-US")]).await;
    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_millis(1200)).await;
    let before = call.heard();
    assert!(!before.marks_echoed.is_empty(), "part of the greeting was heard");

    // WHEN the caller talks over the greeting.
    call.speak(&caller_audio("en")[..8000]).await;

    // THEN Twilio is told to clear, and the greeting is cut short.
    assert!(call.wait_heard(Duration::from_secs(2), |h| h.clears == 1).await, "a clear was sent");
    call.stop();
    let figures = app.figures(&sid).await;
    assert_eq!(figures.barge_ins, 1);
    assert!(figures.agent_audio_dropped > 0, "the rest of the greeting was dropped");
    let greeting = &app.stores.calls.turns(&sid).await.unwrap()[0];
    let heard_ms = greeting.heard_ms.expect("cut where the marks say");
    assert!(greeting.interrupted && (1000..=1600).contains(&heard_ms), "{greeting:?}");
    let greeting_ms = callkeeper_relay::agent::embedded::EmbeddedAgent::for_language("en").greeting.audio.len() as u64 / 8;
    assert!((call.heard().audio.len() as u64 / 8) < greeting_ms, "the caller never heard the whole greeting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_a_live_call_up_refuses_new_ones_then_closes_it_normally() {
    let mut app = spawn_app_with(&[("VOICE_AGENT", "silent"), ("DRAIN_DEADLINE_SECS", "2")]).await;
    let (long_sid, mut long_call) = app.start_call().await;
    let (short_sid, mut short_call) = app.start_call().await;
    long_call.silence(Duration::from_millis(100)).await;

    // WHEN the server gets its SIGTERM.
    app.shutdown.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // THEN it stops being ready and refuses new streams, but keeps the live ones.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "draining");
    assert_eq!(refused_status(app.dial().await).await, 503);
    assert_eq!(app.get("/healthz").await.status(), 200, "alive, just not taking calls");
    long_call.silence(Duration::from_millis(1000)).await;
    assert_eq!(long_call.closed(Duration::ZERO).await, None, "the live call is still up");

    // A call that ends on its own during the drain ends as usual.
    short_call.silence(Duration::from_millis(100)).await;
    short_call.stop();
    assert_eq!(app.figures(&short_sid).await.end, StreamEnd::TwilioStop);

    // At the deadline the rest are closed normally, so Twilio follows <Connect action>.
    let closed = long_call.closed(Duration::from_secs(3)).await.expect("closed at the deadline");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "relay draining"));
    assert_eq!(app.figures(&long_sid).await.end, StreamEnd::DrainDeadline);
    tokio::time::timeout(Duration::from_secs(5), &mut app.server).await.expect("the server stops after the drain").unwrap();
}

/// Says one line, then ends the call.
struct GoodbyeAgent;

#[async_trait::async_trait]
impl VoiceAgent for GoodbyeAgent {
    fn name(&self) -> &'static str {
        "goodbye"
    }
    async fn converse(&self, _call: CallInfo, link: AgentLink) -> Result<(), AgentError> {
        let audio = bytes::Bytes::from(vec![0x10u8; 160 * 15]);
        let _ = link.output.send(AgentOutput::Audio { response: 1, mulaw: audio, made: tokio::time::Instant::now() }).await;
        let _ = link.output.send(AgentOutput::ResponseDone { response: 1 }).await;
        let _ = link.output.send(AgentOutput::Hangup { reason: "goodbye".into() }).await;
        Ok(())
    }
}

/// Cannot reach its model.
struct BrokenAgent;

#[async_trait::async_trait]
impl VoiceAgent for BrokenAgent {
    fn name(&self) -> &'static str {
        "broken"
    }
    async fn converse(&self, _call: CallInfo, _link: AgentLink) -> Result<(), AgentError> {
        Err(AgentError::Unavailable("model unreachable".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_hangs_up_completes_the_call_once_its_audio_has_played() {
    let app = spawn_app_with_agent(&[], Some(Arc::new(GoodbyeAgent))).await;
    let (sid, mut call) = app.start_call().await;
    let closed = call.closed(Duration::from_secs(5)).await.expect("the relay ends the stream");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "goodbye"));
    assert_eq!(call.heard().media_frames, 15, "the last words were played first");
    assert_eq!(call.heard().marks_echoed.len(), 2);
    let figures = app.figures(&sid).await;
    assert_eq!(figures.end, StreamEnd::AgentHangup);
    let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.end_reason.as_deref()), (CallStatus::Completed, Some("agent_hangup")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_fails_ends_the_stream_so_twilio_moves_on_to_the_fallback() {
    let app = spawn_app_with_agent(&[], Some(Arc::new(BrokenAgent))).await;
    let (sid, mut call) = app.start_call().await;
    let closed = call.closed(Duration::from_secs(5)).await.expect("the relay ends the stream");
    assert_eq!(closed.code, 1011);
    assert_eq!(app.figures(&sid).await.end, StreamEnd::AgentFailed);
    // Twilio then posts <Connect action>: the caller gets the fallback.
    let twiml = twiml_of(app.post("/webhook/stream_ended", &incoming_call_form(sid.as_str(), "+972501234567")).await).await;
    assert!(twiml.find("Record").is_some(), "voicemail fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams() {
    const CALLS: usize = 200;
    const FRAMES: usize = 100;
    let app = Arc::new(spawn_app_with(SILENT).await);
    let mut tasks = Vec::new();
    for _ in 0..CALLS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (sid, mut call) = app.start_call().await;
            call.speak(&[0x7Fu8; 160 * FRAMES]).await;
            call.stop();
            sid
        }));
    }
    let mut sids = Vec::new();
    for task in tasks {
        sids.push(task.await.unwrap());
    }
    for sid in &sids {
        let figures = app.figures(sid).await;
        assert_eq!((figures.frames_in, figures.gaps, figures.end), (FRAMES as u64, 0, StreamEnd::TwilioStop), "{sid}");
        assert!(figures.bad_frames.is_empty());
    }
    for _ in 0..100 {
        if app.relay.drain.live() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.relay.drain.live(), 0, "every session ended");
}

/// Twilio sends a frame every 20 ms: a started stream that goes quiet with its socket open has
/// lost its media, and the relay ends it itself, so `<Connect action>` gives the fallback within
/// about `MEDIA_SILENCE_SECS` of the last frame instead of the watchdog's stale age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_no_frames_for_the_silence_limit_is_ended_by_the_relay() {
    let app = spawn_app_with(&[("VOICE_AGENT", "silent")]).await;
    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_millis(500)).await;
    let last_frame = std::time::Instant::now();
    let closed = call.closed(Duration::from_secs(6)).await.expect("the relay closed the quiet stream");
    let after = last_frame.elapsed();
    assert_eq!((closed.code, closed.reason.as_str()), (1011, "no media from Twilio"));
    assert!(after >= Duration::from_millis(2900) && after < Duration::from_millis(4500), "closed {after:?} after the last frame");
    assert_eq!(app.figures(&sid).await.end, StreamEnd::MediaSilent);
    // What Twilio does next: `<Connect action>`, and the caller gets the fallback.
    let form = ended_form(sid.as_str(), &[]);
    let twiml = twiml_of(app.post("/webhook/stream_ended", &form).await).await;
    assert!(twiml.find("Record").is_some());
    // A new stream would not bring Twilio's media back: the relay claimed the fallback itself.
    let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!(stored.fallback_reason.as_deref(), Some("media_silent"));
    let events = app.stores.calls.events(&sid).await.unwrap();
    let fallback = events.iter().find(|e| e.kind == "fallback").unwrap();
    assert_eq!(fallback.detail["by"], "relay");
}

/// Draining, a call Twilio will not move (its REST API answers 500) stays on this relay at its
/// own generation; at the deadline its socket is closed, and its `<Connect action>` continues it
/// on a new stream rather than ignoring it or falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_twilio_will_not_move_stays_and_continues_through_connect_action() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let twilio = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&twilio).await;
    let mut app = spawn_app_with(&[
        ("VOICE_AGENT", "silent"),
        ("DRAIN_DEADLINE_SECS", "5"),
        ("DRAIN_MOVE_SECS", "1"),
        ("TWILIO_API_BASE", &twilio.uri()),
    ])
    .await;
    let (sid, mut call) = app.start_call().await;
    call.silence(Duration::from_millis(200)).await;
    app.shutdown.take().unwrap().send(()).unwrap();
    // The quiet call is tried at once; Twilio refuses (after the client's retries), and the call
    // goes back to this stream.
    let mut back = None;
    for _ in 0..30 {
        call.silence(Duration::from_millis(100)).await;
        let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
        if !twilio.received_requests().await.unwrap().is_empty() && stored.status == CallStatus::Streaming {
            back = Some(stored.generation);
            break;
        }
    }
    assert_eq!(back, Some(0), "the relay asked Twilio to move the call, and the call is back on this stream");
    // The webhooks run apart from the relay (Lambda beside Fargate): a server of their own on the
    // same store answers Twilio once this relay, drained, has stopped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhooks = listener.local_addr().unwrap();
    let apart = callkeeper_relay::Relay::new(app.config.clone(), app.stores.calls.clone());
    let served = callkeeper::server::app_with(app.config.clone(), app.stores.clone(), apart, None);
    tokio::spawn(callkeeper::server::serve(listener, served, std::future::pending::<()>()));
    let closed = call.closed_while_silent(Duration::from_secs(6)).await.expect("closed at the deadline");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "relay draining"));
    let answer = post_signed_to(&app.client, webhooks, "/webhook/stream_ended", &ended_form(sid.as_str(), &[])).await;
    let twiml = twiml_of(answer).await;
    assert_eq!(twiml.names(), ["Connect"], "the conversation continues on a new stream");
    let stored = app.stores.calls.get_call(&sid).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.generation, stored.fallback_reason), (CallStatus::AwaitingStream, 1, None));
    tokio::time::timeout(Duration::from_secs(5), &mut app.server).await.expect("the server stops after the drain").unwrap();
}
