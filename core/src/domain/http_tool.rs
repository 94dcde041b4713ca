//! A business's own tool: a function the agent may call during a call, answered by the
//! business's HTTP endpoint (see `relay::agent::http_tools` for the request, and
//! docs/agent-profiles.md for the receiver's side).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names the relay's own tools take: a profile's tool may not shadow one.
pub const BUILT_IN: &[&str] = &["save_lead", "transfer_to_human", "end_call", "search_knowledge"];
pub const DEFAULT_TIMEOUT_MS: u32 = 4000;
pub const MAX_TIMEOUT_MS: u32 = 15_000;
/// The most a profile may declare: each is in every session's tool list.
pub const MAX_TOOLS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTool {
    /// `[a-z0-9_]{1,64}`: what the model calls.
    pub name: String,
    /// What the model is told the tool does: when to call it.
    pub description: String,
    /// Where the relay POSTs: https, or http on loopback (development and tests).
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    /// What the caller hears if the answer takes longer than ~700 ms; by language when unset.
    #[serde(default)]
    pub filler: Option<String>,
    /// A JSON schema of an object: the arguments ([`crate::domain::json_schema`]'s keywords).
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_MS
}

fn empty_object() -> Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

impl HttpTool {
    /// What the caller hears while the answer is awaited: the tool's own words, else a short
    /// "one moment, checking" in the profile's language.
    pub fn filler_for(&self, language: &str) -> String {
        self.filler.clone().unwrap_or_else(|| default_filler(language).to_string())
    }

    /// The tool's problems, as one sentence each.
    pub fn check(&self) -> Result<(), String> {
        let named = |why: String| format!("tool {:?}: {why}", self.name);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("tool name {:?} must be 1 to 64 of a-z, 0-9 and _", self.name));
        }
        if BUILT_IN.contains(&self.name.as_str()) {
            return Err(named("the name is a built-in tool's; name it otherwise".into()));
        }
        if self.description.trim().is_empty() {
            return Err(named("a description is needed: it is how the model knows when to call it".into()));
        }
        check_url(&self.url).map_err(named)?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(named(format!("timeout_ms must be from 1 to {MAX_TIMEOUT_MS}")));
        }
        crate::domain::json_schema::check_schema(&self.parameters, "parameters").map_err(named)?;
        if self.parameters["type"] != "object" {
            return Err(named("parameters must have type = \"object\"".into()));
        }
        Ok(())
    }
}

/// https anywhere; plain http only to this machine (a business's development endpoint, the
/// tests' fake). No credentials in the URL: they would be sent on every call and shown in logs.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not hold a user or password; the requests are signed".into());
    }
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("url {url:?} has no host")),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        other => Err(format!("url must be https (http only on loopback), not {other}://")),
    }
}

pub fn default_filler(language: &str) -> &'static str {
    match language.split('-').next().unwrap_or("") {
        "he" => "רגע, אני בודקת.",
        "ar" => "لحظة، أتحقق من ذلك.",
        "ru" => "Одну минуту, проверяю.",
        _ => "One moment, let me check.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool() -> HttpTool {
        HttpTool {
            name: "check_availability".into(),
            description: "Whether a listing is free".into(),
            url: "https://crm.example.com/availability".into(),
            timeout_ms: 4000,
            filler: None,
            parameters: json!({ "type": "object", "properties": { "listing": { "type": "string" } } }),
        }
    }

    #[test]
    fn a_tool_is_checked() {
        assert!(tool().check().is_ok());
        let cases: Vec<(HttpTool, &str)> = vec![
            (HttpTool { name: "Check".into(), ..tool() }, "must be 1 to 64"),
            (HttpTool { name: "end_call".into(), ..tool() }, "built-in"),
            (HttpTool { url: "http://crm.example.com/a".into(), ..tool() }, "must be https"),
            (HttpTool { url: "https://u:p@crm.example.com/a".into(), ..tool() }, "user or password"),
            (HttpTool { timeout_ms: 20_000, ..tool() }, "timeout_ms"),
            (HttpTool { parameters: json!({ "type": "string" }), ..tool() }, "type = \"object\""),
            (HttpTool { description: " ".into(), ..tool() }, "description"),
        ];
        for (t, why) in cases {
            let e = t.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        for ok in ["http://127.0.0.1:9000/x", "http://localhost/x", "http://[::1]:80/x"] {
            assert!(HttpTool { url: ok.into(), ..tool() }.check().is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_filler_is_the_tools_or_the_languages() {
        assert_eq!(tool().filler_for("he-IL"), "רגע, אני בודקת.");
        assert_eq!(tool().filler_for("en-US"), "One moment, let me check.");
        assert_eq!(HttpTool { filler: Some("רגע".into()), ..tool() }.filler_for("en-US"), "רגע");
    }
}
