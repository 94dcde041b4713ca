//! The doctor's checks of what Twilio meets: the credentials, the numbers' webhooks, the
//! webhooks and the relay as Twilio reaches them.

use super::{last4, Check};
use crate::media_client::{Dial, MediaCall, Refused};
use callkeeper_core::config::Config;
use callkeeper_core::form::PROBE_FIELD;
use callkeeper_core::ids::random_sid;
use callkeeper_core::routes::{Route, HEALTHZ, STREAM_PATH, VERSION};
use callkeeper_core::secrets::Secret;
use callkeeper_core::signature::{compute, Algorithm};
use callkeeper_core::twilio::numbers::changes;
use callkeeper_core::twilio_rest::{IncomingNumber, RestError, RetryPolicy, TwilioRest};
use std::time::Duration;

/// One try each: the doctor reports, it does not wait out an outage.
fn once() -> RetryPolicy {
    RetryPolicy { attempts: 1, per_attempt: super::TIMEOUT, ..RetryPolicy::default() }
}

fn rest_with(config: &Config, token: &Secret) -> TwilioRest {
    TwilioRest::new(&config.twilio_api_base, config.twilio_account_sid.clone(), token.clone(), once())
}

/// Why a credential failed, and what to do.
fn refused(error: &RestError, setting: &str, account: &str) -> String {
    match error {
        RestError::Api { status: 401, .. } => {
            format!("Twilio refused {setting} for account {account}: copy the Auth Token from Twilio Console → Account → API keys & tokens")
        }
        RestError::Api { status: 404, .. } => "no such account: check TWILIO_ACCOUNT_SID (Console → Account Info)".into(),
        other => format!("Twilio's API did not answer ({other}): check this machine's network and TWILIO_API_BASE"),
    }
}

/// `GET Accounts/{AC}.json` with each token, then each number's settings.
pub async fn credentials_and_numbers(config: &Config, only: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    let account = config.twilio_account_sid.as_str();
    let primary = &config.twilio_auth_token;
    let works = match rest_with(config, primary).fetch_account().await {
        Ok(found) => {
            let status = if found.status == "active" {
                String::new()
            } else {
                format!(" — the account is {}: reactivate it in Twilio's console", found.status)
            };
            let detail = format!(
                "account {} ({}, {}), TWILIO_AUTH_TOKEN {}{status}",
                found.sid,
                found.friendly_name,
                found.kind,
                last4(primary.expose())
            );
            checks.push(if status.is_empty() {
                Check::pass("twilio credentials", detail)
            } else {
                Check::fail("twilio credentials", detail)
            });
            true
        }
        Err(e) => {
            checks.push(Check::fail("twilio credentials", refused(&e, &format!("TWILIO_AUTH_TOKEN {}", last4(primary.expose())), account)));
            false
        }
    };
    if let Some(secondary) = &config.twilio_auth_token_secondary {
        checks.push(match rest_with(config, secondary).fetch_account().await {
            Ok(_) => Check::pass("twilio secondary token", format!("TWILIO_AUTH_TOKEN_SECONDARY {} works", last4(secondary.expose()))),
            Err(e) => Check::fail(
                "twilio secondary token",
                refused(&e, &format!("TWILIO_AUTH_TOKEN_SECONDARY {}", last4(secondary.expose())), account)
                    + "; or unset it once the rotation is over",
            ),
        });
    }
    if !works {
        checks.push(Check::fail("numbers", "not run: Twilio refused the credentials"));
        return checks;
    }
    checks.extend(numbers(config, only).await);
    checks
}

/// Each number: does it send its calls (and messages) here, with the connection overrides?
async fn numbers(config: &Config, only: &[String]) -> Vec<Check> {
    let rest = config.twilio_rest();
    let numbers = if only.is_empty() {
        match rest.incoming_numbers(None).await {
            Ok(all) if all.is_empty() => {
                return vec![Check::fail("numbers", "the account has no phone numbers: buy one (Console → Phone Numbers → Buy a number)")]
            }
            Ok(all) => all,
            Err(e) => return vec![Check::fail("numbers", format!("Twilio did not list the numbers: {e}"))],
        }
    } else {
        let mut asked = Vec::new();
        for wanted in only {
            match rest.incoming_numbers(Some(wanted)).await {
                Ok(list) => match list.into_iter().find(|n| &n.phone_number == wanted) {
                    Some(number) => asked.push(number),
                    None => {
                        let why = format!("not a number of account {}: see `callkeeper twilio numbers`", config.twilio_account_sid);
                        return vec![Check::fail(format!("number {wanted}"), why)];
                    }
                },
                Err(e) => return vec![Check::fail(format!("number {wanted}"), format!("Twilio did not answer: {e}"))],
            }
        }
        asked
    };
    numbers.iter().map(|number| number_points_here(config, number)).collect()
}

fn number_points_here(config: &Config, number: &IncomingNumber) -> Check {
    let name = format!("number {}", number.phone_number);
    let differs = changes(config, number);
    if differs.is_empty() {
        return Check::pass(name, "calls and messages come here, with the connection overrides");
    }
    let what: Vec<String> = differs
        .iter()
        .map(|c| format!("{} is {}", c.field, if c.from.is_empty() { "not set".to_string() } else { format!("{:?}", c.from) }))
        .collect();
    Check::fail(name, format!("{}: run `callkeeper twilio configure --number {}`", what.join(", "), number.phone_number))
}

/// `/healthz`, `/version` and a signed probe of `incoming_call` at the public URL.
pub async fn webhooks(config: &Config, http: &reqwest::Client) -> Vec<Check> {
    let base = config.public_base_url.as_str();
    let unreachable = |url: &str, e: &reqwest::Error| {
        format!("{url} did not answer ({}): check PUBLIC_BASE_URL is the stack's WebhookBaseUrl output", plain(e))
    };
    let mut checks = Vec::new();
    let healthz = format!("{base}{HEALTHZ}");
    checks.push(match http.get(&healthz).send().await {
        Ok(r) if r.status() == 200 => Check::pass("webhooks /healthz", format!("{healthz} answers")),
        Ok(r) => Check::fail(
            "webhooks /healthz",
            format!("{healthz} answered HTTP {}: PUBLIC_BASE_URL is not callkeeper's webhooks", r.status().as_u16()),
        ),
        Err(e) => Check::fail("webhooks /healthz", unreachable(&healthz, &e)),
    });
    let version = format!("{base}{VERSION}");
    let ours = callkeeper_core::build_info::build_info();
    checks.push(match http.get(&version).send().await {
        Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
            Ok(body) if body["git_sha"] == ours.git_sha && body["version"] == ours.version => {
                Check::pass("webhooks /version", format!("this build: {}+{}", ours.version, ours.git_sha))
            }
            Ok(body) => Check::fail(
                "webhooks /version",
                format!(
                    "the webhooks run {}+{}, this is {}+{}: deploy this build (`sam build && sam deploy`), or run the deployed build's doctor",
                    body["version"].as_str().unwrap_or("?"),
                    body["git_sha"].as_str().unwrap_or("?"),
                    ours.version,
                    ours.git_sha
                ),
            ),
            Err(e) => Check::fail("webhooks /version", format!("{version} did not answer JSON ({e}): PUBLIC_BASE_URL is not callkeeper's webhooks")),
        },
        Ok(r) => Check::fail("webhooks /version", format!("{version} answered HTTP {}: an old build without /version?", r.status().as_u16())),
        Err(e) => Check::fail("webhooks /version", unreachable(&version, &e)),
    });
    checks.push(probe(config, http).await);
    checks
}

/// `incoming_call` as Twilio posts it, signed, marked as the doctor's probe (no call is written):
/// the answer must be TwiML that records the call and streams it to this relay.
async fn probe(config: &Config, http: &reqwest::Client) -> Check {
    let name = "webhooks incoming_call";
    let url = config.webhook_url(Route::IncomingCall.path());
    let to = config.twilio_phone_number.as_ref().map(|n| n.as_str().to_string()).unwrap_or_else(|| "+15005550006".into());
    let form: Vec<(String, String)> = [
        ("AccountSid", config.twilio_account_sid.as_str().to_string()),
        ("ApiVersion", "2010-04-01".into()),
        ("CallSid", random_sid("CA")),
        ("CallStatus", "ringing".into()),
        ("Direction", "inbound".into()),
        ("From", "+15005550006".into()),
        ("To", to),
        (PROBE_FIELD, "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let signature = compute(config.twilio_auth_token.expose().as_bytes(), Algorithm::HmacSha1, url.as_str(), &form);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
    let answer = http
        .post(url.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => return Check::fail(name, format!("{url} did not answer ({}): check PUBLIC_BASE_URL", plain(&e))),
    };
    let status = response.status().as_u16();
    let xml = response.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/xml"));
    let text = response.text().await.unwrap_or_default();
    match status {
        200 => {}
        403 => {
            return Check::fail(name, "refused the signature (403): the webhooks' TWILIO_AUTH_TOKEN or PUBLIC_BASE_URL differs from these")
        }
        code => return Check::fail(name, format!("answered HTTP {code} (Twilio error 11200): see the webhooks' log for this request")),
    }
    if !xml {
        return Check::fail(name, "answered without Content-Type text/xml: Twilio would not run it (12300)");
    }
    let doc = match callkeeper_core::twiml_reader::try_parse_twiml(&text) {
        Ok(doc) => doc,
        Err(e) => return Check::fail(name, format!("answered TwiML Twilio cannot read (12100): {e}")),
    };
    let stream_url = doc.find("Connect").and_then(|c| c.find("Stream")).and_then(|s| s.attr("url")).map(str::to_string);
    let wanted = format!("{}{STREAM_PATH}", config.relay_public_url);
    match (doc.find("Start").and_then(|s| s.find("Recording")).is_some(), stream_url) {
        (true, Some(url)) if url == wanted => Check::pass(name, format!("signed probe answered: records the call, streams to {url}")),
        (_, Some(url)) if url != wanted => {
            Check::fail(name, format!("streams to {url}, not {wanted}: the webhooks' RELAY_PUBLIC_URL differs from this one"))
        }
        (false, _) => Check::fail(name, "the TwiML does not record the call: an old build? deploy this one"),
        _ => Check::fail(name, "the TwiML has no <Connect><Stream>: an old build? deploy this one"),
    }
}

/// A signed upgrade to the relay's public URL: a 101 with `audio.twilio.com`, over a TLS
/// certificate valid for its name when it is `wss://`.
pub async fn relay(config: &Config) -> Check {
    let name = "relay";
    let public = format!("{}{STREAM_PATH}", config.relay_public_url);
    let Ok(url) = url::Url::parse(&public) else { return Check::fail(name, format!("RELAY_PUBLIC_URL {public} is not a URL")) };
    let tls = url.scheme() == "wss";
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Check::fail(name, format!("RELAY_PUBLIC_URL {public} has no host"));
    };
    let connect_to = match tokio::net::lookup_host((host, port)).await.map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            return Check::fail(
                name,
                format!("{host} does not resolve: RELAY_PUBLIC_URL must be the stack's RelayUrl, with its DNS record"),
            )
        }
    };
    let dial = Dial {
        connect_to,
        public_url: &public,
        path: url.path(),
        auth_token: Some(config.twilio_auth_token.expose()),
        offer_subprotocol: true,
        tls,
    };
    let call = match tokio::time::timeout(super::TIMEOUT, MediaCall::dial(&dial, &random_sid("MZ"))).await {
        Err(_) => {
            return Check::fail(
                name,
                format!("{public}: no answer within {:?}: check the load balancer's listener and security group", super::TIMEOUT),
            )
        }
        Ok(Err(e)) => {
            let detail = match e.downcast_ref::<Refused>() {
                Some(Refused { status: 426 }) => format!("{public} answered 426 (Twilio's 31920): nothing serves the WebSocket there; RELAY_PUBLIC_URL must be the relay's, not the webhooks'"),
                Some(Refused { status: 403 }) => format!("{public} refused the signature (403): the relay's TWILIO_AUTH_TOKEN or RELAY_PUBLIC_URL differs from these"),
                Some(Refused { status }) => format!("{public} answered HTTP {status} to the upgrade (Twilio's 31920): check the relay's log"),
                None => format!("{public}: {e:#}: check the certificate covers {host}, and the listener"),
            };
            return Check::fail(name, detail);
        }
        Ok(Ok(call)) => call,
    };
    call.hang_up();
    // Let the close frame go before the socket is dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    match call.subprotocol.as_deref() {
        Some("audio.twilio.com") => {
            let over = if tls { format!("TLS certificate valid for {host}") } else { "plain ws (no TLS: local only)".into() };
            Check::pass(name, format!("signed upgrade answered 101 with audio.twilio.com; {over}"))
        }
        other => Check::fail(name, format!("101, but the subprotocol was {other:?}, not audio.twilio.com: the relay is an old build")),
    }
}

/// A request error in one line without its URL (a receiver's URL may hold its secret).
pub(super) fn plain(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The innermost cause says why: refused, a name that does not resolve, a certificate.
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        cause = Some(inner.to_string());
        source = inner.source();
    }
    match cause {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}
