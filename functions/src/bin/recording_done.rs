//! Lambda function `recording_done`.
use callkeeper_functions::{lambda, Route};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run(&[Route::RecordingDone]).await
}
