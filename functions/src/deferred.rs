//! Writes a webhook could not make while it answered. Some answers need no store (the fallback
//! TwiML, a hang-up), and a caller must not hear Twilio's application error because the store
//! was locked or slow: the webhook answers, and what it should have written is retried here in
//! the background with backoff, each failure logged, and an error logged (naming the call) if it
//! is still not written after about two minutes.
//!
//! In `serve` and on Fargate the retries run as scheduled. In Lambda a function instance is
//! frozen between invocations, so they run while the instance is thawed; the reconciler is the
//! backstop for what is never written.

use crate::webhook::WebhookError;
use callkeeper_core::ids::CallSid;
use std::future::Future;
use std::time::Duration;

/// Waits before each try: about two minutes in all.
const DELAYS_SECS: [u64; 7] = [1, 2, 4, 8, 16, 32, 60];

/// Retries `write` (`what` names it in the logs) until it succeeds, fails for good (an error
/// other than the store's), or the delays are spent.
pub fn retry<F, Fut>(what: &'static str, call_sid: CallSid, write: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), WebhookError>> + Send,
{
    tokio::spawn(async move {
        for (attempt, delay) in DELAYS_SECS.iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(*delay)).await;
            match write().await {
                Ok(()) => {
                    tracing::info!(call_sid = %call_sid, what, attempt = attempt + 1, "written late");
                    return;
                }
                Err(WebhookError::Unavailable(e)) => {
                    tracing::warn!(call_sid = %call_sid, what, attempt = attempt + 1, error = %e, "still not written; trying again")
                }
                Err(e) => {
                    tracing::error!(call_sid = %call_sid, what, error = %e, "cannot be written");
                    return;
                }
            }
        }
        tracing::error!(call_sid = %call_sid, what, "not written after two minutes of retries: the reconciler must close this call");
    });
}
