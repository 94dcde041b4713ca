//! Benchmark (not a test): the AI agent's latencies as the caller feels them.
//!
//! Starts the release `callkeeper serve` with the Realtime agent, talking to the fake Realtime
//! server (`callkeeper::fake_realtime`, in this process) over loopback, and plays calls from
//! here with the media client (a phone that plays in real time and echoes marks). Reports:
//!
//! - start → the greeting's first frame at the phone (the model's session opened, configured,
//!   the greeting asked for and its first audio relayed);
//! - barge-in → `clear`: 60 ms of caller speech sent at once (what the fake's VAD needs to call
//!   it speech) to the phone's `clear`: the relay → model → agent → relay → phone round;
//! - the model failing for good → Twilio's stream closed (1011): from the fault (a drop after
//!   which every new session is refused, a refused handshake) to the phone seeing the close;
//! - a business tool (a profile's HTTP tool, answered at once by [`callkeeper::fake_business`]):
//!   the model's function call sent → the request at the business (the arguments checked, the
//!   body signed and posted), and the business's answer sent → the function's output at the
//!   model: the relay's own time on each side of the business, loopback included.
//!
//! The fake answers at once, so these are callkeeper's own shares; OpenAI's model time adds to
//! the greeting and each turn. `cargo bench --bench agent_latency` (`-- --calls 20`).

use callkeeper::fake_realtime::{FakeRealtime, Fault, Options, Plan};
use callkeeper::media_client::{Dial, MediaCall};
use callkeeper_core::config::Config;
use callkeeper_core::ids::random_sid;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_callkeeper");

struct Server {
    child: Child,
    addr: SocketAddr,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOOLS_SECRET: &str = "bench-tools-secret-0123456789";

fn start_server(fake: &FakeRealtime) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    for name in ["PUBLIC_BASE_URL", "RELAY_PUBLIC_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PORT", "VOICE_AGENT"] {
        command.env_remove(name);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--port", "0"])
        .env("OPENAI_API_KEY", "sk-fake")
        .env("OPENAI_REALTIME_URL", fake.url())
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env("TOOLS_WEBHOOK_SECRET", TOOLS_SECRET)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let addr: SocketAddr = first.rsplit(' ').next().unwrap().parse().unwrap();
    let (config, _) = callkeeper::local_config::resolve(dir.path(), addr).unwrap();
    Server { child, addr, config: Arc::new(config), _dir: dir }
}

/// A call answered and its stream started; returns the phone and when `start` left.
async fn call(server: &Server) -> (MediaCall, Instant) {
    let sid = random_sid("CA");
    let answered = callkeeper::simulate::ring(&reqwest::Client::new(), &server.config, server.addr, &sid, "+972501234567", "+97231234567")
        .await
        .unwrap();
    let token = server.config.twilio_auth_token.expose().to_string();
    let dial = Dial {
        connect_to: server.addr,
        public_url: &answered.stream_url,
        path: &answered.path,
        auth_token: Some(&token),
        offer_subprotocol: true,
        tls: false,
    };
    let call = MediaCall::dial(&dial, &random_sid("MZ")).await.unwrap();
    call.connected();
    let started = Instant::now();
    call.start(&sid, server.config.twilio_account_sid.as_str(), &answered.parameters);
    (call, started)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what:<58} n={:<3} p50={:>6.1} ms  p90={:>6.1} ms  p99={:>6.1} ms  max={:>6.1} ms",
        samples.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}

async fn greeting(calls: usize) {
    let fake = FakeRealtime::start(Options::default()).await.unwrap();
    let server = start_server(&fake);
    let mut samples = Vec::new();
    for _ in 0..calls {
        let (call, started) = call(&server).await;
        assert!(call.wait_heard(Duration::from_secs(5), |h| h.first_media_at.is_some()).await, "no greeting");
        samples.push(ms(call.heard().first_media_at.unwrap() - started));
        call.stop();
    }
    report("start → the greeting's first frame at the phone", samples);
}

async fn barge_in(calls: usize) {
    // A long greeting, so the caller always cuts into it.
    let options = Options { script: vec![Plan::say(8000, "a long greeting")], ..Options::default() };
    let fake = FakeRealtime::start(options).await.unwrap();
    let server = start_server(&fake);
    let loud: Vec<u8> = (0..160).map(|i| callkeeper_core::mulaw::encode((8000.0 * (i as f64 * 0.3).sin()) as i16)).collect();
    let mut samples = Vec::new();
    for _ in 0..calls {
        let (mut call, _) = call(&server).await;
        assert!(call.wait_heard(Duration::from_secs(5), |h| h.media_frames >= 25).await, "no greeting");
        // 60 ms of speech at once: the fake's VAD calls it speech on the third frame, so what is
        // measured is the relay and the agent, not the VAD's wait.
        let voiced = Instant::now();
        for _ in 0..3 {
            call.media(&loud);
        }
        assert!(call.wait_heard(Duration::from_secs(3), |h| h.clears > 0).await, "no barge-in");
        samples.push(ms(call.heard().cleared_at[0] - voiced));
        call.stop();
    }
    report("barge-in: 60 ms of caller speech sent → clear at the phone", samples);
}

async fn failure(calls: usize, fault: Fault, what: &str) {
    let fake = FakeRealtime::start(Options { fault, ..Options::default() }).await.unwrap();
    let server = start_server(&fake);
    let mut samples = Vec::new();
    for _ in 0..calls {
        fake.log().faulted_at = None;
        let (mut call, started) = call(&server).await;
        let closed = call.closed_while_silent(Duration::from_secs(10)).await;
        let at = Instant::now();
        let closed = closed.expect("the stream is closed");
        assert_eq!(closed.code, 1011, "{closed:?}");
        let from = fake.log().faulted_at.unwrap_or(started);
        samples.push(ms(at - from));
    }
    report(what, samples);
}

async fn tool_call(calls: usize) {
    // The model "greets" by calling the tool, then speaks about its answer.
    let options = Options {
        script: vec![Plan::call("check_availability", serde_json::json!({ "listing": "הרצל 12" })), Plan::say(300, "פנויה")],
        ..Options::default()
    };
    let fake = FakeRealtime::start(options).await.unwrap();
    let business = callkeeper::fake_business::FakeBusiness::start(TOOLS_SECRET).await.unwrap();
    let server = start_server(&fake);
    let profile = server._dir.path().join("agent.toml");
    std::fs::write(
        &profile,
        format!(
            "instructions = \"x\"\n[[tools]]\nname = \"check_availability\"\ndescription = \"availability\"\nurl = \"{}\"\n[tools.parameters]\ntype = \"object\"\nrequired = [\"listing\"]\n[tools.parameters.properties.listing]\ntype = \"string\"\n",
            business.url("fast")
        ),
    )
    .unwrap();
    let set = Command::new(BIN).arg("--data-dir").arg(server._dir.path()).args(["agent", "set"]).arg(&profile).output().unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let (mut out, mut back) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let (call, _) = call(&server).await;
        let answered = async || fake.log().events.iter().any(|e| e.event["item"]["type"] == "function_call_output");
        let until = Instant::now() + Duration::from_secs(5);
        while !answered().await {
            assert!(Instant::now() < until, "no function output");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        call.stop();
        let mut log = fake.log();
        let called = log.function_called_at.drain().map(|(_, at)| at).next().unwrap();
        let output = log.events.iter().find(|e| e.event["item"]["type"] == "function_call_output").unwrap().at;
        log.events.clear();
        drop(log);
        let received = business.received()[i].clone();
        assert!(received.signed);
        out.push(ms(received.at - called));
        back.push(ms(output - received.answered_at.unwrap()));
    }
    report("tool: the model's function call → the request at the business", out);
    report("tool: the business's answer → the function's output at the model", back);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.iter().position(|a| a == "--calls").and_then(|i| args.get(i + 1)).map_or(20, |n| n.parse().unwrap());
    println!("AI agent latencies: release serve + fake Realtime server on loopback, {calls} calls each");
    greeting(calls).await;
    barge_in(calls).await;
    tool_call(calls).await;
    // A drop or `session_expired` alone no longer ends the call (a new session goes on): the
    // model down for good after a drop does, once a new session is refused.
    failure(calls, Fault::DownAfter(Duration::from_millis(300)), "model down for good (drop, then refused) → stream closed 1011").await;
    failure(calls, Fault::RefuseHandshake, "model refuses the handshake: start → stream closed 1011").await;
}
