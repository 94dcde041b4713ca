//! `CallStore` on one DynamoDB table (its layout and access patterns: `items.rs`).

use super::items::*;
use super::{sdk_error, unavailable};
use crate::domain::call::{ActiveCall, Call, CallEvent, CallPatch, CallStatus, Created, NewCall, Transition};
use crate::domain::ids::CallSid;
use crate::domain::phone::E164;
use crate::domain::profile::merge_lead;
use crate::domain::stream_report::{StreamFigures, Turn};
use crate::domain::time::Millis;
use crate::store::{Before, CallsPort, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

/// A job claim is kept a month (TTL), long past any redelivery of its job.
pub(super) const JOB_CLAIM_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
}

/// Whether an SDK error is a failed condition: an answer, not a failure.
pub(super) fn condition_failed<R>(e: &aws_sdk_dynamodb::error::SdkError<impl aws_sdk_dynamodb::error::ProvideErrorMetadata, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// An UpdateExpression under construction: `SET` and `REMOVE` clauses with placeholders.
#[derive(Default)]
pub(super) struct Update {
    pub(super) sets: Vec<String>,
    pub(super) removes: Vec<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Update {
    pub(super) fn set(&mut self, field: &str, value: AttributeValue) -> &mut Self {
        let i = self.values.len();
        self.names.insert(format!("#f{i}"), field.to_string());
        self.values.insert(format!(":v{i}"), value);
        self.sets.push(format!("#f{i} = :v{i}"));
        self
    }

    /// Sets `field` only if it has no value yet.
    pub(super) fn set_once(&mut self, field: &str, value: AttributeValue) -> &mut Self {
        let i = self.values.len();
        self.names.insert(format!("#f{i}"), field.to_string());
        self.values.insert(format!(":v{i}"), value);
        self.sets.push(format!("#f{i} = if_not_exists(#f{i}, :v{i})"));
        self
    }

    fn remove(&mut self, field: &str) -> &mut Self {
        self.removes.push(field.to_string());
        self
    }

    /// A placeholder for a value used in the condition.
    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let name = format!(":c{}", self.values.len());
        self.values.insert(name.clone(), value);
        name
    }

    fn patch(&mut self, patch: &CallPatch) -> &mut Self {
        let text = [
            ("stream_sid", &patch.stream_sid),
            ("fallback_reason", &patch.fallback_reason),
            ("fallback_action", &patch.fallback_action),
            ("end_reason", &patch.end_reason),
            ("twilio_status", &patch.twilio_status),
            ("relay_instance", &patch.relay_instance),
            ("transfer_to", &patch.transfer_to),
        ];
        for (field, value) in text {
            if let Some(value) = value {
                self.set(field, s(value.clone()));
            }
        }
        if let Some(pending) = patch.redirect_pending {
            self.set("redirect_pending", AttributeValue::Bool(pending));
        }
        for (field, value) in [("generation", patch.generation), ("recoveries", patch.recoveries)] {
            if let Some(value) = value {
                self.set(field, n(value));
            }
        }
        self
    }

    pub(super) fn apply(self, builder: UpdateItemFluentBuilder, condition: Option<String>) -> UpdateItemFluentBuilder {
        let mut expression = String::new();
        if !self.sets.is_empty() {
            expression = format!("SET {}", self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            expression = format!("{expression} REMOVE {}", self.removes.join(", "));
        }
        // DynamoDB refuses names an expression does not use.
        let text = format!("{expression} {}", condition.as_deref().unwrap_or(""));
        let mut names = self.names;
        names.insert("#status".into(), "status".into());
        names.insert("#pk".into(), "pk".into());
        names.retain(|placeholder, _| text.contains(placeholder.as_str()));
        let mut builder = builder.update_expression(expression.trim()).set_expression_attribute_values(Some(self.values));
        if !names.is_empty() {
            builder = builder.set_expression_attribute_names(Some(names));
        }
        if let Some(condition) = condition {
            builder = builder.condition_expression(condition);
        }
        builder
    }
}

pub(super) fn call_item(call: &Call) -> Item {
    let mut item = to_attrs(call);
    item.extend(key(call_pk(&call.call_sid), "CALL"));
    item.insert("recent_pk".into(), s(RECENT_PK));
    item.insert("recent_sk".into(), s(time_key(call.created_at, call.call_sid.as_str())));
    if let Some(contact) = &call.contact {
        item.insert("contact_pk".into(), s(contact_pk(contact)));
        item.insert("contact_sk".into(), s(time_key(call.created_at, call.call_sid.as_str())));
    }
    if call.status.is_active() {
        item.insert("active_pk".into(), s(active_shard(&call.call_sid)));
        item.insert("active_sk".into(), n(call.status_at));
    }
    item
}

impl DynamoStore {
    pub fn new(client: Client, table: &str) -> DynamoStore {
        DynamoStore { client, table: table.to_string() }
    }

    pub(crate) async fn put(&self, item: Item) -> StoreResult<()> {
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_error)?;
        Ok(())
    }

    pub(crate) async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item)
    }

    /// Items of one partition whose sort key starts with `prefix`, in sort key order.
    pub(super) async fn query_prefix(&self, pk: String, prefix: &str) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// The keys of an index partition, newest first.
    /// The keys of the index's partition `hash`, sort key descending; only those below
    /// `below` (a sort key attribute and its bound) when given.
    pub(super) async fn index_keys(
        &self,
        index: &str,
        hash: (&str, String),
        below: Option<(&str, String)>,
        limit: usize,
    ) -> StoreResult<Vec<Item>> {
        let mut keys = Vec::new();
        let mut start = None;
        while keys.len() < limit {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#h = :h")
                .expression_attribute_names("#h", hash.0)
                .expression_attribute_values(":h", s(hash.1.clone()));
            if let Some((range, bound)) = &below {
                query = query
                    .key_condition_expression("#h = :h AND #r < :r")
                    .expression_attribute_names("#r", *range)
                    .expression_attribute_values(":r", s(bound.clone()));
            }
            let out = query
                .scan_index_forward(false)
                .limit((limit - keys.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            keys.extend(out.items.unwrap_or_default().into_iter().map(|i| key(attr_s(&i, "pk"), attr_s(&i, "sk"))));
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    /// The items for `keys`, in the order of `keys` (missing ones left out).
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
        let mut found: HashMap<(String, String), Item> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut request =
                KeysAndAttributes::builder().set_keys(Some(chunk.to_vec())).consistent_read(true).build().map_err(unavailable)?;
            loop {
                let out = self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(sdk_error)?;
                for item in out.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                    found.insert((attr_s(&item, "pk"), attr_s(&item, "sk")), item);
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.keys.is_empty() => request = rest,
                    _ => break,
                }
            }
        }
        Ok(keys.iter().filter_map(|k| found.remove(&(attr_s(k, "pk"), attr_s(k, "sk")))).collect())
    }

    pub(super) async fn touch_contact(&self, phone: &E164, at: Millis, profile_name: Option<&str>) -> StoreResult<()> {
        let mut update = Update::default();
        update.set("phone", s(phone.as_str())).set_once("first_seen", n(at)).set("last_seen", n(at));
        if let Some(name) = profile_name {
            update.set("profile_name", s(name));
        }
        let at_value = update.value(n(at));
        let condition = format!("attribute_not_exists(last_seen) OR last_seen <= {at_value}");
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(contact_pk(phone), "PROFILE")));
        match update.apply(builder, Some(condition)).send().await {
            Ok(_) => Ok(()),
            // A touch older than the last one: the contact already knows better.
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub(super) async fn load_call(&self, sid: &CallSid) -> StoreResult<Option<Call>> {
        self.get(call_pk(sid), "CALL").await?.map(|item| from_item(item, "call")).transpose()
    }
}

pub(super) fn attr_s(item: &Item, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

#[derive(serde::Deserialize)]
pub(super) struct ActiveRow {
    pub(super) call_sid: CallSid,
    pub(super) status: CallStatus,
    pub(super) status_at: Millis,
    pub(super) heartbeat_at: Option<Millis>,
    #[serde(default)]
    pub(super) redirect_pending: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredEvent {
    pub(super) at: Millis,
    pub(super) kind: String,
    pub(super) key: String,
    /// JSON text: details are free-form.
    pub(super) detail: String,
}

#[derive(serde::Deserialize)]
pub(super) struct StoredContact {
    pub(super) phone: E164,
    pub(super) first_seen: Millis,
    pub(super) last_seen: Millis,
    pub(super) profile_name: Option<String>,
    /// The contact's lead, JSON (see `save_lead`).
    pub(super) lead_doc: Option<String>,
}

/// Tries of a lead merge that lost a race to another writer.
pub(super) const LEAD_MERGE_ATTEMPTS: u32 = 5;

impl DynamoStore {
    /// Merges `fields` into the JSON document in attribute `attr` of one item: read, merge,
    /// then write only if nobody changed it meanwhile (else read again). `init` are attributes
    /// the item gets if it is new.
    pub(super) async fn merge_doc(
        &self,
        pk: String,
        sk: &str,
        attr: &str,
        fields: &serde_json::Value,
        init: &[(&str, AttributeValue)],
    ) -> StoreResult<serde_json::Value> {
        for _ in 0..LEAD_MERGE_ATTEMPTS {
            let old = self.get(pk.clone(), sk).await?.and_then(|item| item.get(attr).and_then(|v| v.as_s().ok()).cloned());
            let known = match &old {
                Some(doc) => serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{attr} of {pk}: {e}")))?,
                None => serde_json::Value::Null,
            };
            let merged = merge_lead(&known, fields);
            let mut sets = vec!["#doc = :new".to_string()];
            let mut builder = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pk.clone(), sk)))
                .expression_attribute_names("#doc", attr)
                .expression_attribute_values(":new", s(merged.to_string()));
            for (i, (name, value)) in init.iter().enumerate() {
                sets.push(format!("#i{i} = if_not_exists(#i{i}, :i{i})"));
                builder = builder
                    .expression_attribute_names(format!("#i{i}"), *name)
                    .expression_attribute_values(format!(":i{i}"), value.clone());
            }
            builder = match &old {
                Some(doc) => builder.condition_expression("#doc = :old").expression_attribute_values(":old", s(doc.clone())),
                None => builder.condition_expression("attribute_not_exists(#doc)"),
            };
            match builder.update_expression(format!("SET {}", sets.join(", "))).send().await {
                Ok(_) => return Ok(merged),
                Err(e) if condition_failed(&e) => continue,
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Err(StoreError::Unavailable(format!("the lead of {pk} kept changing under {LEAD_MERGE_ATTEMPTS} merges")))
    }
}

#[async_trait]
impl CallsPort for DynamoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.get("PING".into(), "PING").await.map(|_| ())
    }

    async fn create_call(&self, new: &NewCall) -> StoreResult<Created> {
        let call = Call {
            call_sid: new.call_sid.clone(),
            account_sid: new.account_sid.clone(),
            from: new.from.clone(),
            to: new.to.clone(),
            contact: new.contact.clone(),
            direction: new.direction,
            status: new.status,
            created_at: new.at,
            updated_at: new.at,
            status_at: new.at,
            stream_sid: None,
            fallback_reason: None,
            fallback_action: None,
            end_reason: None,
            twilio_status: new.twilio_status.clone(),
            heartbeat_at: None,
            relay_instance: None,
            transfer_to: None,
            stream: None,
            redirect_pending: false,
            generation: 0,
            recoveries: 0,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(call_item(&call)))
            .condition_expression("attribute_not_exists(pk)");
        match put.send().await {
            Ok(_) => {
                if let Some(contact) = &call.contact {
                    self.touch_contact(contact, call.created_at, None).await?;
                }
                Ok(Created::New(call))
            }
            Err(e) if condition_failed(&e) => {
                let existing = self
                    .load_call(&new.call_sid)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("call vanished after its create lost".into()))?;
                Ok(Created::Existing(existing))
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn get_call(&self, call_sid: &CallSid) -> StoreResult<Option<Call>> {
        self.load_call(call_sid).await
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
        let allowed: Vec<CallStatus> = from.iter().copied().filter(|s| s.can_become(to)).collect();
        if allowed.is_empty() {
            return Ok(match self.load_call(call_sid).await? {
                Some(call) => Transition::Refused(call),
                None => Transition::NotFound,
            });
        }
        let mut update = Update::default();
        update.set("status", s(to.as_str())).set("status_at", n(at)).set("updated_at", n(at)).patch(patch);
        // The sparse index holds the calls the watchdog watches.
        if to.is_active() || (to == CallStatus::Fallback && patch.redirect_pending == Some(true)) {
            update.set("active_pk", s(active_shard(call_sid))).set("active_sk", n(at));
        } else {
            update.remove("active_pk").remove("active_sk");
        }
        let from_values: Vec<String> = allowed.iter().map(|s| update.value(super::items::s(s.as_str()))).collect();
        let mut condition = format!("attribute_exists(#pk) AND #status IN ({})", from_values.join(", "));
        match generation {
            // A call written before generations were kept has none: its first.
            Some(0) => condition.push_str(" AND (attribute_not_exists(#generation) OR #generation = :c_gen)"),
            Some(_) => condition.push_str(" AND #generation = :c_gen"),
            None => {}
        }
        if let Some(generation) = generation {
            update.names.insert("#generation".into(), "generation".into());
            update.values.insert(":c_gen".into(), n(generation));
        }
        let builder = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(call_pk(call_sid), "CALL")))
            .return_values(ReturnValue::AllNew);
        match update.apply(builder, Some(condition)).send().await {
            Ok(out) => Ok(Transition::Applied(from_item(out.attributes.unwrap_or_default(), "call")?)),
            Err(e) if condition_failed(&e) => Ok(match self.load_call(call_sid).await? {
                Some(call) => Transition::Refused(call),
                None => Transition::NotFound,
            }),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn patch_call(&self, call_sid: &CallSid, patch: &CallPatch, at: Millis) -> StoreResult<bool> {
        let mut update = Update::default();
        update.set("updated_at", n(at)).patch(patch);
        if patch.redirect_pending == Some(true) {
            update.set("active_pk", s(active_shard(call_sid))).set("active_sk", n(at));
        }
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(call_pk(call_sid), "CALL")));
        match update.apply(builder, Some("attribute_exists(#pk)".into())).send().await {
            Ok(_) => {}
            Err(e) if condition_failed(&e) => return Ok(false),
            Err(e) => return Err(sdk_error(e)),
        }
        if patch.redirect_pending == Some(false) {
            // Redirected: off the watchdog's list, unless the call is still on the line.
            let mut off = Update::default();
            off.remove("active_pk").remove("active_sk");
            let fallback = off.value(s(CallStatus::Fallback.as_str()));
            let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(call_pk(call_sid), "CALL")));
            match off.apply(builder, Some(format!("#status = {fallback}"))).send().await {
                Ok(_) => {}
                Err(e) if condition_failed(&e) => {}
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Ok(true)
    }

    async fn recent_calls(&self, before: Option<&Before>, limit: usize) -> StoreResult<Vec<Call>> {
        let below = before.map(|b| ("recent_sk", time_key(b.at, &b.id)));
        let keys = self.index_keys(RECENT_INDEX, ("recent_pk", RECENT_PK.to_string()), below, limit).await?;
        self.batch_get(keys).await?.into_iter().map(|item| from_item(item, "call")).collect()
    }

    async fn active_calls(&self) -> StoreResult<Vec<ActiveCall>> {
        let mut rows = Vec::new();
        for shard in 0..ACTIVE_SHARDS {
            let mut start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(ACTIVE_INDEX)
                    .key_condition_expression("active_pk = :shard")
                    .expression_attribute_values(":shard", s(format!("ACTIVE#{shard}")))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                for item in out.items.unwrap_or_default() {
                    let row: ActiveRow = from_item(item, "active call")?;
                    rows.push(ActiveCall {
                        call_sid: row.call_sid,
                        status: row.status,
                        status_at: row.status_at,
                        heartbeat_at: row.heartbeat_at,
                        redirect_pending: row.redirect_pending,
                    });
                }
                start = out.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        rows.sort_by_key(|c| c.status_at);
        Ok(rows)
    }

    async fn heartbeat(&self, call_sid: &CallSid, last_media_at: Millis) -> StoreResult<bool> {
        let mut update = Update::default();
        update.set("heartbeat_at", n(last_media_at));
        let streaming = update.value(s(CallStatus::Streaming.as_str()));
        let at = update.value(n(last_media_at));
        let condition = format!("#status = {streaming} AND (attribute_not_exists(heartbeat_at) OR heartbeat_at < {at})");
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(call_pk(call_sid), "CALL")));
        match update.apply(builder, Some(condition)).send().await {
            Ok(_) => Ok(true),
            // Either the call moved on (refused), or this beat is older than the stored one
            // (accepted, nothing to change).
            Err(e) if condition_failed(&e) => Ok(self.load_call(call_sid).await?.is_some_and(|c| c.status == CallStatus::Streaming)),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn finish_stream(&self, call_sid: &CallSid, figures: &StreamFigures) -> StoreResult<bool> {
        let mut update = Update::default();
        update.set("stream", AttributeValue::M(to_attrs(figures)));
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(call_pk(call_sid), "CALL")));
        match update.apply(builder, Some("attribute_exists(#pk)".into())).send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn put_turn(&self, call_sid: &CallSid, turn: &Turn) -> StoreResult<()> {
        let mut item = to_attrs(turn);
        item.extend(key(call_pk(call_sid), format!("TURN#{:05}", turn.seq)));
        self.put(item).await?;
        Ok(())
    }

    async fn turns(&self, call_sid: &CallSid) -> StoreResult<Vec<Turn>> {
        self.query_prefix(call_pk(call_sid), "TURN#").await?.into_iter().map(|item| from_item(item, "turn")).collect()
    }

    async fn add_event(&self, call_sid: &CallSid, event: &CallEvent) -> StoreResult<bool> {
        let stored = StoredEvent { at: event.at, kind: event.kind.clone(), key: event.key.clone(), detail: event.detail.to_string() };
        let mut item = to_attrs(&stored);
        item.extend(key(call_pk(call_sid), format!("EVENT#{}", event.key)));
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression("attribute_not_exists(pk)");
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn events(&self, call_sid: &CallSid) -> StoreResult<Vec<CallEvent>> {
        let mut events = self
            .query_prefix(call_pk(call_sid), "EVENT#")
            .await?
            .into_iter()
            .map(|item| {
                let e: StoredEvent = from_item(item, "event")?;
                let detail = serde_json::from_str(&e.detail).map_err(|err| StoreError::Corrupt(format!("event detail: {err}")))?;
                Ok(CallEvent { at: e.at, kind: e.kind, key: e.key, detail })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        events.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
        Ok(events)
    }
    async fn append_trace(&self, call_sid: &CallSid, chunk: &str, lines: &[String]) -> StoreResult<()> {
        let mut item = HashMap::from([("body".to_string(), AttributeValue::S(lines.join("\n")))]);
        item.extend(key(call_pk(call_sid), format!("TRACE#{chunk}")));
        // Written again by a retry: the same chunk.
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_error)?;
        Ok(())
    }

    async fn trace(&self, call_sid: &CallSid) -> StoreResult<Vec<String>> {
        // The query answers in the order of the sort key: the chunks' keys.
        let chunks = self.query_prefix(call_pk(call_sid), "TRACE#").await?;
        Ok(chunks
            .iter()
            .filter_map(|item| item.get("body").and_then(|b| b.as_s().ok()))
            .flat_map(|body| body.lines().map(str::to_string))
            .collect())
    }
}
