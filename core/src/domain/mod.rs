//! What callkeeper is about, as values and the rules on them: calls and how they move, messages,
//! recordings, transcripts, the stream's figures, agent profiles, the CRM's users, jobs and the
//! business events. Nothing here reads a store, the network or the configuration.

pub mod call;
pub mod events;
pub mod follow_up;
pub mod hours;
pub mod http_tool;
pub mod ids;
pub mod job;
pub mod json_schema;
pub mod knowledge;
pub mod message;
pub mod phone;
pub mod profile;
pub mod recording;
pub mod secrets;
#[macro_use]
mod status;
pub mod stream_report;
pub mod time;
pub mod trace;
pub mod transcript;
pub mod url;
pub mod users;
