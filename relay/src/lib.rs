//! callkeeper's media relay: holds Twilio's Media Streams WebSocket for each call and bridges it
//! to a voice agent. It runs always-on (Fargate in AWS), and inside `callkeeper serve` on a
//! laptop, on the same port as the webhooks.
//!
//! - [`upgrade`]: the handshake, signed by Twilio, checked before the upgrade;
//! - [`session`]: one call's stream: frames in, paced audio out, barge-in, heartbeats, figures;
//! - [`agent`]: the voice agent interface, and the embedded and silent agents;
//! - [`drain`]: SIGTERM without dropping calls; [`service`] serves until SIGTERM, then drains;
//! - [`listener`]: the timeouts and the connection cap of a server on the open internet.

pub mod agent;
pub mod deregistration;
pub mod drain;
pub mod figures;
pub mod knowledge;
pub mod listener;
pub mod opening;
pub mod playback;
pub mod profiles;
pub mod protection;
pub mod recorder;
pub mod service;
pub mod session;
pub mod tls;
pub mod trace;
pub mod transfer;
pub mod turns;
pub mod upgrade;

use agent::VoiceAgent;
use axum::routing::get;
use axum::Router;
use callkeeper_core::config::Config;
use callkeeper_core::store::CallStore;
use callkeeper_core::twilio_rest::TwilioRest;
use drain::Drain;
use profiles::Profiles;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use callkeeper_core::routes::STREAM_PATH;

/// What every stream shares.
#[derive(Clone)]
pub struct Relay {
    pub config: Arc<Config>,
    pub calls: Arc<dyn CallStore>,
    pub agent: Arc<dyn VoiceAgent>,
    pub drain: Drain,
    pub profiles: Profiles,
    /// Redirects a call the agent transfers.
    pub twilio: TwilioRest,
    /// Sockets upgraded and not yet started (see [`upgrade::MAX_OPENING`]).
    pub opening: Arc<AtomicUsize>,
}

impl Relay {
    /// The relay with the agent the configuration names.
    pub fn new(config: Arc<Config>, calls: Arc<dyn CallStore>) -> Relay {
        let agent = agent::from_config(&config, calls.clone());
        let profiles = Profiles::new(calls.clone(), config.clone());
        let twilio = config.twilio_rest();
        Relay { config, calls, agent, drain: Drain::default(), profiles, twilio, opening: Arc::default() }
    }
}

/// The media stream (with and without a trailing slash), `/healthz`, `/readyz` (which fails
/// while draining) and `/version`, not yet stamped: `callkeeper serve` merges them with the
/// webhooks.
pub fn routes(relay: Relay) -> Router {
    let trailing = format!("{STREAM_PATH}/");
    Router::new()
        .route(STREAM_PATH, get(upgrade::upgrade))
        .route(&trailing, get(upgrade::upgrade))
        .route(callkeeper_core::routes::HEALTHZ, get(callkeeper_core::process::http::healthz))
        .route(callkeeper_core::routes::READYZ, get(upgrade::readyz))
        .route(callkeeper_core::routes::VERSION, get(callkeeper_core::process::http::version))
        .with_state(relay)
}

/// The relay on its own, as the Fargate service runs it.
pub fn router(relay: Relay) -> Router {
    callkeeper_core::process::http::stamped(routes(relay))
}
