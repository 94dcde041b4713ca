//! The CRM's users, on this store ([`crate::store::UsersPort`]).

use super::calls::*;
use super::EmbeddedStore;
use crate::domain::time::Millis;
use crate::domain::users::{User, UserName};
use crate::store::{StoreError, StoreResult, UsersPort};
use async_trait::async_trait;
use rusqlite::params;

#[async_trait]
impl UsersPort for EmbeddedStore {
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
