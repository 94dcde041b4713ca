//! What every Lambda binary runs: configuration checked once, the stores opened, and the
//! router for its routes served through the Lambda runtime API.

use crate::app::{router, AppState, Route};
use callkeeper_core::config::Config;
use callkeeper_core::store::open::stores_from_env;
use std::sync::Arc;

pub async fn run(routes: &[Route]) -> Result<(), lambda_http::Error> {
    callkeeper_core::telemetry::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "refusing to start"))?;
    let stores = stores_from_env(config.queue_max_receives).inspect_err(|e| tracing::error!(error = %e, "refusing to start"))?;
    let app = router(AppState { config: Arc::new(config), stores }, routes);
    lambda_http::run(app).await
}
