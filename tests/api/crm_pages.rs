//! The web CRM in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which scripts/test.sh installs) driven through WebDriver, against `callkeeper serve` on a data
//! folder where `callkeeper simulate` has just played a call, as a newcomer would.
//!
//! Signs in with the keyboard alone, finds the simulated call, filters by day, reads its
//! transcripts, sees its recording's length and plays it, checks the page reads right to left,
//! answers a WhatsApp message through the fake Twilio; and is refused: no session, a POST
//! without the CSRF token, five wrong passwords. Every page (sign-in, now, calls, a call, a
//! contact, leads, WhatsApp, a thread, operations) is checked by axe-core, for tokens left
//! untranslated and for numbers with units outside a bidi isolate. The screenshots in README are
//! this test's (`CALLKEEPER_SCREENSHOTS=docs`).

use callkeeper::local_config;
use callkeeper_functions::crm::render::TOKENS;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
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

/// Presses keys on whatever has the focus, as a person at the keyboard does.
async fn press(c: &Client, keys: &[char]) {
    let mut actions = KeyActions::new("keyboard".into());
    for &key in keys {
        actions = actions.then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    }
    c.perform_actions(actions).await.unwrap();
}

/// The focused element's id, and whether its focus can be seen (an outline or a ring).
async fn focused(c: &Client) -> (String, bool) {
    let v = c
        .execute(
            "const e = document.activeElement; const s = getComputedStyle(e);
             return [e.id || e.tagName, (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) || s.boxShadow !== 'none'];",
            vec![],
        )
        .await
        .unwrap();
    (v[0].as_str().unwrap().to_string(), v[1].as_bool().unwrap())
}

/// Numbers followed by a unit, outside any bidi isolate (`<bdi>`, `dir="ltr"`): in right-to-left
/// text they would read backwards ("ms 102").
const LOOSE_UNITS: &str = "const found = [];
    const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
      const node = walk.currentNode;
      if (/\\d\\s?(ms|μs|s|KB|MB|GB|%)(?![A-Za-z])/.test(node.textContent) && !node.parentElement.closest('bdi, [dir=ltr], script, style')) {
        found.push(node.textContent.trim().slice(0, 80));
      }
    }
    return found;";

/// What every page of the CRM must be, checked in the browser as it shows: axe-core (the npm
/// package, injected through WebDriver) finds no serious or critical violation, labels on
/// every control among its rules; no token of the store shows untranslated (outside an event's
/// raw detail and code); numbers with units are isolated so they read in order right to left.
async fn audit(c: &Client, page: &str) {
    let text = c
        .execute(
            "const parts = [];
             const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
             while (walk.nextNode()) {
               if (!walk.currentNode.parentElement.closest('details, code, script, style')) parts.push(walk.currentNode.textContent);
             }
             return parts.join(' ');",
            vec![],
        )
        .await
        .unwrap();
    let shown: std::collections::HashSet<&str> =
        text.as_str().unwrap().split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).filter(|w| !w.is_empty()).collect();
    // A token shown is untranslated unless it is itself one of the page language's words for
    // the tokens ("agent" in English's "with the agent").
    let lang = c.find(Locator::Css("html")).await.unwrap().attr("lang").await.unwrap().unwrap_or_default();
    let words: std::collections::HashSet<&str> = TOKENS
        .iter()
        .flat_map(|(_, he, en)| if lang == "he" { *he } else { *en }.split(|ch: char| !(ch.is_alphanumeric() || ch == '_')))
        .collect();
    let untranslated: Vec<&str> =
        TOKENS.iter().map(|(token, _, _)| *token).filter(|token| shown.contains(token) && !words.contains(token)).collect();
    assert!(untranslated.is_empty(), "{page} shows {untranslated:?} untranslated: {text}");
    let loose = c.execute(LOOSE_UNITS, vec![]).await.unwrap();
    assert_eq!(loose, serde_json::json!([]), "{page}: numbers with units outside a bidi isolate");

    let axe =
        std::env::var("CALLKEEPER_TEST_AXE").expect("CALLKEEPER_TEST_AXE names axe.min.js (scripts/test.sh installs axe-core from npm)");
    c.execute(&std::fs::read_to_string(axe).unwrap(), vec![]).await.unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(
               r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => ({ rule: v.id, impact: v.impact, help: v.help, where: v.nodes.slice(0, 3).map(n => n.html) }))),
               e => done('axe failed: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, serde_json::json!([]), "{page}: axe-core finds {found:#}");
}

fn screenshot(name: &str, png: &[u8]) {
    let dir = std::env::var("CALLKEEPER_SCREENSHOTS").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crm_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    // Calls, played by the simulator against a stack of its own on this folder: the newest asks
    // the business's own system (a tool over HTTP).
    let played = callkeeper(dir.path()).args(["simulate", "--offline", "--scenario", "happy,tool-call"]).output().unwrap();
    assert_eq!(played.status.code(), Some(0), "{}", String::from_utf8_lossy(&played.stdout));
    // A lead on the newest call (the one the list opens first): a field the business titled in
    // its number's profile, and a built-in one with no title.
    {
        use callkeeper_core::profile::{AgentProfile, ProfileKey};
        let stores = callkeeper_core::store::embedded::open_stores(dir.path(), 2).unwrap();
        let newest = stores.calls.recent_calls(None, 1).await.unwrap().remove(0);
        let mut schema = callkeeper_core::config::default_extraction_schema();
        schema["properties"]["move_in"] = serde_json::json!({ "type": ["string", "null"], "title": "מועד כניסה" });
        let number = ProfileKey::Number(callkeeper_core::phone::E164::parse("+97231234567").unwrap());
        let now = callkeeper_core::time::now_ms();
        stores.calls.put_profile(&number, &AgentProfile::builtin("he-IL", &schema), now).await.unwrap();
        let lead = serde_json::json!({ "name": "דנה", "move_in": "אוגוסט" });
        stores.calls.save_lead(&newest.call_sid, newest.contact.as_ref(), &lead, now).await.unwrap();
    }

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
    let picture = format!("/2010-04-01/Accounts/{}/Messages/{message_sid}/Media/ME{}", config.twilio_account_sid, "ef".repeat(16));
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

    audit(&c, "sign-in").await;

    // Signed in with the keyboard alone: Tab to each field (its focus visible), Enter to send.
    press(&c, &[Key::Tab.into()]).await;
    assert_eq!(focused(&c).await, ("name".to_string(), true), "the first Tab reaches the name, visibly");
    press(&c, &"dana".chars().chain([Key::Tab.into()]).collect::<Vec<_>>()).await;
    assert_eq!(focused(&c).await, ("password".to_string(), true));
    press(&c, &PASSWORD.chars().chain([Key::Tab.into()]).collect::<Vec<_>>()).await;
    assert_eq!(focused(&c).await, ("submit".to_string(), true));
    press(&c, &[Key::Enter.into()]).await;
    wait_path(&c, "/crm/now").await;
    assert_eq!(text_of(&c, "#user").await, "dana");
    audit(&c, "now").await;

    // The calls list has the simulated call, as a conversation.
    c.goto(&format!("{base}/crm/calls")).await.unwrap();
    let table = text_of(&c, "#calls").await;
    assert!(table.contains("שיחה עם הסוכן"), "{table}");
    screenshot("crm-calls.png", &c.screenshot().await.unwrap());
    audit(&c, "calls").await;
    // The date filters read days as Hebrew writes them, in the business's time zone.
    let placeholder = c.find(Locator::Css("input[name=from]")).await.unwrap().attr("placeholder").await.unwrap();
    assert_eq!(placeholder.as_deref(), Some("dd.mm.yyyy"));
    let today = c.find(Locator::Css("#calls time")).await.unwrap().text().await.unwrap();
    let day = today.split(',').next().unwrap().to_string();
    assert!(day.split('.').count() == 3, "a Hebrew date, day first: {today}");
    c.goto(&format!("{base}/crm/calls?from={day}&to={day}")).await.unwrap();
    assert!(text_of(&c, "#calls").await.contains("שיחה עם הסוכן"), "today's calls, filtered by the day as typed");
    let from = c.find(Locator::Css("input[name=from]")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(from.as_deref(), Some(day.as_str()));
    c.find(Locator::Css("a.call-link")).await.unwrap().click().await.unwrap();
    let live = text_of(&c, "#live-transcript").await;
    assert!(path_of(&c).await.starts_with("/crm/calls/CA"));
    assert!(live.contains("סוכן"), "the agent's words, as spoken: {live}");
    let after = text_of(&c, "#transcripts").await;
    assert!(after.contains("(offline) speech"), "the recording's transcript: {after}");
    // Statuses, reasons and recording sources in words, not the store's tokens.
    let facts = format!("{}\n{}", text_of(&c, "dl.facts").await, text_of(&c, "#recordings").await);
    for token in ["completed", "caller_hangup", "StartCallRecordingTwiML", "streaming"] {
        assert!(!facts.contains(token), "{token} untranslated: {facts}");
    }
    assert!(facts.contains("הסתיימה") && facts.contains("המתקשר ניתק") && facts.contains("הקלטת השיחה"), "{facts}");
    // The tool the agent used: its name, its arguments, answered, and how long it took.
    let tools = text_of(&c, "#tool-calls").await;
    assert!(tools.contains("check_availability") && tools.contains("הרצל 12") && tools.contains("נענה"), "{tools}");
    assert!(tools.contains(" ms"), "the latency is shown: {tools}");

    // The recording's length shows before anyone plays it: the player loads its metadata, through
    // its signed link, as the page opens.
    let loaded = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const audio = document.querySelector('audio');
             if (!audio) { done({ ok: false, why: 'no audio element' }); return; }
             if (audio.preload !== 'metadata') { done({ ok: false, why: 'preload ' + audio.preload }); return; }
             const known = () => done({ ok: true, duration: audio.duration });
             if (audio.readyState >= 1) { known(); return; }
             audio.addEventListener('loadedmetadata', known);
             audio.addEventListener('error', () => done({ ok: false, why: String(audio.error && audio.error.code) }));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(loaded["ok"], true, "{loaded}");
    assert!(loaded["duration"].as_f64().unwrap() > 1.0, "{loaded}");
    screenshot("crm-call.png", &c.screenshot().await.unwrap());
    c.refresh().await.unwrap();
    let events = text_of(&c, "#events").await;
    assert!(events.contains("ההקלטה נפתחה בדף") && !events.contains("ההקלטה הושמעה"), "opened, not yet played: {events}");
    // Pressing play says who listened.
    let playing = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const audio = document.querySelector('audio');
             audio.play().then(() => { audio.pause(); done(true); }, (e) => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(playing, true, "{playing}");
    let mut events = String::new();
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        c.refresh().await.unwrap();
        events = text_of(&c, "#events").await;
        if events.contains("ההקלטה הושמעה") {
            break;
        }
    }
    assert!(events.contains("ההקלטה הושמעה"), "who listened is an event, in words: {events}");
    // Its raw detail waits behind a disclosure, for whoever debugs.
    c.find(Locator::XPath("//li[b[@data-kind='crm_recording_played']]//summary")).await.unwrap().click().await.unwrap();
    let events = text_of(&c, "#events").await;
    assert!(events.contains("\"user\":\"dana\"") || events.contains("dana"), "the detail names who listened: {events}");
    assert!(!events.contains("twiml_served") && !events.contains("stream_status"), "event kinds in words: {events}");
    audit(&c, "call").await;
    // Its lead, each field by its title.
    let lead = text_of(&c, "#lead").await;
    assert!(lead.contains("מועד כניסה") && lead.contains("אוגוסט") && lead.contains("שם") && !lead.contains("move_in"), "{lead}");

    // The caller's contact page, and the leads.
    let contact = c.find(Locator::Css("a[href^='/crm/contacts/']")).await.unwrap().attr("href").await.unwrap().unwrap();
    c.goto(&format!("{base}{contact}")).await.unwrap();
    text_of(&c, "#timeline").await;
    audit(&c, "contact").await;
    c.goto(&format!("{base}/crm/leads")).await.unwrap();
    audit(&c, "leads").await;
    let header = text_of(&c, "#leads thead").await;
    for title in ["מזהה", "התחלה", "איש קשר", "שם", "מועד כניסה"] {
        assert!(header.contains(title), "{title} in {header}");
    }
    assert!(!header.chars().any(|ch| ch.is_ascii_alphabetic()), "no column by its field's name: {header}");
    assert!(text_of(&c, "#leads tbody").await.contains("אוגוסט"));

    // A WhatsApp answer from the page goes out through Twilio.
    c.goto(&format!("{base}/crm/whatsapp")).await.unwrap();
    audit(&c, "WhatsApp").await;
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
    audit(&c, "a WhatsApp thread").await;
    c.goto(&format!("{base}/crm/operations")).await.unwrap();
    text_of(&c, "#queues").await;
    audit(&c, "operations").await;

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

/// `callkeeper serve` on a fresh folder with the user dana, for the sign-in's HTTP tests: its
/// log in a file, a client that follows no redirects, and a sign-in form's cookie and token
/// (both can be posted many times: they are bound to each other, not used up).
struct Crm {
    serve: Killed,
    base: String,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
    client: reqwest::Client,
    form_cookie: String,
    token: String,
}

async fn crm(env: &[(&str, &str)]) -> Crm {
    let dir = tempfile::tempdir().unwrap();
    let mut add = callkeeper(dir.path()).args(["crm", "user", "add", "dana"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());
    let port = free_port();
    let log = dir.path().join("serve.log");
    let mut command = callkeeper(dir.path());
    command.envs(env.iter().copied()).env("RUST_LOG", "info").args(["serve", "--port", &port.to_string()]);
    let serve = Killed(command.stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).spawn().unwrap());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let form = client.get(format!("{base}/crm/sign-in")).send().await.unwrap();
    let form_cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = form.text().await.unwrap();
    let token = html.split("name=\"token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    Crm { serve, base, addr, dir, log, client, form_cookie, token }
}

impl Crm {
    async fn sign_in(&self, name: &str, password: &str, forwarded_for: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/crm/sign-in", self.base)).header("cookie", &self.form_cookie).form(&[
            ("name", name),
            ("password", password),
            ("token", &self.token),
        ]);
        if let Some(address) = forwarded_for {
            request = request.header("x-forwarded-for", address);
        }
        request.send().await.unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.serve.0.id())).unwrap();
        status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// The session cookie a sign-in's answer sets.
fn session_cookie(response: &reqwest::Response) -> String {
    let cookie = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|v| v.starts_with("ck_session="));
    cookie.expect("a session cookie").split(';').next().unwrap().to_string()
}

/// A burst of sign-ins from many addresses (the proxy's header, trusted) is held to a few
/// password checks at once: the rest are told at once to come back in a second, the process's
/// memory stays near where it was and comes back to it, and a webhook keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_sign_ins_is_bounded_and_gives_its_memory_back() {
    let crm = crm(&[("TRUSTED_PROXY_HOPS", "1")]).await;
    assert_eq!(crm.sign_in("dana", PASSWORD, Some("10.9.9.9")).await.status(), 303, "a first sign-in, as a running CRM has had");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = crm.rss_kib();
    let (config, _) = local_config::resolve(crm.dir.path(), crm.addr).unwrap();

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pid = crm.serve.0.id();
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1));
                    peak = peak.max(rss.and_then(|v| v.parse().ok()).unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let webhooks = {
        let (client, config, addr) = (reqwest::Client::new(), config.clone(), crm.addr);
        tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..20 {
                let form = vec![
                    ("CallSid".to_string(), callkeeper_core::ids::random_sid("CA")),
                    ("AccountSid".to_string(), config.twilio_account_sid.to_string()),
                    ("From".to_string(), "+972501234567".to_string()),
                    ("To".to_string(), "+97231234567".to_string()),
                    ("CallStatus".to_string(), "ringing".to_string()),
                    ("Direction".to_string(), "inbound".to_string()),
                ];
                let started = std::time::Instant::now();
                let (status, _) =
                    callkeeper::simulate::post_webhook(&client, &config, addr, "/webhook/incoming_call", &form).await.unwrap();
                took.push(started.elapsed());
                assert_eq!(status, 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            took
        })
    };
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let (client, base, cookie, token) = (crm.client.clone(), crm.base.clone(), crm.form_cookie.clone(), crm.token.clone());
            tokio::spawn(async move {
                let response = client
                    .post(format!("{base}/crm/sign-in"))
                    .header("cookie", cookie)
                    .header("x-forwarded-for", format!("10.1.{}.{}", i / 200, i % 200 + 1))
                    .form(&[("name", format!("guess{i}")), ("password", "not the password".into()), ("token", token)])
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for b in burst {
        answers.push(b.await.unwrap());
    }
    let mut took = webhooks.await.unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = crm.rss_kib();
    took.sort();
    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    let busy = answers.iter().filter(|(s, retry)| *s == 503 && retry.as_deref() == Some("1")).count();
    println!(
        "sign-in burst of 40: {checked} checked (401), {busy} busy (503); RSS before {} MiB, peak {} MiB, after {} MiB; \
         incoming_call during it p50 {:?}, max {:?}",
        before / 1024,
        peak / 1024,
        after / 1024,
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(checked + busy, 40, "every attempt answered 401 or 503 with Retry-After: {answers:?}");
    assert!(busy > 0 && checked >= callkeeper_functions::crm::verifier::THREADS, "{answers:?}");
    // Two checks at once at 19 MiB each, and what their requests hold.
    assert!(peak < before + 100 * 1024, "peak {peak} KiB from {before} KiB");
    assert!(after < before + 16 * 1024, "after the burst {after} KiB, before it {before} KiB: memory was not given back");
}

/// The five-guess limit holds inside a burst: each guess is counted before it is checked, so of
/// 29 at once only five are checked, and the right password after them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guesses_are_counted_before_they_are_checked() {
    let crm = crm(&[]).await;
    let guesses: Vec<_> = (0..29)
        .map(|_| {
            let (client, base, cookie, token) = (crm.client.clone(), crm.base.clone(), crm.form_cookie.clone(), crm.token.clone());
            tokio::spawn(async move {
                let form = [("name", "dana"), ("password", "not the password"), ("token", token.as_str())];
                client.post(format!("{base}/crm/sign-in")).header("cookie", cookie).form(&form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "{checked} guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| [401, 429, 503].contains(s)), "{statuses:?}");
    let right = crm.sign_in("dana", PASSWORD, None).await;
    assert_eq!(right.status(), 429, "the right password after the burst is refused");
    assert!(right.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
}

/// Behind a proxy every visitor is the proxy's address: with `TRUSTED_PROXY_HOPS` the limit
/// keys on the address the proxy saw, so one visitor's guesses do not lock out another; without
/// it the header is not believed, so a guesser cannot escape the limit by writing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_keys_on_the_address_a_trusted_proxy_saw_and_never_on_a_written_one() {
    let behind_proxy = crm(&[("TRUSTED_PROXY_HOPS", "1")]).await;
    for _ in 0..6 {
        assert_ne!(behind_proxy.sign_in("dana", "not the password", Some("203.0.113.7")).await.status(), 303);
    }
    assert_eq!(behind_proxy.sign_in("dana", PASSWORD, Some("203.0.113.7")).await.status(), 429, "the guesser waits");
    // A client's own entry in front of what the proxy appended is not believed either.
    assert_eq!(behind_proxy.sign_in("dana", PASSWORD, Some("198.51.100.1, 203.0.113.7")).await.status(), 429);
    let dana = behind_proxy.sign_in("dana", PASSWORD, Some("198.51.100.20")).await;
    assert_eq!(dana.status(), 303, "dana, elsewhere behind the same proxy, signs in");

    let direct = crm(&[]).await;
    for i in 0..6 {
        direct.sign_in("dana", "not the password", Some(&format!("192.0.2.{i}"))).await;
    }
    assert_eq!(direct.sign_in("dana", PASSWORD, Some("192.0.2.99")).await.status(), 429, "a written address changes nothing");
    assert!(direct.log().contains("TRUSTED_PROXY_HOPS"), "serve says what to set when it sees the header");
}

/// A sign-in name is at most 64 bytes: a longer one is refused before it is counted or logged,
/// and what is logged of a name is escaped, so a newline in it cannot forge a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_are_refused_unlogged_and_names_cannot_forge_log_lines() {
    let crm = crm(&[]).await;
    let huge = "a".repeat(200_000);
    for _ in 0..3 {
        let refused = crm.sign_in(&huge, "not the password", None).await;
        assert_eq!(refused.status(), 400);
        assert!(refused.text().await.unwrap().contains("at most 64 bytes"));
    }
    let forged = crm.sign_in("x\nforged signed in user=admin", "not the password", None).await;
    assert_eq!(forged.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = crm.log();
    assert!(log.len() < 20_000, "the log is {} bytes", log.len());
    assert!(!log.contains(&"a".repeat(1000)), "the long name was logged");
    assert!(log.lines().any(|l| l.contains("sign-in failed")), "{log}");
    assert!(!log.lines().any(|l| l.trim_start().starts_with("forged")), "a forged line: {log}");
    assert_eq!(crm.sign_in("dana", PASSWORD, None).await.status(), 303, "the long names counted against nothing");
}

/// Signing out ends the session on the server: the cookie replayed afterwards no longer works,
/// nor does any other session of the user; `crm user sign-out` does the same from the shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_every_session_of_the_user() {
    let crm = crm(&[]).await;
    let page = |cookie: String| {
        let (client, base) = (crm.client.clone(), crm.base.clone());
        async move { client.get(format!("{base}/crm/calls")).header("cookie", cookie).send().await.unwrap().status().as_u16() }
    };
    let laptop = session_cookie(&crm.sign_in("dana", PASSWORD, None).await);
    let phone = session_cookie(&crm.sign_in("dana", PASSWORD, None).await);
    assert_eq!(page(laptop.clone()).await, 200);
    let calls = crm.client.get(format!("{}/crm/calls", crm.base)).header("cookie", &laptop).send().await.unwrap().text().await.unwrap();
    let csrf = calls.split("name=\"csrf\" value=\"").nth(1).expect("the sign-out form's token").split('"').next().unwrap().to_string();
    let out = crm.client.post(format!("{}/crm/sign-out", crm.base)).header("cookie", &laptop).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(page(laptop).await, 303, "the signed-out cookie, replayed, is sent to sign in");
    assert_eq!(page(phone).await, 303, "and the user's other session with it");

    let again = session_cookie(&crm.sign_in("dana", PASSWORD, None).await);
    assert_eq!(page(again.clone()).await, 200);
    let everywhere = callkeeper(crm.dir.path()).args(["crm", "user", "sign-out", "dana"]).output().unwrap();
    assert!(everywhere.status.success(), "{}", String::from_utf8_lossy(&everywhere.stderr));
    assert_eq!(page(again).await, 303, "signed out everywhere from the shell");
    let nobody = callkeeper(crm.dir.path()).args(["crm", "user", "sign-out", "nobody"]).output().unwrap();
    assert_eq!(nobody.status.code(), Some(2));
}

/// A business that speaks English (`AGENT_LANGUAGE=en-US`) gets its CRM in English, left to
/// right: after a call with the English embedded agent, no page shows a Hebrew letter or a token
/// left as the store keeps it, and axe-core finds nothing serious on any. A profile the store
/// cannot read costs the lead its titles, not the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_english_every_page_is_english_and_passes_the_audit() {
    let crm = crm(&[("AGENT_LANGUAGE", "en-US")]).await;
    let port = crm.addr.port().to_string();
    let played = callkeeper(crm.dir.path()).env("AGENT_LANGUAGE", "en-US").args(["simulate", "--port", &port]).output().unwrap();
    assert_eq!(played.status.code(), Some(0), "{}", String::from_utf8_lossy(&played.stdout));
    // A lead on the call, and a profile the store cannot read (a bad row): the pages still show
    // the lead, a built-in field by the CRM's word and the business's own by its name.
    {
        let stores = callkeeper_core::store::embedded::open_stores(crm.dir.path(), 2).unwrap();
        let call = stores.calls.recent_calls(None, 1).await.unwrap().remove(0);
        let lead = serde_json::json!({ "name": "Dana", "move_in": "August" });
        stores.calls.save_lead(&call.call_sid, call.contact.as_ref(), &lead, callkeeper_core::time::now_ms()).await.unwrap();
        let db = rusqlite::Connection::open(crm.dir.path().join(callkeeper_core::store::embedded::DATABASE_FILE)).unwrap();
        db.execute("INSERT INTO agent_profiles (key, doc, updated_at) VALUES ('+15550001111', '{not json', 0)", []).unwrap();
    }

    let (_driver, driver_url) = chromedriver().await;
    let c = browser(&driver_url).await;
    sign_in(&c, &crm.base, "dana", PASSWORD).await;
    wait_path(&c, "/crm/now").await;
    let html = c.find(Locator::Css("html")).await.unwrap();
    assert_eq!((html.attr("lang").await.unwrap().as_deref(), html.attr("dir").await.unwrap().as_deref()), (Some("en"), Some("ltr")));
    c.goto(&format!("{}/crm/calls", crm.base)).await.unwrap();
    let call = c.find(Locator::Css("a.call-link")).await.unwrap().attr("href").await.unwrap().unwrap();
    c.goto(&format!("{}{call}", crm.base)).await.unwrap();
    let contact = c.find(Locator::Css("a[href^='/crm/contacts/']")).await.unwrap().attr("href").await.unwrap().unwrap();
    for page in ["/crm/now", "/crm/calls", &call, &contact, "/crm/leads", "/crm/whatsapp", "/crm/operations"] {
        c.goto(&format!("{}{page}", crm.base)).await.unwrap();
        let text = text_of(&c, "body").await;
        assert!(!text.chars().any(|ch| ('\u{0590}'..='\u{05FF}').contains(&ch)), "{page} shows Hebrew: {text}");
        audit(&c, page).await;
    }
    assert!(text_of(&c, "body").await.contains("Operations"));
    c.goto(&format!("{}/crm/leads", crm.base)).await.unwrap();
    let header = text_of(&c, "#leads thead").await;
    assert!(header.contains("Name") && header.contains("move in") && text_of(&c, "#leads tbody").await.contains("August"), "{header}");
    assert!(crm.log().contains("lead field titles not read"), "the log says why the titles are missing");
    c.close().await.unwrap();
}
