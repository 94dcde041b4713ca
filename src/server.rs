//! `callkeeper serve`: the whole system in one process on one port, on the embedded store: the
//! webhooks, and the relay's media WebSocket.

use crate::local_config::{self, Source};
use callkeeper_core::config::Config;
use callkeeper_core::store::{embedded, Stores};
use callkeeper_functions::{stamped, webhooks, AppState, Route};
use callkeeper_relay::Relay;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

/// Everything the process serves on one port: the webhooks and the relay.
pub struct App {
    pub router: axum::Router,
    pub relay: Relay,
}

/// The app with the voice agent the configuration names.
pub fn app(config: Arc<Config>, stores: Stores) -> App {
    let relay = Relay::new(config.clone(), stores.calls.clone());
    app_with_relay(config, stores, relay)
}

pub fn app_with_relay(config: Arc<Config>, stores: Stores, relay: Relay) -> App {
    let router = stamped(webhooks(AppState { config, stores }, &Route::ALL).merge(callkeeper_relay::routes(relay.clone())));
    App { router, relay }
}

/// Serves `app` until `shutdown` resolves, then drains the relay's live calls (up to the
/// deadline) while still answering webhooks, then stops.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    callkeeper_relay::service::serve(listener, app.router, &app.relay, shutdown).await
}

/// A bound, configured server, not yet serving: tests read its address and config first.
pub struct Server {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    pub stores: Stores,
    pub source: Source,
}

impl Server {
    pub async fn bind(options: &ServeOptions) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(options.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.addr))?;
        let addr = listener.local_addr()?;
        let (config, source) = local_config::resolve(&options.data_dir, addr)?;
        let stores = embedded::open_stores(&options.data_dir, config.queue_max_receives)?;
        Ok(Server { listener, addr, config: Arc::new(config), stores, source })
    }

    /// Serves until `shutdown` resolves, then drains (see [`serve`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        serve(self.listener, app(self.config, self.stores), shutdown).await
    }

    /// What to tell the user at start: where we listen and the URLs to give Twilio.
    pub fn banner(&self, data_dir: &std::path::Path) -> String {
        let info = callkeeper_core::build_info::build_info();
        let url = |route: Route| self.config.webhook_url(route.path()).to_string();
        let config_line = match &self.source {
            Source::Environment => "from the environment".to_string(),
            Source::Local(path) => format!(
                "local: no Twilio settings found, so using generated secrets in {}\n                set PUBLIC_BASE_URL, RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to answer real calls",
                path.display()
            ),
        };
        format!(
            "callkeeper {} ({}) listening on {}\n  data folder:  {}\n  config:       {}\n\n\
             Give Twilio these URLs (HTTP POST):\n\
             \x20 phone number, \"A call comes in\":           {}\n\
             \x20 outbound calls' Url:                        {}\n\
             \x20 WhatsApp sender, \"When a message comes in\": {}\n\
             \x20 WhatsApp sender, status callback:           {}\n\
             (stream_status, stream_ended and recording_done are set by the TwiML itself.)\n\
             media stream: {} (voice agent: {})\n\
             health: {}/healthz",
            info.version,
            info.git_sha,
            self.addr,
            data_dir.display(),
            config_line,
            url(Route::IncomingCall),
            url(Route::OutboundCall),
            url(Route::WhatsappInbound),
            url(Route::WhatsappStatus),
            self.config.relay_public_url.join(callkeeper_relay::STREAM_PATH),
            self.config.relay.voice_agent.as_str(),
            self.config.public_base_url,
        )
    }
}

pub use callkeeper_relay::service::shutdown_signal;
