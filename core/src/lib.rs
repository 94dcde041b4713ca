//! callkeeper's domain: what a call is and how it moves, the TwiML Twilio is answered with,
//! Twilio's request signatures, the storage ports with their embedded adapter, and configuration.
//!
//! Nothing here knows about HTTP frameworks or Lambda: `functions/` and the `callkeeper` command
//! stand on this crate.

pub mod audio_chunks;
pub mod build_info;
pub mod business_events;
pub mod call;
pub mod config;
pub mod event_delivery;
pub mod fallback;
pub mod form;
pub mod ids;
pub mod job;
pub mod job_claim;
pub mod media_stream;
pub mod message;
pub mod metrics;
pub mod mulaw;
pub mod openai;
pub mod parameters;
pub mod phone;
pub mod profile;
pub mod reconciler;
pub mod recording;
pub mod replies;
pub mod secrets;
pub mod signature;
pub mod startup;
pub mod store;
pub mod stream_report;
pub mod stream_token;
pub mod telemetry;
pub mod time;
pub mod transcript;
pub mod transcription;
pub mod twilio_rest;
pub mod twiml;
#[cfg(feature = "twiml-reader")]
pub mod twiml_reader;
pub mod url;
pub mod users;
pub mod watchdog;
pub mod wav;
pub mod worker;
