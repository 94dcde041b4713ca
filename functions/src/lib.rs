//! callkeeper's Twilio webhooks: one axum Router, served by `callkeeper serve` on a laptop and by
//! one thin Lambda binary per function (`src/bin/`) behind API Gateway.
//!
//! Webhooks only validate, record and enqueue, so they answer in milliseconds: heavy work
//! (transcription, replies) happens in the workers.

pub mod app;
pub mod crm;
pub mod deferred;
pub mod health;
pub mod lambda;
pub mod queue_worker;
pub mod recording;
pub mod signed_form;
pub mod voice;
pub mod whatsapp;

pub use app::{router, stamped, webhooks, AppState, Route};
