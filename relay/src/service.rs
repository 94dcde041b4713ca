//! Running a server that holds calls: serve until told to stop, then drain.

use crate::listener::Limit;
use crate::Relay;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `router` until `shutdown` resolves, then drains `relay` (see [`crate::drain`]) while
/// still answering requests, so `/readyz` reports the drain and webhooks keep working; then stops.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    relay: &Relay,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let drain = relay.drain.clone();
    let deadline = relay.config.relay.drain_deadline;
    let reporter = callkeeper_core::metrics::enabled().then(|| tokio::spawn(report_connections(relay.clone())));
    let stop = async move {
        shutdown.await;
        let drained = drain.run(deadline).await;
        tracing::info!(live_at_start = drained.live_at_start, closed_at_deadline = drained.closed_at_deadline, "drained");
    };
    let live = relay.drain.clone();
    let limit = Limit { max_connections: relay.config.relay.max_connections, also_open: Arc::new(move || live.live()) };
    crate::listener::serve(listener, router, limit, stop).await;
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    Ok(())
}

/// How often a relay reports the streams it holds: often enough that a one-minute maximum on
/// the dashboard sees every relay several times.
const CONNECTIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

async fn report_connections(relay: Relay) {
    let mut every = tokio::time::interval(CONNECTIONS_EVERY);
    loop {
        every.tick().await;
        let live = relay.drain.live() as f64;
        callkeeper_core::metrics::record(callkeeper_core::metrics::RELAY_CONNECTIONS, live, &[&relay.config.relay.instance_id]);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
