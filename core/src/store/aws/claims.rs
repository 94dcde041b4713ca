//! Workers' claims on jobs, on this store ([`crate::store::ClaimsPort`]).

use super::calls::*;
use super::items::*;
use super::sdk_error;
use crate::domain::time::Millis;
use crate::domain::transcript::JobClaim;
use crate::store::{ClaimsPort, StoreResult};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

#[async_trait]
impl ClaimsPort for DynamoStore {
    async fn claim_job(&self, job: &str, at: Millis, lease: Duration) -> StoreResult<JobClaim> {
        let item = HashMap::from([
            ("claimed_at".to_string(), n(at)),
            ("lease_until".to_string(), n(at + lease.as_millis() as Millis)),
            ("expires_at".to_string(), n(at / 1000 + JOB_CLAIM_TTL_SECS)),
        ]);
        let mut item = item;
        item.extend(key(format!("JOB#{job}"), "CLAIM"));
        // Free when: never claimed, expired (TTL deletes late), or a lease that ran out and never finished.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at < :now_secs OR (attribute_not_exists(done_at) AND lease_until <= :now)",
            )
            .expression_attribute_values(":now", n(at))
            .expression_attribute_values(":now_secs", n(at / 1000));
        match put.send().await {
            Ok(_) => Ok(JobClaim::Claimed),
            Err(e) if condition_failed(&e) => {
                let done = self.get(format!("JOB#{job}"), "CLAIM").await?.is_some_and(|item| item.contains_key("done_at"));
                Ok(if done { JobClaim::Done } else { JobClaim::Busy })
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn finish_job(&self, job: &str, at: Millis) -> StoreResult<()> {
        let mut update = Update::default();
        update
            .set_once("done_at", n(at))
            .set("expires_at", n(at / 1000 + JOB_CLAIM_TTL_SECS))
            .set_once("claimed_at", n(at))
            .set_once("lease_until", n(at));
        let builder = self.client.update_item().table_name(&self.table).set_key(Some(key(format!("JOB#{job}"), "CLAIM")));
        update.apply(builder, None).send().await.map_err(sdk_error)?;
        Ok(())
    }

    async fn drop_job_claim(&self, job: &str) -> StoreResult<()> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("JOB#{job}"), "CLAIM")))
            .condition_expression("attribute_not_exists(done_at)");
        match delete.send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn renew_job_claim(&self, job: &str, at: Millis, lease: Duration) -> StoreResult<bool> {
        let renew = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("JOB#{job}"), "CLAIM")))
            .update_expression("SET lease_until = :until")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(done_at)")
            .expression_attribute_values(":until", n(at + lease.as_millis() as Millis));
        match renew.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }
}
