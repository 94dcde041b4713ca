//! Leads, on the call and its contact, on this store ([`crate::store::LeadsPort`]).

use super::calls::*;
use super::items::*;
use crate::domain::ids::CallSid;
use crate::domain::phone::E164;
use crate::domain::time::Millis;
use crate::store::{LeadsPort, StoreError, StoreResult};
use async_trait::async_trait;

#[async_trait]
impl LeadsPort for DynamoStore {
    async fn save_lead(
        &self,
        call_sid: &CallSid,
        contact: Option<&E164>,
        fields: &serde_json::Value,
        at: Millis,
    ) -> StoreResult<serde_json::Value> {
        let merged = self.merge_doc(call_pk(call_sid), "LEAD", "doc", fields, &[("updated_at", n(at))]).await?;
        if let Some(phone) = contact {
            let init = [("phone", s(phone.as_str())), ("first_seen", n(at)), ("last_seen", n(at))];
            self.merge_doc(contact_pk(phone), "PROFILE", "lead_doc", fields, &init).await?;
        }
        Ok(merged)
    }

    async fn lead(&self, call_sid: &CallSid) -> StoreResult<Option<serde_json::Value>> {
        let Some(item) = self.get(call_pk(call_sid), "LEAD").await? else { return Ok(None) };
        let doc = attr_s(&item, "doc");
        Ok(Some(serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("lead of {call_sid}: {e}")))?))
    }
}
