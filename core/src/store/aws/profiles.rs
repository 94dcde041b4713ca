//! Agent profiles, on this store ([`crate::store::ProfilesPort`]).

use super::calls::*;
use super::items::*;
use crate::domain::profile::{AgentProfile, ProfileKey};
use crate::domain::time::Millis;
use crate::store::{stored_profiles, ProfilesPort, StoreError, StoreResult, StoredProfile};
use async_trait::async_trait;

#[async_trait]
impl ProfilesPort for DynamoStore {
    async fn put_profile(&self, key_: &ProfileKey, profile: &AgentProfile, at: Millis) -> StoreResult<()> {
        let mut item = key(PROFILES_PK, profile_sk(key_));
        item.insert("profile_key".into(), s(key_.as_str()));
        item.insert("doc".into(), s(serde_json::to_string(profile).expect("profiles serialize")));
        item.insert("updated_at".into(), n(at));
        self.put(item).await
    }

    async fn profile(&self, key_: &ProfileKey) -> StoreResult<Option<AgentProfile>> {
        let Some(item) = self.get(PROFILES_PK.to_string(), &profile_sk(key_)).await? else { return Ok(None) };
        let doc = attr_s(&item, "doc");
        Ok(Some(serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("profile {}: {e}", key_.as_str())))?))
    }

    async fn profiles(&self) -> StoreResult<Vec<StoredProfile>> {
        let items = self.query_prefix(PROFILES_PK.to_string(), "PROFILE#").await?;
        let rows = items
            .iter()
            .map(|item| {
                let at = item.get("updated_at").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                (attr_s(item, "profile_key"), attr_s(item, "doc"), at)
            })
            .collect();
        stored_profiles(rows)
    }
}

/// Where the profiles live: one partition, read whole by `agent list`.
const PROFILES_PK: &str = "PROFILES";

fn profile_sk(key: &ProfileKey) -> String {
    format!("PROFILE#{}", key.as_str())
}
