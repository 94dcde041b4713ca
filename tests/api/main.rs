//! The `callkeeper` crate's integration tests, one binary (linked once, not once per file): the
//! webhooks, the relay and the agent over loopback, the workers, the watchdog and reconciler,
//! the CRM in a browser, the fault matrix, the Lambda functions under cargo-lambda's emulator,
//! the template and README checked against the code. `common` is the shared harness.

mod business_events;
mod business_tools;
mod command_line;
mod common;
mod crm_pages;
mod fault_matrix;
mod first_real_call;
mod hostile_clients;
mod lambda_events;
mod readme;
mod realtime_agent;
mod reconciler;
mod recording_and_whatsapp_webhooks;
mod relay_deregistration;
mod relay_stream;
mod template;
mod token_rotation;
mod trace_replay;
mod transcription;
mod twiml_conformance;
mod voice_webhooks;
mod watchdog;
mod whatsapp_replies;
