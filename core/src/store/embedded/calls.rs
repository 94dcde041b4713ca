//! `CallStore` on SQLite.

use super::sql_types::{FiguresColumn, MediaList};
use super::EmbeddedStore;
use crate::domain::call::{ActiveCall, Call, CallEvent, CallPatch, CallStatus, Created, NewCall, Transition};
use crate::domain::ids::{CallSid, MessageSid, RecordingSid};
use crate::domain::message::{status_rank, Message, MessageStatusUpdate, StatusApplied, TimelineItem};
use crate::domain::phone::E164;
use crate::domain::profile::{merge_lead, AgentProfile, ProfileKey};
use crate::domain::recording::Recording;
use crate::domain::stream_report::{StreamFigures, Turn};
use crate::domain::time::Millis;
use crate::domain::transcript::{JobClaim, Transcript};
use crate::domain::users::{User, UserName};
use crate::store::{stored_profiles, Before, CallStore, Contact, MessageWrite, StoreError, StoreResult, StoredProfile};
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use std::time::Duration;

const CALL_COLUMNS: &str = "call_sid, account_sid, from_addr, to_addr, contact, direction, status, created_at, updated_at, \
     status_at, stream_sid, fallback_reason, fallback_action, end_reason, twilio_status, heartbeat_at, relay_instance, stream_figures, redirect_pending, transfer_to";

const RECORDING_COLUMNS: &str =
    "recording_sid, call_sid, url, status, duration_secs, channels, source, error_code, created_at, updated_at, job_enqueued_at";

const MESSAGE_COLUMNS: &str = "message_sid, account_sid, channel, direction, contact, from_addr, to_addr, body, media, \
     profile_name, status, error_code, created_at, updated_at, reply_enqueued_at";

fn call_row(r: &Row<'_>) -> rusqlite::Result<Call> {
    Ok(Call {
        call_sid: r.get(0)?,
        account_sid: r.get(1)?,
        from: r.get(2)?,
        to: r.get(3)?,
        contact: r.get(4)?,
        direction: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        status_at: r.get(9)?,
        stream_sid: r.get(10)?,
        fallback_reason: r.get(11)?,
        fallback_action: r.get(12)?,
        end_reason: r.get(13)?,
        twilio_status: r.get(14)?,
        heartbeat_at: r.get(15)?,
        relay_instance: r.get(16)?,
        stream: r.get::<_, Option<FiguresColumn>>(17)?.map(|f| Box::new(f.0)),
        redirect_pending: r.get(18)?,
        transfer_to: r.get(19)?,
    })
}

const TURN_COLUMNS: &str =
    "seq, caller_stopped_at, first_audio_at, first_mark_at, interrupted, heard_ms, caller_text, agent_text, model_audio_at";

fn turn_row(r: &Row<'_>) -> rusqlite::Result<Turn> {
    Ok(Turn {
        seq: r.get(0)?,
        caller_stopped_at: r.get(1)?,
        first_audio_at: r.get(2)?,
        first_mark_at: r.get(3)?,
        interrupted: r.get(4)?,
        heard_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        caller_text: r.get(6)?,
        agent_text: r.get(7)?,
        model_audio_at: r.get(8)?,
    })
}

fn recording_row(r: &Row<'_>) -> rusqlite::Result<Recording> {
    Ok(Recording {
        recording_sid: r.get(0)?,
        call_sid: r.get(1)?,
        url: r.get(2)?,
        status: r.get(3)?,
        duration_secs: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        channels: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        source: r.get(6)?,
        error_code: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        job_enqueued_at: r.get(10)?,
    })
}

/// The row value a newest-first page starts below: everything, without `before`.
fn page_start(before: Option<&Before>) -> (Millis, String) {
    match before {
        Some(b) => (b.at, b.id.clone()),
        None => (Millis::MAX, String::new()),
    }
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        message_sid: r.get(0)?,
        account_sid: r.get(1)?,
        channel: r.get(2)?,
        direction: r.get(3)?,
        contact: r.get(4)?,
        from: r.get(5)?,
        to: r.get(6)?,
        body: r.get(7)?,
        media: r.get::<_, MediaList>(8)?.0,
        profile_name: r.get(9)?,
        status: r.get(10)?,
        error_code: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        reply_enqueued_at: r.get(14)?,
    })
}

fn load_call(conn: &Connection, call_sid: &CallSid) -> StoreResult<Option<Call>> {
    Ok(conn.query_row(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?1"), [call_sid], call_row).optional()?)
}

fn load_recording(conn: &Connection, sid: &RecordingSid) -> StoreResult<Option<Recording>> {
    Ok(conn.query_row(&format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE recording_sid = ?1"), [sid], recording_row).optional()?)
}

fn load_message(conn: &Connection, sid: &MessageSid) -> StoreResult<Option<Message>> {
    Ok(conn.query_row(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_sid = ?1"), [sid], message_row).optional()?)
}

fn query<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Read back what was just written, inside the same transaction.
fn vanished(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} vanished inside its own transaction"))
}

fn touch_contact(conn: &Connection, phone: &E164, at: Millis, profile_name: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO contacts (phone, first_seen, last_seen, profile_name) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT (phone) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen),
             profile_name = coalesce(excluded.profile_name, profile_name)",
        params![phone, at, profile_name],
    )?;
    Ok(())
}

/// `SET` fragment for a patch: every field is `coalesce(?, field)`, so `None` keeps the value.
const PATCH_SET: &str = "stream_sid = coalesce(?, stream_sid), fallback_reason = coalesce(?, fallback_reason), \
     fallback_action = coalesce(?, fallback_action), end_reason = coalesce(?, end_reason), \
     twilio_status = coalesce(?, twilio_status), relay_instance = coalesce(?, relay_instance), \
     redirect_pending = coalesce(?, redirect_pending), transfer_to = coalesce(?, transfer_to)";

fn patch_values(patch: &CallPatch) -> impl Iterator<Item = Value> + use<> {
    let text =
        [&patch.stream_sid, &patch.fallback_reason, &patch.fallback_action, &patch.end_reason, &patch.twilio_status, &patch.relay_instance]
            .map(|v| v.clone().map_or(Value::Null, Value::Text));
    text.into_iter().chain([
        patch.redirect_pending.map_or(Value::Null, |b| Value::Integer(i64::from(b))),
        patch.transfer_to.clone().map_or(Value::Null, Value::Text),
    ])
}

#[async_trait]
impl CallStore for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        // Touches the calls table, so a missing or unreadable schema fails readiness too.
        self.with_conn(|conn| Ok(conn.query_row("SELECT count(*) FROM (SELECT 1 FROM calls LIMIT 1)", [], |_| Ok(()))?)).await
    }

    async fn create_call(&self, call: &NewCall) -> StoreResult<Created> {
        let c = call.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO calls ({CALL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, NULL, NULL, NULL, NULL, ?9, NULL, NULL, NULL, 0, NULL)
                     ON CONFLICT (call_sid) DO NOTHING"
                ),
                params![c.call_sid, c.account_sid, c.from, c.to, c.contact, c.direction, c.status, c.at, c.twilio_status],
            )? == 1;
            if let (true, Some(contact)) = (inserted, &c.contact) {
                touch_contact(&tx, contact, c.at, None)?;
            }
            let stored = load_call(&tx, &c.call_sid)?.ok_or_else(|| vanished("call"))?;
            tx.commit()?;
            Ok(if inserted { Created::New(stored) } else { Created::Existing(stored) })
        })
        .await
    }

    async fn get_call(&self, call_sid: &CallSid) -> StoreResult<Option<Call>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| load_call(conn, &sid)).await
    }

    async fn transition(
        &self,
        call_sid: &CallSid,
        from: &[CallStatus],
        to: CallStatus,
        patch: &CallPatch,
        at: Millis,
    ) -> StoreResult<Transition> {
        let sid = call_sid.clone();
        let allowed: Vec<CallStatus> = from.iter().copied().filter(|s| s.can_become(to)).collect();
        let patch = patch.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let changed = if allowed.is_empty() {
                0
            } else {
                let marks = vec!["?"; allowed.len()].join(", ");
                let sql = format!(
                    "UPDATE calls SET status = ?, status_at = ?, updated_at = ?, {PATCH_SET} WHERE call_sid = ? AND status IN ({marks})"
                );
                let values = [Value::from(to.as_str().to_string()), Value::from(at), Value::from(at)]
                    .into_iter()
                    .chain(patch_values(&patch))
                    .chain([Value::from(sid.to_string())])
                    .chain(allowed.iter().map(|s| Value::from(s.as_str().to_string())));
                tx.execute(&sql, params_from_iter(values))?
            };
            let call = load_call(&tx, &sid)?;
            tx.commit()?;
            Ok(match (call, changed) {
                (None, _) => Transition::NotFound,
                (Some(call), 0) => Transition::Refused(call),
                (Some(call), _) => Transition::Applied(call),
            })
        })
        .await
    }

    async fn patch_call(&self, call_sid: &CallSid, patch: &CallPatch, at: Millis) -> StoreResult<bool> {
        let sid = call_sid.to_string();
        let patch = patch.clone();
        self.with_conn(move |conn| {
            let values = [Value::from(at)].into_iter().chain(patch_values(&patch)).chain([Value::from(sid)]);
            let changed =
                conn.execute(&format!("UPDATE calls SET updated_at = ?, {PATCH_SET} WHERE call_sid = ?"), params_from_iter(values))?;
            Ok(changed == 1)
        })
        .await
    }

    async fn recent_calls(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Call>> {
        let (at, id) = page_start(before);
        self.with_conn(move |conn| {
            let sql = format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE (created_at, call_sid) < (?1, ?2)
                 ORDER BY created_at DESC, call_sid DESC LIMIT ?3"
            );
            query(conn, &sql, params![at, id, limit as i64], call_row)
        })
        .await
    }

    async fn active_calls(&self) -> StoreResult<Vec<ActiveCall>> {
        self.with_conn(move |conn| {
            // The WHERE is the partial index's own, so SQLite reads the index, not the table's calls.
            let sql = "SELECT call_sid, status, status_at, heartbeat_at, redirect_pending FROM calls
                       WHERE status IN ('ringing', 'awaiting_stream', 'streaming') OR (status = 'fallback' AND redirect_pending = 1)
                       ORDER BY status_at";
            query(conn, sql, [], |r| {
                Ok(ActiveCall {
                    call_sid: r.get(0)?,
                    status: r.get(1)?,
                    status_at: r.get(2)?,
                    heartbeat_at: r.get(3)?,
                    redirect_pending: r.get(4)?,
                })
            })
        })
        .await
    }

    async fn heartbeat(&self, call_sid: &CallSid, last_media_at: Millis) -> StoreResult<bool> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            let sql = "UPDATE calls SET heartbeat_at = max(coalesce(heartbeat_at, 0), ?1) WHERE call_sid = ?2 AND status = 'streaming'";
            Ok(conn.prepare_cached(sql)?.execute(params![last_media_at, sid])? == 1)
        })
        .await
    }

    async fn finish_stream(&self, call_sid: &CallSid, figures: &StreamFigures) -> StoreResult<bool> {
        let sid = call_sid.clone();
        let json = serde_json::to_string(figures).expect("figures always serialize");
        let at = figures.ended_at;
        self.with_conn(move |conn| {
            let sql = "UPDATE calls SET stream_figures = ?1, updated_at = max(updated_at, ?2) WHERE call_sid = ?3";
            Ok(conn.execute(sql, params![json, at, sid])? == 1)
        })
        .await
    }

    async fn put_turn(&self, call_sid: &CallSid, turn: &Turn) -> StoreResult<()> {
        let sid = call_sid.clone();
        let t = turn.clone();
        self.with_conn(move |conn| {
            conn.execute(
                &format!("INSERT OR REPLACE INTO turns (call_sid, {TURN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    sid,
                    t.seq,
                    t.caller_stopped_at,
                    t.first_audio_at,
                    t.first_mark_at,
                    t.interrupted,
                    t.heard_ms.map(|v| v as i64),
                    t.caller_text,
                    t.agent_text,
                    t.model_audio_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn turns(&self, call_sid: &CallSid) -> StoreResult<Vec<Turn>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            query(conn, &format!("SELECT {TURN_COLUMNS} FROM turns WHERE call_sid = ?1 ORDER BY seq"), [sid], turn_row)
        })
        .await
    }

    async fn claim_job(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<JobClaim> {
        let (key, until) = (key.to_string(), at + lease.as_millis() as Millis);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let current: Option<(Millis, Option<Millis>)> = tx
                .query_row("SELECT lease_until, done_at FROM job_claims WHERE key = ?1", [&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let claim = match current {
                Some((_, Some(_))) => JobClaim::Done,
                Some((lease_until, None)) if lease_until > at => JobClaim::Busy,
                _ => {
                    tx.execute(
                        "INSERT INTO job_claims (key, claimed_at, lease_until) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, lease_until = excluded.lease_until",
                        params![key, at, until],
                    )?;
                    JobClaim::Claimed
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn finish_job(&self, key: &str, at: Millis) -> StoreResult<()> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO job_claims (key, claimed_at, lease_until, done_at) VALUES (?1, ?2, ?2, ?2)
                 ON CONFLICT (key) DO UPDATE SET done_at = coalesce(done_at, excluded.done_at)",
                params![key, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn drop_job_claim(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.with_conn(move |conn| Ok(conn.execute("DELETE FROM job_claims WHERE key = ?1 AND done_at IS NULL", [key]).map(|_| ())?)).await
    }

    async fn renew_job_claim(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<bool> {
        let (key, until) = (key.to_string(), at + lease.as_millis() as Millis);
        self.with_conn(move |conn| {
            Ok(conn.execute("UPDATE job_claims SET lease_until = ?1 WHERE key = ?2 AND done_at IS NULL", params![until, key])? == 1)
        })
        .await
    }

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

    async fn add_event(&self, call_sid: &CallSid, event: &CallEvent) -> StoreResult<bool> {
        let sid = call_sid.clone();
        let e = event.clone();
        self.with_conn(move |conn| {
            let added = conn.execute(
                "INSERT INTO call_events (call_sid, key, at, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (call_sid, key) DO NOTHING",
                params![sid, e.key, e.at, e.kind, e.detail.to_string()],
            )?;
            Ok(added == 1)
        })
        .await
    }

    async fn events(&self, call_sid: &CallSid) -> StoreResult<Vec<CallEvent>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            let rows = query(conn, "SELECT at, kind, key, detail FROM call_events WHERE call_sid = ?1 ORDER BY at, id", [sid], |r| {
                Ok((r.get::<_, Millis>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            rows.into_iter()
                .map(|(at, kind, key, detail)| {
                    let detail = serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(format!("event detail: {e}")))?;
                    Ok(CallEvent { at, kind, key, detail })
                })
                .collect()
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

    async fn put_message(&self, message: &Message) -> StoreResult<MessageWrite> {
        let m = message.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let created = tx.execute(
                &format!(
                    "INSERT INTO messages ({MESSAGE_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL)
                     ON CONFLICT (message_sid) DO NOTHING"
                ),
                params![
                    m.message_sid,
                    m.account_sid,
                    m.channel,
                    m.direction,
                    m.contact,
                    m.from,
                    m.to,
                    m.body,
                    MediaList(m.media.clone()),
                    m.profile_name,
                    m.status,
                    m.error_code,
                    m.created_at,
                    m.updated_at,
                ],
            )? == 1;
            if created {
                touch_contact(&tx, &m.contact, m.created_at, m.profile_name.as_deref())?;
            }
            let stored = load_message(&tx, &m.message_sid)?.ok_or_else(|| vanished("message"))?;
            tx.commit()?;
            Ok(MessageWrite { message: stored, created })
        })
        .await
    }

    async fn mark_reply_enqueued(&self, message_sid: &MessageSid, at: Millis) -> StoreResult<()> {
        let sid = message_sid.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE messages SET reply_enqueued_at = coalesce(reply_enqueued_at, ?1) WHERE message_sid = ?2",
                params![at, sid],
            )?;
            Ok(())
        })
        .await
    }

    async fn keep_media(&self, message_sid: &MessageSid, media: &[crate::domain::message::Media], at: Millis) -> StoreResult<bool> {
        let (sid, media) = (message_sid.clone(), MediaList(media.to_vec()));
        self.with_conn(move |conn| {
            let changed =
                conn.execute("UPDATE messages SET media = ?1, updated_at = ?2 WHERE message_sid = ?3", params![media, at, sid])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn update_message_status(&self, update: &MessageStatusUpdate) -> StoreResult<StatusApplied> {
        let u = update.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let current: Option<String> =
                tx.query_row("SELECT status FROM messages WHERE message_sid = ?1", [&u.message_sid], |r| r.get(0)).optional()?;
            let applied = match current {
                Some(current) if status_rank(&u.status) <= status_rank(&current) => StatusApplied::Stale,
                Some(_) => {
                    tx.execute(
                        "UPDATE messages SET status = ?1, error_code = coalesce(?2, error_code), updated_at = ?3 WHERE message_sid = ?4",
                        params![u.status, u.error_code, u.at, u.message_sid],
                    )?;
                    StatusApplied::Updated
                }
                None => {
                    tx.execute(
                        &format!(
                            "INSERT INTO messages ({MESSAGE_COLUMNS})
                             VALUES (?1, ?2, ?3, 'outbound', ?4, ?5, ?6, '', '[]', NULL, ?7, ?8, ?9, ?9, NULL)"
                        ),
                        params![u.message_sid, u.account_sid, u.channel, u.contact, u.from, u.to, u.status, u.error_code, u.at],
                    )?;
                    touch_contact(&tx, &u.contact, u.at, None)?;
                    StatusApplied::Created
                }
            };
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn get_message(&self, message_sid: &MessageSid) -> StoreResult<Option<Message>> {
        let sid = message_sid.clone();
        self.with_conn(move |conn| load_message(conn, &sid)).await
    }

    async fn recent_messages(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Message>> {
        let (at, id) = page_start(before);
        self.with_conn(move |conn| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE (created_at, message_sid) < (?1, ?2)
                 ORDER BY created_at DESC, message_sid DESC LIMIT ?3"
            );
            query(conn, &sql, params![at, id, limit as i64], message_row)
        })
        .await
    }

    async fn contact(&self, phone: &E164) -> StoreResult<Option<Contact>> {
        let phone = phone.clone();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT phone, first_seen, last_seen, profile_name, leads.doc FROM contacts
                     LEFT JOIN leads ON leads.owner = 'contact:' || contacts.phone WHERE phone = ?1",
                    [&phone],
                    |r| {
                        Ok(Contact {
                            phone: r.get(0)?,
                            first_seen: r.get(1)?,
                            last_seen: r.get(2)?,
                            profile_name: r.get(3)?,
                            lead: r.get::<_, Option<String>>(4)?.and_then(|doc| serde_json::from_str(&doc).ok()),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn save_lead(
        &self,
        call_sid: &CallSid,
        contact: Option<&E164>,
        fields: &serde_json::Value,
        at: Millis,
    ) -> StoreResult<serde_json::Value> {
        let owners: Vec<String> = std::iter::once(format!("call:{call_sid}")).chain(contact.map(|c| format!("contact:{c}"))).collect();
        let fields = fields.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut merged = Vec::new();
            for owner in &owners {
                let known: Option<String> = tx.query_row("SELECT doc FROM leads WHERE owner = ?1", [owner], |r| r.get(0)).optional()?;
                let known = known
                    .map(|doc| serde_json::from_str(&doc))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("lead of {owner}: {e}")))?;
                let lead = merge_lead(&known.unwrap_or(serde_json::Value::Null), &fields);
                tx.execute(
                    "INSERT INTO leads (owner, doc, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (owner) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                    params![owner, lead.to_string(), at],
                )?;
                merged.push(lead);
            }
            tx.commit()?;
            Ok(merged.swap_remove(0))
        })
        .await
    }

    async fn lead(&self, call_sid: &CallSid) -> StoreResult<Option<serde_json::Value>> {
        let owner = format!("call:{call_sid}");
        self.with_conn(move |conn| {
            let doc: Option<String> = conn.query_row("SELECT doc FROM leads WHERE owner = ?1", [&owner], |r| r.get(0)).optional()?;
            doc.map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("lead of {owner}: {e}")))).transpose()
        })
        .await
    }

    async fn put_profile(&self, key: &ProfileKey, profile: &AgentProfile, at: Millis) -> StoreResult<()> {
        let key = key.as_str().to_string();
        let doc = serde_json::to_string(profile).expect("profiles serialize");
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO agent_profiles (key, doc, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                params![key, doc, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn profile(&self, key: &ProfileKey) -> StoreResult<Option<AgentProfile>> {
        let key = key.as_str().to_string();
        self.with_conn(move |conn| {
            let doc: Option<String> = conn.query_row("SELECT doc FROM agent_profiles WHERE key = ?1", [&key], |r| r.get(0)).optional()?;
            doc.map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("profile {key}: {e}")))).transpose()
        })
        .await
    }

    async fn profiles(&self) -> StoreResult<Vec<StoredProfile>> {
        let rows = self
            .with_conn(|conn| {
                query(conn, "SELECT key, doc, updated_at FROM agent_profiles", [], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Millis>(2)?))
                })
            })
            .await?;
        stored_profiles(rows)
    }

    async fn timeline(&self, phone: &E164, limit: usize) -> StoreResult<Vec<TimelineItem>> {
        let phone = phone.clone();
        self.with_conn(move |conn| {
            let calls = query(
                conn,
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE contact = ?1 ORDER BY created_at DESC LIMIT ?2"),
                params![phone, limit as i64],
                call_row,
            )?;
            let messages = query(
                conn,
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE contact = ?1 ORDER BY created_at DESC LIMIT ?2"),
                params![phone, limit as i64],
                message_row,
            )?;
            let mut items: Vec<TimelineItem> =
                calls.into_iter().map(TimelineItem::Call).chain(messages.into_iter().map(TimelineItem::Message)).collect();
            items.sort_by_key(|item| std::cmp::Reverse(item.at()));
            items.truncate(limit);
            Ok(items)
        })
        .await
    }

    async fn add_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.with_conn(move |conn| {
            let added = conn.execute(
                "INSERT INTO crm_users (name, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
                params![user.name.as_str(), user.password_hash, user.created_at, user.updated_at],
            )?;
            Ok(added == 1)
        })
        .await
    }

    async fn set_password(&self, name: &UserName, password_hash: &str, at: Millis) -> StoreResult<bool> {
        let (name, hash) = (name.as_str().to_string(), password_hash.to_string());
        self.with_conn(move |conn| {
            Ok(conn.execute("UPDATE crm_users SET password_hash = ?2, updated_at = ?3 WHERE name = ?1", params![name, hash, at])? == 1)
        })
        .await
    }

    async fn user(&self, name: &UserName) -> StoreResult<Option<User>> {
        let name = name.as_str().to_string();
        let rows = self
            .with_conn(move |conn| {
                query(
                    conn,
                    "SELECT name, password_hash, created_at, updated_at, session_epoch FROM crm_users WHERE name = ?1",
                    [name],
                    user_row,
                )
            })
            .await?;
        rows.into_iter().next().transpose()
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let rows = self
            .with_conn(|conn| {
                query(conn, "SELECT name, password_hash, created_at, updated_at, session_epoch FROM crm_users ORDER BY name", [], user_row)
            })
            .await?;
        rows.into_iter().collect()
    }

    async fn remove_user(&self, name: &UserName) -> StoreResult<bool> {
        let name = name.as_str().to_string();
        self.with_conn(move |conn| Ok(conn.execute("DELETE FROM crm_users WHERE name = ?1", [name])? == 1)).await
    }

    async fn end_sessions(&self, name: &UserName, at: Millis) -> StoreResult<bool> {
        let name = name.as_str().to_string();
        self.with_conn(move |conn| {
            Ok(conn
                .execute("UPDATE crm_users SET session_epoch = session_epoch + 1, updated_at = ?2 WHERE name = ?1", params![name, at])?
                == 1)
        })
        .await
    }
}

/// A `crm_users` row; a stored name that no longer parses is reported, not skipped.
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<User>> {
    let (name, password_hash, created_at, updated_at, epoch): (String, String, Millis, Millis, i64) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(UserName::parse(&name)
        .map(|name| User { name, password_hash, created_at, updated_at, session_epoch: epoch as u64 })
        .map_err(|e| StoreError::Corrupt(format!("crm user: {e}"))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_watchdog_reads_the_sparse_index_never_the_whole_table() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT call_sid, status, status_at, heartbeat_at, redirect_pending FROM calls
                 WHERE status IN ('ringing', 'awaiting_stream', 'streaming') OR (status = 'fallback' AND redirect_pending = 1) ORDER BY status_at LIMIT 10",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(plan, ["SCAN calls USING INDEX calls_active"], "a walk of the partial index only");
    }
}
