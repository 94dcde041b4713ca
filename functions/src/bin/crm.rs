//! Lambda function `crm`: the CRM's pages behind the HTTP API's `/crm` routes.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    callkeeper_functions::lambda::run_crm().await
}
