//! The storage ports the domain speaks to, and their adapters.
//!
//! - [`CallStore`]: everything about calls and what follows them, as seven role ports a
//!   function takes one of ([`CallsPort`]: calls, turns, figures, events; [`ClaimsPort`]: job
//!   claims; [`RecordingsPort`]: recordings and transcripts; [`MessagesPort`]: contacts,
//!   messages, timelines; [`LeadsPort`]; [`ProfilesPort`]; [`UsersPort`]: the CRM's users);
//! - [`JobQueue`]: queues with SQS semantics (visibility timeout, receive count, dead letters
//!   after `max_receives`, inspect and redrive);
//! - [`BlobStore`]: recordings' audio.
//!
//! `embedded` (SQLite and a folder) is the laptop default. Every adapter passes the same
//! contract suite in [`contract`].

pub mod aws;
pub mod embedded;
pub mod notifying;
pub mod open;

#[cfg(feature = "test-support")]
pub mod contract;

use crate::domain::call::{ActiveCall, Call, CallEvent, CallPatch, CallStatus, Created, NewCall, Transition};
use crate::domain::ids::{CallSid, MessageSid, RecordingSid};
use crate::domain::job::JobClaim;
use crate::domain::job::{DeadLetter, Delivery, Job, QueueName};
use crate::domain::message::{Message, MessageStatusUpdate, StatusApplied, TimelineItem};
use crate::domain::phone::E164;
use crate::domain::profile::{AgentProfile, ProfileKey};
use crate::domain::recording::Recording;
use crate::domain::stream_report::{StreamFigures, Turn};
use crate::domain::time::Millis;
use crate::domain::transcript::Transcript;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service failed or could not be reached: worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Something stored cannot be read back as the domain type.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The caller asked for something the port refuses (a bad blob key, say).
    #[error("{0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A message after `put_message`: as stored, and whether this call created it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageWrite {
    pub message: Message,
    pub created: bool,
}

/// A contact: one E.164 number, and when we first and last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub phone: E164,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub profile_name: Option<String>,
    /// The lead's fields, merged from every call with this contact.
    #[serde(default)]
    pub lead: Option<serde_json::Value>,
}

/// Where a newest-first page continues: just older than the item created at `at` with id `id`
/// (its sid). Ties on the millisecond are broken by the id, so no item is skipped or repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    pub at: Millis,
    pub id: String,
}

/// A stored agent profile, for `agent list`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredProfile {
    pub key: ProfileKey,
    pub updated_at: Millis,
    pub profile: AgentProfile,
}

/// The store's port for a call, its turns, figures and events.
#[async_trait]
pub trait CallsPort: Send + Sync {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Creates the call unless it exists (Twilio retries); also records its contact.
    async fn create_call(&self, call: &NewCall) -> StoreResult<Created>;
    async fn get_call(&self, call_sid: &CallSid) -> StoreResult<Option<Call>>;
    /// Moves the call to `to` if its status is one of `from` (and the lifecycle allows it),
    /// setting `patch`'s fields in the same write.
    async fn transition(
        &self,
        call_sid: &CallSid,
        from: &[CallStatus],
        to: CallStatus,
        patch: &CallPatch,
        at: Millis,
    ) -> StoreResult<Transition> {
        self.transition_at(call_sid, None, from, to, patch, at).await
    }
    /// [`CallsPort::transition`], and, when `generation` is given, only while the call's stream
    /// is at that generation: a stream or a fault of another generation changes nothing.
    async fn transition_at(
        &self,
        call_sid: &CallSid,
        generation: Option<u32>,
        from: &[CallStatus],
        to: CallStatus,
        patch: &CallPatch,
        at: Millis,
    ) -> StoreResult<Transition>;
    /// Sets fields other than the status. `false` when the call does not exist.
    async fn patch_call(&self, call_sid: &CallSid, patch: &CallPatch, at: Millis) -> StoreResult<bool>;
    /// Newest first, starting just after `before` (the last call of the page before) when given.
    async fn recent_calls(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Call>>;
    /// The watchdog's list, through the sparse index of calls still on the line, or in
    /// `fallback` with a redirect pending; oldest status first. All of it, page by page (a call
    /// left out would never be watched); never a scan of all calls.
    async fn active_calls(&self) -> StoreResult<Vec<ActiveCall>>;
    /// The relay's heartbeat: when it last saw media. Written only while the call is `streaming`,
    /// so a late beat cannot bring back a call that fell back or ended; `false` then (or when
    /// the call does not exist). Never moves the time backwards.
    async fn heartbeat(&self, call_sid: &CallSid, last_media_at: Millis) -> StoreResult<bool>;
    /// Keeps the stream's figures on the call, whatever its status. `false` when it does not exist.
    async fn finish_stream(&self, call_sid: &CallSid, figures: &StreamFigures) -> StoreResult<bool>;
    /// Inserts or replaces the turn with this `seq`.
    async fn put_turn(&self, call_sid: &CallSid, turn: &Turn) -> StoreResult<()>;
    /// In order of `seq`.
    async fn turns(&self, call_sid: &CallSid) -> StoreResult<Vec<Turn>>;
    /// Records an event; `false` when an event with the same key was already recorded.
    async fn add_event(&self, call_sid: &CallSid, event: &CallEvent) -> StoreResult<bool>;
    /// Oldest first.
    async fn events(&self, call_sid: &CallSid) -> StoreResult<Vec<CallEvent>>;
    /// Keeps a chunk of the call's trace (`CALL_TRACES`, lines of [`crate::trace::line`], at
    /// most [`TRACE_CHUNK_BYTES`] in all); `key` names the chunk, so a retry writes it once.
    async fn append_trace(&self, call_sid: &CallSid, key: &str, lines: &[String]) -> StoreResult<()>;
    /// Every line of the call's trace, chunk by chunk in the order of their keys.
    async fn trace(&self, call_sid: &CallSid) -> StoreResult<Vec<String>>;
}

/// A trace chunk's size at most: inside a DynamoDB item's 400 KB with its keys.
pub const TRACE_CHUNK_BYTES: usize = 300_000;

/// The store's port for workers' claims on jobs.
#[async_trait]
pub trait ClaimsPort: Send + Sync {
    /// Claims the job `key` (a RecordingSid) for `lease`: `Done` if it was finished before,
    /// `Busy` if another worker's lease still runs.
    async fn claim_job(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<JobClaim>;
    /// The job is done: every later claim answers `Done`.
    async fn finish_job(&self, key: &str, at: Millis) -> StoreResult<()>;
    /// The job failed: drops the claim, so its retry can claim it at once.
    async fn drop_job_claim(&self, key: &str) -> StoreResult<()>;
    /// Extends a claim still held (not finished) to `at + lease`; `false` when it is not held.
    async fn renew_job_claim(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<bool>;
}

/// The store's port for recordings and their transcripts.
#[async_trait]
pub trait RecordingsPort: Send + Sync {
    /// Inserts or replaces the call's transcript of one recording.
    async fn put_transcript(&self, call_sid: &CallSid, transcript: &Transcript) -> StoreResult<()>;
    async fn transcripts(&self, call_sid: &CallSid) -> StoreResult<Vec<Transcript>>;
    /// Inserts or updates a recording by its sid, keeping `created_at` and `job_enqueued_at`.
    /// Returns the recording as stored.
    async fn put_recording(&self, recording: &Recording) -> StoreResult<Recording>;
    async fn mark_recording_enqueued(&self, recording_sid: &RecordingSid, at: Millis) -> StoreResult<()>;
    async fn recordings(&self, call_sid: &CallSid) -> StoreResult<Vec<Recording>>;
}

/// The store's port for contacts, their messages and timelines.
#[async_trait]
pub trait MessagesPort: Send + Sync {
    /// Inserts a message unless one with its sid exists; records its contact.
    async fn put_message(&self, message: &Message) -> StoreResult<MessageWrite>;
    async fn mark_reply_enqueued(&self, message_sid: &MessageSid, at: Millis) -> StoreResult<()>;
    /// Replaces the message's media (where each is kept, a voice note's words); `false` when
    /// there is no such message.
    async fn keep_media(&self, message_sid: &MessageSid, media: &[crate::domain::message::Media], at: Millis) -> StoreResult<bool>;
    async fn update_message_status(&self, update: &MessageStatusUpdate) -> StoreResult<StatusApplied>;
    async fn get_message(&self, message_sid: &MessageSid) -> StoreResult<Option<Message>>;
    /// Every contact's messages together, newest first, starting just after `before` when given.
    async fn recent_messages(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Message>>;
    async fn contact(&self, phone: &E164) -> StoreResult<Option<Contact>>;
    /// The contact's calls and messages, newest first.
    async fn timeline(&self, phone: &E164, limit: usize) -> StoreResult<Vec<TimelineItem>>;
}

/// The store's port for leads, on the call and its contact.
#[async_trait]
pub trait LeadsPort: Send + Sync {
    /// Merges `fields` into the lead kept on the call, and on `contact` when there is one (see
    /// [`crate::domain::profile::merge_lead`]). Returns the call's lead after the merge.
    async fn save_lead(
        &self,
        call_sid: &CallSid,
        contact: Option<&E164>,
        fields: &serde_json::Value,
        at: Millis,
    ) -> StoreResult<serde_json::Value>;
    /// The lead kept on the call, if anything was saved.
    async fn lead(&self, call_sid: &CallSid) -> StoreResult<Option<serde_json::Value>>;
}

/// The store's port for agent profiles.
#[async_trait]
pub trait ProfilesPort: Send + Sync {
    /// Inserts or replaces the profile at `key`, whole.
    async fn put_profile(&self, key: &ProfileKey, profile: &AgentProfile, at: Millis) -> StoreResult<()>;
    async fn profile(&self, key: &ProfileKey) -> StoreResult<Option<AgentProfile>>;
    /// Every stored profile, the default first, then by number.
    async fn profiles(&self) -> StoreResult<Vec<StoredProfile>>;
}

/// The store's port for the CRM's users.
#[async_trait]
pub trait UsersPort: Send + Sync {
    /// Adds a CRM user; `false` when the name is taken (nothing changes).
    async fn add_user(&self, user: &crate::domain::users::User) -> StoreResult<bool>;
    /// Replaces a user's password hash; `false` when there is no such user.
    async fn set_password(&self, name: &crate::domain::users::UserName, password_hash: &str, at: Millis) -> StoreResult<bool>;
    async fn user(&self, name: &crate::domain::users::UserName) -> StoreResult<Option<crate::domain::users::User>>;
    /// Every user, by name.
    async fn users(&self) -> StoreResult<Vec<crate::domain::users::User>>;
    /// `false` when there was no such user.
    async fn remove_user(&self, name: &crate::domain::users::UserName) -> StoreResult<bool>;
    /// Ends every session of the user (raises its `session_epoch`); `false` when there is no
    /// such user.
    async fn end_sessions(&self, name: &crate::domain::users::UserName, at: Millis) -> StoreResult<bool>;
}

/// Every port of the call store: what an adapter implements, and what the running system holds
/// (`Stores::calls`). A function that needs only one role takes that role (`&dyn UsersPort`),
/// to which a `&dyn CallStore` coerces.
pub trait CallStore: CallsPort + ClaimsPort + RecordingsPort + MessagesPort + LeadsPort + ProfilesPort + UsersPort {}

impl<T: CallsPort + ClaimsPort + RecordingsPort + MessagesPort + LeadsPort + ProfilesPort + UsersPort> CallStore for T {}

/// The ports, for `use callkeeper_core::store::ports::*` where a module uses many.
pub mod ports {
    pub use super::{CallStore, CallsPort, ClaimsPort, LeadsPort, MessagesPort, ProfilesPort, RecordingsPort, UsersPort};
}

/// Profiles as (key, JSON document, updated at) rows, read back and in `agent list`'s order.
pub(crate) fn stored_profiles(rows: Vec<(String, String, Millis)>) -> StoreResult<Vec<StoredProfile>> {
    let mut profiles = rows
        .into_iter()
        .map(|(key, doc, updated_at)| {
            let key = ProfileKey::from_stored(&key).map_err(|e| StoreError::Corrupt(format!("profile key: {e}")))?;
            let profile = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("profile {}: {e}", key.as_str())))?;
            Ok(StoredProfile { key, updated_at, profile })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    profiles.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(profiles)
}

/// Counts of a queue, for health and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub dead: u64,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Receives after which a message moves to the dead-letter queue instead of being delivered.
    fn max_receives(&self) -> u32;

    /// Returns the message id.
    async fn send(&self, queue: QueueName, body: &str) -> StoreResult<String>;
    /// Up to `max` visible messages, each hidden from other receivers for `visibility`.
    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> StoreResult<Vec<Delivery>>;
    /// Done: deletes the message. A stale receipt (the message was received again since) does nothing.
    async fn ack(&self, queue: QueueName, receipt: &str) -> StoreResult<()>;
    /// Failed: keeps `error` for `dlq show`, and makes the message visible again after `retry_after`
    /// (rounded up to whole seconds on SQS).
    async fn release(&self, queue: QueueName, delivery: &Delivery, error: &str, retry_after: Duration) -> StoreResult<()>;
    /// Keeps a received message hidden for another `visibility` from now: a worker still on it.
    async fn extend(&self, queue: QueueName, receipt: &str, visibility: Duration) -> StoreResult<()>;
    async fn depth(&self, queue: QueueName) -> StoreResult<QueueDepth>;

    /// Oldest first.
    async fn dead_letters(&self, queue: QueueName, limit: usize) -> StoreResult<Vec<DeadLetter>>;
    async fn dead_letter(&self, queue: QueueName, id: &str) -> StoreResult<Option<DeadLetter>>;
    /// Moves one dead letter (or all, with `None`) back to its queue with a fresh receive count.
    /// Returns how many moved.
    async fn redrive(&self, queue: QueueName, id: Option<&str>) -> StoreResult<usize>;
}

/// Sends a job to the queue it belongs on.
pub async fn enqueue(queue: &dyn JobQueue, job: &Job) -> StoreResult<String> {
    queue.send(job.queue(), &job.to_body()).await
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// `bytes` is shared, not copied: a recording can be a hundred megabytes. What the blob is
    /// served as follows from its key ([`blob_content_type`]).
    async fn put(&self, key: &str, bytes: bytes::Bytes) -> StoreResult<()>;
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// A URL a browser can fetch the blob from for `ttl` with no other credentials, where the
    /// store makes them (S3's presigned GET); `None` on a store that does not, whose blobs the
    /// CRM serves through a signed route of its own.
    async fn presigned_url(&self, key: &str, ttl: Duration) -> StoreResult<Option<String>>;
}

/// What a blob is served as, by its key's extension (which the store gave it: recordings are
/// `.wav`, a message's media the extension of its allow-listed type, else `.bin`), and whether
/// a browser may show it in place. Never the type a sender declared: a `text/html` "picture"
/// served as such would run on the bucket's (or the CRM's) origin. What is not shown in place
/// is served as an attachment.
pub fn blob_content_type(key: &str) -> (&'static str, bool) {
    let content_type = match key.rsplit('.').next().unwrap_or("") {
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "webm" => "audio/webm",
        "amr" => "audio/amr",
        "jpg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    };
    let inline = content_type.starts_with("audio/") || content_type.starts_with("image/") || content_type.starts_with("video/");
    (content_type, inline)
}

/// Blob keys are relative paths of plain segments: `recordings/2026/11/23/CA…/RE….wav`.
pub fn check_blob_key(key: &str) -> StoreResult<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("blob key {key:?} must be plain path segments of [A-Za-z0-9-_.=]")))
    }
}

/// The three ports, as the running system holds them.
#[derive(Clone)]
pub struct Stores {
    pub calls: Arc<dyn CallStore>,
    pub queue: Arc<dyn JobQueue>,
    pub blobs: Arc<dyn BlobStore>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn blobs_are_served_as_their_keys_say_and_only_media_in_place() {
        use super::blob_content_type;
        assert_eq!(blob_content_type("recordings/2026/12/01/CA1/RE1.wav"), ("audio/wav", true));
        assert_eq!(blob_content_type("media/2026/12/01/MM1/0.jpg"), ("image/jpeg", true));
        assert_eq!(blob_content_type("media/2026/12/01/MM1/1.pdf"), ("application/pdf", false));
        assert_eq!(blob_content_type("media/2026/12/01/MM1/2.bin"), ("application/octet-stream", false));
        assert_eq!(blob_content_type("media/2026/12/01/MM1/3.html"), ("application/octet-stream", false));
    }
}
