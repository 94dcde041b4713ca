//! `callkeeper serve`: the whole system in one process on one port, on the embedded store: the
//! webhooks, and the relay's media WebSocket.

use crate::local_config::{self, Source};
use callkeeper_core::config::Config;
use callkeeper_core::reconciler::Reconciler;
use callkeeper_core::replies::Replier;
use callkeeper_core::store::open::{open, StoreKind};
use callkeeper_core::store::JobQueue;
use callkeeper_core::store::Stores;
use callkeeper_core::transcription::Transcriber;
use callkeeper_core::watchdog::Watchdog;
use callkeeper_core::worker::JobHandler;
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
    pub store: StoreKind,
}

/// Everything the process runs: the webhooks and the relay on one port, and the watchdog.
pub struct App {
    pub router: axum::Router,
    pub relay: Relay,
    /// `None` when there is no Twilio account to redirect calls through.
    pub watchdog: Option<Watchdog>,
    /// Compares Twilio's recordings and calls with the store; with the watchdog.
    pub reconciler: Option<Reconciler>,
    pub workers: Option<Workers>,
}

/// The queue workers (transcription, WhatsApp replies) and the queue they take jobs from.
pub struct Workers {
    pub queue: Arc<dyn JobQueue>,
    pub handlers: Vec<Arc<dyn JobHandler>>,
}

/// The app with the voice agent the configuration names, and a watchdog when `with_watchdog`.
pub fn app(config: Arc<Config>, stores: Stores, with_watchdog: bool) -> App {
    let relay = Relay::new(config.clone(), stores.calls.clone());
    let watchdog = with_watchdog.then(|| Watchdog::new(stores.calls.clone(), config.twilio_rest(), config.clone()));
    let twilio = config.twilio_rest();
    let reconciler = with_watchdog.then(|| Reconciler::new(stores.calls.clone(), stores.queue.clone(), twilio.clone(), config.clone()));
    let mut handlers: Vec<Arc<dyn JobHandler>> = vec![
        Arc::new(Transcriber::new(&stores, twilio.clone(), config.clone())),
        Arc::new(Replier::new(stores.calls.clone(), stores.blobs.clone(), twilio, config.clone())),
    ];
    if let Some(deliverer) = callkeeper_core::event_delivery::Deliverer::new(stores.calls.clone(), config.clone()) {
        handlers.push(Arc::new(deliverer));
    }
    let mut app = app_with(config, stores.clone(), relay, watchdog);
    app.workers = Some(Workers { queue: stores.queue.clone(), handlers });
    app.reconciler = reconciler;
    app
}

/// The app without a worker: tests run theirs.
pub fn app_with(config: Arc<Config>, stores: Stores, relay: Relay, watchdog: Option<Watchdog>) -> App {
    let state = AppState { config, stores };
    let router = stamped(
        webhooks(state.clone(), &Route::ALL).merge(callkeeper_functions::crm::routes(state)).merge(callkeeper_relay::routes(relay.clone())),
    );
    App { router, relay, watchdog, reconciler: None, workers: None }
}

/// Serves `app` (and runs its watchdog) until `shutdown` resolves, then drains the relay's live
/// calls (up to the deadline) while still answering webhooks and watching calls, then stops.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    // One signal stops the background loops once the server (and its drain) is done.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let watchdog = app.watchdog.map(|watchdog| {
        let until = until();
        tokio::spawn(async move { watchdog.run_until(until).await })
    });
    let reconciler = app.reconciler.map(|reconciler| {
        let until = until();
        tokio::spawn(async move { reconciler.run_until(until).await })
    });
    let workers: Vec<_> = app
        .workers
        .into_iter()
        .flat_map(|Workers { queue, handlers }| handlers.into_iter().map(move |handler| (queue.clone(), handler)))
        .map(|(queue, handler)| {
            let until = until();
            tokio::spawn(async move {
                callkeeper_core::worker::run_until(queue.as_ref(), handler.as_ref(), std::time::Duration::from_secs(1), until).await
            })
        })
        .collect();
    let served = callkeeper_relay::service::serve(listener, app.router, &app.relay, shutdown).await;
    let _ = stop.send(true);
    for task in workers {
        let _ = task.await;
    }
    if let Some(task) = reconciler {
        let _ = task.await;
    }
    if let Some(task) = watchdog {
        if let Ok(run) = task.await {
            tracing::info!(passes = run.passes, redirected = run.totals.redirected, "watchdog stopped");
        }
    }
    served
}

/// A bound, configured server, not yet serving: tests read its address and config first.
pub struct Server {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    pub stores: Stores,
    pub source: Source,
    pub store: StoreKind,
}

impl Server {
    pub async fn bind(options: &ServeOptions) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(options.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.addr))?;
        let addr = listener.local_addr()?;
        let (config, source) = local_config::resolve(&options.data_dir, addr)?;
        let stores = callkeeper_core::business_events::notifying(
            open(options.store, &options.data_dir, config.queue_max_receives).await?,
            config.events.is_some(),
        );
        Ok(Server { listener, addr, config: Arc::new(config), stores, source, store: options.store })
    }

    /// Serves until `shutdown` resolves, then drains (see [`serve`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let with_watchdog = self.watches();
        serve(self.listener, app(self.config, self.stores, with_watchdog), shutdown).await
    }

    /// Whether the watchdog runs: not with generated local secrets, which have no Twilio account
    /// to redirect calls through (unless `TWILIO_API_BASE` points at a fake one).
    pub fn watches(&self) -> bool {
        self.source == Source::Environment || std::env::var_os("TWILIO_API_BASE").is_some()
    }

    /// What to tell the user at start: where we listen and the URLs to give Twilio.
    pub fn banner(&self, data_dir: &std::path::Path) -> String {
        let info = callkeeper_core::build_info::build_info();
        // With the connection overrides, so that Twilio retries a 503.
        let url = |route: Route| self.config.callback_url(route.path()).to_string();
        let config_line = match &self.source {
            Source::Environment => "from the environment".to_string(),
            Source::Local(path) => format!(
                "local: no Twilio settings found, so using generated secrets in {}\n                set PUBLIC_BASE_URL, RELAY_PUBLIC_URL, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to answer real calls",
                path.display()
            ),
        };
        let store = match self.store {
            StoreKind::Embedded => format!("embedded, in {}", data_dir.display()),
            StoreKind::Aws => {
                let names = callkeeper_core::store::aws::AwsNames::from_env();
                format!(
                    "aws: table {}, bucket {}, queues {}, {} and {}",
                    names.table, names.bucket, names.transcription_queue, names.replies_queue, names.events_queue
                )
            }
        };
        // Loopback or plain-http URLs are no use to Twilio: say what to set, not URLs that
        // cannot work.
        let twilio = match callkeeper_core::twilio::numbers::unreachable_by_twilio(&self.config) {
            Some(why) => format!(
                "Twilio cannot reach this yet: {why}.\n\
                 \x20 Expose port {port} (e.g. `ngrok http {port}`), then set PUBLIC_BASE_URL=https://… and\n\
                 \x20 RELAY_PUBLIC_URL=wss://… to that host (docs/running-locally.md) and start again: this banner\n\
                 \x20 then lists the URLs, and `callkeeper twilio configure --number +E164` sets them on your number.\n\
                 \x20 Meanwhile `callkeeper simulate --port {port}` plays Twilio's side of a call here.",
                port = self.addr.port()
            ),
            None => format!(
                "Give Twilio these URLs (HTTP POST; `callkeeper twilio configure --number +E164` sets the number's):\n\
                 \x20 phone number, \"A call comes in\":           {}\n\
                 \x20 phone number, \"Primary handler fails\":     {}\n\
                 \x20 outbound calls' Url:                        {}\n\
                 \x20 WhatsApp sender, \"When a message comes in\": {}\n\
                 \x20 WhatsApp sender, status callback:           {}\n\
                 (stream_status and recording_done need no setting: the TwiML names them.)",
                url(Route::IncomingCall),
                url(Route::StreamEnded),
                url(Route::OutboundCall),
                url(Route::WhatsappInbound),
                url(Route::WhatsappStatus),
            ),
        };
        format!(
            "callkeeper {} ({}) listening on {}\n  store:        {}\n  config:       {}\n\n{twilio}\n\
             CRM: {}/crm (add its first user: `callkeeper crm user add NAME`)\n\
             media stream: {} (voice agent: {})\n\
             watchdog: {}\n\
             health: {}/healthz",
            info.version,
            info.git_sha,
            self.addr,
            store,
            config_line,
            self.config.public_base_url,
            self.config.relay_public_url.join(callkeeper_relay::STREAM_PATH),
            self.config.relay.voice_agent.as_str(),
            if self.watches() {
                format!("every {} s, redirecting stale calls through {}", self.config.watchdog.poll.as_secs(), self.config.twilio_api_base)
            } else {
                "off (no Twilio account configured)".to_string()
            },
            self.config.public_base_url,
        )
    }
}

pub use callkeeper_relay::service::shutdown_signal;
