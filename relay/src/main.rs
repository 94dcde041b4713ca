//! `callkeeper-relay`: the relay on its own, as the Fargate service runs it. Configuration from
//! the environment (the same settings as the webhooks), the stores by `CALLKEEPER_STORE`, and
//! `PORT` (default 8080) on all interfaces, behind the load balancer's TLS.

use callkeeper_core::config::Config;
use callkeeper_core::store::open::stores_from_env;
use callkeeper_relay::{router, service, Relay};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callkeeper_core::telemetry::init();
    let config = Arc::new(Config::from_env().inspect_err(|e| tracing::error!(error = %e, "refusing to start"))?);
    let stores = stores_from_env(config.queue_max_receives).await.inspect_err(|e| tracing::error!(error = %e, "refusing to start"))?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|_| anyhow::anyhow!("PORT must be a port number, got {p:?}"))?,
        Err(_) => 8080,
    };
    let relay = Relay::new(config.clone(), stores.calls.clone());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let info = callkeeper_core::build_info::build_info();
    tracing::info!(port, version = %info.version, git_sha = %info.git_sha, instance = %config.relay.instance_id, agent = relay.agent.name(), "relay listening");
    service::serve(listener, router(relay.clone()), &relay, service::shutdown_signal()).await
}
