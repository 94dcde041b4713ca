//! The work behind the queues, above the store: the job runner and its claims, transcription
//! (and keeping the recordings it starts from), WhatsApp replies, event delivery, the OpenAI
//! client they share, and which agent profile a call gets.

pub mod claims;
pub mod event_delivery;
pub mod follow_ups;
pub mod openai;
pub mod profiles;
pub mod replies;
pub mod runner;
pub mod transcription;
