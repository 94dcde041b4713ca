//! Events out: what happened, for the business's own systems. With `EVENTS_WEBHOOK_URL` set,
//! every write that makes one of these facts true also puts an event on the `events` queue, and
//! the delivery worker ([`crate::work::event_delivery`]) POSTs it, signed, with retries and a
//! dead-letter queue behind them:
//!
//! | type | when | `data` |
//! |---|---|---|
//! | `call.started` | a call is created (incoming, or an outbound one answered) | the call |
//! | `call.ended` | the call is completed | the call, `outcome`, `duration_secs` |
//! | `call.analyzed` | a recording's transcript is kept | transcript, summary, intent, the call's lead |
//! | `lead.saved` | lead fields are saved (by the agent during the call, or the extraction after) | the lead as merged |
//! | `whatsapp.received` | an inbound message is kept | the message |
//! | `whatsapp.sent` | an outbound message is kept | the message |
//!
//! The events are raised at the store port (`store::notifying` wraps any call store), so every
//! writer raises them (webhooks, relay, watchdog, reconciler, workers, the CRM) and none can
//! forget. Each event's id is fixed by what it is about (`call.ended:CA…`): a write retried after
//! its enqueue failed raises the same event again, and the delivery worker sends an id once.

use crate::domain::call::Call;
use crate::domain::ids::CallSid;
use crate::domain::message::{Message, MessageDirection};
use crate::domain::phone::E164;
use crate::domain::time::{now_ms, Millis};
use crate::domain::transcript::Transcript;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Every type of event, as receivers see it.
pub const TYPES: [&str; 6] = ["call.started", "call.ended", "call.analyzed", "lead.saved", "whatsapp.received", "whatsapp.sent"];

/// One event, as it is POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessEvent {
    /// The same for every raising of the same fact: the receiver's idempotency key.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was raised, milliseconds since the epoch.
    pub created_at: Millis,
    pub data: Value,
}

impl BusinessEvent {
    fn new(kind: &str, subject: &str, data: Value) -> BusinessEvent {
        BusinessEvent { id: format!("{kind}:{subject}"), kind: kind.to_string(), created_at: now_ms(), data }
    }

    pub fn call_started(call: &Call) -> BusinessEvent {
        BusinessEvent::new("call.started", call.call_sid.as_str(), json!({ "call": call }))
    }

    pub fn call_ended(call: &Call) -> BusinessEvent {
        let duration_secs = ((call.status_at - call.created_at).max(0) + 500) / 1000;
        BusinessEvent::new(
            "call.ended",
            call.call_sid.as_str(),
            json!({ "call": call, "outcome": call.outcome(), "duration_secs": duration_secs }),
        )
    }

    pub fn call_analyzed(call_sid: &CallSid, transcript: &Transcript, lead: Option<&Value>) -> BusinessEvent {
        let subject = format!("{call_sid}:{}", transcript.recording_sid);
        BusinessEvent::new(
            "call.analyzed",
            &subject,
            json!({
                "call_sid": call_sid, "recording_sid": transcript.recording_sid, "language": transcript.language,
                "summary": transcript.summary, "intent": transcript.intent, "lines": transcript.lines, "note": transcript.note, "lead": lead,
            }),
        )
    }

    /// One event per distinct lead: saving the same fields again raises the same id.
    pub fn lead_saved(call_sid: &CallSid, contact: Option<&E164>, lead: &Value) -> BusinessEvent {
        let digest = Sha256::digest(lead.to_string().as_bytes());
        let subject = format!("{call_sid}:{}", hex::encode(&digest[..8]));
        BusinessEvent::new("lead.saved", &subject, json!({ "call_sid": call_sid, "contact": contact, "lead": lead }))
    }

    /// `whatsapp.received` or `whatsapp.sent` (SMS too: `channel` says which).
    pub fn message(message: &Message) -> BusinessEvent {
        let kind = match message.direction {
            MessageDirection::Inbound => "whatsapp.received",
            MessageDirection::Outbound => "whatsapp.sent",
        };
        BusinessEvent::new(kind, message.message_sid.as_str(), json!({ "message": message }))
    }
}
