//! Every Lambda function, as one binary: the template deploys it once per function, naming the
//! function in `Handler` (see `callkeeper_functions::lambda::Function`).

use callkeeper_functions::lambda::Function;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    Function::from_env()?.run().await
}
