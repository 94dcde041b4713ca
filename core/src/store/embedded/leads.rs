//! Leads, on the call and its contact, on this store ([`crate::store::LeadsPort`]).

use super::EmbeddedStore;
use crate::domain::ids::CallSid;
use crate::domain::phone::E164;
use crate::domain::profile::merge_lead;
use crate::domain::time::Millis;
use crate::store::{LeadsPort, StoreError, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

#[async_trait]
impl LeadsPort for EmbeddedStore {
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
}
