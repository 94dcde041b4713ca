//! Benchmark (not a test): what one core of the relay holds.
//!
//! Starts the real `callkeeper serve` (release build) pinned to CPU 0, and from this process,
//! pinned to CPU 1, plays N concurrent calls at Twilio's real-time pace (50 media frames a second
//! each) for a steady window. Reports, per load, the server's CPU share of its one core (user and
//! system) and per stream-second, its memory per call, the time it spends per inbound frame
//! (p50/p99, from the stream figures it writes), what it adds between Twilio's socket and the
//! model's (the figures' `to_model_us` / `from_model_us`), heartbeat writes per call-minute, and
//! whether every frame was accounted for.
//!
//! With `--agent embedded` the caller speaks for one second every six, so the agent answers and
//! audio flows both ways (paced playback, marks, VAD); with `--agent silent` it only listens.
//! With `--agent openai` the relay holds a second socket per call, to `callkeeper fake-realtime`
//! in its own process on CPU 1 (the Realtime API's events, server VAD, scripted answers): the
//! caller speaks one second in six and the model answers, and the relay's own share of each
//! turn (the model's audio in → the first frame out to Twilio) is reported from the turns.
//!
//! `cargo bench --bench relay_capacity` (or `-- --agent openai --calls 100,250,500 --secs 20`).

use callkeeper::media_client::{Dial, MediaCall};
use callkeeper_core::ids::{random_sid, CallSid};
use callkeeper_core::store::embedded;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The `callkeeper` under load: this build's, or `CALLKEEPER_BENCH_SERVER` (an earlier commit's
/// release binary), for a before and after in the same conditions.
static BIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| std::env::var("CALLKEEPER_BENCH_SERVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_callkeeper").to_string()));

struct Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The fake Realtime API, for `--agent openai`.
    fake: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.fake.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `callkeeper fake-realtime` on CPU 1, beside the callers; its WebSocket URL.
fn start_fake_realtime() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut command = if has_taskset() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", BIN.as_str()]);
        c
    } else {
        Command::new(BIN.as_str())
    };
    let mut child = command.args(["fake-realtime", "--port", &port]).env("RUST_LOG", "warn").stdout(Stdio::piped()).spawn().unwrap();
    BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    (child, format!("ws://127.0.0.1:{port}/v1/realtime"))
}

fn has_taskset() -> bool {
    Command::new("taskset").arg("-V").output().is_ok_and(|o| o.status.success())
}

fn start_server(agent: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = if has_taskset() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", BIN.as_str()]);
        c
    } else {
        Command::new(BIN.as_str())
    };
    for name in ["PUBLIC_BASE_URL", "RELAY_PUBLIC_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PORT", "OPENAI_API_KEY"] {
        command.env_remove(name);
    }
    let fake = (agent == "openai").then(|| {
        let (child, url) = start_fake_realtime();
        // Post-call transcription would go to OpenAI: nowhere, here.
        command.env("OPENAI_API_KEY", "sk-fake").env("OPENAI_REALTIME_URL", url).env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1");
        child
    });
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--port", "0"])
        .env("VOICE_AGENT", agent)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let addr: SocketAddr = first.rsplit(' ').next().unwrap().parse().unwrap();
    Server { child, addr, dir, fake }
}

/// utime and stime of a process, in seconds.
fn cpu_secs(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() / 100.0, fields[12].parse::<f64>().unwrap() / 100.0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

/// The caller's line: silence, or with `speaks`, a loud second every six.
fn caller_frame(frame_index: u64, speaks: bool, tone: &[u8]) -> Vec<u8> {
    if speaks && frame_index % 300 < 50 {
        tone.to_vec()
    } else {
        vec![0xFF; 160]
    }
}

async fn one_call(server: SocketAddr, config: Arc<callkeeper_core::config::Config>, until: Instant, speaks: bool) -> (CallSid, u64) {
    let sid = random_sid("CA");
    let answered =
        callkeeper::simulate::ring(&reqwest::Client::new(), &config, server, &sid, "+972501234567", "+97231234567").await.unwrap();
    let token = config.twilio_auth_token.expose().to_string();
    let dial = Dial {
        connect_to: server,
        public_url: &answered.stream_url,
        path: &answered.path,
        auth_token: Some(&token),
        offer_subprotocol: true,
        tls: false,
    };
    let mut call = MediaCall::dial(&dial, &random_sid("MZ")).await.unwrap();
    call.connected();
    call.start(&sid, config.twilio_account_sid.as_str(), &answered.parameters);
    let tone: Vec<u8> = (0..160).map(|i| callkeeper_core::mulaw::encode((8000.0 * (i as f64 * 0.3).sin()) as i16)).collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < until {
        tokio::time::sleep_until(started + Duration::from_millis(20) * sent as u32).await;
        call.media(&caller_frame(sent, speaks, &tone));
        sent += 1;
    }
    call.stop();
    (CallSid::parse(&sid).unwrap(), sent)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn scenario(agent: &str, calls: usize, steady: Duration) {
    let server = start_server(agent);
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (config, _) = callkeeper::local_config::resolve(server.dir.path(), server.addr).unwrap();
    let config = Arc::new(config);
    let rss_idle = rss_kib(pid);
    let addr = server.addr;

    // Ramp the calls up over two seconds, hold them all for the steady window, then stop them.
    let ramp = Duration::from_secs(2);
    let settle = Duration::from_secs(2);
    let t0 = Instant::now();
    let until = t0 + ramp + settle + steady;
    let speaks = agent != "silent";
    let mut tasks = Vec::new();
    for i in 0..calls {
        let config = config.clone();
        let at = t0 + ramp.mul_f64(i as f64 / calls as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            one_call(addr, config, until, speaks).await
        }));
    }
    tokio::time::sleep_until(t0 + ramp + settle).await;
    let (cpu0, wall0) = (cpu_secs(pid), Instant::now());
    let rss_live = rss_kib(pid);
    tokio::time::sleep_until(until).await;
    let (cpu1, wall) = (cpu_secs(pid), wall0.elapsed().as_secs_f64());
    let (user_share, sys_share) = ((cpu1.0 - cpu0.0) / wall, (cpu1.1 - cpu0.1) / wall);
    let cpu_share = user_share + sys_share;

    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await.unwrap());
    }
    // Whether the callers kept real-time pace: if this core fell behind, the load was less than claimed.
    let expected: f64 = (0..calls).map(|i| (until - (t0 + ramp.mul_f64(i as f64 / calls as f64))).as_secs_f64() * 50.0).sum();
    let pace = sent.iter().map(|(_, n)| *n as f64).sum::<f64>() / expected;
    // Read what the relay wrote about each stream.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stores = embedded::open_stores(server.dir.path(), 5).unwrap();
    let (mut p50s, mut p99s, mut lost, mut beats, mut minutes, mut out) = (vec![], vec![], 0u64, 0u64, 0f64, 0u64);
    let mut relay_share = Vec::new();
    let (mut to_model, mut from_model) = (Vec::new(), Vec::new());
    for (sid, frames) in &sent {
        let call = stores.calls.get_call(sid).await.unwrap().unwrap();
        let f = call.stream.expect("figures written");
        lost += frames.saturating_sub(f.frames_in) + f.gaps;
        p50s.push(f.frame_us_p50);
        p99s.push(f.frame_us_p99);
        beats += f.heartbeats;
        minutes += f.duration_ms() as f64 / 60_000.0;
        out += f.frames_out;
        if f.to_model_us_p99 > 0 {
            to_model.push((f.to_model_us_p50, f.to_model_us_p99));
        }
        if f.from_model_us_p99 > 0 {
            from_model.push((f.from_model_us_p50, f.from_model_us_p99));
        }
        for turn in stores.calls.turns(sid).await.unwrap() {
            if let (Some(model), Some(sent)) = (turn.model_audio_at, turn.first_audio_at) {
                relay_share.push((sent - model).max(0) as u64);
            }
        }
    }
    relay_share.sort_unstable();
    let share = |q: f64| relay_share.get(((relay_share.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
    p99s.sort_unstable();
    // Across calls: the median call's p50, the median call's p99 and the worst call's p99.
    let across = |mut v: Vec<(u64, u64)>| -> String {
        if v.is_empty() {
            return "-".into();
        }
        let p50 = median(v.iter().map(|x| x.0).collect());
        v.sort_unstable_by_key(|x| x.1);
        format!("{}/{}/{}µs", p50, v[v.len() / 2].1, v.last().unwrap().1)
    };
    println!(
        "agent={agent:<8} calls={calls:<4} cpu={:>5.1}% of one core (user {:.1}% sys {:.1}%)  → ~{:>5.0} calls/core  rss/call={:>5.1} KiB  frame p50={}µs p99={}µs (worst call p99 {}µs)  frames lost={lost}  out={out}  heartbeats/call-min={:.1}  all-in CPU/frame={:.1}µs  CPU-ms/stream-s={:.3}  turns={} relay share p50={}ms p99={}ms  to model p50/p99/worst={}  from model p50/p99/worst={}  callers at {:.1}% of real-time pace",
        cpu_share * 100.0,
        user_share * 100.0,
        sys_share * 100.0,
        calls as f64 / cpu_share,
        (rss_live.saturating_sub(rss_idle)) as f64 / calls as f64,
        median(p50s),
        median(p99s.clone()),
        p99s.last().unwrap(),
        beats as f64 / minutes,
        cpu_share * 1e6 / (calls as f64 * 50.0),
        cpu_share * 1e3 / calls as f64,
        relay_share.len(),
        share(0.5),
        share(0.99),
        across(to_model),
        across(from_model),
        pace * 100.0,
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if has_taskset() {
        let _ = Command::new("taskset").args(["-pc", "1", &std::process::id().to_string()]).output();
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let secs: u64 = arg("--secs").map_or(20, |s| s.parse().unwrap());
    let agents: Vec<String> = arg("--agent").map_or(vec!["silent".into(), "embedded".into()], |a| vec![a]);
    let loads: Vec<usize> = arg("--calls").map_or(vec![100, 250, 500], |c| c.split(',').map(|n| n.parse().unwrap()).collect());
    println!("relay capacity: server pinned to CPU 0, callers on CPU 1, {secs} s steady at 50 frames/s per call");
    for agent in &agents {
        for &calls in &loads {
            scenario(agent, calls, Duration::from_secs(secs)).await;
        }
    }
}
