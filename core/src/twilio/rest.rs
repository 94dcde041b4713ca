//! Twilio's REST API, the parts callkeeper needs: redirect or hang up a live call, place an
//! outbound call, fetch a recording, send a WhatsApp or SMS message.
//!
//! Requests retry with exponential backoff on 429, 5xx and network errors, bounded in attempts
//! and in total time, honouring `Retry-After`. A request that creates something (a call, a
//! message) is retried only when Twilio cannot have acted on it (429, or no connection), so a
//! retry never places a second call. Both of Twilio's error bodies are understood: the 2010 API's
//! `{"code", "message", "more_info", "status"}` and the product APIs' `{"errors": [{"code",
//! "message", …}]}`. Codes 21220 and 20404 on a call mean it is over, which is an answer, not a
//! failure.

use crate::domain::ids::{AccountSid, CallSid};
use crate::domain::secrets::Secret;
use crate::domain::url::AbsoluteUrl;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// "Call is not in-progress. Cannot redirect."
pub const CALL_NOT_IN_PROGRESS: u32 = 21220;
/// "The requested resource was not found."
pub const NOT_FOUND: u32 = 20404;

/// Redirects followed for one request (Twilio's media answers with one, to its CDN).
const MAX_REDIRECTS: usize = 3;

/// Where Twilio's media URLs redirect: its CDN, over https, by name (never an address, so
/// never a private or link-local one), either as a host of its own or as the path-style S3
/// bucket `media.twiliocdn.com`. Twilio's own API calls never redirect.
pub fn is_media_host(url: &url::Url) -> bool {
    let Some(url::Host::Domain(host)) = url.host() else { return false };
    let host = host.to_ascii_lowercase();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    let s3_bucket = (host == "s3.amazonaws.com" || host.starts_with("s3-external-1.") && under("amazonaws.com"))
        && url.path_segments().and_then(|mut s| s.next()) == Some("media.twiliocdn.com");
    url.scheme() == "https" && url.port().is_none() && (under("twiliocdn.com") || under("twilio.com") || s3_bucket)
}

/// A recording's download: an hour of dual-channel 8 kHz audio is 115 MB.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub total: Duration,
    /// Each attempt's own timeout.
    pub per_attempt: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            total: Duration::from_secs(10),
            per_attempt: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// Twilio answered with an error.
    #[error("Twilio answered HTTP {status}{}: {message}", code.map(|c| format!(" (error {c})")).unwrap_or_default())]
    Api { status: u16, code: Option<u32>, message: String, more_info: Option<String> },
    /// No answer: connection, timeout, TLS.
    #[error("could not reach Twilio: {0}")]
    Network(String),
    /// The answer was not what the API documents.
    #[error("unexpected answer from Twilio: {0}")]
    Unexpected(String),
}

impl RestError {
    pub fn code(&self) -> Option<u32> {
        match self {
            RestError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// Certainly not carried out: Twilio answered with an error, or was never reached. A timeout
    /// or a cut answer is not: the request may have been taken.
    pub fn not_sent(&self) -> bool {
        match self {
            RestError::Api { .. } => true,
            RestError::Network(reason) => reason.starts_with("connect"),
            RestError::Unexpected(_) => false,
        }
    }

    /// Worth another try: Twilio was busy or failed, or did not answer.
    pub fn is_transient(&self) -> bool {
        match self {
            RestError::Api { status, .. } => *status == 429 || *status >= 500,
            RestError::Network(_) => true,
            RestError::Unexpected(_) => false,
        }
    }
}

/// Reads either of Twilio's error bodies.
pub fn parse_error(status: u16, body: &str) -> RestError {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let first = value.get("errors").and_then(|e| e.get(0)).unwrap_or(&value);
    let code = first.get("code").and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok()))).map(|c| c as u32);
    let message = first.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
        let text: String = body.chars().take(200).collect();
        if text.trim().is_empty() {
            "no details".to_string()
        } else {
            text
        }
    });
    let more_info = first.get("more_info").or_else(|| first.get("infoUrl")).and_then(Value::as_str).map(str::to_string);
    RestError::Api { status, code, message, more_info }
}

/// What to do with a live call.
#[derive(Debug, Clone)]
pub enum CallUpdate {
    /// Replace its TwiML: the call moves on at once.
    Twiml(String),
    Url(AbsoluteUrl),
    /// Hang up.
    Complete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// Twilio took the update; the call's status as it answered.
    Done { status: String },
    /// The call had already ended (21220 or 20404): nothing to update.
    CallOver { code: u32 },
}

/// An outbound call to place.
#[derive(Debug, Clone, Default)]
pub struct OutboundCall {
    pub to: String,
    pub from: String,
    /// Where Twilio fetches the call's TwiML when answered, or the TwiML itself.
    pub url: Option<AbsoluteUrl>,
    pub twiml: Option<String>,
    pub status_callback: Option<AbsoluteUrl>,
    /// e.g. `["initiated", "ringing", "answered", "completed"]`.
    pub status_callback_events: Vec<String>,
    /// Record the whole call from the API (the TwiML can record instead).
    pub record: bool,
    pub recording_channels: Option<String>,
    pub recording_status_callback: Option<AbsoluteUrl>,
    /// `Enable` or `DetectMessageEnd`.
    pub machine_detection: Option<String>,
    pub timeout_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub sid: String,
    pub status: String,
}

/// A WhatsApp or SMS message to send. WhatsApp addresses are `whatsapp:+E164`.
#[derive(Debug, Clone, Default)]
pub struct OutboundMessage {
    pub to: String,
    pub from: String,
    pub body: String,
    pub media_urls: Vec<AbsoluteUrl>,
    pub status_callback: Option<AbsoluteUrl>,
}

/// A call, as `GET Calls/{sid}.json` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioCall {
    /// `queued`, `ringing`, `in-progress`, `completed`, `busy`, `failed`, `no-answer`, `canceled`.
    pub status: String,
    pub from: String,
    pub to: String,
    /// `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: String,
}

impl TwilioCall {
    /// Whether nobody can be on the line any more.
    pub fn is_over(&self) -> bool {
        is_final_status(&self.status)
    }
}

/// Twilio's call statuses after which nobody is on the line.
pub fn is_final_status(status: &str) -> bool {
    matches!(status, "completed" | "busy" | "failed" | "no-answer" | "canceled")
}

/// A recording on Twilio's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioRecording {
    pub sid: String,
    pub call_sid: String,
    pub status: String,
    pub duration_secs: Option<u64>,
    pub channels: Option<u64>,
    pub source: Option<String>,
    pub created_at: Option<crate::domain::time::Millis>,
}

/// The account, as `GET Accounts/{sid}.json` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioAccount {
    pub sid: String,
    pub friendly_name: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    /// `Trial` or `Full`.
    pub kind: String,
}

/// One of the account's phone numbers, as `IncomingPhoneNumbers` has it: where Twilio sends its
/// calls and messages. An empty string is a URL not set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncomingNumber {
    /// `PN…`.
    pub sid: String,
    pub phone_number: String,
    pub voice_url: String,
    pub voice_method: String,
    pub voice_fallback_url: String,
    pub voice_fallback_method: String,
    pub status_callback: String,
    pub status_callback_method: String,
    pub sms_url: String,
    pub sms_method: String,
    pub voice_capable: bool,
    pub sms_capable: bool,
}

impl IncomingNumber {
    fn from_json(item: &Value) -> Option<IncomingNumber> {
        let text = |field: &str| item[field].as_str().unwrap_or_default().to_string();
        let number = IncomingNumber {
            sid: item["sid"].as_str()?.to_string(),
            phone_number: item["phone_number"].as_str()?.to_string(),
            voice_url: text("voice_url"),
            voice_method: text("voice_method"),
            voice_fallback_url: text("voice_fallback_url"),
            voice_fallback_method: text("voice_fallback_method"),
            status_callback: text("status_callback"),
            status_callback_method: text("status_callback_method"),
            sms_url: text("sms_url"),
            sms_method: text("sms_method"),
            voice_capable: item["capabilities"]["voice"].as_bool().unwrap_or(false),
            sms_capable: item["capabilities"]["sms"].as_bool().unwrap_or(false),
        };
        Some(number)
    }

    /// The value of one of the fields `update_incoming_number` sets, by its form name.
    pub fn field(&self, name: &str) -> Option<&str> {
        Some(match name {
            "VoiceUrl" => &self.voice_url,
            "VoiceMethod" => &self.voice_method,
            "VoiceFallbackUrl" => &self.voice_fallback_url,
            "VoiceFallbackMethod" => &self.voice_fallback_method,
            "StatusCallback" => &self.status_callback,
            "StatusCallbackMethod" => &self.status_callback_method,
            "SmsUrl" => &self.sms_url,
            "SmsMethod" => &self.sms_method,
            _ => return None,
        })
    }
}

#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account: AccountSid,
    /// The auth token, and the secondary one during a rotation.
    auth_tokens: Arc<[Secret]>,
    /// Which of them Twilio took last: once the secondary is promoted, the primary is refused
    /// (401), and every request after goes with the one that worked.
    current: Arc<AtomicUsize>,
    retry: RetryPolicy,
}

impl TwilioRest {
    pub fn new(base: &str, account: AccountSid, auth_token: Secret, retry: RetryPolicy) -> TwilioRest {
        Self::with_tokens(base, account, vec![auth_token], retry)
    }

    /// The client for `account`, with its auth token and, during a rotation, the secondary one
    /// after it.
    pub fn with_tokens(base: &str, account: AccountSid, auth_tokens: Vec<Secret>, retry: RetryPolicy) -> TwilioRest {
        let http = reqwest::Client::builder()
            .timeout(retry.per_attempt)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if is_media_host(attempt.url()) {
                    attempt.follow()
                } else {
                    let refused = format!("a redirect to {} is not to Twilio's media hosts", attempt.url().origin().ascii_serialization());
                    attempt.error(refused)
                }
            }))
            .build()
            .expect("a TLS client builds");
        let base = base.trim_end_matches('/').to_string();
        TwilioRest { http, base, account, auth_tokens: auth_tokens.into(), current: Arc::default(), retry }
    }

    fn account_url(&self, path: &str) -> String {
        format!("{}/2010-04-01/Accounts/{}{path}", self.base, self.account)
    }

    /// Redirects or hangs up a live call.
    pub async fn update_call(&self, call_sid: &CallSid, update: &CallUpdate) -> Result<Updated, RestError> {
        let form: Vec<(&str, String)> = match update {
            CallUpdate::Twiml(doc) => vec![("Twiml", doc.clone())],
            CallUpdate::Url(url) => vec![("Url", url.to_string()), ("Method", "POST".into())],
            CallUpdate::Complete => vec![("Status", "completed".into())],
        };
        let url = self.account_url(&format!("/Calls/{call_sid}.json"));
        match self.send(reqwest::Method::POST, &url, Some(&form), true).await {
            Ok(body) => Ok(Updated::Done { status: json_field(&body, "status")? }),
            Err(e) => match e.code() {
                Some(code @ (CALL_NOT_IN_PROGRESS | NOT_FOUND)) => Ok(Updated::CallOver { code }),
                _ => Err(e),
            },
        }
    }

    /// A call as Twilio has it; `None` when Twilio has no such call.
    pub async fn fetch_call(&self, call_sid: &CallSid) -> Result<Option<TwilioCall>, RestError> {
        let url = self.account_url(&format!("/Calls/{call_sid}.json"));
        match self.send(reqwest::Method::GET, &url, None, true).await {
            Ok(body) => Ok(Some(TwilioCall {
                status: json_field(&body, "status")?,
                from: body["from"].as_str().unwrap_or_default().to_string(),
                to: body["to"].as_str().unwrap_or_default().to_string(),
                direction: body["direction"].as_str().unwrap_or_default().to_string(),
            })),
            Err(e) if e.code() == Some(NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The account's recordings created on or after `date` (`YYYY-MM-DD`, GMT), every page of
    /// them (at most `MAX_PAGES` of 1,000).
    pub async fn recordings_since(&self, date: &str) -> Result<Vec<TwilioRecording>, RestError> {
        const MAX_PAGES: usize = 20;
        // `DateCreated>` is a date-time in Twilio's API definition: midnight GMT of `date`, as
        // twilio-python sends it (its docs' examples show a bare date; the definition decides).
        let mut url = self.account_url(&format!("/Recordings.json?PageSize=1000&DateCreated%3E={date}T00%3A00%3A00Z"));
        let mut recordings = Vec::new();
        for _ in 0..MAX_PAGES {
            let body = self.send(reqwest::Method::GET, &url, None, true).await?;
            let page = body["recordings"].as_array().ok_or_else(|| RestError::Unexpected("no recordings list".into()))?;
            for item in page {
                let text = |field: &str| item[field].as_str().map(str::to_string);
                let (Some(sid), Some(call_sid), Some(status)) = (text("sid"), text("call_sid"), text("status")) else { continue };
                recordings.push(TwilioRecording {
                    sid,
                    call_sid,
                    status,
                    duration_secs: text("duration").and_then(|d| d.parse().ok()),
                    channels: item["channels"].as_u64(),
                    source: text("source"),
                    created_at: text("date_created").and_then(|d| crate::domain::time::parse_twilio_date(&d)),
                });
            }
            match body["next_page_uri"].as_str() {
                Some(next) if !next.is_empty() => url = format!("{}{next}", self.base),
                _ => return Ok(recordings),
            }
        }
        tracing::warn!(pages = MAX_PAGES, "Twilio's recordings list is longer than the pages read");
        Ok(recordings)
    }

    /// The account the credentials are for: what answers only when they work.
    pub async fn fetch_account(&self) -> Result<TwilioAccount, RestError> {
        let body = self.send(reqwest::Method::GET, &self.account_url(".json"), None, true).await?;
        Ok(TwilioAccount {
            sid: json_field(&body, "sid")?,
            friendly_name: body["friendly_name"].as_str().unwrap_or_default().to_string(),
            status: json_field(&body, "status")?,
            kind: body["type"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// The account's phone numbers (at most 1,000), or with `phone_number` the one that is it.
    pub async fn incoming_numbers(&self, phone_number: Option<&str>) -> Result<Vec<IncomingNumber>, RestError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("PageSize", "1000");
        if let Some(number) = phone_number {
            query.append_pair("PhoneNumber", number);
        }
        let url = self.account_url(&format!("/IncomingPhoneNumbers.json?{}", query.finish()));
        let body = self.send(reqwest::Method::GET, &url, None, true).await?;
        let page =
            body["incoming_phone_numbers"].as_array().ok_or_else(|| RestError::Unexpected("no incoming_phone_numbers list".into()))?;
        Ok(page.iter().filter_map(IncomingNumber::from_json).collect())
    }

    /// Sets fields of a number (`VoiceUrl`, `VoiceMethod`, … by their form names) and answers
    /// the number as Twilio then has it. Setting a field twice is the same as once.
    pub async fn update_incoming_number(&self, sid: &str, fields: &[(&str, String)]) -> Result<IncomingNumber, RestError> {
        let url = self.account_url(&format!("/IncomingPhoneNumbers/{sid}.json"));
        let body = self.send(reqwest::Method::POST, &url, Some(fields), true).await?;
        IncomingNumber::from_json(&body).ok_or_else(|| RestError::Unexpected("no number in the answer".into()))
    }

    /// Places an outbound call.
    pub async fn create_call(&self, call: &OutboundCall) -> Result<Created, RestError> {
        let mut form: Vec<(&str, String)> = vec![("To", call.to.clone()), ("From", call.from.clone())];
        match (&call.url, &call.twiml) {
            (Some(url), _) => form.extend([("Url", url.to_string()), ("Method", "POST".into())]),
            (None, Some(twiml)) => form.push(("Twiml", twiml.clone())),
            (None, None) => return Err(RestError::Unexpected("an outbound call needs a Url or TwiML".into())),
        }
        if let Some(cb) = &call.status_callback {
            form.extend([("StatusCallback", cb.to_string()), ("StatusCallbackMethod", "POST".into())]);
            form.extend(call.status_callback_events.iter().map(|e| ("StatusCallbackEvent", e.clone())));
        }
        if call.record {
            form.push(("Record", "true".into()));
        }
        if let Some(channels) = &call.recording_channels {
            form.push(("RecordingChannels", channels.clone()));
        }
        if let Some(cb) = &call.recording_status_callback {
            form.push(("RecordingStatusCallback", cb.to_string()));
        }
        if let Some(mode) = &call.machine_detection {
            form.push(("MachineDetection", mode.clone()));
        }
        if let Some(secs) = call.timeout_secs {
            form.push(("Timeout", secs.to_string()));
        }
        let body = self.send(reqwest::Method::POST, &self.account_url("/Calls.json"), Some(&form), false).await?;
        Ok(Created { sid: json_field(&body, "sid")?, status: json_field(&body, "status")? })
    }

    /// Sends a WhatsApp or SMS message.
    pub async fn send_message(&self, message: &OutboundMessage) -> Result<Created, RestError> {
        let mut form: Vec<(&str, String)> =
            vec![("To", message.to.clone()), ("From", message.from.clone()), ("Body", message.body.clone())];
        form.extend(message.media_urls.iter().map(|u| ("MediaUrl", u.to_string())));
        if let Some(cb) = &message.status_callback {
            form.push(("StatusCallback", cb.to_string()));
        }
        let body = self.send(reqwest::Method::POST, &self.account_url("/Messages.json"), Some(&form), false).await?;
        Ok(Created { sid: json_field(&body, "sid")?, status: json_field(&body, "status")? })
    }

    /// Sends an approved template (WhatsApp outside its 24-hour window): `ContentSid` and its
    /// `ContentVariables` (a JSON object) instead of a `Body`.
    pub async fn send_template(&self, message: &OutboundMessage, content_sid: &str, variables: &str) -> Result<Created, RestError> {
        let mut form: Vec<(&str, String)> = vec![
            ("To", message.to.clone()),
            ("From", message.from.clone()),
            ("ContentSid", content_sid.to_string()),
            ("ContentVariables", variables.to_string()),
        ];
        if let Some(cb) = &message.status_callback {
            form.push(("StatusCallback", cb.to_string()));
        }
        let body = self.send(reqwest::Method::POST, &self.account_url("/Messages.json"), Some(&form), false).await?;
        Ok(Created { sid: json_field(&body, "sid")?, status: json_field(&body, "status")? })
    }

    /// Downloads a recording's media (the `RecordingUrl` Twilio gave, with `.wav` or `.mp3`).
    /// A recording's WAV, from Twilio's API by its sid. Never from the `RecordingUrl` a callback
    /// names: the request carries the auth token, and a URL is only as trustworthy as the host
    /// it points at.
    pub async fn fetch_recording(&self, recording_sid: &crate::domain::ids::RecordingSid) -> Result<Vec<u8>, RestError> {
        let url = self.account_url(&format!("/Recordings/{recording_sid}.wav"));
        self.send_bytes_within(reqwest::Method::GET, &url, None, true, DOWNLOAD_TIMEOUT).await
    }

    /// A message's media (a picture, a voice note), by the `MediaUrl` Twilio's webhook gave. Only
    /// this account's media is fetched with its credentials: any other URL is refused, so a
    /// forged or odd URL can neither leak the auth token nor reach inside our network.
    pub async fn fetch_media(&self, url: &str) -> Result<Vec<u8>, RestError> {
        let Some(url) = self.account_media(url) else {
            return Err(RestError::Unexpected(format!("media URL {url:?} is not this account's")));
        };
        self.send_bytes_within(reqwest::Method::GET, url.as_str(), None, true, DOWNLOAD_TIMEOUT).await
    }

    /// `url`, parsed and normalized (`%2e%2e`, `\`, `./` resolved as a server would), if it is
    /// exactly `{API}/2010-04-01/Accounts/{this account}/Messages/{MM|SM…}/Media/{ME…}`: a
    /// string prefix is not enough, as a path that climbs out of it reaches the rest of the API
    /// with our credentials.
    fn account_media(&self, url: &str) -> Option<url::Url> {
        let (url, base) = (url::Url::parse(url).ok()?, url::Url::parse(&self.base).ok()?);
        let plain = url.username().is_empty() && url.password().is_none() && url.query().is_none() && url.fragment().is_none();
        if !plain || url.origin() != base.origin() {
            return None;
        }
        let prefix: Vec<&str> = base.path_segments()?.filter(|s| !s.is_empty()).collect();
        let segments: Vec<&str> = url.path_segments()?.collect();
        let rest = segments.strip_prefix(prefix.as_slice())?;
        let sid = |value: &str, kinds: &[&str]| {
            value.len() == 34 && kinds.contains(&&value[..2]) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
        };
        match rest {
            ["2010-04-01", "Accounts", account, "Messages", message, "Media", media]
                if *account == self.account.as_str() && sid(message, &["MM", "SM"]) && sid(media, &["ME"]) =>
            {
                Some(url)
            }
            _ => None,
        }
    }

    /// Deletes a recording from Twilio (once it is kept elsewhere). A recording already gone is fine.
    pub async fn delete_recording(&self, recording_sid: &crate::domain::ids::RecordingSid) -> Result<(), RestError> {
        let url = self.account_url(&format!("/Recordings/{recording_sid}.json"));
        match self.send_bytes(reqwest::Method::DELETE, &url, None, true).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(NOT_FOUND) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, String)]>,
        idempotent: bool,
    ) -> Result<Value, RestError> {
        let bytes = self.send_bytes(method, url, form, idempotent).await?;
        serde_json::from_slice(&bytes).map_err(|e| RestError::Unexpected(format!("not JSON: {e}")))
    }

    /// One request with the retry policy. A request that is not `idempotent` is retried only
    /// when Twilio surely did not act on it.
    async fn send_bytes(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, String)]>,
        idempotent: bool,
    ) -> Result<Vec<u8>, RestError> {
        self.send_bytes_within(method, url, form, idempotent, self.retry.per_attempt).await
    }

    /// [`Self::send_bytes`], each attempt given `per_attempt`.
    async fn send_bytes_within(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, String)]>,
        idempotent: bool,
        per_attempt: Duration,
    ) -> Result<Vec<u8>, RestError> {
        let started = Instant::now();
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        let mut tokens_tried = 1;
        loop {
            let token = self.current.load(Ordering::Relaxed) % self.auth_tokens.len();
            let (result, retry_after) = self.attempt(method.clone(), url, form, &self.auth_tokens[token], per_attempt).await;
            let error = match result {
                Ok(bytes) => return Ok(bytes),
                Err(e) => e,
            };
            // Refused credentials: Twilio did nothing, so the other token may be tried at once.
            if matches!(error, RestError::Api { status: 401, .. }) && tokens_tried < self.auth_tokens.len() {
                tokens_tried += 1;
                let _ = self.current.compare_exchange(token, (token + 1) % self.auth_tokens.len(), Ordering::Relaxed, Ordering::Relaxed);
                tracing::warn!(%url, "Twilio refused the auth token; trying the other one (a rotation in progress?)");
                continue;
            }
            let retryable = match (&error, idempotent) {
                (_, true) => error.is_transient(),
                (RestError::Api { status: 429, .. }, false) => true,
                (RestError::Network(reason), false) => reason.starts_with("connect"),
                _ => false,
            };
            let wait = retry_after.unwrap_or(delay).min(self.retry.max_delay);
            if !retryable || attempt >= self.retry.attempts || started.elapsed() + wait > self.retry.total {
                if attempt > 1 {
                    tracing::warn!(%url, attempts = attempt, error = %error, "Twilio request failed after retries");
                }
                return Err(error);
            }
            tracing::info!(%url, attempt, error = %error, wait_ms = wait.as_millis() as u64, "Twilio request failed; retrying");
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.retry.max_delay);
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, String)]>,
        auth_token: &Secret,
        per_attempt: Duration,
    ) -> (Result<Vec<u8>, RestError>, Option<Duration>) {
        let mut request = self.http.request(method, url).timeout(per_attempt).basic_auth(self.account.as_str(), Some(auth_token.expose()));
        if let Some(form) = form {
            let body: String =
                form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str()))).finish();
            request = request.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if e.is_redirect() {
                    // Refused by the policy above: no retry changes where it points.
                    // reqwest's own text leaves the policy's reason to the error's source.
                    let why = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
                    return (Err(RestError::Unexpected(format!("refused: {}: {why}", e.without_url()))), None);
                }
                let kind = if e.is_connect() {
                    "connect"
                } else if e.is_timeout() {
                    "timeout"
                } else {
                    "request"
                };
                return (Err(RestError::Network(format!("{kind}: {e}"))), None);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            // The buffer itself, not a copy: a recording can be tens of megabytes.
            Ok(bytes) => Vec::from(bytes),
            Err(e) => return (Err(RestError::Network(format!("body: {e}"))), None),
        };
        if (200..300).contains(&status) {
            (Ok(bytes), None)
        } else {
            (Err(parse_error(status, &String::from_utf8_lossy(&bytes))), retry_after)
        }
    }
}

fn json_field(body: &Value, name: &str) -> Result<String, RestError> {
    body.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| RestError::Unexpected(format!("no \"{name}\" in the answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_are_read() {
        let classic = r#"{"code": 21220, "message": "Call is not in-progress. Cannot redirect.", "more_info": "https://www.twilio.com/docs/errors/21220", "status": 400}"#;
        match parse_error(400, classic) {
            RestError::Api { status: 400, code: Some(21220), message, more_info: Some(info) } => {
                assert!(message.starts_with("Call is not in-progress") && info.ends_with("21220"));
            }
            other => panic!("{other:?}"),
        }
        let product = r#"{"errors": [{"code": 20404, "message": "Not Found", "infoUrl": "https://www.twilio.com/docs/api/errors/20404", "context": "null"}]}"#;
        assert_eq!(parse_error(404, product).code(), Some(20404));
        let html = parse_error(502, "<html>Bad Gateway</html>");
        assert!(matches!(html, RestError::Api { status: 502, code: None, ref message, .. } if message.contains("Bad Gateway")));
        assert_eq!(parse_error(503, "").to_string(), "Twilio answered HTTP 503: no details");
    }

    #[test]
    fn only_this_accounts_media_paths_are_media() {
        let account = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
        let rest = TwilioRest::new("https://api.twilio.com", account, Secret::new("t"), RetryPolicy::default());
        let base = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages";
        let (mm, me) = (format!("MM{}", "ab".repeat(16)), format!("ME{}", "cd".repeat(16)));
        assert!(rest.account_media(&format!("{base}/{mm}/Media/{me}")).is_some());
        assert!(rest.account_media(&format!("{base}/SM{}/Media/{me}", "0".repeat(32))).is_some());
        for bad in [
            format!("{base}/%2e%2e/%2e%2e/Calls.json"),
            format!("{base}/.%2E/{mm}/Media/{me}"),
            format!("{base}/{mm}/Media/{me}/%2e%2e/%2e%2e/%2e%2e/Recordings.json"),
            format!("{base}/{mm}/Media/..\\..\\..\\Recordings.json"),
            format!("{base}/{mm}/Media/{me}?x=1"),
            format!("{base}/{mm}/Media/{me}.json"),
            format!("{base}/{mm}/Media"),
            format!("{}/{mm}/Media/{me}", base.replace("api.twilio.com", "api.twilio.com@evil.example")),
            format!("{}/{mm}/Media/{me}", base.replace("https://api.twilio.com", "https://api.twilio.com.evil.example")),
            format!("{}/{mm}/Media/{me}", base.replace("https", "http")),
            format!("{}/{mm}/Media/{me}", base.replace("0123456789abcdef0123456789abcdef", "ffffffffffffffffffffffffffffffff")),
        ] {
            assert!(rest.account_media(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn redirects_go_only_to_twilios_media_hosts_over_https() {
        let host = |u: &str| is_media_host(&url::Url::parse(u).unwrap());
        assert!(host("https://media.twiliocdn.com/AC1/abc"));
        assert!(host("https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC1/abc"));
        assert!(host("https://api.twilio.com/2010-04-01/x"));
        for bad in [
            "http://media.twiliocdn.com/AC1/abc",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/x",
            "https://127.0.0.1/x",
            "https://twiliocdn.com.evil.example/x",
            "https://eviltwiliocdn.com/x",
            "https://s3-external-1.amazonaws.com/another-bucket/x",
            "https://media.twiliocdn.com:8443/x",
        ] {
            assert!(!host(bad), "{bad}");
        }
    }
}
