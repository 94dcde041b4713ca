//! callkeeper's Twilio webhooks and the CRM: one axum Router, served by `callkeeper serve` on a
//! laptop and, behind API Gateway, by the one Lambda binary (`src/bin/functions.rs`) that serves
//! every function by the name its template `Handler` gives.
//!
//! Webhooks only validate, record and enqueue, so they answer in milliseconds: heavy work
//! (transcription, replies) happens in the workers.

pub mod app;
pub mod crm;
pub mod deferred;
pub mod health;
pub mod lambda;
pub mod recording_done;
pub mod signed_form;
pub mod sqs_batch;
pub mod traced;
pub mod voice;
pub mod webhook;
pub mod whatsapp;

pub use app::{router, stamped, webhooks, AppState, Route};
