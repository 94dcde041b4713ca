//! Benchmark (not a test): what an unsigned request costs callkeeper before its 403, at the
//! worst: a body of the maximum size (64 KiB) made of distinct field names.
//!
//! 1. The signature check alone, on the worst form that reaches it (256 distinct fields filling
//!    64 KiB), today's one sort against the per-name scan it replaced (kept here as the "before"
//!    reference, since the code no longer has it); and the scan on the 64 KiB of short distinct
//!    names it used to accept (8,000 fields), which the field cap now refuses before any check.
//! 2. End to end over loopback against `serve`'s router: the 256-field body with a bad signature
//!    (403) and the 8,000-field one (400), and `/healthz` answered meanwhile.
//!
//! `cargo bench --bench signature_cost`.

#[path = "../tests/api/common/mod.rs"]
mod common;

use callkeeper_core::signature::{compute, validate, Algorithm, SignedBody};
use common::*;
use hmac::Mac;
use std::time::{Duration, Instant};

const MAX_BODY: usize = 64 * 1024;
const URL: &str = "https://ck.example.com/webhook/incoming_call";

/// Distinct field names of `name_len` bytes, with short values, filling `MAX_BODY`.
fn worst_form(fields: usize) -> Vec<(String, String)> {
    let per_field = MAX_BODY / fields;
    let name_len = per_field.saturating_sub(4).max(4);
    let form: Vec<(String, String)> = (0..fields).map(|i| (format!("{i:0>name_len$}"), "v".to_string())).collect();
    assert!(body_of(&form).len() <= MAX_BODY, "within the body limit");
    form
}

fn body_of(form: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish()
}

/// The signature as computed before issue 13: for each distinct name, a scan of every field
/// for its values. Quadratic in the number of distinct names.
fn per_name_scan(key: &[u8], url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut data = url.to_string();
    for name in names {
        let mut values: Vec<&str> = params.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        for value in values {
            data.push_str(name);
            data.push_str(value);
        }
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn time_per_call(runs: u32, mut f: impl FnMut()) -> Duration {
    f();
    let started = Instant::now();
    for _ in 0..runs {
        f();
    }
    started.elapsed() / runs
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let key = AUTH_TOKEN.as_bytes();
    let capped = worst_form(256);
    let uncapped = worst_form(8_000);
    println!(
        "signature cost at the worst: 64 KiB bodies of distinct names ({} B for 256 fields, {} B for {} fields)",
        body_of(&capped).len(),
        body_of(&uncapped).len(),
        uncapped.len()
    );
    let bad = compute(b"another-token", Algorithm::HmacSha1, URL, &capped);
    let today = time_per_call(200, || assert!(!validate(key, Algorithm::HmacSha1, URL, SignedBody::Form(&capped), &bad)));
    let before = time_per_call(200, || drop(per_name_scan(key, URL, &capped)));
    let before_uncapped = time_per_call(5, || drop(per_name_scan(key, URL, &uncapped)));
    let today_uncapped = time_per_call(50, || drop(compute(key, Algorithm::HmacSha1, URL, &uncapped)));
    println!("validate, 256 fields (both port variants): {:>10.1} µs", today.as_secs_f64() * 1e6);
    println!("  the per-name scan it replaced (one variant): {:>8.1} µs", before.as_secs_f64() * 1e6);
    println!(
        "{} fields: one sort {:.1} µs; the per-name scan {:.1} ms (now refused by the field cap before either)",
        uncapped.len(),
        today_uncapped.as_secs_f64() * 1e6,
        before_uncapped.as_secs_f64() * 1e3
    );

    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(format!("http://{}/webhook/incoming_call", app.addr))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", "c2lnbmF0dXJl")
            .body(body)
            .send()
    };
    for (form, status, what) in [(&capped, 403, "256 fields, bad signature"), (&uncapped, 400, "8,000 fields")] {
        let body = body_of(form);
        let mut latencies = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let response = post(body.clone()).await.unwrap();
            assert_eq!(response.status(), status);
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "end to end, {what} → {status}: p50 {:.2} ms, p99 {:.2} ms",
            pct(&latencies, 0.5).as_secs_f64() * 1e3,
            pct(&latencies, 0.99).as_secs_f64() * 1e3
        );
    }
}
