//! Recordings and their transcripts, on this store ([`crate::store::RecordingsPort`]).

use super::calls::*;
use super::EmbeddedStore;
use crate::domain::ids::{CallSid, RecordingSid};
use crate::domain::recording::Recording;
use crate::domain::time::Millis;
use crate::domain::transcript::Transcript;
use crate::store::{RecordingsPort, StoreError, StoreResult};
use async_trait::async_trait;
use rusqlite::params;

#[async_trait]
impl RecordingsPort for EmbeddedStore {
    async fn put_transcript(&self, call_sid: &CallSid, transcript: &Transcript) -> StoreResult<()> {
        let (sid, t) = (call_sid.clone(), transcript.clone());
        let doc = serde_json::to_string(transcript).expect("a transcript serializes");
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO transcripts (call_sid, recording_sid, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
                params![sid, t.recording_sid, t.created_at, doc],
            )?;
            Ok(())
        })
        .await
    }

    async fn transcripts(&self, call_sid: &CallSid) -> StoreResult<Vec<Transcript>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            let docs = query(conn, "SELECT doc FROM transcripts WHERE call_sid = ?1 ORDER BY created_at, recording_sid", [sid], |r| {
                r.get::<_, String>(0)
            })?;
            docs.iter().map(|d| serde_json::from_str(d).map_err(|e| StoreError::Corrupt(format!("transcript: {e}")))).collect()
        })
        .await
    }

    async fn put_recording(&self, recording: &Recording) -> StoreResult<Recording> {
        let r = recording.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO recordings ({RECORDING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, NULL)
                     ON CONFLICT (recording_sid) DO UPDATE SET
                        url = coalesce(excluded.url, url), status = excluded.status,
                        duration_secs = coalesce(excluded.duration_secs, duration_secs),
                        channels = coalesce(excluded.channels, channels), source = coalesce(excluded.source, source),
                        error_code = coalesce(excluded.error_code, error_code), updated_at = excluded.updated_at"
                ),
                params![
                    r.recording_sid,
                    r.call_sid,
                    r.url,
                    r.status,
                    r.duration_secs.map(|v| v as i64),
                    r.channels.map(|v| v as i64),
                    r.source,
                    r.error_code,
                    r.updated_at,
                ],
            )?;
            let stored = load_recording(&tx, &r.recording_sid)?.ok_or_else(|| vanished("recording"))?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn mark_recording_enqueued(&self, recording_sid: &RecordingSid, at: Millis) -> StoreResult<()> {
        let sid = recording_sid.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE recordings SET job_enqueued_at = coalesce(job_enqueued_at, ?1) WHERE recording_sid = ?2",
                params![at, sid],
            )?;
            Ok(())
        })
        .await
    }

    async fn recordings(&self, call_sid: &CallSid) -> StoreResult<Vec<Recording>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            query(
                conn,
                &format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE call_sid = ?1 ORDER BY created_at, recording_sid"),
                [sid],
                recording_row,
            )
        })
        .await
    }
}
