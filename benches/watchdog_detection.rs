//! Benchmark (not a test): how fast the watchdog finds a stale call and redirects it, and what a
//! pass reads from the store.
//!
//! 1. Streams that never start: calls answered at random moments with production timeouts
//!    (start 8 s, a pass every second); detection = the redirect request minus the moment the
//!    call became stale. A fake Twilio (wiremock, loopback) takes the redirects.
//! 2. Media that stops: calls stream media for 2 s through the real relay, then go quiet with the
//!    socket open. The relay ends such a stream itself (`MEDIA_SILENCE_SECS`, 3 s); measured
//!    from the caller's last media to the fallback TwiML `stream_ended` serves (what Twilio
//!    asks next), which is what the caller lives through.
//! 3. A relay that hangs: the same, with the relay's own limit out of reach (60 s), so only the
//!    watchdog can act (heartbeat every 4 s, stale after 7 s): it moves the call to a new
//!    stream (`watchdog_reconnected`; timed to that first move, not to the fallback redirect
//!    that follows when the benchmark's caller never opens the new stream). Reported from the
//!    stale moment and from the caller's last media.
//! 4. A pass over many healthy active calls: store reads and time.
//!
//! `cargo bench --bench watchdog_detection` (or `-- --calls 300`).

#[path = "../tests/api/common/mod.rs"]
mod common;

use callkeeper_core::ids::CallSid;
use callkeeper_core::watchdog::Watchdog;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn pct(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut values: Vec<i64>) {
    values.sort_unstable();
    println!(
        "{name:<46} n={:<4} p50={} ms  p90={} ms  p99={} ms  max={} ms",
        values.len(),
        pct(&values, 0.5),
        pct(&values, 0.9),
        pct(&values, 0.99),
        values.last().unwrap()
    );
}

async fn fake_twilio() -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "sid": "CA", "status": "in-progress" })))
        .mount(&twilio)
        .await;
    twilio
}

fn watchdog(app: &TestApp) -> Watchdog {
    Watchdog::new(app.stores.calls.clone(), app.config.twilio_rest(), app.config.clone())
}

/// The detail of the call's first `kind` event (the watchdog's move, with its times).
async fn watchdog_event(app: &TestApp, sid: &CallSid, kind: &str) -> serde_json::Value {
    for _ in 0..3000 {
        if let Some(e) = app.stores.calls.events(sid).await.unwrap().into_iter().find(|e| e.kind == kind) {
            return e.detail;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{sid} never had {kind}");
}

async fn never_started(calls: usize) {
    let twilio = fake_twilio().await;
    let app = Arc::new(spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("VOICE_AGENT", "silent")]).await);
    let dog = watchdog(&app);
    tokio::spawn(async move { dog.run_for(Duration::from_secs(3600)).await });
    // Answer calls at random moments over 10 s, so their deadlines fall anywhere between passes.
    let mut sids = Vec::new();
    for i in 0..calls {
        let sid = new_call_sid();
        app.answer(&sid).await;
        sids.push(CallSid::parse(&sid).unwrap());
        let mut b = [0u8; 2];
        callkeeper_core::secrets::fill_random(&mut b);
        tokio::time::sleep(Duration::from_micros(u64::from(u16::from_le_bytes(b)) % (20_000_000 / calls as u64 + 1))).await;
        let _ = i;
    }
    let mut detection = Vec::new();
    let mut twilio_ms = Vec::new();
    for sid in &sids {
        let detail = watchdog_event(&app, sid, "watchdog_redirected").await;
        detection.push(detail["times"]["detection_ms"].as_i64().unwrap());
        twilio_ms.push(detail["times"]["twilio_ms"].as_i64().unwrap());
    }
    report("never started: stale → redirect request", detection);
    report("never started: redirect request → Twilio's answer", twilio_ms);
}

async fn media_stops(calls: usize) {
    let twilio = fake_twilio().await;
    let app = Arc::new(spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("VOICE_AGENT", "silent")]).await);
    let mut tasks = Vec::new();
    for i in 0..calls {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 5_000 / calls as u64)).await;
            let (sid, mut call) = app.start_call().await;
            call.silence(Duration::from_secs(2)).await;
            let last_media = Instant::now();
            call.closed(Duration::from_secs(30)).await.expect("the relay ends the quiet stream");
            let twiml = twiml_of(app.post("/webhook/stream_ended", &ended_form(sid.as_str(), &[])).await).await;
            assert!(twiml.find("Record").is_some(), "the fallback");
            last_media.elapsed().as_millis() as i64
        }));
    }
    let mut from_silence = Vec::new();
    for t in tasks {
        from_silence.push(t.await.unwrap());
    }
    report("media stopped: last media → fallback TwiML", from_silence);
}

async fn relay_hangs(calls: usize) {
    let twilio = fake_twilio().await;
    let app =
        Arc::new(spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("VOICE_AGENT", "silent"), ("MEDIA_SILENCE_SECS", "60")]).await);
    let dog = watchdog(&app);
    let watching = tokio::spawn(async move { dog.run_for(Duration::from_secs(3600)).await });
    let mut tasks = Vec::new();
    for i in 0..calls {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 5_000 / calls as u64)).await;
            let (sid, mut call) = app.start_call().await;
            call.silence(Duration::from_secs(2)).await;
            let last_media = callkeeper_core::time::now_ms();
            let detail = watchdog_event(&app, &sid, "watchdog_reconnected").await;
            drop(call);
            (detail["times"]["detection_ms"].as_i64().unwrap(), detail["times"]["requested_at"].as_i64().unwrap() - last_media)
        }));
    }
    let (mut from_stale, mut from_silence) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.unwrap();
        from_stale.push(a);
        from_silence.push(b);
    }
    // Its moved calls never open their new stream, so left watching it would redirect them to
    // the fallback 8 s on, into whichever test server wiremock hands out next.
    watching.abort();
    report("relay hangs: stale → move request", from_stale);
    report("relay hangs: caller's last media → move request", from_silence);
}

async fn pass_over_healthy_calls(calls: usize) {
    let twilio = fake_twilio().await;
    // A start timeout no call reaches: every call is active and healthy.
    let app = spawn_app_with(&[("TWILIO_API_BASE", &twilio.uri()), ("STREAM_START_TIMEOUT_SECS", "120")]).await;
    for _ in 0..calls {
        app.answer(&new_call_sid()).await;
    }
    let dog = watchdog(&app);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..20 {
        let t = Instant::now();
        last = Some(dog.pass().await.unwrap());
        times.push(t.elapsed().as_micros() as i64);
    }
    let last = last.unwrap();
    times.sort_unstable();
    println!(
        "pass over {} healthy active calls: {} store read(s) ({:.4} per active call), {} writes, {} redirects; p50 {:.2} ms, max {:.2} ms per pass",
        last.active,
        last.store_reads,
        last.store_reads as f64 / last.active as f64,
        last.store_writes,
        twilio.received_requests().await.unwrap().len(),
        pct(&times, 0.5) as f64 / 1000.0,
        *times.last().unwrap() as f64 / 1000.0
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.iter().position(|a| a == "--calls").and_then(|i| args.get(i + 1)).map_or(300, |n| n.parse().unwrap());
    println!(
        "watchdog detection, production timeouts (start 8 s, media silence 3 s, heartbeat 4 s, stale 7 s, a pass every second), embedded store, fake Twilio on loopback"
    );
    never_started(calls).await;
    media_stops(calls / 3).await;
    relay_hangs(calls / 3).await;
    for n in [1_000, 10_000] {
        pass_over_healthy_calls(n).await;
    }
}
