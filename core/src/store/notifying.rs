//! The call store that raises business events ([`crate::domain::events`]): every write that
//! makes one of their facts true also puts the event on the `events` queue.

use crate::domain::call::{Call, CallEvent, CallPatch, CallStatus, Created, NewCall, Transition};
use crate::domain::ids::{CallSid, MessageSid, RecordingSid};
use crate::domain::job::Job;
use crate::domain::job::JobClaim;
use crate::domain::message::{Message, MessageStatusUpdate, StatusApplied, TimelineItem};
use crate::domain::phone::E164;
use crate::domain::profile::{AgentProfile, ProfileKey};
use crate::domain::recording::Recording;
use crate::domain::stream_report::{StreamFigures, Turn};
use crate::domain::time::Millis;
use crate::domain::transcript::Transcript;
use crate::domain::users::{User, UserName};
use crate::store::{enqueue, Before, CallStore, Contact, JobQueue, MessageWrite, StoreResult, StoredProfile, Stores};
use crate::store::{CallsPort, ClaimsPort, LeadsPort, MessagesPort, ProfilesPort, RecordingsPort, UsersPort};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::events::BusinessEvent;

/// The stores, raising business events from every call store write when `raise` (with
/// `EVENTS_WEBHOOK_URL` set); as they are otherwise.
pub fn notifying(stores: Stores, raise: bool) -> Stores {
    if !raise {
        return stores;
    }
    let calls: Arc<dyn CallStore> = Arc::new(Notifying { inner: stores.calls.clone(), queue: stores.queue.clone() });
    Stores { calls, ..stores }
}

/// A call store that also puts an event on the `events` queue for each fact in [`TYPES`]. A
/// failed enqueue fails the write's call, so its caller retries as for any store failure (the
/// write itself is idempotent, and the event's id is the same).
pub struct Notifying {
    inner: Arc<dyn CallStore>,
    queue: Arc<dyn JobQueue>,
}

impl Notifying {
    async fn raise(&self, event: BusinessEvent) -> StoreResult<()> {
        let (kind, id) = (event.kind.clone(), event.id.clone());
        enqueue(self.queue.as_ref(), &Job::DeliverEvent { event }).await?;
        tracing::debug!(kind, id, "business event queued");
        Ok(())
    }
}

#[async_trait]
impl CallsPort for Notifying {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn create_call(&self, call: &NewCall) -> StoreResult<Created> {
        let created = self.inner.create_call(call).await?;
        // Also on `Existing`: the retry of a webhook whose enqueue failed.
        self.raise(BusinessEvent::call_started(created.call())).await?;
        Ok(created)
    }

    async fn get_call(&self, call_sid: &CallSid) -> StoreResult<Option<Call>> {
        self.inner.get_call(call_sid).await
    }

    async fn transition_at(
        &self,
        call_sid: &CallSid,
        generation: Option<u32>,
        from: &[CallStatus],
        to: CallStatus,
        patch: &CallPatch,
        at: Millis,
    ) -> StoreResult<Transition> {
        let done = self.inner.transition_at(call_sid, generation, from, to, patch, at).await?;
        match &done {
            Transition::Applied(call) if call.status == CallStatus::Completed => self.raise(BusinessEvent::call_ended(call)).await?,
            _ => {}
        }
        Ok(done)
    }

    async fn patch_call(&self, call_sid: &CallSid, patch: &CallPatch, at: Millis) -> StoreResult<bool> {
        self.inner.patch_call(call_sid, patch, at).await
    }

    async fn recent_calls(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Call>> {
        self.inner.recent_calls(before, limit).await
    }

    async fn active_calls(&self) -> StoreResult<Vec<crate::domain::call::ActiveCall>> {
        self.inner.active_calls().await
    }

    async fn heartbeat(&self, call_sid: &CallSid, last_media_at: Millis) -> StoreResult<bool> {
        self.inner.heartbeat(call_sid, last_media_at).await
    }

    async fn finish_stream(&self, call_sid: &CallSid, figures: &StreamFigures) -> StoreResult<bool> {
        self.inner.finish_stream(call_sid, figures).await
    }

    async fn put_turn(&self, call_sid: &CallSid, turn: &Turn) -> StoreResult<()> {
        self.inner.put_turn(call_sid, turn).await
    }

    async fn turns(&self, call_sid: &CallSid) -> StoreResult<Vec<Turn>> {
        self.inner.turns(call_sid).await
    }

    async fn add_event(&self, call_sid: &CallSid, event: &CallEvent) -> StoreResult<bool> {
        self.inner.add_event(call_sid, event).await
    }

    async fn events(&self, call_sid: &CallSid) -> StoreResult<Vec<CallEvent>> {
        self.inner.events(call_sid).await
    }

    async fn append_trace(&self, call_sid: &CallSid, key: &str, lines: &[String]) -> StoreResult<()> {
        self.inner.append_trace(call_sid, key, lines).await
    }

    async fn trace(&self, call_sid: &CallSid) -> StoreResult<Vec<String>> {
        self.inner.trace(call_sid).await
    }
}

#[async_trait]
impl ClaimsPort for Notifying {
    async fn claim_job(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<JobClaim> {
        self.inner.claim_job(key, at, lease).await
    }

    async fn finish_job(&self, key: &str, at: Millis) -> StoreResult<()> {
        self.inner.finish_job(key, at).await
    }

    async fn drop_job_claim(&self, key: &str) -> StoreResult<()> {
        self.inner.drop_job_claim(key).await
    }

    async fn renew_job_claim(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<bool> {
        self.inner.renew_job_claim(key, at, lease).await
    }
}

#[async_trait]
impl RecordingsPort for Notifying {
    async fn put_transcript(&self, call_sid: &CallSid, transcript: &Transcript) -> StoreResult<()> {
        self.inner.put_transcript(call_sid, transcript).await?;
        let lead = self.inner.lead(call_sid).await?;
        self.raise(BusinessEvent::call_analyzed(call_sid, transcript, lead.as_ref())).await
    }

    async fn transcripts(&self, call_sid: &CallSid) -> StoreResult<Vec<Transcript>> {
        self.inner.transcripts(call_sid).await
    }

    async fn put_recording(&self, recording: &Recording) -> StoreResult<Recording> {
        self.inner.put_recording(recording).await
    }

    async fn mark_recording_enqueued(&self, recording_sid: &RecordingSid, at: Millis) -> StoreResult<()> {
        self.inner.mark_recording_enqueued(recording_sid, at).await
    }

    async fn recordings(&self, call_sid: &CallSid) -> StoreResult<Vec<Recording>> {
        self.inner.recordings(call_sid).await
    }
}

#[async_trait]
impl MessagesPort for Notifying {
    async fn put_message(&self, message: &Message) -> StoreResult<MessageWrite> {
        let written = self.inner.put_message(message).await?;
        // A reply that never left (outside the 24-hour window) was not sent.
        if written.message.status != crate::domain::message::MessageStatus::TemplateNeeded {
            self.raise(BusinessEvent::message(&written.message)).await?;
        }
        Ok(written)
    }

    async fn mark_reply_enqueued(&self, message_sid: &MessageSid, at: Millis) -> StoreResult<()> {
        self.inner.mark_reply_enqueued(message_sid, at).await
    }

    async fn keep_media(&self, message_sid: &MessageSid, media: &[crate::domain::message::Media], at: Millis) -> StoreResult<bool> {
        self.inner.keep_media(message_sid, media, at).await
    }

    async fn update_message_status(&self, update: &MessageStatusUpdate) -> StoreResult<StatusApplied> {
        self.inner.update_message_status(update).await
    }

    async fn get_message(&self, message_sid: &MessageSid) -> StoreResult<Option<Message>> {
        self.inner.get_message(message_sid).await
    }

    async fn recent_messages(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Message>> {
        self.inner.recent_messages(before, limit).await
    }

    async fn contact(&self, phone: &E164) -> StoreResult<Option<Contact>> {
        self.inner.contact(phone).await
    }

    async fn timeline(&self, phone: &E164, limit: usize) -> StoreResult<Vec<TimelineItem>> {
        self.inner.timeline(phone, limit).await
    }
}

#[async_trait]
impl LeadsPort for Notifying {
    async fn save_lead(&self, call_sid: &CallSid, contact: Option<&E164>, fields: &Value, at: Millis) -> StoreResult<Value> {
        let lead = self.inner.save_lead(call_sid, contact, fields, at).await?;
        self.raise(BusinessEvent::lead_saved(call_sid, contact, &lead)).await?;
        Ok(lead)
    }

    async fn lead(&self, call_sid: &CallSid) -> StoreResult<Option<Value>> {
        self.inner.lead(call_sid).await
    }
}

#[async_trait]
impl ProfilesPort for Notifying {
    async fn put_profile(&self, key: &ProfileKey, profile: &AgentProfile, at: Millis) -> StoreResult<()> {
        self.inner.put_profile(key, profile, at).await
    }

    async fn profile(&self, key: &ProfileKey) -> StoreResult<Option<AgentProfile>> {
        self.inner.profile(key).await
    }

    async fn profiles(&self) -> StoreResult<Vec<StoredProfile>> {
        self.inner.profiles().await
    }
}

#[async_trait]
impl UsersPort for Notifying {
    async fn add_user(&self, user: &User) -> StoreResult<bool> {
        self.inner.add_user(user).await
    }

    async fn set_password(&self, name: &UserName, password_hash: &str, at: Millis) -> StoreResult<bool> {
        self.inner.set_password(name, password_hash, at).await
    }

    async fn user(&self, name: &UserName) -> StoreResult<Option<User>> {
        self.inner.user(name).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.inner.users().await
    }

    async fn remove_user(&self, name: &UserName) -> StoreResult<bool> {
        self.inner.remove_user(name).await
    }

    async fn end_sessions(&self, name: &UserName, at: Millis) -> StoreResult<bool> {
        self.inner.end_sessions(name, at).await
    }
}
