//! Audio: G.711 μ-law, WAV files, and cutting long channels for transcription.

pub mod chunks;
pub mod mulaw;
pub mod wav;
