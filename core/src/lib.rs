//! callkeeper's core: everything that is not a web framework's or Lambda's. `functions/` (the
//! webhooks, the CRM and the workers as Lambda functions), `relay/` (the media relay) and the
//! `callkeeper` command stand on it. By layer, each using only those below it:
//!
//! | folder | what | uses |
//! |---|---|---|
//! | [`domain`] | values and their rules: calls, messages, recordings, transcripts, profiles, users, jobs, events | nothing of ours |
//! | [`audio`] | μ-law, WAV, cutting channels | — |
//! | [`twilio`] | signatures, forms, TwiML, Media Streams, the stream token, the REST API, the routes | domain |
//! | [`store`] | the storage ports, their embedded (SQLite) and AWS adapters, the contract suite, the events decorator | domain |
//! | [`process`] | configuration, start-up, logging, metrics, build info, health and stamping | domain, twilio, store |
//! | [`work`] | the job runner, transcription, WhatsApp replies, event delivery, OpenAI | all of the above |
//! | [`housekeeping`] | the watchdog, the reconciler, the fallback | all of the above |
//!
//! Every module is also re-exported at the crate's root under the name it had before the
//! layers (`callkeeper_core::call`, `callkeeper_core::twilio_rest`, …), so callers' paths stay.

pub mod audio;
pub mod domain;
pub mod housekeeping;
pub mod process;
pub mod store;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod twilio;
pub mod work;

pub use audio::{chunks as audio_chunks, mulaw, wav};
pub use domain::{
    call, follow_up, hours, http_tool, ids, job, json_schema, knowledge, message, phone, profile, recording, secrets, stream_report, time,
    trace, transcript, url, users,
};
pub use housekeeping::{fallback, reconciler, reconnect, watchdog};
pub use process::{build_info, config, metrics, parameters, startup, telemetry};
#[cfg(feature = "twiml-reader")]
pub use twilio::twiml_reader;
pub use twilio::{form, media_stream, rest as twilio_rest, routes, signature, stream_token, twiml};
pub use work::{claims as job_claim, event_delivery, openai, profiles, replies, runner as worker, transcription};

/// The business events (values, in [`domain::events`]) and the call store that raises them
/// ([`store::notifying`]), under the one name they had.
pub mod business_events {
    pub use crate::domain::events::*;
    pub use crate::store::notifying::{notifying, Notifying};
}
