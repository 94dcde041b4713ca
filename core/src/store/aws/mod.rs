//! The `aws` adapter: DynamoDB (calls and the CRM), SQS (the job queues, each with its
//! dead-letter queue) and S3 (recordings). It passes the same contract suite as the embedded
//! adapter, run against `moto_server` with the SDK calls production makes.
//!
//! Names come from the environment, as the deployed functions get them: `CALLKEEPER_TABLE`,
//! `CALLKEEPER_BUCKET`, `TRANSCRIPTION_QUEUE`, `REPLIES_QUEUE` and `EVENTS_QUEUE` (each queue's dead-letter
//! queue is the same name with `-dlq`). The SDK's own settings apply: `AWS_REGION`,
//! credentials, and `AWS_ENDPOINT_URL` to point it at moto or LocalStack.

mod blobs;
mod calls;
mod claims;
mod items;
mod leads;
mod messages;
mod profiles;
mod queue;
mod recordings;
mod resources;
mod users;

pub use blobs::S3Blobs;
pub use calls::DynamoStore;
pub use queue::SqsQueue;
pub use resources::create_resources;

use super::{StoreError, StoreResult, Stores};
use crate::domain::job::QueueName;
use std::sync::Arc;

/// What the adapter works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNames {
    pub table: String,
    pub bucket: String,
    pub transcription_queue: String,
    pub replies_queue: String,
    pub events_queue: String,
}

impl AwsNames {
    pub fn from_env() -> AwsNames {
        let get =
            |name: &str, default: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string());
        AwsNames {
            table: get("CALLKEEPER_TABLE", "callkeeper"),
            bucket: get("CALLKEEPER_BUCKET", "callkeeper-recordings"),
            transcription_queue: get("TRANSCRIPTION_QUEUE", "callkeeper-transcription"),
            replies_queue: get("REPLIES_QUEUE", "callkeeper-replies"),
            events_queue: get("EVENTS_QUEUE", "callkeeper-events"),
        }
    }

    /// Fresh names with a common suffix: one set per test, or per developer.
    pub fn with_suffix(suffix: &str) -> AwsNames {
        AwsNames {
            table: format!("callkeeper-{suffix}"),
            bucket: format!("callkeeper-recordings-{suffix}"),
            transcription_queue: format!("callkeeper-transcription-{suffix}"),
            replies_queue: format!("callkeeper-replies-{suffix}"),
            events_queue: format!("callkeeper-events-{suffix}"),
        }
    }

    pub fn queue(&self, queue: QueueName) -> &str {
        match queue {
            QueueName::Transcription => &self.transcription_queue,
            QueueName::Replies => &self.replies_queue,
            QueueName::Events => &self.events_queue,
        }
    }
}

pub fn dead_letter_queue_name(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// The SDK's configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`),
/// loaded once per process: start-up reads SSM and then opens the stores, and one shared
/// configuration means one region lookup and one credentials cache (on Fargate each credentials
/// fetch is a request to the task's metadata endpoint).
pub async fn sdk_config() -> aws_config::SdkConfig {
    static LOADED: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();
    LOADED.get_or_init(aws_config::load_from_env).await.clone()
}

/// The three stores on AWS. Resolves the queues' URLs once.
pub async fn connect(sdk: &aws_config::SdkConfig, names: &AwsNames, max_receives: u32) -> StoreResult<Stores> {
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    // Path-style addressing: what moto and LocalStack need, and fine for real S3.
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let calls = DynamoStore::new(dynamo.clone(), &names.table);
    let queue = SqsQueue::connect(sqs, calls.clone(), names, max_receives).await?;
    Ok(Stores { calls: Arc::new(calls), queue: Arc::new(queue), blobs: Arc::new(S3Blobs::new(s3, &names.bucket)) })
}

/// Any SDK error as a store error: the service failed or could not be reached.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The SDK's error with its service detail, for logs and `dlq show`.
pub(crate) fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError {
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
    StoreError::Unavailable(detail)
}
