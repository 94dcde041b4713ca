//! Follow-ups after a call: a WhatsApp template to the caller, and a notice to the business with
//! the summary and the lead. Sent once the call is analysed (they need its summary), once per
//! call, through the replies queue (retried, then dead-lettered), each kept as an event on the call.

use crate::domain::phone::E164;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// A WhatsApp template to the caller (the 24-hour window is usually closed after a call).
    #[serde(default)]
    pub caller: Option<CallerMessage>,
    /// A notice to the business's own numbers.
    #[serde(default)]
    pub business: Option<BusinessNotice>,
}

impl FollowUp {
    pub fn is_empty(&self) -> bool {
        self.caller.is_none() && self.business.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerMessage {
    /// The approved template's Content SID (`HX…`, from Twilio's Content Template Builder).
    pub template: String,
    /// Template variable ("1", "2", …) → what fills it: `summary`, `intent`, `caller` (their
    /// number), `business` (the number called), or a lead field's name.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessNotice {
    pub to: Vec<String>,
    /// `sms` (default) or `whatsapp` (free text reaches a WhatsApp number only inside its
    /// 24-hour window: the business must have written to the sender that day).
    #[serde(default = "sms")]
    pub channel: String,
}

fn sms() -> String {
    "sms".into()
}

impl FollowUp {
    /// The follow-up's problems; `lead_fields` are what a variable may name besides the built-ins.
    pub fn check(&self, lead_fields: &[String]) -> Result<(), String> {
        if let Some(caller) = &self.caller {
            if !(caller.template.starts_with("HX")
                && caller.template.len() == 34
                && caller.template[2..].bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!("follow_up.caller.template {:?} must be a Content SID (HX and 32 hex digits)", caller.template));
            }
            for (var, source) in &caller.variables {
                if !var.bytes().all(|b| b.is_ascii_digit()) || var.is_empty() {
                    return Err(format!("follow_up.caller.variables: {var:?} must be a template variable number such as \"1\""));
                }
                if !SOURCES.contains(&source.as_str()) && !lead_fields.contains(source) {
                    return Err(format!(
                        "follow_up.caller.variables.{var} = {source:?} is not {} or a lead field ({})",
                        SOURCES.join(", "),
                        lead_fields.join(", ")
                    ));
                }
            }
        }
        if let Some(business) = &self.business {
            if business.to.is_empty() {
                return Err("follow_up.business.to must name at least one +E164 number".into());
            }
            if let Some(bad) = business.to.iter().find(|n| E164::parse(n).is_none()) {
                return Err(format!("follow_up.business.to: {bad:?} is not +E164"));
            }
            if !["sms", "whatsapp"].contains(&business.channel.as_str()) {
                return Err(format!("follow_up.business.channel {:?} must be \"sms\" or \"whatsapp\"", business.channel));
            }
        }
        Ok(())
    }
}

const SOURCES: &[&str] = &["summary", "intent", "caller", "business"];

/// What the call gave, for filling a follow-up.
pub struct CallFacts<'a> {
    pub caller: &'a str,
    pub business: &'a str,
    pub summary: Option<&'a str>,
    pub intent: Option<&'a str>,
    pub lead: &'a Value,
}

impl CallFacts<'_> {
    fn value(&self, source: &str) -> String {
        let text = match source {
            "summary" => self.summary.map(str::to_string),
            "intent" => self.intent.map(str::to_string),
            "caller" => Some(self.caller.to_string()),
            "business" => Some(self.business.to_string()),
            field => match &self.lead[field] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            },
        };
        // A template variable may not be empty: Twilio refuses the message.
        text.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| "-".into())
    }

    /// The template's `ContentVariables`, as the JSON object Twilio takes.
    pub fn variables(&self, message: &CallerMessage) -> String {
        let map: BTreeMap<&String, String> = message.variables.iter().map(|(k, source)| (k, self.value(source))).collect();
        serde_json::to_string(&map).expect("strings serialize")
    }

    /// The business's notice: who called, the summary, the lead.
    pub fn notice(&self, call_sid: &str) -> String {
        let mut text = format!("callkeeper: a call from {} ({call_sid})", self.caller);
        if let Some(summary) = self.summary {
            text.push_str(&format!("\n{summary}"));
        }
        for (field, value) in self.lead.as_object().into_iter().flatten() {
            if !value.is_null() {
                text.push_str(&format!("\n{field}: {}", value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())));
            }
        }
        // One SMS segment set at most: 1600 characters is Twilio's limit for a body.
        text.chars().take(1500).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_come_from_the_call_and_are_never_empty() {
        let message = CallerMessage {
            template: format!("HX{}", "a".repeat(32)),
            variables: [("1".to_string(), "name".to_string()), ("2".into(), "summary".into()), ("3".into(), "budget".into())].into(),
        };
        let lead = json!({ "name": "דנה", "budget": null });
        let facts =
            CallFacts { caller: "+972501234567", business: "+97230000000", summary: Some("wants a flat"), intent: None, lead: &lead };
        assert_eq!(facts.variables(&message), r#"{"1":"דנה","2":"wants a flat","3":"-"}"#);
        assert!(facts.notice("CA1").contains("a call from +972501234567 (CA1)\nwants a flat\nname: דנה"));
        let fields = vec!["name".to_string(), "budget".to_string()];
        assert!(FollowUp { caller: Some(message.clone()), business: None }.check(&fields).is_ok());
        let bad = CallerMessage { variables: [("1".to_string(), "shoe_size".to_string())].into(), ..message };
        assert!(FollowUp { caller: Some(bad), business: None }.check(&fields).unwrap_err().contains("shoe_size"));
        let notice = BusinessNotice { to: vec!["050".into()], channel: "sms".into() };
        assert!(FollowUp { caller: None, business: Some(notice) }.check(&fields).unwrap_err().contains("not +E164"));
    }
}
