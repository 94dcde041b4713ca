//! `CallStore` on SQLite.

use super::sql_types::{FiguresColumn, MediaList};
use super::EmbeddedStore;
use crate::domain::call::{ActiveCall, Call, CallEvent, CallPatch, CallStatus, Created, NewCall, Transition};
use crate::domain::ids::{CallSid, MessageSid, RecordingSid};
use crate::domain::message::Message;
use crate::domain::phone::E164;
use crate::domain::recording::Recording;
use crate::domain::stream_report::{StreamFigures, Turn};
use crate::domain::time::Millis;
use crate::store::{Before, CallsPort, StoreError, StoreResult};
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

pub(super) const CALL_COLUMNS: &str = "call_sid, account_sid, from_addr, to_addr, contact, direction, status, created_at, updated_at, \
     status_at, stream_sid, fallback_reason, fallback_action, end_reason, twilio_status, heartbeat_at, relay_instance, stream_figures, redirect_pending, transfer_to, \
     generation, recoveries";

pub(super) const RECORDING_COLUMNS: &str =
    "recording_sid, call_sid, url, status, duration_secs, channels, source, error_code, created_at, updated_at, job_enqueued_at";

pub(super) const MESSAGE_COLUMNS: &str = "message_sid, account_sid, channel, direction, contact, from_addr, to_addr, body, media, \
     profile_name, status, error_code, created_at, updated_at, reply_enqueued_at";

pub(super) fn call_row(r: &Row<'_>) -> rusqlite::Result<Call> {
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
        generation: r.get(20)?,
        recoveries: r.get(21)?,
    })
}

pub(super) const TURN_COLUMNS: &str =
    "seq, caller_stopped_at, first_audio_at, first_mark_at, interrupted, heard_ms, caller_text, agent_text, model_audio_at";

pub(super) fn turn_row(r: &Row<'_>) -> rusqlite::Result<Turn> {
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

pub(super) fn recording_row(r: &Row<'_>) -> rusqlite::Result<Recording> {
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
pub(super) fn page_start(before: Option<&Before>) -> (Millis, String) {
    match before {
        Some(b) => (b.at, b.id.clone()),
        None => (Millis::MAX, String::new()),
    }
}

pub(super) fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
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

pub(super) fn load_call(conn: &Connection, call_sid: &CallSid) -> StoreResult<Option<Call>> {
    Ok(conn.query_row(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?1"), [call_sid], call_row).optional()?)
}

pub(super) fn load_recording(conn: &Connection, sid: &RecordingSid) -> StoreResult<Option<Recording>> {
    Ok(conn.query_row(&format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE recording_sid = ?1"), [sid], recording_row).optional()?)
}

pub(super) fn load_message(conn: &Connection, sid: &MessageSid) -> StoreResult<Option<Message>> {
    Ok(conn.query_row(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_sid = ?1"), [sid], message_row).optional()?)
}

pub(super) fn query<T>(
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
pub(super) fn vanished(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} vanished inside its own transaction"))
}

pub(super) fn touch_contact(conn: &Connection, phone: &E164, at: Millis, profile_name: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO contacts (phone, first_seen, last_seen, profile_name) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT (phone) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen),
             profile_name = coalesce(excluded.profile_name, profile_name)",
        params![phone, at, profile_name],
    )?;
    Ok(())
}

/// `SET` fragment for a patch: every field is `coalesce(?, field)`, so `None` keeps the value.
pub(super) const PATCH_SET: &str = "stream_sid = coalesce(?, stream_sid), fallback_reason = coalesce(?, fallback_reason), \
     fallback_action = coalesce(?, fallback_action), end_reason = coalesce(?, end_reason), \
     twilio_status = coalesce(?, twilio_status), relay_instance = coalesce(?, relay_instance), \
     redirect_pending = coalesce(?, redirect_pending), transfer_to = coalesce(?, transfer_to), \
     generation = coalesce(?, generation), recoveries = coalesce(?, recoveries)";

pub(super) fn patch_values(patch: &CallPatch) -> impl Iterator<Item = Value> + use<> {
    let text =
        [&patch.stream_sid, &patch.fallback_reason, &patch.fallback_action, &patch.end_reason, &patch.twilio_status, &patch.relay_instance]
            .map(|v| v.clone().map_or(Value::Null, Value::Text));
    text.into_iter().chain([
        patch.redirect_pending.map_or(Value::Null, |b| Value::Integer(i64::from(b))),
        patch.transfer_to.clone().map_or(Value::Null, Value::Text),
        patch.generation.map_or(Value::Null, |g| Value::Integer(i64::from(g))),
        patch.recoveries.map_or(Value::Null, |r| Value::Integer(i64::from(r))),
    ])
}

#[async_trait]
impl CallsPort for EmbeddedStore {
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
                    "INSERT INTO calls ({CALL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, NULL, NULL, NULL, NULL, ?9, NULL, NULL, NULL, 0, NULL, 0, 0)
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

    async fn transition_at(
        &self,
        call_sid: &CallSid,
        generation: Option<u32>,
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
                    "UPDATE calls SET status = ?, status_at = ?, updated_at = ?, {PATCH_SET} WHERE call_sid = ? AND status IN ({marks}) \
                     AND generation = coalesce(?, generation)"
                );
                let values = [Value::from(to.as_str().to_string()), Value::from(at), Value::from(at)]
                    .into_iter()
                    .chain(patch_values(&patch))
                    .chain([Value::from(sid.to_string())])
                    .chain(allowed.iter().map(|s| Value::from(s.as_str().to_string())))
                    .chain([generation.map_or(Value::Null, |g| Value::Integer(i64::from(g)))]);
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
    async fn append_trace(&self, call_sid: &CallSid, key: &str, lines: &[String]) -> StoreResult<()> {
        let (sid, key, body) = (call_sid.clone(), key.to_string(), lines.join("\n"));
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO call_traces (call_sid, key, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![sid, key, body],
            )?;
            Ok(())
        })
        .await
    }

    async fn trace(&self, call_sid: &CallSid) -> StoreResult<Vec<String>> {
        let sid = call_sid.clone();
        self.with_conn(move |conn| {
            let chunks = query(conn, "SELECT body FROM call_traces WHERE call_sid = ?1 ORDER BY key", [sid], |r| r.get::<_, String>(0))?;
            Ok(chunks.iter().flat_map(|c| c.lines().map(str::to_string)).collect())
        })
        .await
    }
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
