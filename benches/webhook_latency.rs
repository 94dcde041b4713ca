//! Benchmark (not a test): latency of `incoming_call` and `recording_done` on the embedded store,
//! measured at the client over loopback, as Twilio would see it minus the network.
//!
//! `cargo bench --bench webhook_latency` (add `-- --requests 5000 --concurrency 16` to change the load).

#[path = "../tests/api/common/mod.rs"]
mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Stats(Vec<Duration>);

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
    fn report(mut self, name: &str, wall: Duration) {
        self.0.sort();
        println!(
            "{name:<34} n={:<6} p50={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms  throughput={:.0} req/s",
            self.0.len(),
            self.pct(0.50),
            self.pct(0.90),
            self.pct(0.99),
            self.pct(1.0),
            self.0.len() as f64 / wall.as_secs_f64()
        );
    }
}

/// Runs `requests` posts built by `form_for(i)` with `concurrency` in flight; returns each latency.
async fn run(
    app: &Arc<TestApp>,
    path: &'static str,
    requests: usize,
    concurrency: usize,
    form_for: impl Fn(usize) -> Vec<(String, String)>,
) -> (Stats, Duration) {
    let forms: Vec<_> = (0..requests).map(form_for).collect();
    let queue = Arc::new(tokio::sync::Mutex::new(forms.into_iter()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, queue) = (app.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(form) = queue.lock().await.next() else { break };
                let t = Instant::now();
                let response = app.post(path, &form).await;
                let status = response.status();
                let _ = response.bytes().await.unwrap();
                latencies.push(t.elapsed());
                assert!(status.is_success(), "{path}: {status}");
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    (Stats(all), started.elapsed())
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let requests = arg("--requests", 2000);
    let concurrency = arg("--concurrency", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let app = Arc::new(spawn_app().await);
        // Warm the connection pool, the statement cache and the page cache.
        run(&app, "/webhook/incoming_call", 200, 4, |_| incoming_call_form(&new_call_sid(), "+972501234567")).await;

        let sids: Vec<String> = (0..requests).map(|_| new_call_sid()).collect();
        let (stats, wall) = run(&app, "/webhook/incoming_call", requests, 1, |i| incoming_call_form(&sids[i], "+972501234567")).await;
        stats.report("incoming_call, sequential", wall);
        let (stats, wall) =
            run(&app, "/webhook/incoming_call", requests, concurrency, |_| incoming_call_form(&new_call_sid(), "+972501234567")).await;
        stats.report(&format!("incoming_call, {concurrency} in flight"), wall);

        let recording = |i: usize| {
            let rsid = format!("RE{:032x}", i as u128 + (1u128 << 100));
            params(&[
                ("AccountSid", ACCOUNT_SID),
                ("CallSid", &sids[i]),
                ("RecordingSid", &rsid),
                ("RecordingStatus", "completed"),
                ("RecordingUrl", &format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{rsid}")),
                ("RecordingDuration", "64"),
                ("RecordingChannels", "2"),
                ("RecordingSource", "StartCallRecording"),
            ])
        };
        let (stats, wall) = run(&app, "/webhook/recording_done", requests, 1, recording).await;
        stats.report("recording_done, sequential", wall);
        let (stats, wall) = run(&app, "/webhook/recording_done", requests, concurrency, |i| {
            let mut form = recording(i);
            form.retain(|(k, _)| k != "RecordingSid" && k != "RecordingUrl");
            let rsid = format!("RE{:032x}", i as u128 + (1u128 << 101));
            form.push(("RecordingSid".into(), rsid.clone()));
            form.push(("RecordingUrl".into(), format!("https://api.twilio.com/x/{rsid}")));
            form
        })
        .await;
        stats.report(&format!("recording_done, {concurrency} in flight"), wall);
    });
}
