//! The single table's keys, and its items to and from domain types.
//!
//! | item | pk | sk | indexes |
//! |---|---|---|---|
//! | call | `CALL#{CallSid}` | `CALL` | `active` while on the line or a redirect is pending; `recent`; `timeline` when it has a contact |
//! | call event | `CALL#{CallSid}` | `EVENT#{key}` | (its key makes it idempotent) |
//! | turn | `CALL#{CallSid}` | `TURN#{seq:05}` | |
//! | the call's lead (`save_lead`) | `CALL#{CallSid}` | `LEAD` | |
//! | agent profile | `PROFILES` | `PROFILE#default` or `PROFILE#{E164}` | (one partition: a handful of numbers) |
//! | CRM user (name, Argon2id hash) | `CRM_USERS` | `USER#{name}` | (one partition: the business's staff) |
//! | recording | `CALL#{CallSid}` | `REC#{RecordingSid}` | |
//! | recording pointer | `REC#{RecordingSid}` | `REC` | (finds a recording's call) |
//! | contact (and its merged lead, `lead_doc`) | `CONTACT#{E164}` | `PROFILE` | |
//! | message | `MSG#{MessageSid}` | `MSG` | `timeline`; `recent` (partition `MESSAGES`) |
//! | job error | `JOBERR#{message id}` | `JOBERR` | TTL: what `dlq show` prints |
//!
//! Access patterns: a call by CallSid (GetItem); active calls (Query `active`, one partition
//! per shard, sparse: only calls with `active_pk`); a contact's timeline newest first (Query
//! `timeline` descending, then BatchGetItem); recent calls and messages, a page at a time
//! (Query `recent` descending below the last sort key seen, then BatchGetItem); a call's events, turns and recordings (Query on its pk by sk prefix). Every
//! transition and claim is a conditional write.

use crate::domain::ids::CallSid;
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub const ACTIVE_INDEX: &str = "active";
pub const RECENT_INDEX: &str = "recent";
pub const TIMELINE_INDEX: &str = "timeline";
/// The active index spreads its writes (heartbeats touch it) over this many partitions; the
/// watchdog reads each once per pass.
pub const ACTIVE_SHARDS: u32 = 4;
/// All calls share one `recent` partition: written once per call, at its creation.
pub const RECENT_PK: &str = "CALLS";
/// Messages share another partition of the same index, for the CRM's WhatsApp threads.
pub const RECENT_MESSAGES_PK: &str = "MESSAGES";

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn call_pk(sid: &CallSid) -> String {
    format!("CALL#{sid}")
}

pub fn contact_pk(phone: &E164) -> String {
    format!("CONTACT#{phone}")
}

pub fn active_shard(sid: &CallSid) -> String {
    let last = sid.as_str().bytes().last().unwrap_or(b'0');
    format!("ACTIVE#{}", u32::from(last) % ACTIVE_SHARDS)
}

/// Sorts newest first by time, then by sid for ties.
pub fn time_key(at: Millis, sid: &str) -> String {
    format!("{at:013}#{sid}")
}

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// A domain value as item attributes. Unset (`None`) fields are left out rather than stored as
/// NULL, so `attribute_not_exists` conditions mean what they say.
pub fn to_attrs<T: serde::Serialize>(value: &T) -> Item {
    let mut item: Item = serde_dynamo::to_item(value).expect("domain types serialize to items");
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    item
}

/// An item back as a domain value; a stored item that does not read is corrupt.
pub fn from_item<T: serde::de::DeserializeOwned>(item: Item, what: &str) -> StoreResult<T> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
