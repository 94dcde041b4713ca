//! Delivers business events ([`crate::domain::events`]) to `EVENTS_WEBHOOK_URL`: one JSON POST
//! per event, signed so the receiver can tell it is ours, as callkeeper tells Twilio's:
//!
//! - `X-Callkeeper-Event-Id`: the event's id, the same on every retry: a copy, for logs, of the
//!   body's `id`, which is the idempotency key (the header is not signed, the body is);
//! - `X-Callkeeper-Timestamp`: seconds since the epoch, when this attempt was signed;
//! - `X-Callkeeper-Signature`: `v1=` and the hex HMAC-SHA256, keyed by `EVENTS_WEBHOOK_SECRET`,
//!   of `{timestamp}.{body}`. A receiver recomputes it over the raw body and refuses old
//!   timestamps, so a captured delivery cannot be replayed later.
//!
//! A 2xx is delivered; anything else (or no answer in 10 s) is a failure: the job comes back
//! with backoff and, after `QUEUE_MAX_RECEIVES`, waits in the events dead-letter queue. An event
//! delivered is never sent again, however often it is queued. Redirects are not followed (a 3xx
//! is a failure): the signed body goes to the configured URL and nowhere else. Errors are kept
//! and logged without the URL, which for many receivers (Zapier, Slack) holds their secret.

use crate::domain::job::Job;
use crate::domain::time::now_ms;
use crate::domain::transcript::JobClaim;
use crate::process::config::{Config, EventsSettings};
use crate::store::{CallStore, StoreError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

pub const ID_HEADER: &str = "x-callkeeper-event-id";
pub const TIMESTAMP_HEADER: &str = "x-callkeeper-timestamp";
pub const SIGNATURE_HEADER: &str = "x-callkeeper-signature";
/// How long a receiver has to answer one delivery.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `json` (an event whose id is `id`) as a POST to the receiver, signed now: what a delivery
/// sends, and `callkeeper doctor`'s ping.
pub fn signed_post(http: &reqwest::Client, settings: &EventsSettings, id: &str, json: String) -> reqwest::RequestBuilder {
    let timestamp = now_ms() / 1000;
    http.post(settings.url.as_str())
        .header("content-type", "application/json")
        .header("user-agent", "callkeeper-events/1")
        .header(ID_HEADER, id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature(settings.secret.expose(), timestamp, &json))
        .body(json)
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("job body is not an event delivery: {0}")]
    BadJob(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another worker is delivering this event")]
    Busy,
    #[error("the receiver did not answer: {0}")]
    Unreachable(String),
    #[error("the receiver answered {status}: {body}")]
    Refused { status: u16, body: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Sent {
        id: String,
        status: u16,
    },
    /// Delivered before: nothing sent.
    Duplicate {
        id: String,
    },
}

impl Delivered {
    pub fn kind(&self) -> &'static str {
        match self {
            Delivered::Sent { .. } => "delivered",
            Delivered::Duplicate { .. } => "duplicate",
        }
    }
}

pub struct Deliverer {
    calls: Arc<dyn CallStore>,
    settings: EventsSettings,
    config: Arc<Config>,
    http: reqwest::Client,
}

impl Deliverer {
    /// `None` without `EVENTS_WEBHOOK_URL`.
    pub fn new(calls: Arc<dyn CallStore>, config: Arc<Config>) -> Option<Deliverer> {
        let settings = config.events.clone()?;
        let http =
            reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none()).build().expect("an HTTP client builds");
        Some(Deliverer { calls, settings, config, http })
    }

    pub fn retry_base(&self) -> Duration {
        self.config.jobs.retry_base
    }

    pub fn lease(&self) -> Duration {
        self.config.jobs.lease
    }

    pub async fn handle(&self, body: &str) -> Result<Delivered, DeliveryError> {
        let event = match Job::from_body(body) {
            Ok(Job::DeliverEvent { event }) => event,
            Ok(other) => return Err(DeliveryError::BadJob(format!("{other:?}"))),
            Err(e) => return Err(DeliveryError::BadJob(e.to_string())),
        };
        let key = format!("event:{}", event.id);
        match self.calls.claim_job(&key, now_ms(), self.lease()).await? {
            JobClaim::Done => return Ok(Delivered::Duplicate { id: event.id }),
            JobClaim::Busy => return Err(DeliveryError::Busy),
            JobClaim::Claimed => {}
        }
        let json = serde_json::to_string(&event).expect("an event serializes");
        let sent = signed_post(&self.http, &self.settings, &event.id, json).send().await;
        let outcome = match sent {
            Err(e) => Err(DeliveryError::Unreachable(e.without_url().to_string())),
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => {
                let status = response.status().as_u16();
                let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
                Err(DeliveryError::Refused { status, body })
            }
        };
        match outcome {
            Ok(status) => {
                self.calls.finish_job(&key, now_ms()).await?;
                Ok(Delivered::Sent { id: event.id, status })
            }
            Err(e) => {
                let _ = self.calls.drop_job_claim(&key).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // echo -n '1796083200.{"id":"x"}' | openssl dgst -sha256 -hmac 'a secret of sixteen'
        assert_eq!(
            signature("a secret of sixteen", 1_796_083_200, r#"{"id":"x"}"#),
            "v1=a978890fa2193d70d651e8db311e801053c92fd80a24a68400b774354d2fe863"
        );
    }
}
