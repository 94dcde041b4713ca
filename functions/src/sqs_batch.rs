//! A queue worker Lambda's batch (transcriptions or WhatsApp replies): each SQS record is one
//! job. Failed ones keep their error (for `dlq show`) and are reported back as batch item
//! failures; the rest are deleted by Lambda.
//!
//! A job must end before the function does: one that would outlive it is stopped [`MARGIN`]
//! before the deadline and released like a failure, to come back once its claim's lease has run
//! out, rather than being killed with the function, which leaves SQS to redeliver it only after
//! the queue's whole visibility timeout.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use callkeeper_core::job::Delivery;
use callkeeper_core::store::JobQueue;
use callkeeper_core::worker::{attempt, retry_after, JobHandler};
use std::time::Duration;

/// Kept free at the end of an invocation: to record a stopped job's failure and answer.
pub const MARGIN: Duration = Duration::from_secs(10);
pub const OUT_OF_TIME: &str = "the function's time ran out before the job was done";

/// Does `event`'s jobs within `time_left` (the invocation's, from its context).
pub async fn handle_batch(queue: &dyn JobQueue, handler: &dyn JobHandler, event: SqsEvent, time_left: Duration) -> SqsBatchResponse {
    let deadline = tokio::time::Instant::now() + time_left.saturating_sub(MARGIN);
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let delivery = Delivery {
            id: id.clone(),
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            receive_count: record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1),
            body: record.body.clone().unwrap_or_default(),
        };
        let backoff = retry_after(handler.retry_base(), delivery.receive_count);
        let (outcome, backoff) = match tokio::time::timeout_at(deadline, attempt(handler, &delivery.body)).await {
            Ok(outcome) => (outcome, backoff),
            // Its claim is still held for up to a lease: come back after it.
            Err(_) => (Err(OUT_OF_TIME.to_string()), backoff.max(handler.lease())),
        };
        match outcome {
            Ok(done) => tracing::info!(job = %id, outcome = done.detail, "job done"),
            Err(error) => {
                tracing::warn!(job = %id, receive_count = delivery.receive_count, error, "job failed; reported back to SQS");
                if let Err(e) = queue.release(handler.queue(), &delivery, &error, backoff).await {
                    tracing::error!(job = %id, error = %e, "could not keep the job's error");
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}
