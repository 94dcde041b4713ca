//! The one place TwiML is written. Every document callkeeper serves or pushes is built here, from
//! typed inputs: URLs are `AbsoluteUrl`s, text and attributes are escaped, voices are explicit.

use crate::domain::ids::CallSid;
use crate::domain::phone::E164;
use crate::domain::url::AbsoluteUrl;

pub const CONTENT_TYPE: &str = "text/xml";

/// A finished TwiML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twiml(String);

impl Twiml {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<Node>,
}

enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    fn new(name: &'static str) -> Self {
        Self { name, attrs: Vec::new(), children: Vec::new() }
    }
    fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }
    fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }
    fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }
    fn render(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_into(value, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.render(out),
                Node::Text(t) => escape_into(t, out),
            }
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }
}

/// Escapes for both text and attribute values, and drops the control characters XML 1.0 forbids.
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

fn document(children: Vec<Element>) -> Twiml {
    let mut response = Element::new("Response");
    for child in children {
        response = response.child(child);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    response.render(&mut out);
    Twiml(out)
}

/// Recording status events callkeeper asks for: `absent` tells us a call produced no audio.
const RECORDING_EVENTS: &str = "completed absent";

/// What `incoming_call` and `outbound_call` answer: record the whole call (dual channel, not
/// blocking), optionally play a greeting, and connect the media stream to the relay. A later
/// generation (the conversation continued on a new stream) is the `<Connect>` alone: the call's
/// recording goes on, and the caller is not greeted again.
pub struct StreamCall<'a> {
    pub call_sid: &'a CallSid,
    /// The stream's generation: 0 for the call's first stream.
    pub generation: u32,
    /// The stream token (see `stream_token`), for this generation.
    pub token: &'a str,
    pub stream_url: &'a AbsoluteUrl,
    pub stream_status_callback: &'a AbsoluteUrl,
    pub connect_action: &'a AbsoluteUrl,
    pub recording_callback: &'a AbsoluteUrl,
    pub greeting: Option<&'a AbsoluteUrl>,
}

pub fn stream_call(call: &StreamCall<'_>) -> Twiml {
    // Data for the relay goes in `<Parameter>`s: Twilio refuses a query string on the stream URL.
    let stream = Element::new("Stream")
        .attr("url", call.stream_url.as_str())
        .attr("statusCallback", call.stream_status_callback.as_str())
        .attr("statusCallbackMethod", "POST")
        .child(Element::new("Parameter").attr("name", "call_sid").attr("value", call.call_sid.as_str()))
        .child(Element::new("Parameter").attr("name", "token").attr("value", call.token))
        .child(Element::new("Parameter").attr("name", "generation").attr("value", call.generation.to_string()));
    let mut verbs = Vec::new();
    if call.generation == 0 {
        let recording = Element::new("Recording")
            .attr("channels", "dual")
            .attr("recordingStatusCallback", call.recording_callback.as_str())
            .attr("recordingStatusCallbackMethod", "POST")
            .attr("recordingStatusCallbackEvent", RECORDING_EVENTS);
        verbs.push(Element::new("Start").child(recording));
        if let Some(greeting) = call.greeting {
            verbs.push(Element::new("Play").text(greeting.as_str()));
        }
    }
    // Nothing after </Connect>: its action URL decides what happens when the stream ends.
    verbs.push(Element::new("Connect").attr("action", call.connect_action.as_str()).attr("method", "POST").child(stream));
    document(verbs)
}

/// The short apology a caller hears before the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apology {
    /// A pre-rendered audio file.
    Play(AbsoluteUrl),
    /// Text-to-speech with an explicit language and voice (an unsupported pair is an error).
    Say { text: String, language: String, voice: String },
}

impl Apology {
    fn element(&self) -> Element {
        match self {
            Apology::Play(url) => Element::new("Play").text(url.as_str()),
            Apology::Say { text, language, voice } => {
                Element::new("Say").attr("language", language.as_str()).attr("voice", voice.as_str()).text(text.as_str())
            }
        }
    }
}

/// What follows the apology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackStep<'a> {
    /// `<Record>` a message; its recording goes through the transcription pipeline.
    Voicemail { max_length_secs: u32, recording_callback: &'a AbsoluteUrl },
    /// `<Dial>` a person.
    Dial { number: &'a E164, timeout_secs: u32 },
}

/// The fallback: apology, then voicemail or a person. `action` receives what the verb reports
/// (the recording, or how the dial ended), so the call never falls back into the document URL.
pub fn fallback(apology: &Apology, step: &FallbackStep<'_>, action: &AbsoluteUrl) -> Twiml {
    let next = match step {
        FallbackStep::Voicemail { max_length_secs, recording_callback } => Element::new("Record")
            .attr("action", action.as_str())
            .attr("method", "POST")
            .attr("maxLength", max_length_secs.to_string())
            .attr("timeout", "5")
            .attr("playBeep", "true")
            .attr("recordingStatusCallback", recording_callback.as_str())
            .attr("recordingStatusCallbackMethod", "POST")
            .attr("recordingStatusCallbackEvent", RECORDING_EVENTS),
        FallbackStep::Dial { number, timeout_secs } => Element::new("Dial")
            .attr("action", action.as_str())
            .attr("method", "POST")
            .attr("timeout", timeout_secs.to_string())
            .child(Element::new("Number").text(number.as_str())),
    };
    document(vec![apology.element(), next])
}

/// The agent's transfer: ring a person; `action` learns how the dial ended (nobody answering
/// gets the voicemail there).
pub fn transfer(number: &E164, timeout_secs: u32, action: &AbsoluteUrl) -> Twiml {
    let dial = Element::new("Dial")
        .attr("action", action.as_str())
        .attr("method", "POST")
        .attr("timeout", timeout_secs.to_string())
        .child(Element::new("Number").text(number.as_str()));
    document(vec![dial])
}

pub fn hangup() -> Twiml {
    document(vec![Element::new("Hangup")])
}

/// An empty response: for messaging webhooks whose reply is sent later through the REST API.
pub fn empty() -> Twiml {
    document(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> AbsoluteUrl {
        AbsoluteUrl::http(s, "test").unwrap()
    }

    #[test]
    fn escapes_text_and_attributes() {
        let apology = Apology::Say { text: "a<b & \"c\" 'd'\u{1}".into(), language: "he-IL".into(), voice: "x\"y".into() };
        let doc = fallback(
            &apology,
            &FallbackStep::Dial { number: &E164::parse("+972501234567").unwrap(), timeout_secs: 20 },
            &url("https://h.io/a?x=1&y=2"),
        );
        assert!(
            doc.as_str().contains("<Say language=\"he-IL\" voice=\"x&quot;y\">a&lt;b &amp; &quot;c&quot; &apos;d&apos;</Say>"),
            "{}",
            doc.as_str()
        );
        assert!(doc.as_str().contains("action=\"https://h.io/a?x=1&amp;y=2\""));
    }

    #[test]
    fn empty_and_hangup() {
        assert_eq!(empty().as_str(), "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>");
        assert_eq!(hangup().as_str(), "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>");
    }
}
