//! Lambda function `incoming_call`.
use callkeeper_functions::{lambda, Route};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run(&[Route::IncomingCall, Route::OutboundCall]).await
}
