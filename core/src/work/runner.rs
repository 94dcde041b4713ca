//! Running a queue's jobs (transcriptions, WhatsApp replies): receive, do, acknowledge; or keep the failure and let the message come
//! back later (backing off with each receive), until the queue dead-letters it. The same code
//! runs inside `callkeeper serve` (polling the queue) and in the SQS-triggered Lambda (which gets
//! the messages in its event).

use crate::domain::job::{Delivery, QueueName};
use crate::store::{JobQueue, StoreResult};
use crate::work::replies::Replier;
use crate::work::transcription::Transcriber;
use std::time::Duration;

/// What does a queue's jobs.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync {
    fn queue(&self) -> QueueName;
    /// A failed job's first backoff.
    fn retry_base(&self) -> Duration;
    /// How long its claim on a job holds unrenewed (`JOB_LEASE_SECS`).
    fn lease(&self) -> Duration;
    /// Does one job; the outcome, or the failure as a line for logs and `dlq show`.
    async fn handle(&self, body: &str) -> Result<Done, String>;
}

/// A job done: what kind of outcome (a metric's dimension: `transcribed`, `kept`, `sent`…)
/// and the whole of it, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub kind: &'static str,
    pub detail: String,
}

impl Done {
    fn of<T: std::fmt::Debug>(kind: &'static str, outcome: T) -> Done {
        Done { kind, detail: format!("{outcome:?}") }
    }
}

/// Does one job and counts its outcome (`failed` for a failure) for the dashboard: how both the
/// polling loop and the SQS-triggered Lambda run a job.
pub async fn attempt(handler: &dyn JobHandler, body: &str) -> Result<Done, String> {
    let outcome = handler.handle(body).await;
    let kind = outcome.as_ref().map_or("failed", |done| done.kind);
    crate::process::metrics::record(crate::process::metrics::JOB_OUTCOMES, 1.0, &[handler.queue().as_str(), kind]);
    outcome
}

#[async_trait::async_trait]
impl JobHandler for Transcriber {
    fn queue(&self) -> QueueName {
        QueueName::Transcription
    }
    fn retry_base(&self) -> Duration {
        Transcriber::retry_base(self)
    }
    fn lease(&self) -> Duration {
        Transcriber::lease(self)
    }
    async fn handle(&self, body: &str) -> Result<Done, String> {
        Transcriber::handle(self, body).await.map(|o| Done::of(o.kind(), o)).map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl JobHandler for Replier {
    fn queue(&self) -> QueueName {
        QueueName::Replies
    }
    fn retry_base(&self) -> Duration {
        Replier::retry_base(self)
    }
    fn lease(&self) -> Duration {
        Replier::lease(self)
    }
    async fn handle(&self, body: &str) -> Result<Done, String> {
        Replier::handle(self, body).await.map(|o| Done::of(o.kind(), o)).map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl JobHandler for crate::work::event_delivery::Deliverer {
    fn queue(&self) -> QueueName {
        QueueName::Events
    }
    fn retry_base(&self) -> Duration {
        crate::work::event_delivery::Deliverer::retry_base(self)
    }
    fn lease(&self) -> Duration {
        crate::work::event_delivery::Deliverer::lease(self)
    }
    async fn handle(&self, body: &str) -> Result<Done, String> {
        crate::work::event_delivery::Deliverer::handle(self, body).await.map(|o| Done::of(o.kind(), o)).map_err(|e| e.to_string())
    }
}

/// How long a received job stays hidden from other workers: twice its claim's lease, so a
/// worker that dies leaves a job whose claim has run out by the time it is seen again. A worker
/// still on it extends this every third of it.
pub fn visibility(handler: &dyn JobHandler) -> Duration {
    handler.lease() * 2
}

/// Runs `work` while keeping the message behind it hidden for `visibility`.
async fn keeping_hidden<T>(
    queue: &dyn JobQueue,
    name: QueueName,
    receipt: &str,
    visibility: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    crate::work::claims::renewing(visibility, work, || async {
        if let Err(e) = queue.extend(name, receipt, visibility).await {
            tracing::warn!(queue = name.as_str(), error = %e, "could not keep a running job hidden");
        }
    })
    .await
}

/// Backoff before a failed job comes back: `base`, then doubling with each receive, at most
/// 5 minutes (`JOB_RETRY_BASE_SECS`, 2 s by default: 2, 4, 8, …).
pub fn retry_after(base: Duration, receive_count: u32) -> Duration {
    (base * 2u32.saturating_pow(receive_count.saturating_sub(1).min(16))).min(Duration::from_secs(300))
}

/// Does one delivered job. `Err` is the failure, already kept on the message for `dlq show`.
pub async fn process(queue: &dyn JobQueue, delivery: &Delivery, handler: &dyn JobHandler) -> StoreResult<Result<String, String>> {
    let name = handler.queue();
    match keeping_hidden(queue, name, &delivery.receipt, visibility(handler), attempt(handler, &delivery.body)).await {
        Ok(done) => {
            tracing::info!(queue = name.as_str(), job = %delivery.id, outcome = done.detail, "job done");
            queue.ack(name, &delivery.receipt).await?;
            Ok(Ok(done.detail))
        }
        Err(error) => {
            tracing::warn!(queue = name.as_str(), job = %delivery.id, receive_count = delivery.receive_count, error, "job failed; it comes back later");
            queue.release(name, delivery, &error, retry_after(handler.retry_base(), delivery.receive_count)).await?;
            Ok(Err(error))
        }
    }
}

/// Counts of one look at the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    pub done: usize,
    pub failed: usize,
}

/// Receives one visible job from the handler's queue and does it. One at a time: only the job
/// being done has its visibility extended, so a batch's later jobs could show again (and be
/// taken by another worker) while an earlier long one runs.
pub async fn poll_once(queue: &dyn JobQueue, handler: &dyn JobHandler) -> StoreResult<Polled> {
    let deliveries = queue.receive(handler.queue(), 1, visibility(handler)).await?;
    let mut polled = Polled { received: deliveries.len(), ..Default::default() };
    for delivery in &deliveries {
        match process(queue, delivery, handler).await? {
            Ok(_) => polled.done += 1,
            Err(_) => polled.failed += 1,
        }
    }
    Ok(polled)
}

/// Polls the handler's queue every `idle` while it is empty, until `until` resolves.
pub async fn run_until(queue: &dyn JobQueue, handler: &dyn JobHandler, idle: Duration, until: impl std::future::Future<Output = ()>) {
    tokio::pin!(until);
    loop {
        let polled = tokio::select! {
            _ = &mut until => return,
            polled = poll_once(queue, handler) => polled,
        };
        let wait = match polled {
            Ok(p) if p.received > 0 => Duration::ZERO,
            Ok(_) => idle,
            Err(e) => {
                tracing::error!(queue = handler.queue().as_str(), error = %e, "queue unavailable; trying again");
                idle
            }
        };
        tokio::select! {
            _ = &mut until => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
