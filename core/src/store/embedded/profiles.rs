//! Agent profiles, on this store ([`crate::store::ProfilesPort`]).

use super::calls::*;
use super::EmbeddedStore;
use crate::domain::profile::{AgentProfile, ProfileKey};
use crate::domain::time::Millis;
use crate::store::{stored_profiles, ProfilesPort, StoreError, StoreResult, StoredProfile};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

#[async_trait]
impl ProfilesPort for EmbeddedStore {
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
}
