//! Workers' claims on jobs, on this store ([`crate::store::ClaimsPort`]).

use super::EmbeddedStore;
use crate::domain::time::Millis;
use crate::domain::transcript::JobClaim;
use crate::store::{ClaimsPort, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use std::time::Duration;

#[async_trait]
impl ClaimsPort for EmbeddedStore {
    async fn claim_job(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<JobClaim> {
        let (key, until) = (key.to_string(), at + lease.as_millis() as Millis);
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let current: Option<(Millis, Option<Millis>)> = tx
                .query_row("SELECT lease_until, done_at FROM job_claims WHERE key = ?1", [&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let claim = match current {
                Some((_, Some(_))) => JobClaim::Done,
                Some((lease_until, None)) if lease_until > at => JobClaim::Busy,
                _ => {
                    tx.execute(
                        "INSERT INTO job_claims (key, claimed_at, lease_until) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, lease_until = excluded.lease_until",
                        params![key, at, until],
                    )?;
                    JobClaim::Claimed
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn finish_job(&self, key: &str, at: Millis) -> StoreResult<()> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO job_claims (key, claimed_at, lease_until, done_at) VALUES (?1, ?2, ?2, ?2)
                 ON CONFLICT (key) DO UPDATE SET done_at = coalesce(done_at, excluded.done_at)",
                params![key, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn drop_job_claim(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.with_conn(move |conn| Ok(conn.execute("DELETE FROM job_claims WHERE key = ?1 AND done_at IS NULL", [key]).map(|_| ())?)).await
    }

    async fn renew_job_claim(&self, key: &str, at: Millis, lease: Duration) -> StoreResult<bool> {
        let (key, until) = (key.to_string(), at + lease.as_millis() as Millis);
        self.with_conn(move |conn| {
            Ok(conn.execute("UPDATE job_claims SET lease_until = ?1 WHERE key = ?2 AND done_at IS NULL", params![until, key])? == 1)
        })
        .await
    }
}
