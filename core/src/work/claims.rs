//! A worker's hold on one job. The claim (a conditional write) makes a job run once however often
//! its message is delivered. Its lease is short and renewed while the job runs, so a worker that
//! dies mid-job (SIGKILL, a Lambda timeout, out of memory) frees the job within its lease
//! (`JOB_LEASE_SECS`, 60 s), before the queue shows the message again (twice the lease in
//! `serve`, the queue's own visibility timeout in AWS): the next delivery takes it over instead
//! of failing "busy" until the message is dead-lettered.

use crate::domain::time::now_ms;
use crate::store::ClaimsPort;
use std::future::Future;
use std::time::Duration;

/// Runs `work` while renewing the claim on `key` for another `lease` every third of it (three
/// chances before it runs out). A renewal that fails is logged and tried again at the next tick;
/// the work goes on either way (finishing a job twice is harmless, since every write of a job is
/// idempotent; dropping it halfway is what would hurt).
pub async fn holding<T>(calls: &dyn ClaimsPort, key: &str, lease: Duration, work: impl Future<Output = T>) -> T {
    renewing(lease, work, || async {
        match calls.renew_job_claim(key, now_ms(), lease).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(job = key, "the job's claim is no longer held; finishing the job anyway"),
            Err(e) => tracing::warn!(job = key, error = %e, "could not renew the job's claim"),
        }
    })
    .await
}

/// Runs `work`, calling `renew` every third of `term` until it is done: how a job keeps what
/// runs out while it works (its claim here, its message's visibility in `worker`).
pub async fn renewing<T, R: Future<Output = ()>>(term: Duration, work: impl Future<Output = T>, mut renew: impl FnMut() -> R) -> T {
    tokio::pin!(work);
    let every = term / 3;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => renew().await,
        }
    }
}
