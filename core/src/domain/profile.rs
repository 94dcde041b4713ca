//! Agent profiles: how the AI agent behaves on one of the business's numbers, kept in the store
//! so it changes without a redeploy.
//!
//! A business writes a profile as a TOML file (`callkeeper agent set [--number +E164] FILE`):
//! instructions, how to greet (or a pre-rendered greeting clip), language, voice, the transfer
//! number, the lead's fields and the idle timings. The lead's fields are one JSON schema: the
//! agent's `save_lead` tool takes them, and the post-call extraction fills the same ones, so a
//! lead is defined once. A call gets the profile of the number it came in on (the number it
//! came from, for an outbound call), else the default profile, else [`AgentProfile::builtin`].

use crate::domain::follow_up::FollowUp;
use crate::domain::hours::{AfterHours, AfterHoursFile, Hours, HoursFile};
use crate::domain::http_tool::HttpTool;
use crate::domain::knowledge::KnowledgeFile;
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

/// Where a profile applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKey {
    Default,
    Number(E164),
}

impl ProfileKey {
    pub fn parse(number: Option<&str>) -> Result<ProfileKey, String> {
        match number {
            None => Ok(ProfileKey::Default),
            Some(n) => E164::parse(n).map(ProfileKey::Number).ok_or_else(|| format!("{n:?} is not a +E164 number")),
        }
    }

    /// The key as `as_str` wrote it.
    pub fn from_stored(key: &str) -> Result<ProfileKey, String> {
        ProfileKey::parse(Some(key).filter(|k| *k != "default"))
    }

    /// `default`, or the number: how the store keys it and the CLI prints it.
    pub fn as_str(&self) -> &str {
        match self {
            ProfileKey::Default => "default",
            ProfileKey::Number(n) => n.as_str(),
        }
    }
}

/// Caller silence: first a short "are you still there?", then a goodbye and the hang-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleTimings {
    /// Silence (nobody speaking, nothing playing) before the agent asks if the caller is there.
    pub prompt_after_secs: u32,
    /// Further silence after that question before the agent says goodbye and hangs up.
    pub hangup_after_secs: u32,
}

impl Default for IdleTimings {
    fn default() -> Self {
        IdleTimings { prompt_after_secs: 10, hangup_after_secs: 10 }
    }
}

/// Audio the relay plays the moment the stream starts, while the model's session opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreetingClip {
    /// μ-law 8 kHz mono, base64.
    pub mulaw_base64: String,
    /// What it says: the transcript's first line, and what the model is told it already said.
    pub text: String,
}

impl GreetingClip {
    pub fn audio(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(&self.mulaw_base64).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentProfile {
    /// The agent's system instructions.
    pub instructions: String,
    /// How the agent greets: the instructions of its first response. Ignored with a clip.
    pub greeting: String,
    pub greeting_clip: Option<GreetingClip>,
    /// BCP 47, e.g. `he-IL`.
    pub language: String,
    /// The Realtime voice, e.g. `marin`.
    pub voice: String,
    /// Where `transfer_to_human` sends the call; without one (here or `TRANSFER_NUMBER`) the
    /// tool is not offered.
    pub transfer_number: Option<E164>,
    /// A JSON schema of an object: the lead's fields.
    pub lead_schema: Value,
    pub idle: IdleTimings,
    /// The business's own tools, answered by its HTTP endpoints.
    #[serde(default)]
    pub tools: Vec<HttpTool>,
    /// What the agent knows about the business: told whole, or searched when large.
    #[serde(default)]
    pub knowledge: Vec<KnowledgeFile>,
    /// When the agent above answers; outside them, the after-hours agent or voicemail.
    #[serde(default)]
    pub hours: Option<Hours>,
    #[serde(default)]
    pub follow_up: FollowUp,
}

/// The longest greeting clip: 15 s of μ-law.
pub const MAX_CLIP_BYTES: usize = 15 * 8000;

const HE_INSTRUCTIONS: &str = "אתה הסוכן הקולי של העסק ועונה לשיחות טלפון. דבר עברית, בקצרה ובחום, משפט או שניים בכל פעם. \
     הבן מה המתקשר צריך ואסוף את פרטיו: שם, מה הוא מחפש, תקציב, אזור ומתי נוח לחזור אליו. \
     כשיש לך פרטים, שמור אותם בכלי save_lead. אם המתקשר מבקש לדבר עם אדם, העבר אותו בכלי transfer_to_human. \
     כשהשיחה הסתיימה, היפרד בנימוס וקרא ל-end_call. אל תמציא מידע שאין לך.";
const HE_GREETING: &str = "ברך את המתקשר בקצרה בעברית, הצג את עצמך כסוכן הדיגיטלי של העסק ושאל במה אפשר לעזור.";
const EN_INSTRUCTIONS: &str = "You are the business's voice agent answering phone calls. Speak English, briefly and warmly, a \
     sentence or two at a time. Find out what the caller needs and collect their details: name, what they are looking for, \
     budget, area and when to call them back. Save details with the save_lead tool as you learn them. If the caller asks for \
     a person, use transfer_to_human. When the call is done, say goodbye politely and call end_call. Never make up facts.";
const EN_GREETING: &str = "Greet the caller briefly, introduce yourself as the business's digital agent and ask how you can help.";

impl AgentProfile {
    /// The profile of a business that wrote none: Hebrew unless `language` says otherwise,
    /// and the lead fields of `extraction_schema` (`EXTRACTION_SCHEMA_FILE` or the built-in).
    pub fn builtin(language: &str, extraction_schema: &Value) -> AgentProfile {
        let hebrew = !language.starts_with("en");
        AgentProfile {
            instructions: if hebrew { HE_INSTRUCTIONS } else { EN_INSTRUCTIONS }.to_string(),
            greeting: if hebrew { HE_GREETING } else { EN_GREETING }.to_string(),
            greeting_clip: None,
            language: language.to_string(),
            voice: "marin".into(),
            transfer_number: None,
            lead_schema: lead_schema_of(extraction_schema),
            idle: IdleTimings::default(),
            tools: Vec::new(),
            knowledge: Vec::new(),
            hours: None,
            follow_up: FollowUp::default(),
        }
    }

    /// What answers a call that starts at `at`: `None` when the normal agent does (no hours,
    /// or open), else the after-hours choice.
    pub fn after_hours(&self, at: Millis) -> Option<&AfterHours> {
        self.hours.as_ref().filter(|h| !h.is_open(at)).map(|h| &h.after_hours)
    }

    /// The profile a call starting at `at` talks to: this one, or, after hours with an
    /// after-hours agent, that agent's instructions and greeting, told the time and the hours so
    /// it promises nothing the business cannot keep.
    pub fn at_time(&self, at: Millis) -> std::borrow::Cow<'_, AgentProfile> {
        let (Some(hours), Some(AfterHours::Agent { instructions, greeting })) = (&self.hours, self.after_hours(at)) else {
            return std::borrow::Cow::Borrowed(self);
        };
        let mut after = self.clone();
        after.instructions = format!(
            "{}\n\nThe business is closed now (it is {} there). Its hours: {}.",
            instructions.trim(),
            hours.local_time(at),
            hours.describe()
        );
        if let Some(greeting) = greeting {
            after.greeting = greeting.clone();
        }
        // A clip records the open-hours greeting.
        after.greeting_clip = None;
        std::borrow::Cow::Owned(after)
    }

    /// The JSON schema the post-call extraction fills: a summary and the intent, then the lead.
    pub fn extraction_schema(&self) -> Value {
        extraction_schema(&self.lead_schema)
    }

    /// The lead fields the schema names, in its order.
    pub fn lead_fields(&self) -> Vec<String> {
        self.lead_schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }
}

/// An extraction schema's lead part: its properties other than the summary and the intent.
fn lead_schema_of(extraction: &Value) -> Value {
    let mut properties = extraction["properties"].as_object().cloned().unwrap_or_default();
    properties.remove("summary");
    properties.remove("intent");
    json!({ "type": "object", "properties": properties })
}

/// Strict structured output wants every property required and nothing else: lead fields the
/// call does not give come back null.
fn extraction_schema(lead: &Value) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("summary".into(), json!({ "type": "string", "description": "Two or three sentences on the call." }));
    properties.insert("intent".into(), json!({ "type": "string", "description": "What the caller wants, in a few words." }));
    let mut required = vec!["summary".to_string(), "intent".to_string()];
    for (name, field) in lead["properties"].as_object().into_iter().flatten() {
        properties.insert(name.clone(), nullable(field));
        required.push(name.clone());
    }
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties })
}

fn nullable(field: &Value) -> Value {
    let mut field = field.clone();
    match field.get("type").cloned() {
        Some(Value::String(t)) if t != "null" => field["type"] = json!([t, "null"]),
        Some(Value::Array(mut types)) if !types.contains(&json!("null")) => {
            types.push(json!("null"));
            field["type"] = Value::Array(types);
        }
        _ => {}
    }
    field
}

/// A profile file as a business writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    instructions: String,
    greeting: Option<String>,
    /// A `.ulaw` (raw μ-law 8 kHz) or 16-bit PCM 8 kHz mono `.wav` file, relative to the profile.
    greeting_clip: Option<String>,
    greeting_clip_text: Option<String>,
    language: Option<String>,
    voice: Option<String>,
    transfer_number: Option<String>,
    lead_schema: Option<Value>,
    idle: Option<IdleTimings>,
    #[serde(default)]
    tools: Vec<HttpTool>,
    /// Knowledge files, relative to the profile.
    #[serde(default)]
    knowledge: Vec<String>,
    hours: Option<HoursFile>,
    after_hours: Option<AfterHoursFile>,
    follow_up: Option<FollowUp>,
}

/// A profile file refused: where, and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BadProfile {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

/// Voices the Realtime API speaks ([PY] `realtime_audio_config_output.py`'s list).
pub const VOICES: &[&str] = &["alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse"];

/// Reads and checks a profile file; the defaults fill what it leaves out.
pub fn read_file(path: &Path, defaults: &AgentProfile) -> Result<AgentProfile, BadProfile> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| BadProfile { file: file.clone(), line: None, reason: e.to_string() })?;
    parse(&text, &file, path.parent().unwrap_or(Path::new(".")), defaults)
}

/// Parses a profile's TOML; `dir` is where a greeting clip's path is read from.
pub fn parse(text: &str, file: &str, dir: &Path, defaults: &AgentProfile) -> Result<AgentProfile, BadProfile> {
    let bad = |line: Option<usize>, reason: String| BadProfile { file: file.to_string(), line, reason };
    let line_of = |needle: &str| text.lines().position(|l| l.trim_start().starts_with(needle)).map(|i| i + 1);
    let raw: ProfileFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        bad(line, e.message().to_string())
    })?;
    if raw.instructions.trim().is_empty() {
        return Err(bad(line_of("instructions"), "instructions must not be empty".into()));
    }
    let transfer_number = match &raw.transfer_number {
        None => None,
        Some(n) => Some(E164::parse(n).ok_or_else(|| bad(line_of("transfer_number"), format!("transfer_number {n:?} is not +E164")))?),
    };
    let voice = raw.voice.unwrap_or_else(|| defaults.voice.clone());
    if !VOICES.contains(&voice.as_str()) {
        return Err(bad(line_of("voice"), format!("voice {voice:?} is not one of {}", VOICES.join(", "))));
    }
    let language = raw.language.unwrap_or_else(|| defaults.language.clone());
    if !is_language_tag(&language) {
        return Err(bad(line_of("language"), format!("language {language:?} is not a BCP 47 tag such as he-IL")));
    }
    let lead_schema = match raw.lead_schema {
        None => defaults.lead_schema.clone(),
        Some(schema) => {
            check_lead_schema(&schema).map_err(|reason| bad(line_of("[lead_schema").or(line_of("lead_schema")), reason))?;
            schema
        }
    };
    if let Some(idle) = raw.idle {
        if idle.prompt_after_secs < 3 || idle.hangup_after_secs < 3 || idle.prompt_after_secs > 600 || idle.hangup_after_secs > 600 {
            return Err(bad(line_of("[idle"), "idle timings must be from 3 to 600 seconds".into()));
        }
    }
    let greeting_clip = match (raw.greeting_clip, raw.greeting_clip_text) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(bad(
                line_of("greeting_clip"),
                "greeting_clip and greeting_clip_text go together: the clip, and what it says".into(),
            ))
        }
        (Some(clip), Some(text)) => {
            let audio =
                read_clip(&dir.join(&clip)).map_err(|reason| bad(line_of("greeting_clip"), format!("greeting_clip {clip}: {reason}")))?;
            Some(GreetingClip { mulaw_base64: base64::engine::general_purpose::STANDARD.encode(audio), text })
        }
    };
    if raw.tools.len() > crate::domain::http_tool::MAX_TOOLS {
        return Err(bad(line_of("[[tools]]"), format!("at most {} tools", crate::domain::http_tool::MAX_TOOLS)));
    }
    for (i, tool) in raw.tools.iter().enumerate() {
        tool.check().map_err(|reason| bad(nth_line(text, "[[tools]]", i), reason))?;
        if raw.tools[..i].iter().any(|t| t.name == tool.name) {
            return Err(bad(nth_line(text, "[[tools]]", i), format!("tool {:?} is declared twice", tool.name)));
        }
    }
    let paths: Vec<(String, std::path::PathBuf)> = raw.knowledge.iter().map(|name| (name.clone(), dir.join(name))).collect();
    let knowledge = crate::domain::knowledge::read(&paths).map_err(|reason| bad(line_of("knowledge"), reason))?;
    if raw.after_hours.is_some() && raw.hours.is_none() {
        return Err(bad(line_of("[after_hours"), "[after_hours] needs [hours]: when the business is open".into()));
    }
    let hours = match raw.hours {
        None => None,
        Some(file) => Some(
            Hours::read(file, raw.after_hours, after_hours_message(&language))
                .map_err(|reason| bad(line_of("[hours").or(line_of("[after_hours")), reason))?,
        ),
    };
    let profile = AgentProfile {
        instructions: raw.instructions,
        greeting: raw.greeting.unwrap_or_else(|| defaults.greeting.clone()),
        greeting_clip,
        language,
        voice,
        transfer_number,
        lead_schema,
        idle: raw.idle.unwrap_or(defaults.idle),
        tools: raw.tools,
        knowledge,
        hours,
        follow_up: raw.follow_up.unwrap_or_default(),
    };
    profile.follow_up.check(&profile.lead_fields()).map_err(|reason| bad(line_of("[follow_up"), reason))?;
    Ok(profile)
}

/// The line of the `n`th (from 0) line starting with `needle`.
fn nth_line(text: &str, needle: &str, n: usize) -> Option<usize> {
    text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with(needle)).nth(n).map(|(i, _)| i + 1)
}

/// What an after-hours caller hears before the beep, unless the profile says otherwise.
pub fn after_hours_message(language: &str) -> &'static str {
    if language.starts_with("he") {
        "שלום, העסק סגור כעת. השאירו הודעה אחרי הצליל ונחזור אליכם בשעות הפעילות."
    } else {
        "Hello, we are closed now. Please leave a message after the tone and we will call you back during business hours."
    }
}

fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first = parts.next().unwrap_or("");
    (2..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The lead's schema is an object of named, typed fields: what a tool's parameters and a
/// strict structured output both accept.
fn check_lead_schema(schema: &Value) -> Result<(), String> {
    if schema["type"] != "object" {
        return Err("lead_schema must have type = \"object\"".into());
    }
    let Some(properties) = schema["properties"].as_object() else {
        return Err("lead_schema must have [lead_schema.properties]".into());
    };
    for (name, field) in properties {
        if name == "summary" || name == "intent" {
            return Err(format!("lead_schema field {name:?} is the extraction's own; name it otherwise"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("lead_schema field {name:?} must be letters, digits and _"));
        }
        if field.get("type").is_none() {
            return Err(format!("lead_schema field {name:?} has no type"));
        }
    }
    Ok(())
}

fn read_clip(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let audio = if bytes.starts_with(b"RIFF") {
        let wav = crate::audio::wav::parse(&bytes).map_err(|e| e.to_string())?;
        if wav.sample_rate != 8000 || wav.channels.len() != 1 {
            return Err(format!("a WAV clip must be 8 kHz mono, not {} Hz with {} channel(s)", wav.sample_rate, wav.channels.len()));
        }
        wav.channels[0].iter().map(|&s| crate::audio::mulaw::encode(s)).collect()
    } else {
        bytes
    };
    if audio.is_empty() || audio.len() > MAX_CLIP_BYTES {
        return Err(format!("must hold from 1 byte to {MAX_CLIP_BYTES} bytes (15 s) of μ-law audio, not {}", audio.len()));
    }
    Ok(audio)
}

/// The business's number on a call: the one called, or, for a call we placed, the caller id.
pub fn business_number(call: &crate::domain::call::Call) -> Option<E164> {
    business_number_of(call.direction, &call.from, &call.to)
}

/// [`business_number`] from a call's direction and numbers (a call not yet stored).
pub fn business_number_of(direction: crate::domain::call::Direction, from: &str, to: &str) -> Option<E164> {
    match direction {
        crate::domain::call::Direction::Inbound => E164::parse(to),
        crate::domain::call::Direction::Outbound => E164::parse(from),
    }
}

/// The default extraction: a summary, the caller's intent, and a real-estate lead's details.
pub fn default_extraction_schema() -> serde_json::Value {
    let text = serde_json::json!({ "type": ["string", "null"] });
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "intent", "name", "budget", "area", "property_type", "callback_time"],
        "properties": {
            "summary": { "type": "string", "description": "Two or three sentences on the call." },
            "intent": { "type": "string", "description": "What the caller wants, in a few words." },
            "name": text, "budget": text, "area": text, "property_type": text,
            "callback_time": { "type": ["string", "null"], "description": "When to call back, as the caller said it." }
        }
    })
}

/// Lead fields of `found` that `known` lacks: what the post-call extraction adds to what the
/// agent saved during the call, which the caller confirmed and so is kept.
pub fn missing_fields(known: Option<&Value>, found: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (name, value) in found.as_object().into_iter().flatten() {
        let has = known.and_then(|k| k.get(name)).is_some_and(|v| !v.is_null());
        if !has && !value.is_null() {
            out.insert(name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// Merges lead fields: what is newly said wins, a null never erases what was known.
pub fn merge_lead(known: &Value, new: &Value) -> Value {
    let mut merged = known.as_object().cloned().unwrap_or_default();
    for (name, value) in new.as_object().into_iter().flatten() {
        if !value.is_null() {
            merged.insert(name.clone(), value.clone());
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AgentProfile {
        AgentProfile::builtin("he-IL", &default_extraction_schema())
    }

    #[test]
    fn the_builtin_profile_is_hebrew_with_the_extractions_lead_fields() {
        let p = defaults();
        assert!(p.instructions.contains("עברית"));
        assert_eq!(p.lead_fields(), ["area", "budget", "callback_time", "name", "property_type"]);
        let schema = p.extraction_schema();
        assert_eq!(schema["required"].as_array().unwrap().len(), 7);
        assert_eq!(schema["properties"]["budget"]["type"], json!(["string", "null"]));
    }

    #[test]
    fn a_file_is_read_with_defaults_for_what_it_leaves_out() {
        let text = r#"
instructions = """
You answer for Dana's bakery."""
language = "en-US"
voice = "cedar"
transfer_number = "+972501112222"

[idle]
prompt_after_secs = 6
hangup_after_secs = 5

[lead_schema]
type = "object"
[lead_schema.properties.cake]
type = "string"
description = "The cake they want"
"#;
        let p = parse(text, "bakery.toml", Path::new("."), &defaults()).unwrap();
        assert_eq!((p.language.as_str(), p.voice.as_str()), ("en-US", "cedar"));
        assert_eq!(p.transfer_number.as_ref().unwrap().as_str(), "+972501112222");
        assert_eq!(p.idle, IdleTimings { prompt_after_secs: 6, hangup_after_secs: 5 });
        assert_eq!(p.lead_fields(), ["cake"]);
        assert_eq!(p.greeting, defaults().greeting);
        assert_eq!(p.extraction_schema()["properties"]["cake"]["type"], json!(["string", "null"]));
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line_and_reason() {
        let cases = [
            ("instructions = \"x\"\nvoice = \"robot\"\n", 2, "voice \"robot\" is not one of"),
            ("instructions = \"x\"\n\ntransfer_number = \"050\"\n", 3, "transfer_number \"050\" is not +E164"),
            ("instructions = \"x\"\nlanguage = 7\n", 2, "invalid type"),
            ("instructions = \"x\"\ncolour = \"red\"\n", 2, "unknown field `colour`"),
            (
                "instructions = \"x\"\n[lead_schema]\ntype = \"object\"\n[lead_schema.properties.summary]\ntype = \"string\"\n",
                2,
                "extraction's own",
            ),
            ("instructions = \"x\"\ngreeting_clip = \"missing.ulaw\"\ngreeting_clip_text = \"hi\"\n", 2, "greeting_clip missing.ulaw"),
            ("instructions = \"\"\n", 1, "instructions must not be empty"),
            (
                "instructions = \"x\"\n[[tools]]\nname = \"a\"\ndescription = \"d\"\nurl = \"https://a.example\"\n[[tools]]\nname = \"b\"\ndescription = \"d\"\nurl = \"http://b.example\"\n",
                6,
                "tool \"b\": url must be https",
            ),
            ("instructions = \"x\"\n\n[after_hours]\nmode = \"agent\"\n", 3, "[after_hours] needs [hours]"),
            ("instructions = \"x\"\n[hours]\ntime_zone = \"Asia/Haifa\"\n", 2, "not a time zone"),
            ("instructions = \"x\"\nknowledge = [\"missing.md\"]\n", 2, "knowledge file missing.md"),
            ("instructions = \"x\"\n[follow_up.business]\nto = []\n", 2, "at least one +E164 number"),
            ("instructions = \"x\n", 1, ""),
        ];
        for (text, line, reason) in cases {
            let e = parse(text, "p.toml", Path::new("/nonexistent"), &defaults()).unwrap_err();
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_clip_is_read_from_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.ulaw"), vec![0x7fu8; 1600]).unwrap();
        let text = "instructions = \"x\"\ngreeting_clip = \"hello.ulaw\"\ngreeting_clip_text = \"שלום\"\n";
        let p = parse(text, "p.toml", dir.path(), &defaults()).unwrap();
        let clip = p.greeting_clip.unwrap();
        assert_eq!((clip.audio().len(), clip.text.as_str()), (1600, "שלום"));
    }

    #[test]
    fn merging_keeps_what_was_known() {
        let known = json!({ "name": "Dana", "budget": "2M" });
        let merged = merge_lead(&known, &json!({ "budget": null, "area": "Haifa", "name": "Dana Levi" }));
        assert_eq!(merged, json!({ "name": "Dana Levi", "budget": "2M", "area": "Haifa" }));
    }
}
