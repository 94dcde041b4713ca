//! The TwiML documents of DESIGN.md, parsed back as XML and checked element by element.

use callkeeper_core::ids::CallSid;
use callkeeper_core::phone::E164;
use callkeeper_core::twiml::{self, Apology, FallbackStep, StreamCall};
use callkeeper_core::twiml_reader::parse_twiml as parse;
use callkeeper_core::url::AbsoluteUrl;

fn url(s: &str) -> AbsoluteUrl {
    AbsoluteUrl::http(s, "test").unwrap()
}

#[test]
fn stream_call_is_the_documented_document() {
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let relay = AbsoluteUrl::ws_base("wss://relay.example.com", "RELAY_PUBLIC_URL").unwrap();
    let stream_url = relay.join("/ws/twilio-media");
    let base = AbsoluteUrl::http_base("https://ck.example.com", "PUBLIC_BASE_URL").unwrap();
    let (status_cb, action, rec_cb) =
        (base.join("/webhook/stream_status"), base.join("/webhook/stream_ended"), base.join("/webhook/recording_done"));
    let greeting = url("https://cdn.example.com/hello.wav");
    for with_greeting in [false, true] {
        let doc = twiml::stream_call(&StreamCall {
            call_sid: &sid,
            generation: 0,
            token: "tok&<en>",
            stream_url: &stream_url,
            stream_status_callback: &status_cb,
            connect_action: &action,
            recording_callback: &rec_cb,
            greeting: with_greeting.then_some(&greeting),
        });
        let r = parse(doc.as_str());
        let expected: Vec<&str> = if with_greeting { vec!["Start", "Play", "Connect"] } else { vec!["Start", "Connect"] };
        assert_eq!(r.names(), expected, "nothing after </Connect>");
        let start = &r.children[0];
        assert_eq!(start.names(), ["Recording"]);
        let rec = &start.children[0];
        assert_eq!(rec.attr("channels"), Some("dual"));
        assert_eq!(rec.attr("recordingStatusCallback"), Some("https://ck.example.com/webhook/recording_done"));
        assert_eq!(rec.attr("recordingStatusCallbackEvent"), Some("completed absent"));
        if with_greeting {
            assert_eq!(r.children[1].text, "https://cdn.example.com/hello.wav");
        }
        let connect = r.children.last().unwrap();
        assert_eq!(connect.attr("action"), Some("https://ck.example.com/webhook/stream_ended"));
        assert_eq!(connect.names(), ["Stream"]);
        let stream = &connect.children[0];
        assert_eq!(stream.attr("url"), Some("wss://relay.example.com/ws/twilio-media"));
        assert!(!stream.attr("url").unwrap().contains('?'), "no query string in the Stream URL");
        assert_eq!(stream.attr("track"), None, "only the default inbound_track on <Connect>");
        assert_eq!(stream.attr("statusCallback"), Some("https://ck.example.com/webhook/stream_status"));
        let params: Vec<(Option<&str>, Option<&str>)> = stream.children.iter().map(|p| (p.attr("name"), p.attr("value"))).collect();
        assert_eq!(params, [(Some("call_sid"), Some(sid.as_str())), (Some("token"), Some("tok&<en>")), (Some("generation"), Some("0"))]);
    }
}

/// A later generation continues the conversation on a new stream: the `<Connect>` alone (the
/// recording goes on, the greeting is not played again), its generation as a `<Parameter>`, and
/// `stream_ended` told which generation's stream ended.
#[test]
fn a_later_stream_generation_is_the_connect_alone() {
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let stream_url = AbsoluteUrl::ws_base("wss://relay.example.com", "RELAY_PUBLIC_URL").unwrap().join("/ws/twilio-media");
    let base = AbsoluteUrl::http_base("https://ck.example.com", "PUBLIC_BASE_URL").unwrap();
    let action = base.join("/webhook/stream_ended?generation=2");
    let greeting = url("https://cdn.example.com/hello.wav");
    let doc = twiml::stream_call(&StreamCall {
        call_sid: &sid,
        generation: 2,
        token: "tok2",
        stream_url: &stream_url,
        stream_status_callback: &base.join("/webhook/stream_status"),
        connect_action: &action,
        recording_callback: &base.join("/webhook/recording_done"),
        greeting: Some(&greeting),
    });
    let r = parse(doc.as_str());
    assert_eq!(r.names(), ["Connect"]);
    assert_eq!(r.children[0].attr("action"), Some("https://ck.example.com/webhook/stream_ended?generation=2"));
    let stream = &r.children[0].children[0];
    assert!(!stream.attr("url").unwrap().contains('?'), "the generation is a parameter, never a query string");
    let params: Vec<(Option<&str>, Option<&str>)> = stream.children.iter().map(|p| (p.attr("name"), p.attr("value"))).collect();
    assert_eq!(params, [(Some("call_sid"), Some(sid.as_str())), (Some("token"), Some("tok2")), (Some("generation"), Some("2"))]);
}

#[test]
fn fallback_voicemail_and_dial() {
    let action = url("https://ck.example.com/webhook/stream_ended");
    let rec_cb = url("https://ck.example.com/webhook/recording_done");
    let say = Apology::Say { text: "מצטערים".into(), language: "he-IL".into(), voice: "Google.he-IL-Standard-A".into() };

    let r = parse(twiml::fallback(&say, &FallbackStep::Voicemail { max_length_secs: 120, recording_callback: &rec_cb }, &action).as_str());
    assert_eq!(r.names(), ["Say", "Record"]);
    assert_eq!((r.children[0].attr("language"), r.children[0].attr("voice")), (Some("he-IL"), Some("Google.he-IL-Standard-A")));
    assert_eq!(r.children[0].text, "מצטערים");
    let record = &r.children[1];
    assert_eq!(record.attr("action"), Some(action.as_str()));
    assert_eq!(record.attr("maxLength"), Some("120"));
    assert_eq!(record.attr("recordingStatusCallback"), Some(rec_cb.as_str()));

    let play = Apology::Play(url("https://cdn.example.com/sorry.wav"));
    let number = E164::parse("+972501234567").unwrap();
    let r = parse(twiml::fallback(&play, &FallbackStep::Dial { number: &number, timeout_secs: 20 }, &action).as_str());
    assert_eq!(r.names(), ["Play", "Dial"]);
    assert_eq!(r.children[0].text, "https://cdn.example.com/sorry.wav");
    assert_eq!(r.children[1].attr("action"), Some(action.as_str()));
    assert_eq!(r.children[1].children[0].name, "Number");
    assert_eq!(r.children[1].children[0].text, "+972501234567");
}

#[test]
fn hangup_and_empty() {
    assert_eq!(parse(twiml::hangup().as_str()).names(), ["Hangup"]);
    assert!(parse(twiml::empty().as_str()).children.is_empty());
}
