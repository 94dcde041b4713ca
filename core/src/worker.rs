//! Running a queue's jobs: receive, do, acknowledge; or keep the failure and let the message come
//! back later (backing off with each receive), until the queue dead-letters it. The same code
//! runs inside `callkeeper serve` (polling the queue) and in the SQS-triggered Lambda (which gets
//! the messages in its event).

use crate::job::{Delivery, QueueName};
use crate::store::{JobQueue, StoreResult};
use crate::transcription::{Outcome, Transcriber};
use std::time::Duration;

/// How long a received job stays hidden while a worker does it.
pub const VISIBILITY: Duration = Duration::from_secs(360);

/// Backoff before a failed job comes back: `base`, then doubling with each receive, at most
/// 5 minutes (`JOB_RETRY_BASE_SECS`, 2 s by default: 2, 4, 8, …).
pub fn retry_after(base: Duration, receive_count: u32) -> Duration {
    (base * 2u32.saturating_pow(receive_count.saturating_sub(1).min(16))).min(Duration::from_secs(300))
}

/// Does one delivered job. `Err` is the failure, already kept on the message for `dlq show`.
pub async fn process(
    queue: &dyn JobQueue,
    name: QueueName,
    delivery: &Delivery,
    transcriber: &Transcriber,
) -> StoreResult<Result<Outcome, String>> {
    match transcriber.handle(&delivery.body).await {
        Ok(outcome) => {
            tracing::info!(job = %delivery.id, ?outcome, "job done");
            queue.ack(name, &delivery.receipt).await?;
            Ok(Ok(outcome))
        }
        Err(e) => {
            let error = e.to_string();
            tracing::warn!(job = %delivery.id, receive_count = delivery.receive_count, error, "job failed; it comes back later");
            queue.release(name, delivery, &error, retry_after(transcriber.retry_base(), delivery.receive_count)).await?;
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

/// Receives what is visible (up to 10) and does it.
pub async fn poll_once(queue: &dyn JobQueue, name: QueueName, transcriber: &Transcriber) -> StoreResult<Polled> {
    let deliveries = queue.receive(name, 10, VISIBILITY).await?;
    let mut polled = Polled { received: deliveries.len(), ..Default::default() };
    for delivery in &deliveries {
        match process(queue, name, delivery, transcriber).await? {
            Ok(_) => polled.done += 1,
            Err(_) => polled.failed += 1,
        }
    }
    Ok(polled)
}

/// Polls the transcription queue every `idle` while it is empty, until `until` resolves.
pub async fn run_until(queue: &dyn JobQueue, transcriber: &Transcriber, idle: Duration, until: impl std::future::Future<Output = ()>) {
    tokio::pin!(until);
    loop {
        let polled = tokio::select! {
            _ = &mut until => return,
            polled = poll_once(queue, QueueName::Transcription, transcriber) => polled,
        };
        let wait = match polled {
            Ok(p) if p.received > 0 => Duration::ZERO,
            Ok(_) => idle,
            Err(e) => {
                tracing::error!(error = %e, "transcription queue unavailable; trying again");
                idle
            }
        };
        tokio::select! {
            _ = &mut until => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
