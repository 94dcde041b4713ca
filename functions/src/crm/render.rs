//! The pages' HTML: minijinja templates compiled into the binary, escaped as HTML, in the
//! agent's language (Hebrew, right to left, unless `AGENT_LANGUAGE` says otherwise).

use super::dates::Clock;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;
use std::collections::BTreeMap;

/// The templates, by name; `.html` turns on HTML escaping for every `{{ }}`.
const TEMPLATES: [(&str, &str); 10] = [
    ("base.html", include_str!("../../templates/base.html")),
    ("sign_in.html", include_str!("../../templates/sign_in.html")),
    ("calls.html", include_str!("../../templates/calls.html")),
    ("call.html", include_str!("../../templates/call.html")),
    ("contact.html", include_str!("../../templates/contact.html")),
    ("leads.html", include_str!("../../templates/leads.html")),
    ("threads.html", include_str!("../../templates/threads.html")),
    ("thread.html", include_str!("../../templates/thread.html")),
    ("now.html", include_str!("../../templates/now.html")),
    ("operations.html", include_str!("../../templates/operations.html")),
];

pub const CSS: &str = include_str!("../../templates/crm.css");
pub const JS: &str = include_str!("../../templates/crm.js");

/// The words of the pages: (key, Hebrew, English).
const WORDS: &[(&str, &str, &str)] = &[
    ("app", "callkeeper", "callkeeper"),
    ("sign_in", "כניסה", "Sign in"),
    ("sign_out", "יציאה", "Sign out"),
    ("name", "שם משתמש", "User name"),
    ("password", "סיסמה", "Password"),
    ("wrong_password", "שם המשתמש או הסיסמה שגויים", "Wrong user name or password"),
    ("too_many", "יותר מדי ניסיונות. נסו שוב בעוד דקות ספורות", "Too many attempts. Try again in a few minutes"),
    ("busy", "השרת עמוס כרגע. נסו שוב בעוד רגע", "The server is busy. Try again in a moment"),
    ("now", "עכשיו", "Now"),
    ("calls", "שיחות", "Calls"),
    ("call", "שיחה", "Call"),
    ("contact", "איש קשר", "Contact"),
    ("contacts", "אנשי קשר", "Contacts"),
    ("leads", "לידים", "Leads"),
    ("whatsapp", "וואטסאפ", "WhatsApp"),
    ("operations", "תפעול", "Operations"),
    ("status", "מצב", "Status"),
    ("outcome", "תוצאה", "Outcome"),
    ("any", "הכול", "Any"),
    ("conversation", "שיחה עם הסוכן", "Conversation"),
    ("fallback", "מענה חלופי", "Fallback"),
    ("missed", "לא נענתה", "Missed"),
    ("live", "על הקו", "On the line"),
    ("from_date", "מתאריך", "From"),
    ("to_date", "עד תאריך", "To"),
    ("search", "חיפוש", "Search"),
    ("search_hint", "מספר או שם", "Number or name"),
    ("filter", "סינון", "Filter"),
    ("id", "מזהה", "ID"),
    ("older", "ישנות יותר", "Older"),
    ("newest", "החדשות ביותר", "Newest"),
    ("no_calls", "אין שיחות", "No calls"),
    ("started", "התחלה", "Started"),
    ("duration", "משך", "Duration"),
    ("who", "מי", "Who"),
    ("direction", "כיוון", "Direction"),
    ("inbound", "נכנסת", "Inbound"),
    ("outbound", "יוצאת", "Outbound"),
    ("ended", "סיום", "Ended"),
    ("recording", "הקלטה", "Recording"),
    ("recordings", "הקלטות", "Recordings"),
    ("not_kept", "השמע עוד לא נשמר", "The audio is not kept yet"),
    ("live_transcript", "תמלול בזמן השיחה", "Live transcript"),
    ("transcript", "תמלול אחרי השיחה", "Transcript after the call"),
    ("caller", "מתקשר", "Caller"),
    ("agent", "סוכן", "Agent"),
    ("summary", "סיכום", "Summary"),
    ("intent", "כוונה", "Intent"),
    ("lead", "פרטי ליד", "Lead"),
    ("nothing_yet", "עדיין אין", "Nothing yet"),
    ("turns", "תורות ושיהוי", "Turns and latency"),
    ("model", "מודל", "Model"),
    ("relay", "ממסר", "Relay"),
    ("heard", "נשמע", "Heard"),
    ("cut", "נקטע", "Cut"),
    ("stream", "זרם המדיה", "Media stream"),
    ("stream_end", "איך הסתיים", "How it ended"),
    ("details", "פרטים", "Details"),
    ("length", "אורך", "Length"),
    ("frames_in", "מסגרות שהתקבלו", "Frames in"),
    ("frames_out", "מסגרות שנשלחו", "Frames out"),
    ("missing", "חסרות", "missing"),
    ("marks", "סימונים שנשמעו/נשלחו", "Marks heard/sent"),
    ("barge_ins", "קטיעות", "Barge-ins"),
    ("bad_frames", "מסגרות פגומות", "Bad frames"),
    ("frame_us", "µs למסגרת p50/p99", "µs a frame p50/p99"),
    ("model_us", "µs אל המודל/ממנו p50/p99", "µs to/from the model p50/p99"),
    ("events", "אירועים", "Events"),
    ("tool_calls", "כלים שהסוכן הפעיל", "Tools the agent used"),
    ("tool", "כלי", "Tool"),
    ("arguments", "פרמטרים", "Arguments"),
    ("latency", "זמן תגובה", "Latency"),
    ("answered", "נענה", "Answered"),
    ("failed", "נכשל", "Failed"),
    ("filler_said", "נאמר משפט המתנה", "Filler said"),
    ("follow_ups", "הודעות המשך", "Follow-ups"),
    ("to", "אל", "To"),
    ("after_hours", "מחוץ לשעות הפעילות", "After hours"),
    ("reason", "סיבה", "Reason"),
    ("export_csv", "ייצוא ל-CSV", "Export CSV"),
    ("no_leads", "אין לידים", "No leads"),
    ("first_seen", "פנייה ראשונה", "First seen"),
    ("last_seen", "פנייה אחרונה", "Last seen"),
    ("timeline", "ציר זמן", "Timeline"),
    ("message", "הודעה", "Message"),
    ("threads", "שיחות וואטסאפ", "WhatsApp threads"),
    ("no_threads", "אין הודעות", "No messages"),
    ("reply", "תשובה", "Reply"),
    ("send", "שליחה", "Send"),
    ("sent", "נשלחה", "Sent"),
    (
        "window_closed",
        "עברו 24 שעות מההודעה האחרונה של הלקוח: וואטסאפ מתיר רק תבנית מאושרת",
        "24 hours have passed since the customer last wrote: WhatsApp allows only an approved template",
    ),
    ("send_failed", "השליחה נכשלה", "Sending failed"),
    ("empty_reply", "אין מה לשלוח", "Nothing to send"),
    ("media", "מדיה", "Media"),
    ("voice_note", "הודעה קולית", "Voice note"),
    ("no_live_calls", "אין שיחות על הקו", "No calls on the line"),
    ("since", "מאז", "Since"),
    ("last_media", "מדיה אחרונה", "Last media"),
    ("queue", "תור", "Queue"),
    ("waiting", "ממתינות", "Waiting"),
    ("in_flight", "בטיפול", "In flight"),
    ("dead", "נכשלו", "Dead letters"),
    ("error", "שגיאה", "Error"),
    ("redrive", "שליחה מחדש", "Redrive"),
    ("redrive_all", "שליחה מחדש של הכול", "Redrive all"),
    ("redriven", "נשלחו מחדש", "Sent back"),
    ("receives", "ניסיונות", "Receives"),
    ("not_found", "לא נמצא", "Not found"),
    ("forbidden", "הבקשה נדחתה: רעננו את הדף ונסו שוב", "The request was refused: reload the page and try again"),
    ("unavailable", "האחסון אינו זמין כרגע. נסו שוב בעוד רגע", "Storage is unavailable. Try again in a moment"),
    ("back", "חזרה", "Back"),
    ("scanned_note", "נסרקו השיחות האחרונות בלבד", "Only the most recent calls were searched"),
    ("times_in", "השעות לפי אזור הזמן", "Times in the time zone"),
    ("twilio", "Twilio", "Twilio"),
];

/// The tokens the store keeps (statuses, end and fallback reasons, recording sources and
/// statuses, channels) in words, for the `say` filter: a business owner reads "הסתיימה", not
/// `completed`. A token not here is shown as it is (and a test lists the ones a page shows).
pub const TOKENS: &[(&str, &str, &str)] = &[
    // Call statuses.
    ("ringing", "מצלצלת", "ringing"),
    ("awaiting_stream", "ממתינה לזרם", "awaiting the stream"),
    ("streaming", "מחוברת לסוכן", "with the agent"),
    ("fallback", "במענה חלופי", "in the fallback"),
    ("transferred", "הועברה לנציג", "transferred"),
    ("completed", "הסתיימה", "completed"),
    // Twilio's call statuses.
    ("in-progress", "בשיחה", "in progress"),
    ("busy", "תפוס", "busy"),
    ("no-answer", "לא נענתה", "no answer"),
    ("canceled", "בוטלה", "canceled"),
    ("failed", "נכשלה", "failed"),
    ("queued", "בתור", "queued"),
    // Why a call ended, and why it fell back.
    ("caller_hangup", "המתקשר ניתק", "the caller hung up"),
    ("caller_hung_up", "המתקשר ניתק", "the caller hung up"),
    ("agent_hangup", "הסוכן סיים", "the agent ended it"),
    ("caller_silent", "המתקשר שתק", "the caller was silent"),
    ("dial_completed", "שיחה עם נציג", "talked to a person"),
    ("dial_not_answered", "הנציג לא ענה", "the person did not answer"),
    ("voicemail_recorded", "הושארה הודעה", "a message was left"),
    ("after_hours", "מחוץ לשעות הפעילות", "after hours"),
    ("media_silent", "השמע מהמתקשר נעצר", "the caller's audio stopped"),
    ("stream_never_started", "זרם המדיה לא התחיל", "the media stream never started"),
    ("stream_ended_abnormally", "זרם המדיה נקטע", "the media stream broke"),
    ("heartbeat_stale", "הממסר הפסיק להגיב", "the relay stopped answering"),
    ("agent_failed", "הסוכן לא היה זמין", "the agent was unavailable"),
    ("store_unavailable", "האחסון לא היה זמין", "storage was unavailable"),
    ("ended_before_fallback", "הסתיימה לפני המענה החלופי", "ended before the fallback"),
    ("ended_before_reconnect", "הסתיימה לפני החיבור מחדש", "ended before reconnecting"),
    ("unknown_to_twilio", "לא מוכרת ל-Twilio", "unknown to Twilio"),
    ("watchdog_aged_out", "נסגרה בבדיקה תקופתית", "closed by the watchdog"),
    ("watchdog_call_over", "הסתיימה (בדיקה תקופתית)", "over (watchdog)"),
    // What the fallback did.
    ("voicemail", "תא קולי", "voicemail"),
    ("dial", "חיוג לנציג", "dial a person"),
    ("agent", "סוכן מחוץ לשעות", "after-hours agent"),
    // Recordings.
    ("StartCallRecordingTwiML", "הקלטת השיחה", "the call's recording"),
    ("StartCallRecordingAPI", "הקלטת השיחה", "the call's recording"),
    ("RecordVerb", "הודעה קולית", "voicemail"),
    ("DialVerb", "הקלטת החיוג", "the dial's recording"),
    ("absent", "אין שמע", "no audio"),
    // Channels.
    ("sms", "SMS", "SMS"),
    ("whatsapp", "וואטסאפ", "WhatsApp"),
    // How a media stream ended.
    ("twilio_stop", "Twilio סגר את הזרם", "Twilio stopped it"),
    ("socket_closed", "החיבור נסגר", "the socket closed"),
    ("socket_error", "שגיאת חיבור", "a socket error"),
    ("drain_deadline", "הממסר נסגר", "the relay shut down"),
    ("moved", "עבר לממסר אחר", "moved to another relay"),
    // WhatsApp statuses.
    ("accepted", "התקבלה", "accepted"),
    ("sending", "נשלחת", "sending"),
    ("sent", "נשלחה", "sent"),
    ("delivered", "נמסרה", "delivered"),
    ("read", "נקראה", "read"),
    ("received", "התקבלה", "received"),
    ("undelivered", "לא נמסרה", "undelivered"),
    ("template_needed", "נדרשת תבנית", "a template is needed"),
    ("unconfirmed", "לא אושרה", "unconfirmed"),
    // What happened on a call (its events).
    ("twiml_served", "השיחה נענתה", "answered"),
    ("stream_status", "מצב זרם המדיה", "media stream status"),
    ("stream_started", "זרם המדיה התחיל", "media stream started"),
    ("stream_closed", "זרם המדיה נסגר", "media stream closed"),
    ("stream_ended", "אחרי זרם המדיה", "after the media stream"),
    ("stream_reconnect", "זרם מדיה חדש", "a new media stream"),
    ("model_session", "שיחה חדשה עם המודל", "a new model session"),
    ("tool_call", "הסוכן הפעיל כלי", "the agent used a tool"),
    ("follow_up", "הודעת המשך", "follow-up"),
    ("recording", "הקלטה", "recording"),
    ("recording_kept", "ההקלטה נשמרה", "recording kept"),
    ("transcribed", "תומללה", "transcribed"),
    ("transcription_skipped", "לא תומללה", "not transcribed"),
    ("twilio_recording_deleted", "ההקלטה נמחקה מ-Twilio", "deleted from Twilio"),
    ("reconciled", "הושלם מול Twilio", "reconciled with Twilio"),
    ("transcription", "תמלול השיחות", "transcription"),
    ("replies", "תשובות וואטסאפ ומעקב אחרי שיחות", "WhatsApp replies and follow-ups"),
    ("events", "אירועים למערכות העסק", "events to the business's systems"),
    ("crm_recording_opened", "ההקלטה נפתחה בדף", "recording opened on the page"),
    ("crm_recording_played", "ההקלטה הושמעה", "recording played"),
    ("crm_exported", "יוצא מה-CRM", "exported from the CRM"),
    ("watchdog_redirect_skipped", "הבדיקה התקופתית לא הפנתה", "watchdog: no redirect"),
];

/// The built-in lead fields (the default extraction's) in words. A profile's own fields are
/// named by the `title` its lead schema gives them (see `leads::FieldTitles`).
pub const LEAD_FIELDS: &[(&str, &str, &str)] = &[
    ("name", "שם", "Name"),
    ("budget", "תקציב", "Budget"),
    ("area", "אזור", "Area"),
    ("property_type", "סוג נכס", "Property type"),
    ("callback_time", "מתי לחזור", "When to call back"),
];

/// The languages written right to left.
const RIGHT_TO_LEFT: [&str; 4] = ["he", "ar", "fa", "ur"];

pub struct Pages {
    env: Environment<'static>,
    pub lang: String,
    pub dir: &'static str,
    words: BTreeMap<&'static str, &'static str>,
    lead_fields: BTreeMap<&'static str, &'static str>,
    pub clock: Clock,
}

impl Pages {
    /// Pages in `language` (a BCP 47 tag): Hebrew words for Hebrew, English otherwise; the
    /// direction follows the language; times in `time_zone` (an IANA name).
    pub fn new(language: &str, time_zone: &str) -> Pages {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the CRM's templates parse (a test renders each)");
        }
        let primary = language.split(['-', '_']).next().unwrap_or("he").to_ascii_lowercase();
        let hebrew = primary == "he";
        let in_language = |table: &[(&'static str, &'static str, &'static str)]| -> BTreeMap<&'static str, &'static str> {
            table.iter().map(|(key, he, en)| (*key, if hebrew { *he } else { *en })).collect()
        };
        let (words, tokens, lead_fields) = (in_language(WORDS), in_language(TOKENS), in_language(LEAD_FIELDS));
        // `{{ call.end_reason|say }}`: the token in words, or as it is when it has none.
        // Any value: a token that is not a string (or is missing) is shown as it renders.
        env.add_filter("say", move |token: minijinja::Value| -> String {
            if token.is_undefined() || token.is_none() {
                return String::new();
            }
            let token = token.as_str().map(str::to_string).unwrap_or_else(|| token.to_string());
            tokens.get(token.as_str()).map_or(token.clone(), |w| w.to_string())
        });
        // `<time datetime="{{ at|machine }}">{{ at|when }}</time>`: a moment (ms) in the zone,
        // for people and for machines.
        let clock = Clock::new(time_zone, hebrew);
        let (people, machines) = (clock.clone(), clock.clone());
        env.add_filter("when", move |ms: Option<i64>| ms.map(|ms| people.time(ms)).unwrap_or_default());
        env.add_filter("machine", move |ms: Option<i64>| ms.map(|ms| machines.machine(ms)).unwrap_or_default());
        let dir = if RIGHT_TO_LEFT.contains(&primary.as_str()) { "rtl" } else { "ltr" };
        Pages { env, lang: primary, dir, words, lead_fields, clock }
    }

    pub fn word(&self, key: &str) -> &'static str {
        self.words.get(key).copied().unwrap_or("?")
    }

    /// A built-in lead field in words; `None` for a field of the business's own.
    pub fn lead_field(&self, field: &str) -> Option<&'static str> {
        self.lead_fields.get(field).copied()
    }

    /// The page `name` with `data`, plus what every page has: the words, `lang`, `dir`, the
    /// zone, and `arrow` (from what to what, in the reading direction).
    pub fn render(&self, name: &str, status: StatusCode, data: impl Serialize) -> Response {
        let arrow = if self.dir == "rtl" { "←" } else { "→" };
        let page = minijinja::context! {
            t => &self.words, lang => &self.lang, dir => self.dir, zone => &self.clock.zone_name, arrow => arrow,
            ..minijinja::Value::from_serialize(&data)
        };
        match self.env.get_template(name).and_then(|t| t.render(page)) {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "a CRM page failed to render");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>error</title><p>The page failed to render.</p>".into(),
                )
            }
        }
    }
}

/// Pages are private and change: never cached, never framed, and their links never leak the
/// address of the page (a recording's link is signed, but it should not travel either).
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    secure_headers(response.headers_mut());
    response
}

pub fn secure_headers(headers: &mut axum::http::HeaderMap) {
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "cache-control", "no-store");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-frame-options", "DENY");
    // Recordings and WhatsApp media come from S3's presigned URLs in AWS: any https origin.
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data: https:; media-src 'self' https:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hebrew_is_right_to_left_and_english_left_to_right() {
        let he = Pages::new("he-IL", "Asia/Jerusalem");
        assert_eq!((he.lang.as_str(), he.dir, he.word("calls")), ("he", "rtl", "שיחות"));
        let en = Pages::new("en-US", "UTC");
        assert_eq!((en.lang.as_str(), en.dir, en.word("calls")), ("en", "ltr", "Calls"));
    }

    #[test]
    fn every_word_has_both_languages_once() {
        let mut seen = std::collections::HashSet::new();
        for (key, he, en) in WORDS {
            assert!(seen.insert(key), "{key} twice");
            assert!(!he.is_empty() && !en.is_empty(), "{key}");
        }
    }

    #[test]
    fn every_built_in_lead_field_has_words() {
        let schema = callkeeper_core::profile::default_extraction_schema();
        let he = Pages::new("he-IL", "Asia/Jerusalem");
        let fields: Vec<&String> = schema["properties"].as_object().unwrap().keys().filter(|k| *k != "summary" && *k != "intent").collect();
        assert_eq!(fields.len(), LEAD_FIELDS.len());
        for field in fields {
            assert!(he.lead_field(field).is_some_and(|w| !w.is_ascii()), "{field}");
        }
        assert_eq!(he.lead_field("cake"), None, "a business's own field has none");
    }
}
