//! What the Lambda binary runs: one binary for every function (it links the whole tree once, not
//! once per function), which serves the function it is deployed as — the template's `Handler`,
//! which Lambda gives the process as `_HANDLER`. Each is started once (secrets, configuration,
//! stores: see [`callkeeper_core::startup`]), then served through the Lambda runtime API.

use crate::app::{router, Route};
use crate::webhook::AppState;
use callkeeper_core::startup;
use std::sync::Arc;
use std::time::Duration;

/// The functions the binary serves, by the names the template gives as their `Handler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    IncomingCall,
    StreamStatus,
    StreamEnded,
    RecordingDone,
    WhatsappInbound,
    WhatsappStatus,
    Crm,
    Watchdog,
    Transcribe,
    Reply,
    DeliverEvents,
}

impl Function {
    pub const ALL: [Function; 11] = [
        Function::IncomingCall,
        Function::StreamStatus,
        Function::StreamEnded,
        Function::RecordingDone,
        Function::WhatsappInbound,
        Function::WhatsappStatus,
        Function::Crm,
        Function::Watchdog,
        Function::Transcribe,
        Function::Reply,
        Function::DeliverEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::IncomingCall => "incoming_call",
            Function::StreamStatus => "stream_status",
            Function::StreamEnded => "stream_ended",
            Function::RecordingDone => "recording_done",
            Function::WhatsappInbound => "whatsapp_inbound",
            Function::WhatsappStatus => "whatsapp_status",
            Function::Crm => "crm",
            Function::Watchdog => "watchdog",
            Function::Transcribe => "transcribe",
            Function::Reply => "reply",
            Function::DeliverEvents => "deliver_events",
        }
    }

    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The function this process is: `_HANDLER`, which Lambda sets to the function's `Handler`.
    pub fn from_env() -> Result<Function, lambda_runtime::Error> {
        let name = std::env::var("_HANDLER").unwrap_or_default();
        Function::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            format!("_HANDLER is {name:?}, not one of the functions: {}", known.join(", ")).into()
        })
    }

    pub async fn run(self) -> Result<(), lambda_runtime::Error> {
        match self {
            Function::IncomingCall => run(&[Route::IncomingCall, Route::OutboundCall]).await,
            Function::StreamStatus => run(&[Route::StreamStatus]).await,
            Function::StreamEnded => run(&[Route::StreamEnded]).await,
            Function::RecordingDone => run(&[Route::RecordingDone]).await,
            Function::WhatsappInbound => run(&[Route::WhatsappInbound]).await,
            Function::WhatsappStatus => run(&[Route::WhatsappStatus]).await,
            Function::Crm => run_crm().await,
            Function::Watchdog => run_watchdog().await,
            Function::Transcribe => run_worker(Worker::Transcribe).await,
            Function::Reply => run_worker(Worker::Reply).await,
            Function::DeliverEvents => run_worker(Worker::DeliverEvents).await,
        }
    }
}

/// A webhook function: the router for its routes, behind API Gateway's HTTP API.
async fn run(routes: &[Route]) -> Result<(), lambda_http::Error> {
    let (config, stores) = startup::from_env().await?;
    lambda_http::run(router(AppState { config, stores }, routes)).await
}

/// The CRM's pages (`/crm/...`), with `/healthz`, `/readyz` and `/version`.
async fn run_crm() -> Result<(), lambda_http::Error> {
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
async fn run_watchdog() -> Result<(), lambda_runtime::Error> {
    use callkeeper_core::reconciler::{self, Reconciler};

    use callkeeper_core::watchdog::Watchdog;
    let (config, stores) = startup::from_env().await?;
    let twilio = config.twilio_rest();
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
enum Worker {
    Transcribe,
    Reply,
    /// Business events to `EVENTS_WEBHOOK_URL`.
    DeliverEvents,
}

/// A queue worker: SQS invokes it with a batch; it answers which messages failed, so only those
/// come back (`ReportBatchItemFailures`).
async fn run_worker(worker: Worker) -> Result<(), lambda_runtime::Error> {
    use callkeeper_core::replies::Replier;
    use callkeeper_core::transcription::Transcriber;

    use callkeeper_core::worker::JobHandler;
    let (config, stores) = startup::from_env().await?;
    let twilio = config.twilio_rest();
    let handler: Arc<dyn JobHandler> = match worker {
        Worker::Transcribe => Arc::new(Transcriber::new(&stores, twilio, config.clone())),
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
            Ok::<_, lambda_runtime::Error>(crate::sqs_batch::handle_batch(queue.as_ref(), handler.as_ref(), event.payload, time_left).await)
        }
    });
    lambda_runtime::run(handler_fn).await
}

#[cfg(test)]
mod tests {
    use super::Function;

    #[test]
    fn every_function_is_found_by_its_name() {
        for function in Function::ALL {
            assert_eq!(Function::from_name(function.name()), Some(function));
        }
        assert_eq!(Function::from_name("bootstrap"), None);
    }
}
