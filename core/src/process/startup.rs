//! What a deployed process (each Lambda function, the relay) does before anything else: logging,
//! the secrets named by SSM parameter, the configuration checked once, the stores opened. A
//! failure is one log line naming every problem, and the process does not start.

use crate::process::config::Config;
use crate::store::open::stores_from_env;
use crate::store::Stores;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Secrets(#[from] crate::process::parameters::ParameterError),
    #[error(transparent)]
    Config(#[from] crate::process::config::ConfigError),
    #[error(transparent)]
    Stores(#[from] crate::store::StoreError),
}

/// The configuration as a deployed process reads it: the secrets its SSM parameters name, laid
/// over the environment, checked once. `callkeeper doctor` and `twilio` read it the same way.
pub async fn config_from_env() -> Result<Config, StartError> {
    let env = |name: &str| std::env::var(name).ok();
    let secrets = crate::process::parameters::resolve(&env).await?;
    Ok(Config::from_lookup(|name| secrets.get(name).cloned().or_else(|| env(name)))?)
}

pub async fn from_env() -> Result<(Arc<Config>, Stores), StartError> {
    crate::process::telemetry::init();
    let started = async {
        let config = config_from_env().await?;
        let stores = crate::store::notifying::notifying(stores_from_env(config.queue_max_receives).await?, config.events.is_some());
        Ok((Arc::new(config), stores))
    };
    started.await.inspect_err(|e: &StartError| tracing::error!(error = %e, "refusing to start"))
}
