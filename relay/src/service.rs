//! Running a server that holds calls: serve until told to stop, then drain.

use crate::Relay;
use std::future::Future;
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
    let stop = async move {
        shutdown.await;
        let drained = drain.run(deadline).await;
        tracing::info!(live_at_start = drained.live_at_start, closed_at_deadline = drained.closed_at_deadline, "drained");
    };
    axum::serve(listener, router).with_graceful_shutdown(stop).await?;
    Ok(())
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
