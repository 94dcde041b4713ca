//! Absolute URLs, the only kind TwiML and Twilio's callbacks may carry (a relative `<Play>` URL is
//! Twilio error 11100). Bases come from configuration, never from guesses about the request.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be an absolute {schemes} URL{extra}, got {value:?}")]
pub struct InvalidUrl {
    pub field: &'static str,
    pub schemes: &'static str,
    pub extra: &'static str,
    pub value: String,
}

/// An absolute URL with a host, as given (not re-serialized: signatures are over the exact text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct AbsoluteUrl(String);

impl From<AbsoluteUrl> for String {
    fn from(value: AbsoluteUrl) -> String {
        value.0
    }
}

impl AbsoluteUrl {
    /// Any absolute http(s) URL, e.g. an audio file to `<Play>`.
    pub fn http(value: &str, field: &'static str) -> Result<Self, InvalidUrl> {
        Self::parse(value, field, &["http", "https"], "http(s)", false)
    }

    /// A base for paths: http(s), no query or fragment; a trailing slash is dropped.
    pub fn http_base(value: &str, field: &'static str) -> Result<Self, InvalidUrl> {
        Self::parse(value, field, &["http", "https"], "http(s)", true)
    }

    /// The relay's base: ws(s), no query or fragment (Twilio refuses a Stream URL with a query).
    pub fn ws_base(value: &str, field: &'static str) -> Result<Self, InvalidUrl> {
        Self::parse(value, field, &["ws", "wss"], "ws(s)", true)
    }

    fn parse(value: &str, field: &'static str, schemes: &[&str], names: &'static str, base: bool) -> Result<Self, InvalidUrl> {
        let err = |extra| InvalidUrl { field, schemes: names, extra, value: value.to_string() };
        let parsed = url::Url::parse(value).map_err(|_| err(""))?;
        if !schemes.contains(&parsed.scheme()) || parsed.host_str().is_none_or(str::is_empty) {
            return Err(err(""));
        }
        if base && (parsed.query().is_some() || parsed.fragment().is_some()) {
            return Err(err(" with no query or fragment"));
        }
        let text = if base { value.trim_end_matches('/') } else { value };
        Ok(Self(text.to_string()))
    }

    /// This base followed by `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> AbsoluteUrl {
        debug_assert!(path.starts_with('/'));
        AbsoluteUrl(format!("{}{}", self.0, path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host[:port]` of the URL.
    pub fn authority(&self) -> &str {
        let rest = self.0.split_once("://").map_or("", |(_, rest)| rest);
        rest.split(['/', '?', '#']).next().unwrap_or("")
    }
}

impl fmt::Display for AbsoluteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_drop_trailing_slash_and_join() {
        let base = AbsoluteUrl::http_base("https://ck.example.com/", "PUBLIC_BASE_URL").unwrap();
        assert_eq!(base.join("/webhook/incoming_call").as_str(), "https://ck.example.com/webhook/incoming_call");
        assert_eq!(base.authority(), "ck.example.com");
    }

    #[test]
    fn refuses_relative_wrong_scheme_and_queries() {
        assert!(AbsoluteUrl::http("/audio/hello.wav", "GREETING_URL").is_err());
        assert!(AbsoluteUrl::http_base("ftp://x.com", "PUBLIC_BASE_URL").is_err());
        let err = AbsoluteUrl::ws_base("wss://relay.example.com/?a=1", "RELAY_PUBLIC_URL").unwrap_err();
        assert_eq!(
            err.to_string(),
            "RELAY_PUBLIC_URL must be an absolute ws(s) URL with no query or fragment, got \"wss://relay.example.com/?a=1\""
        );
        assert!(AbsoluteUrl::ws_base("https://relay.example.com", "RELAY_PUBLIC_URL").is_err());
    }
}
