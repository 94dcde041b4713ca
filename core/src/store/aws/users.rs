//! The CRM's users, on this store ([`crate::store::UsersPort`]).

use super::calls::*;
use super::items::*;
use super::sdk_error;
use crate::domain::time::Millis;
use crate::domain::users::{User, UserName};
use crate::store::{StoreError, StoreResult, UsersPort};
use async_trait::async_trait;

#[async_trait]
impl UsersPort for DynamoStore {
    async fn add_user(&self, user: &User) -> StoreResult<bool> {
        let mut item = key(USERS_PK, user_sk(&user.name));
        item.insert("name".into(), s(user.name.as_str()));
        item.insert("password_hash".into(), s(&user.password_hash));
        item.insert("created_at".into(), n(user.created_at));
        item.insert("updated_at".into(), n(user.updated_at));
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression("attribute_not_exists(pk)");
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn set_password(&self, name: &UserName, password_hash: &str, at: Millis) -> StoreResult<bool> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(USERS_PK, user_sk(name))))
            .update_expression("SET password_hash = :hash, updated_at = :at")
            .expression_attribute_values(":hash", s(password_hash))
            .expression_attribute_values(":at", n(at))
            .condition_expression("attribute_exists(pk)");
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn user(&self, name: &UserName) -> StoreResult<Option<User>> {
        self.get(USERS_PK.to_string(), &user_sk(name)).await?.map(|item| user_of(&item)).transpose()
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.query_prefix(USERS_PK.to_string(), "USER#").await?.iter().map(user_of).collect()
    }

    async fn remove_user(&self, name: &UserName) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(USERS_PK, user_sk(name))))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn end_sessions(&self, name: &UserName, at: Millis) -> StoreResult<bool> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(USERS_PK, user_sk(name))))
            .update_expression("ADD session_epoch :one SET updated_at = :at")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":at", n(at))
            .condition_expression("attribute_exists(pk)");
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }
}

/// Where the CRM's users live: one partition, read whole by `crm user list`.
const USERS_PK: &str = "CRM_USERS";

fn user_sk(name: &UserName) -> String {
    format!("USER#{name}")
}

fn user_of(item: &Item) -> StoreResult<User> {
    let number = |attr: &str| item.get(attr).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(User {
        name: UserName::parse(&attr_s(item, "name")).map_err(|e| StoreError::Corrupt(format!("crm user: {e}")))?,
        password_hash: attr_s(item, "password_hash"),
        created_at: number("created_at"),
        updated_at: number("updated_at"),
        session_epoch: number("session_epoch") as u64,
    })
}
