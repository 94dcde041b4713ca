//! What every Lambda binary runs: started once (secrets, configuration, stores: see
//! [`callkeeper_core::startup`]), then its handler served through the Lambda runtime API.

use crate::app::{router, AppState, Route};
use callkeeper_core::startup;
use std::sync::Arc;
use std::time::Duration;

/// A webhook function: the router for its routes, behind API Gateway's HTTP API.
pub async fn run(routes: &[Route]) -> Result<(), lambda_http::Error> {
    let (config, stores) = startup::from_env().await?;
    lambda_http::run(router(AppState { config, stores }, routes)).await
}

/// The CRM's pages (`/crm/...`), with `/healthz`, `/readyz` and `/version`.
pub async fn run_crm() -> Result<(), lambda_http::Error> {
    let (config, stores) = startup::from_env().await?;
    let state = AppState { config, stores };
    lambda_http::run(crate::app::stamped(crate::app::health(state.clone()).merge(crate::crm::routes(state)))).await
}

/// The watchdog function: EventBridge invokes it every minute, and each invocation keeps passing
/// over the active calls every `WATCHDOG_POLL_SECS` for `WATCHDOG_RUN_SECS` (keep it under the
/// function's timeout), so a stale call is found in seconds, not a minute. Answers what it did.
///
/// Every fifth minute the same invocation also runs the reconciler once, beside the passes (one
/// function less to deploy and build; both are the account's housekeeping on a schedule).
pub async fn run_watchdog() -> Result<(), lambda_runtime::Error> {
    use callkeeper_core::reconciler::{self, Reconciler};
    use callkeeper_core::twilio_rest::TwilioRest;
    use callkeeper_core::watchdog::Watchdog;
    let (config, stores) = startup::from_env().await?;
    let twilio = TwilioRest::from_config(&config);
    let watchdog = Watchdog::new(stores.calls.clone(), twilio.clone(), config.clone());
    let reconciler = Reconciler::new(stores.calls.clone(), stores.queue.clone(), twilio, config.clone());
    let handler = lambda_runtime::service_fn(|_event: lambda_runtime::LambdaEvent<serde_json::Value>| {
        let (watchdog, reconciler, run_for) = (watchdog.clone(), reconciler.clone(), config.watchdog.run_for);
        async move {
            let minute = callkeeper_core::time::now_ms() / 60_000;
            let reconciling = minute % (reconciler::EVERY.as_secs() as i64 / 60) == 0;
            let reconciled = async {
                if !reconciling {
                    return None;
                }
                match tokio::time::timeout(run_for, reconciler.pass()).await {
                    Ok(Ok(report)) => Some(serde_json::to_value(report).unwrap_or_default()),
                    Ok(Err(e)) => Some(serde_json::json!({ "error": e.to_string() })),
                    Err(_) => Some(serde_json::json!({ "error": "the reconciler did not finish within the invocation" })),
                }
            };
            let (run, reconciled) = tokio::join!(watchdog.run_for(run_for), reconciled);
            tracing::info!(
                passes = run.passes,
                redirected = run.totals.redirected,
                failed = run.totals.failed,
                ?reconciled,
                "watchdog invocation done"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "watchdog": run, "reconciled": reconciled }))
        }
    });
    lambda_runtime::run(handler).await
}

/// The time an invocation has left, from its context's deadline: milliseconds since the epoch
/// in Lambda. cargo-lambda's emulator sends the timeout itself there (600000), so a deadline
/// before 2001 is read as the time left.
fn time_left(deadline_ms: u64) -> Duration {
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    if deadline_ms < EPOCH_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    Duration::from_millis(deadline_ms.saturating_sub(callkeeper_core::time::now_ms().max(0) as u64))
}

/// Which queue worker a Lambda runs.
#[derive(Debug, Clone, Copy)]
pub enum Worker {
    Transcribe,
    Reply,
    /// Business events to `EVENTS_WEBHOOK_URL`.
    DeliverEvents,
}

/// A queue worker: SQS invokes it with a batch; it answers which messages failed, so only those
/// come back (`ReportBatchItemFailures`).
pub async fn run_worker(worker: Worker) -> Result<(), lambda_runtime::Error> {
    use callkeeper_core::replies::Replier;
    use callkeeper_core::transcription::Transcriber;
    use callkeeper_core::twilio_rest::TwilioRest;
    use callkeeper_core::worker::JobHandler;
    let (config, stores) = startup::from_env().await?;
    let twilio = TwilioRest::from_config(&config);
    let handler: Arc<dyn JobHandler> = match worker {
        Worker::Transcribe => Arc::new(Transcriber::new(stores.calls.clone(), stores.blobs.clone(), twilio, config.clone())),
        Worker::Reply => Arc::new(Replier::new(stores.calls.clone(), stores.blobs.clone(), twilio, config.clone())),
        Worker::DeliverEvents => match callkeeper_core::event_delivery::Deliverer::new(stores.calls.clone(), config.clone()) {
            Some(deliverer) => Arc::new(deliverer),
            None => return Err("the deliver_events function needs EVENTS_WEBHOOK_URL".into()),
        },
    };
    let handler_fn = lambda_runtime::service_fn(|event: lambda_runtime::LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
        let (queue, handler) = (stores.queue.clone(), handler.clone());
        let time_left = time_left(event.context.deadline);
        async move {
            Ok::<_, lambda_runtime::Error>(
                crate::queue_worker::handle_batch(queue.as_ref(), handler.as_ref(), event.payload, time_left).await,
            )
        }
    });
    lambda_runtime::run(handler_fn).await
}
