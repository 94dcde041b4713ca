//! Twilio's identifiers as types that cannot hold a bad value: parse once at the edge, then trust.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {expected} followed by 32 hex digits")]
pub struct InvalidSid {
    pub field: &'static str,
    pub expected: &'static str,
}

fn parse_sid(value: &str, prefixes: &[&str]) -> bool {
    value.len() == 34 && prefixes.iter().any(|p| value.starts_with(p)) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, [$($prefix:literal),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidSid> {
                if parse_sid(value, &[$($prefix),+]) {
                    Ok(Self(value.to_string()))
                } else {
                    Err(InvalidSid { field: $field, expected: concat!($($prefix, " or "),+) .trim_end_matches(" or ") })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidSid;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidSid;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

sid_type!(/// A call: `CA…`.
    CallSid, "CallSid", ["CA"]);
sid_type!(/// A Twilio account: `AC…`.
    AccountSid, "AccountSid", ["AC"]);
sid_type!(/// A recording: `RE…`.
    RecordingSid, "RecordingSid", ["RE"]);
sid_type!(/// An SMS or WhatsApp message: `SM…` or `MM…` (with media).
    MessageSid, "MessageSid", ["SM", "MM"]);
sid_type!(/// A media stream: `MZ…`.
    StreamSid, "StreamSid", ["MZ"]);

/// A random identifier with Twilio's shape, for local secrets and the simulator.
pub fn random_sid(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    crate::domain::secrets::fill_random(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_twilio_shapes() {
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(MessageSid::parse("MM0123456789abcdef0123456789abcdef").is_ok());
        assert!(MessageSid::parse("SM0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn refuses_everything_else_with_a_reason() {
        for bad in
            ["", "CA123", "RE0123456789abcdef0123456789abcdef", "CA0123456789abcdef0123456789abcdeg", "CA0123456789abcdef0123456789abcdef0"]
        {
            let err = CallSid::parse(bad).unwrap_err();
            assert_eq!(err.to_string(), "CallSid must be CA followed by 32 hex digits");
        }
        assert_eq!(MessageSid::parse("x").unwrap_err().to_string(), "MessageSid must be SM or MM followed by 32 hex digits");
    }

    #[test]
    fn random_sids_parse() {
        assert!(CallSid::parse(&random_sid("CA")).is_ok());
    }
}
