//! Lambda function `whatsapp_inbound`.
use callkeeper_functions::{lambda, Route};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run(&[Route::WhatsappInbound]).await
}
