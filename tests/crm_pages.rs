//! The web CRM in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which scripts/test.sh installs) driven through WebDriver, against `callkeeper serve` on a data
//! folder where `callkeeper simulate` has just played a call, as a newcomer would.
//!
//! Signs in, finds the simulated call, reads its transcripts, plays its recording (the audio
//! element loads it), checks the page reads right to left, answers a WhatsApp message through
//! the fake Twilio; and is refused: no session, a POST without the CSRF token, five wrong
//! passwords. The screenshots in README are this test's (`CALLKEEPER_SCREENSHOTS=docs`).

use callkeeper::local_config;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_callkeeper");
const PASSWORD: &str = "correct horse battery";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn callkeeper(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for name in
        ["PUBLIC_BASE_URL", "RELAY_PUBLIC_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE", "OPENAI_API_KEY", "PORT"]
    {
        cmd.env_remove(name);
    }
    cmd.arg("--data-dir").arg(dir);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `chromedriver` on a port of its own, once it answers.
async fn chromedriver() -> (Killed, String) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs: apt-get install chromium chromium-driver (scripts/test.sh does)");
    let driver = Killed(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success()) {
            return (driver, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

async fn browser(driver: &str) -> Client {
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": {
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=he",
                     "--autoplay-policy=no-user-gesture-required"]
        }
    }))
    .unwrap();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn sign_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/crm/sign-in")).await.unwrap();
    c.find(Locator::Css("#name")).await.unwrap().send_keys(name).await.unwrap();
    c.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
    c.find(Locator::Css("#submit")).await.unwrap().click().await.unwrap();
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

/// Waits for a click's navigation to land on `want` (WebDriver's click does not wait for it).
async fn wait_path(c: &Client, want: &str) {
    for _ in 0..100 {
        if path_of(c).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser is at {}, not {want}", path_of(c).await);
}

fn screenshot(name: &str, png: &[u8]) {
    let dir = std::env::var("CALLKEEPER_SCREENSHOTS").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crm_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    // A call, played by the simulator against a stack of its own on this folder.
    let played = callkeeper(dir.path()).args(["simulate", "--offline", "--scenario", "happy"]).output().unwrap();
    assert_eq!(played.status.code(), Some(0), "{}", String::from_utf8_lossy(&played.stdout));

    // Twilio's REST API, for the reply sent from the page (and the reply worker's own).
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(|_: &wiremock::Request| {
            // A sid per message, as Twilio gives.
            let sid = format!("SM{}", &callkeeper_core::ids::random_sid("")[..32]);
            ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": sid, "status": "queued" }))
        })
        .mount(&twilio)
        .await;
    let port = free_port();
    let mut serve = callkeeper(dir.path())
        .env("TWILIO_API_BASE", twilio.uri())
        .args(["serve", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(serve.stdout.take().unwrap()).lines();
    assert!(banner.next().unwrap().unwrap().contains("listening"));
    let _serve = Killed(serve);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("http://{addr}");

    // A customer writes on WhatsApp, with a picture, which the reply worker keeps.
    let (config, _) = local_config::resolve(dir.path(), addr).unwrap();
    let message_sid = format!("SM{}", "cd".repeat(16));
    let picture = format!("/2010-04-01/Accounts/{}/Messages/{message_sid}/Media/ME1", config.twilio_account_sid);
    // A 1×1 PNG.
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    )
    .unwrap();
    Mock::given(method("GET"))
        .and(path(picture.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(png, "image/png"))
        .mount(&twilio)
        .await;
    let form: Vec<(String, String)> = [
        ("MessageSid", message_sid.clone()),
        ("AccountSid", config.twilio_account_sid.to_string()),
        ("From", "whatsapp:+972501234567".into()),
        ("To", "whatsapp:+97231234567".into()),
        ("Body", "שלום, אפשר לקבוע פגישה?".into()),
        ("ProfileName", "Dana".into()),
        ("NumMedia", "1".into()),
        ("MediaUrl0", format!("{}{picture}", twilio.uri())),
        ("MediaContentType0", "image/png".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let client = reqwest::Client::new();
    let (status, _) = callkeeper::simulate::post_webhook(&client, &config, addr, "/webhook/whatsapp/inbound", &form).await.unwrap();
    assert!((200..300).contains(&status), "{status}");

    // A user of the CRM.
    let mut add = callkeeper(dir.path()).args(["crm", "user", "add", "dana"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());

    let (_driver, driver_url) = chromedriver().await;
    let c = browser(&driver_url).await;

    // No session: the sign-in page, in Hebrew, right to left.
    c.goto(&format!("{base}/crm/calls")).await.unwrap();
    assert_eq!(path_of(&c).await, "/crm/sign-in");
    let html = c.find(Locator::Css("html")).await.unwrap();
    assert_eq!(html.attr("dir").await.unwrap().as_deref(), Some("rtl"));
    assert_eq!(html.attr("lang").await.unwrap().as_deref(), Some("he"));

    sign_in(&c, &base, "dana", PASSWORD).await;
    wait_path(&c, "/crm/now").await;
    assert_eq!(text_of(&c, "#user").await, "dana");

    // The calls list has the simulated call, as a conversation.
    c.goto(&format!("{base}/crm/calls")).await.unwrap();
    let table = text_of(&c, "#calls").await;
    assert!(table.contains("שיחה עם הסוכן"), "{table}");
    screenshot("crm-calls.png", &c.screenshot().await.unwrap());
    c.find(Locator::Css("a.call-link")).await.unwrap().click().await.unwrap();
    let live = text_of(&c, "#live-transcript").await;
    assert!(path_of(&c).await.starts_with("/crm/calls/CA"));
    assert!(live.contains("סוכן"), "the agent's words, as spoken: {live}");
    let after = text_of(&c, "#transcripts").await;
    assert!(after.contains("(offline) speech"), "the recording's transcript: {after}");

    // The recording plays: the audio element loads it through its signed link.
    let loaded = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const audio = document.querySelector('audio');
             if (!audio) { done({ ok: false, why: 'no audio element' }); return; }
             audio.addEventListener('loadedmetadata', () => done({ ok: true, duration: audio.duration }));
             audio.addEventListener('error', () => done({ ok: false, why: String(audio.error && audio.error.code) }));
             audio.preload = 'auto';
             audio.load();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(loaded["ok"], true, "{loaded}");
    assert!(loaded["duration"].as_f64().unwrap() > 1.0, "{loaded}");
    screenshot("crm-call.png", &c.screenshot().await.unwrap());
    c.refresh().await.unwrap();
    let events = text_of(&c, "#events").await;
    assert!(events.contains("crm_recording_played") && events.contains("dana"), "who listened is an event: {events}");

    // A WhatsApp answer from the page goes out through Twilio.
    c.goto(&format!("{base}/crm/whatsapp")).await.unwrap();
    c.wait().for_element(Locator::Css("#threads a")).await.unwrap().click().await.unwrap();
    assert!(text_of(&c, "#chat").await.contains("אפשר לקבוע פגישה"));
    // The picture shows, from the blob store (serve's reply worker kept it within a second).
    let thread = c.current_url().await.unwrap();
    let mut shown = serde_json::Value::Null;
    for _ in 0..50 {
        shown = c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const img = document.querySelector('img.media');
                 if (!img) { done(null); return; }
                 if (img.complete) { done(img.naturalWidth); } else { img.onload = () => done(img.naturalWidth); img.onerror = () => done(-1); }",
                vec![],
            )
            .await
            .unwrap();
        if shown != serde_json::Value::Null {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.goto(thread.as_str()).await.unwrap();
    }
    assert_eq!(shown, 1, "the 1×1 picture loaded");
    c.find(Locator::Css("#body")).await.unwrap().send_keys("בטח, מחר בעשר?").await.unwrap();
    c.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();
    text_of(&c, "#sent").await;
    assert!(text_of(&c, "#chat").await.contains("בטח, מחר בעשר?"), "the answer is in the thread");
    let sent: Vec<String> = twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/Messages.json"))
        .map(|r| form_urlencoded::parse(&r.body).find(|(k, _)| k == "Body").map(|(_, v)| v.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(sent.iter().filter(|b| *b == "בטח, מחר בעשר?").count(), 1, "sent once: {sent:?}");

    // A POST without the session's CSRF token is refused, even with the session's cookie.
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/crm/operations/redrive', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'queue=replies' })
               .then(r => done(r.status), e => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Signed out, the pages are closed again.
    c.find(Locator::Css(".who button")).await.unwrap().click().await.unwrap();
    wait_path(&c, "/crm/sign-in").await;
    c.goto(&format!("{base}/crm/calls/{}", "CA".to_string() + &"0".repeat(32))).await.unwrap();
    assert_eq!(path_of(&c).await, "/crm/sign-in");

    // Five wrong passwords close the name: the right one is refused after them.
    for _ in 0..5 {
        sign_in(&c, &base, "dana", "not the password").await;
        assert_eq!(text_of(&c, "#problem").await, "שם המשתמש או הסיסמה שגויים");
    }
    sign_in(&c, &base, "dana", PASSWORD).await;
    assert_eq!(path_of(&c).await, "/crm/sign-in");
    assert!(text_of(&c, "#problem").await.contains("יותר מדי ניסיונות"));
    c.close().await.unwrap();
}
