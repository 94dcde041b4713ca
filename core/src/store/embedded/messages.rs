//! Contacts, their messages and timelines, on this store ([`crate::store::MessagesPort`]).

use super::calls::*;
use super::sql_types::MediaList;
use super::EmbeddedStore;
use crate::domain::ids::MessageSid;
use crate::domain::message::{Message, MessageStatus, MessageStatusUpdate, StatusApplied, TimelineItem};
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use crate::store::{Before, Contact, MessageWrite, MessagesPort, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

#[async_trait]
impl MessagesPort for EmbeddedStore {
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
            let current: Option<MessageStatus> =
                tx.query_row("SELECT status FROM messages WHERE message_sid = ?1", [&u.message_sid], |r| r.get(0)).optional()?;
            let applied = match current {
                Some(current) if u.status.rank() <= current.rank() => StatusApplied::Stale,
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
}
