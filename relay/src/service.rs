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
    let protector = protection(relay);
    let port = listener.local_addr()?.port();
    let watcher = deregistration(relay, port);
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
    for task in [protector, watcher].into_iter().flatten() {
        task.abort();
    }
    Ok(())
}

/// With `RELAY_SCALE_IN_PROTECTION=on` on ECS, the task that keeps its protection in step with
/// its calls (see [`crate::protection`]).
fn protection(relay: &Relay) -> Option<tokio::task::JoinHandle<()>> {
    if !relay.config.relay.scale_in_protection {
        return None;
    }
    match std::env::var("ECS_AGENT_URI").ok().filter(|v| !v.trim().is_empty()) {
        Some(agent) => Some(tokio::spawn(crate::protection::keep(agent, relay.drain.clone(), crate::protection::LOOK_EVERY))),
        None => {
            tracing::warn!("RELAY_SCALE_IN_PROTECTION is on but ECS_AGENT_URI is not set (not on ECS): no protection");
            None
        }
    }
}

/// With `RELAY_TARGET_GROUP_ARN` on ECS, the task that drains the relay as soon as the load
/// balancer deregisters it (see [`crate::deregistration`]). Its IP comes from the container
/// metadata, so the task is spawned at once and looks it up itself.
fn deregistration(relay: &Relay, port: u16) -> Option<tokio::task::JoinHandle<()>> {
    let target_group_arn = relay.config.relay.target_group_arn.clone()?;
    let Some(metadata) = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok().filter(|v| !v.trim().is_empty()) else {
        tracing::warn!("RELAY_TARGET_GROUP_ARN is set but ECS_CONTAINER_METADATA_URI_V4 is not (not on ECS): only SIGTERM drains");
        return None;
    };
    let drain = relay.drain.clone();
    Some(tokio::spawn(async move {
        let ip = loop {
            match crate::deregistration::task_ip(&metadata).await {
                Ok(ip) => break ip,
                Err(e) => {
                    tracing::warn!(error = %e, "no task IP from the container metadata yet");
                    tokio::time::sleep(crate::deregistration::LOOK_EVERY).await;
                }
            }
        };
        let sdk = callkeeper_core::store::aws::sdk_config().await;
        let client = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let target = crate::deregistration::Target { target_group_arn, ip, port };
        crate::deregistration::watch(client, target, drain, crate::deregistration::LOOK_EVERY).await;
    }))
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
