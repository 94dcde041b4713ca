//! `callkeeper-relay`: the relay on its own, as the Fargate service runs it. Started like the
//! functions (secrets by SSM parameter, the same settings, the stores by `CALLKEEPER_STORE`),
//! on `PORT` (default 8080) on all interfaces, behind the load balancer's TLS.

use callkeeper_relay::{router, service, Relay};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, stores) = callkeeper_core::startup::from_env().await?;
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
