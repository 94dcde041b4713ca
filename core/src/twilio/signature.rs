//! Twilio's request signatures (`X-Twilio-Signature`).
//!
//! The signature is base64(HMAC(key, url + name1 + value1 + name2 + value2 …)) with the POST
//! fields sorted by name, and a name's repeated values sorted (duplicates counted once, as the
//! twilio-python validator does). Twilio is not consistent about the port in the URL it signs,
//! so a request is valid when the signature matches the URL with the scheme's default port
//! added, or with any port removed. JSON bodies are signed with no fields; instead the URL
//! carries `bodySHA256`, the hex SHA-256 of the body.
//!
//! Checked against twilio-python's `RequestValidator` by `tests/signature_vectors.rs`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Digest;
use subtle::ConstantTimeEq;

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// Present when the webhook is signed with a shared key: `key=…,algorithm=HMAC_SHA256`.
pub const SIGNATURE_SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
}

impl Algorithm {
    /// The algorithm named by `X-Twilio-Webhooks-Signature-Settings`; HMAC-SHA1 when the header
    /// is absent or names none. `None` for an algorithm we do not know, which fails validation.
    pub fn from_settings_header(header: Option<&str>) -> Option<Self> {
        let named = header
            .unwrap_or("")
            .split(',')
            .filter_map(|part| part.split_once('='))
            .find(|(name, value)| name.trim() == "algorithm" && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_ascii_uppercase());
        match named.as_deref() {
            None | Some("HMAC_SHA1") => Some(Algorithm::HmacSha1),
            Some("HMAC_SHA256") => Some(Algorithm::HmacSha256),
            Some(_) => None,
        }
    }
}

/// What was posted: form fields in the order received, or a JSON body.
#[derive(Debug, Clone, Copy)]
pub enum SignedBody<'a> {
    Form(&'a [(String, String)]),
    Json(&'a [u8]),
}

/// The signature Twilio would send for `url` and `params`.
///
/// Sorting the (name, value) pairs once orders them by name, then value, as the validator does,
/// in O(n log n): a request with thousands of distinct names costs no more than its sort (the
/// signature is checked before anything else, so this is what an unsigned flood pays for).
pub fn compute(key: &[u8], algorithm: Algorithm, url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut signed = String::with_capacity(url.len() + pairs.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>());
    signed.push_str(url);
    for (name, value) in pairs {
        signed.push_str(name);
        signed.push_str(value);
    }
    let digest = match algorithm {
        Algorithm::HmacSha1 => hmac_digest::<Hmac<sha1::Sha1>>(key, signed.as_bytes()),
        Algorithm::HmacSha256 => hmac_digest::<Hmac<sha2::Sha256>>(key, signed.as_bytes()),
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

fn hmac_digest<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `signature` is Twilio's for this request.
pub fn validate(key: &[u8], algorithm: Algorithm, url: &str, body: SignedBody<'_>, signature: &str) -> bool {
    let no_fields: [(String, String); 0] = [];
    let params: &[(String, String)] = match body {
        SignedBody::Form(params) => params,
        SignedBody::Json(bytes) => {
            let Some(expected) = query_param(url, "bodySHA256") else { return false };
            let actual = hex::encode(sha2::Sha256::digest(bytes));
            if !constant_time_eq(actual.as_bytes(), expected.as_bytes()) {
                return false;
            }
            &no_fields
        }
    };
    let (with_port, without_port) = port_variants(url);
    // Both are computed and compared whatever the first gives, so timing says nothing.
    let a = constant_time_eq(compute(key, algorithm, &without_port, params).as_bytes(), signature.as_bytes());
    let b = constant_time_eq(compute(key, algorithm, &with_port, params).as_bytes(), signature.as_bytes());
    a | b
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
}

/// The URL with the scheme's default port made explicit, and with any port removed.
/// A URL that already has a port keeps it in the first; one without keeps that in the second.
pub fn port_variants(url: &str) -> (String, String) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), url.to_string()) };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // A port is digits after the last colon outside an IPv6 literal's brackets.
    let port_colon = host_port
        .rfind(':')
        .filter(|&i| !host_port[i..].contains(']') && host_port[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < host_port.len());
    match port_colon {
        Some(i) => {
            let without = format!("{scheme}://{}{}{tail}", &authority[..host_start], &host_port[..i]);
            (url.to_string(), without)
        }
        None => {
            let port = match scheme.to_ascii_lowercase().as_str() {
                "https" | "wss" => 443,
                _ => 80,
            };
            (format!("{scheme}://{authority}:{port}{tail}"), url.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_distinct_names_cost_a_sort_not_a_scan_per_name() {
        // 20,000 distinct names: one scan of all fields per name was 400 million comparisons.
        let params: Vec<(String, String)> = (0..20_000).map(|i| (format!("f{i:05}"), "v".to_string())).collect();
        let started = std::time::Instant::now();
        compute(b"key", Algorithm::HmacSha1, "https://ck.example.com/webhook/incoming_call", &params);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn repeated_names_and_values_sign_in_order_once() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let a = compute(b"k", Algorithm::HmacSha1, "https://h/x", &p(&[("b", "2"), ("a", "9"), ("b", "1"), ("b", "2")]));
        let b = compute(b"k", Algorithm::HmacSha1, "https://h/x", &p(&[("a", "9"), ("b", "1"), ("b", "2")]));
        assert_eq!(a, b);
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// The example in Twilio's security documentation.
    #[test]
    fn twilio_documented_example() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = compute(b"12345", Algorithm::HmacSha1, url, &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(validate(b"12345", Algorithm::HmacSha1, url, SignedBody::Form(&params), &sig));
        assert!(validate(
            b"12345",
            Algorithm::HmacSha1,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            SignedBody::Form(&params),
            &sig
        ));
        assert!(!validate(b"12346", Algorithm::HmacSha1, url, SignedBody::Form(&params), &sig));
    }

    #[test]
    fn json_bodies_are_checked_by_hash() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = hex::encode(sha2::Sha256::digest(body));
        let url = format!("https://example.com/myapp?bodySHA256={hash}");
        let sig = compute(b"12345", Algorithm::HmacSha1, &url, &[]);
        assert!(validate(b"12345", Algorithm::HmacSha1, &url, SignedBody::Json(body), &sig));
        assert!(!validate(b"12345", Algorithm::HmacSha1, &url, SignedBody::Json(b"{}"), &sig));
        assert!(!validate(b"12345", Algorithm::HmacSha1, "https://example.com/myapp", SignedBody::Json(body), &sig));
    }

    #[test]
    fn ports() {
        assert_eq!(port_variants("https://a.com/x?y=1"), ("https://a.com:443/x?y=1".to_string(), "https://a.com/x?y=1".to_string()));
        assert_eq!(port_variants("http://a.com:8080"), ("http://a.com:8080".to_string(), "http://a.com".to_string()));
        assert_eq!(port_variants("wss://r.io/ws").0, "wss://r.io:443/ws");
        assert_eq!(port_variants("http://[::1]:9/p").1, "http://[::1]/p");
    }

    #[test]
    fn settings_header() {
        assert_eq!(Algorithm::from_settings_header(None), Some(Algorithm::HmacSha1));
        assert_eq!(Algorithm::from_settings_header(Some("key=k1,algorithm=HMAC_SHA256")), Some(Algorithm::HmacSha256));
        assert_eq!(Algorithm::from_settings_header(Some("key=k1, algorithm=HMAC_SHA512")), None);
    }
}
