//! Lambda function `deliver_events`, triggered by the events queue: POSTs each business event,
//! signed, to `EVENTS_WEBHOOK_URL`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    callkeeper_functions::lambda::run_worker(callkeeper_functions::lambda::Worker::DeliverEvents).await
}
