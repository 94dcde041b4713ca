//! Recordings and their transcripts, on this store ([`crate::store::RecordingsPort`]).

use super::calls::*;
use super::items::*;
use super::sdk_error;
use crate::domain::ids::{CallSid, RecordingSid};
use crate::domain::recording::Recording;
use crate::domain::time::Millis;
use crate::domain::transcript::Transcript;
use crate::store::{RecordingsPort, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use std::collections::HashMap;

#[async_trait]
impl RecordingsPort for DynamoStore {
    async fn put_transcript(&self, call_sid: &CallSid, transcript: &Transcript) -> StoreResult<()> {
        let mut item = key(call_pk(call_sid), format!("TRANSCRIPT#{}", transcript.recording_sid));
        item.insert("created_at".into(), n(transcript.created_at));
        // Free-form (the lead's fields follow a configurable schema): kept as JSON text.
        item.insert("doc".into(), s(serde_json::to_string(transcript).expect("a transcript serializes")));
        self.put(item).await?;
        Ok(())
    }

    async fn transcripts(&self, call_sid: &CallSid) -> StoreResult<Vec<Transcript>> {
        let mut transcripts = self
            .query_prefix(call_pk(call_sid), "TRANSCRIPT#")
            .await?
            .iter()
            .map(|item| {
                serde_json::from_str::<Transcript>(&attr_s(item, "doc")).map_err(|e| StoreError::Corrupt(format!("transcript: {e}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        transcripts.sort_by(|a, b| (a.created_at, a.recording_sid.as_str()).cmp(&(b.created_at, b.recording_sid.as_str())));
        Ok(transcripts)
    }

    async fn put_recording(&self, r: &Recording) -> StoreResult<Recording> {
        let mut update = Update::default();
        update
            .set("recording_sid", s(r.recording_sid.as_str()))
            .set("call_sid", s(r.call_sid.as_str()))
            .set("status", s(r.status.clone()))
            .set("updated_at", n(r.updated_at))
            .set_once("created_at", n(r.created_at));
        let optional = [("url", r.url.clone().map(s)), ("source", r.source.clone().map(s)), ("error_code", r.error_code.clone().map(s))];
        for (field, value) in optional.into_iter().chain([("duration_secs", r.duration_secs.map(n)), ("channels", r.channels.map(n))]) {
            if let Some(value) = value {
                update.set(field, value);
            }
        }
        let builder = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(call_pk(&r.call_sid), format!("REC#{}", r.recording_sid))))
            .return_values(ReturnValue::AllNew);
        let out = update.apply(builder, None).send().await.map_err(sdk_error)?;
        let pointer = HashMap::from([("call_sid".to_string(), s(r.call_sid.as_str()))]);
        let mut item = key(format!("REC#{}", r.recording_sid), "REC");
        item.extend(pointer);
        self.put(item).await?;
        from_item(out.attributes.unwrap_or_default(), "recording")
    }

    async fn mark_recording_enqueued(&self, recording_sid: &RecordingSid, at: Millis) -> StoreResult<()> {
        let Some(pointer) = self.get(format!("REC#{recording_sid}"), "REC").await? else { return Ok(()) };
        let call_sid = attr_s(&pointer, "call_sid");
        let mut update = Update::default();
        update.set_once("job_enqueued_at", n(at));
        let builder = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("CALL#{call_sid}"), format!("REC#{recording_sid}"))));
        match update.apply(builder, Some("attribute_exists(#pk)".into())).send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn recordings(&self, call_sid: &CallSid) -> StoreResult<Vec<Recording>> {
        let mut recordings: Vec<Recording> = self
            .query_prefix(call_pk(call_sid), "REC#")
            .await?
            .into_iter()
            .map(|item| from_item(item, "recording"))
            .collect::<StoreResult<_>>()?;
        recordings.sort_by(|a, b| (a.created_at, a.recording_sid.as_str()).cmp(&(b.created_at, b.recording_sid.as_str())));
        Ok(recordings)
    }
}
