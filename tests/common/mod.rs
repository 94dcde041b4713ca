//! The test harness: the real router on a random loopback port over fresh embedded storage, and
//! a client that signs its posts as Twilio does.

#![allow(dead_code)]

use callkeeper_core::config::Config;
use callkeeper_core::ids::random_sid;
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::store::{embedded, Stores};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    pub stores: Stores,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
}

/// Starts the app with the base settings plus `extra` (`FALLBACK_MODE`, …).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings: HashMap<String, String> = HashMap::from([
        // The public URL Twilio signs is not the one we listen on, as behind API Gateway.
        ("PUBLIC_BASE_URL".into(), "https://ck.example.com".into()),
        ("RELAY_PUBLIC_URL".into(), "wss://relay.example.com".into()),
        ("TWILIO_ACCOUNT_SID".into(), ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
    ]);
    for (k, v) in extra {
        settings.insert(k.to_string(), v.to_string());
    }
    let config = Arc::new(Config::from_lookup(|k| settings.get(k).cloned()).unwrap());
    let data_dir = tempfile::tempdir().unwrap();
    let stores = embedded::open_stores(data_dir.path(), config.queue_max_receives).unwrap();
    let app = callkeeper::server::app(config.clone(), stores.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestApp { addr, config, stores, client: reqwest::Client::new(), data_dir }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

impl TestApp {
    /// Posts a form signed for the public URL of `path`, as Twilio would.
    pub async fn post(&self, path: &str, form: &[(String, String)]) -> reqwest::Response {
        let signature = compute(AUTH_TOKEN.as_bytes(), Algorithm::HmacSha1, &format!("https://ck.example.com{path}"), form);
        self.post_signed(path, form, Some(&signature)).await
    }

    pub async fn post_signed(&self, path: &str, form: &[(String, String)], signature: Option<&str>) -> reqwest::Response {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request =
            self.client.post(format!("http://{}{path}", self.addr)).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("http://{}{path}", self.addr)).send().await.unwrap()
    }
}

/// The fields Twilio posts to the voice URL when a call comes in.
pub fn incoming_call_form(call_sid: &str, from: &str) -> Vec<(String, String)> {
    params(&[
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", "+97231234567"),
        ("Caller", from),
        ("Direction", "inbound"),
        ("From", from),
        ("FromCountry", "IL"),
        ("To", "+97231234567"),
        ("ToCountry", "IL"),
    ])
}

pub fn new_call_sid() -> String {
    random_sid("CA")
}

pub use callkeeper_core::twiml_reader::{parse_twiml, El};

/// Checks a TwiML answer's headers and returns its parsed `<Response>`.
pub async fn twiml_of(response: reqwest::Response) -> El {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = response.text().await.unwrap();
    assert_eq!(length, body.len());
    parse_twiml(&body)
}
