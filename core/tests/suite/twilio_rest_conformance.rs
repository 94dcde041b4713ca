//! Every Twilio REST request callkeeper makes, beside the same request made by twilio-python's own
//! client (`scripts/rest_conformance.py`, in the venv `scripts/test.sh` makes) to the same fake
//! Twilio over loopback: the method, the path, and the query's and form's fields, names and
//! values, must be the same. The fake answers each request with a body both clients can read.

use callkeeper_core::ids::{AccountSid, CallSid, RecordingSid};
use callkeeper_core::secrets::Secret;
use callkeeper_core::test_support::venv_python;
use callkeeper_core::twilio_rest::{CallUpdate, OutboundCall, OutboundMessage, RetryPolicy, TwilioRest};
use callkeeper_core::url::AbsoluteUrl;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALL: &str = "CAffffffffffffffffffffffffffffffff";
const RECORDING: &str = "RE0123456789abcdef0123456789abcdef";
const NUMBER_SID: &str = "PN0123456789abcdef0123456789abcdef";

/// A fake Twilio that answers whatever it is asked with a body of the right shape.
struct Fake;

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        let number = json!({
            "sid": NUMBER_SID, "phone_number": "+97231234567", "capabilities": { "voice": true, "sms": true },
            "voice_url": "https://hooks.example.com/webhook/incoming_call", "voice_method": "POST",
        });
        let list = |key: &str, items: Vec<Value>| {
            ResponseTemplate::new(200).set_body_json(json!({ key: items, "next_page_uri": null, "page": 0, "page_size": 1000 }))
        };
        match (request.method.as_str(), path) {
            ("DELETE", _) => ResponseTemplate::new(204),
            (_, p) if p.ends_with(".wav") => ResponseTemplate::new(200).set_body_bytes(b"RIFF".to_vec()),
            ("GET", p) if p.ends_with("/Recordings.json") => list("recordings", vec![]),
            ("GET", p) if p.ends_with("/IncomingPhoneNumbers.json") => list("incoming_phone_numbers", vec![number]),
            (_, p) if p.contains("/IncomingPhoneNumbers/") => ResponseTemplate::new(200).set_body_json(number),
            _ => ResponseTemplate::new(200).set_body_json(json!({
                "sid": if path.contains("/Messages") { "SM0123456789abcdef0123456789abcdef" } else { CALL },
                "status": "in-progress", "from": "+97231234567", "to": "+972501234567", "direction": "inbound",
            })),
        }
    }
}

/// One request as the fake saw it: what both clients must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    /// Each field with its values in the order sent (a repeated field is several values).
    query: BTreeMap<String, Vec<String>>,
    form: BTreeMap<String, Vec<String>>,
}

fn seen(request: &Request) -> Seen {
    let fields = |pairs: form_urlencoded::Parse| {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        map
    };
    Seen {
        method: request.method.to_string(),
        path: request.url.path().to_string(),
        query: fields(form_urlencoded::parse(request.url.query().unwrap_or_default().as_bytes())),
        form: fields(form_urlencoded::parse(&request.body)),
    }
}

fn url(value: &str) -> AbsoluteUrl {
    AbsoluteUrl::http(value, "test").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_request_is_what_twilio_python_sends() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(Fake).mount(&server).await;
    let retry = RetryPolicy { attempts: 1, ..RetryPolicy::default() };
    let ours = TwilioRest::new(&server.uri(), AccountSid::parse(ACCOUNT).unwrap(), Secret::new("token"), retry);

    let twiml = "<Response><Hangup/></Response>";
    let call_sid = CallSid::parse(CALL).unwrap();
    let recording_sid = RecordingSid::parse(RECORDING).unwrap();
    let answer_url = "https://hooks.example.com/webhook/outbound_call";
    let status_callback = "https://hooks.example.com/webhook/stream_ended#rc=3&rp=5xx,ct";
    let recording_callback = "https://hooks.example.com/webhook/recording_done#rc=3&rp=5xx,ct";
    let message_callback = "https://hooks.example.com/webhook/whatsapp/status";
    let media = ["https://hooks.example.com/crm/blob/a.jpg", "https://hooks.example.com/crm/blob/b.ogg"];
    let events = ["initiated", "ringing", "answered", "completed"];
    let number_fields = [
        ("VoiceUrl", "https://hooks.example.com/webhook/incoming_call#rc=3&rp=5xx,ct"),
        ("VoiceMethod", "POST"),
        ("VoiceFallbackUrl", "https://hooks.example.com/webhook/stream_ended#rc=3&rp=5xx,ct"),
        ("VoiceFallbackMethod", "POST"),
        ("StatusCallback", status_callback),
        ("StatusCallbackMethod", "POST"),
        ("SmsUrl", "https://hooks.example.com/webhook/whatsapp/inbound#rc=3&rp=5xx,ct"),
        ("SmsMethod", "POST"),
    ];

    // callkeeper's client: one operation at a time, each request kept under its operation's name.
    let mut mine: Vec<(&str, Seen)> = Vec::new();
    let mut taken = 0;
    macro_rules! op {
        ($name:expr, $call:expr) => {{
            $call.await.unwrap_or_else(|e| panic!("{}: {e}", $name));
            let requests = server.received_requests().await.unwrap();
            assert!(requests.len() > taken, "{}: no request", $name);
            for request in &requests[taken..] {
                mine.push(($name, seen(request)));
            }
            taken = requests.len();
        }};
    }
    op!("calls.update twiml", ours.update_call(&call_sid, &CallUpdate::Twiml(twiml.into())));
    op!("calls.update url", ours.update_call(&call_sid, &CallUpdate::Url(url(answer_url))));
    op!("calls.update completed", ours.update_call(&call_sid, &CallUpdate::Complete));
    op!("calls.fetch", ours.fetch_call(&call_sid));
    let outbound = OutboundCall {
        to: "+972501234567".into(),
        from: "+97231234567".into(),
        url: Some(url(answer_url)),
        twiml: None,
        status_callback: Some(url(status_callback)),
        status_callback_events: events.iter().map(|e| e.to_string()).collect(),
        record: true,
        recording_channels: Some("dual".into()),
        recording_status_callback: Some(url(recording_callback)),
        machine_detection: Some("Enable".into()),
        timeout_secs: Some(30),
    };
    op!("calls.create", ours.create_call(&outbound));
    op!("recordings.list", ours.recordings_since("2026-12-01"));
    op!("recordings.fetch", ours.fetch_recording(&recording_sid));
    op!("recordings.delete", ours.delete_recording(&recording_sid));
    let message = OutboundMessage {
        to: "whatsapp:+972501234567".into(),
        from: "whatsapp:+97231234567".into(),
        body: "שלום, קיבלנו את ההודעה".into(),
        media_urls: media.iter().map(|m| url(m)).collect(),
        status_callback: Some(url(message_callback)),
    };
    op!("messages.create", ours.send_message(&message));
    // A follow-up's WhatsApp template: ContentSid and ContentVariables instead of a body.
    let template = "HX0123456789abcdef0123456789abcdef";
    let variables = r#"{"1":"דנה","2":"-"}"#;
    op!("messages.create (template)", ours.send_template(&message, template, variables));
    op!("accounts.fetch", ours.fetch_account());
    op!("incoming_phone_numbers.list", ours.incoming_numbers(Some("+97231234567")));
    let fields: Vec<(&str, String)> = number_fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
    op!("incoming_phone_numbers.update", ours.update_incoming_number(NUMBER_SID, &fields));

    // twilio-python's, to the same fake, with the same inputs.
    let snake = |name: &str| {
        name.chars().enumerate().fold(String::new(), |mut s, (i, c)| {
            if c.is_ascii_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
            s
        })
    };
    let setup = json!({
        "base": server.uri(), "account": ACCOUNT, "token": "token",
        "inputs": {
            "call_sid": CALL, "recording_sid": RECORDING, "number_sid": NUMBER_SID, "twiml": twiml, "url": answer_url,
            "to": outbound.to, "from": outbound.from, "status_callback": status_callback,
            "status_callback_events": events, "recording_channels": "dual", "recording_status_callback": recording_callback,
            "machine_detection": "Enable", "timeout": 30, "since": "2026-12-01",
            "whatsapp_to": message.to, "whatsapp_from": message.from, "body": message.body, "media_urls": media,
            "message_status_callback": message_callback, "number": "+97231234567",
            "content_sid": template, "content_variables": variables,
            "number_fields": number_fields.iter().map(|(k, v)| (snake(k), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
    });
    let input = setup.to_string();
    let out = tokio::task::spawn_blocking(move || venv_python("scripts/rest_conformance.py", &input)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let requests = server.received_requests().await.unwrap();
    let theirs: Vec<(String, Seen)> = requests[taken..]
        .iter()
        .map(|r| {
            let op = r.headers.get("x-conformance-op").and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_string();
            (op, seen(r))
        })
        .collect();
    let names: Vec<&str> = mine.iter().map(|(n, _)| *n).collect();
    let their_names: Vec<&str> = theirs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, their_names, "the two clients made different requests");

    let mut differences = Vec::new();
    for ((name, ours), (_, theirs)) in mine.iter().zip(&theirs) {
        // twilio-python fetches a recording's metadata (`.json`); callkeeper its audio, which is
        // the same resource with `.wav` (Twilio's docs: "append .wav or .mp3 to the URI").
        let their_path = if *name == "recordings.fetch" { theirs.path.replace(".json", ".wav") } else { theirs.path.clone() };
        let theirs = Seen { path: their_path, ..theirs.clone() };
        if *ours != theirs {
            differences.push(format!("{name}:\n  callkeeper:    {ours:?}\n  twilio-python: {theirs:?}"));
        }
    }
    let fields: usize = mine.iter().map(|(_, s)| s.form.len() + s.query.len()).sum();
    let _ = writeln!(std::io::stderr(), "REST conformance: {} requests, {fields} fields compared", mine.len());
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert_eq!(mine.len(), 13);
}
