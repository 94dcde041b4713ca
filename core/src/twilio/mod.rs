//! Twilio's side of the wire: request signatures, webhook forms, the TwiML callkeeper answers
//! with (and reads back, for the simulator), Media Streams' messages, the stream token between
//! webhook and relay, the REST API, what a number's settings must be, and every route Twilio
//! (and a browser) calls.

pub mod form;
pub mod media_stream;
pub mod numbers;
pub mod rest;
pub mod routes;
pub mod signature;
pub mod stream_token;
pub mod twiml;
#[cfg(feature = "twiml-reader")]
pub mod twiml_reader;
