//! Configuration from the environment, validated once at start. A bad or missing setting stops
//! the process with one line naming every setting that is wrong.

use crate::domain::ids::AccountSid;
use crate::domain::phone::E164;
use crate::domain::secrets::Secret;
use crate::domain::url::AbsoluteUrl;
use crate::twilio::twiml::Apology;
use hmac::{Hmac, Mac};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// What a caller gets when the media stream fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackMode {
    /// Record a message, transcribed like every call.
    Voicemail,
    /// Ring a person.
    Dial(E164),
}

impl FallbackMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            FallbackMode::Voicemail => "voicemail",
            FallbackMode::Dial(_) => "dial",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fallback {
    pub mode: FallbackMode,
    pub apology: Apology,
    pub voicemail_max_secs: u32,
    pub dial_timeout_secs: u32,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// How long a call may wait for its stream's `start` before it falls back.
    pub stream_start: Duration,
    /// How often the relay writes a heartbeat while media flows.
    pub heartbeat_interval: Duration,
    /// A streaming call whose heartbeat is older than this has lost its stream.
    pub heartbeat_stale: Duration,
}

/// Who the caller talks to on the media stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceAgentKind {
    /// Built in, no network: greets, and answers each caller turn with a short prompt.
    Embedded,
    /// Listens and says nothing: the call is still recorded and transcribed afterwards.
    Silent,
    /// OpenAI's Realtime API, speech to speech (needs `OPENAI_API_KEY`).
    OpenAi,
}

impl VoiceAgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VoiceAgentKind::Embedded => "embedded",
            VoiceAgentKind::Silent => "silent",
            VoiceAgentKind::OpenAi => "openai",
        }
    }
}

/// How the Realtime model finds the end of the caller's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnDetection {
    /// By silence: quick and predictable on a phone line.
    ServerVad,
    /// By what was said: waits out a caller who pauses mid-sentence.
    SemanticVad,
}

#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// The Realtime WebSocket, without the query: `?model=` is added.
    pub url: String,
    pub model: String,
    pub turn_detection: TurnDetection,
    /// The input transcription model: the caller's words in the live transcript.
    pub transcribe_model: String,
    /// How long the model's socket may take to open and confirm the session.
    pub connect_timeout: Duration,
    /// A session this old is replaced at the next quiet moment: the API ends one at 60 minutes.
    pub rotate_after: Duration,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// On SIGTERM, how long live calls may go on before their sockets are closed.
    pub drain_deadline: Duration,
    /// Names this relay on the calls it holds.
    pub instance_id: String,
    pub voice_agent: VoiceAgentKind,
    /// Open connections (HTTP and live streams) past which new ones are closed at once.
    pub max_connections: usize,
    /// A started stream with no frame from Twilio this long is ended (`media_silent`).
    pub media_silence: Duration,
    /// While draining, each live call moves to another relay at its next quiet moment, and at
    /// the latest after this long; `None`: calls stay until they end or the drain deadline.
    pub drain_move: Option<Duration>,
    /// On ECS (`ECS_AGENT_URI`), whether the relay protects its task from scale-in while it
    /// holds calls (`RELAY_SCALE_IN_PROTECTION=on`).
    pub scale_in_protection: bool,
    /// On ECS, the ALB target group this relay is registered in (`RELAY_TARGET_GROUP_ARN`): the
    /// relay drains as soon as its target is deregistered, before the ALB closes its streams.
    pub target_group_arn: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The https base Twilio posts webhooks to; signatures are checked against it.
    pub public_base_url: AbsoluteUrl,
    /// The wss base of the relay's media WebSocket.
    pub relay_public_url: AbsoluteUrl,
    pub twilio_account_sid: AccountSid,
    pub twilio_auth_token: Secret,
    /// Also accepted during a rotation of the auth token (`TWILIO_AUTH_TOKEN_SECONDARY`).
    pub twilio_auth_token_secondary: Option<Secret>,
    /// Signs the stream token between webhook and relay.
    pub stream_token_secret: Secret,
    pub timeouts: Timeouts,
    pub fallback: Fallback,
    /// Played before the stream connects, if set.
    pub greeting_url: Option<AbsoluteUrl>,
    /// The agent's language, a BCP 47 tag such as `he-IL`.
    pub language: String,
    /// Receives before a job moves to the dead-letter queue.
    pub queue_max_receives: u32,
    pub relay: RelaySettings,
    /// Twilio's REST API; tests point it at a fake.
    pub twilio_api_base: String,
    /// The number outbound calls come from unless `--from` says otherwise.
    pub twilio_phone_number: Option<E164>,
    pub watchdog: WatchdogSettings,
    /// `None` without `EVENTS_WEBHOOK_URL`: no events go out.
    pub events: Option<EventsSettings>,
    /// `None` without `OPENAI_API_KEY`: recordings are still kept, and calls say transcription
    /// is not configured.
    pub openai: Option<OpenAiSettings>,
    pub transcription: TranscriptionSettings,
    pub jobs: JobSettings,
    pub replies: ReplySettings,
    pub realtime: RealtimeSettings,
    /// Where the agent's `transfer_to_human` sends a call, unless its profile names a number.
    pub transfer_number: Option<E164>,
    /// Proxies in front of `serve` whose `X-Forwarded-For` entries are believed (ngrok: 1), so
    /// the CRM's sign-in limit sees each visitor's address, not the proxy's.
    pub trusted_proxy_hops: usize,
    /// The IANA time zone the CRM shows times in and reads its date filters in
    /// (`CRM_TIME_ZONE`; by default Israel's for Hebrew, UTC otherwise). Checked at start.
    pub crm_time_zone: String,
    /// Whether each call keeps a trace of its webhooks and socket events (`CALL_TRACES`).
    pub call_traces: crate::domain::trace::TraceMode,
    /// `TOOLS_WEBHOOK_SECRET`: signs the relay's requests to a profile's HTTP tools. Without it
    /// those tools answer the model "not configured" and no request leaves.
    pub tools_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ReplySettings {
    /// How the WhatsApp agent behaves, for the LLM.
    pub system_prompt: String,
    /// The answer without an OpenAI key.
    pub fixed_text: String,
}

/// Where the business's own systems are told what happened (see [`crate::domain::events`]).
#[derive(Debug, Clone)]
pub struct EventsSettings {
    /// `EVENTS_WEBHOOK_URL`: every event is POSTed here as JSON.
    pub url: AbsoluteUrl,
    /// `EVENTS_WEBHOOK_SECRET`: signs each delivery (HMAC-SHA256), so the receiver can check it.
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    pub api_key: Secret,
    /// e.g. `https://api.openai.com/v1`; tests point it at a fake.
    pub base_url: String,
    pub transcribe_model: String,
    pub extract_model: String,
}

#[derive(Debug, Clone)]
pub struct TranscriptionSettings {
    /// ISO 639-1, e.g. `he`: asked of the transcription.
    pub language: String,
    /// Recordings shorter than this are recorded and skipped.
    pub min_secs: u64,
    /// Delete the recording from Twilio once it is kept and transcribed.
    pub delete_from_twilio: bool,
    /// The JSON schema of the post-call extraction.
    pub extraction_schema: serde_json::Value,
}

/// How the queue workers hold and retry jobs.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// A failed job's first backoff, doubling with each receive.
    pub retry_base: Duration,
    /// How long a worker's claim on a job holds unrenewed (see `job_claim`).
    pub lease: Duration,
}

impl JobSettings {
    /// How long `serve`'s worker keeps a received job hidden, extended while it runs: twice the
    /// lease, so a dead worker's claim has run out when its job is seen again.
    pub fn visibility(&self) -> Duration {
        self.lease * 2
    }
}

const DEFAULT_REPLY_PROMPT: &str = "You are the business's WhatsApp assistant. Answer in the customer's language (Hebrew unless they \
     wrote otherwise), briefly and politely. Use what they said before, in calls and messages. If you cannot help, say a person \
     will get back to them.";
const DEFAULT_REPLY_TEXT: &str = "תודה על פנייתך! קיבלנו את ההודעה ונחזור אליך בהקדם.";

pub use crate::domain::profile::default_extraction_schema;

#[derive(Debug, Clone)]
pub struct WatchdogSettings {
    /// How often a watchdog looks for stale calls.
    pub poll: Duration,
    /// How long one scheduled invocation keeps polling (EventBridge starts one a minute).
    pub run_for: Duration,
}

/// Twilio's webhook connection overrides, on every URL callkeeper hands Twilio: up to 3 retries
/// on a 5xx or a failed connect. Without them Twilio retries only a failed connect, once, and a
/// callback answered 503 in a store failure would be lost. Users put the same fragment on the
/// URLs they paste into the console (README, Pointing Twilio at it).
pub const CONNECTION_OVERRIDES: &str = "#rc=3&rp=5xx,ct";

/// Every setting, with its default where it has one: the README's table is made from this.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("PUBLIC_BASE_URL", "", "https base of the webhooks, as Twilio calls them"),
    ("RELAY_PUBLIC_URL", "", "wss base of the relay's media WebSocket"),
    ("TWILIO_ACCOUNT_SID", "", "AC… of the account that owns the numbers"),
    ("TWILIO_AUTH_TOKEN", "", "checks Twilio's signatures"),
    (
        "TWILIO_AUTH_TOKEN_SECONDARY",
        "",
        "during a rotation: Twilio's secondary token, also accepted on signatures and tried on the REST API when the primary is refused",
    ),
    ("STREAM_TOKEN_SECRET", "derived from the auth token", "signs the stream token the relay checks"),
    ("STREAM_START_TIMEOUT_SECS", "8", "wait for the stream's start, counted after the greeting"),
    ("HEARTBEAT_INTERVAL_SECS", "4", "relay heartbeat period while media flows"),
    ("HEARTBEAT_STALE_SECS", "7", "heartbeat age at which a stream counts as lost"),
    ("FALLBACK_MODE", "voicemail", "`voicemail` or `dial:+E164`"),
    ("FALLBACK_AUDIO_URL", "", "pre-rendered apology audio; otherwise <Say>"),
    ("FALLBACK_SAY_TEXT", "by language", "apology text for <Say>"),
    ("FALLBACK_SAY_VOICE", "by language", "explicit <Say> voice, e.g. Google.he-IL-Standard-A"),
    ("VOICEMAIL_MAX_SECS", "120", "longest voicemail"),
    ("DIAL_TIMEOUT_SECS", "20", "how long the fallback number rings"),
    ("GREETING_URL", "", "audio played before the stream connects"),
    ("AGENT_LANGUAGE", "he-IL", "the agent's and the apology's language"),
    ("QUEUE_MAX_RECEIVES", "5", "receives before a job is dead-lettered"),
    (
        "VOICE_AGENT",
        "openai with OPENAI_API_KEY, else embedded",
        "`openai` (the Realtime model), `embedded` (built-in prompts, no network) or `silent` (listens only)",
    ),
    (
        "OPENAI_REALTIME_URL",
        "wss://api.openai.com/v1/realtime",
        "the Realtime API's WebSocket (tests point it at a fake); the model goes in `?model=`",
    ),
    ("OPENAI_REALTIME_MODEL", "gpt-realtime", "the speech-to-speech model"),
    ("REALTIME_TURN_DETECTION", "server_vad", "`server_vad` (by silence) or `semantic_vad` (by what was said)"),
    ("REALTIME_TRANSCRIBE_MODEL", "gpt-4o-mini-transcribe", "transcribes the caller live, for the call's live transcript"),
    (
        "REALTIME_ROTATE_SECS",
        "1200",
        "a model session this old is replaced by a new one, seeded with the conversation, at the next quiet moment (the API ends a session at 60 minutes)",
    ),
    ("TRANSFER_NUMBER", "", "+E164 the agent's transfer_to_human dials, unless the number's agent profile names one"),
    ("DRAIN_DEADLINE_SECS", "110", "on SIGTERM, how long the relay lets live calls go on"),
    (
        "DRAIN_MOVE_SECS",
        "15",
        "on SIGTERM, each live call moves to another relay at its next quiet moment, and at the latest after this long; 0 keeps calls until they end",
    ),
    (
        "RELAY_SCALE_IN_PROTECTION",
        "off",
        "`on`: on ECS, a relay holding calls protects its task from scale-in (deploys then wait for its calls to end); `off`: scale-in and deploys move calls",
    ),
    (
        "RELAY_TARGET_GROUP_ARN",
        "",
        "on ECS, the relay's ALB target group: the relay asks it about itself every 5 s and drains (moves its calls) once deregistered, before the ALB closes the streams; unset, only SIGTERM drains",
    ),
    (
        "MEDIA_SILENCE_SECS",
        "3",
        "a started stream with no frame from Twilio for this long (Twilio sends one every 20 ms) is ended by the relay, so the caller gets the fallback",
    ),
    (
        "MAX_CONNECTIONS",
        "4096",
        "open connections (HTTP and live streams) past which new ones are closed at once; a live call also holds a socket to the model, so keep it under half the open-file limit",
    ),
    ("RELAY_INSTANCE_ID", "host name and process id", "names the relay on the calls it holds"),
    ("TWILIO_API_BASE", "https://api.twilio.com", "Twilio's REST API (tests point it at a fake)"),
    ("TWILIO_PHONE_NUMBER", "", "the number `callkeeper call` calls from unless `--from` is given"),
    ("WATCHDOG_POLL_SECS", "1", "how often the watchdog looks for stale calls"),
    (
        "CALL_TRACES",
        "off",
        "`on`: each call keeps a trace of its webhooks, Media Streams and Realtime events (audio as lengths, phone numbers and words redacted), read with `callkeeper calls trace CA…`; `full`: the same unredacted",
    ),
    ("WATCHDOG_RUN_SECS", "55", "how long one scheduled watchdog invocation keeps polling"),
    (
        "CRM_TIME_ZONE",
        "Asia/Jerusalem for Hebrew, else UTC",
        "the IANA time zone the CRM shows times in and reads its date filters in, e.g. Europe/London",
    ),
    (
        "TRUSTED_PROXY_HOPS",
        "0",
        "proxies in front of `serve` (ngrok, a load balancer) whose `X-Forwarded-For` is believed; the CRM's sign-in limit keys on the address they saw (not used behind API Gateway, whose own context says it)",
    ),
    ("OPENAI_API_KEY", "", "turns on transcription and extraction; without it recordings are kept untranscribed"),
    ("OPENAI_BASE_URL", "https://api.openai.com/v1", "OpenAI's API (tests point it at a fake)"),
    ("OPENAI_TRANSCRIBE_MODEL", "whisper-1", "transcription model (segment timestamps need whisper-1)"),
    ("OPENAI_EXTRACT_MODEL", "gpt-4o-mini", "post-call extraction model"),
    ("TRANSCRIPTION_LANGUAGE", "from AGENT_LANGUAGE", "ISO 639-1 language asked of the transcription, e.g. `he`"),
    ("MIN_RECORDING_SECS", "2", "shorter recordings are recorded and skipped"),
    ("DELETE_TWILIO_RECORDINGS", "false", "delete each recording from Twilio once kept and transcribed"),
    ("EXTRACTION_SCHEMA_FILE", "built in", "JSON schema of the post-call extraction (summary, intent, lead fields)"),
    ("REPLY_SYSTEM_PROMPT", "a short, polite Hebrew assistant", "how the WhatsApp agent answers (with OPENAI_API_KEY)"),
    ("REPLY_FIXED_TEXT", "a thank-you in Hebrew", "the WhatsApp answer without OPENAI_API_KEY"),
    ("JOB_RETRY_BASE_SECS", "2", "a failed job's first backoff, doubling with each receive (at most 5 minutes)"),
    (
        "JOB_LEASE_SECS",
        "60",
        "how long a worker's claim on a job holds unrenewed (renewed every third of it); a job in `serve` stays hidden for twice this, so a dead worker's job is retried within it",
    ),
    ("TWILIO_AUTH_TOKEN_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the auth token, read at start"),
    ("TWILIO_AUTH_TOKEN_SECONDARY_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the secondary token, during a rotation"),
    ("STREAM_TOKEN_SECRET_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the stream token secret"),
    ("OPENAI_API_KEY_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the OpenAI key"),
    ("EVENTS_WEBHOOK_URL", "", "POST every business event (call.started, call.ended, call.analyzed, lead.saved, whatsapp.received, whatsapp.sent) here as signed JSON"),
    ("EVENTS_WEBHOOK_SECRET", "", "signs each event delivery (HMAC-SHA256 over `timestamp.body`); at least 16 characters"),
    ("EVENTS_WEBHOOK_SECRET_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the events webhook's secret"),
    (
        "TOOLS_WEBHOOK_SECRET",
        "",
        "signs the relay's requests to the agent profiles' HTTP tools (HMAC-SHA256 over `timestamp.body`, as events are); at least 16 characters; without it those tools are not called",
    ),
    ("TOOLS_WEBHOOK_SECRET_SSM_PARAMETER", "", "in AWS: the SSM parameter holding the tools webhook's secret"),
    ("METRICS_NAMESPACE", "", "emit CloudWatch metrics (EMF lines on stdout) in this namespace; off when unset"),
];

/// Voices we know to speak a language well enough for the apology; others must be configured.
pub fn default_voice(language: &str) -> Option<&'static str> {
    match language {
        "he-IL" => Some("Google.he-IL-Standard-A"),
        "en-US" => Some("Google.en-US-Standard-C"),
        "en-GB" => Some("Google.en-GB-Standard-A"),
        "ar-XA" => Some("Google.ar-XA-Standard-A"),
        "ru-RU" => Some("Google.ru-RU-Standard-A"),
        _ => None,
    }
}

fn default_apology_text(language: &str, mode: &FallbackMode) -> Option<&'static str> {
    let hebrew = language.starts_with("he");
    let english = language.starts_with("en");
    match (mode, hebrew, english) {
        (FallbackMode::Voicemail, true, _) => Some("מצטערים, יש לנו תקלה זמנית. השאירו הודעה אחרי הצליל ונחזור אליכם בהקדם."),
        (FallbackMode::Dial(_), true, _) => Some("מצטערים, יש לנו תקלה זמנית. אנחנו מעבירים אתכם לנציג."),
        (FallbackMode::Voicemail, _, true) => {
            Some("Sorry, we are having a temporary problem. Please leave a message after the tone and we will call you back.")
        }
        (FallbackMode::Dial(_), _, true) => Some("Sorry, we are having a temporary problem. Connecting you to a person now."),
        _ => None,
    }
}

impl Config {
    /// Twilio's REST API for this account, with the auth token (and the secondary one).
    pub fn twilio_rest(&self) -> crate::twilio::rest::TwilioRest {
        let tokens = std::iter::once(&self.twilio_auth_token).chain(&self.twilio_auth_token_secondary).cloned().collect();
        crate::twilio::rest::TwilioRest::with_tokens(
            &self.twilio_api_base,
            self.twilio_account_sid.clone(),
            tokens,
            crate::twilio::rest::RetryPolicy::default(),
        )
    }

    /// The built-in agent profile of this deployment: `AGENT_LANGUAGE`, and the lead fields of
    /// `EXTRACTION_SCHEMA_FILE`.
    pub fn builtin_profile(&self) -> crate::domain::profile::AgentProfile {
        crate::domain::profile::AgentProfile::builtin(&self.language, &self.transcription.extraction_schema)
    }

    /// The keys a Twilio signature may be made with: the auth token, and the secondary one
    /// during a rotation (Twilio signs with whichever is primary at the moment).
    pub fn signature_keys(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.twilio_auth_token).chain(&self.twilio_auth_token_secondary).map(|token| token.expose().as_bytes())
    }

    /// Reads the configuration through `lookup` (the environment, or the environment over local
    /// defaults). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        let mut missing = Vec::new();

        let mut required = |name: &'static str| {
            let value = get(name);
            if value.is_none() {
                missing.push(name);
            }
            value
        };
        let base = required("PUBLIC_BASE_URL");
        let relay = required("RELAY_PUBLIC_URL");
        let account = required("TWILIO_ACCOUNT_SID");
        let token = required("TWILIO_AUTH_TOKEN");
        if !missing.is_empty() {
            errors.push(format!("missing {}", missing.join(", ")));
        }

        let mut check = |result: Result<AbsoluteUrl, crate::domain::url::InvalidUrl>| result.map_err(|e| errors.push(e.to_string())).ok();
        let public_base_url = base.and_then(|v| check(AbsoluteUrl::http_base(&v, "PUBLIC_BASE_URL")));
        let relay_public_url = relay.and_then(|v| check(AbsoluteUrl::ws_base(&v, "RELAY_PUBLIC_URL")));
        let greeting_url = get("GREETING_URL").and_then(|v| check(AbsoluteUrl::http(&v, "GREETING_URL")));
        let events_url = get("EVENTS_WEBHOOK_URL").and_then(|v| check(AbsoluteUrl::http(&v, "EVENTS_WEBHOOK_URL")));
        let fallback_audio = get("FALLBACK_AUDIO_URL").and_then(|v| check(AbsoluteUrl::http(&v, "FALLBACK_AUDIO_URL")));
        let twilio_api_base = match get("TWILIO_API_BASE") {
            None => crate::twilio::rest::DEFAULT_API_BASE.to_string(),
            Some(v) => check(AbsoluteUrl::http_base(&v, "TWILIO_API_BASE")).map(|u| u.to_string()).unwrap_or_default(),
        };

        let twilio_account_sid = account.and_then(|v| {
            AccountSid::parse(&v).map_err(|_| errors.push("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits".into())).ok()
        });

        let mut number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| -> u64 {
            match get(name) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if range.contains(&n) => n,
                    _ => {
                        errors.push(format!("{name} must be a whole number from {} to {}, got {v:?}", range.start(), range.end()));
                        default
                    }
                },
            }
        };
        let stream_start = number("STREAM_START_TIMEOUT_SECS", 8, 1..=120);
        // A relay that hangs is seen by the watchdog alone: the caller's silence is at most the
        // stale age, a poll, the watchdog's 500 ms look and the next stream's start (7 + 1 +
        // 0.5 + ~1 s: under 10 s with a real model's session to open), for 15 heartbeat writes
        // per call-minute. A late heartbeat has 3 s (stale minus interval) before the watchdog
        // moves a healthy call; 8 s left no room under 10 s for the new stream.
        let heartbeat_interval = number("HEARTBEAT_INTERVAL_SECS", 4, 1..=60);
        let heartbeat_stale = number("HEARTBEAT_STALE_SECS", 7, 2..=300);
        let voicemail_max_secs = number("VOICEMAIL_MAX_SECS", 120, 5..=3600) as u32;
        let dial_timeout_secs = number("DIAL_TIMEOUT_SECS", 20, 5..=600) as u32;
        let queue_max_receives = number("QUEUE_MAX_RECEIVES", 5, 1..=1000) as u32;
        let drain_deadline = number("DRAIN_DEADLINE_SECS", 110, 0..=3600);
        let max_connections = number("MAX_CONNECTIONS", 4096, 8..=1_000_000) as usize;
        let media_silence = number("MEDIA_SILENCE_SECS", 3, 1..=60);
        let rotate_after = number("REALTIME_ROTATE_SECS", 1200, 1..=3300);
        let drain_move = number("DRAIN_MOVE_SECS", 15, 0..=3600);
        let watchdog_poll = number("WATCHDOG_POLL_SECS", 1, 1..=60);
        let watchdog_run = number("WATCHDOG_RUN_SECS", 55, 0..=900);
        let trusted_proxy_hops = number("TRUSTED_PROXY_HOPS", 0, 0..=10) as usize;
        let min_recording_secs = number("MIN_RECORDING_SECS", 2, 0..=3600);
        let job_retry_base = number("JOB_RETRY_BASE_SECS", 2, 0..=60);
        let job_lease = number("JOB_LEASE_SECS", 60, 3..=900);
        let scale_in_protection = match get("RELAY_SCALE_IN_PROTECTION").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(v) => {
                errors.push(format!("RELAY_SCALE_IN_PROTECTION must be `on` or `off`, got {v:?}"));
                false
            }
        };
        let call_traces = match crate::domain::trace::TraceMode::parse(get("CALL_TRACES").as_deref().unwrap_or("off")) {
            Some(mode) => mode,
            None => {
                errors.push("CALL_TRACES must be off, on or full".to_string());
                Default::default()
            }
        };
        let target_group_arn = get("RELAY_TARGET_GROUP_ARN").filter(|v| !v.trim().is_empty());
        if target_group_arn.as_deref().is_some_and(|arn| !arn.starts_with("arn:")) {
            errors.push("RELAY_TARGET_GROUP_ARN must be a target group's ARN (arn:aws:elasticloadbalancing:…)".into());
        }
        if heartbeat_stale <= heartbeat_interval {
            errors.push(format!(
                "HEARTBEAT_STALE_SECS ({heartbeat_stale}) must be longer than HEARTBEAT_INTERVAL_SECS ({heartbeat_interval})"
            ));
        }

        let language = get("AGENT_LANGUAGE").unwrap_or_else(|| "he-IL".to_string());
        let crm_time_zone = get("CRM_TIME_ZONE").filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
            let hebrew = language.to_ascii_lowercase().starts_with("he");
            if hebrew { "Asia/Jerusalem" } else { "UTC" }.to_string()
        });
        if jiff::tz::TimeZone::get(&crm_time_zone).is_err() {
            errors.push(format!("CRM_TIME_ZONE must be an IANA time zone such as Asia/Jerusalem or UTC, got {crm_time_zone:?}"));
        }
        let mode = match get("FALLBACK_MODE").as_deref() {
            None | Some("voicemail") => Some(FallbackMode::Voicemail),
            Some(v) => match v.strip_prefix("dial:").and_then(E164::parse) {
                Some(number) => Some(FallbackMode::Dial(number)),
                None => {
                    errors.push(format!("FALLBACK_MODE must be `voicemail` or `dial:+E164`, got {v:?}"));
                    None
                }
            },
        };

        let apology = match (fallback_audio, &mode) {
            (Some(url), _) => Some(Apology::Play(url)),
            (None, Some(mode)) => {
                let text = get("FALLBACK_SAY_TEXT").or_else(|| default_apology_text(&language, mode).map(str::to_string));
                let voice = get("FALLBACK_SAY_VOICE").or_else(|| default_voice(&language).map(str::to_string));
                match (text, voice) {
                    (Some(text), Some(voice)) => Some(Apology::Say { text, language: language.clone(), voice }),
                    _ => {
                        errors.push(format!(
                            "AGENT_LANGUAGE={language} has no default apology: set FALLBACK_SAY_TEXT and FALLBACK_SAY_VOICE, or FALLBACK_AUDIO_URL"
                        ));
                        None
                    }
                }
            }
            (None, None) => None,
        };

        let stream_token_secret = get("STREAM_TOKEN_SECRET").map(Secret::new);
        let events = match (events_url, get("EVENTS_WEBHOOK_SECRET")) {
            (Some(url), Some(secret)) if secret.len() >= 16 => Some(EventsSettings { url, secret: Secret::new(secret) }),
            (Some(_), Some(_)) => {
                errors.push("EVENTS_WEBHOOK_SECRET must be at least 16 characters".into());
                None
            }
            (Some(_), None) => {
                errors.push(
                    "EVENTS_WEBHOOK_URL needs EVENTS_WEBHOOK_SECRET (or EVENTS_WEBHOOK_SECRET_SSM_PARAMETER) to sign its events".into(),
                );
                None
            }
            (None, _) => None,
        };
        let tools_secret = match get("TOOLS_WEBHOOK_SECRET") {
            Some(secret) if secret.len() < 16 => {
                errors.push("TOOLS_WEBHOOK_SECRET must be at least 16 characters".into());
                None
            }
            other => other.map(Secret::new),
        };
        let openai = get("OPENAI_API_KEY").map(|key| OpenAiSettings {
            api_key: Secret::new(key),
            base_url: get("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()).trim_end_matches('/').to_string(),
            transcribe_model: get("OPENAI_TRANSCRIBE_MODEL").unwrap_or_else(|| "whisper-1".into()),
            extract_model: get("OPENAI_EXTRACT_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
        });
        let delete_from_twilio = match get("DELETE_TWILIO_RECORDINGS").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                errors.push(format!("DELETE_TWILIO_RECORDINGS must be true or false, got {v:?}"));
                false
            }
        };
        let extraction_schema = match get("EXTRACTION_SCHEMA_FILE") {
            None => default_extraction_schema(),
            Some(path) => match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(schema) => schema,
                Err(e) => {
                    errors.push(format!("EXTRACTION_SCHEMA_FILE {path}: {e}"));
                    default_extraction_schema()
                }
            },
        };
        let twilio_phone_number = get("TWILIO_PHONE_NUMBER").and_then(|v| {
            let parsed = E164::parse(&v);
            if parsed.is_none() {
                errors.push(format!("TWILIO_PHONE_NUMBER must be +E164, got {v:?}"));
            }
            parsed
        });
        let voice_agent = match get("VOICE_AGENT").as_deref() {
            None if openai.is_some() => VoiceAgentKind::OpenAi,
            None | Some("embedded") => VoiceAgentKind::Embedded,
            Some("silent") => VoiceAgentKind::Silent,
            Some("openai") if openai.is_some() => VoiceAgentKind::OpenAi,
            Some("openai") => {
                errors.push("VOICE_AGENT=openai needs OPENAI_API_KEY (or OPENAI_API_KEY_SSM_PARAMETER)".into());
                VoiceAgentKind::Embedded
            }
            Some(v) => {
                errors.push(format!("VOICE_AGENT must be `openai`, `embedded` or `silent`, got {v:?}"));
                VoiceAgentKind::Embedded
            }
        };
        let realtime_url = get("OPENAI_REALTIME_URL").unwrap_or_else(|| "wss://api.openai.com/v1/realtime".into());
        if AbsoluteUrl::ws_base(&realtime_url, "OPENAI_REALTIME_URL").is_err() || realtime_url.contains('?') {
            errors.push(format!("OPENAI_REALTIME_URL must be an absolute ws(s) URL without a query, got {realtime_url:?}"));
        }
        let turn_detection = match get("REALTIME_TURN_DETECTION").as_deref() {
            None | Some("server_vad") => TurnDetection::ServerVad,
            Some("semantic_vad") => TurnDetection::SemanticVad,
            Some(v) => {
                errors.push(format!("REALTIME_TURN_DETECTION must be `server_vad` or `semantic_vad`, got {v:?}"));
                TurnDetection::ServerVad
            }
        };
        let transfer_number = get("TRANSFER_NUMBER").and_then(|v| {
            let parsed = E164::parse(&v);
            if parsed.is_none() {
                errors.push(format!("TRANSFER_NUMBER must be +E164, got {v:?}"));
            }
            parsed
        });
        let instance_id = get("RELAY_INSTANCE_ID").unwrap_or_else(|| {
            let host = get("HOSTNAME").unwrap_or_else(|| "relay".to_string());
            format!("{host}-{}", std::process::id())
        });

        match (public_base_url, relay_public_url, twilio_account_sid, token, mode, apology) {
            (Some(public_base_url), Some(relay_public_url), Some(twilio_account_sid), Some(token), Some(mode), Some(apology))
                if errors.is_empty() =>
            {
                let twilio_auth_token = Secret::new(token);
                let stream_token_secret = stream_token_secret.unwrap_or_else(|| derive_stream_secret(&twilio_auth_token));
                Ok(Config {
                    public_base_url,
                    relay_public_url,
                    twilio_account_sid,
                    twilio_auth_token,
                    twilio_auth_token_secondary: get("TWILIO_AUTH_TOKEN_SECONDARY").map(Secret::new),
                    stream_token_secret,
                    timeouts: Timeouts {
                        stream_start: Duration::from_secs(stream_start),
                        heartbeat_interval: Duration::from_secs(heartbeat_interval),
                        heartbeat_stale: Duration::from_secs(heartbeat_stale),
                    },
                    fallback: Fallback { mode, apology, voicemail_max_secs, dial_timeout_secs },
                    greeting_url,
                    queue_max_receives,
                    relay: RelaySettings {
                        drain_deadline: Duration::from_secs(drain_deadline),
                        instance_id,
                        voice_agent,
                        max_connections,
                        media_silence: Duration::from_secs(media_silence),
                        drain_move: (drain_move > 0).then(|| Duration::from_secs(drain_move)),
                        scale_in_protection,
                        target_group_arn,
                    },
                    twilio_api_base,
                    twilio_phone_number,
                    watchdog: WatchdogSettings { poll: Duration::from_secs(watchdog_poll), run_for: Duration::from_secs(watchdog_run) },
                    openai,
                    events,
                    transcription: TranscriptionSettings {
                        language: get("TRANSCRIPTION_LANGUAGE").unwrap_or_else(|| language.split('-').next().unwrap_or("he").to_string()),
                        min_secs: min_recording_secs,
                        delete_from_twilio,
                        extraction_schema,
                    },
                    jobs: JobSettings { retry_base: Duration::from_secs(job_retry_base), lease: Duration::from_secs(job_lease) },
                    replies: ReplySettings {
                        system_prompt: get("REPLY_SYSTEM_PROMPT").unwrap_or_else(|| DEFAULT_REPLY_PROMPT.to_string()),
                        fixed_text: get("REPLY_FIXED_TEXT").unwrap_or_else(|| DEFAULT_REPLY_TEXT.to_string()),
                    },
                    realtime: RealtimeSettings {
                        url: realtime_url.trim_end_matches('/').to_string(),
                        model: get("OPENAI_REALTIME_MODEL").unwrap_or_else(|| "gpt-realtime".into()),
                        turn_detection,
                        transcribe_model: get("REALTIME_TRANSCRIBE_MODEL").unwrap_or_else(|| "gpt-4o-mini-transcribe".into()),
                        connect_timeout: Duration::from_secs(3),
                        rotate_after: Duration::from_secs(rotate_after),
                    },
                    transfer_number,
                    trusted_proxy_hops,
                    crm_time_zone,
                    call_traces,
                    tools_secret,
                    language,
                })
            }
            _ => Err(ConfigError(errors)),
        }
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The public URL of one of our webhook paths.
    pub fn webhook_url(&self, path: &str) -> AbsoluteUrl {
        self.public_base_url.join(path)
    }

    /// A webhook's URL as callkeeper hands it to Twilio (TwiML `action`s and callbacks, REST
    /// callbacks): with [`CONNECTION_OVERRIDES`], so that a 503 is retried.
    pub fn callback_url(&self, path: &str) -> AbsoluteUrl {
        self.public_base_url.join(&format!("{path}{CONNECTION_OVERRIDES}"))
    }

    /// The URLs a signed request to `path_and_query` may have been signed over: Twilio's
    /// documentation does not say whether the fragment is part of what it signs (it is never
    /// sent), so both are accepted; the fragment is ours, so neither lets anything else in.
    pub fn signed_urls(&self, path_and_query: &str) -> [AbsoluteUrl; 2] {
        [self.webhook_url(path_and_query), self.callback_url(path_and_query)]
    }
}

/// `QUEUE_MAX_RECEIVES` alone, for commands that need no Twilio settings (`dev-resources`).
pub fn queue_max_receives_from_env() -> Result<u32, ConfigError> {
    match std::env::var("QUEUE_MAX_RECEIVES").ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(5),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ConfigError(vec![format!("QUEUE_MAX_RECEIVES must be a whole number from 1 to 1000, got {v:?}")])),
    }
}

/// One secret fewer to deploy: the webhook and the relay both hold the auth token already.
fn derive_stream_secret(auth_token: &Secret) -> Secret {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(auth_token.expose().as_bytes()).expect("HMAC takes a key of any length");
    mac.update(b"callkeeper stream token secret v1");
    Secret::new(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("PUBLIC_BASE_URL", "https://ck.example.com/"),
        ("RELAY_PUBLIC_URL", "wss://relay.example.com"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("TWILIO_AUTH_TOKEN", "tok"),
    ];

    #[test]
    fn minimal_configuration_takes_defaults() {
        let config = Config::from_lookup(lookup(MINIMAL)).unwrap();
        assert_eq!(config.public_base_url.as_str(), "https://ck.example.com");
        assert_eq!(config.timeouts.stream_start, Duration::from_secs(8));
        assert_eq!(config.fallback.mode, FallbackMode::Voicemail);
        assert!(
            matches!(&config.fallback.apology, Apology::Say { language, voice, .. } if language == "he-IL" && voice == "Google.he-IL-Standard-A")
        );
        assert_eq!(config.queue_max_receives, 5);
    }

    #[test]
    fn nothing_set_names_every_missing_setting_in_one_line() {
        let err = Config::from_lookup(lookup(&[])).unwrap_err().to_string();
        assert_eq!(err, "configuration: missing PUBLIC_BASE_URL, RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN");
    }

    #[test]
    fn wrong_values_are_named() {
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("FALLBACK_MODE", "dial:0501234567"),
            ("STREAM_START_TIMEOUT_SECS", "soon"),
            ("RELAY_PUBLIC_URL", "https://relay.example.com"),
        ]);
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err().to_string();
        assert!(err.contains("RELAY_PUBLIC_URL must be an absolute ws(s) URL"), "{err}");
        assert!(err.contains("FALLBACK_MODE must be `voicemail` or `dial:+E164`, got \"dial:0501234567\""), "{err}");
        assert!(err.contains("STREAM_START_TIMEOUT_SECS must be a whole number from 1 to 120, got \"soon\""), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_language_without_a_known_voice_needs_one() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("AGENT_LANGUAGE", "fr-FR"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err().to_string();
        assert!(err.contains("AGENT_LANGUAGE=fr-FR has no default apology"), "{err}");
        pairs.push(("FALLBACK_AUDIO_URL", "https://cdn.example.com/sorry-fr.wav"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert!(matches!(config.fallback.apology, Apology::Play(_)));
    }

    #[test]
    fn the_realtime_agent_is_the_default_with_a_key() {
        assert_eq!(Config::from_lookup(lookup(MINIMAL)).unwrap().relay.voice_agent, VoiceAgentKind::Embedded);
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("OPENAI_API_KEY", "sk-test"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.relay.voice_agent, VoiceAgentKind::OpenAi);
        assert_eq!((config.realtime.url.as_str(), config.realtime.model.as_str()), ("wss://api.openai.com/v1/realtime", "gpt-realtime"));
        assert_eq!(config.realtime.turn_detection, TurnDetection::ServerVad);
        pairs.push(("VOICE_AGENT", "embedded"));
        assert_eq!(Config::from_lookup(lookup(&pairs)).unwrap().relay.voice_agent, VoiceAgentKind::Embedded);

        let mut wrong = MINIMAL.to_vec();
        wrong.extend([("VOICE_AGENT", "openai"), ("OPENAI_REALTIME_URL", "https://x"), ("REALTIME_TURN_DETECTION", "vibes")]);
        let err = Config::from_lookup(lookup(&wrong)).unwrap_err().to_string();
        assert!(err.contains("VOICE_AGENT=openai needs OPENAI_API_KEY"), "{err}");
        assert!(err.contains("OPENAI_REALTIME_URL must be an absolute ws(s) URL"), "{err}");
        assert!(err.contains("REALTIME_TURN_DETECTION must be"), "{err}");
    }

    #[test]
    fn dial_mode_and_derived_stream_secret() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("FALLBACK_MODE", "dial:+972501234567"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.fallback.mode, FallbackMode::Dial(E164::parse("+972501234567").unwrap()));
        assert_ne!(config.stream_token_secret.expose(), "tok");
        assert_eq!(config.stream_token_secret, Config::from_lookup(lookup(MINIMAL)).unwrap().stream_token_secret);
    }
}
