//! A Twilio form post: fields in the order received (names may repeat), read with one-line errors.

use std::str::FromStr;

/// A field `callkeeper doctor` adds to its signed `incoming_call`: the webhook answers the TwiML
/// a call would get and writes nothing. Only whoever holds the auth token can sign it.
pub const PROBE_FIELD: &str = "CallkeeperProbe";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self { pairs: form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<&str, FieldError> {
        self.get(name).ok_or(FieldError::Missing(name))
    }

    /// A required field parsed into a domain type whose error names the field.
    pub fn parse_required<T>(&self, name: &'static str) -> Result<T, FieldError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.required(name)?.parse().map_err(|e: T::Err| FieldError::Invalid(e.to_string()))
    }

    /// An optional non-negative integer field, with the field named in the error.
    pub fn parse_count(&self, name: &'static str) -> Result<Option<u64>, FieldError> {
        self.get(name)
            .map(|v| v.parse::<u64>().map_err(|_| FieldError::Invalid(format!("{name} must be a whole number, got {v:?}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::CallSid;

    #[test]
    fn reads_fields_with_reasons() {
        let form = Form::parse(b"CallSid=CA0123456789abcdef0123456789abcdef&From=%2B972501234567&Empty=&N=x");
        assert_eq!(form.get("From"), Some("+972501234567"));
        assert_eq!(form.get("Empty"), None);
        assert_eq!(form.required("To").unwrap_err().to_string(), "missing field To");
        assert!(form.parse_required::<CallSid>("CallSid").is_ok());
        assert_eq!(form.parse_count("N").unwrap_err().to_string(), "N must be a whole number, got \"x\"");
    }
}
