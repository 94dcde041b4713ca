//! Contacts, their messages and timelines, on this store ([`crate::store::MessagesPort`]).

use super::calls::*;
use super::items::*;
use super::sdk_error;
use crate::domain::ids::MessageSid;
use crate::domain::message::{Message, MessageDirection, MessageStatusUpdate, StatusApplied, TimelineItem};
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use crate::store::{Before, Contact, MessageWrite, MessagesPort, StoreError, StoreResult};
use async_trait::async_trait;

#[async_trait]
impl MessagesPort for DynamoStore {
    async fn put_message(&self, message: &Message) -> StoreResult<MessageWrite> {
        let mut item = to_attrs(message);
        item.extend(key(format!("MSG#{}", message.message_sid), "MSG"));
        item.insert("contact_pk".into(), s(contact_pk(&message.contact)));
        item.insert("contact_sk".into(), s(time_key(message.created_at, message.message_sid.as_str())));
        item.insert("recent_pk".into(), s(RECENT_MESSAGES_PK));
        item.insert("recent_sk".into(), s(time_key(message.created_at, message.message_sid.as_str())));
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression("attribute_not_exists(pk)");
        match put.send().await {
            Ok(_) => {
                self.touch_contact(&message.contact, message.created_at, message.profile_name.as_deref()).await?;
                Ok(MessageWrite { message: message.clone(), created: true })
            }
            Err(e) if condition_failed(&e) => {
                let stored = self.get_message(&message.message_sid).await?.ok_or_else(|| StoreError::Corrupt("message vanished".into()))?;
                Ok(MessageWrite { message: stored, created: false })
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn mark_reply_enqueued(&self, message_sid: &MessageSid, at: Millis) -> StoreResult<()> {
        let mut update = Update::default();
        update.set_once("reply_enqueued_at", n(at));
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(format!("MSG#{message_sid}"), "MSG")));
        match update.apply(builder, Some("attribute_exists(#pk)".into())).send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn keep_media(&self, message_sid: &MessageSid, media: &[crate::domain::message::Media], at: Millis) -> StoreResult<bool> {
        let value = serde_dynamo::to_attribute_value(media).map_err(|e| StoreError::Invalid(format!("media: {e}")))?;
        let mut update = Update::default();
        update.set("media", value).set("updated_at", n(at));
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(format!("MSG#{message_sid}"), "MSG")));
        match update.apply(builder, Some("attribute_exists(#pk)".into())).send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn update_message_status(&self, u: &MessageStatusUpdate) -> StoreResult<StatusApplied> {
        // Optimistic: read the status, write conditionally on it; a lost race is read again.
        for _ in 0..5 {
            match self.get_message(&u.message_sid).await? {
                Some(current) if u.status.rank() <= current.status.rank() => return Ok(StatusApplied::Stale),
                Some(current) => {
                    let mut update = Update::default();
                    update.set("status", s(u.status.clone())).set("updated_at", n(u.at));
                    if let Some(code) = &u.error_code {
                        update.set("error_code", s(code.clone()));
                    }
                    let was = update.value(s(current.status.clone()));
                    let builder =
                        self.client.update_item().table_name(&self.table).set_key(Some(key(format!("MSG#{}", u.message_sid), "MSG")));
                    match update.apply(builder, Some(format!("#status = {was}"))).send().await {
                        Ok(_) => return Ok(StatusApplied::Updated),
                        Err(e) if condition_failed(&e) => continue,
                        Err(e) => return Err(sdk_error(e)),
                    }
                }
                None => {
                    // A status for a message we never saw (one we sent before we kept them).
                    let message = Message {
                        message_sid: u.message_sid.clone(),
                        account_sid: u.account_sid.clone(),
                        channel: u.channel,
                        direction: MessageDirection::Outbound,
                        contact: u.contact.clone(),
                        from: u.from.clone(),
                        to: u.to.clone(),
                        body: String::new(),
                        media: vec![],
                        profile_name: None,
                        status: u.status.clone(),
                        error_code: u.error_code.clone(),
                        created_at: u.at,
                        updated_at: u.at,
                        reply_enqueued_at: None,
                    };
                    if self.put_message(&message).await?.created {
                        return Ok(StatusApplied::Created);
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!("message {} kept changing under its status update", u.message_sid)))
    }

    async fn get_message(&self, message_sid: &MessageSid) -> StoreResult<Option<Message>> {
        self.get(format!("MSG#{message_sid}"), "MSG").await?.map(|item| from_item(item, "message")).transpose()
    }

    async fn recent_messages(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Message>> {
        let below = before.map(|b| ("recent_sk", time_key(b.at, &b.id)));
        let keys = self.index_keys(RECENT_INDEX, ("recent_pk", RECENT_MESSAGES_PK.to_string()), below, limit).await?;
        self.batch_get(keys).await?.into_iter().map(|item| from_item(item, "message")).collect()
    }

    async fn contact(&self, phone: &E164) -> StoreResult<Option<Contact>> {
        let Some(item) = self.get(contact_pk(phone), "PROFILE").await? else { return Ok(None) };
        let c: StoredContact = from_item(item, "contact")?;
        let lead =
            c.lead_doc.map(|doc| serde_json::from_str(&doc)).transpose().map_err(|e| StoreError::Corrupt(format!("contact lead: {e}")))?;
        Ok(Some(Contact { phone: c.phone, first_seen: c.first_seen, last_seen: c.last_seen, profile_name: c.profile_name, lead }))
    }

    async fn timeline(&self, phone: &E164, limit: usize) -> StoreResult<Vec<TimelineItem>> {
        let keys = self.index_keys(TIMELINE_INDEX, ("contact_pk", contact_pk(phone)), None, limit).await?;
        self.batch_get(keys)
            .await?
            .into_iter()
            .map(|item| {
                if attr_s(&item, "pk").starts_with("CALL#") {
                    Ok(TimelineItem::Call(from_item(item, "call")?))
                } else {
                    Ok(TimelineItem::Message(from_item(item, "message")?))
                }
            })
            .collect()
    }
}
