//! Phone numbers in E.164, the key of a contact, and the `whatsapp:` addresses Twilio wraps them in.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be an E.164 number such as +972501234567")]
pub struct InvalidPhone {
    pub field: &'static str,
}

/// `+` and 7 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

impl E164 {
    pub fn parse(value: &str) -> Option<Self> {
        let digits = value.strip_prefix('+')?;
        let ok = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        ok.then(|| Self(value.to_string()))
    }

    pub fn parse_field(value: &str, field: &'static str) -> Result<Self, InvalidPhone> {
        Self::parse(value).ok_or(InvalidPhone { field })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What logs may show: the last four digits only.
    pub fn redacted(&self) -> String {
        format!("+…{}", &self.0[self.0.len() - 4..])
    }
}

impl TryFrom<String> for E164 {
    type Error = InvalidPhone;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse_field(&value, "phone number")
    }
}

impl From<E164> for String {
    fn from(value: E164) -> String {
        value.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The channel a message travels on, read from Twilio's address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "whatsapp" => Some(Channel::Whatsapp),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }
    /// The address Twilio expects for this channel: `whatsapp:+972…` or `+972…`.
    pub fn address(self, number: &E164) -> String {
        match self {
            Channel::Whatsapp => format!("whatsapp:{number}"),
            Channel::Sms => number.to_string(),
        }
    }
}

/// Splits `whatsapp:+972501234567` (or a bare `+972…`, an SMS) into channel and number.
pub fn parse_address(value: &str, field: &'static str) -> Result<(Channel, E164), InvalidPhone> {
    match value.strip_prefix("whatsapp:") {
        Some(number) => Ok((Channel::Whatsapp, E164::parse_field(number, field)?)),
        None => Ok((Channel::Sms, E164::parse_field(value, field)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert!(E164::parse("+972501234567").is_some());
        for bad in ["972501234567", "+0501234567", "+97250-123", "+1", "anonymous", "+1234567890123456"] {
            assert!(E164::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn whatsapp_addresses() {
        let (channel, number) = parse_address("whatsapp:+972501234567", "From").unwrap();
        assert_eq!(channel, Channel::Whatsapp);
        assert_eq!(number.as_str(), "+972501234567");
        assert_eq!(channel.address(&number), "whatsapp:+972501234567");
        assert_eq!(parse_address("whatsapp:972", "From").unwrap_err().to_string(), "From must be an E.164 number such as +972501234567");
    }

    #[test]
    fn redaction_keeps_four_digits() {
        assert_eq!(E164::parse("+972501234567").unwrap().redacted(), "+…4567");
    }
}
