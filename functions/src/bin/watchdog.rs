//! The watchdog Lambda, scheduled every minute.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    callkeeper_functions::lambda::run_watchdog().await
}
