//! Lambda function `stream_status`.
use callkeeper_functions::{lambda, Route};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run(&[Route::StreamStatus]).await
}
