//! A queue worker Lambda's batch (transcriptions or WhatsApp replies): each SQS record is one
//! job. Failed ones keep their error (for `dlq show`) and are reported back as batch item
//! failures; the rest are deleted by Lambda.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use callkeeper_core::job::Delivery;
use callkeeper_core::store::JobQueue;
use callkeeper_core::worker::{attempt, retry_after, JobHandler};

pub async fn handle_batch(queue: &dyn JobQueue, handler: &dyn JobHandler, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let delivery = Delivery {
            id: id.clone(),
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            receive_count: record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1),
            body: record.body.clone().unwrap_or_default(),
        };
        match attempt(handler, &delivery.body).await {
            Ok(done) => tracing::info!(job = %id, outcome = done.detail, "job done"),
            Err(error) => {
                tracing::warn!(job = %id, receive_count = delivery.receive_count, error, "job failed; reported back to SQS");
                if let Err(e) =
                    queue.release(handler.queue(), &delivery, &error, retry_after(handler.retry_base(), delivery.receive_count)).await
                {
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
